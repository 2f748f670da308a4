public import OrlJSON

/// Bounded dynamic patterns of a Workflow: routing, revision loops and fallbacks.
///
/// Each is written on a step and has a bound known from the manifest, so orl expands it
/// into plain steps when the workflow is read: a loop's later rounds become copies of
/// its steps (`review~r2`), a fallback a step of its own (`draft~fallback1`), a route
/// the edges from the router to its branches. The structural checks, the permission
/// audit and the run engine then see every step that can run and every edge between
/// them, so every path is proven the way a DAG is (per edge, never by enumerating
/// paths), and what the run engine decides at run time (which branch, whether another
/// round, whether the fallback) only ever skips steps the proof already covered.
extension WorkflowSpec {
    /// `route:` on a step: a member of its output picks one branch.
    public struct Route: Sendable, Hashable, Decodable {
        public struct Branch: Sendable, Hashable {
            /// The value that selects it (and its name).
            public var value: String
            /// The steps that start it.
            public var steps: [Located<String>]
            public var location: SourceLocation
        }

        public var key: String
        public var branches: [Branch]
        public var `default`: Located<String>?
        public var location: SourceLocation

        enum CodingKeys: String, CodingKey { case key, branches, `default` }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            key = try c.decode(String.self, forKey: .key)
            let branches = try c.nestedContainer(keyedBy: NodeKey.self, forKey: .branches)
            let node = (decoder as? any LocatingDecoder)?.node["branches"]
            self.branches = try branches.allKeys.map { key in
                Branch(
                    value: key.stringValue, steps: try branches.decode([Located<String>].self, forKey: key),
                    location: node?.member(key.stringValue)?.keyLocation ?? .file(""))
            }
            `default` = try c.decodeIfPresent(Located<String>.self, forKey: .default)
            location = (decoder as? any LocatingDecoder)?.node.location ?? .file("")
        }
    }

    /// `loop:` on the last step of a revision loop.
    public struct Loop: Sendable, Hashable, Decodable {
        public struct Until: Sendable, Hashable {
            public var key: String
            /// The value that ends the loop, as canonical JSON.
            public var equals: String
        }

        public var from: Located<String>
        public var maxRounds: Int
        public var until: Until?
        public var location: SourceLocation

        enum CodingKeys: String, CodingKey { case from, maxRounds, until }
        enum UntilKeys: String, CodingKey { case key }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            from = try c.decode(Located<String>.self, forKey: .from)
            maxRounds = try c.decode(Int.self, forKey: .maxRounds)
            let node = (decoder as? any LocatingDecoder)?.node
            if c.contains(.until) {
                let u = try c.nestedContainer(keyedBy: UntilKeys.self, forKey: .until)
                let equals = node?["until"]?["equals"].map(CanonicalJSON.encode) ?? "null"
                until = Until(key: try u.decode(String.self, forKey: .key), equals: equals)
            } else {
                until = nil
            }
            location = node?.location ?? .file("")
        }
    }

    /// One entry of `fallback:`.
    public struct Fallback: Sendable, Hashable, Decodable {
        public var agent: Located<String>
        public var retry: Retry?
    }

    /// `delegate:` on a planner step: each round, its output lists sub-tasks (under
    /// `key`, each `{agent, task}`), which run as steps of the run on a declared pool of
    /// workers, at most `maxTasks` a round and `maxConcurrent` at a time; the planner
    /// sees their results in its next round, up to `maxRounds`. orl expands every round
    /// and every sub-task slot, so the audit checks each worker of the pool in each slot.
    public struct Delegate: Sendable, Hashable, Decodable {
        public var workers: [Located<String>]
        public var maxTasks: Int
        public var maxConcurrent: Int
        public var maxRounds: Int
        public var key: String
        /// What each sub-task step is given, as a step's fields.
        public var tools: [Located<String>]
        public var prompt: String?
        public var maxTokens: Int?
        public var retry: Retry?
        public var location: SourceLocation

        enum CodingKeys: String, CodingKey { case workers, maxTasks, maxConcurrent, maxRounds, key, tools, prompt, maxTokens, retry }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            workers = try c.decode([Located<String>].self, forKey: .workers)
            maxTasks = try c.decode(Int.self, forKey: .maxTasks)
            maxConcurrent = try c.decodeIfPresent(Int.self, forKey: .maxConcurrent) ?? maxTasks
            maxRounds = try c.decodeIfPresent(Int.self, forKey: .maxRounds) ?? 1
            key = try c.decodeIfPresent(String.self, forKey: .key) ?? "tasks"
            tools = try c.decodeIfPresent([Located<String>].self, forKey: .tools) ?? []
            prompt = try c.decodeIfPresent(String.self, forKey: .prompt)
            maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
            retry = try c.decodeIfPresent(Retry.self, forKey: .retry)
            location = (decoder as? any LocatingDecoder)?.node.location ?? .file("")
        }
    }

    /// `handoff:` on a step: the agent serving it may hand the task (with what it has
    /// so far) to another agent of `agents`, which may hand it on, at most
    /// `maxHandoffs` times. orl expands every turn (`triage~h1`, ...), each servable by
    /// any agent of the set, so the audit checks every hand-off between them.
    public struct Handoff: Sendable, Hashable, Decodable {
        public var agents: [Located<String>]
        public var maxHandoffs: Int
        public var key: String
        public var location: SourceLocation

        enum CodingKeys: String, CodingKey { case agents, maxHandoffs, key }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            agents = try c.decode([Located<String>].self, forKey: .agents)
            maxHandoffs = try c.decode(Int.self, forKey: .maxHandoffs)
            key = try c.decodeIfPresent(String.self, forKey: .key) ?? "handoffTo"
            location = (decoder as? any LocatingDecoder)?.node.location ?? .file("")
        }
    }

    /// What a derived step comes from, and where a step sits in a loop.
    public struct Generated: Sendable, Hashable {
        /// The declared step it is a copy of (itself for round 1 of a loop): its output
        /// is written under this name, so later steps read whichever copy ran last.
        public var declared: String
        /// The loop it belongs to (its closing step's id), and its round there.
        public var loop: String?
        public var round: Int?
        /// For a fallback: the step it takes over from, and its place in the chain (1...).
        public var takesOverFrom: String?
        public var fallback: Int?
        /// For a planner's rounds and its sub-tasks: the planner (its declared id).
        public var delegation: String? = nil
        /// For a sub-task: its slot in its round (1...), and the agents that may serve it.
        public var task: Int? = nil
        public var pool: [Located<String>] = []
        /// For a hand-off turn: its place (1...) after the declared step.
        public var turn: Int? = nil
    }
}

