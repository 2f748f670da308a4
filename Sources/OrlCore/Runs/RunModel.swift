/// Where a run is in its life. A run is created Running and ends once, in one of the
/// other three.
public enum RunPhase: String, Sendable, Hashable, CaseIterable {
    case running = "Running"
    case succeeded = "Succeeded"
    case failed = "Failed"
    case cancelled = "Cancelled"

    public var isTerminal: Bool { self != .running }
}

/// Where a step of a run is. The store keeps these words.
public enum StepState: String, Sendable, Hashable, CaseIterable {
    /// Waiting for its dependencies.
    case pending = "Pending"
    /// An agent step its agent may claim (from `readyAt`, later after a failed attempt).
    case ready = "Ready"
    /// Claimed: leased to its agent until `leaseExpiresAt`, at most until `deadline`.
    case running = "Running"
    /// An approval gate waiting for a person, until `deadline`.
    case waitingApproval = "WaitingApproval"
    case succeeded = "Succeeded"
    /// An approval gate that was denied (or timed out with `onTimeout: deny`).
    case failed = "Failed"
    /// An agent step whose last attempt failed: kept, with every attempt's error, for
    /// inspection.
    case deadLetter = "DeadLetter"
    /// Never run: a step it depends on failed.
    case skipped = "Skipped"
    /// Never finished: the run was cancelled, or failed elsewhere.
    case cancelled = "Cancelled"

    public var isTerminal: Bool {
        switch self {
        case .pending, .ready, .running, .waitingApproval: false
        case .succeeded, .failed, .deadLetter, .skipped, .cancelled: true
        }
    }

    /// The terminal states, for queries of what is still open.
    public static let terminal: [StepState] = allCases.filter(\.isTerminal)
}

/// How a run was started.
public enum RunTrigger: Sendable, Hashable {
    /// By `orlctl run` (or a later API call).
    case manual
    /// By a cron trigger of the workflow, for the slot (a UTC minute) it fired for.
    case schedule(cron: String, slot: Timestamp)

    public var name: String {
        switch self {
        case .manual: "manual"
        case .schedule: "schedule"
        }
    }
}

/// One run of a workflow, as the store keeps it.
public struct RunRecord: Sendable, Hashable {
    public var id: RunID
    /// The Workflow, and its generation when the run started: a run keeps the DAG it
    /// started with (its `RunPlan`) whatever is applied later.
    public var workflow: ResourceID
    public var generation: Int
    public var phase: RunPhase
    public var trigger: RunTrigger
    /// The run's input, a JSON object of strings (compact, in declaration order).
    public var input: String
    public var createdAt: Timestamp
    public var createdBy: String
    public var endedAt: Timestamp?
    /// Why it failed or was cancelled.
    public var error: String?

    public init(
        id: RunID, workflow: ResourceID, generation: Int, phase: RunPhase = .running, trigger: RunTrigger, input: String,
        createdAt: Timestamp, createdBy: String, endedAt: Timestamp? = nil, error: String? = nil
    ) {
        self.id = id
        self.workflow = workflow
        self.generation = generation
        self.phase = phase
        self.trigger = trigger
        self.input = input
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.endedAt = endedAt
        self.error = error
    }

    /// The subject of the run's events: kind `Run`, in the workflow's namespace.
    public var eventSubject: ResourceID { ResourceID(kind: RunRecord.eventKind, namespace: workflow.namespace, name: id.rawValue) }

    public static let eventKind = "Run"
}

/// One step of one run: what changes as the run goes. What does not change (the
/// step's agent, dependencies, retry policy, prompt) is in the run's `RunPlan`.
public struct StepRecord: Sendable, Hashable {
    public var run: RunID
    /// The step's position in the workflow (and in the plan).
    public var index: Int
    public var id: String
    /// The agent that runs it (nil for an approval gate), kept here so that the next
    /// task of an agent is one indexed lookup.
    public var agent: ResourceID?
    public var state: StepState
    /// Pending: how many of its dependencies have not finished in a way that lets it
    /// run. It starts when this reaches 0 (so readiness costs one update per edge).
    public var waitingFor: Int
    /// Attempts started so far (0 until first claimed).
    public var attempt: Int
    /// When a Ready step may be claimed: at once, or after a retry's backoff.
    public var readyAt: Timestamp?
    /// Running: the lease, renewed by heartbeats.
    public var leaseExpiresAt: Timestamp?
    /// Running: the attempt's timeout; WaitingApproval: the approval's.
    public var deadline: Timestamp?
    /// When the first attempt was claimed, or the approval requested.
    public var startedAt: Timestamp?
    public var endedAt: Timestamp?
    /// The last attempt's error, or why the step did not run.
    public var error: String?
    /// Approval gates: who decided, and why.
    public var decidedBy: String?
    public var reason: String?
    /// Running: the process that claimed the attempt, by the digest of its token (nil: a
    /// claim made without one, which only its lease ends). When the controller learns
    /// that process ended, the attempt is given up at once instead of when its lease lapses.
    public var claimant: String?

