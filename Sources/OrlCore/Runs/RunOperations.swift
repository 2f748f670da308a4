public import OrlJSON

/// The run use cases, each one write transaction of the store: start a run, claim the
/// next task of an agent, heartbeat, complete, fail, approve or deny a gate, cancel,
/// sweep what is overdue, fire cron triggers. The agents' API and the CLI are thin
/// layers over these; `RunEngine` decides every transition.
///
/// Safe under concurrency from any number of processes: each operation reads what it
/// decides on inside its own exclusive transaction, so two agents claiming at once get
/// two different tasks (or one gets none), and a late answer to an attempt that has
/// been given up is refused.
public struct RunOperations: Sendable {
    public let store: any RunStore
    /// Told, after a write commits, the agents that have a step Ready because of it (at
    /// once, or after a retry's backoff): what wakes the agents' long polls.
    public let onReady: (@Sendable (Set<ResourceID>) -> Void)?

    public init(store: any RunStore, onReady: (@Sendable (Set<ResourceID>) -> Void)? = nil) {
        self.store = store
        self.onReady = onReady
    }

    // MARK: Starting

    public struct StartRequest: Sendable {
        public var workflow: ResourceID
        public var input: [(name: String, value: String)]
        public var trigger: RunTrigger
        public var by: String

        public init(workflow: ResourceID, input: [(name: String, value: String)] = [], trigger: RunTrigger = .manual, by: String) {
            self.workflow = workflow
            self.input = input
            self.trigger = trigger
            self.by = by
        }
    }

    /// Starts a run of the workflow as applied now, if it passes the checks and the
    /// permission audit against the applied state and the input fits.
    public func start(_ request: StartRequest, now: Timestamp, random: UInt32) throws(RunError) -> RunRecord {
        try write { tx throws(StoreError) in try Self.start(request, now: now, random: random, in: tx) }
    }

    private static func start(
        _ request: StartRequest, now: Timestamp, random: UInt32, in tx: Transaction
    ) throws(StoreError) -> Result<RunRecord, RunError> {
        let id = request.workflow
        guard let stored = try tx.writer.resource(id) else {
            let scope = id.namespace == ResourceID.defaultNamespace ? "" : " in namespace \(Diagnostic.quoted(id.namespace))"
            let names = try tx.writer.resources(kind: .workflow, namespace: id.namespace).map(\.id.name)
            return .failure(
                RunError(
                    .notFound, "Workflow \(Diagnostic.quoted(id.name)) is not applied\(scope)\(Suggestion.hint(for: id.name, among: names))"
                ))
        }
        let fleet = Fleet.applied(try tx.writer.resources(kind: nil, namespace: id.namespace)).fleet
        guard let workflow = fleet[id], let spec = workflow.workflow else {
            return .failure(
                RunError(.forbidden, "the applied manifest of Workflow \(Diagnostic.quoted(id.name)) no longer reads; re-apply it"))
        }
        let input: String
        switch RunInput.resolve(request.input, for: spec, workflow: id.name) {
        case .success(let resolved): input = resolved
        case .failure(let error): return .failure(error)
        }
        let plan: RunPlan
        switch RunPlan.compile(workflow, generation: stored.generation, in: fleet) {
        case .success(let compiled): plan = compiled
        case .failure(let error): return .failure(error)
        }
        let run = RunRecord(
            id: RunID(time: now, random: random), workflow: id, generation: stored.generation, trigger: request.trigger, input: input,
            createdAt: now, createdBy: request.by)
        let steps = RunEngine.initialSteps(of: plan, run: run.id, now: now)
        try tx.writer.insert(run, plan: plan, steps: steps)
        for step in steps where step.state == .ready { tx.readied(step) }
        let how =
            switch request.trigger {
            case .manual: "by \(request.by)"
            case .schedule(let cron, let slot): "by schedule \(Diagnostic.quoted(cron)) for \(slot.rfc3339Seconds)"
            }
        try tx.record(
            event(
                run, .normal, "Started",
                "workflow \(Diagnostic.quoted(id.name)) generation \(stored.generation), \(plan.steps.count) step\(plan.steps.count == 1 ? "" : "s"), \(how)",
                now))
        for step in steps where step.state == .waitingApproval { try tx.record(approvalRequested(run, step, plan, now)) }
        return .success(run)
    }

    // MARK: The agents' side

    /// Gives `agent` its next task: the Ready step of the agent that has waited longest,
    /// in any run, or nil when there is none. The step becomes Running, leased to the
    /// agent for one heartbeat timeout.
    /// `claimant` is the claiming process's token digest: the attempt is given up at once
    /// when the controller learns that process ended (`releaseEndedClaims`).
    public func claim(agent: ResourceID, claimant: String? = nil, now: Timestamp) throws(RunError) -> RunTask? {
        // Agents poll: most polls find nothing, and finding nothing needs no write lock.
        let any: Bool
        do {
            any = try store.readRuns { reader throws(StoreError) in try reader.nextClaimable(agent: agent, at: now) != nil }
        } catch {
            throw RunError(error)
        }
        guard any else { return nil }
        return try write { tx throws(StoreError) -> Result<RunTask?, RunError> in
            .success(try Self.claim(agent: agent, claimant: claimant, now: now, in: tx).task)
        }
    }

