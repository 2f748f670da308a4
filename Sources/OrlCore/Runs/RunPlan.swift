import OrlJSON

/// What a run executes: its workflow's DAG as it was when the run started, with every
/// step's executor, retry policy, deadlines, inputs and data classes resolved. Made
/// once, stored with the run (as JSON) and never changed, so a re-apply of the
/// workflow in the middle of a run does not change the run.
public struct RunPlan: Sendable, Hashable {
    public struct Step: Sendable, Hashable {
        public enum Executor: Sendable, Hashable {
            /// The name of the Agent, in the workflow's namespace.
            case agent(String)
            case approval(message: String?, timeout: Duration, onTimeout: WorkflowSpec.Approval.OnTimeout)
        }

        /// Where a named input of the step comes from.
        public enum Source: Sendable, Hashable {
            case runInput(String)
            /// The output of step `step` (an index), or one key of it.
            case stepOutput(step: Int, key: String?)
            /// A literal, as canonical JSON.
            case literal(String)
        }

        public struct Input: Sendable, Hashable {
            public var name: String
            public var source: Source
        }

        public var id: String
        public var executor: Executor
        /// Indices of the steps it waits for, and of those waiting for it.
        public var dependencies: [Int]
        public var dependants: [Int]
        public var inputs: [Input]
        public var prompt: String?
        public var tools: [String]
        public var maxTokens: Int?
        public var timeout: Duration
        public var heartbeatTimeout: Duration
        /// Attempts in all, the first included.
        public var attempts: Int
        public var backoff: Duration
        public var maxBackoff: Duration
        public var continueOnFailure: Bool
        /// The data classes the step's output carries (sorted).
        public var dataClasses: [String]
        /// The blackboard key its output goes under: the declared step's id (loop
        /// rounds and fallbacks share it, so later steps read whichever ran last).
        public var outputKey: String = ""
        /// Its round, in a loop.
        public var round: Int? = nil
        /// What it decides when it succeeds, and the steps that does not run.
        public var route: Route? = nil
        public var until: Until? = nil
        /// The step that takes over when its last attempt fails, and the fallbacks
        /// skipped when it succeeds.
        public var fallback: Int? = nil
        public var skipOnSuccess: [Int] = []
        /// For a planner round: its sub-task slots and what ends the delegation.
        public var delegation: Delegation? = nil
        /// For a sub-task slot: the workers that may serve it (its agent is the one the
        /// planner names, set when the planner answers), its place in the planner's list
        /// (0-based), and the other slots of its round (one waiting for a place starts
        /// when one of them ends).
        public var pool: [String] = []
        public var subtask: Int? = nil
        public var siblings: [Int] = []

        /// For a step that may hand its task off: who to, and the next turn.
        public var handoff: Handoff? = nil
        /// The blackboard topics its agent may write and read while it runs; any other is
        /// refused (the audit proved these, and only these).
        public var publish: [String] = []
        public var subscribe: [String] = []

        public struct Handoff: Sendable, Hashable {
            public var key: String
            public var agents: [String]
            /// This step's turn (0 for the declared step) and the bound.
            public var turn: Int
            public var maxHandoffs: Int
            /// The next turn, none at the bound; and every later turn.
            public var next: Int?
            public var later: [Int]
        }

        /// A planner round, resolved.
        public struct Delegation: Sendable, Hashable {
            public var planner: String
            public var key: String
            public var workers: [String]
            /// The round's sub-task slots, in order.
            public var slots: [Int]
            public var maxConcurrent: Int
            public var round: Int
            public var maxRounds: Int
            /// The later rounds' planners and slots: skipped when this round lists no sub-task.
            public var later: [Int]
        }

        /// A route, resolved: each branch with the steps skipped when it is taken.
        public struct Route: Sendable, Hashable {
            public struct Branch: Sendable, Hashable {
                public var value: String
                public var skip: [Int]
            }

            public var key: String
            public var branches: [Branch]
            /// The index in `branches` of the default.
            public var defaultBranch: Int?
        }

        /// The end condition of one round of a loop, with the later rounds' steps.
        public struct Until: Sendable, Hashable {
            public var loop: String
            public var key: String?
            /// Canonical JSON.
            public var equals: String?
            public var round: Int
            public var maxRounds: Int
            public var skip: [Int]
        }