    public init(
        run: RunID, index: Int, id: String, agent: ResourceID?, state: StepState = .pending, waitingFor: Int = 0, attempt: Int = 0,
        readyAt: Timestamp? = nil, leaseExpiresAt: Timestamp? = nil, deadline: Timestamp? = nil, startedAt: Timestamp? = nil,
        endedAt: Timestamp? = nil, error: String? = nil, decidedBy: String? = nil, reason: String? = nil, claimant: String? = nil
    ) {
        self.claimant = claimant
        self.run = run
        self.index = index
        self.id = id
        self.agent = agent
        self.state = state
        self.waitingFor = waitingFor
        self.attempt = attempt
        self.readyAt = readyAt
        self.leaseExpiresAt = leaseExpiresAt
        self.deadline = deadline
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.error = error
        self.decidedBy = decidedBy
        self.reason = reason
    }

    /// The key an agent de-duplicates side effects with: one per step of a run, the
    /// same for every attempt and across controller restarts.
    public var idempotencyKey: String { "\(run.rawValue)/\(id)" }

    public var task: TaskID { TaskID(run: run, step: id, attempt: attempt) }
}

/// One attempt at an agent step, kept after it ends: what a dead letter is inspected with.
public struct AttemptRecord: Sendable, Hashable {
    public enum Outcome: String, Sendable, Hashable, CaseIterable {
        case running = "Running"
        case succeeded = "Succeeded"
        /// The agent reported a failure.
        case failed = "Failed"
        /// The attempt ran past the step's timeout.
        case timedOut = "TimedOut"
        /// The agent stopped heart-beating: its lease expired.
        case leaseExpired = "LeaseExpired"
        /// The run ended (cancelled or failed elsewhere) while it ran.
        case abandoned = "Abandoned"
    }

    public var run: RunID
    public var step: String
    public var attempt: Int
    public var agent: ResourceID
    public var startedAt: Timestamp
    public var endedAt: Timestamp?
    public var outcome: Outcome
    public var error: String?

    public init(
        run: RunID, step: String, attempt: Int, agent: ResourceID, startedAt: Timestamp, endedAt: Timestamp? = nil,
        outcome: Outcome = .running, error: String? = nil
    ) {
        self.run = run
        self.step = step
        self.attempt = attempt
        self.agent = agent
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.outcome = outcome
        self.error = error
    }
}

extension AttemptRecord {
    /// A run's attempts as its readers report them, from the attempt rows a store keeps
    /// (`stored`, of one run) and the run's steps, by step (workflow order) then attempt.
    /// A step's current attempt, while it runs and once it has succeeded, is what its step
    /// row says: a claim stores no row for a first attempt (it started when the step did),
    /// and a success stores none for its end. A step of a chain that succeeds at once thus
    /// writes no attempt row (two statements and a WAL page fewer a step); a row is stored
    /// for a later attempt (its own start) and for every end but a success.
    public static func reported(stored: [AttemptRecord], steps: [StepRecord]) -> [AttemptRecord] {
        var byID: [String: StepRecord] = [:]
        for step in steps { byID[step.id] = step }
        func told(by step: StepRecord) -> Outcome? {
            switch step.state {
            case .running: .running
            case .succeeded: .succeeded
            default: nil
            }
        }
        var attempts: [(index: Int, record: AttemptRecord)] = []
        var kept = Set<String>()
        for var attempt in stored {
            // As the stores' join on the steps had it: an attempt of no step is not reported.
            guard let step = byID[attempt.step] else { continue }
            if step.attempt == attempt.attempt, let outcome = told(by: step) {
                kept.insert(step.id)
                attempt.outcome = outcome
                if outcome == .succeeded { attempt.endedAt = step.endedAt }
            }
            attempts.append((step.index, attempt))
        }
        for step in steps where !kept.contains(step.id) && step.attempt > 0 {
            // A row stored for its current attempt was taken above (`kept`).
            guard let agent = step.agent, let outcome = told(by: step), let startedAt = step.startedAt else { continue }
            attempts.append(
                (
                    step.index,
                    AttemptRecord(
                        run: step.run, step: step.id, attempt: step.attempt, agent: agent, startedAt: startedAt,
                        endedAt: outcome == .succeeded ? step.endedAt : nil, outcome: outcome)
                ))
        }
        return attempts.sorted { ($0.index, $0.record.attempt) < ($1.index, $1.record.attempt) }.map(\.record)
    }
}

