import OrlJSON

/// Checks the structure of every Workflow: unique step ids, dependencies that exist,
/// no cycles, steps whose agents, tools and inputs resolve, inputs that only read
/// steps that finish first, and cron triggers that parse and fire.
public enum WorkflowCheck {
    public static func run(_ fleet: Fleet) -> [Diagnostic] {
        fleet.resources(of: .workflow).flatMap { resource in
            resource.workflow.map { check($0, of: resource, in: fleet) } ?? []
        }
    }

    static func stepPath(_ i: Int) -> ValuePath { ValuePath([.key("spec"), .key("steps"), .index(i)]) }

    static func check(_ workflow: WorkflowSpec, of resource: Resource, in fleet: Fleet) -> [Diagnostic] {
        let graph = WorkflowGraph(workflow)
        var diagnostics: [Diagnostic] = []
        let id = resource.id
        let namespace = resource.metadata.namespace
        let stepIDs = workflow.steps.map(\.id.value)
        let declaredInputs = Set(workflow.inputs.map(\.name))

        // Derived steps (loop rounds, fallbacks) repeat what their declared step says;
        // PatternCheck checks what is their own.
        for (i, step) in workflow.steps.prefix(workflow.declaredCount).enumerated() {
            let path = stepPath(i)
            if let first = graph.index[step.id.value], first != i {
                diagnostics.append(
                    .error(
                        .dagDuplicateStep, "step id \"\(step.id.value)\" is used more than once", at: step.id.location, resource: id,
                        path: path.appending("id"), notes: [.init("first used here", at: workflow.steps[first].id.location)]))
            }
            for (j, dep) in step.dependsOn.enumerated() where graph.index[dep.value] == nil {
                diagnostics.append(
                    .error(
                        .dagUnknownDependency,
                        "step \"\(step.id.value)\" depends on \"\(dep.value)\", which is not a step of this workflow\(Suggestion.hint(for: dep.value, among: stepIDs))",
                        at: dep.location, resource: id, path: path.appending("dependsOn").appending(j)))
            }
            if let agent = step.agent, !fleet.declares(.agent, agent.value, namespace: namespace) {
                diagnostics.append(ReferenceCheck.missing(.agent, agent, from: resource, path: path.appending("agent"), in: fleet))
            }
            for (j, tool) in step.tools.enumerated() where !fleet.declaresTool(tool.value, namespace: namespace) {
                diagnostics.append(
                    ReferenceCheck.missing(.tool, tool, from: resource, path: path.appending("tools").appending(j), in: fleet))
            }
            for (name, source) in step.inputs {
                let inputPath = path.appending("inputs").appending(name)
                switch source {
                case .runInput(let input) where !declaredInputs.contains(input.value):
                    diagnostics.append(
                        .error(
                            .refMissing,
                            "input \"\(name)\" of step \"\(step.id.value)\" reads run input \"\(input.value)\", which spec.inputs does not declare\(Suggestion.hint(for: input.value, among: declaredInputs))",
                            at: input.location, resource: id, path: inputPath.appending("input")))
                case .stepOutput(let source, _) where graph.index[source.value] == nil:
                    diagnostics.append(
                        .error(
                            .dagUnknownDependency,
                            "input \"\(name)\" of step \"\(step.id.value)\" reads step \"\(source.value)\", which is not a step of this workflow\(Suggestion.hint(for: source.value, among: stepIDs))",
                            at: source.location, resource: id, path: inputPath.appending("step")))
                default:
                    break
                }
            }
        }

        diagnostics += PatternCheck.check(workflow, of: resource, in: fleet)

        for (i, trigger) in workflow.triggers.enumerated() {
            guard let cron = trigger.cron else { continue }
            do throws(CronSyntaxError) {
                _ = try CronSchedule(parsing: cron.value)
            } catch {
                diagnostics.append(
                    .error(
                        .triggerCronInvalid, "cron trigger: \(error.message)", at: cron.location, resource: id,
                        path: ValuePath([.key("spec"), .key("triggers"), .index(i), .key("cron")])))
            }
        }

        let cycles = graph.cycles()
        for cycle in cycles {
            let names = cycle.map { workflow.steps[$0].id.value }
            // Point at the dependsOn entry that closes the cycle, with a note per hop.
            let first = workflow.steps[cycle[0]]
            let last = cycle[cycle.count - 2]
            let closing = first.dependsOn.first { $0.value == workflow.steps[last].id.value }
            var notes: [Diagnostic.Note] = []
            for k in 1..<cycle.count - 1 {
                let step = workflow.steps[cycle[k]]
                let previous = workflow.steps[cycle[k - 1]].id.value
                let entry = step.dependsOn.first { $0.value == previous }
                notes.append(.init("\"\(step.id.value)\" depends on \"\(previous)\"", at: entry?.location ?? step.id.location))
            }
            diagnostics.append(
                .error(
                    .dagCycle, "dependency cycle: \(names.joined(separator: " → "))", at: closing?.location ?? first.id.location,
                    resource: id, path: stepPath(cycle[0]).appending("dependsOn"), notes: notes))
        }

        // Whether an input reads an upstream step only makes sense in a DAG.
        if cycles.isEmpty, let ancestors = graph.ancestors() {
            for (i, step) in workflow.steps.enumerated() where graph.index[step.id.value] == i {
                for (name, source) in step.inputs {
                    guard case .stepOutput(let source, _) = source, let s = graph.index[source.value], !ancestors[i].contains(s) else {
                        continue
                    }
                    let reason = s == i ? "its own output" : "step \"\(source.value)\", which does not finish before it"
                    diagnostics.append(
                        .error(
                            .dagInputNotUpstream,
                            "input \"\(name)\" of step \"\(step.id.value)\" reads \(reason); add \"\(source.value)\" to dependsOn (directly or through another step)",
                            at: source.location, resource: id, path: stepPath(i).appending("inputs").appending(name).appending("step"),
                            notes: s == i ? [] : [.init("step \"\(source.value)\" is declared here", at: workflow.steps[s].id.location)]))
                }
            }
        }
        return diagnostics
    }
}