        public var agent: String? {
            if case .agent(let name) = executor { return name }
            return nil
        }

        public var isApprovalGate: Bool { agent == nil }

        /// The retry backoff as the controller's crash backoff computes it.
        public var backoffPolicy: BackoffPolicy {
            BackoffPolicy(initial: backoff, cap: maxBackoff, jitter: RunPlan.retryJitter, resetAfter: .zero)
        }
    }

    public var workflow: ResourceID
    public var generation: Int
    public var steps: [Step]
    /// Step id → index.
    public let index: [String: Int]

    /// Up to this fraction of a retry's backoff is added at random, so tasks that failed
    /// together do not all come back at the same instant.
    public static let retryJitter = 0.2

    public init(workflow: ResourceID, generation: Int, steps: [Step]) {
        self.workflow = workflow
        self.generation = generation
        self.steps = steps
        var index: [String: Int] = [:]
        for (i, step) in steps.enumerated() { index[step.id] = i }
        self.index = index
    }

    public static func == (lhs: RunPlan, rhs: RunPlan) -> Bool {
        lhs.workflow == rhs.workflow && lhs.generation == rhs.generation && lhs.steps == rhs.steps
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(workflow)
        hasher.combine(generation)
        hasher.combine(steps)
    }

    /// Every step downstream of `step`, in breadth-first order.
    public func descendants(of step: Int) -> [Int] {
        var seen = Set<Int>()
        var queue = steps[step].dependants
        var head = 0
        while head < queue.count {
            let next = queue[head]
            head += 1
            if seen.insert(next).inserted { queue += steps[next].dependants }
        }
        return queue.filter { seen.remove($0) != nil }
    }

    /// The agent of a step as a resource.
    public func agent(of step: Int) -> ResourceID? {
        steps[step].agent.map { ResourceID(kind: ResourceKind.agent.rawValue, namespace: workflow.namespace, name: $0) }
    }

    // MARK: Compiling

    /// The plan of a run of `workflow` against the state as it is: refused unless the
    /// workflow passes the structural checks and the permission audit against `fleet`
    /// (the state could have drifted from what apply audited, and a run fails closed).
    public static func compile(_ workflow: Resource, generation: Int, in fleet: Fleet) -> Result<RunPlan, RunError> {
        guard let spec = workflow.workflow else {
            return .failure(RunError(.invalid, "\(workflow.id) is not a Workflow"))
        }
        let graph = WorkflowGraph(spec)
        var problems = WorkflowCheck.check(spec, of: workflow, in: fleet).filter { $0.severity == .error }
        guard problems.isEmpty, let order = graph.topologicalOrder() else {
            return .failure(refusal(workflow, problems, what: "is not a valid DAG"))
        }
        let engine = PolicyEngine(fleet)
        problems = (WorkflowAudit(workflow: workflow, fleet: fleet, engine: engine)?.run() ?? []).filter { $0.severity == .error }
        guard problems.isEmpty else {
            return .failure(refusal(workflow, problems, what: "does not pass the permission audit against the applied state"))
        }
        let flow = DataClassFlow(spec: spec, graph: graph, order: order, namespace: workflow.metadata.namespace, fleet: fleet)
        let steps = spec.steps.enumerated().map { i, step in
            let executor: Step.Executor =
                switch step.executor {
                case .agent(let name): .agent(name.value)
                case .approval(let approval):
                    .approval(message: approval.message, timeout: approval.timeout.duration, onTimeout: approval.onTimeout)
                }
            let inputs = step.inputs.map { name, source -> Step.Input in
                switch source {
                case .runInput(let input): Step.Input(name: name, source: .runInput(input.value))
                case .stepOutput(let step, let key): Step.Input(name: name, source: .stepOutput(step: graph.index[step.value]!, key: key))
                case .literal(let node): Step.Input(name: name, source: .literal(CanonicalJSON.encode(node)))
                }
            }
            return Step(
                id: step.id.value, executor: executor, dependencies: graph.dependencies[i], dependants: graph.dependants[i], inputs: inputs,
                prompt: step.prompt, tools: step.tools.map(\.value), maxTokens: step.maxTokens, timeout: step.timeout.duration,
                heartbeatTimeout: step.heartbeatTimeout.duration, attempts: max(1, step.retry.attempts),
                backoff: step.retry.backoff.duration,
                maxBackoff: step.retry.maxBackoff.duration, continueOnFailure: step.continueOnFailure,
                dataClasses: flow.names(flow.carried[i]), outputKey: step.outputKey, round: step.generated?.round,
                publish: step.publish.map(\.value), subscribe: step.subscribe.map(\.value))
        }
        return .success(RunPlan(workflow: workflow.id, generation: generation, steps: decisions(steps, spec, graph)))
    }

