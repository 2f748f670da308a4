import OrlJSON

/// What the audit of a workflow with bounded patterns adds to its findings: the audit
/// itself runs on the expanded steps (every branch, loop round and fallback is a step,
/// every way between them an edge), so every path is proven; this says which path a
/// finding is on ("via route billing of step classify", "round 2 of loop review"),
/// points derived steps back at the lines that declare them, and reports a problem
/// that every round repeats once.
public enum PatternAudit {
    /// Whether a note says which bounded path a finding is on (`step "refund" runs via
    /// route billing of step "classify"`, `step "plan~task1" is sub-task 1 ...`): what
    /// `review` shows under a finding.
    public static func isPathNote(_ note: Diagnostic.Note) -> Bool {
        note.location == nil && note.message.hasPrefix("step \"")
            && (note.message.contains("\" runs via route ") || note.message.contains("\" is "))
    }

    static func refine(_ diagnostics: [Diagnostic], spec: WorkflowSpec, graph: WorkflowGraph, workflow: ResourceID) -> [Diagnostic] {
        guard spec.steps.count > spec.declaredCount || spec.steps.contains(where: { $0.route != nil }), !diagnostics.isEmpty else {
            return diagnostics
        }
        let branches = BranchMembership(spec: spec, graph: graph)
        var seen = Set<String>()
        var result: [Diagnostic] = []
        for var diagnostic in diagnostics {
            if diagnostic.resource == workflow, let step = stepIndex(of: diagnostic.path) {
                let planned = spec.steps[step]
                if let provenance = planned.provenance, step >= spec.declaredCount || planned.generated?.round != nil {
                    diagnostic.notes.append(.init("step \"\(planned.id.value)\" is \(provenance)\(bound(planned, spec))"))
                }
                for via in branches.routes(of: step) {
                    diagnostic.notes.append(.init("step \"\(planned.id.value)\" runs via route \(via)"))
                }
                let declaredName =
                    planned.generated?.fallback != nil
                    ? (planned.generated?.takesOverFrom ?? "") : (planned.generated?.delegation ?? planned.outputKey)
                if step >= spec.declaredCount, let declared = graph.index[declaredName] {
                    diagnostic.path = declaredPath(diagnostic.path!, step: step, declared: declared, spec: spec, graph: graph)
                }
            }
            if diagnostic.code == .budgetInfeasible, diagnostic.resource == workflow {
                diagnostic.notes.append(.init(bounds(spec)))
            }
            // Every round repeats what its steps do: one report per place and problem.
            let key = "\(diagnostic.code)|\(diagnostic.location.map { "\($0)" } ?? "")|\(normalized(diagnostic.message))"
            guard seen.insert(key).inserted else { continue }
            result.append(diagnostic)
        }
        return result
    }

    private static func stepIndex(of path: ValuePath?) -> Int? {
        guard let components = path?.components, components.count >= 3, components[0] == .key("spec"), components[1] == .key("steps"),
            case .index(let i) = components[2]
        else { return nil }
        return i
    }

    /// A derived step's findings point at the declared step (its fallback entry for a fallback).
    private static func declaredPath(_ path: ValuePath, step: Int, declared: Int, spec: WorkflowSpec, graph: WorkflowGraph)
        -> ValuePath
    {
        var components = path.components
        components[2] = .index(declared)
        if spec.steps[step].generated?.task != nil {
            // A sub-task's findings belong to the planner's `delegate`.
            components.insert(.key("delegate"), at: 3)
        } else if spec.steps[step].generated?.turn != nil {
            components.insert(.key("handoff"), at: 3)
        }
        if let n = spec.steps[step].generated?.fallback {
            let primary = ValuePath(Array(components.prefix(3)))
            // The fallback's agent is where its findings belong, whatever they are about.
            return primary.appending("fallback").appending(n - 1).appending("agent")
        }
        return ValuePath(components)
    }

    private static func bound(_ step: WorkflowSpec.Step, _ spec: WorkflowSpec) -> String {
        if step.generated?.turn != nil, let handoff = step.handoff {
            return " (at most \(handoff.maxHandoffs) hand-off\(handoff.maxHandoffs == 1 ? "" : "s"))"
        }
        if let planner = step.generated?.delegation, let delegate = spec.steps.first(where: { $0.id.value == planner })?.delegate {
            return
                " (at most \(delegate.maxTasks) sub-task\(delegate.maxTasks == 1 ? "" : "s") a round, \(delegate.maxRounds) round\(delegate.maxRounds == 1 ? "" : "s"))"
        }
        guard let loop = step.generated?.loop, let closing = spec.steps.first(where: { $0.id.value == loop })?.loop else { return "" }
        return " (at most \(closing.maxRounds) round\(closing.maxRounds == 1 ? "" : "s"))"
    }