    /// `after`: what the completion earlier in this transaction read and wrote, which a
    /// claim of a step of the same run (the next step of a chain) need not read again.
    /// `othersLeft`: whether the agent has another claimable step, when the claim knows
    /// without asking (it took a held step: what else is claimable is the query's answer
    /// and the other held steps); nil when it does not.
    private static func claim(
        agent: ResourceID, claimant: String? = nil, now: Timestamp, in tx: Transaction, after completed: Completed? = nil
    ) throws(StoreError) -> (task: RunTask?, othersLeft: Bool?) {
        let queried = try tx.writer.nextClaimable(agent: agent, at: now)
        var found = queried
        var othersLeft: Bool?
        // A held step is Ready as if written: it is taken when the query would have
        // returned it first (the same order: ready_at, run, index).
        var held = tx.takeHeld()
        let claimable = held.indices.filter { held[$0].agent == agent && (held[$0].readyAt ?? now) <= now }
        if let first = claimable.min(by: { Self.claimedBefore(held[$0], held[$1]) }),
            found.map({ Self.claimedBefore(held[first], $0) }) ?? true
        {
            found = held.remove(at: first)
            othersLeft = queried != nil || held.contains { $0.agent == agent && ($0.readyAt ?? now) <= now }
        }
        // The others are written as they are, Ready.
        for record in held { try tx.writer.update(record) }
        guard let ready = found else { return (nil, false) }
        let known = completed?.run.id == ready.run ? completed : nil
        let run: RunRecord
        let plan: RunPlan
        if let known {
            (run, plan) = (known.run, known.plan)
        } else {
            // Not a held step (those are of the completed run): the query found it, Ready,
            // so its run is Running.
            if let cached = tx.writer.cachedRun(ready.run) {
                (run, plan) = (Self.asRunning(cached.run), cached.plan)
            } else {
                guard let read = try tx.writer.run(ready.run) else { return (nil, nil) }
                (run, plan) = (read, try tx.writer.plan(of: ready.run))
            }
        }
        let record = RunEngine.claim(ready, plan.steps[ready.index], now: now, claimant: claimant)
        try tx.writer.update(record)
        // A first attempt is the step row's (`AttemptRecord.reported`): it started when
        // the step did. A later one's start is its own.
        if record.attempt > 1 {
            try tx.writer.put(AttemptRecord(run: run.id, step: record.id, attempt: record.attempt, agent: agent, startedAt: now))
        }
        let task = try RunTask.make(record, agent: agent, run: run, plan: plan, from: tx.writer, written: known?.written ?? [:])
        return (task, othersLeft)
    }

    /// Whether `a` is claimed before `b`: the order of `RunReader.nextClaimable`.
    private static func claimedBefore(_ a: StepRecord, _ b: StepRecord) -> Bool {
        let (x, y) = (a.readyAt?.milliseconds ?? .min, b.readyAt?.milliseconds ?? .min)
        if x != y { return x < y }
        if a.run != b.run { return Array(a.run.rawValue.utf8).lexicographicallyPrecedes(b.run.rawValue.utf8) }
        return a.index < b.index
    }

    /// A completion's outcome, and what it leaves known to the rest of its transaction:
    /// the run as it now is, its plan, and the blackboard value it wrote (key →
    /// canonical JSON).
    private struct Completed {
        var record: StepRecord
        var run: RunRecord
        var plan: RunPlan
        var written: [String: String] = [:]
    }

    /// Renews the task's lease; returns when it now expires. Refused (`conflict`) once
    /// the task is no longer the agent's to run: the agent should stop working on it.
    @discardableResult
    public func heartbeat(_ task: TaskID, agent: ResourceID, now: Timestamp) throws(RunError) -> Timestamp {
        try write { tx throws(StoreError) -> Result<Timestamp, RunError> in
            let current: (record: StepRecord, run: RunRecord, plan: RunPlan)
            switch try Self.running(task, agent: agent, in: tx) {
            case .success(let found): current = found
            case .failure(let error): return .failure(error)
            }
            let record = RunEngine.heartbeat(current.record, current.plan.steps[current.record.index], now: now)
            try tx.writer.update(record)
            return .success(record.leaseExpiresAt!)
        }
    }

    /// The task is done: its output goes on the blackboard under the step's id, the
    /// step succeeds, and the steps waiting for it start when it was the last they
    /// waited for.
    @discardableResult
    public func complete(_ task: TaskID, agent: ResourceID, output: Node, now: Timestamp) throws(RunError) -> StepRecord {
        try write { tx throws(StoreError) -> Result<StepRecord, RunError> in
            try Self.complete(task, agent: agent, output: output, now: now, in: tx).map(\.record)
        }
    }

    /// Completes the task and, in the same transaction, claims the agent's next one
    /// (often the step the completion just made Ready): an agent working through a
    /// chain pays one round trip and one commit per step instead of two each.
    public func completeAndClaim(
        _ task: TaskID, agent: ResourceID, claimant: String? = nil, output: Node, now: Timestamp
    ) throws(RunError) -> (record: StepRecord, next: RunTask?) {
        try write { tx throws(StoreError) in
            try Self.completeAndClaim(task, agent: agent, claimant: claimant, output: output, now: now, in: tx)
        }
    }