    private static func refusal(_ workflow: Resource, _ problems: [Diagnostic], what: String) -> RunError {
        let shown = problems.prefix(3).map { "\n  \($0.code): \($0.message)" }.joined()
        let more = problems.count > 3 ? "\n  and \(problems.count - 3) more" : ""
        return RunError(
            .forbidden,
            "workflow \(Diagnostic.quoted(workflow.metadata.name)) \(what), so it cannot run:\(shown)\(more)\n(orlctl validate on its manifests shows where)"
        )
    }

    /// The run-time side of the bounded patterns: what each router, loop round and
    /// fallback skips, computed once from the expanded graph.
    private static func decisions(_ steps: [Step], _ spec: WorkflowSpec, _ graph: WorkflowGraph) -> [Step] {
        var steps = steps
        let branches = BranchMembership(spec: spec, graph: graph)
        for (i, step) in spec.steps.enumerated() {
            if let route = step.route {
                let only = branches.only[i] ?? []
                let plan = route.branches.enumerated().map { k, branch in
                    Step.Route.Branch(
                        value: branch.value,
                        skip: only.enumerated().filter { $0.offset != k }.flatMap { $0.element.steps }.sorted())
                }
                steps[i].route = Step.Route(
                    key: route.key, branches: plan,
                    defaultBranch: route.default.flatMap { d in route.branches.firstIndex { $0.value == d.value } })
            }
            if let loop = step.loop, let name = step.generated?.loop, let round = step.generated?.round {
                let later = spec.steps.indices.filter {
                    spec.steps[$0].generated?.loop == name && (spec.steps[$0].generated?.round ?? 0) > round
                }
                steps[i].until = Step.Until(
                    loop: name, key: loop.until?.key, equals: loop.until?.equals, round: round, maxRounds: loop.maxRounds, skip: later)
            }
        }
        // Delegations: each planner round with its slots and the rounds after it.
        for (i, step) in spec.steps.enumerated() {
            guard let planner = step.generated?.delegation else { continue }
            let round = step.generated?.round ?? 1
            let group = spec.steps.indices.filter {
                spec.steps[$0].generated?.delegation == planner && spec.steps[$0].generated?.round ?? 1 == round
                    && spec.steps[$0].generated?.task != nil
            }
            if let task = step.generated?.task {
                steps[i].pool = (step.generated?.pool ?? []).map(\.value)
                steps[i].subtask = task - 1
                steps[i].siblings = group.filter { $0 != i }
            } else if let delegate = step.delegate {
                steps[i].delegation = Step.Delegation(
                    planner: planner, key: delegate.key, workers: delegate.workers.map(\.value), slots: group,
                    maxConcurrent: delegate.maxConcurrent, round: round, maxRounds: delegate.maxRounds,
                    later: spec.steps.indices.filter {
                        spec.steps[$0].generated?.delegation == planner && spec.steps[$0].generated?.round ?? 1 > round
                    })
            }
        }
        // Hand-offs: each turn names the next.
        for (i, step) in spec.steps.enumerated() {
            guard let handoff = step.handoff else { continue }
            let name = step.outputKey
            let turn = step.generated?.turn ?? 0
            if turn > 0 { steps[i].pool = (step.generated?.pool ?? []).map(\.value) }
            steps[i].handoff = Step.Handoff(
                key: handoff.key, agents: ([step.agent?.value].compactMap { $0 } + handoff.agents.map(\.value)).uniqued(), turn: turn,
                maxHandoffs: handoff.maxHandoffs,
                next: graph.index["\(name)\(WorkflowPatterns.separator)h\(turn + 1)"],
                later: spec.steps.indices.filter { spec.steps[$0].outputKey == name && (spec.steps[$0].generated?.turn ?? 0) > turn })
        }
        // Fallback chains: each step names the next; a success skips the rest.
        for (i, step) in spec.steps.enumerated() {
            guard let from = step.generated?.takesOverFrom, let previous = graph.index[from] else { continue }
            steps[previous].fallback = i
        }
        for i in steps.indices {
            var chain: [Int] = []
            var next = steps[i].fallback
            while let n = next {
                chain.append(n)
                next = steps[n].fallback
            }
            steps[i].skipOnSuccess = chain
        }
        return steps
    }

