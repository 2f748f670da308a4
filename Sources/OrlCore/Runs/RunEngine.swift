public import OrlJSON

/// The state machine of a run's steps, as pure functions of a step's record, its plan
/// and the time: no store and no clock, so every transition is tested exactly.
/// `RunOperations` loads the records a transition needs and stores what it returns.
///
/// ```text
/// Pending ──deps done──▶ Ready ──claim──▶ Running ──complete──▶ Succeeded
///    │                     ▲                 │
///    │                     └──attempt failed─┤ (attempts left: after the backoff)
///    │                                       └──last attempt failed──▶ DeadLetter
///    └──deps done (gate)──▶ WaitingApproval ──approve──▶ Succeeded
///                                            └─deny / time out──▶ Failed
/// any open step ──run cancelled──▶ Cancelled;  ──upstream failed──▶ Skipped
/// ```
public enum RunEngine {
    /// The steps of a new run: those that wait for nothing start at once.
    public static func initialSteps(of plan: RunPlan, run: RunID, now: Timestamp) -> [StepRecord] {
        plan.steps.enumerated().map { i, step in
            // A sub-task slot has no agent until its planner names one.
            let agent = step.pool.isEmpty ? plan.agent(of: i) : nil
            let record = StepRecord(run: run, index: i, id: step.id, agent: agent, waitingFor: step.dependencies.count)
            return step.dependencies.isEmpty ? activate(record, step, now: now) : record
        }
    }

    /// A step whose dependencies have all finished: an agent step becomes claimable, an
    /// approval gate starts waiting for a person.
    public static func activate(_ record: StepRecord, _ step: RunPlan.Step, now: Timestamp) -> StepRecord {
        var record = record
        switch step.executor {
        case .agent:
            record.state = .ready
            record.readyAt = now
        case .approval(_, let timeout, _):
            record.state = .waitingApproval
            record.startedAt = now
            record.deadline = now.adding(timeout)
        }
        return record
    }

    /// One of a pending step's dependencies finished in a way that lets it run: it
    /// starts when that was the last one it waited for.
    public static func dependencyReleased(_ record: StepRecord, _ step: RunPlan.Step, now: Timestamp) -> StepRecord {
        guard record.state == .pending else { return record }
        var record = record
        record.waitingFor = max(0, record.waitingFor - 1)
        return record.waitingFor == 0 ? activate(record, step, now: now) : record
    }

    /// Whether a finished step lets the steps that depend on it run: it succeeded, or
    /// it is an agent step that failed with `continueOnFailure`. A denied gate never does.
    public static func releasesDependants(_ record: StepRecord, _ step: RunPlan.Step) -> Bool {
        switch record.state {
        case .succeeded: true
        case .deadLetter: step.continueOnFailure || step.fallback != nil
        default: false
        }
    }

    /// Whether a finished step fails its run.
    public static func failsRun(_ record: StepRecord, _ step: RunPlan.Step) -> Bool {
        switch record.state {
        case .failed: true
        case .deadLetter: !step.continueOnFailure && step.fallback == nil
        default: false
        }
    }

    /// What a step decides when it succeeds with `output`: the steps that will not run
    /// (the branches not taken, the rounds after the loop ends, the fallbacks no longer
    /// needed) and why, in words for `describe run`. A failure is an answer the step's
    /// route cannot take (no branch matches and there is no default): the attempt fails.
    public struct Decision: Sendable, Hashable {
        public var skip: [Int]
        /// Recorded on the step (nil when there was nothing to decide).
        public var reason: String?
        /// The run event: reason and message.
        public var event: (reason: String, message: String)?
        /// For a planner: the sub-task slots it fills and the worker of each; those past
        /// `maxConcurrent` are held until a running one ends.
        public var assign: [Assignment] = []

        public struct Assignment: Sendable, Hashable {
            public var slot: Int
            public var agent: String
            public var held: Bool
        }

        public static func == (lhs: Decision, rhs: Decision) -> Bool {
            lhs.skip == rhs.skip && lhs.reason == rhs.reason && lhs.event?.reason == rhs.event?.reason
                && lhs.event?.message == rhs.event?.message && lhs.assign == rhs.assign
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(skip)
            hasher.combine(reason)
        }
    }