extension WorkflowSpec.Step {
    /// The blackboard key of the step's output: the declared step's id.
    public var outputKey: String { generated?.declared ?? id.value }

    /// `round 2 of loop "review"`, `fallback 1 of "draft"`: what a derived step is, for
    /// messages; nil for a declared step outside loops.
    public var provenance: String? {
        guard let generated else { return nil }
        var parts: [String] = []
        if let loop = generated.loop, let round = generated.round { parts.append("round \(round) of loop \"\(loop)\"") }
        if let n = generated.fallback, let from = generated.takesOverFrom { parts.append("fallback \(n) of \"\(from)\"") }
        if let turn = generated.turn {
            parts.append("hand-off \(turn) of \"\(generated.declared)\"")
        }
        if let planner = generated.delegation {
            if let task = generated.task {
                parts.append("sub-task \(task) of round \(generated.round ?? 1) delegated by \"\(planner)\"")
            } else if let round = generated.round {
                parts.append("round \(round) of planner \"\(planner)\"")
            }
        }
        return parts.isEmpty ? nil : parts.joined(separator: ", ")
    }
}

/// The expansion of the bounded patterns into plain steps.
enum WorkflowPatterns {
    /// Separates a declared id from the suffix of a derived step; a DNS label never
    /// contains it, so a derived id never collides with a declared one.
    static let separator = "~"

