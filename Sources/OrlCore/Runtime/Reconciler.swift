/// The lifecycle phase of an agent, as `get` and `describe` show it.
public enum AgentPhase: String, Sendable, Hashable {
    case pending = "Pending"
    case running = "Running"
    case crashLoopBackOff = "CrashLoopBackOff"
    /// Ended and not to be restarted (restart policy Never, or OnFailure after success).
    case stopped = "Stopped"
    case suspended = "Suspended"
    /// Stopped by orl itself, e.g. because a budget is exhausted.
    case halted = "Halted"
}

/// What should run for one agent.
public struct AgentIntent: Sendable {
    public enum Hold: Sendable, Hashable {
        /// `spec.suspend: true`.
        case suspended
        /// `orlctl suspend`, whatever the manifest says.
        case suspendedByUser
        case halted(reason: String, message: String)
    }

    public var launch: AgentLaunch.Launch
    public var restartPolicy: AgentSpec.RestartPolicy
    /// Set when the agent must not run.
    public var hold: Hold?

    public init(launch: AgentLaunch.Launch, restartPolicy: AgentSpec.RestartPolicy, hold: Hold? = nil) {
        self.launch = launch
        self.restartPolicy = restartPolicy
        self.hold = hold
    }
}

/// What the controller knows of one agent's process.
public struct AgentObservation: Sendable, Hashable {
    public var process: ProcessIdentity?
    public var running: Bool
    /// The launch hash the process was started with.
    public var launchHash: String?
    public var startedAt: Timestamp?
    public var lastExit: ProcessExit?
    public var exitedAt: Timestamp?
    /// Exits since the agent last stayed up for `BackoffPolicy.resetAfter`.
    public var crashes: Int
    public var restarts: Int

    public init(
        process: ProcessIdentity? = nil, running: Bool = false, launchHash: String? = nil, startedAt: Timestamp? = nil,
        lastExit: ProcessExit? = nil, exitedAt: Timestamp? = nil, crashes: Int = 0, restarts: Int = 0
    ) {
        self.process = process
        self.running = running
        self.launchHash = launchHash
        self.startedAt = startedAt
        self.lastExit = lastExit
        self.exitedAt = exitedAt
        self.crashes = crashes
        self.restarts = restarts
    }
}

/// One reconcile of one agent: what to do now, how to show it, and when to look again.
public struct ReconcileDecision: Sendable, Hashable {
    public enum Action: Sendable, Hashable {
        case none
        case start
        /// Stop the process (removed, suspended, halted).
        case stop(ProcessIdentity)
        /// Stop the process, then start the new launch (its spec changed).
        case restart(ProcessIdentity)
    }

    public var action: Action
    public var phase: AgentPhase
    /// A CamelCase reason and a sentence, for the Ready condition and events.
    public var reason: String
    public var message: String
    /// Look again then even if nothing happens (the end of a backoff).
    public var requeueAt: Timestamp?
}

/// Level-triggered reconciling, as Kubernetes controllers do it: the decision depends
/// only on what should be and what is, never on which event woke the controller, so a
/// missed or repeated event cannot leave an agent in the wrong state.
public enum Reconciler {
    public static func decide(
        _ intent: AgentIntent?, _ observed: AgentObservation, now: Timestamp, backoff: BackoffPolicy = .standard, random: Double
    ) -> ReconcileDecision {
        let decision = decideIgnoringWaits(intent, observed, now: now, backoff: backoff, random: random)
        // A launch that cannot be made as the spec says (a secret is missing or cannot be
        // read) is never started; a process that runs keeps running, as a Kubernetes pod
        // does when its secret goes away, since its launch can no longer be compared.
        guard let waiting = intent?.launch.waiting else { return decision }
        switch decision.action {
        case .start:
            return Self.decision(.none, .pending, waiting.reason, waiting.message)
        case .restart(let process):
            return Self.decision(.none, .running, "Running", "\(process) is running; not restarted: \(waiting.message)")
        case .none, .stop:
            return decision
        }
    }

