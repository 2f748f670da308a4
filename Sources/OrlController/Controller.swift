import Dispatch
public import OrlCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Makes agent processes match the applied Agents, level-triggered: what should run
/// (the store) and what runs (the runtime) go through `Reconciler.decide` for each agent.
///
/// Reconciling is a work queue of agents (`WorkQueue`, as client-go's): a store change
/// queues the agents whose intent it changed, a process's end queues its agent, a
/// backoff or a halt that ends queues its agent at its time, and every `resyncInterval`
/// every agent is queued in case a change went unseen. Repeated adds of an agent merge;
/// an agent whose stop is in flight stays queued until the stop has finished, so no
/// agent is ever reconciled twice at once. One drain of the queue starts every agent
/// due to start in one batch, signals every stop at once (one task waits for them all,
/// each reported as it ends, so one agent's grace period never holds up the others),
/// and writes what changed (supervision records, statuses, lifecycle events) in one
/// transaction. What the controller knows of each process is stored
/// (`SupervisionRecord`) right after the batch that started it, so that a controller
/// started after a crash adopts the processes that still run instead of starting them
/// twice.
///
/// Each process gets a new random token (ORL_TOKEN, and OPENAI_API_KEY for the gateway);
/// only its digest is kept, in the supervision record, and handed to the gateway with
/// the applied fleet. The gateway says which agents exhausted a halting budget; they
/// are halted until it says otherwise (a new window, a raised limit). Secrets come from
/// the vault, read with the state: an agent whose allowed secret is not set (or cannot
/// be opened) waits, Pending, until a `secret set` changes the store. Store calls block
/// the actor's thread, which is a queue of its own (`StoreExecutor`), never the
/// cooperative pool.
public actor Controller {
    public struct Configuration: Sendable {
        /// The state directory, absolute: logs and working directories live in it.
        public var stateDirectory: String
        public var apiURL = "http://127.0.0.1:0"
        /// How often a process whose end the runtime cannot announce is looked at (and
        /// a failed read of the store tried again).
        public var pollInterval: Duration = .milliseconds(250)
        public var resyncInterval: Duration = .seconds(30)
        /// The grace period for a process whose Agent is no longer applied.
        public var defaultGrace: Duration = .seconds(10)
        public var backoff: BackoffPolicy = .standard
        /// Told how long each drain of the work queue took (the metrics' reconcile duration).
        public var onPass: (@Sendable (Duration) -> Void)?
        /// Told each agent reconciled, as it is (tests count them).
        public var onReconcile: (@Sendable (ResourceID) -> Void)?
        /// The node this controller is (`orlctl controller --node`): it runs only the agents
        /// its `NodeMembership` says it may (`gate(_:)`), and stamps every write with its
        /// lease. nil: the only controller of its state, which runs every agent.
        public var node: String?
        /// Told of each process started or adopted (true) and each gone (false): a node's
        /// guard kills them if the node dies.
        public var onProcess: (@Sendable (ProcessIdentity, Bool) -> Void)?

        public init(stateDirectory: String) { self.stateDirectory = stateDirectory }
    }

    /// Why the loop should look again; posts merge, so a burst of changes is one look.
    public enum Wake: Hashable, Sendable {
        /// The store changed (the change feed saw another connection commit).
        case storeChanged
        /// Someone asked for a look (SIGUSR1 from `orlctl apply`, the gateway halting an
        /// agent); reported as a `woken` event with the reason.
        case asked(String)
        /// A stop this controller started has finished.
        case stopFinished(ResourceID)
        /// The process of this agent, which the runtime watches for us, has ended.
        case processEnded(ResourceID)
        /// Stop every agent gracefully and return from `run`.
        case stop
        /// The node's membership changed what this node may run.
        case nodeChanged
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
    /// What wakes the loop: the change feed, signals, the gateway, processes, stops.
    public nonisolated let inbox = Inbox<Wake>()

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// Everything known of each agent: applied, running, or with a record left.
    private var agents: [ResourceID: AgentState] = [:]
    private var queue = WorkQueue<ResourceID>()
    /// What the store said at the last read; intents are made again from it when only
    /// time or the gateway's halts changed.
    private var snapshot: (stored: [StoredResource], holds: Set<ResourceID>, sealed: [SealedSecret])?
    /// The last read of the store failed: tried again every `pollInterval`.
    private var readFailed = false
    /// The last write failed: what it held is written with the next drain.
    private var writeFailed = false
    /// Lifecycle events not yet in the store: written with the next drain's write.
    private var pendingEvents: [StoreEvent] = []
    /// Stops in flight, each a task for a batch of processes.
    private var stopTasks: [Int: Task<Void, Never>] = [:]
    private var nextStopTask = 0
    private var stopRequested = false
    /// Set once adoption is done: nothing is reconciled before it.
    private var started = false
    /// What this node may run, as its membership last said (node mode only). Until it
    /// says anything, nothing.
    private let nodeGate = Mutex(NodeGate.nothing)
    /// Applied agents that run on other nodes: their records are not this node's to delete.
    private var elsewhere: Set<ResourceID> = []
    /// Why the agents in `elsewhere` do not run here, as their stop events say.
    private var elsewhereReason = "placed on another node"

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

    /// Asks for a look now rather than at the next resync (`orlctl apply` signals SIGUSR1
    /// after a change). Before `run` has adopted, or while stopping, it only marks one due.
    public nonisolated func wake(_ why: String) { inbox.post(.asked(why)) }

    /// What this node may run now (node mode): agents outside the gate are stopped (their
    /// grace periods cut to `graceCap` when set), and writes are stamped with its lease.
    public nonisolated func gate(_ gate: NodeGate) {
        let changed = nodeGate.withLock { current in
            defer { current = gate }
            return current != gate
        }
        if changed { inbox.post(.nodeChanged) }
    }

    /// The agents whose process runs here or is being stopped: a node releases an agent it
    /// was moved away from only once it is not among them.
    public func localAgents() -> Set<ResourceID> {
        Set(agents.filter { $0.value.alive || $0.value.stopping }.keys)
    }

    /// The applied agents and their `spec.runtime.nodeSelector`, as the last read of the
    /// store found them: what a node places.
    public func placementRequests() -> [ResourceID: [String: String]] {
        guard let plan else { return [:] }
        var requests: [ResourceID: [String: String]] = [:]
        for resource in plan.stored where resource.id.kind == ResourceKind.agent.rawValue && !plan.unreadable.contains(resource.id) {
            requests[resource.id] = plan.fleet[resource.id]?.agent?.runtime.nodeSelector ?? [:]
        }
        return requests
    }

    /// Adopts what runs (once), reads the store and reconciles every agent now: a full
    /// resync, for a caller that drives the controller itself (tests, with their clock).
    public func reconcileNow() {
        if !started {
            adopt()
            started = true
        }
        resync()
        drain()
    }

    /// Queues an agent as a process's end or a finished stop does, and drains the queue
    /// (tests, with their clock). Adds merge: an agent queued twice is reconciled once.
    public func reconcile(_ ids: [ResourceID]) {
        for id in ids { queue.add(id) }
        drain()
    }

    /// Reconciles until cancelled or asked to stop, then stops every agent (each with its
    /// grace period, all at once) and returns.
    ///
    /// Between drains it waits on its inbox, so an idle controller costs nothing but the
    /// wake-ups it needs: the runtime announces a process's end (a pidfd; one it cannot
    /// watch is looked at every `pollInterval`), a halt or backoff ends at its time, and
    /// every `resyncInterval` it reads the whole state again (and asks after every
    /// process) in case a change went unseen.
    public func run() async {
        adopt()
        started = true
        resync()
        var lastResync = ContinuousClock.now
        var warmed = false
        while !Task.isCancelled && !stopRequested {
            if ContinuousClock.now - lastResync >= configuration.resyncInterval {
                resync()
                lastResync = ContinuousClock.now
            } else if readFailed {
                refresh(readingStore: true)
            }
            queueDue()
            queueUnwatchedExits()
            drain()
            if !warmed {
                // Each kind's schema is compiled on its first use: every kind now, once
                // the state found at start is reconciled, rather than on the next apply's
                // path to its agents (60 ms of CPU for the first fleet of the benchmark).
                for kind in ResourceKind.allCases { _ = ManifestSchemas.bundled.schema(for: kind) }
                warmed = true
            }
            var changed = false
            var nodeChanged = false
            for reason in await inbox.take(waitingAtMost: nextLook(lastResync: lastResync)) {
                switch reason {
                case .storeChanged: changed = true
                case .asked(let why):
                    emit(.woken, message: why)
                    changed = true
                case .stopFinished(let id), .processEnded(let id): queue.add(id)
                case .stop: stopRequested = true
                case .nodeChanged: nodeChanged = true
                }
            }
            if changed {
                refresh(readingStore: true)
            } else if nodeChanged {
                refresh(readingStore: false)
            }
        }
        // Not in this (maybe cancelled) task: a cancelled stop cuts grace periods short.
        await Task { await self.stopEverything() }.value
    }

    /// Every agent queued, after a read of the whole store.
    private func resync() {
        refresh(readingStore: true)
        for id in agents.keys { queue.add(id) }
    }

    /// Agents whose backoff or halt has ended are queued (a halt's end needs the
    /// gateway asked again: the intents are made again first).
    private func queueDue() {
        let now = clock()
        if agents.values.contains(where: { $0.resumesAt.map { $0 <= now } ?? false }) {
            refresh(readingStore: false)
        }
        for (id, state) in agents {
            if let due = state.retryAt, due <= now {
                agents[id]?.retryAt = nil
                queue.add(id)
            }
            if let due = state.resumesAt, due <= now {
                agents[id]?.resumesAt = nil
                queue.add(id)
            }
        }
    }

    /// Processes the runtime cannot watch are asked after (for its own children a
    /// waitpid(WNOHANG)); only an agent whose process has ended is queued: a full
    /// reconcile at every look over an idle fleet was a fifth of a core for 100 agents.
    private func queueUnwatchedExits() {
        for (id, state) in agents where state.alive && !state.watched && !state.stopping {
            if let process = state.record.process, runtime.exitStatus(process) != nil { queue.add(id) }
        }
    }

    /// How long the loop may wait for its inbox before it must look by itself.
    private func nextLook(lastResync: ContinuousClock.Instant) -> Duration {
        if queue.hasReady(where: { agents[$0]?.stopping != true }) { return .zero }
        var wait = configuration.resyncInterval - (ContinuousClock.now - lastResync)
        // A failed read or write (the store was locked) is tried again soon.
        if readFailed || writeFailed { wait = min(wait, configuration.pollInterval) }
        if agents.values.contains(where: { $0.alive && !$0.watched && !$0.stopping }) { wait = min(wait, configuration.pollInterval) }
        let now = clock().milliseconds
        for state in agents.values {
            for due in [state.retryAt, state.resumesAt].compactMap({ $0 }) {
                wait = min(wait, .milliseconds(max(0, due.milliseconds - now)))
            }
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
            // A node adopts only what it started itself: another node's process may be
            // visible on the same host, and is that node's to supervise.
            if let node = configuration.node, record.node?.node != node { continue }
            var state = AgentState(record: record)
            // What is stored: a record whose process is gone is written again without it.
            state.writtenRecord = record
            if let process = record.process, runtime.isRunning(process) {
                state.alive = true
                runtime.adopt(process)
                configuration.onProcess?(process, true)
                state.watched = watch(record.agent, process)
                emit(.adopted, record.agent, process, message: "\(process)")
            } else {
                record.process = nil
                state.record = record
            }
            agents[record.agent] = state
            queue.add(record.agent)
        }
        stopUnrecorded(recorded: Set(stored.compactMap(\.process)))
    }

    /// Processes of this state that no record names (their controller was killed between
    /// their spawn and the write that records them) are stopped, not adopted: their
    /// launch and token were never recorded, so neither what they run nor their access
    /// to the gateway can be vouched for. Their agent starts again once they are gone.
    /// One left by an agent that has a live recorded process (a descendant that started a
    /// session of its own) is left alone.
    /// `recorded`: every process a record names, adopted here or not.
    private func stopUnrecorded(recorded: Set<ProcessIdentity>) {
        var orders: [StopOrder] = []
        var marks = [AgentLaunch.stateVariable: configuration.stateDirectory]
        // Nodes on one host can share a state directory: each sweeps only what it started.
        if let node = configuration.node { marks[AgentLaunch.nodeVariable] = node }
        for (id, process) in runtime.unrecorded(marks: marks, recorded: recorded) {
            guard agents[id]?.alive != true else { continue }
            emit(.stopping, id, process, message: "\(process): not recorded (its controller ended before recording it)")
            var state = agents[id] ?? AgentState(record: SupervisionRecord(agent: id))
            state.stopping = true
            agents[id] = state
            queue.add(id)
            orders.append(StopOrder(id: id, process: process, grace: configuration.defaultGrace, restart: false))
        }
        stop(orders)
    }

    /// Has the runtime announce the process's end, when it can.
    private func watch(_ id: ResourceID, _ process: ProcessIdentity) -> Bool {
        let inbox = self.inbox
        return runtime.watch(process, onExit: { inbox.post(.processEnded(id)) })
    }

    // MARK: What should run

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
    /// The token digest of each agent process this controller supervises that lives (or
    /// is being stopped), as last compared: nil before the first comparison.
    private var claimants: [ResourceID: String]?

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

    /// The fleet of the last plan, handed to the gateway.
    private var fleet = Fleet([])

    /// Makes every agent's intent again, from a new read of the store or from the last
    /// one (time passed, the gateway's halts changed), and queues the agents whose
    /// intent changed: a change to one agent reconciles that agent only.
    private func refresh(readingStore: Bool) {
        if readingStore || snapshot == nil {
            do {
                snapshot = try store.read { reader throws(StoreError) in
                    (
                        try reader.resources(kind: nil, namespace: nil), Set(try reader.holds().map(\.agent)),
                        try reader.secrets(namespace: nil)
                    )
                }
                readFailed = false
            } catch {
                emit(.error, message: "reading the state: \(error.description)")
                readFailed = true
                return
            }
        }
        guard let snapshot else { return }
        let (stored, holds, sealed) = snapshot
        let now = clock()
        var plan = self.plan(stored: stored, sealed: sealed)
        defer { self.plan = plan }
        fleet = plan.fleet
        var generations: [ResourceID: Int] = [:]
        var unreadable: Set<ResourceID> = []
        for resource in stored where resource.id.kind == ResourceKind.agent.rawValue {
            if plan.unreadable.contains(resource.id) {
                unreadable.insert(resource.id)
            } else {
                generations[resource.id] = resource.generation
            }
        }
        // A node runs only what its membership lets it: the others are, here, as if not
        // applied (stopped if they run, no status written: their node writes it).
        elsewhere = []
        if configuration.node != nil {
            let gate = nodeGate.withLock { $0 }
            elsewhereReason = gate.lease == nil ? gate.reason ?? "its node holds no lease" : "placed on another node"
            for id in Array(generations.keys) {
                let running = agents[id].map { $0.alive || $0.stopping } ?? false
                if gate.runnable.contains(id) || (running && gate.assigned.contains(id)) { continue }
                generations[id] = nil
                elsewhere.insert(id)
            }
            unreadable = unreadable.filter { gate.assigned.contains($0) }
        }
        // The gateway sees the fleet before halts are asked for: a raised limit lifts them.
        publish(now: now)
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
        var intents: [ResourceID: AgentIntent] = [:]
        var resumptions: [ResourceID: Timestamp] = [:]
        for id in generations.keys {
            guard let agent = plan.fleet[id], let spec = agent.agent else {
                unreadable.insert(id)
                continue
            }
            guard let launch = launch(of: agent, in: &plan, vault: vault) else { continue }
            var hold: AgentIntent.Hold?
            if holds.contains(id) {
                hold = .suspendedByUser
            } else if spec.suspend {
                hold = .suspended
            } else if let halt = halts[id] {
                hold = .halted(reason: "BudgetExceeded", message: halt.message)
                resumptions[id] = halt.resumesAt
            }
            intents[id] = AgentIntent(launch: launch, restartPolicy: spec.runtime.restartPolicy, hold: hold)
        }
        for id in Set(agents.keys).union(generations.keys).union(unreadable) {
            var state = agents[id] ?? AgentState(record: SupervisionRecord(agent: id, node: nodeStamp))
            let before = state.fingerprint
            state.intent = unreadable.contains(id) ? nil : intents[id]
            state.generation = unreadable.contains(id) ? nil : generations[id]
            state.unreadable = unreadable.contains(id)
            state.resumesAt = resumptions[id]
            if state.generation != nil || state.unreadable { state.forgotten = false }
            if state.unreadable {
                // Left as it is: its manifest cannot say what it should be.
                let reason = "Unreadable"
                let message = "the stored manifest cannot be read"
                state.status = ResourceStatus(
                    conditions: [
                        .init(type: ResourceStatus.ready, status: .false, reason: reason, message: message),
                        .init(type: ResourceStatus.stalled, status: .true, reason: reason, message: message),
                    ], observedGeneration: nil, updatedAt: now)
            } else if state.fingerprint != before {
                queue.add(id)
            }
            agents[id] = state
        }
    }

    /// Hands the gateway the fleet and the tokens of the processes that run, and of those
    /// `starting` (their digests, by agent: handed before the spawn, since a process may
    /// call the gateway the moment it runs); a stopped process's token, or one whose spawn
    /// failed, stops working with the next drain.
    private func publish(now: Timestamp, starting: [ResourceID: String] = [:]) {
        releaseEndedClaims(now: now)
        guard let gateway else { return }
        var tokens: [ResourceID: String] = [:]
        for (id, state) in agents where state.record.process != nil {
            if let digest = state.record.tokenDigest { tokens[id] = digest }
        }
        tokens.merge(starting) { _, new in new }
        let serial = plan?.serial ?? 0
        if let published, published.plan == serial, published.tokens == tokens { return }
        gateway.update(fleet: fleet, tokens: tokens, now: now)
        published = (serial, tokens)
    }

    /// Gives up at once the run steps claimed by agent processes that ended (exited,
    /// stopped, or replaced by a new process, here or, after a node failed, elsewhere),
    /// instead of leaving them Running until their lease lapses. The first time, a
    /// recorded process that is not alive any more (it died while no controller
    /// watched) counts as one that ended.
    private func releaseEndedClaims(now: Timestamp) {
        guard let runs = store as? any RunStore else { return }
        var live: [ResourceID: String] = [:]
        for (id, state) in agents where state.alive || state.stopping {
            if let digest = state.record.tokenDigest { live[id] = digest }
        }
        let before = claimants ?? agents.compactMapValues(\.record.tokenDigest)
        if before == live, claimants != nil { return }
        var ended: [ResourceID: RunEngine.EndedClaimants] = [:]
        for id in Set(before.keys).union(live.keys) {
            if let gone = RunEngine.endedClaimants(before: before[id], now: live[id]) { ended[id] = gone }
        }
        do {
            for event in try RunOperations(store: runs).releaseEndedClaims(ended, now: now) {
                log(
                    ControllerEvent(
                        time: event.time, reason: event.kind == .warning ? .runWarning : .run, resource: event.resource,
                        message: "\(event.reason): \(event.message)"))
            }
            claimants = live
        } catch {
            // Compared again at the next pass; meanwhile the steps' leases still end them.
            emit(.error, message: "giving up the steps of agent processes that ended: \(error.message)")
        }
    }

    // MARK: Reconciling

    /// Reconciles every queued agent that is not being stopped; starts and stops come
    /// out of it in batches, and a started agent is looked at again at once (to report
    /// it Running). Each round's changes are written in one transaction.
    private func drain() {
        let began = ContinuousClock.now
        var rounds = 0
        // A start queues its agent again; a third round would only be a start that
        // failed at once, which waits for its backoff anyway.
        while rounds < 3 {
            let ids = queue.take(where: { agents[$0]?.stopping != true })
            if ids.isEmpty { break }
            rounds += 1
            let now = clock()
            var starts: [ResourceID] = []
            var stops: [StopOrder] = []
            for id in ids {
                configuration.onReconcile?(id)
                reconcile(id, now: now, starts: &starts, stops: &stops)
            }
            // Stops first: their signals need not wait for the spawns.
            stop(stops)
            start(starts, now: now)
            // The tokens `start` handed over for spawns that failed stop working.
            publish(now: now)
            persist(now: now)
        }
        if rounds == 0 && (writeFailed || !pendingEvents.isEmpty) { persist(now: clock()) }
        if rounds > 0 { configuration.onPass?(ContinuousClock.now - began) }
    }

    private struct StopOrder {
        var id: ResourceID
        var process: ProcessIdentity
        var grace: Duration
        var restart: Bool
    }

    private func reconcile(_ id: ResourceID, now: Timestamp, starts: inout [ResourceID], stops: inout [StopOrder]) {
        guard var state = agents[id], !state.unreadable else { return }
        var observation = state.record.observation(running: state.alive)
        if let process = state.record.process, state.alive, let exit = runtime.exitStatus(process) {
            observation = Reconciler.recordExit(exit, of: observation, at: now, backoff: configuration.backoff)
            configuration.onProcess?(process, false)
            state.alive = false
            state.watched = false
            state.jitter = random()
            emit(.exited, id, process, message: "\(process): \(exit)" + (runtime.exitNote(process).map { ": \($0)" } ?? ""))
        }
        let intent = state.intent
        if let intent { state.grace = intent.launch.process.gracePeriod }
        let decision = Reconciler.decide(intent, observation, now: now, backoff: configuration.backoff, random: state.jitter)
        if decision.phase == .crashLoopBackOff && decision.action == .none {
            if !state.backingOff { emit(.backOff, id, message: decision.message) }
            state.backingOff = true
        } else {
            // Any other decision (a start, too) ends the backoff: the next one is reported.
            state.backingOff = false
        }
        if let wait = intent?.launch.waiting, decision.action == .none, decision.reason == wait.reason {
            if state.waiting != wait.message { emit(.waiting, id, message: wait.message) }
            state.waiting = wait.message
        } else {
            state.waiting = nil
        }
        // Not meant to run (removed, held): a failed start no longer matters.
        if intent == nil || intent?.hold != nil { state.startError = nil }
        switch decision.action {
        case .none:
            break
        case .start:
            if intent != nil { starts.append(id) }
        case .stop(let process), .restart(let process):
            // Signalled here, before the event, the status and the rest of the batch:
            // the batch's stop task only waits for it. Handed no new task first: one claimed
            // as the process stops would be lost with it, an attempt spent on no work.
            if let digest = state.record.tokenDigest { gateway?.stopHandingTasks(to: [digest]) }
            runtime.terminate(process)
            let restart = if case .restart = decision.action { true } else { false }
            let reason: ControllerEvent.Reason =
                switch (restart, intent?.hold) {
                case (true, _): .restarting
                case (false, nil): intent == nil ? .removed : .stopping
                case (false, .suspended?), (false, .suspendedByUser?): .suspended
                case (false, .halted?): .halted
                }
            emit(reason, id, process, message: "\(process): \(elsewhere.contains(id) ? elsewhereReason : decision.message)")
            state.stopping = true
            var grace = state.grace ?? configuration.defaultGrace
            if let cap = nodeGate.withLock({ $0.graceCap }) { grace = min(grace, cap) }
            stops.append(StopOrder(id: id, process: process, grace: grace, restart: restart))
        }
        state.record = SupervisionRecord(agent: id, observation: observation, tokenDigest: state.record.tokenDigest, node: nodeStamp)
        state.retryAt = decision.requeueAt
        if let generation = state.generation {
            var conditions = [
                ResourceStatus.Condition(
                    type: ResourceStatus.ready, status: decision.phase == .running ? .true : .false, reason: decision.reason,
                    message: "\(decision.phase.rawValue): \(decision.message)")
            ]
            if let stalled = state.startError {
                conditions.append(.init(type: ResourceStatus.stalled, status: .true, reason: "StartFailed", message: stalled))
            }
            if let launch = intent?.launch {
                // What confines it (or would): describe shows it. Asked once per launch
                // (for a sandbox it reads the host's cgroup controllers).
                if state.confinement?.hash != launch.hash {
                    state.confinement = (launch.hash, runtime.confinement(of: launch.process))
                }
                let process = launch.process
                conditions.append(
                    .init(
                        type: Self.sandboxed, status: process.sandbox == nil ? .false : .true,
                        reason: process.sandbox == nil ? "Unconfined" : "Strict", message: state.confinement?.text ?? ""))
            }
            state.status = ResourceStatus(conditions: conditions, observedGeneration: generation, updatedAt: now)
        }
        agents[id] = state
    }

    /// Starts the agents side by side (a spawn waits for its child's execve, which
    /// under load waits for the scheduler: a few at once overlap those waits), and
    /// records each in order: their records are written together, by the drain's write
    /// that follows at once; each is queued again to report what came of it.
    private func start(_ ids: [ResourceID], now: Timestamp) {
        var launches: [(id: ResourceID, token: String, spec: ProcessSpec?, error: RuntimeError?)] = []
        for id in ids {
            guard let intent = agents[id]?.intent else { continue }
            do {
                // Made here, one after another, rather than on the spawning threads: the
                // directories of one parent are created one at a time by the kernel anyway,
                // and done first they overlap the end of the apply instead of the spawns.
                let process = intent.launch.process
                try Self.makeDirectory(process.workingDirectory, below: configuration.stateDirectory)
                // The log's too, so the runtime's own look finds it: made here, below the state.
                if let slash = process.logFile.lastIndex(of: "/") {
                    try Self.makeDirectory(String(process.logFile[..<slash]), below: configuration.stateDirectory)
                }
                let token = Self.newToken()
                var spec = intent.launch.process(token: token)
                // Which node started it: a node's guard finds by these the agents it must
                // kill, even one spawned just before the node died, before it was tracked.
                if let node = configuration.node {
                    spec.environment += [(AgentLaunch.nodeVariable, node), (AgentLaunch.nodeStateVariable, configuration.stateDirectory)]
                }
                launches.append((id, token, spec, nil))
            } catch {
                launches.append((id, "", nil, error))
            }
        }
        var starting: [ResourceID: String] = [:]
        for launch in launches where launch.spec != nil { starting[launch.id] = AgentToken.digest(launch.token) }
        publish(now: now, starting: starting)
        let runtime = self.runtime
        let specs = launches.map(\.spec)
        let spawned = Self.concurrently(specs.count) { index -> Result<ProcessIdentity, RuntimeError>? in
            guard let spec = specs[index] else { return nil }
            do throws(RuntimeError) {
                return .success(try runtime.start(spec))
            } catch {
                return .failure(error)
            }
        }
        for (launch, result) in zip(launches, spawned) {
            let id = launch.id
            guard var state = agents[id], let intent = state.intent else { continue }
            var observation = state.record.observation(running: state.alive)
            switch result ?? .failure(launch.error ?? RuntimeError("cannot start agent \(id)")) {
            case .success(let process):
                configuration.onProcess?(process, true)
                state.record.tokenDigest = starting[id]
                observation = Reconciler.recordStart(process, launchHash: intent.launch.hash, of: observation, at: now)
                state.alive = true
                state.watched = watch(id, process)
                state.startError = nil
                emit(.started, id, process, message: "\(process)")
            case .failure(let error):
                state.startError = error.description
                emit(.failedToStart, id, message: error.description)
                observation = Reconciler.recordFailedStart(
                    launchHash: intent.launch.hash, of: observation, at: now, backoff: configuration.backoff)
                state.jitter = random()
            }
            state.record = SupervisionRecord(agent: id, observation: observation, tokenDigest: state.record.tokenDigest, node: nodeStamp)
            agents[id] = state
            queue.add(id)
        }
    }

    /// How many spawns run at once.
    static let spawnWidth = 4
    /// Queues of their own (each its own thread while it works), so that blocking spawns
    /// never occupy the cooperative pool or the global queues' few threads.
    private static let spawners = (0..<spawnWidth).map { DispatchQueue(label: "orl.spawn.\($0)") }

    /// `body(0..<count)` on up to `spawnWidth` threads; blocks until all are done and
    /// returns the results in order.
    static func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
        guard count > 1 else { return (0..<count).map(body) }
        let next = Mutex(0)
        let results = Mutex<[T?]>(Array(repeating: nil, count: count))
        let group = DispatchGroup()
        for queue in spawners.prefix(count) {
            queue.async(group: group) {
                while true {
                    let index = next.withLock { next in
                        defer { next += 1 }
                        return next
                    }
                    guard index < count else { return }
                    let result = body(index)
                    results.withLock { $0[index] = result }
                }
            }
        }
        group.wait()
        return results.withLock { $0 }.map { $0! }
    }

    /// Signals every process of the batch at once; one task waits for them all and
    /// reports each as it is gone.
    private func stop(_ orders: [StopOrder]) {
        guard !orders.isEmpty else { return }
        let key = nextStopTask
        nextStopTask += 1
        let byProcess = Dictionary(orders.map { ($0.process, $0) }, uniquingKeysWith: { first, _ in first })
        // Detached: the signals go out at once, not after this drain's write.
        stopTasks[key] = Task.detached { [runtime] in
            await runtime.stop(orders.map { ($0.process, $0.grace) }) { ended in
                await self.stopped(ended.compactMap { entry in byProcess[entry.process].map { ($0.id, entry.process, entry.exit) } })
            }
            await self.stopTaskEnded(key)
        }
    }

    private func stopTaskEnded(_ key: Int) { stopTasks[key] = nil }

    private func stopped(_ ended: [(id: ResourceID, process: ProcessIdentity, exit: ProcessExit?)]) {
        for (id, process, exit) in ended { stopped(id, process, exit: exit) }
    }

    private func stopped(_ id: ResourceID, _ process: ProcessIdentity, exit: ProcessExit?) {
        emit(.stopped, id, process, message: "\(process)\(exit.map { ": \($0)" } ?? "")")
        configuration.onProcess?(process, false)
        guard var state = agents[id] else { return }
        state.stopping = false
        if state.record.process == process {
            state.alive = false
            state.watched = false
            // A deliberate stop is no crash: the process is forgotten, not exited.
            state.record.process = nil
        }
        agents[id] = state
        inbox.post(.stopFinished(id))
    }

    /// One write for the round: changed supervision records and statuses, and the
    /// lifecycle events so far.
    private func persist(now: Timestamp) {
        // A removed agent whose process is gone needs no record any more.
        for (id, state) in agents
        where state.generation == nil && !state.unreadable && !state.alive && !state.stopping && state.record.process == nil
            && !queue.contains(id)
        {
            // On a node, an agent placed elsewhere is forgotten here, its record left to
            // the node that runs it now.
            if state.writtenRecord == nil || elsewhere.contains(id) {
                agents[id] = nil
            } else {
                agents[id]?.forgotten = true
            }
        }
        var records: [SupervisionRecord] = []
        var forgotten: [ResourceID] = []
        var statuses: [(ResourceID, ResourceStatus)] = []
        for (id, state) in agents {
            if state.forgotten {
                forgotten.append(id)
                continue
            }
            if state.writtenRecord != state.record { records.append(state.record) }
            if let status = state.status, state.generation != nil || state.unreadable,
                state.writtenConditions.map({ Self.sameConditions($0, status.conditions) }) != true
            {
                statuses.append((id, status))
            }
        }
        let events = pendingEvents
        guard !records.isEmpty || !forgotten.isEmpty || !statuses.isEmpty || !events.isEmpty else {
            writeFailed = false
            return
        }
        // A node without a lease writes nothing: what it would write is stale by then.
        let lease = nodeGate.withLock { $0.lease }
        if configuration.node != nil && lease == nil {
            writeFailed = false
            return
        }
        do {
            try store.write { writer throws(StoreError) in
                if let lease { try writer.requireLease(lease) }
                for event in events { try writer.append(event) }
                for record in records { try writer.putSupervision(record) }
                for id in forgotten { try writer.deleteSupervision(for: id) }
                for (id, entry) in statuses {
                    guard try writer.resource(id) != nil else { continue }
                    var status = entry
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
            writeFailed = false
            pendingEvents.removeFirst(events.count)
            for record in records { agents[record.agent]?.writtenRecord = record }
            for id in forgotten { agents[id] = nil }
            for (id, status) in statuses { agents[id]?.writtenConditions = status.conditions }
        } catch {
            emit(.error, message: "writing the state: \(error.description)")
            writeFailed = true
        }
    }

    private static func sameConditions(_ a: [ResourceStatus.Condition], _ b: [ResourceStatus.Condition]) -> Bool {
        a.map { [$0.type, $0.status.rawValue, $0.reason, $0.message] } == b.map { [$0.type, $0.status.rawValue, $0.reason, $0.message] }
    }

    // MARK: Stopping everything

    private func stopEverything() async {
        while let (key, task) = stopTasks.first {
            await task.value
            stopTasks[key] = nil
        }
        var orders: [StopOrder] = []
        for (id, state) in agents.sorted(by: { $0.key < $1.key }) where state.alive {
            guard let process = state.record.process else { continue }
            emit(.stopping, id, process, message: "\(process): the controller is stopping")
            if let digest = state.record.tokenDigest { gateway?.stopHandingTasks(to: [digest]) }
            agents[id]?.stopping = true
            orders.append(StopOrder(id: id, process: process, grace: state.grace ?? configuration.defaultGrace, restart: false))
        }
        let byProcess = Dictionary(orders.map { ($0.process, $0) }, uniquingKeysWith: { first, _ in first })
        await runtime.stop(orders.map { ($0.process, $0.grace) }) { ended in
            await self.stopped(ended.compactMap { entry in byProcess[entry.process].map { ($0.id, entry.process, entry.exit) } })
        }
        let now = clock()
        for (id, state) in agents where state.status != nil {
            agents[id]?.status?.conditions = [
                .init(type: ResourceStatus.ready, status: .false, reason: "ControllerStopped", message: "Stopped: the controller stopped")
            ]
        }
        persist(now: now)
    }

    // MARK: Helpers

    /// The node and lease generation a record is stamped with (nil: not a node, or one
    /// without a lease, which writes nothing).
    private var nodeStamp: Assignment? {
        guard configuration.node != nil, let lease = nodeGate.withLock({ $0.lease }) else { return nil }
        return Assignment(node: lease.node, generation: lease.generation)
    }

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

    /// mkdir -p, mode 0700; below `root` (the state directory) only, when `path` is in it:
    /// a state removed under the controller (the tests' temporary ones, a user's) is not
    /// made again, as an empty shell, by the start of an agent in the moment before the
    /// controller finds it gone.
    static func makeDirectory(_ path: String, below root: String? = nil) throws(RuntimeError) {
        // Its parent exists (every agent's but the first of a namespace): one mkdir, not one
        // per component. Anything else is walked from the top, so that an error names the
        // component that failed.
        if mkdir(path, 0o700) == 0 || errno == EEXIST { return }
        var prefix = path.hasPrefix("/") ? "/" : ""
        var rest = Substring(path)
        // The state directory, when `path` is in it: where the walk starts, never made.
        var state: String?
        if let root, !root.isEmpty {
            let top = root.hasSuffix("/") ? root : root + "/"
            if path.hasPrefix(top) {
                (prefix, rest, state) = (top, path.dropFirst(top.count), root)
            }
        }
        for component in rest.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                if let state, errno == ENOENT, access(state, F_OK) != 0 { throw RuntimeError("the state directory \(state) is gone") }
                throw RuntimeError("cannot create the directory \(prefix): \(String(cString: strerror(errno)))")
            }
            prefix += "/"
        }
    }
}