    public static func decision(of step: RunPlan.Step, output: Node) -> Result<Decision, DecisionError> {
        var decision = Decision(skip: step.skipOnSuccess, reason: nil, event: nil)
        let quoted = Diagnostic.quoted(step.outputKey)
        if let route = step.route {
            let value = output[route.key]
            let text = value.map { $0.string ?? CanonicalJSON.encode($0) }
            let shown = value.map { $0.string.map(Diagnostic.quoted) ?? CanonicalJSON.encode($0) } ?? "missing"
            let chosen: Int
            let how: String
            if let text, let match = route.branches.firstIndex(where: { $0.value == text }) {
                chosen = match
                how = "\(route.key) = \(shown)"
            } else if let fallback = route.defaultBranch {
                chosen = fallback
                how = "\(route.key) = \(shown) matches no branch; the default"
            } else {
                let names = route.branches.map { Diagnostic.quoted($0.value) }.joined(separator: ", ")
                return .failure(
                    DecisionError(
                        "route of step \(quoted): \(route.key) = \(shown) matches none of its branches (\(names)) and it has no default"))
            }
            let branch = route.branches[chosen]
            decision.skip += branch.skip
            decision.reason = "route \(branch.value) (\(how))"
            decision.event = ("Routed", "step \(quoted) took branch \(Diagnostic.quoted(branch.value)) (\(how))")
        }
        if let until = step.until {
            let loop = Diagnostic.quoted(until.loop)
            var met = false
            var how = ""
            if let key = until.key, let equals = until.equals {
                let value = output[key]
                met = value.map(CanonicalJSON.encode) == equals
                how = ": \(key) = \(value.map(CanonicalJSON.encode) ?? "missing")"
            }
            if met {
                decision.skip += until.skip
                decision.reason = "loop ended in round \(until.round) of \(until.maxRounds)\(how)"
                decision.event = ("LoopEnded", "loop \(loop) ended in round \(until.round) of \(until.maxRounds)\(how)")
            } else if until.round >= until.maxRounds {
                decision.reason = "loop ended at its bound, round \(until.round) of \(until.maxRounds)\(how)"
                decision.event = ("LoopEnded", "loop \(loop) ended at its bound (\(until.maxRounds) rounds)\(how)")
            } else {
                decision.reason = "round \(until.round) of \(until.maxRounds)\(how); another round"
            }
        }
        if let handoff = step.handoff {
            switch handOff(handoff, output: output, quoted: Diagnostic.quoted(step.id)) {
            case .success(let handed):
                decision.skip += handed.skip
                decision.reason = handed.reason
                decision.event = handed.event
                decision.assign = handed.assign
            case .failure(let error): return .failure(error)
            }
        }
        if let delegation = step.delegation {
            switch delegate(delegation, output: output, quoted: quoted) {
            case .success(let delegated):
                decision.skip += delegated.skip
                decision.reason = delegated.reason
                decision.event = delegated.event
                decision.assign = delegated.assign
            case .failure(let error): return .failure(error)
            }
        }
        return .success(decision)
    }

    /// A planner's answer: its list of sub-tasks, each naming a worker of the pool, at
    /// most one per slot. Anything else is refused, and the attempt fails (a planner
    /// cannot reach an agent outside its pool, nor run more than its bound).
    private static func delegate(_ d: RunPlan.Step.Delegation, output: Node, quoted: String) -> Result<Decision, DecisionError> {
        let round = d.maxRounds > 1 ? " in round \(d.round) of \(d.maxRounds)" : ""
        func refuse(_ why: String) -> Result<Decision, DecisionError> {
            let message = "delegation of step \(quoted)\(round) refused: \(why)"
            return .failure(DecisionError(message, event: ("DelegationRefused", message)))
        }
        let listed = output[d.key]
        let items: [Node]
        switch listed?.value {
        case nil, .null?: items = []
        case .array(let elements)?: items = elements
        default: return refuse("\(d.key) must be a list of sub-tasks ({agent, task}), not \(CanonicalJSON.encode(listed!))")
        }
        guard !items.isEmpty else {
            let how = "delegation ended\(round): no sub-tasks"
            return .success(
                Decision(
                    skip: d.slots + d.later, reason: how,
                    event: (
                        "DelegationEnded",
                        "step \(quoted): \(how)\(d.round > 1 ? " after \(d.round - 1) round\(d.round == 2 ? "" : "s")" : "")"
                    )))
        }
        guard items.count <= d.slots.count else {
            return refuse("it lists \(items.count) sub-tasks, more than maxTasks (\(d.slots.count))")
        }
        var assign: [Decision.Assignment] = []
        var named: [String] = []
        for (k, item) in items.enumerated() {
            let agent: String
            if let given = item["agent"]?.string {
                guard d.workers.contains(given) else {
                    return refuse(
                        "sub-task \(k + 1) names agent \(Diagnostic.quoted(given)), which is not in its pool (\(d.workers.joined(separator: ", ")))"
                    )
                }
                agent = given
            } else if d.workers.count == 1, item["agent"] == nil {
                agent = d.workers[0]
            } else {
                return refuse("sub-task \(k + 1) names no agent (\"agent\": one of \(d.workers.joined(separator: ", ")))")
            }
            assign.append(.init(slot: d.slots[k], agent: agent, held: k >= d.maxConcurrent))
            named.append(agent)
        }
        let how =
            "delegated \(items.count) sub-task\(items.count == 1 ? "" : "s")\(round): "
            + named.map(Diagnostic.quoted).joined(separator: ", ")
        var decision = Decision(
            skip: Array(d.slots[items.count...]), reason: how, event: ("Delegated", "step \(quoted) \(how)"))
        decision.assign = assign
        return .success(decision)
    }