    /// `completeAndClaim` if the store can make it without waiting (`writeRunsIfFree`),
    /// for a caller on an event loop: nil, with nothing done, when it would wait.
    public func completeAndClaimIfFree(
        _ task: TaskID, agent: ResourceID, claimant: String? = nil, output: Node, now: Timestamp
    ) throws(RunError) -> (record: StepRecord, next: RunTask?)? {
        try write(ifFree: true) { tx throws(StoreError) in
            try Self.completeAndClaim(task, agent: agent, claimant: claimant, output: output, now: now, in: tx)
        }
    }

    private static func completeAndClaim(
        _ task: TaskID, agent: ResourceID, claimant: String?, output: Node, now: Timestamp, in tx: Transaction
    ) throws(StoreError) -> Result<(record: StepRecord, next: RunTask?), RunError> {
        // The step the completion readies is often the one the claim takes (a chain's
        // next): held back, it is written once, Running, instead of Ready then Running.
        tx.holdsReadied = true
        switch try Self.complete(task, agent: agent, output: output, now: now, in: tx) {
        case .failure(let error): return .failure(error)
        case .success(let completed):
            let record = completed.record
            let (next, othersLeft) = try Self.claim(agent: agent, claimant: claimant, now: now, in: tx, after: completed)
            // The step readied for the agent is in this answer: its other polls are
            // woken only when something else is Ready for it.
            if next != nil {
                let more: Bool
                if let othersLeft { more = othersLeft } else { more = try tx.writer.nextClaimable(agent: agent, at: now) != nil }
                if !more { tx.claimedAll(of: agent) }
            }
            return .success((record, next))
        }
    }

    private static func complete(
        _ task: TaskID, agent: ResourceID, output: Node, now: Timestamp, in tx: Transaction
    ) throws(StoreError) -> Result<Completed, RunError> {
        var current: (record: StepRecord, run: RunRecord, plan: RunPlan)
        switch try Self.running(task, agent: agent, in: tx) {
        case .success(let found): current = found
        case .failure(let error): return .failure(error)
        }
        let step = current.plan.steps[current.record.index]
        let decision: RunEngine.Decision
        switch RunEngine.decision(of: step, output: output) {
        case .success(let decided): decision = decided
        case .failure(let error):
            // An answer the route cannot take, or a delegation beyond the planner's
            // pool or bound: the attempt failed, retried like any other.
            if let event = error.event {
                try tx.record(Self.event(current.run, .warning, event.reason, event.message, now))
            }
            let record = try Self.attemptFailed(
                current.record, outcome: .failed, error: error.message, retry: true, run: &current.run, plan: current.plan, now: now,
                random: 0, in: tx)
            return .success(Completed(record: record, run: current.run, plan: current.plan))
        }
        var record = RunEngine.succeed(current.record, now: now)
        record.reason = decision.reason
        try tx.writer.update(record)
        let value = CanonicalJSON.encode(output)
        try tx.writer.put(
            BlackboardValue(
                run: record.run, key: step.outputKey, value: value, writtenAt: now, step: record.id, attempt: record.attempt))
        // The attempt's success is the step row's (`AttemptRecord.reported`): no row written.
        if let event = decision.event { try tx.record(Self.event(current.run, .normal, event.reason, event.message, now)) }
        for assigned in decision.assign {
            guard var slot = try tx.writer.step(of: record.run, index: assigned.slot), slot.state == .pending else { continue }
            slot.agent = ResourceID(kind: ResourceKind.agent.rawValue, namespace: current.run.workflow.namespace, name: assigned.agent)
            // Past maxConcurrent: it also waits for a place, given when a sibling ends.
            if assigned.held { slot.waitingFor += 1 }
            try tx.writer.update(slot)
        }
        try Self.skip(decision.skip, because: record, run: current.run, plan: current.plan, now: now, in: tx)
        try Self.settle(record, run: &current.run, plan: current.plan, now: now, in: tx)
        return .success(Completed(record: record, run: current.run, plan: current.plan, written: [step.outputKey: value]))
    }

    /// The task failed, as its agent says: retried after the step's backoff while
    /// attempts are left (unless `retry` is false), else a dead letter, which fails the
    /// run unless the step has `continueOnFailure`. `random` in [0, 1) draws the jitter.
    @discardableResult
    public func fail(
        _ task: TaskID, agent: ResourceID, error message: String, retry: Bool = true, now: Timestamp, random: Double
    ) throws(RunError) -> StepRecord {
        try write { tx throws(StoreError) -> Result<StepRecord, RunError> in
            var current: (record: StepRecord, run: RunRecord, plan: RunPlan)
            switch try Self.running(task, agent: agent, in: tx) {
            case .success(let found): current = found
            case .failure(let error): return .failure(error)
            }
            let record = try Self.attemptFailed(
                current.record, outcome: .failed, error: message, retry: retry, run: &current.run, plan: current.plan, now: now,
                random: random, in: tx)
            return .success(record)
        }
    }

    // MARK: Blackboard topics

    /// The blackboard key of a topic (a step's output is under the step's id, which
    /// never contains a colon).
    public static func topicKey(_ topic: String) -> String { "topic:\(topic)" }