    // MARK: Stored form

    /// Compact JSON, as the store keeps it.
    public var json: String {
        JSONValue.object([
            ("workflow", .string(workflow.name)),
            ("namespace", .string(workflow.namespace)),
            ("generation", .int(generation)),
            ("steps", .array(steps.map(Self.json))),
        ]).compactRendered()
    }

    private static func json(_ step: Step) -> JSONValue {
        var members: [(String, JSONValue?)] = [("id", .string(step.id))]
        switch step.executor {
        case .agent(let name):
            members.append(("agent", .string(name)))
        case .approval(let message, let timeout, let onTimeout):
            members.append(
                (
                    "approval",
                    .object([
                        ("message", message.map { .string($0) }), ("timeoutMs", .int(Int(timeout.wholeMilliseconds))),
                        ("onTimeout", .string(onTimeout.rawValue)),
                    ])
                ))
        }
        members += [
            ("dependencies", .array(step.dependencies.map { .int($0) })),
            ("dependants", .array(step.dependants.map { .int($0) })),
            (
                "inputs",
                .array(
                    step.inputs.map { input in
                        let source: JSONValue =
                            switch input.source {
                            case .runInput(let name): .object([("input", .string(name))])
                            case .stepOutput(let step, let key): .object([("step", .int(step)), ("key", key.map { .string($0) })])
                            case .literal(let json): .object([("literal", .string(json))])
                            }
                        return .object([("name", .string(input.name)), ("source", source)])
                    })
            ),
            ("prompt", step.prompt.map { .string($0) }),
            ("tools", .array(step.tools.map { .string($0) })),
            ("maxTokens", step.maxTokens.map { .int($0) }),
            ("timeoutMs", .int(Int(step.timeout.wholeMilliseconds))),
            ("heartbeatTimeoutMs", .int(Int(step.heartbeatTimeout.wholeMilliseconds))),
            ("attempts", .int(step.attempts)),
            ("backoffMs", .int(Int(step.backoff.wholeMilliseconds))),
            ("maxBackoffMs", .int(Int(step.maxBackoff.wholeMilliseconds))),
            ("continueOnFailure", .bool(step.continueOnFailure)),
            ("dataClasses", .array(step.dataClasses.map { .string($0) })),
            ("outputKey", step.outputKey == step.id ? nil : .string(step.outputKey)),
            ("round", step.round.map { .int($0) }),
            ("fallback", step.fallback.map { .int($0) }),
            ("skipOnSuccess", step.skipOnSuccess.isEmpty ? nil : .array(step.skipOnSuccess.map { .int($0) })),
            ("pool", step.pool.isEmpty ? nil : .array(step.pool.map { .string($0) })),
            ("subtask", step.subtask.map { .int($0) }),
            ("siblings", step.siblings.isEmpty ? nil : .array(step.siblings.map { .int($0) })),
            ("publish", step.publish.isEmpty ? nil : .array(step.publish.map { .string($0) })),
            ("subscribe", step.subscribe.isEmpty ? nil : .array(step.subscribe.map { .string($0) })),
        ]
        if let h = step.handoff {
            members.append(
                (
                    "handoff",
                    .object([
                        ("key", .string(h.key)), ("agents", .array(h.agents.map { .string($0) })), ("turn", .int(h.turn)),
                        ("maxHandoffs", .int(h.maxHandoffs)), ("next", h.next.map { .int($0) }),
                        ("later", .array(h.later.map { .int($0) })),
                    ])
                ))
        }
        if let d = step.delegation {
            members.append(
                (
                    "delegation",
                    .object([
                        ("planner", .string(d.planner)), ("key", .string(d.key)), ("workers", .array(d.workers.map { .string($0) })),
                        ("slots", .array(d.slots.map { .int($0) })), ("maxConcurrent", .int(d.maxConcurrent)), ("round", .int(d.round)),
                        ("maxRounds", .int(d.maxRounds)), ("later", .array(d.later.map { .int($0) })),
                    ])
                ))
        }
        if let route = step.route {
            members.append(
                (
                    "route",
                    .object([
                        ("key", .string(route.key)),
                        (
                            "branches",
                            .array(
                                route.branches.map { .object([("value", .string($0.value)), ("skip", .array($0.skip.map { .int($0) }))]) })
                        ),
                        ("default", route.defaultBranch.map { .int($0) }),
                    ])
                ))
        }
        if let until = step.until {
            members.append(
                (
                    "until",
                    .object([
                        ("loop", .string(until.loop)), ("key", until.key.map { .string($0) }), ("equals", until.equals.map { .string($0) }),
                        ("round", .int(until.round)), ("maxRounds", .int(until.maxRounds)), ("skip", .array(until.skip.map { .int($0) })),
                    ])
                ))
        }
        return .object(members)
    }

