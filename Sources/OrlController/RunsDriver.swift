public import OrlCore
import OrlJSON

/// Moves workflow runs along, next to the controller's reconcile loop: gives up on tasks
/// whose lease or timeout has passed (retried or dead-lettered), decides approvals that
/// timed out, and starts the runs cron triggers owe. Claims, results and approvals
/// happen elsewhere (the agents' API, the CLI), each a transaction of its own.
///
/// It sleeps until the next thing due (the earliest lease expiry or deadline of an open
/// step, the next cron slot), and is woken by the change feed when runs or workflows
/// change (a claim or a heartbeat moves a lease; an apply changes the triggers): an idle
/// controller with no run in flight wakes it only for its cron slots.
///
/// Everything it acts on is in the store, so a driver started after a controller was
/// killed carries on where the last one stopped: completed steps are not run again,
/// running tasks keep their lease (an agent that outlived the controller can still
/// heartbeat and complete; one that did not is retried, with the same idempotency key,
/// once its lease expires), pending approvals stay pending, and cron slots already
/// recorded do not fire again.
public actor RunsDriver {
    private let operations: RunOperations
    private let interval: Duration
    private let log: @Sendable (ControllerEvent) -> Void
    private let clock: @Sendable () -> Timestamp
    /// The driver runs, and so calls SQLite, on a queue of its own, never on the pool.
    private let executor: StoreExecutor
    /// Whether this process drives runs now: on a node, only while it holds the `runs`
    /// role (`NodeMembership`); nil: always.
    private let leader: (@Sendable () -> Bool)?
    /// What changed in the store (posted by the change feed).
    public enum Change: Hashable, Sendable {
        /// Resources: the workflows (their cron triggers) are read again.
        case workflows
        /// Runs: a lease or a deadline may have moved.
        case runs
    }

    /// Posted when the store changed (the change feed).
    public nonisolated let storeChanged = Inbox<Change>()

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// The cron triggers of every applied workflow, read again when the store changes.
    private var schedules: [(workflow: ResourceID, cron: CronSchedule)] = []
    private var parsedSpecs: [ResourceID: (specHash: String, crons: [CronSchedule])] = [:]
    private var schedulesStale = true
    private var lastRead: Timestamp?
    /// The latest slot handled per trigger, so a slot costs one write transaction.
    private var handled: [String: Timestamp] = [:]

    /// The least time between two ticks that changes of runs alone wake.
    static let runsCoalescing: Duration = .milliseconds(100)

    /// How often the workflows are read again even when nothing seems to have changed.
    static let rereadInterval: Int64 = 30_000

    /// `onReady` is told the agents a sweep or a cron run gave a Ready step (what wakes
    /// their long polls).
    public init(
        store: any RunStore, interval: Duration = .seconds(30), log: @escaping @Sendable (ControllerEvent) -> Void,
        clock: @escaping @Sendable () -> Timestamp = Controller.systemTime, onReady: (@Sendable (Set<ResourceID>) -> Void)? = nil,
        executor: StoreExecutor = StoreExecutor(label: "orl.runs"), leader: (@Sendable () -> Bool)? = nil
    ) {
        self.leader = leader
        self.operations = RunOperations(store: store, onReady: onReady)
        self.interval = interval
        self.log = log
        self.clock = clock
        self.executor = executor
    }

    /// Ticks until the task is cancelled: when the next thing is due (`nextWake`), at
    /// once when the store changed, and at least every `interval`.
    public func run() async {
        while !Task.isCancelled {
            if let leader, !leader() {
                // Another node drives runs: this one looks again each second, to take over.
                if await storeChanged.take(waitingAtMost: .seconds(1)).contains(.workflows) { schedulesStale = true }
                continue
            }
            tick()
            let ticked = ContinuousClock.now
            var wait = interval
            if let next = nextWake() {
                let now = clock()
                // Still due after the tick: the store was locked; tried again soon.
                wait = next <= now ? .milliseconds(250) : min(wait, .milliseconds(next.milliseconds - now.milliseconds))
            }
            let changes = await storeChanged.take(waitingAtMost: wait)
            if changes.contains(.workflows) {
                schedulesStale = true
            } else if !changes.isEmpty {
                // Runs moved (each step an agent completes is a commit): a lease or a
                // deadline set meanwhile is seconds away, so the commits of the next moment
                // are merged into one tick rather than each read the store again.
                let since = ContinuousClock.now - ticked
                if since < Self.runsCoalescing { try? await Task.sleep(for: Self.runsCoalescing - since) }
            }
        }
    }

    /// When the next tick is due: the earliest lease expiry or deadline of an open step,
    /// or the next slot of a cron trigger; nil when nothing is (or the store cannot be
    /// read: `interval` bounds the wait).
    public func nextWake() -> Timestamp? {
        let now = clock()
        var next: Timestamp?
        do {
            next = try operations.store.readRuns { reader throws(StoreError) in try reader.nextDue() }
        } catch {
            log(ControllerEvent(time: now, reason: .error, message: "reading the runs' deadlines: \(error.message)"))
        }
        for (_, cron) in schedules {
            guard let slot = cron.next(after: now) else { continue }
            next = next.map { min($0, slot) } ?? slot
        }
        return next
    }

    /// One round: overdue tasks and approvals, then cron triggers.
    public func tick() {
        if let leader, !leader() { return }
        let now = clock()
        do {
            let events = try operations.sweep(now: now) { Double.random(in: 0..<1) }
            for event in events { report(event) }
        } catch {
            log(ControllerEvent(time: now, reason: .error, message: "advancing runs: \(error.message)"))
        }
        fireSchedules(now: now)
    }

    private func fireSchedules(now: Timestamp) {
        if schedulesStale || lastRead.map({ now.milliseconds - $0.milliseconds >= Self.rereadInterval }) ?? true {
            schedulesStale = false
            lastRead = now
            readSchedules()
        }
        for (workflow, cron) in schedules {
            guard let slot = cron.latest(atOrBefore: now) else { continue }
            let key = "\(workflow)\u{0}\(cron.expression)"
            if let done = handled[key], done >= slot { continue }
            do {
                let outcome = try operations.fire(
                    workflow, cron: cron.expression, slot: slot, now: now, random: UInt32.random(in: 0...UInt32.max))
                handled[key] = slot
                switch outcome {
                case .success(let run)?:
                    log(
                        ControllerEvent(
                            time: now, reason: .run, resource: run.eventSubject,
                            message: "Started: workflow \(workflow.name) for slot \(slot.rfc3339Seconds) (cron \(cron.expression))"))
                case .failure(let error)?:
                    log(
                        ControllerEvent(
                            time: now, reason: .error, resource: workflow,
                            message: "the scheduled run for \(slot.rfc3339Seconds) did not start: \(error.message)"))
                case nil:
                    break
                }
            } catch {
                log(
                    ControllerEvent(
                        time: now, reason: .error, resource: workflow, message: "firing cron \(cron.expression): \(error.message)")
                )
            }
        }
    }

    private func readSchedules() {
        let stored: [StoredResource]
        do {
            stored = try operations.store.readRuns { reader throws(StoreError) in try reader.resources(kind: .workflow, namespace: nil) }
        } catch {
            log(ControllerEvent(time: clock(), reason: .error, message: "reading workflows: \(error.message)"))
            return
        }
        var parsed: [ResourceID: (specHash: String, crons: [CronSchedule])] = [:]
        for resource in stored {
            if let known = parsedSpecs[resource.id], known.specHash == resource.specHash {
                parsed[resource.id] = known
                continue
            }
            // Only the triggers matter here: the run itself is planned (and audited) from
            // the whole namespace when it starts.
            let crons =
                ((try? JSONParser.parse(resource.manifest, file: "<state>/\(resource.id)"))?["spec"]?["triggers"]?.elements ?? [])
                .compactMap { trigger -> CronSchedule? in
                    guard trigger["type"]?.string == "schedule", let expression = trigger["cron"]?.string else { return nil }
                    return try? CronSchedule(parsing: expression)
                }
            parsed[resource.id] = (resource.specHash, crons)
        }
        parsedSpecs = parsed
        schedules = parsed.sorted { $0.key < $1.key }.flatMap { id, entry in entry.crons.map { (id, $0) } }
    }

    private func report(_ event: StoreEvent) {
        log(
            ControllerEvent(
                time: event.time, reason: event.kind == .warning ? .runWarning : .run, resource: event.resource,
                message: "\(event.reason): \(event.message)"))
    }
}
