import ArgumentParser
import Foundation
import OrlCore
import OrlYAML

/// The audit of one workflow with bounded patterns, and how it grows with the bounds:
/// orl expands every construct into steps and checks every edge once, so time should
/// grow with the expanded steps and edges (linearly in the rounds, in the branches,
/// and in the slots × workers of a delegation), not with the number of paths (which
/// multiply). A fleet of many such workflows shows the cost of a whole audit.
struct PatternAuditBench {
    var runs: Int

    struct Bounds: CustomStringConvertible {
        var routes = 10
        var pool = 20
        var poolRounds = 5
        var loopRounds = 3
        var workflows = 1
        var description: String {
            "route \(routes)-way, pool \(pool) × \(poolRounds) rounds, loop \(loopRounds) rounds"
                + (workflows > 1 ? ", \(workflows) workflows" : "")
        }
    }

    func run() throws {
        let base = Bounds()
        var cases: [(String, Bounds)] = [("the issue's workflow", base)]
        for factor in [2, 4, 8] {
            var b = base
            b.routes *= factor
            cases.append(("routes ×\(factor)", b))
        }
        for rounds in [8, 10] {
            var b = base
            b.poolRounds = rounds
            cases.append(("pool rounds \(rounds)", b))
        }
        for factor in [2] {
            var b = base
            b.pool *= factor
            cases.append(("pool ×\(factor)", b))
        }
        for rounds in [6, 12, 20] {
            var b = base
            b.loopRounds = rounds
            cases.append(("loop rounds \(rounds)", b))
        }
        var fleet = base
        fleet.workflows = 50
        cases.append(("a fleet of 50 of them", fleet))
        print("audit of one workflow with bounded patterns (validate = structural checks + expansion + audit; median of \(runs))")
        for (name, bounds) in cases {
            let (steps, edges, validate, audit, work) = try measure(bounds)
            print(
                "\(name.padding(toLength: 22, withPad: " ", startingAt: 0)) \(bounds): \(steps) steps, \(edges) edges; validate \(validate.milliseconds) ms, audit \(audit.milliseconds) ms, \(work) judgements"
            )
        }
    }

    private func measure(_ bounds: Bounds) throws -> (Int, Int, Duration, Duration, Int) {
        let yaml = Self.yaml(bounds)
        let read = ManifestReader().read(YAMLParser(limits: .init(maxFileBytes: Int.max)).parse(yaml, file: "patterns.yaml"))
        let clock = ContinuousClock()
        var validations: [Duration] = []
        var audits: [Duration] = []
        var report: ValidationReport?
        for _ in 0..<max(1, runs) {
            var start = clock.now
            let validated = ManifestValidation.validate(read)
            validations.append(clock.now - start)
            guard validated.isValid else {
                throw ValidationError("the pattern workflow is not valid: \(validated.diagnostics.prefix(3).map(\.message))")
            }
            start = clock.now
            let diagnostics = PolicyAudit.run(validated.fleet, engine: PolicyEngine(validated.fleet))
            audits.append(clock.now - start)
            precondition(diagnostics.isEmpty, "the pattern workflow must pass the audit: \(diagnostics.prefix(2).map(\.message))")
            report = validated
        }
        let engine = PolicyEngine(report!.fleet)
        // The audit's judgements (one per step, agent and thing judged): deterministic.
        let work = report!.fleet.resources(of: .workflow).reduce(0) {
            $0 + PolicyAudit.audit(workflow: $1, in: report!.fleet, engine: engine).work
        }
        let workflows = report!.fleet.resources(of: .workflow).compactMap(\.workflow)
        let edges = workflows.reduce(0) { sum, w in w.graph.dependencies.reduce(sum) { $0 + $1.count } }
        return (
            workflows.reduce(0) { $0 + $1.steps.count }, edges, validations.sorted()[validations.count / 2],
            audits.sorted()[audits.count / 2], work
        )
    }

    static func yaml(_ b: Bounds) -> String {
        var out =
            AuditFleet.providerAndLookup + """
                apiVersion: orl.dev/v1
                kind: Tool
                metadata: {name: send}
                spec: {type: command, command: {command: send}, capabilities: [egress, irreversible]}
                ---
                apiVersion: orl.dev/v1
                kind: Policy
                metadata: {name: fleet}
                spec:
                  appliesTo: {selector: {matchLabels: {team: bench}}}
                  allow:
                    tools: [lookup, send]
                    models: ["sim/*"]
                    handoffs: ["*"]
                    dataClasses: [public, internal, pii]
                    egress: [public, internal, pii]
                  requireApproval: {tools: [send]}
                ---
                apiVersion: orl.dev/v1
                kind: Budget
                metadata: {name: fleet}
                spec:
                  appliesTo: {selector: {matchLabels: {team: bench}}}
                  limits: [{window: day, usd: 1000000}]

                """
        let agents = max(b.routes, b.pool) + 3
        for a in 0..<agents {
            out +=
                "---\napiVersion: orl.dev/v1\nkind: Agent\nmetadata: {name: agent-\(a), labels: {team: bench}}\nspec: {model: sim/small, runtime: {command: python3}, tools: [lookup, send]}\n"
        }
        for w in 0..<b.workflows { out += workflow(b, name: w == 0 ? "patterns" : "patterns-\(w)") }
        return out
    }

    static func workflow(_ b: Bounds, name: String) -> String {
        var out = "---\napiVersion: orl.dev/v1\nkind: Workflow\nmetadata: {name: \(name)}\nspec:\n  steps:\n"
        // A router with one branch per specialist (each with a fallback), a gate before the join.
        let branches = (0..<b.routes).map { "b\($0): [route-\($0)]" }.joined(separator: ", ")
        out +=
            "    - {id: classify, agent: agent-0, tools: [lookup], maxTokens: 1000, route: {key: kind, branches: {\(branches)}, default: b0}}\n"
        for r in 0..<b.routes {
            out +=
                "    - {id: route-\(r), agent: agent-\(r + 1), tools: [lookup], maxTokens: 1000, fallback: [{agent: agent-\(r + 2)}]}\n"
        }
        out += "    - {id: gate, approval: {}, dependsOn: [\((0..<b.routes).map { "route-\($0)" }.joined(separator: ", "))]}\n"
        // The pool: a planner delegating up to one sub-task per worker a round, to any of them.
        let workers = (0..<b.pool).map { "agent-\($0 + 1)" }.joined(separator: ", ")
        out +=
            "    - {id: plan, agent: agent-0, dependsOn: [gate], maxTokens: 1000, delegate: {workers: [\(workers)], maxTasks: \(b.pool), maxConcurrent: 4, maxRounds: \(b.poolRounds), tools: [lookup], maxTokens: 1000}}\n"
        out += "    - {id: collect, agent: agent-0, maxTokens: 1000, dependsOn: [plan]}\n"
        // The writer/reviewer loop, then the gated send.
        out += "    - {id: write, agent: agent-1, dependsOn: [collect], maxTokens: 1000, inputs: {feedback: {step: review}}}\n"
        out +=
            "    - {id: review, agent: agent-2, dependsOn: [write], maxTokens: 1000, loop: {from: write, maxRounds: \(b.loopRounds), until: {key: approved, equals: true}}}\n"
        out += "    - {id: ok, approval: {}, dependsOn: [review]}\n"
        out += "    - {id: send, agent: agent-3, dependsOn: [ok], tools: [send], maxTokens: 1000}\n"
        return out
    }
}
