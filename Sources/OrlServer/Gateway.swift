import AsyncHTTPClient
import Hummingbird
import NIOCore
public import OrlCore
import Synchronization

/// The model gateway: agents call it as they would call OpenAI, with their own orl token
/// as API key. Each call is authenticated, checked against the agent's policies (fail
/// closed), reserved against its budgets at its worst case, forwarded with the provider
/// key injected (or answered by the simulated provider), settled on the reported usage
/// and written to the ledger.
///
/// The table and the meter sit behind one lock, held for microseconds: a reservation is
/// a few additions, never I/O. Ledger rows are written in batches by `run`, so a call
/// never waits on SQLite; at most the last `flushInterval` of rows is lost to a crash.
/// What a call needs from the state (the table, tokens, provider keys) is pushed to it
/// by the controller and the daemon, never read on the call's path.
public final class Gateway: ModelGateway {
    public struct Configuration: Sendable {
        /// Requests larger than this are refused (413).
        public var maxRequestBytes = 8 << 20
        public var maxResponseBytes = 64 << 20
        public var flushInterval: Duration = .milliseconds(50)

        public init() {}
    }

    struct State {
        var table = CallerTable()
        /// Token digests of processes being stopped (`stopHandingTasks`): no new task for them.
        var stopping: Set<String> = []
        var meter = BudgetMeter()
        /// The tasks agents hold, as the agents' API saw them: what calls are attributed to.
        var tasks = TasksInFlight()
        var restored = false
        var pendingEntries: [LedgerEntry] = []
        var pendingEvents: [StoreEvent] = []
    }

    let state = Mutex(State())
    let store: any StateStore
    /// Where calls are also reserved when several gateways serve one state (PostgreSQL):
    /// its conditional updates make the budgets exact across them. nil: the meter alone
    /// (one gateway per state, which never waits on the store on a call's path).
    let reservations: (any BudgetReservations)?
    /// This gateway as its holds in the store name it (unique per process), the node it
    /// serves under its current lease, how many of its holds are not yet settled, and the
    /// settlements the store refused, tried again (`keepSharedHolds`).
    let holdOwner: String
    let holdNode = Mutex<(node: String, generation: Int64)?>(nil)
    let openHolds = Atomic<Int>(0)
    let unsettled = Mutex<[(hold: Int64, cost: Charge?)]>([])
    let client: HTTPClient
    let configuration: Configuration
    let providerKey: @Sendable (SecretID) -> String?
    let clock: @Sendable () -> Timestamp
    let log: @Sendable (ControllerEvent) -> Void
    /// Called when a budget is first exhausted, so that the controller halts at once.
    let onExhausted: @Sendable () -> Void
    /// Metrics and spans of every call through the controller's API.
    public let telemetry: Telemetry
    private let requestNumbers = Atomic<Int>(0)
    private let prefix: String
    /// Rings when rows wait to be written: the ledger loop sleeps while there are none.
    private let pending = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    /// `providerKey` reads a secret's value from the vault.
    public init(
        store: any StateStore, configuration: Configuration = Configuration(), providerKey: @escaping @Sendable (SecretID) -> String?,
        clock: @escaping @Sendable () -> Timestamp, log: @escaping @Sendable (ControllerEvent) -> Void,
        onExhausted: @escaping @Sendable () -> Void, telemetry: Telemetry = .off, reservations: (any BudgetReservations)? = nil
    ) {
        self.telemetry = telemetry
        self.store = store
        self.reservations = reservations
        self.configuration = configuration
        self.providerKey = providerKey
        self.clock = clock
        self.log = log
        self.onExhausted = onExhausted
        self.client = Self.sharedClient
        self.prefix = "orl-" + String(UInt32.random(in: 0...UInt32.max), radix: 16) + "-"
        self.holdOwner = Self.newHoldOwner()
    }

    /// One client for the process, never shut down: a gateway lives as long as its
    /// controller, and shutting a client down from the wrong thread (the last release
    /// may happen on an event loop) is a crash.
    static let sharedClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    // MARK: ModelGateway

    public func update(fleet: Fleet, tokens: [ResourceID: String], now: Timestamp) {
        // Worked out before the lock: calls wait for nothing but the swap.
        let table = CallerTable(fleet: fleet, tokens: tokens)
        let coverage = BudgetMeter.Coverage(fleet)
        let restore: [(BudgetSpec.Window, Timestamp, [ResourceID: Charge])]? =
            state.withLock { $0.restored } ? nil : restoreSpend(now: now)
        // The previous table and coverage are released here, after the lock.
        let previous = state.withLock { state in
            var replaced = table
            swap(&state.table, &replaced)
            // A process's token is its own: once it left the table it never comes back.
            state.stopping.formIntersection(tokens.values)
            let coverage = state.meter.configure(coverage)
            if let restore, !state.restored {
                for (window, start, spend) in restore {
                    for (agent, charge) in spend { state.meter.restore(agent, window, at: start, charge) }
                }
                state.restored = true
            }
            return (replaced, coverage)
        }
        _ = previous
    }

    public func stopHandingTasks(to digests: Set<String>) {
        guard !digests.isEmpty else { return }
        state.withLock { $0.stopping.formUnion(digests) }
    }

    /// Whether the process with this token digest may be handed a new task: it still runs
    /// (its token is in the table) and is not being stopped. A poll that outlives its
    /// process, or one a stop overtakes, claims nothing. nil: a claim tied to no process.
    func takesTasks(_ digest: String?) -> Bool {
        guard let digest else { return true }
        return state.withLock { $0.table.caller(digest: digest) != nil && !$0.stopping.contains(digest) }
    }