    /// A turn's answer: keep the task (no `key`, or null), or hand it to an agent of the
    /// set while hand-offs are left. Anything else is refused and the attempt fails.
    private static func handOff(_ h: RunPlan.Step.Handoff, output: Node, quoted: String) -> Result<Decision, DecisionError> {
        func refuse(_ why: String) -> Result<Decision, DecisionError> {
            let message = "hand-off from step \(quoted) refused: \(why)"
            return .failure(DecisionError(message, event: ("HandoffRefused", message)))
        }
        let asked = output[h.key]
        switch asked?.value {
        case nil, .null?:
            let after = h.turn == 0 ? nil : "kept the task after \(h.turn) hand-off\(h.turn == 1 ? "" : "s")"
            return .success(Decision(skip: h.later, reason: after, event: nil))
        case .string(let target)?:
            guard h.agents.contains(target) else {
                return refuse(
                    "\(h.key) = \(Diagnostic.quoted(target)), which is not among the agents it may hand off to (\(h.agents.joined(separator: ", ")))"
                )
            }
            guard let next = h.next else {
                return refuse(
                    "\(h.key) = \(Diagnostic.quoted(target)), but the task has been handed off \(h.maxHandoffs) times (maxHandoffs)")
            }
            let how =
                "handed off to \(Diagnostic.quoted(target)) (\(h.key) = \(Diagnostic.quoted(target)); hand-off \(h.turn + 1) of at most \(h.maxHandoffs))"
            var decision = Decision(skip: [], reason: how, event: ("HandedOff", "step \(quoted) \(how)"))
            decision.assign = [.init(slot: next, agent: target, held: false)]
            return .success(decision)
        default:
            return refuse("\(h.key) must name an agent, not \(CanonicalJSON.encode(asked!))")
        }
    }

    public struct DecisionError: Error, Sendable, Hashable {
        public var message: String
        /// The run event the refusal records, if any.
        public var event: Event?

        public struct Event: Sendable, Hashable {
            public var reason: String
            public var message: String
        }

        init(_ message: String, event: (String, String)? = nil) {
            self.message = message
            self.event = event.map { Event(reason: $0.0, message: $0.1) }
        }
    }

    /// A step a decision leaves out: Skipped, with the reason.
    public static func skip(_ record: StepRecord, reason: String, now: Timestamp) -> StepRecord {
        guard record.state == .pending else { return record }
        return close(record, as: .skipped, reason: reason, now: now)
    }

    /// The agent takes the task: a new attempt, leased until a heartbeat is due, and
    /// bounded by the step's timeout.
    public static func claim(_ record: StepRecord, _ step: RunPlan.Step, now: Timestamp, claimant: String? = nil) -> StepRecord {
        var record = record
        record.state = .running
        record.claimant = claimant
        record.attempt += 1
        record.readyAt = nil
        record.leaseExpiresAt = now.adding(step.heartbeatTimeout)
        record.deadline = now.adding(step.timeout)
        if record.startedAt == nil { record.startedAt = now }
        return record
    }

    /// The agent is still at it: the lease runs for another heartbeat timeout.
    public static func heartbeat(_ record: StepRecord, _ step: RunPlan.Step, now: Timestamp) -> StepRecord {
        var record = record
        record.leaseExpiresAt = now.adding(step.heartbeatTimeout)
        return record
    }

    public static func succeed(_ record: StepRecord, now: Timestamp) -> StepRecord {
        var record = record
        record.state = .succeeded
        record.endedAt = now
        record.claimant = nil
        record.leaseExpiresAt = nil
        record.deadline = nil
        record.error = nil
        return record
    }