    /// Writes `value` on one of the run's topics for a running task whose step
    /// publishes it; returns the value's version. Any other topic is refused
    /// (`forbidden`): the audit proved what flows through the declared ones only.
    @discardableResult
    public func publish(_ task: TaskID, agent: ResourceID, topic: String, value: Node, now: Timestamp) throws(RunError) -> Int {
        try write { tx throws(StoreError) -> Result<Int, RunError> in
            let current: (record: StepRecord, run: RunRecord, plan: RunPlan)
            switch try Self.running(task, agent: agent, in: tx) {
            case .success(let found): current = found
            case .failure(let error): return .failure(error)
            }
            let step = current.plan.steps[current.record.index]
            guard step.publish.contains(topic) else {
                return .failure(Self.undeclared(step, topic: topic, verb: "publish", declared: step.publish))
            }
            let version = try tx.writer.put(
                BlackboardValue(
                    run: task.run, key: Self.topicKey(topic), value: CanonicalJSON.encode(value), writtenAt: now,
                    step: current.record.id, attempt: current.record.attempt))
            return .success(version)
        }
    }

    /// The latest value of one of the run's topics (nil before any publisher wrote),
    /// for a running task whose step subscribes to it; any other topic is refused.
    public func read(_ task: TaskID, agent: ResourceID, topic: String) throws(RunError) -> BlackboardValue? {
        try write { tx throws(StoreError) -> Result<BlackboardValue?, RunError> in
            let current: (record: StepRecord, run: RunRecord, plan: RunPlan)
            switch try Self.running(task, agent: agent, in: tx) {
            case .success(let found): current = found
            case .failure(let error): return .failure(error)
            }
            let step = current.plan.steps[current.record.index]
            guard step.subscribe.contains(topic) else {
                return .failure(Self.undeclared(step, topic: topic, verb: "subscribe to", declared: step.subscribe))
            }
            return .success(try tx.writer.value(of: task.run, key: Self.topicKey(topic)))
        }
    }

    private static func undeclared(_ step: RunPlan.Step, topic: String, verb: String, declared: [String]) -> RunError {
        let field = verb == "publish" ? "publish" : "subscribe"
        let has =
            declared.isEmpty
            ? "it declares no topics in \(field)" : "its \(field): \(declared.joined(separator: ", "))"
        return RunError(
            .forbidden,
            "step \(Diagnostic.quoted(step.id)) does not \(verb) topic \(Diagnostic.quoted(topic))\(Suggestion.hint(for: topic, among: declared)) (\(has)); declare it in the workflow, where the audit checks it"
        )
    }

    // MARK: People

    /// Approves or denies an approval gate that is waiting.
    @discardableResult
    public func decide(
        run id: RunID, step name: String, approve: Bool, by: String, reason: String?, now: Timestamp
    ) throws(RunError) -> StepRecord {
        try write { tx throws(StoreError) -> Result<StepRecord, RunError> in
            guard var run = try tx.writer.run(id) else { return .failure(Self.runNotFound(id)) }
            let plan = try tx.writer.plan(of: id)
            guard let index = plan.index[name], let waiting = try tx.writer.step(of: id, index: index) else {
                let gates = plan.steps.filter(\.isApprovalGate).map(\.id)
                return .failure(
                    RunError(
                        .notFound,
                        "run \(id) has no step \(Diagnostic.quoted(name))\(Suggestion.hint(for: name, among: plan.steps.map(\.id)))"
                            + (gates.isEmpty ? "; it has no approval gates" : "; its approval gates: \(gates.joined(separator: ", "))")))
            }
            guard plan.steps[index].isApprovalGate else {
                return .failure(RunError(.invalid, "step \(Diagnostic.quoted(name)) of run \(id) is not an approval gate"))
            }
            guard run.phase == .running, waiting.state == .waitingApproval else {
                let why = run.phase == .running ? "it is \(waiting.state.rawValue)" : "the run \(run.phase.rawValue.lowercased())"
                return .failure(RunError(.conflict, "step \(Diagnostic.quoted(name)) of run \(id) is not waiting for approval: \(why)"))
            }
            let record = RunEngine.decide(waiting, approved: approve, by: by, reason: reason, now: now)
            try Self.recordDecision(record, run: &run, plan: plan, now: now, in: tx)
            return .success(record)
        }
    }

    /// Cancels a running run: every step not finished is cancelled (a running task's
    /// next heartbeat or answer is refused) and the run ends Cancelled.
    @discardableResult
    public func cancel(run id: RunID, by: String, reason: String?, now: Timestamp) throws(RunError) -> RunRecord {
        try write { tx throws(StoreError) -> Result<RunRecord, RunError> in
            guard var run = try tx.writer.run(id) else { return .failure(Self.runNotFound(id)) }
            guard run.phase == .running else {
                return .failure(RunError(.conflict, "run \(id) has already ended: \(run.phase.rawValue)"))
            }
            let why = "cancelled by \(by)\(reason.map { ": \($0)" } ?? "")"
            let closed = try Self.closeOpenSteps(of: run, plan: try tx.writer.plan(of: id), failed: nil, reason: why, now: now, in: tx)
            run.phase = .cancelled
            run.endedAt = now
            run.error = why
            try tx.writer.update(run)
            try tx.record(
                Self.event(run, .normal, "Cancelled", "\(why); \(closed) unfinished step\(closed == 1 ? "" : "s") cancelled", now))
            return .success(run)
        }
    }

