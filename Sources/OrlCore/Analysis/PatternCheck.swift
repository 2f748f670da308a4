import OrlJSON

/// Checks the bounded patterns of a Workflow as written (routes, loops, fallbacks):
/// what `WorkflowPatterns.expand` needs to expand them into steps whose every path the
/// audit can prove. Bounds themselves (maxRounds, the number of branches and
/// fallbacks) are required and capped by the schema, so nothing here is unbounded.
enum PatternCheck {
    static func check(_ workflow: WorkflowSpec, of resource: Resource, in fleet: Fleet) -> [Diagnostic] {
        let declared = Array(workflow.steps.prefix(workflow.declaredCount))
        guard
            declared.contains(where: {
                $0.route != nil || $0.loop != nil || !$0.fallback.isEmpty || $0.delegate != nil || $0.handoff != nil
                    || !$0.publish.isEmpty || !$0.subscribe.isEmpty
            })
        else {
            return []
        }
        var diagnostics: [Diagnostic] = []
        let id = resource.id
        let namespace = resource.metadata.namespace
        var index: [String: Int] = [:]
        for (i, step) in declared.enumerated() where index[step.id.value] == nil { index[step.id.value] = i }
        let ids = declared.map(\.id.value)
        func path(_ i: Int, _ rest: String...) -> ValuePath {
            rest.reduce(WorkflowCheck.stepPath(i)) { $0.appending($1) }
        }
        func error(_ message: String, _ location: SourceLocation, _ path: ValuePath, notes: [Diagnostic.Note] = []) {
            diagnostics.append(.error(.dagPatternInvalid, message, at: location, resource: id, path: path, notes: notes))
        }

        // Loops first: routes may not sit inside them.
        var loopOf: [Int: String] = [:]
        for (i, step) in declared.enumerated() {
            guard let loop = step.loop else { continue }
            guard index[loop.from.value] != nil else {
                error(
                    "loop of step \"\(step.id.value)\" starts from \"\(loop.from.value)\", which is not a step of this workflow\(Suggestion.hint(for: loop.from.value, among: ids))",
                    loop.from.location, path(i, "loop", "from"))
                continue
            }
            guard let body = WorkflowPatterns.loopBody(of: i, declared, index) else {
                error(
                    "loop of step \"\(step.id.value)\" starts from \"\(loop.from.value)\", which is not upstream of it; a loop runs the steps from \"from\" to the step that declares it",
                    loop.from.location, path(i, "loop", "from"))
                continue
            }
            for b in body {
                if let other = loopOf[b] {
                    error(
                        "step \"\(declared[b].id.value)\" is in the loop of \"\(other)\" and in the loop of \"\(step.id.value)\"; loops may not share steps",
                        loop.location, path(i, "loop"))
                } else {
                    loopOf[b] = step.id.value
                }
                if b != i, declared[b].loop != nil {
                    error(
                        "loop of step \"\(step.id.value)\" contains step \"\(declared[b].id.value)\", which closes a loop of its own; loops do not nest",
                        loop.location, path(i, "loop"))
                }
            }
        }

        for (i, step) in declared.enumerated() {
            if let route = step.route {
                if let loop = loopOf[i] {
                    error(
                        "step \"\(step.id.value)\" routes inside the loop of \"\(loop)\"; put the route before or after the loop",
                        route.location, path(i, "route"))
                }
                var entered: [String: String] = [:]
                for branch in route.branches {
                    for (j, entry) in branch.steps.enumerated() {
                        let at = path(i, "route", "branches", branch.value).appending(j)
                        guard let e = index[entry.value] else {
                            error(
                                "branch \"\(branch.value)\" of step \"\(step.id.value)\" starts at \"\(entry.value)\", which is not a step of this workflow\(Suggestion.hint(for: entry.value, among: ids))",
                                entry.location, at)
                            continue
                        }
                        if e == i {
                            error("branch \"\(branch.value)\" of step \"\(step.id.value)\" starts at the router itself", entry.location, at)
                        } else if let first = entered[entry.value] {
                            error(
                                "step \"\(entry.value)\" starts both branch \"\(first)\" and branch \"\(branch.value)\" of step \"\(step.id.value)\"; a step belongs to one branch (put shared work after the branches)",
                                entry.location, at)
                        } else if loopOf[e] != nil && loopOf[e] != loopOf[i] {
                            error(
                                "branch \"\(branch.value)\" of step \"\(step.id.value)\" starts inside the loop of \"\(loopOf[e]!)\"; start it at the loop's first step",
                                entry.location, at)
                        }
                        entered[entry.value] = branch.value
                    }
                }
                if let fallback = route.default, !route.branches.contains(where: { $0.value == fallback.value }) {
                    error(
                        "the default of step \"\(step.id.value)\"'s route is \"\(fallback.value)\", which is not one of its branches\(Suggestion.hint(for: fallback.value, among: route.branches.map(\.value)))",
                        fallback.location, path(i, "route", "default"))
                }
            }
            if let delegate = step.delegate {
                let at = path(i, "delegate")
                if step.isApprovalGate {
                    error("step \"\(step.id.value)\" is an approval gate; only an agent can delegate", delegate.location, at)
                }
                if let loop = loopOf[i] {
                    error(
                        "step \"\(step.id.value)\" delegates inside the loop of \"\(loop)\"; a planner has rounds of its own (delegate.maxRounds)",
                        delegate.location, at)
                }
                for (other, present) in [("route", step.route != nil), ("loop", step.loop != nil), ("fallback", !step.fallback.isEmpty)]
                where present {
                    error(
                        "step \"\(step.id.value)\" has both delegate and \(other); put the \(other) on a step before or after the planner",
                        delegate.location, at)
                }
                if delegate.maxConcurrent > delegate.maxTasks {
                    error(
                        "delegate.maxConcurrent of step \"\(step.id.value)\" is \(delegate.maxConcurrent), more than its maxTasks (\(delegate.maxTasks)); at most maxTasks sub-tasks can run at once",
                        delegate.location, at.appending("maxConcurrent"))
                }
                var seen = Set<String>()
                for (j, worker) in delegate.workers.enumerated() {
                    let workerPath = at.appending("workers").appending(j)
                    if !fleet.declares(.agent, worker.value, namespace: namespace) {
                        diagnostics.append(ReferenceCheck.missing(.agent, worker, from: resource, path: workerPath, in: fleet))
                    } else if !seen.insert(worker.value).inserted {
                        error(
                            "agent \"\(worker.value)\" is listed twice in the pool of step \"\(step.id.value)\"", worker.location,
                            workerPath)
                    }
                }
                for (j, tool) in delegate.tools.enumerated() where !fleet.declaresTool(tool.value, namespace: namespace) {
                    diagnostics.append(
                        ReferenceCheck.missing(.tool, tool, from: resource, path: at.appending("tools").appending(j), in: fleet))
                }
            }
            if let handoff = step.handoff {
                let at = path(i, "handoff")
                if step.isApprovalGate {
                    error("step \"\(step.id.value)\" is an approval gate; only an agent can hand a task off", handoff.location, at)
                }
                if let loop = loopOf[i] {
                    error(
                        "step \"\(step.id.value)\" hands off inside the loop of \"\(loop)\"; put the hand-offs before or after the loop",
                        handoff.location, at)
                }
                for (other, present) in [
                    ("route", step.route != nil), ("loop", step.loop != nil), ("fallback", !step.fallback.isEmpty),
                    ("delegate", step.delegate != nil),
                ] where present {
                    error(
                        "step \"\(step.id.value)\" has both handoff and \(other); put the \(other) on a step before or after it",
                        handoff.location, at)
                }
                var seen = Set<String>()
                for (j, target) in handoff.agents.enumerated() {
                    let targetPath = at.appending("agents").appending(j)
                    if !fleet.declares(.agent, target.value, namespace: namespace) {
                        diagnostics.append(ReferenceCheck.missing(.agent, target, from: resource, path: targetPath, in: fleet))
                    } else if !seen.insert(target.value).inserted {
                        error(
                            "agent \"\(target.value)\" is listed twice in the hand-offs of step \"\(step.id.value)\"", target.location,
                            targetPath)
                    }
                }
            }
            for (j, topic) in step.subscribe.enumerated()
            where !declared.enumerated().contains(where: { $0.offset != i && $0.element.publish.contains { $0.value == topic.value } }) {
                let topics = Set(declared.flatMap { $0.publish.map(\.value) }).sorted()
                error(
                    "step \"\(step.id.value)\" subscribes to topic \"\(topic.value)\", which no other step of this workflow publishes\(Suggestion.hint(for: topic.value, among: topics))",
                    topic.location, path(i, "subscribe").appending(j))
            }
            for (j, fallback) in step.fallback.enumerated() {
                if !fleet.declares(.agent, fallback.agent.value, namespace: namespace) {
                    diagnostics.append(
                        ReferenceCheck.missing(
                            .agent, fallback.agent, from: resource, path: path(i, "fallback").appending(j).appending("agent"), in: fleet))
                } else if fallback.agent.value == step.agent?.value {
                    error(
                        "fallback \(j + 1) of step \"\(step.id.value)\" is its own agent \"\(fallback.agent.value)\"; retry it with retry.attempts instead",
                        fallback.agent.location, path(i, "fallback").appending(j).appending("agent"))
                }
            }
        }
        return diagnostics
    }
}