    /// The MCP servers (Tools of type mcp) of the fleet last published.
    func mcpServers() -> [CallerTable.ToolRoute] { state.withLock { $0.table.mcpServers } }

    /// Worked out on a copy of the meter, after the lock: with thousands of Budgets it
    /// takes milliseconds to a second, which every call (and every connection of the
    /// event loop the call runs on) would wait for.
    public func halts(now: Timestamp) -> [ResourceID: BudgetMeter.Halt] {
        state.withLock { $0.meter }.halts(now: now)
    }

    /// What `orlctl budget status` shows of the running controller (on a copy, as `halts`).
    public func budgetStatus(now: Timestamp) -> [BudgetMeter.LimitStatus] {
        state.withLock { $0.meter }.status(now: now)
    }

    /// The ledger's spend in the current day and month, read once, at the first update.
    private func restoreSpend(now: Timestamp) -> [(BudgetSpec.Window, Timestamp, [ResourceID: Charge])]? {
        do {
            return try [BudgetSpec.Window.day, .month].map { window throws(StoreError) in
                let start = window.interval(containing: now).lowerBound
                return (window, start, try store.read { reader throws(StoreError) in try reader.spend(since: start) })
            }
        } catch {
            log(ControllerEvent(time: now, reason: .error, message: "reading the ledger: \(error.description)"))
            return nil
        }
    }

    // MARK: Writing the ledger

    /// Writes ledger rows and events in batches until cancelled, then once more: a
    /// batch is written `flushInterval` after its first row, and nothing wakes while no
    /// call is made. `flush` blocks on SQLite; the daemon runs this loop on an executor
    /// of its own (`write` runs each batch where it is given).
    public func run(write: (@Sendable () async -> Void)? = nil) async {
        for await _ in pending.stream {
            try? await Task.sleep(for: configuration.flushInterval)
            if let write { await write() } else { flush() }
        }
        if let write { await write() } else { flush() }
    }

    /// Writes the rows and events waiting, in one transaction (blocks on SQLite).
    public func flush() {
        let (entries, events) = state.withLock { state in
            defer {
                state.pendingEntries.removeAll(keepingCapacity: true)
                state.pendingEvents.removeAll(keepingCapacity: true)
            }
            return (state.pendingEntries, state.pendingEvents)
        }
        guard !entries.isEmpty || !events.isEmpty else { return }
        do {
            try store.write { writer throws(StoreError) in
                try writer.append(entries)
                for event in events { try writer.append(event) }
            }
        } catch {
            // Kept for the next round rather than lost: spend must reach the ledger.
            state.withLock { state in
                state.pendingEntries.insert(contentsOf: entries, at: 0)
                state.pendingEvents.insert(contentsOf: events, at: 0)
            }
            pending.continuation.yield()
            log(ControllerEvent(time: clock(), reason: .error, message: "writing the ledger: \(error.description)"))
        }
    }

    /// Logs the event and queues it for the store with the next ledger write (for events
    /// that are part of a resource's life, such as a refused tool call).
    func note(_ event: ControllerEvent) {
        if let stored = event.storeEvent {
            state.withLock { $0.pendingEvents.append(stored) }
            pending.continuation.yield()
        }
        log(event)
    }

    // MARK: Tasks in flight

    /// The agent holds the task until `lease` (the agents' API saw it claimed or renewed).
    func hold(_ task: TaskID, agent: ResourceID, until lease: Timestamp) {
        state.withLock { $0.tasks.hold(task, agent: agent, until: lease) }
    }

    /// The agent answered the task, or was told it is no longer its.
    func release(_ task: TaskID, agent: ResourceID) {
        state.withLock { $0.tasks.release(task, agent: agent) }
    }

    /// What the store says is in flight (at the API's start), and forgetting old leases.
    func resetTasks(_ running: [StepRecord]) {
        let tasks = TasksInFlight(running)
        state.withLock { $0.tasks = tasks }
    }
    func pruneTasks(at now: Timestamp) { state.withLock { $0.tasks.prune(at: now) } }

    /// The task a call serves: the one the agent names with x-orl-run and x-orl-step, or
    /// its only task in flight; nil when it serves none (or names one it does not hold).
    func serving(_ agent: ResourceID, run: String?, step: String?, now: Timestamp) -> TaskID? {
        let held = state.withLock { $0.tasks.tasks(of: agent, at: now) }
        return try? TaskServing.choose(held, agent: agent, run: run, step: step).get()
    }

    func record(_ entry: LedgerEntry, notices: [BudgetMeter.Notice]) {
        let events = notices.map { notice in
            ControllerEvent(
                time: entry.time, reason: notice.kind == .exceeded ? .budgetExhausted : .budgetThreshold,
                resource: notice.account.budget, message: notice.message)
        }
        state.withLock { state in
            state.pendingEntries.append(entry)
            state.pendingEvents += events.compactMap(\.storeEvent)
        }
        pending.continuation.yield()
        for event in events { log(event) }
        if notices.contains(where: { $0.kind == .exceeded }) { onExhausted() }
    }

    func refused(_ refusal: BudgetMeter.Refusal, agent: ResourceID, now: Timestamp) {
        guard refusal.isFirst else { return }
        let event = ControllerEvent(
            time: now, reason: .budgetExhausted, resource: refusal.account.budget, message: "\(refusal.message) (call by \(agent))")
        state.withLock { $0.pendingEvents += [event.storeEvent].compactMap { $0 } }
        pending.continuation.yield()
        log(event)
        onExhausted()
    }

    func nextRequestID() -> String {
        prefix + String(requestNumbers.wrappingAdd(1, ordering: .relaxed).newValue)
    }
}