    // MARK: The controller's side

    /// Gives up on what is overdue at `now`: running tasks past their timeout or whose
    /// lease expired (retried or dead-lettered), and approvals past theirs (decided by
    /// `onTimeout`). Returns the events recorded, for the controller's log. Takes the
    /// write lock only when something is due.
    public func sweep(now: Timestamp, random: () -> Double) throws(RunError) -> [StoreEvent] {
        let due: Bool
        do {
            due = try store.readRuns { reader throws(StoreError) in try !reader.dueSteps(at: now, limit: 1).isEmpty }
        } catch {
            throw RunError(error)
        }
        guard due else { return [] }
        return try write { tx throws(StoreError) -> Result<[StoreEvent], RunError> in
            for record in try tx.writer.dueSteps(at: now, limit: 1000) {
                // An earlier step of this sweep may have ended the run.
                guard let current = try tx.writer.step(of: record.run, index: record.index), current == record,
                    var run = try tx.writer.run(record.run), run.phase == .running
                else { continue }
                let plan = try tx.writer.plan(of: run.id)
                let step = plan.steps[record.index]
                if record.state == .waitingApproval {
                    try Self.recordDecision(RunEngine.approvalTimedOut(record, step, now: now), run: &run, plan: plan, now: now, in: tx)
                } else if let outcome = RunEngine.overdue(record, step, now: now) {
                    let agent = record.agent.map { "agent \(Diagnostic.quoted($0.name))" } ?? "its agent"
                    let message =
                        outcome == .timedOut
                        ? "timed out after \(step.timeout.compactDescription)"
                        : "no heartbeat from \(agent) for \(step.heartbeatTimeout.compactDescription)"
                    _ = try Self.attemptFailed(
                        record, outcome: outcome, error: message, retry: true, run: &run, plan: plan, now: now, random: random(), in: tx)
                }
            }
            return .success(tx.events)
        }
    }

    /// Gives up at once on the attempts claimed by agent processes that have ended
    /// (`ended`, per agent: the controller saw the process exit or stop, or started a new
    /// one in its place): each is retried as a new attempt at once (counted against the
    /// step's attempts), or dead-lettered. Returns the events recorded. Reads first and
    /// takes the write lock only when such an attempt exists.
    public func releaseEndedClaims(_ ended: [ResourceID: RunEngine.EndedClaimants], now: Timestamp) throws(RunError) -> [StoreEvent] {
        guard !ended.isEmpty else { return [] }
        let orphaned: [StepRecord]
        do {
            orphaned = try store.readRuns { reader throws(StoreError) in
                RunEngine.orphaned(try reader.runningSteps(agent: nil), ended: ended)
            }
        } catch {
            throw RunError(error)
        }
        guard !orphaned.isEmpty else { return [] }
        return try write { tx throws(StoreError) -> Result<[StoreEvent], RunError> in
            for seen in orphaned {
                // Read again under the lock: the attempt may have ended meanwhile.
                guard let record = try tx.writer.step(of: seen.run, index: seen.index),
                    !RunEngine.orphaned([record], ended: ended).isEmpty, record.attempt == seen.attempt,
                    var run = try tx.writer.run(record.run), run.phase == .running, let agent = record.agent
                else { continue }
                let plan = try tx.writer.plan(of: run.id)
                let message = "agent \(agent.namespace)/\(agent.name) ended while working on it (its process is gone)"
                _ = try Self.attemptFailed(
                    record, outcome: .leaseExpired, error: message, retry: true, run: &run, plan: plan, now: now, random: 0,
                    backoff: false, in: tx)
            }
            return .success(tx.events)
        }
    }

    /// Starts the run a cron trigger owes for `slot` (the latest slot at or before now),
    /// once: the slot is recorded with the run in one transaction, so no slot runs twice,
    /// across restarts too. The first time a trigger is seen, its latest slot only runs
    /// if it came after the workflow was last applied; otherwise it is recorded as seen.
    /// A run that cannot start (the audit fails, an input has no default) is reported as
    /// a `ScheduleFailed` warning on the Workflow, and the slot is not tried again.
    public func fire(
        _ workflow: ResourceID, cron: String, slot: Timestamp, now: Timestamp, random: UInt32
    ) throws(RunError) -> Result<RunRecord, RunError>? {
        try write { tx throws(StoreError) -> Result<Result<RunRecord, RunError>?, RunError> in
            guard let stored = try tx.writer.resource(workflow) else { return .success(nil) }
            let previous = try tx.writer.cronSlot(workflow: workflow, cron: cron)
            if let previous, previous.slot >= slot { return .success(nil) }
            if previous == nil && slot < stored.appliedAt {
                try tx.writer.put(CronSlotRecord(workflow: workflow, cron: cron, slot: slot, run: nil))
                return .success(nil)
            }
            let request = StartRequest(workflow: workflow, trigger: .schedule(cron: cron, slot: slot), by: "schedule")
            let started = try Self.start(request, now: now, random: random, in: tx)
            try tx.writer.put(CronSlotRecord(workflow: workflow, cron: cron, slot: slot, run: try? started.get().id))
            if case .failure(let error) = started {
                try tx.record(
                    StoreEvent(
                        time: now, kind: .warning, resource: workflow, reason: "ScheduleFailed",
                        message: "the run for \(slot.rfc3339Seconds) (cron \(Diagnostic.quoted(cron))) did not start: \(error.message)"))
            }
            return .success(started)
        }
    }

