public import OrlCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Makes agent processes match the applied Agents, level-triggered: each pass reads
/// what should run, looks at what runs, and lets `Reconciler.decide` say what to do.
///
/// A pass runs when the store changed (another orlctl committed), a process exited, a
/// backoff ended, or 30 s have passed. Stops run in tasks of their own, so one agent's
/// grace period never holds up the others. What the controller knows of each process is
/// stored (`SupervisionRecord`), so that a controller started after a crash adopts the
/// processes that still run instead of starting them twice.
///
/// Each process gets a new random token (ORL_TOKEN, and OPENAI_API_KEY for the gateway);
/// only its digest is kept, in the supervision record, and handed to the gateway with
/// the applied fleet after every pass. The gateway says which agents exhausted a
/// halting budget; they are halted until it says otherwise (a new window, a raised
/// limit). Secrets come from the vault, read with the pass's state: an agent whose
/// allowed secret is not set (or cannot be opened) waits, Pending, until a `secret set`
/// changes the store. Store calls block the actor's thread, which is a queue of its
/// own (`StoreExecutor`), never the cooperative pool.
public actor Controller {
    public struct Configuration: Sendable {
        /// The state directory, absolute: logs and working directories live in it.
        public var stateDirectory: String
        public var apiURL = "http://127.0.0.1:0"
        public var pollInterval: Duration = .milliseconds(250)
        public var resyncInterval: Duration = .seconds(30)
        /// The grace period for a process whose Agent is no longer applied.
        public var defaultGrace: Duration = .seconds(10)
        public var backoff: BackoffPolicy = .standard
        /// Told how long each reconcile pass took (the metrics' reconcile duration).
        public var onPass: (@Sendable (Duration) -> Void)?

        public init(stateDirectory: String) { self.stateDirectory = stateDirectory }
    }

    /// Why the loop should look again; posts merge, so a burst of changes is one pass.
    public enum Wake: Hashable, Sendable {
        /// The store changed (the change feed saw another connection commit).
        case storeChanged
        /// Someone asked for a pass (SIGUSR1 from `orlctl apply`, the gateway halting an
        /// agent); reported as a `woken` event with the reason.
        case asked(String)
        /// A stop this controller started has finished.
        case stopFinished
        /// A process the runtime watches for us has ended.
        case processEnded
        /// Stop every agent gracefully and return from `run`.
        case stop
    }

    private let store: any StateStore
    private let runtime: any AgentRuntime
    private let gateway: (any ModelGateway)?
    private let configuration: Configuration
    private let log: @Sendable (ControllerEvent) -> Void
    private let clock: @Sendable () -> Timestamp
    /// Draws the jitter of a backoff (injected so that tests can fix it).
    private let random: @Sendable () -> Double
    /// The vault's master key (`MasterKeySource.load`); read only when secrets exist.
    private let masterKey: @Sendable () throws(VaultError) -> MasterKey?
    /// The actor runs, and so calls SQLite, on a queue of its own, never on the pool.
    private let executor: StoreExecutor
    /// What wakes the loop: the change feed, signals, the gateway, finished stops.
    public nonisolated let inbox = Inbox<Wake>()

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private var records: [ResourceID: SupervisionRecord] = [:]
    /// Agents whose recorded process is believed to run.
    private var alive: Set<ResourceID> = []
    /// Processes whose end the runtime announces (`AgentRuntime.watch`): not looked at.
    private var watched: Set<ProcessIdentity> = []
    /// Agents being stopped by a task of their own; passes leave them alone.
    private var stopping: [ResourceID: Task<Void, Never>] = [:]
    private var grace: [ResourceID: Duration] = [:]
    /// Drawn at each exit, so a backoff does not move from pass to pass.
    private var jitter: [ResourceID: Double] = [:]
    private var requeueAt: [ResourceID: Timestamp] = [:]
    private var statuses: [ResourceID: (status: ResourceStatus, generation: Int)] = [:]
    private var written: [ResourceID: SupervisionRecord] = [:]
    private var writtenStatuses: [ResourceID: [ResourceStatus.Condition]] = [:]
    /// Lifecycle events not yet in the store: written with the next pass's write.
    private var pendingEvents: [StoreEvent] = []
    /// Agents whose BackOff has been reported, so that it is reported once per exit.
    private var backingOff: Set<ResourceID> = []
    /// Why each waiting agent waits, as last reported: reported again only when it changes.
    private var waiting: [ResourceID: String] = [:]
    /// Why the agent's last start failed, until one succeeds: it stays Stalled meanwhile.
    private var startErrors: [ResourceID: String] = [:]
    private var dirty = true
    private var stopRequested = false
    /// Set once adoption is done: no pass may run before it.
    private var started = false

    public init(
        store: any StateStore, runtime: any AgentRuntime, gateway: (any ModelGateway)? = nil, configuration: Configuration,
        log: @escaping @Sendable (ControllerEvent) -> Void, clock: @escaping @Sendable () -> Timestamp = Controller.systemTime,
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
        masterKey: @escaping @Sendable () throws(VaultError) -> MasterKey? = { nil },
        executor: StoreExecutor = StoreExecutor(label: "orl.controller")
    ) {
        self.store = store
        self.masterKey = masterKey
        self.runtime = runtime
        self.gateway = gateway
        self.configuration = configuration
        self.log = log
        self.clock = clock
        self.random = random
        self.executor = executor
    }

    public static let systemTime: @Sendable () -> Timestamp = {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Timestamp(milliseconds: Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000)
    }

    /// Ends `run` as cancelling its task does: every agent is stopped gracefully first.
    public nonisolated func requestStop() { inbox.post(.stop) }

    /// Asks for a pass now rather than at the next resync (`orlctl apply` signals SIGUSR1
    /// after a change). Before `run` has adopted, or while stopping, it only marks a pass due.
    public nonisolated func wake(_ why: String) { inbox.post(.asked(why)) }

    /// Adopts what runs (once) and reconciles every agent now: what `run` does on each
    /// wake, for a caller that drives the controller itself (tests, with their clock).
    public func reconcileNow() {
        if !started {
            adopt()
            started = true
        }
        dirty = false
        pass()
    }

    /// Reconciles until cancelled or asked to stop, then stops every agent (each with its
    /// grace period, all at once) and returns.
    ///
    /// Between passes it waits on its inbox, so an idle controller costs nothing but
    /// the wake-ups it needs: the runtime announces a process's end (a pidfd; one it
    /// cannot watch is looked at every `pollInterval`), a halt or backoff ends at its
    /// time, and every `resyncInterval` it reads the whole state again (and asks after
    /// every process) in case a change went unseen.
    public func run() async {
        adopt()
        started = true
        var lastPass = ContinuousClock.now
        while !Task.isCancelled && !stopRequested {
            if ContinuousClock.now - lastPass >= configuration.resyncInterval { dirty = true }
            if let due = requeueAt.values.min(), due <= clock() { dirty = true }
            if !dirty, anAgentExited() { dirty = true }
            if dirty {
                dirty = false
                lastPass = ContinuousClock.now
                pass()
            }
            for reason in await inbox.take(waitingAtMost: nextLook(lastPass: lastPass)) {
                switch reason {
                case .storeChanged, .stopFinished, .processEnded: dirty = true
                case .asked(let why):
                    emit(.woken, message: why)
                    dirty = true
                case .stop: stopRequested = true
                }
            }
        }
        // Not in this (maybe cancelled) task: a cancelled stop cuts grace periods short.
        await Task { await self.stopAll() }.value
    }

    /// Whether a process believed to run has ended: asked of the runtime rather than of
    /// /proc (for its own children a waitpid(WNOHANG), where reading /proc for 100
    /// agents four times a second was most of an idle controller's CPU). The exit is
    /// kept for the pass. A process that still runs must not count: a full pass at every
    /// look over an idle fleet was a fifth of a core for 100 agents.
    private func anAgentExited() -> Bool {
        alive.contains { id in
            guard stopping[id] == nil, let process = records[id]?.process, !watched.contains(process) else { return false }
            return runtime.exitStatus(process) != nil
        }
    }

    /// Has the runtime announce the process's end, when it can.
    private func watch(_ process: ProcessIdentity) {
        let inbox = self.inbox
        if runtime.watch(process, onExit: { inbox.post(.processEnded) }) { watched.insert(process) }
    }

    /// How long the loop may wait for its inbox before it must look by itself.
    private func nextLook(lastPass: ContinuousClock.Instant) -> Duration {
        var wait = configuration.resyncInterval - (ContinuousClock.now - lastPass)
        // A failed pass (the store was locked) is tried again soon.
        if dirty { wait = min(wait, configuration.pollInterval) }
        let unwatched = alive.contains { id in stopping[id] == nil && records[id]?.process.map(watched.contains) == false }
        if unwatched { wait = min(wait, configuration.pollInterval) }
        if let due = requeueAt.values.min() {
            wait = min(wait, .milliseconds(max(0, due.milliseconds - clock().milliseconds)))
        }
        return max(wait, .zero)
    }

    // MARK: Adopting

    private func adopt() {
        let stored: [SupervisionRecord]
        do {
            stored = try store.read { reader throws(StoreError) in try reader.allSupervision() }
        } catch {
            emit(.error, message: "reading supervision records: \(error.description)")
            return
        }
        for var record in stored {
            if let process = record.process, runtime.isRunning(process) {
                alive.insert(record.agent)
                runtime.adopt(process)
                watch(process)
                emit(.adopted, record.agent, process, message: "\(process)")
            } else {
                record.process = nil
            }
            records[record.agent] = record
        }
    }

    // MARK: One pass

    private struct Desired {
        var intents: [ResourceID: AgentIntent] = [:]
        var generations: [ResourceID: Int] = [:]
        /// Agents whose manifest cannot be read back: left as they are.
        var unreadable: Set<ResourceID> = []
        var fleet = Fleet([])
        /// When budget halts end.
        var resumptions: [ResourceID: Timestamp] = [:]
    }

    /// What the stored resources and secrets make of the fleet, kept from pass to pass
    /// while they stay the same: decoding and validating every manifest, and each
    /// agent's launch (its secrets opened, its canonical hash), were most of a pass's
    /// cost, and a pass over an unchanged store (a resync, an exit) needs none of it.
    private struct Plan {
        var serial: Int
        var stored: [StoredResource]
        var sealed: [SealedSecret]
        var fleet: Fleet
        var unreadable: Set<ResourceID>
        var engine: PolicyEngine
        var credentials: CredentialSecrets
        /// Each agent's launch, with the paths its resolution asked about (which
        /// arguments name files of its source) and what they were then: asked again
        /// before the launch is reused, so a file that appeared since is seen.
        var launches: [ResourceID: (launch: AgentLaunch.Launch?, probes: [String: Bool])] = [:]
    }

    private var plan: Plan?
    /// The plan and tokens the gateway was last handed: not handed again when the same.
    private var published: (plan: Int, tokens: [ResourceID: String])?

    private func plan(stored: [StoredResource], sealed: [SealedSecret]) -> Plan {
        if let plan, plan.stored == stored, plan.sealed == sealed { return plan }
        let (fleet, unreadable) = Fleet.applied(stored)
        let plan = Plan(
            serial: (plan?.serial ?? 0) + 1, stored: stored, sealed: sealed, fleet: fleet, unreadable: unreadable,
            engine: PolicyEngine(fleet), credentials: CredentialSecrets(fleet))
        self.plan = plan
        return plan
    }

    /// The agent's launch: the plan's, unless the plan has none for it, the files its
    /// arguments name have come or gone, or it waits (for a secret, or for the vault's
    /// key: a key file put in place changes nothing in the store).
    private func launch(of agent: Resource, in plan: inout Plan, vault: () -> Vault) -> AgentLaunch.Launch? {
        if let known = plan.launches[agent.id], known.launch?.waiting == nil,
            known.probes.allSatisfy({ path, existed in (access(path, F_OK) == 0) == existed })
        {
            return known.launch
        }
        let probes = Mutex<[String: Bool]>([:])
        let context = AgentLaunch.Context(
            stateDirectory: configuration.stateDirectory, apiURL: configuration.apiURL,
            fileExists: { path in
                let exists = access(path, F_OK) == 0
                probes.withLock { $0[path] = exists }
                return exists
            })
        let vault = vault()
        let launch = AgentLaunch.launch(
            agent, permissions: plan.engine.permissions(of: agent.id), credentials: plan.credentials, context: context,
            secretValue: vault.value)
        plan.launches[agent.id] = (launch, probes.withLock { $0 })
        return launch
    }

    private func desired(now: Timestamp) throws(StoreError) -> Desired {
        let (stored, holds, sealed) = try store.read { reader throws(StoreError) in
            (try reader.resources(kind: nil, namespace: nil), Set(try reader.holds().map(\.agent)), try reader.secrets(namespace: nil))
        }
        var result = Desired()
        var plan = self.plan(stored: stored, sealed: sealed)
        defer { self.plan = plan }
        let (fleet, unreadable) = (plan.fleet, plan.unreadable)
        for resource in stored where resource.id.kind == ResourceKind.agent.rawValue {
            if unreadable.contains(resource.id) {
                result.unreadable.insert(resource.id)
            } else {
                result.generations[resource.id] = resource.generation
            }
        }
        result.fleet = fleet
        // The gateway sees the fleet before halts are asked for: a raised limit lifts them.
        publish(fleet, now: now)
        let halts = gateway?.halts(now: now) ?? [:]
        // Opened (and the master key read) only when a launch is made again.
        var opened: Vault?
        let masterKey = self.masterKey
        let vault = {
            if let opened { return opened }
            let vault = Vault(sealed: sealed, key: masterKey)
            opened = vault
            return vault
        }
        for id in result.generations.keys {
            guard let agent = fleet[id], let spec = agent.agent else {
                result.unreadable.insert(id)
                continue
            }
            guard let launch = launch(of: agent, in: &plan, vault: vault) else { continue }
            if records[id] == nil { records[id] = SupervisionRecord(agent: id) }
            var hold: AgentIntent.Hold?
            if holds.contains(id) {
                hold = .suspendedByUser
            } else if spec.suspend {
                hold = .suspended
            } else if let halt = halts[id] {
                hold = .halted(reason: "BudgetExceeded", message: halt.message)
                result.resumptions[id] = halt.resumesAt
            }
            result.intents[id] = AgentIntent(launch: launch, restartPolicy: spec.runtime.restartPolicy, hold: hold)
        }
        return result
    }

    private func pass() {
        let began = ContinuousClock.now
        defer { configuration.onPass?(ContinuousClock.now - began) }
        let now = clock()
        let desired: Desired
        do {
            desired = try self.desired(now: now)
        } catch {
            emit(.error, message: "reading the state: \(error.description)")
            dirty = true
            return
        }
        requeueAt = desired.resumptions
        let ids = Set(desired.intents.keys).union(records.keys).subtracting(desired.unreadable)
        for id in ids.sorted() where stopping[id] == nil {
            reconcile(id, intent: desired.intents[id], generation: desired.generations[id], now: now)
        }
        // Processes started by this pass must be able to call the gateway at once.
        publish(desired.fleet, now: now)
        for id in desired.unreadable {
            statuses[id] = (
                ResourceStatus(
                    conditions: [
                        .init(
                            type: ResourceStatus.ready, status: .false, reason: "Unreadable", message: "the stored manifest cannot be read"),
                        .init(
                            type: ResourceStatus.stalled, status: .true, reason: "Unreadable", message: "the stored manifest cannot be read"
                        ),
                    ], observedGeneration: desired.generations[id], updatedAt: now), desired.generations[id] ?? 0
            )
        }
        persist(keeping: Set(desired.generations.keys).union(desired.unreadable), now: now)
    }

    private func reconcile(_ id: ResourceID, intent: AgentIntent?, generation: Int?, now: Timestamp) {
        var record = records[id] ?? SupervisionRecord(agent: id)
        var observation = record.observation(running: alive.contains(id))
        if let process = record.process, alive.contains(id), let exit = runtime.exitStatus(process) {
            observation = Reconciler.recordExit(exit, of: observation, at: now, backoff: configuration.backoff)
            alive.remove(id)
            watched.remove(process)
            jitter[id] = random()
            emit(.exited, id, process, message: "\(process): \(exit)" + (runtime.exitNote(process).map { ": \($0)" } ?? ""))
        }
        if let intent { grace[id] = intent.launch.process.gracePeriod }
        let decision = Reconciler.decide(intent, observation, now: now, backoff: configuration.backoff, random: jitter[id] ?? 0.5)
        if decision.phase == .crashLoopBackOff && decision.action == .none {
            if backingOff.insert(id).inserted { emit(.backOff, id, message: decision.message) }
        } else {
            // Any other decision (a start, too) ends the backoff: the next one is reported.
            backingOff.remove(id)
        }
        if let wait = intent?.launch.waiting, decision.action == .none, decision.reason == wait.reason {
            if waiting.updateValue(wait.message, forKey: id) != wait.message { emit(.waiting, id, message: wait.message) }
        } else {
            waiting[id] = nil
        }
        // Not meant to run (removed, held): a failed start no longer matters.
        if intent == nil || intent?.hold != nil { startErrors[id] = nil }
        switch decision.action {
        case .none:
            break
        case .start:
            guard let intent else { break }
            do {
                try Self.makeDirectory(intent.launch.process.workingDirectory)
                let token = Self.newToken()
                let process = try runtime.start(intent.launch.process(token: token))
                record.tokenDigest = AgentToken.digest(token)
                observation = Reconciler.recordStart(process, launchHash: intent.launch.hash, of: observation, at: now)
                // Recorded at once, not with the pass's write: a controller killed in
                // between would leave a process the next one does not know, and starts again.
                let started = SupervisionRecord(agent: id, observation: observation, tokenDigest: record.tokenDigest)
                do {
                    try store.write { writer throws(StoreError) in try writer.putSupervision(started) }
                    written[id] = started
                } catch {
                    emit(.error, id, message: "recording the start of \(process): \(error.description)")
                }
                alive.insert(id)
                watch(process)
                startErrors[id] = nil
                emit(.started, id, process, message: "\(process)")
                // Look again at once, to report it Running.
                dirty = true
            } catch {
                startErrors[id] = error.description
                emit(.failedToStart, id, message: error.description)
                observation = Reconciler.recordFailedStart(
                    launchHash: intent.launch.hash, of: observation, at: now, backoff: configuration.backoff)
                jitter[id] = random()
                dirty = true
            }
        case .stop(let process), .restart(let process):
            let restart = if case .restart = decision.action { true } else { false }
            let wait = grace[id] ?? configuration.defaultGrace
            let reason: ControllerEvent.Reason =
                switch (restart, intent?.hold) {
                case (true, _): .restarting
                case (false, nil): intent == nil ? .removed : .stopping
                case (false, .suspended?), (false, .suspendedByUser?): .suspended
                case (false, .halted?): .halted
                }
            emit(reason, id, process, message: "\(process): \(decision.message)")
            stopping[id] = Task { [runtime] in
                let exit = await runtime.stop(process, grace: wait)
                self.stopped(id, process, exit: exit, restart: restart)
            }
        }
        record = SupervisionRecord(agent: id, observation: observation, tokenDigest: record.tokenDigest)
        records[id] = record
        if let due = decision.requeueAt { requeueAt[id] = due }
        if let generation {
            var conditions = [
                ResourceStatus.Condition(
                    type: ResourceStatus.ready, status: decision.phase == .running ? .true : .false, reason: decision.reason,
                    message: "\(decision.phase.rawValue): \(decision.message)")
            ]
            if let stalled = startErrors[id] {
                conditions.append(.init(type: ResourceStatus.stalled, status: .true, reason: "StartFailed", message: stalled))
            }
            if let process = intent?.launch.process {
                // What confines it (or would): describe shows it.
                conditions.append(
                    .init(
                        type: Self.sandboxed, status: process.sandbox == nil ? .false : .true,
                        reason: process.sandbox == nil ? "Unconfined" : "Strict", message: runtime.confinement(of: process)))
            }
            statuses[id] = (ResourceStatus(conditions: conditions, observedGeneration: generation, updatedAt: now), generation)
        }
    }

    /// Hands the gateway the fleet and the tokens of the processes that run; a stopped
    /// process's token stops working with the next pass.
    private func publish(_ fleet: Fleet, now: Timestamp) {
        guard let gateway else { return }
        var tokens: [ResourceID: String] = [:]
        for (id, record) in records where record.process != nil {
            if let digest = record.tokenDigest { tokens[id] = digest }
        }
        let serial = plan?.serial ?? 0
        if let published, published.plan == serial, published.tokens == tokens { return }
        gateway.update(fleet: fleet, tokens: tokens, now: now)
        published = (serial, tokens)
    }

    private func stopped(_ id: ResourceID, _ process: ProcessIdentity, exit: ProcessExit?, restart: Bool) {
        stopping[id] = nil
        alive.remove(id)
        watched.remove(process)
        inbox.post(.stopFinished)
        emit(.stopped, id, process, message: "\(process)\(exit.map { ": \($0)" } ?? "")")
        if var record = records[id], record.process == process {
            // A deliberate stop is no crash: the process is forgotten, not exited.
            record.process = nil
            records[id] = record
        }
        dirty = true
    }

    /// One write for the pass: changed supervision records and statuses.
    private func persist(keeping applied: Set<ResourceID>, now: Timestamp) {
        // A removed agent whose process is gone needs no record any more.
        for (id, record) in records where !applied.contains(id) && !alive.contains(id) && stopping[id] == nil && record.process == nil {
            records[id] = nil
            startErrors[id] = nil
            statuses[id] = nil
        }
        let changedRecords = records.values.filter { written[$0.agent] != $0 }
        let forgotten = written.keys.filter { records[$0] == nil }
        let changedStatuses = statuses.filter { id, entry in
            applied.contains(id) && writtenStatuses[id].map { Self.sameConditions($0, entry.status.conditions) } != true
        }
        let events = pendingEvents
        guard !changedRecords.isEmpty || !forgotten.isEmpty || !changedStatuses.isEmpty || !events.isEmpty else { return }
        do {
            try store.write { writer throws(StoreError) in
                for event in events { try writer.append(event) }
                for record in changedRecords { try writer.putSupervision(record) }
                for id in forgotten { try writer.deleteSupervision(for: id) }
                for (id, entry) in changedStatuses {
                    guard try writer.resource(id) != nil else { continue }
                    var status = entry.status
                    let previous = try writer.status(for: id)
                    for index in status.conditions.indices {
                        let condition = status.conditions[index]
                        if let before = previous?.condition(condition.type), before.status == condition.status {
                            status.conditions[index].lastTransitionTime = before.lastTransitionTime ?? now
                        } else {
                            status.conditions[index].lastTransitionTime = now
                        }
                    }
                    try writer.putStatus(status, for: id)
                }
            }
            pendingEvents.removeFirst(events.count)
            for record in changedRecords { written[record.agent] = record }
            for id in forgotten { written[id] = nil }
            for (id, entry) in changedStatuses { writtenStatuses[id] = entry.status.conditions }
        } catch {
            emit(.error, message: "writing the state: \(error.description)")
            dirty = true
        }
    }

    private static func sameConditions(_ a: [ResourceStatus.Condition], _ b: [ResourceStatus.Condition]) -> Bool {
        a.map { [$0.type, $0.status.rawValue, $0.reason, $0.message] } == b.map { [$0.type, $0.status.rawValue, $0.reason, $0.message] }
    }

    // MARK: Stopping everything

    private func stopAll() async {
        for task in stopping.values { await task.value }
        let running = alive.compactMap { id in records[id]?.process.map { (id, $0, grace[id] ?? configuration.defaultGrace) } }
        await withTaskGroup(of: Void.self) { group in
            for (id, process, wait) in running {
                emit(.stopping, id, process, message: "\(process): the controller is stopping")
                group.addTask { [runtime] in
                    let exit = await runtime.stop(process, grace: wait)
                    await self.stopped(id, process, exit: exit, restart: false)
                }
            }
        }
        let now = clock()
        for id in statuses.keys {
            statuses[id]?.status.conditions = [
                .init(type: ResourceStatus.ready, status: .false, reason: "ControllerStopped", message: "Stopped: the controller stopped")
            ]
        }
        persist(keeping: Set(statuses.keys), now: now)
    }

    // MARK: Helpers

    /// Logs the event and, when it is part of an agent's life, queues it for the store
    /// (bounded, the oldest dropped, should the store stay unwritable).
    private func emit(
        _ reason: ControllerEvent.Reason, _ agent: ResourceID? = nil, _ process: ProcessIdentity? = nil, message: String
    ) {
        let event = ControllerEvent(time: clock(), reason: reason, resource: agent, pid: process?.pid, message: message)
        log(event)
        if let stored = event.storeEvent {
            pendingEvents.append(stored)
            if pendingEvents.count > 1000 { pendingEvents.removeFirst(pendingEvents.count - 1000) }
        }
    }

    /// The condition that says what confines an agent's process.
    public static let sandboxed = "Sandboxed"

    /// 256 random bits, in hex.
    public static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in
            let value = generator.next() as UInt64
            let hex = String(value, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
    }

    /// mkdir -p, mode 0700.
    static func makeDirectory(_ path: String) throws(RuntimeError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw RuntimeError("cannot create the directory \(prefix): \(String(cString: strerror(errno)))")
            }
            prefix += "/"
        }
    }
}