    private static func normalized(_ message: String) -> String {
        var out = ""
        var i = message.startIndex
        while i < message.endIndex {
            // Drop `~r2` (a loop or planner round) and `~task3` (a sub-task slot) so that
            // rounds and slots repeating a finding match.
            if message[i] == "~" {
                let rest = message[message.index(after: i)...]
                let prefix = rest.hasPrefix("task") ? 4 : rest.hasPrefix("r") || rest.hasPrefix("h") ? 1 : 0
                if prefix > 0 {
                    let digits = rest.index(rest.startIndex, offsetBy: prefix)
                    var j = digits
                    while j < message.endIndex, message[j].isNumber { j = message.index(after: j) }
                    if j > digits {
                        i = j
                        continue
                    }
                }
            }
            out.append(message[i])
            i = message.index(after: i)
        }
        return out
    }

    /// What a worst case counts: `counted at the bounds: loop "review" 3 rounds; fallbacks of "draft"; every branch of "classify"`.
    private static func bounds(_ spec: WorkflowSpec) -> String {
        var parts: [String] = []
        for step in spec.steps.prefix(spec.declaredCount) {
            if let loop = step.loop {
                parts.append("\(loop.maxRounds) round\(loop.maxRounds == 1 ? "" : "s") of loop \"\(step.id.value)\"")
            }
            if !step.fallback.isEmpty {
                parts.append("\(step.fallback.count) fallback\(step.fallback.count == 1 ? "" : "s") of \"\(step.id.value)\"")
            }
            if step.route != nil { parts.append("every branch of route \"\(step.id.value)\"") }
            if let handoff = step.handoff {
                parts.append("\(handoff.maxHandoffs) hand-off\(handoff.maxHandoffs == 1 ? "" : "s") of \"\(step.id.value)\"")
            }
            if let delegate = step.delegate {
                parts.append(
                    "\(delegate.maxTasks) sub-task\(delegate.maxTasks == 1 ? "" : "s") × \(delegate.maxRounds) round\(delegate.maxRounds == 1 ? "" : "s") delegated by \"\(step.id.value)\""
                )
            }
        }
        return "counted at the bounds: " + parts.joined(separator: "; ")
    }
}

/// Which branch of which router each step runs on: a step downstream of the first
/// steps of one branch and of no other branch of the same router runs only when that
/// branch is taken. The run engine skips exactly these steps for the branches not taken.
struct BranchMembership {
    /// Router index → branch → the steps that run only on it.
    private(set) var only: [Int: [(branch: String, steps: Set<Int>)]] = [:]
    private let routersOf: [Int: [(router: Int, branch: String)]]
    private let spec: WorkflowSpec

    init(spec: WorkflowSpec, graph: WorkflowGraph) {
        self.spec = spec
        var routersOf: [Int: [(router: Int, branch: String)]] = [:]
        for (r, step) in spec.steps.enumerated() {
            guard let route = step.route, graph.index[step.id.value] == r else { continue }
            var reach: [(String, Set<Int>)] = []
            for branch in route.branches {
                let entries = branch.steps.compactMap { graph.index[$0.value] }.filter { $0 != r }
                reach.append((branch.value, Self.downstream(of: entries, graph)))
            }
            var perBranch: [(branch: String, steps: Set<Int>)] = []
            for (k, (name, steps)) in reach.enumerated() {
                var mine = steps
                for (other, (_, theirs)) in reach.enumerated() where other != k { mine.subtract(theirs) }
                perBranch.append((name, mine))
                for s in mine { routersOf[s, default: []].append((r, name)) }
            }
            only[r] = perBranch
        }
        self.routersOf = routersOf
    }

    /// `billing of step "classify"` for each route the step depends on.
    func routes(of step: Int) -> [String] {
        var seen = Set<String>()
        return (routersOf[step] ?? []).map { "\($0.branch) of step \"\(spec.steps[$0.router].outputKey)\"" }.filter {
            seen.insert($0).inserted
        }
    }

    static func downstream(of entries: [Int], _ graph: WorkflowGraph) -> Set<Int> {
        var seen = Set(entries)
        var stack = entries
        while let next = stack.popLast() {
            for d in graph.dependants[next] where seen.insert(d).inserted { stack.append(d) }
        }
        return seen
    }
}