    // MARK: Transitions shared by the operations

    /// A run known from `cachedRun` as it is while a step of it is open (Ready, Running
    /// or waiting): every end closes the run's open steps in the transaction that ends it.
    private static func asRunning(_ known: RunRecord) -> RunRecord {
        var run = known
        run.phase = .running
        run.endedAt = nil
        run.error = nil
        return run
    }

    /// The running task's record, checked against what the agent names.
    private static func running(
        _ task: TaskID, agent: ResourceID, in tx: Transaction
    ) throws(StoreError) -> Result<(record: StepRecord, run: RunRecord, plan: RunPlan), RunError> {
        // The run as this process knows it, when the step shows it still Running: a
        // completion of a chain read the run row again at every step for that alone.
        if let known = tx.writer.cachedRun(task.run), let index = known.plan.index[task.step],
            let record = try tx.writer.step(of: task.run, index: index), record.agent == agent, record.state == .running,
            record.attempt == task.attempt
        {
            return .success((record, Self.asRunning(known.run), known.plan))
        }
        guard let run = try tx.writer.run(task.run) else { return .failure(runNotFound(task.run)) }
        let plan = try tx.writer.plan(of: task.run)
        guard let index = plan.index[task.step], let record = try tx.writer.step(of: task.run, index: index) else {
            return .failure(RunError(.notFound, "run \(task.run) has no step \(Diagnostic.quoted(task.step))"))
        }
        guard record.agent == agent else {
            let owner = record.agent.map { "agent \(Diagnostic.quoted($0.name))" } ?? "an approval gate"
            return .failure(RunError(.forbidden, "task \(task) belongs to \(owner), not agent \(Diagnostic.quoted(agent.name))"))
        }
        guard record.state == .running, record.attempt == task.attempt else {
            let now =
                run.phase != .running
                ? "the run \(run.phase.rawValue.lowercased())"
                : record.attempt != task.attempt
                    ? "attempt \(record.attempt) is the current one (\(record.state.rawValue))" : "the step is \(record.state.rawValue)"
            return .failure(RunError(.conflict, "task \(task) is no longer running: \(now); stop working on it"))
        }
        return .success((record, run, plan))
    }

    private static func attemptFailed(
        _ record: StepRecord, outcome: AttemptRecord.Outcome, error message: String, retry: Bool, run: inout RunRecord, plan: RunPlan,
        now: Timestamp, random: Double, backoff: Bool = true, in tx: Transaction
    ) throws(StoreError) -> StepRecord {
        let step = plan.steps[record.index]
        var next = RunEngine.attemptFailed(record, step, error: message, retry: retry, now: now, random: random)
        // Its agent's process ended: nothing about the step failed, so no backoff (the
        // agent's own restart backoff paces a process that crashes on it).
        if !backoff, next.state == .ready { next.readyAt = now }
        if next.state == .deadLetter, let fallback = step.fallback {
            // What `describe run` lists as the decision: who takes over, and why.
            next.reason =
                "fallback: agent \(Diagnostic.quoted(plan.steps[fallback].agent ?? "?")) takes over as step \(Diagnostic.quoted(plan.steps[fallback].id)) after \(record.attempt) failed attempt\(record.attempt == 1 ? "" : "s")"
        }
        try tx.writer.update(next)
        tx.readied(next)
        if let agent = record.agent { try endAttempt(record, agent: agent, outcome, error: message, now: now, in: tx) }
        if next.state == .ready, let readyAt = next.readyAt {
            let wait = Duration.milliseconds(readyAt.milliseconds - now.milliseconds)
            try tx.record(
                event(
                    run, .warning, "Retrying",
                    "step \(Diagnostic.quoted(record.id)) attempt \(record.attempt) of \(step.attempts) failed: \(message); retrying in \(wait.compactDescription)",
                    now))
        } else if let fallback = step.fallback {
            let takes = plan.steps[fallback]
            try tx.record(
                event(
                    run, .warning, "FallbackTakesOver",
                    "step \(Diagnostic.quoted(record.id)) failed after \(record.attempt) attempt\(record.attempt == 1 ? "" : "s"): \(message); agent \(Diagnostic.quoted(takes.agent ?? "?")) takes over as step \(Diagnostic.quoted(takes.id))",
                    now))
            try settle(next, run: &run, plan: plan, now: now, in: tx)
        } else {
            try tx.record(
                event(
                    run, .warning, "DeadLetter",
                    "step \(Diagnostic.quoted(record.id)) failed after \(record.attempt) attempt\(record.attempt == 1 ? "" : "s"): \(message)"
                        + (step.continueOnFailure ? " (continueOnFailure: the run goes on)" : ""), now))
            try settle(next, run: &run, plan: plan, now: now, in: tx)
        }
        return next
    }