/// One version of one value on a run's blackboard. A step's output is written under
/// the step's id when it succeeds; every write is a new version, none is overwritten.
public struct BlackboardValue: Sendable, Hashable {
    public var run: RunID
    public var key: String
    /// 1 for the first write of the key, then 2, 3...
    public var version: Int
    /// Canonical JSON.
    public var value: String
    public var writtenAt: Timestamp
    /// The step (and attempt) that wrote it.
    public var step: String?
    public var attempt: Int?

    public init(run: RunID, key: String, version: Int = 0, value: String, writtenAt: Timestamp, step: String?, attempt: Int?) {
        self.run = run
        self.key = key
        self.version = version
        self.value = value
        self.writtenAt = writtenAt
        self.step = step
        self.attempt = attempt
    }
}

/// The last slot a workflow's cron trigger was seen at, and the run it started (nil
/// for the slot that was already past when the trigger was first seen: it fires from
/// the next one). At most one run per slot, across controller restarts.
public struct CronSlotRecord: Sendable, Hashable {
    public var workflow: ResourceID
    public var cron: String
    public var slot: Timestamp
    public var run: RunID?

    public init(workflow: ResourceID, cron: String, slot: Timestamp, run: RunID?) {
        self.workflow = workflow
        self.cron = cron
        self.slot = slot
        self.run = run
    }
}

/// A task: one attempt at one step of one run, `RUN/STEP/ATTEMPT` on the wire.
/// Heartbeats and results name it, so a late answer from an earlier attempt is told
/// apart from the current one.
public struct TaskID: Sendable, Hashable, CustomStringConvertible {
    public var run: RunID
    public var step: String
    public var attempt: Int

    public init(run: RunID, step: String, attempt: Int) {
        self.run = run
        self.step = step
        self.attempt = attempt
    }

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, let run = RunID(String(parts[0])), !parts[1].isEmpty, let attempt = Int(parts[2]), attempt > 0
        else { return nil }
        self.init(run: run, step: String(parts[1]), attempt: attempt)
    }

    public var description: String { "\(run.rawValue)/\(step)/\(attempt)" }
}

/// Why a run operation was refused. `kind` is what an API maps to a status code.
public struct RunError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// No such run, step or workflow.
        case notFound
        /// The request itself is wrong: an unknown input, a missing required one.
        case invalid
        /// The request does not fit the run's state: a stale task, a step not waiting
        /// for approval, a run that has ended.
        case conflict
        /// The caller may not do this: another agent's task, a workflow that does not
        /// pass the permission audit.
        case forbidden
        /// The store failed.
        case store
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public init(_ error: StoreError) { self.init(.store, error.message) }

    public var description: String { message }
}

extension Timestamp {
    /// This time plus `duration`, to the millisecond.
    public func adding(_ duration: Duration) -> Timestamp {
        let (sum, overflow) = milliseconds.addingReportingOverflow(duration.wholeMilliseconds)
        return Timestamp(milliseconds: overflow ? (duration < .zero ? .min : .max) : sum)
    }
}

extension Duration {
    /// Held in `Int64`'s range: durations come from manifests and agents.
    public var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        let (ms, o1) = seconds.multipliedReportingOverflow(by: 1000)
        let (total, o2) = ms.addingReportingOverflow(attoseconds / 1_000_000_000_000_000)
        return o1 || o2 ? (seconds < 0 ? .min : .max) : total
    }

    /// `1h30m`, `45s`, `10.6s`, `250ms`: as manifests write durations (tenths of a
    /// second under a minute).
    public var compactDescription: String {
        var ms = wholeMilliseconds
        if ms == 0 { return "0s" }
        if ms < 1000 { return "\(ms)ms" }
        if ms % 1000 >= 100 && ms < 60_000 { return "\(ms / 1000).\(ms % 1000 / 100)s" }
        ms /= 1000
        var out = ""
        for (unit, seconds) in [("d", Int64(86400)), ("h", 3600), ("m", 60), ("s", 1)] where ms >= seconds {
            out += "\(ms / seconds)\(unit)"
            ms %= seconds
        }
        return out
    }
}