/// What a node may run, as its `NodeMembership` found it.
public struct NodeGate: Sendable, Equatable {
    /// The lease the node holds (nil: none; it runs nothing and writes nothing).
    public var lease: NodeLease?
    /// Assigned to it under `lease`: one that runs here keeps running.
    public var assigned: Set<ResourceID>
    /// Assigned to it and free to start (`Placement.mayStart`).
    public var runnable: Set<ResourceID>
    /// The lease is about to lapse: stops get at most this grace period.
    public var graceCap: Duration?
    /// Why the node runs nothing (no lease), as the stops' events say.
    public var reason: String?

    public init(
        lease: NodeLease?, assigned: Set<ResourceID> = [], runnable: Set<ResourceID> = [], graceCap: Duration? = nil, reason: String? = nil
    ) {
        self.lease = lease
        self.assigned = assigned
        self.runnable = runnable
        self.graceCap = graceCap
        self.reason = reason
    }

    public static let nothing = NodeGate(lease: nil)
}

/// Everything the controller knows of one agent, in one place.
struct AgentState {
    /// What is known of its process, as stored.
    var record: SupervisionRecord
    /// The record as last written (nil: none is stored).
    var writtenRecord: SupervisionRecord?
    /// The recorded process is believed to run.
    var alive = false
    /// The runtime announces the process's end: it is not looked at.
    var watched = false
    /// A stop is in flight: the agent waits in the queue until it has finished.
    var stopping = false
    /// What should run (nil: not applied, or no launch can be made of it).
    var intent: AgentIntent?
    /// The applied manifest's generation (nil: not applied).
    var generation: Int?
    /// Its manifest cannot be read back: left as it is.
    var unreadable = false
    /// The grace period of its last intent.
    var grace: Duration?
    /// Drawn at each exit, so that a backoff does not move from one look to the next.
    var jitter = 0.5
    /// When a budget halt ends.
    var resumesAt: Timestamp?
    /// When its decision asked to be looked at again (a backoff ends).
    var retryAt: Timestamp?
    var status: ResourceStatus?
    /// The conditions as last written.
    var writtenConditions: [ResourceStatus.Condition]?
    /// Its BackOff has been reported (once per exit).
    var backingOff = false
    /// Why it waits, as last reported: reported again only when it changes.
    var waiting: String?
    /// Why its last start failed, until one succeeds: it stays Stalled meanwhile.
    var startError: String?
    /// Removed, and its process gone: its record is deleted with the next write.
    var forgotten = false
    /// What confines the process of the launch with this hash, as the runtime said.
    var confinement: (hash: String, text: String)?