    /// The steps a decision leaves out become Skipped, and the steps after them that
    /// the decision keeps stop waiting for them (a join after a route's branches runs on
    /// the branch taken).
    private static func skip(
        _ indices: [Int], because decider: StepRecord, run: RunRecord, plan: RunPlan, now: Timestamp, in tx: Transaction
    ) throws(StoreError) {
        guard !indices.isEmpty else { return }
        let skipped = Set(indices)
        let who = Diagnostic.quoted(decider.id)
        let reason = "not run: " + (decider.reason.map { "step \(who) decided \($0)" } ?? "step \(who) succeeded")
        var closed: [Int] = []
        for index in indices.sorted() {
            guard let record = try tx.writer.step(of: run.id, index: index), record.state == .pending else { continue }
            try tx.writer.update(RunEngine.skip(record, reason: reason, now: now))
            closed.append(index)
        }
        for index in closed {
            for dependant in plan.steps[index].dependants where !skipped.contains(dependant) {
                guard let waiting = try tx.writer.step(of: run.id, index: dependant), waiting.state == .pending else { continue }
                let next = RunEngine.dependencyReleased(waiting, plan.steps[dependant], now: now)
                try tx.writer.update(next)
                tx.readied(next)
                if next.state == .waitingApproval { try tx.record(approvalRequested(run, next, plan, now)) }
            }
        }
    }

    private static func recordDecision(
        _ record: StepRecord, run: inout RunRecord, plan: RunPlan, now: Timestamp, in tx: Transaction
    ) throws(StoreError) {
        try tx.writer.update(record)
        let approved = record.state == .succeeded
        try tx.writer.put(
            BlackboardValue(
                run: record.run, key: plan.steps[record.index].outputKey,
                value: JSONValue.object([
                    ("approved", .bool(approved)), ("by", .string(record.decidedBy ?? "")), ("reason", record.reason.map { .string($0) }),
                ]).compactRendered(), writtenAt: now, step: record.id, attempt: nil))
        let by = record.decidedBy == "timeout" ? "on timeout (\(record.reason ?? ""))" : "by \(record.decidedBy ?? "")"
        let reason = record.decidedBy == "timeout" ? "" : record.reason.map { ": \($0)" } ?? ""
        try tx.record(
            event(
                run, approved ? .normal : .warning, approved ? "Approved" : "Denied",
                "step \(Diagnostic.quoted(record.id)) \(approved ? "approved" : "denied") \(by)\(reason)", now))
        try settle(record, run: &run, plan: plan, now: now, in: tx)
    }

    /// What follows a step's end: the run fails when the step fails it; otherwise the
    /// dependants whose every dependency has now finished start, and the run succeeds
    /// when no step is left open.
    private static func settle(
        _ finished: StepRecord, run: inout RunRecord, plan: RunPlan, now: Timestamp, in tx: Transaction
    ) throws(StoreError) {
        let step = plan.steps[finished.index]
        if RunEngine.failsRun(finished, step) {
            let closed = try closeOpenSteps(of: run, plan: plan, failed: finished.index, reason: "", now: now, in: tx)
            run.phase = .failed
            run.endedAt = now
            run.error = "step \(Diagnostic.quoted(finished.id)): \(finished.error ?? finished.state.rawValue)"
            try tx.writer.update(run)
            try tx.record(
                event(
                    run, .warning, "Failed",
                    "\(run.error!)\(closed > 0 ? "; \(closed) unfinished step\(closed == 1 ? "" : "s") not run" : "")", now))
            return
        }
        // A step this settling leaves open (a dependant it readied, or one still waiting)
        // keeps the run going: no need to look for one.
        var leftOpen = false
        // A sub-task that ends gives its place to the next one of its round waiting for one.
        if finished.state.isTerminal, !step.siblings.isEmpty {
            for index in step.siblings.sorted() {
                guard let held = try tx.writer.step(of: run.id, index: index), held.state == .pending, held.agent != nil,
                    held.waitingFor > 0
                else { continue }
                let next = RunEngine.dependencyReleased(held, plan.steps[index], now: now)
                try tx.writer.update(next)
                tx.readied(next)
                if !next.state.isTerminal { leftOpen = true }
                break
            }
        }
        if RunEngine.releasesDependants(finished, step) {
            for index in step.dependants {
                guard let dependant = try tx.writer.step(of: run.id, index: index), dependant.state == .pending else { continue }
                let next = RunEngine.dependencyReleased(dependant, plan.steps[index], now: now)
                try tx.store(next)
                tx.readied(next)
                if !next.state.isTerminal { leftOpen = true }
                if next.state == .waitingApproval { try tx.record(approvalRequested(run, next, plan, now)) }
            }
        }
        if !leftOpen, try !tx.writer.hasOpenSteps(of: run.id) {
            run.phase = .succeeded
            run.endedAt = now
            try tx.writer.update(run)
            let seconds = Duration.milliseconds(now.milliseconds - run.createdAt.milliseconds)
            try tx.record(
                event(
                    run, .normal, "Succeeded",
                    "\(plan.steps.count) step\(plan.steps.count == 1 ? "" : "s") in \(seconds.compactDescription)", now))
        }
    }