    static func expand(_ declared: [WorkflowSpec.Step]) -> [WorkflowSpec.Step] {
        guard
            declared.contains(where: {
                $0.route != nil || $0.loop != nil || !$0.fallback.isEmpty || $0.delegate != nil || $0.handoff != nil
            })
        else {
            return declared
        }
        var steps = declared
        var index: [String: Int] = [:]
        for (i, step) in steps.enumerated() where index[step.id.value] == nil { index[step.id.value] = i }

        // Routes: a branch's first steps run after the router.
        for step in declared {
            guard let route = step.route else { continue }
            for branch in route.branches {
                for entry in branch.steps {
                    guard let e = index[entry.value], e != index[step.id.value],
                        !steps[e].dependsOn.contains(where: { $0.value == step.id.value })
                    else { continue }
                    steps[e].dependsOn.append(Located(step.id.value, at: entry.location))
                }
            }
        }

        // Loops, in the order written; a loop whose shape is wrong is left as written
        // (PatternCheck reports it).
        for closing in declared.indices {
            guard let loop = steps[closing].loop, loop.maxRounds >= 1, let body = loopBody(of: closing, steps, index) else { continue }
            let name = steps[closing].id.value
            let members = Set(body)
            let ancestorsInBody = ancestors(body, steps, index)
            let template = body.map { steps[$0] }
            for i in body {
                steps[i].generated = .init(declared: steps[i].id.value, loop: name, round: 1)
                // Round 1 has no earlier round: a read of a later step of the loop reads nothing.
                for k in steps[i].inputs.indices {
                    guard case .stepOutput(let source, _) = steps[i].inputs[k].source, let s = index[source.value], members.contains(s),
                        !(ancestorsInBody[i]?.contains(s) ?? false)
                    else { continue }
                    steps[i].inputs[k].source = .literal(Node(.null, at: source.location))
                }
            }
            var previous: [String: String] = Dictionary(uniqueKeysWithValues: body.map { (steps[$0].id.value, steps[$0].id.value) })
            var copies: [String: [String]] = [:]
            for round in 2...max(2, loop.maxRounds) where round <= loop.maxRounds {
                var current: [String: String] = [:]
                for step in template { current[step.id.value] = "\(step.id.value)\(separator)r\(round)" }
                for (t, original) in zip(body, template) {
                    var copy = original
                    copy.id = Located(current[original.id.value]!, at: original.id.location)
                    copy.generated = .init(declared: original.id.value, loop: name, round: round)
                    copy.route = nil
                    copy.dependsOn = original.dependsOn.map { dep in
                        Located(current[dep.value] ?? dep.value, at: dep.location)
                    }
                    if original.id.value == loop.from.value {
                        copy.dependsOn.append(Located(previous[name]!, at: loop.from.location))
                    }
                    for k in copy.inputs.indices {
                        guard case .stepOutput(let source, let key) = copy.inputs[k].source, let s = index[source.value],
                            members.contains(s)
                        else { continue }
                        let forward = ancestorsInBody[t]?.contains(s) ?? false
                        let target = forward ? current[source.value]! : previous[source.value]!
                        copy.inputs[k].source = .stepOutput(step: Located(target, at: source.location), key: key)
                    }
                    steps.append(copy)
                    copies[original.id.value, default: []].append(copy.id.value)
                }
                previous = current
            }
            // Steps after the loop wait for every round (those not run are Skipped).
            for i in declared.indices where !members.contains(i) {
                var referenced: [Located<String>] = steps[i].dependsOn
                for (_, source) in steps[i].inputs {
                    if case .stepOutput(let s, _) = source { referenced.append(s) }
                }
                for ref in referenced {
                    for copy in copies[ref.value] ?? [] where !steps[i].dependsOn.contains(where: { $0.value == copy }) {
                        steps[i].dependsOn.append(Located(copy, at: ref.location))
                    }
                }
            }
        }

        // Delegations, after loops (a planner after a loop waits for its every round),
        // before fallbacks (a step after a planner waits for every sub-task, and so
        // does its fallback).
        for p in declared.indices where steps[p].delegate != nil && steps[p].generated == nil && !steps[p].isApprovalGate {
            expandDelegation(p, &steps)
        }

        for s in declared.indices where steps[s].handoff != nil && steps[s].generated == nil && !steps[s].isApprovalGate {
            expandHandoff(s, &steps)
        }

        // Fallbacks, last, so that loop copies get theirs too.
        var i = 0
        while i < steps.count {
            let step = steps[i]
            i += 1
            guard !step.fallback.isEmpty, step.generated?.fallback == nil, !step.isApprovalGate else { continue }
            var previousID = step.id.value
            var chain: [String] = []
            for (n, fallback) in step.fallback.enumerated() {
                var copy = step
                copy.id = Located("\(step.id.value)\(separator)fallback\(n + 1)", at: fallback.agent.location)
                copy.executor = .agent(fallback.agent)
                copy.retry = fallback.retry ?? step.retry
                copy.fallback = []
                copy.continueOnFailure = n == step.fallback.count - 1 ? step.continueOnFailure : false
                copy.dependsOn = step.dependsOn + [Located(previousID, at: fallback.agent.location)]
                copy.generated = .init(
                    declared: step.outputKey, loop: step.generated?.loop, round: step.generated?.round, takesOverFrom: previousID,
                    fallback: n + 1)
                steps.append(copy)
                chain.append(copy.id.value)
                previousID = copy.id.value
            }
            // Whatever waited for the step waits for its fallbacks too.
            let name = step.id.value
            for d in steps.indices where steps[d].id.value != name && !chain.contains(steps[d].id.value) {
                let reads =
                    steps[d].dependsOn.contains { $0.value == name }
                    || steps[d].inputs.contains { if case .stepOutput(let s, _) = $0.source { s.value == name } else { false } }
                guard reads else { continue }
                let at = steps[d].dependsOn.first { $0.value == name }?.location ?? steps[d].id.location
                for f in chain where !steps[d].dependsOn.contains(where: { $0.value == f }) {
                    steps[d].dependsOn.append(Located(f, at: at))
                }
            }
        }
        return steps
    }