    /// What of the intent a change of makes the agent be reconciled again.
    var fingerprint: Fingerprint {
        Fingerprint(
            hash: intent?.launch.hash, waiting: intent?.launch.waiting, restartPolicy: intent?.restartPolicy.rawValue, hold: intent?.hold,
            generation: generation, unreadable: unreadable)
    }

    struct Fingerprint: Hashable {
        var hash: String?
        var waiting: AgentLaunch.Waiting?
        var restartPolicy: String?
        var hold: AgentIntent.Hold?
        var generation: Int?
        var unreadable: Bool
    }
}

/// Keys due to be processed, each once however often it was added, as client-go's work
/// queue: a key that is busy (an agent being stopped) stays until it is free, so no key
/// is ever processed twice at once.
public struct WorkQueue<Key: Hashable & Comparable>: Sendable where Key: Sendable {
    private var keys: Set<Key> = []

    public init() {}

    /// Adds the key; one already queued is not added again.
    public mutating func add(_ key: Key) { keys.insert(key) }

    public func contains(_ key: Key) -> Bool { keys.contains(key) }

    public var count: Int { keys.count }

    /// Whether a key is ready (`ready` says which are not busy).
    public func hasReady(where ready: (Key) -> Bool) -> Bool { keys.contains(where: ready) }

    /// The ready keys, in order, taken out of the queue; busy ones stay.
    public mutating func take(where ready: (Key) -> Bool) -> [Key] {
        let taken = keys.filter(ready)
        keys.subtract(taken)
        return taken.sorted()
    }
}