    /// Closes every open step of a run that ends: the descendants of the step that
    /// failed it are Skipped, the rest Cancelled. Returns how many were closed.
    private static func closeOpenSteps(
        of run: RunRecord, plan: RunPlan, failed: Int?, reason: String, now: Timestamp, in tx: Transaction
    ) throws(StoreError) -> Int {
        let downstream = Set(failed.map(plan.descendants(of:)) ?? [])
        var closed = 0
        for record in try tx.writer.steps(of: run.id) where !record.state.isTerminal {
            let skipped = downstream.contains(record.index)
            let why =
                if let failed {
                    skipped
                        ? "step \(Diagnostic.quoted(plan.steps[failed].id)) upstream failed"
                        : "the run failed at step \(Diagnostic.quoted(plan.steps[failed].id))"
                } else { reason }
            try tx.writer.update(RunEngine.close(record, as: skipped ? .skipped : .cancelled, reason: why, now: now))
            if record.state == .running, let agent = record.agent {
                try endAttempt(record, agent: agent, .abandoned, error: why, now: now, in: tx)
            }
            closed += 1
        }
        return closed
    }

    private static func endAttempt(
        _ record: StepRecord, agent: ResourceID, _ outcome: AttemptRecord.Outcome, error: String?, now: Timestamp, in tx: Transaction
    ) throws(StoreError) {
        try tx.writer.put(
            AttemptRecord(
                run: record.run, step: record.id, attempt: record.attempt, agent: agent, startedAt: record.startedAt ?? now, endedAt: now,
                outcome: outcome, error: error))
    }

    private static func approvalRequested(_ run: RunRecord, _ step: StepRecord, _ plan: RunPlan, _ now: Timestamp) -> StoreEvent {
        var message = "step \(Diagnostic.quoted(step.id)) waits for approval"
        if case .approval(let text, _, let onTimeout) = plan.steps[step.index].executor {
            message += " until \(step.deadline?.rfc3339Seconds ?? "?") (then \(onTimeout.rawValue))"
            if let text { message += ": \(text)" }
        }
        return event(run, .normal, "ApprovalRequested", message, now)
    }

    private static func event(_ run: RunRecord, _ kind: StoreEvent.Kind, _ reason: String, _ message: String, _ now: Timestamp)
        -> StoreEvent
    {
        StoreEvent(time: now, kind: kind, resource: run.eventSubject, reason: reason, message: message)
    }

    private static func runNotFound(_ id: RunID) -> RunError { RunError(.notFound, "run \(id) not found") }

    /// One write transaction whose body decides before it writes: a refusal returns a
    /// failure with nothing written, so the transaction commits nothing.
    private func write<T>(_ body: (Transaction) throws(StoreError) -> Result<T, RunError>) throws(RunError) -> T {
        // Never nil: a write that may wait always writes.
        try write(ifFree: false, body)!
    }

    /// The write, or with `ifFree` nil when the store would have to wait for it.
    private func write<T>(ifFree: Bool, _ body: (Transaction) throws(StoreError) -> Result<T, RunError>) throws(RunError) -> T? {
        let result: Result<T, RunError>
        var ready: Set<ResourceID> = []
        let transaction = { (writer: any RunWriter) throws(StoreError) -> Result<T, RunError> in
            let tx = Transaction(writer)
            let result = try body(tx)
            // Whatever path the body took, nothing it decided stays unwritten.
            for record in tx.takeHeld() { try writer.update(record) }
            ready = tx.ready
            return result
        }
        do {
            if ifFree {
                guard let written = try store.writeRunsIfFree(transaction) else { return nil }
                result = written
            } else {
                result = try store.writeRuns(transaction)
            }
        } catch {
            throw RunError(error)
        }
        if let onReady, !ready.isEmpty, case .success = result { onReady(ready) }
        return try result.get()
    }
}

/// The writer of one operation's transaction, and the events it recorded (which the
/// controller also logs).
private final class Transaction {
    let writer: any RunWriter
    private(set) var events: [StoreEvent] = []
    /// The agents whose steps this transaction made Ready.
    private(set) var ready: Set<ResourceID> = []

    /// Set by a completion that claims next: the agent steps it makes Ready are held
    /// (`store`) until its claim, which writes each once.
    var holdsReadied = false
    private var held: [StepRecord] = []

    init(_ writer: any RunWriter) { self.writer = writer }

    /// Writes a step's new record, or holds it when it is a Ready agent step and this
    /// transaction holds those. Only a step nothing reads again before the claim may be
    /// held: a dependant readied by the step that settles.
    func store(_ record: StepRecord) throws(StoreError) {
        if holdsReadied, record.state == .ready, record.agent != nil {
            held.append(record)
        } else {
            try writer.update(record)
        }
    }

    /// The held steps, no longer held: the caller writes them (or claims one).
    func takeHeld() -> [StepRecord] {
        holdsReadied = false
        defer { held = [] }
        return held
    }

    func readied(_ step: StepRecord) {
        if step.state == .ready, let agent = step.agent { ready.insert(agent) }
    }

    /// The agent claimed, in this transaction, every step it had Ready.
    func claimedAll(of agent: ResourceID) { ready.remove(agent) }

    func record(_ event: StoreEvent) throws(StoreError) {
        try writer.append(event)
        events.append(event)
    }
}