    /// Reads the stored form back.
    public init(json text: String) throws(StoreError) {
        let corrupt = { (what: String) in StoreError("a stored run plan is corrupt (\(what)); the run cannot continue") }
        guard let root = try? JSONParser.parse(text, file: "<run plan>") else { throw corrupt("not JSON") }
        guard let name = root["workflow"]?.string, let namespace = root["namespace"]?.string,
            let generation = root["generation"]?.number?.integer, let items = root["steps"]?.elements
        else { throw corrupt("no workflow") }
        func int(_ node: Node?) -> Int? { node?.number?.integer }
        func ms(_ node: Node?) throws(StoreError) -> Duration {
            guard let value = int(node) else { throw corrupt("a duration is missing") }
            return .milliseconds(value)
        }
        func indicesOf(_ node: Node?, _ what: String) throws(StoreError) -> [Int] {
            let values = (node?.elements ?? []).compactMap { int($0) }
            guard values.allSatisfy({ $0 >= 0 && $0 < items.count }) else { throw corrupt(what) }
            return values
        }
        var steps: [Step] = []
        for item in items {
            guard let id = item["id"]?.string else { throw corrupt("a step has no id") }
            let executor: Step.Executor
            if let agent = item["agent"]?.string {
                executor = .agent(agent)
            } else if let approval = item["approval"],
                let onTimeout = approval["onTimeout"]?.string.flatMap(WorkflowSpec.Approval.OnTimeout.init(rawValue:))
            {
                executor = .approval(message: approval["message"]?.string, timeout: try ms(approval["timeoutMs"]), onTimeout: onTimeout)
            } else {
                throw corrupt("step \(id) has no executor")
            }
            var inputs: [Step.Input] = []
            for input in item["inputs"]?.elements ?? [] {
                guard let inputName = input["name"]?.string, let source = input["source"] else { throw corrupt("an input of \(id)") }
                if let run = source["input"]?.string {
                    inputs.append(Step.Input(name: inputName, source: .runInput(run)))
                } else if let step = int(source["step"]), step >= 0, step < items.count {
                    inputs.append(Step.Input(name: inputName, source: .stepOutput(step: step, key: source["key"]?.string)))
                } else if let literal = source["literal"]?.string {
                    inputs.append(Step.Input(name: inputName, source: .literal(literal)))
                } else {
                    throw corrupt("input \(inputName) of \(id)")
                }
            }
            let indices = { (key: String) throws(StoreError) -> [Int] in
                let values = (item[key]?.elements ?? []).compactMap { int($0) }
                guard values.allSatisfy({ $0 >= 0 && $0 < items.count }) else { throw corrupt("\(key) of \(id)") }
                return values
            }
            guard let attempts = int(item["attempts"]) else { throw corrupt("attempts of \(id)") }
            var route: Step.Route?
            if let r = item["route"] {
                guard let key = r["key"]?.string else { throw corrupt("route of \(id)") }
                var branches: [Step.Route.Branch] = []
                for b in r["branches"]?.elements ?? [] {
                    guard let value = b["value"]?.string else { throw corrupt("route of \(id)") }
                    branches.append(Step.Route.Branch(value: value, skip: try indicesOf(b["skip"], "route of \(id)")))
                }
                route = Step.Route(key: key, branches: branches, defaultBranch: int(r["default"]))
            }
            var until: Step.Until?
            if let u = item["until"] {
                guard let loop = u["loop"]?.string, let round = int(u["round"]), let maxRounds = int(u["maxRounds"]) else {
                    throw corrupt("until of \(id)")
                }
                until = Step.Until(
                    loop: loop, key: u["key"]?.string, equals: u["equals"]?.string, round: round, maxRounds: maxRounds,
                    skip: try indicesOf(u["skip"], "until of \(id)"))
            }
            var delegation: Step.Delegation?
            if let d = item["delegation"] {
                guard let planner = d["planner"]?.string, let key = d["key"]?.string, let maxConcurrent = int(d["maxConcurrent"]),
                    let round = int(d["round"]), let maxRounds = int(d["maxRounds"])
                else { throw corrupt("delegation of \(id)") }
                delegation = Step.Delegation(
                    planner: planner, key: key, workers: (d["workers"]?.elements ?? []).compactMap(\.string),
                    slots: try indicesOf(d["slots"], "delegation of \(id)"), maxConcurrent: maxConcurrent, round: round,
                    maxRounds: maxRounds, later: try indicesOf(d["later"], "delegation of \(id)"))
            }
            var handoff: Step.Handoff?
            if let h = item["handoff"] {
                guard let key = h["key"]?.string, let turn = int(h["turn"]), let maxHandoffs = int(h["maxHandoffs"]) else {
                    throw corrupt("handoff of \(id)")
                }
                let next = int(h["next"])
                if let next, next < 0 || next >= items.count { throw corrupt("handoff of \(id)") }
                handoff = Step.Handoff(
                    key: key, agents: (h["agents"]?.elements ?? []).compactMap(\.string), turn: turn, maxHandoffs: maxHandoffs, next: next,
                    later: try indicesOf(h["later"], "handoff of \(id)"))
            }
            let fallback = int(item["fallback"])
            if let fallback, fallback < 0 || fallback >= items.count { throw corrupt("fallback of \(id)") }
            steps.append(
                Step(
                    id: id, executor: executor, dependencies: try indices("dependencies"), dependants: try indices("dependants"),
                    inputs: inputs,
                    prompt: item["prompt"]?.string, tools: (item["tools"]?.elements ?? []).compactMap(\.string),
                    maxTokens: int(item["maxTokens"]),
                    timeout: try ms(item["timeoutMs"]), heartbeatTimeout: try ms(item["heartbeatTimeoutMs"]), attempts: attempts,
                    backoff: try ms(item["backoffMs"]), maxBackoff: try ms(item["maxBackoffMs"]),
                    continueOnFailure: item["continueOnFailure"]?.bool ?? false,
                    dataClasses: (item["dataClasses"]?.elements ?? []).compactMap(\.string), outputKey: item["outputKey"]?.string ?? id,
                    round: int(item["round"]), route: route, until: until, fallback: fallback,
                    skipOnSuccess: try indicesOf(item["skipOnSuccess"], "skipOnSuccess of \(id)"), delegation: delegation,
                    pool: (item["pool"]?.elements ?? []).compactMap(\.string), subtask: int(item["subtask"]),
                    siblings: try indicesOf(item["siblings"], "siblings of \(id)"), handoff: handoff,
                    publish: (item["publish"]?.elements ?? []).compactMap(\.string),
                    subscribe: (item["subscribe"]?.elements ?? []).compactMap(\.string)))
        }
        self.init(
            workflow: ResourceID(kind: ResourceKind.workflow.rawValue, namespace: namespace, name: name), generation: generation,
            steps: steps)
    }
}

extension Array where Element: Hashable {
    /// The elements in order, each once.
    fileprivate func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
