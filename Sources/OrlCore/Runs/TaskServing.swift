/// Which task an agent's call to the model gateway or to a tool serves. Agents name it
/// with the `x-orl-run` and `x-orl-step` headers; an agent that names nothing is taken
/// to serve its only task in flight, when it has exactly one.
public enum TaskServing {
    /// The task among `inFlight` (the agent's) that the call names, or the only one.
    public static func choose(_ inFlight: [TaskID], agent: ResourceID, run: String?, step: String?) -> Result<TaskID, RunError> {
        let named = inFlight.filter { task in
            (run.map { $0 == task.run.rawValue } ?? true) && (step.map { $0 == task.step } ?? true)
        }
        if named.count == 1 { return .success(named[0]) }
        let serving =
            inFlight.isEmpty ? "it serves no task now" : "it serves \(inFlight.map(\.description).sorted().joined(separator: ", "))"
        if named.isEmpty {
            guard run != nil || step != nil else {
                return .failure(RunError(.forbidden, "agent \(Diagnostic.quoted(agent.name)) is serving no task: \(serving)"))
            }
            let what = [step.map { "step \(Diagnostic.quoted($0))" }, run.map { "run \($0)" }].compactMap { $0 }.joined(separator: " of ")
            return .failure(RunError(.forbidden, "agent \(Diagnostic.quoted(agent.name)) is not serving \(what): \(serving)"))
        }
        return .failure(
            RunError(
                .invalid,
                "agent \(Diagnostic.quoted(agent.name)) serves \(named.count) tasks (\(named.map(\.description).sorted().joined(separator: ", "))); "
                    + "say which with the x-orl-run and x-orl-step headers"))
    }
}

/// The tasks each agent holds, as the agents' API saw them claimed, renewed and
/// answered: what a model call is attributed to without a store read on the call's
/// path. An entry lapses with its lease, so a task given up by a sweep (or cancelled)
/// is forgotten at the latest when its lease would have expired.
public struct TasksInFlight: Sendable {
    private var leases: [ResourceID: [TaskID: Timestamp]] = [:]

    public init() {}

    /// Starts from the store's Running steps (after a controller restart, agents may
    /// still be working on them).
    public init(_ running: [StepRecord]) {
        for step in running {
            if let agent = step.agent, let lease = step.leaseExpiresAt { leases[agent, default: [:]][step.task] = lease }
        }
    }

    /// The agent holds the task until `lease` (claimed, or renewed by a heartbeat).
    public mutating func hold(_ task: TaskID, agent: ResourceID, until lease: Timestamp) {
        leases[agent, default: [:]][task] = lease
    }

    /// The task was answered, or refused: the agent no longer holds it.
    public mutating func release(_ task: TaskID, agent: ResourceID) {
        leases[agent]?[task] = nil
        if leases[agent]?.isEmpty == true { leases[agent] = nil }
    }

    /// The agent's tasks whose lease has not expired at `now`.
    public func tasks(of agent: ResourceID, at now: Timestamp) -> [TaskID] {
        (leases[agent] ?? [:]).filter { $0.value > now }.map(\.key).sorted { $0.description < $1.description }
    }

    /// Forgets leases that expired before `now`.
    public mutating func prune(at now: Timestamp) {
        for (agent, held) in leases {
            let live = held.filter { $0.value > now }
            leases[agent] = live.isEmpty ? nil : live
        }
    }
}

/// A tool call the run engine allows: the task it serves, whose step lists the tool.
public struct ToolGrant: Sendable, Hashable {
    public var task: TaskID
    public var idempotencyKey: String
    public var workflow: ResourceID
}

extension RunOperations {
    /// Every task in flight: the Running steps of every run.
    public func tasksInFlight() throws(RunError) -> [StepRecord] {
        do {
            return try store.readRuns { reader throws(StoreError) in try reader.runningSteps(agent: nil) }
        } catch {
            throw RunError(error)
        }
    }

    /// Whether `agent` may call `tool` for the task it names (`run`, `step`) or its only
    /// task in flight: the step must be Running, leased to the agent, and list the tool.
    /// Fails closed: no task, another agent's, or a step that does not list the tool is
    /// `forbidden`. (The agent's policies are checked by the caller, against the fleet
    /// as applied now.)
    public func toolGrant(_ tool: String, agent: ResourceID, run: String?, step: String?) throws(RunError) -> ToolGrant {
        let result: Result<ToolGrant, RunError>
        do {
            result = try store.readRuns { reader throws(StoreError) -> Result<ToolGrant, RunError> in
                let running = try reader.runningSteps(agent: agent)
                let task: TaskID
                switch TaskServing.choose(running.map(\.task), agent: agent, run: run, step: step) {
                case .success(let chosen): task = chosen
                case .failure(let error):
                    return .failure(
                        RunError(
                            error.kind,
                            "tool \(Diagnostic.quoted(tool)) may only be called for a step that lists it, which the agent is running; \(error.message)"
                        ))
                }
                let plan = try reader.plan(of: task.run)
                guard let index = plan.index[task.step] else {
                    return .failure(RunError(.notFound, "run \(task.run) has no step \(Diagnostic.quoted(task.step))"))
                }
                let tools = plan.steps[index].tools
                guard tools.contains(tool) else {
                    let lists = tools.isEmpty ? "it lists no tools" : "it lists: \(tools.joined(separator: ", "))"
                    return .failure(
                        RunError(
                            .forbidden,
                            "step \(Diagnostic.quoted(task.step)) of run \(task.run) does not list tool \(Diagnostic.quoted(tool)) (\(lists))"
                        ))
                }
                let record = running.first { $0.task == task }
                return .success(
                    ToolGrant(
                        task: task, idempotencyKey: record?.idempotencyKey ?? "\(task.run.rawValue)/\(task.step)", workflow: plan.workflow))
            }
        } catch {
            throw RunError(error)
        }
        return try result.get()
    }
}

extension RunOperations {
    /// The tools the step an agent serves lists (the task it names, or its only one in
    /// flight): what `/mcp` offers it while it works on that step. Fails closed as
    /// `toolGrant` does.
    public func stepTools(agent: ResourceID, run: String?, step: String?) throws(RunError) -> (task: TaskID, tools: [String]) {
        let result: Result<(task: TaskID, tools: [String]), RunError>
        do {
            result = try store.readRuns { reader throws(StoreError) -> Result<(task: TaskID, tools: [String]), RunError> in
                let running = try reader.runningSteps(agent: agent)
                let task: TaskID
                switch TaskServing.choose(running.map(\.task), agent: agent, run: run, step: step) {
                case .success(let chosen): task = chosen
                case .failure(let error): return .failure(error)
                }
                let plan = try reader.plan(of: task.run)
                guard let index = plan.index[task.step] else {
                    return .failure(RunError(.notFound, "run \(task.run) has no step \(Diagnostic.quoted(task.step))"))
                }
                return .success((task, plan.steps[index].tools))
            }
        } catch {
            throw RunError(error)
        }
        return try result.get()
    }
}