    private static func decideIgnoringWaits(
        _ intent: AgentIntent?, _ observed: AgentObservation, now: Timestamp, backoff: BackoffPolicy, random: Double
    ) -> ReconcileDecision {
        let running = observed.running ? observed.process : nil

        guard let intent else {
            if let running { return decision(.stop(running), .stopped, "Removed", "the agent is no longer applied; stopping \(running)") }
            return decision(.none, .stopped, "Removed", "the agent is no longer applied")
        }
        switch intent.hold {
        case .suspended?:
            if let running {
                return decision(.stop(running), .suspended, "SuspendedInSpec", "spec.suspend is true; stopping \(running)")
            }
            return decision(.none, .suspended, "SuspendedInSpec", "spec.suspend is true")
        case .suspendedByUser?:
            if let running {
                return decision(.stop(running), .suspended, "SuspendedByUser", "suspended by orlctl suspend; stopping \(running)")
            }
            return decision(.none, .suspended, "SuspendedByUser", "suspended by orlctl suspend (orlctl resume to run it)")
        case .halted(let reason, let message)?:
            if let running { return decision(.stop(running), .halted, reason, "\(message); stopping \(running)") }
            return decision(.none, .halted, reason, message)
        case nil:
            break
        }

        if let running {
            if observed.launchHash != intent.launch.hash {
                return decision(.restart(running), .pending, "SpecChanged", "the agent's process spec changed; restarting \(running)")
            }
            return decision(.none, .running, "Running", "\(running) is running")
        }

        // Not running: never started, or it ended.
        guard let exit = observed.lastExit, let exitedAt = observed.exitedAt else {
            return decision(.start, .pending, "Starting", "starting the agent's process")
        }
        let newSpec = observed.launchHash != intent.launch.hash
        let wantsRestart =
            newSpec
            || {
                switch intent.restartPolicy {
                case .always: return true
                case .onFailure: return !exit.succeeded
                case .never: return false
                }
            }()
        guard wantsRestart else {
            return decision(
                .none, .stopped, exit.succeeded ? "Completed" : "Failed",
                "the process \(exit); restart policy \(intent.restartPolicy.rawValue)")
        }
        if newSpec {
            return decision(.start, .pending, "Starting", "the process \(exit); starting the new spec")
        }
        let wait = backoff.delay(afterCrashes: max(1, observed.crashes), random: random)
        let notBefore = Timestamp(milliseconds: exitedAt.milliseconds + Int64((wait.inSeconds * 1000).rounded()))
        if now < notBefore {
            var waiting = decision(
                .none, .crashLoopBackOff, "CrashLoopBackOff",
                "the process \(exit); restarting in \(seconds(notBefore.milliseconds - now.milliseconds)) (restart \(observed.restarts + 1))"
            )
            waiting.requeueAt = notBefore
            return waiting
        }
        return decision(
            .start, .crashLoopBackOff, "CrashLoopBackOff", "the process \(exit); restarting it (restart \(observed.restarts + 1))")
    }

    /// After a process ends: exits count up (a clean exit too: an agent that exits at
    /// once under `Always` must not restart in a hot loop) unless it had stayed up long
    /// enough to be forgiven, which makes this exit the first again.
    public static func recordExit(_ exit: ProcessExit, of observed: AgentObservation, at now: Timestamp, backoff: BackoffPolicy = .standard)
        -> AgentObservation
    {
        var next = observed
        let upFor = observed.startedAt.map { Double(now.milliseconds - $0.milliseconds) / 1000 } ?? 0
        let stayedUp = upFor >= backoff.resetAfter.inSeconds
        next.running = false
        next.lastExit = exit
        next.exitedAt = now
        next.crashes = stayedUp ? 1 : observed.crashes + 1
        return next
    }

    /// After a start that failed (the program could not be run): counted as a crash, so
    /// it backs off as one, and recorded against this launch, so only a new spec is tried
    /// at once. The exit is 127, as a shell reports a command it cannot run.
    public static func recordFailedStart(
        launchHash: String, of observed: AgentObservation, at now: Timestamp, backoff: BackoffPolicy = .standard
    ) -> AgentObservation {
        var next = recordExit(.exited(code: 127), of: observed, at: now, backoff: backoff)
        next.process = nil
        next.launchHash = launchHash
        return next
    }

    /// After a start: the new process, and a restart counted when it replaces another.
    public static func recordStart(
        _ process: ProcessIdentity, launchHash: String, of observed: AgentObservation, at now: Timestamp
    ) -> AgentObservation {
        var next = observed
        if observed.process != nil { next.restarts += 1 }
        next.process = process
        next.running = true
        next.launchHash = launchHash
        next.startedAt = now
        return next
    }

    private static func decision(_ action: ReconcileDecision.Action, _ phase: AgentPhase, _ reason: String, _ message: String)
        -> ReconcileDecision
    {
        ReconcileDecision(action: action, phase: phase, reason: reason, message: message, requeueAt: nil)
    }

    /// `8s`, `2m30s`.
    private static func seconds(_ milliseconds: Int64) -> String {
        let total = Int((Double(milliseconds) / 1000).rounded(.up))
        return total >= 60 ? "\(total / 60)m\(total % 60 == 0 ? "" : "\(total % 60)s")" : "\(total)s"
    }
}
