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
        return parts.isEmpty ? nil : parts.joined(separator: ", ")
    }
}

/// The expansion of the bounded patterns into plain steps.
enum WorkflowPatterns {
    /// Separates a declared id from the suffix of a derived step; a DNS label never
    /// contains it, so a derived id never collides with a declared one.
    static let separator = "~"

    static func expand(_ declared: [WorkflowSpec.Step]) -> [WorkflowSpec.Step] {
        guard declared.contains(where: { $0.route != nil || $0.loop != nil || !$0.fallback.isEmpty }) else { return declared }
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