    /// A planner's rounds and sub-task slots: round r's planner (`plan`, `plan~r2`, ...)
    /// is followed by its slots (`plan~task1`, `plan~r2~task1`, ...), each reading the
    /// planner's list and run by whichever worker of the pool it names; the next
    /// round's planner waits for them, and so does every step after the planner.
    private static func expandDelegation(_ p: Int, _ steps: inout [WorkflowSpec.Step]) {
        let planner = steps[p]
        guard let delegate = planner.delegate, delegate.maxTasks >= 1, delegate.maxRounds >= 1, let first = delegate.workers.first
        else { return }
        let name = planner.id.value
        var added: [String] = []
        var previousSlots: [Located<String>] = []
        for round in 1...delegate.maxRounds {
            let roundID: String
            if round == 1 {
                if delegate.maxRounds > 1 { steps[p].generated = .init(declared: name, round: 1, delegation: name) }
                roundID = name
            } else {
                var copy = planner
                roundID = "\(name)\(separator)r\(round)"
                copy.id = Located(roundID, at: planner.id.location)
                copy.generated = .init(declared: name, round: round, delegation: name)
                copy.dependsOn = planner.dependsOn + previousSlots
                steps.append(copy)
                added.append(roundID)
            }
            previousSlots = []
            for task in 1...delegate.maxTasks {
                let id = "\(roundID)\(separator)task\(task)"
                var slot = planner
                slot.id = Located(id, at: delegate.location)
                slot.executor = .agent(first)
                slot.dependsOn = [Located(roundID, at: delegate.location)]
                slot.inputs = [("task", .stepOutput(step: Located(roundID, at: delegate.location), key: delegate.key))]
                slot.tools = delegate.tools
                slot.prompt = delegate.prompt
                slot.maxTokens = delegate.maxTokens
                slot.retry = delegate.retry ?? planner.retry
                slot.continueOnFailure = false
                slot.route = nil
                slot.loop = nil
                slot.fallback = []
                slot.delegate = nil
                slot.handoff = nil
                slot.publish = []
                slot.subscribe = []
                slot.generated = .init(declared: id, round: round, delegation: name, task: task, pool: delegate.workers)
                steps.append(slot)
                added.append(id)
                previousSlots.append(Located(id, at: delegate.location))
            }
        }
        // Whatever waits for the planner waits for every round and sub-task.
        waitForAll(name, added, &steps)
    }