    /// An attempt failed (the agent said so, it timed out, or its lease expired): retried
    /// after the step's backoff while attempts are left, else kept as a dead letter.
    /// `retry: false` (the agent says another attempt cannot help) dead-letters at once.
    /// `random` in [0, 1) draws the jitter.
    public static func attemptFailed(
        _ record: StepRecord, _ step: RunPlan.Step, error: String, retry: Bool = true, now: Timestamp, random: Double
    ) -> StepRecord {
        var record = record
        record.leaseExpiresAt = nil
        record.deadline = nil
        record.claimant = nil
        if retry && record.attempt < step.attempts {
            record.state = .ready
            record.readyAt = now.adding(retryDelay(after: record.attempt, step, random: random))
            record.error = "attempt \(record.attempt) of \(step.attempts): \(error)"
        } else {
            record.state = .deadLetter
            record.endedAt = now
            record.error =
                step.attempts == 1
                ? error : "attempt \(record.attempt) of \(step.attempts) (the last\(retry ? "" : ": not retryable")): \(error)"
        }
        return record
    }

    /// The wait before attempt `failed + 1`: the step's backoff doubling per failed
    /// attempt, capped at its maxBackoff, plus up to 20% jitter.
    public static func retryDelay(after failed: Int, _ step: RunPlan.Step, random: Double) -> Duration {
        step.backoffPolicy.delay(afterCrashes: failed, random: random)
    }

    /// A person decided on an approval gate.
    public static func decide(_ record: StepRecord, approved: Bool, by: String, reason: String?, now: Timestamp) -> StepRecord {
        var record = record
        record.state = approved ? .succeeded : .failed
        record.endedAt = now
        record.deadline = nil
        record.decidedBy = by
        record.reason = reason
        record.error = approved ? nil : "denied by \(by)\(reason.map { ": \($0)" } ?? "")"
        return record
    }

    /// Nobody decided in time: the gate's `onTimeout` decides.
    public static func approvalTimedOut(_ record: StepRecord, _ step: RunPlan.Step, now: Timestamp) -> StepRecord {
        guard case .approval(_, let timeout, let onTimeout) = step.executor else { return record }
        var record = decide(record, approved: onTimeout == .approve, by: "timeout", reason: nil, now: now)
        record.reason = "no decision within \(timeout.compactDescription) (onTimeout: \(onTimeout.rawValue))"
        if onTimeout == .deny { record.error = "approval timed out after \(timeout.compactDescription)" }
        return record
    }

    /// An open step that will not run: the run was cancelled or failed (`.cancelled`), or
    /// a step it depends on failed (`.skipped`). A finished step is left as it is.
    public static func close(_ record: StepRecord, as state: StepState, reason: String, now: Timestamp) -> StepRecord {
        guard !record.state.isTerminal else { return record }
        var record = record
        record.state = state
        record.endedAt = now
        record.readyAt = nil
        record.leaseExpiresAt = nil
        record.deadline = nil
        record.claimant = nil
        record.error = reason
        return record
    }

    /// Which processes of an agent the controller knows have ended.
    public enum EndedClaimants: Sendable, Hashable {
        /// A new process of the agent started with this token digest: any other process
        /// of it has ended (an agent never runs twice, across nodes too).
        case allBut(String)
        /// The process with this token digest ended, and none replaced it yet.
        case only(String)

        func ended(_ claimant: String) -> Bool {
            switch self {
            case .allBut(let live): claimant != live
            case .only(let gone): claimant == gone
            }
        }
    }

    /// The Running steps among `running` whose attempt was claimed by a process that has
    /// ended, as `ended` says for each agent: given up at once, as a lease that lapsed.
    /// A claim made without a claimant is left to its lease.
    public static func orphaned(_ running: [StepRecord], ended: [ResourceID: EndedClaimants]) -> [StepRecord] {
        running.filter { record in
            guard record.state == .running, let claimant = record.claimant, let agent = record.agent, let gone = ended[agent] else {
                return false
            }
            return gone.ended(claimant)
        }
    }

    /// Compares the token digests of an agent's live processes before and now (nil: none
    /// runs) and says whose claims ended; nil when nothing ended.
    public static func endedClaimants(before: String?, now: String?) -> EndedClaimants? {
        if let now { return now == before ? nil : .allBut(now) }
        return before.map { .only($0) }
    }

    /// Why a Running step is due at `now`, if it is: its attempt timed out, or its lease
    /// expired (the agent stopped heart-beating).
    public static func overdue(_ record: StepRecord, _ step: RunPlan.Step, now: Timestamp) -> AttemptRecord.Outcome? {
        guard record.state == .running else { return nil }
        if let deadline = record.deadline, deadline <= now { return .timedOut }
        if let lease = record.leaseExpiresAt, lease <= now { return .leaseExpired }
        return nil
    }
}