    /// A step's hand-off turns: turn k (`triage~hk`) runs after turn k-1, served by the
    /// agent turn k-1 named, with the step's inputs and turn k-1's output as
    /// `conversation`; they share the step's output key, so later steps read the last.
    private static func expandHandoff(_ s: Int, _ steps: inout [WorkflowSpec.Step]) {
        let step = steps[s]
        guard let handoff = step.handoff, handoff.maxHandoffs >= 1, let agent = step.agent else { return }
        let name = step.id.value
        var pool: [Located<String>] = [agent]
        for a in handoff.agents where !pool.contains(where: { $0.value == a.value }) { pool.append(a) }
        var previous = name
        var added: [String] = []
        for turn in 1...handoff.maxHandoffs {
            var copy = step
            let id = "\(name)\(separator)h\(turn)"
            copy.id = Located(id, at: handoff.location)
            copy.dependsOn = [Located(previous, at: handoff.location)]
            copy.inputs = step.inputs + [("conversation", .stepOutput(step: Located(previous, at: handoff.location), key: nil))]
            copy.route = nil
            copy.loop = nil
            copy.fallback = []
            copy.delegate = nil
            copy.generated = .init(declared: name, pool: pool, turn: turn)
            steps.append(copy)
            added.append(id)
            previous = id
        }
        waitForAll(name, added, &steps)
    }

    /// Whatever waits for (or reads) `name` waits for every step in `added` too.
    private static func waitForAll(_ name: String, _ added: [String], _ steps: inout [WorkflowSpec.Step]) {
        let mine = Set(added)
        for d in steps.indices where steps[d].id.value != name && !mine.contains(steps[d].id.value) {
            let reads =
                steps[d].dependsOn.contains { $0.value == name }
                || steps[d].inputs.contains { if case .stepOutput(let s, _) = $0.source { s.value == name } else { false } }
            guard reads else { continue }
            let at = steps[d].dependsOn.first { $0.value == name }?.location ?? steps[d].id.location
            for id in added where !steps[d].dependsOn.contains(where: { $0.value == id }) {
                steps[d].dependsOn.append(Located(id, at: at))
            }
        }
    }

    /// The steps of the loop closed by `closing`: those downstream of its `from` step and
    /// upstream of it (both included), in declaration order; nil when `from` is not
    /// upstream of it, or the loop shares a step with another construct.
    static func loopBody(of closing: Int, _ steps: [WorkflowSpec.Step], _ index: [String: Int]) -> [Int]? {
        guard let loop = steps[closing].loop, let from = index[loop.from.value] else { return nil }
        let dependencies = steps.map { step in step.dependsOn.compactMap { index[$0.value] } }
        // Upstream of the closing step (inclusive).
        var up = Set([closing])
        var stack = [closing]
        while let next = stack.popLast() {
            for d in dependencies[next] where up.insert(d).inserted { stack.append(d) }
        }
        guard up.contains(from) else { return nil }
        // Of those, the ones downstream of from (inclusive).
        var body = Set([from])
        var changed = true
        while changed {
            changed = false
            for i in up where !body.contains(i) && dependencies[i].contains(where: body.contains) {
                body.insert(i)
                changed = true
            }
        }
        return body.sorted()
    }

    /// For each body step, the body steps upstream of it.
    private static func ancestors(_ body: [Int], _ steps: [WorkflowSpec.Step], _ index: [String: Int]) -> [Int: Set<Int>] {
        let members = Set(body)
        var result: [Int: Set<Int>] = [:]
        func visit(_ i: Int) -> Set<Int> {
            if let known = result[i] { return known }
            result[i] = []
            var set = Set<Int>()
            for dep in steps[i].dependsOn {
                guard let d = index[dep.value], members.contains(d), d != i else { continue }
                set.insert(d)
                set.formUnion(visit(d))
            }
            result[i] = set
            return set
        }
        for i in body { _ = visit(i) }
        return result
    }
}
