import Foundation
import OrlController
import OrlCore
import OrlStore
import OrlTestSupport
import OrlYAML
import Synchronization
import Testing

/// The agent runtime as the controller sees it, with processes the test starts, ends
/// and inspects: no process is spawned. A test double, so it lives here, not in the
/// product.
final class FakeRuntime: AgentRuntime {
    struct Process {
        var spec: ProcessSpec
        var exit: ProcessExit?
        var stopped = false
    }

    private let state = Mutex<(next: Int32, processes: [ProcessIdentity: Process])>((1000, [:]))
    /// How many times the controller asked whether a process had ended.
    let looks = Tally()
    /// Whether it announces ends (`watch`), as the real runtime does with pidfds.
    let announces: Bool
    private let watchers = Mutex<[ProcessIdentity: @Sendable () -> Void]>([:])

    /// The sizes of the batches of stops asked for, in order.
    let stopBatches = Mutex<[Int]>([])
    /// The processes sent SIGTERM where their stop was decided (`terminate`), in order.
    let terminated = Mutex<[ProcessIdentity]>([])
    /// For each batch of stops: whether every process in it had been terminated first.
    let terminatedFirst = Mutex<[Bool]>([])
    /// While closed, stops wait (a grace period that takes its time).
    private let gate = Mutex<(closed: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

    /// Called with each spec as it is started, before the process exists.
    private let onStart: (@Sendable (ProcessSpec) -> Void)?
    /// The agents whose starts fail.
    let failing = Mutex<Set<String>>([])

    init(announces: Bool = false, onStart: (@Sendable (ProcessSpec) -> Void)? = nil) {
        self.announces = announces
        self.onStart = onStart
    }

    func closeGate() { gate.withLock { $0.closed = true } }

    func openGate() {
        let waiting = gate.withLock { gate in
            gate.closed = false
            defer { gate.waiting = [] }
            return gate.waiting
        }
        for continuation in waiting { continuation.resume() }
    }

    func stop(
        _ processes: [(process: ProcessIdentity, grace: Duration)],
        stopped: @escaping @Sendable ([(process: ProcessIdentity, exit: ProcessExit?)]) async -> Void
    ) async {
        stopBatches.withLock { $0.append(processes.count) }
        let signalled = Set(terminated.withLock { $0 })
        terminatedFirst.withLock { $0.append(processes.allSatisfy { signalled.contains($0.process) }) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = gate.withLock { gate -> Bool in
                if !gate.closed { return true }
                gate.waiting.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
        for (process, grace) in processes { await stopped([(process, await stop(process, grace: grace))]) }
    }

    func terminate(_ process: ProcessIdentity) { terminated.withLock { $0.append(process) } }

    func watch(_ process: ProcessIdentity, onExit: @escaping @Sendable () -> Void) -> Bool {
        guard announces else { return false }
        watchers.withLock { $0[process] = onExit }
        return true
    }

    private func announce(_ process: ProcessIdentity) { watchers.withLock { $0.removeValue(forKey: process) }?() }

    func start(_ spec: ProcessSpec) throws(RuntimeError) -> ProcessIdentity {
        onStart?(spec)
        if failing.withLock({ $0.contains(spec.agent.name) }) { throw RuntimeError("cannot start \(spec.agent.name)") }
        return state.withLock { state in
            state.next += 1
            let id = ProcessIdentity(pid: state.next, startTime: UInt64(state.next))
            state.processes[id] = Process(spec: spec)
            return id
        }
    }

    func isRunning(_ process: ProcessIdentity) -> Bool {
        state.withLock { $0.processes[process].map { $0.exit == nil } ?? false }
    }

    func exitStatus(_ process: ProcessIdentity) -> ProcessExit? {
        defer { looks.add() }
        return state.withLock { state in
            guard let known = state.processes[process] else { return .signaled(signal: 0) }
            return known.exit
        }
    }

    func stop(_ process: ProcessIdentity, grace: Duration) async -> ProcessExit? {
        defer { announce(process) }
        return state.withLock { state in
            state.processes[process]?.stopped = true
            if state.processes[process]?.exit == nil { state.processes[process]?.exit = .signaled(signal: 15) }
            return state.processes[process]?.exit
        }
    }

    /// The process ends on its own (a crash when `code` is not 0).
    func end(_ process: ProcessIdentity, code: Int32) {
        state.withLock { $0.processes[process]?.exit = .exited(code: code) }
        announce(process)
    }

    /// The processes of an agent, oldest first.
    func processes(of name: String) -> [(id: ProcessIdentity, process: Process)] {
        state.withLock { state in
            state.processes.filter { $0.value.spec.agent.name == name }.sorted { $0.key.pid < $1.key.pid }.map { ($0.key, $0.value) }
        }
    }

    func running(_ name: String) -> ProcessIdentity? {
        processes(of: name).last { $0.process.exit == nil }?.id
    }
}

/// The gateway as the controller sees it: keeps the tokens it was last handed.
final class RecordingGateway: ModelGateway {
    private let handed = Mutex<[ResourceID: String]>([:])
    var tokens: [ResourceID: String] { handed.withLock { $0 } }
    func update(fleet: Fleet, tokens: [ResourceID: String], now: Timestamp) { handed.withLock { $0 = tokens } }
    func stopHandingTasks(to digests: Set<String>) {}
    func halts(now: Timestamp) -> [ResourceID: BudgetMeter.Halt] { [:] }
}

/// The store, with its write transactions counted.
final class CountingStore: StateStore {
    let base: SQLiteStateStore
    let writes = Tally()
    init(_ base: SQLiteStateStore) { self.base = base }
    func read<T>(_ body: (any StateReader) throws(StoreError) -> T) throws(StoreError) -> T { try base.read(body) }
    func write<T>(_ body: (any StateWriter) throws(StoreError) -> T) throws(StoreError) -> T {
        writes.add()
        return try base.write(body)
    }
}

/// How many times each agent was reconciled.
final class Reconciles: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    func add(_ id: ResourceID) { counts.withLock { $0[id.name, default: 0] += 1 } }
    var all: [String: Int] { counts.withLock { $0 } }
}

/// Time as the test sets it.
final class TestClock: Sendable {
    private let time = Mutex(Timestamp(milliseconds: 1_795_161_600_000))
    var now: Timestamp { time.withLock { $0 } }
    func advance(_ duration: Duration) { time.withLock { $0 = $0.adding(duration) } }
}

/// The controller's events, for a test to wait on (not to sleep for).
final class EventLog: Sendable {
    private let state = Mutex<
        (
            events: [ControllerEvent], waiters: [(id: Int, match: @Sendable (ControllerEvent) -> Bool, CheckedContinuation<Void, Never>)],
            next: Int
        )
    >(([], [], 0))

    func record(_ event: ControllerEvent) {
        let ready = state.withLock { state in
            state.events.append(event)
            let matched = state.waiters.filter { $0.match(event) }
            state.waiters.removeAll { $0.match(event) }
            return matched.map(\.2)
        }
        for continuation in ready { continuation.resume() }
    }

    var lines: [String] { state.withLock { $0.events.map(\.textLine) } }

    /// Returns once an event matching `match` was logged (before or after the call).
    func wait(for match: @escaping @Sendable (ControllerEvent) -> Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.events.contains(where: match) { return true }
                state.next += 1
                state.waiters.append((state.next, match, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }
}

func fleet(_ agents: [String], suspended: Set<String> = []) -> String {
    var documents = [
        """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: small, contextWindow: 1000, maxOutputTokens: 100, pricing: {input: 0.1, output: 0.1}}]
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: everyone}
        spec:
          appliesTo: {agents: [\(agents.joined(separator: ", "))]}
          allow: {models: ["sim/*"]}
        """
    ]
    for name in agents {
        documents.append(
            """
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: \(name)}
            spec: {model: sim/small, suspend: \(suspended.contains(name)), runtime: {command: /bin/sleep, args: ["1000"]}}
            """)
    }
    return documents.joined(separator: "\n---\n")
}

func apply(_ yaml: String, to store: any StateStore, at now: Timestamp, codeRoot: String? = nil) throws {
    let report = ManifestValidation.validate([YAMLParser().parse(yaml, file: "fleet.yaml")])
    try #require(report.isValid, "\(report.diagnostics.filter { $0.severity == .error }.map(\.message))")
    _ = try ApplyOperation.apply(
        report.fleet, to: store, options: ApplyOptions(source: "test", appliedBy: "test", codeRoot: codeRoot), now: now)
}

/// A state directory under a fresh temporary directory, removed with the value.
final class TemporaryState {
    let root: String
    var directory: String { root + "/state" }
    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("orl-daemon-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: root) }
}

/// The controller in process: a real store (SQLite in a temporary directory), a fake
/// runtime, the test's clock and a fixed jitter. Passes are driven by the test
/// (`reconcileNow`) or by the loop, waited on through its events, never by sleeping.
@Suite struct ControllerTests {
    let state: TemporaryState
    let store: SQLiteStateStore
    let runtime = FakeRuntime()
    let clock = TestClock()
    let events = EventLog()

    init() throws {
        state = try TemporaryState()
        store = try SQLiteStateStore(directory: state.directory)
    }

    func controller(
        runtime: FakeRuntime? = nil, store: (any StateStore)? = nil, configure: (inout Controller.Configuration) -> Void = { _ in }
    ) -> Controller {
        var configuration = Controller.Configuration(stateDirectory: state.directory)
        configuration.defaultGrace = .milliseconds(10)
        configure(&configuration)
        let events = self.events
        let clock = self.clock
        return Controller(
            store: store ?? self.store, runtime: runtime ?? self.runtime, configuration: configuration, log: { events.record($0) },
            clock: { clock.now },
            random: { 0.5 })
    }

    func status(_ name: String) throws -> ResourceStatus? {
        try store.read { reader throws(StoreError) in try reader.status(for: ResourceID(kind: "Agent", name: name)) }
    }

    @Test func startsEveryAppliedAgentAndRecordsItsProcess() async throws {
        try apply(fleet(["a", "b"]), to: store, at: clock.now)
        let controller = controller()
        await controller.reconcileNow()
        let a = try #require(runtime.running("a"))
        #expect(runtime.running("b") != nil)
        let record = try store.read { reader throws(StoreError) in try reader.supervision(for: ResourceID(kind: "Agent", name: "a")) }
        #expect(record?.process == a)
        #expect(record?.tokenDigest != nil)
        // The next pass sees it running and says so in the status.
        await controller.reconcileNow()
        #expect(try status("a")?.condition(ResourceStatus.ready)?.status == .true)
        #expect(runtime.processes(of: "a").count == 1)
    }

    /// A process may call the gateway the moment it runs (the API's first long poll, a
    /// model call): its token must already be known then. A failed spawn's is withdrawn.
    @Test func aProcessTokenIsKnownToTheGatewayBeforeItsSpawnAndWithdrawnWhenTheSpawnFails() async throws {
        let gateway = RecordingGateway()
        let knownAtSpawn = Mutex<[String: Bool]>([:])
        let runtime = FakeRuntime(onStart: { spec in
            let token = spec.environment.first { $0.name == "ORL_TOKEN" }?.value ?? ""
            knownAtSpawn.withLock { $0[spec.agent.name] = gateway.tokens[spec.agent] == AgentToken.digest(token) }
        })
        runtime.failing.withLock { $0 = ["b"] }
        try apply(fleet(["a", "b"]), to: store, at: clock.now)
        let controller = Controller(
            store: store, runtime: runtime, gateway: gateway, configuration: Controller.Configuration(stateDirectory: state.directory),
            log: { _ in }, clock: { [clock] in clock.now }, random: { 0.5 })
        await controller.reconcileNow()
        #expect(knownAtSpawn.withLock { $0 } == ["a": true, "b": true])
        let a = ResourceID(kind: "Agent", name: "a")
        #expect(gateway.tokens.keys.sorted { $0.name < $1.name } == [a])
        let record = try store.read { reader throws(StoreError) in try reader.supervision(for: a) }
        #expect(record?.tokenDigest == gateway.tokens[a])
    }

    @Test func aCrashIsRestartedAfterItsBackoffByTheInjectedClock() async throws {
        try apply(fleet(["a"]), to: store, at: clock.now)
        let controller = controller()
        await controller.reconcileNow()
        let first = try #require(runtime.running("a"))
        runtime.end(first, code: 3)
        await controller.reconcileNow()
        #expect(events.lines.contains { $0.contains("exited") && $0.contains("exited with code 3") }, "\(events.lines)")
        #expect(runtime.running("a") == nil)
        // Backoff: 1 s, with the fixed jitter's factor of 1. Not before...
        clock.advance(.milliseconds(900))
        await controller.reconcileNow()
        #expect(runtime.running("a") == nil)
        // ...then once.
        clock.advance(.seconds(1))
        await controller.reconcileNow()
        await controller.reconcileNow()
        #expect(runtime.processes(of: "a").count == 2)
        #expect(runtime.running("a") != nil)
    }

    @Test func aNewControllerAdoptsWhatRunsInsteadOfStartingItAgain() async throws {
        try apply(fleet(["a"]), to: store, at: clock.now)
        await controller().reconcileNow()
        let process = try #require(runtime.running("a"))
        // The first controller is gone (killed: it stopped nothing); a second one starts.
        await controller().reconcileNow()
        #expect(runtime.processes(of: "a").count == 1)
        #expect(events.lines.contains { $0.contains("adopted") && $0.contains("\(process)") }, "\(events.lines)")
    }

    @Test func aSuspendedOrHeldAgentIsStopped() async throws {
        try apply(fleet(["a", "b"]), to: store, at: clock.now)
        let controller = controller()
        await controller.reconcileNow()
        let a = try #require(runtime.running("a"))
        let b = try #require(runtime.running("b"))
        try apply(fleet(["a", "b"], suspended: ["a"]), to: store, at: clock.now)
        let hold = UserHold(agent: ResourceID(kind: "Agent", name: "b"), at: clock.now, by: "test")
        try store.write { writer throws(StoreError) in try writer.putHold(hold) }
        await controller.reconcileNow()
        await events.wait { $0.reason == .stopped && $0.pid == a.pid }
        await events.wait { $0.reason == .stopped && $0.pid == b.pid }
        #expect(runtime.processes(of: "a").allSatisfy { $0.process.stopped })
        #expect(runtime.processes(of: "b").allSatisfy { $0.process.stopped })
    }

    /// The loop: a store change posted to its inbox (as the change feed does) is one
    /// pass; a stop request stops every agent and returns.
    @Test func theLoopReconcilesWhenToldTheStoreChangedAndStopsEverythingOnRequest() async throws {
        try apply(fleet(["a"]), to: store, at: clock.now)
        let controller = controller()
        let loop = Task { await controller.run() }
        await events.wait { $0.reason == .started && $0.resource?.name == "a" }
        try apply(fleet(["a", "b"]), to: store, at: clock.now)
        controller.inbox.post(.storeChanged)
        await events.wait { $0.reason == .started && $0.resource?.name == "b" }
        controller.wake("test")
        await events.wait { $0.reason == .woken && $0.message == "test" }
        controller.requestStop()
        await loop.value
        #expect(runtime.running("a") == nil)
        #expect(runtime.running("b") == nil)
        #expect(try status("a")?.condition(ResourceStatus.ready)?.reason == "ControllerStopped")
    }

    /// A pass that finds every agent as it should be writes nothing, so that the
    /// controller's own pass never reads as a change of the store.
    @Test func aPassOverUnchangedAgentsWritesNothing() async throws {
        try apply(fleet(["a", "b", "c"]), to: store, at: clock.now)
        let controller = controller()
        await controller.reconcileNow()
        await controller.reconcileNow()
        #expect(try status("a")?.condition(ResourceStatus.ready)?.status == .true)
        let observer = try SQLiteStateStore(directory: state.directory)
        let before = try observer.changeMarker()
        for _ in 0..<3 {
            clock.advance(.seconds(40))
            await controller.reconcileNow()
        }
        #expect(try observer.changeMarker() == before)
    }

    /// An idle fleet costs no pass: the loop looks at its processes every poll interval,
    /// and one that still runs is no reason to reconcile (a full pass at every look was
    /// a fifth of a core for 100 idle agents), nor to write anything.
    @Test func anIdleFleetIsLookedAtWithoutPassesOrWrites() async throws {
        let names = (0..<20).map { "agent-\($0)" }
        try apply(fleet(names), to: store, at: clock.now)
        let passes = Tally()
        let controller = controller {
            $0.pollInterval = .milliseconds(2)
            $0.resyncInterval = .seconds(3600)
            $0.onPass = { _ in passes.add() }
        }
        let observer = try SQLiteStateStore(directory: state.directory)
        let loop = Task { await controller.run() }
        for name in names { await events.wait { $0.reason == .started && $0.resource?.name == name } }
        // The pass that reports them Running, then two looks at every process.
        await runtime.looks.wait(atLeast: runtime.looks.count + 3 * names.count)
        let (converged, marker) = (passes.count, try observer.changeMarker())
        #expect(try status("agent-0")?.condition(ResourceStatus.ready)?.status == .true)
        // Five more looks at every process.
        await runtime.looks.wait(atLeast: runtime.looks.count + 5 * names.count)
        #expect(passes.count == converged)
        #expect(try observer.changeMarker() == marker)
        controller.requestStop()
        await loop.value
    }

    /// Launches are kept from pass to pass while the store stays the same, but the files
    /// an agent's arguments name are looked at again: one that appears since is used.
    @Test func aKeptLaunchIsMadeAgainWhenAFileItsArgumentsNameAppears() async throws {
        let source = state.root + "/src"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let yaml = fleet(["a"]).replacingOccurrences(
            of: "command: /bin/sleep, args: [\"1000\"]", with: "command: python3, args: [agent.py]")
        try apply(yaml, to: store, at: clock.now, codeRoot: source)
        let controller = controller()
        await controller.reconcileNow()
        #expect(runtime.processes(of: "a").map(\.process.spec.arguments) == [["agent.py"]])
        await controller.reconcileNow()
        #expect(runtime.processes(of: "a").count == 1)
        _ = FileManager.default.createFile(atPath: source + "/agent.py", contents: Data("print()\n".utf8))
        await controller.reconcileNow()
        let first = try #require(runtime.processes(of: "a").first?.id)
        await events.wait { $0.reason == .stopped && $0.pid == first.pid }
        await controller.reconcileNow()
        #expect(runtime.processes(of: "a").map(\.process.spec.arguments) == [["agent.py"], [source + "/agent.py"]])
    }

    /// With a runtime that announces ends, the loop never looks: an exit is noticed with
    /// polling and resyncs an hour apart.
    @Test(.timeLimit(.minutes(1))) func anAnnouncedEndIsNoticedWithoutLooking() async throws {
        let runtime = FakeRuntime(announces: true)
        try apply(fleet(["a", "b"]), to: store, at: clock.now)
        let controller = controller(runtime: runtime) {
            $0.pollInterval = .seconds(3600)
            $0.resyncInterval = .seconds(3600)
        }
        let loop = Task { await controller.run() }
        await events.wait { $0.reason == .started && $0.resource?.name == "b" }
        let first = try #require(runtime.running("a"))
        runtime.end(first, code: 3)
        await events.wait { $0.reason == .exited && $0.pid == first.pid }
        controller.requestStop()
        await loop.value
        #expect(runtime.processes(of: "b").count == 1)
    }

    // MARK: The work queue and batches

    /// Every due start of a drain is one batch: 20 agents come up with two write
    /// transactions (their records, then their Running statuses), not one per agent.
    @Test func startsAreOneBatchWithOneWriteEach() async throws {
        let names = (0..<20).map { "agent-\($0)" }
        try apply(fleet(names), to: store, at: clock.now)
        let counting = CountingStore(store)
        let controller = controller(store: counting)
        await controller.reconcileNow()
        #expect(names.allSatisfy { runtime.running($0) != nil })
        #expect(counting.writes.count == 2)
        #expect(try status("agent-7")?.condition(ResourceStatus.ready)?.status == .true)
        let record = try store.read { reader throws(StoreError) in try reader.supervision(for: ResourceID(kind: "Agent", name: "agent-7")) }
        #expect(record?.process == runtime.running("agent-7"))
    }

    /// Stops decided together are signalled together: one batch for the runtime.
    @Test func stopsDecidedTogetherAreOneBatch() async throws {
        let names = (0..<20).map { "agent-\($0)" }
        try apply(fleet(names), to: store, at: clock.now)
        let controller = controller()
        await controller.reconcileNow()
        try apply(fleet(names, suspended: Set(names)), to: store, at: clock.now)
        await controller.reconcileNow()
        for name in names { await events.wait { $0.reason == .stopped && $0.resource?.name == name } }
        #expect(runtime.stopBatches.withLock { $0 } == [20])
        // Each was signalled where its stop was decided, before the batch's stop task.
        #expect(runtime.terminatedFirst.withLock { $0 } == [true])
        #expect(runtime.terminated.withLock { $0 }.count == 20)
    }

    /// A process's end reconciles its agent only, not the whole fleet.
    @Test(.timeLimit(.minutes(1))) func anExitReconcilesThatAgentOnly() async throws {
        let runtime = FakeRuntime(announces: true)
        let names = ["a", "b", "c", "d"]
        try apply(fleet(names), to: store, at: clock.now)
        let reconciles = Reconciles()
        let controller = controller(runtime: runtime) {
            $0.pollInterval = .seconds(3600)
            $0.resyncInterval = .seconds(3600)
            $0.onReconcile = { reconciles.add($0) }
        }
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        for name in names { await events.wait { $0.reason == .started && $0.resource?.name == name } }
        // Converged: each started, then looked at once more to report it Running.
        await controller.reconcile([])
        let before = reconciles.all
        let process = try #require(runtime.running("c"))
        runtime.end(process, code: 3)
        await events.wait { $0.reason == .backOff && $0.resource?.name == "c" }
        await controller.reconcile([])
        var after = reconciles.all
        #expect(after["c"] == (before["c"] ?? 0) + 1)
        after["c"] = before["c"]
        #expect(after == before)
        controller.requestStop()
        await loop.value
    }

    /// An agent added many times before it is reconciled is reconciled once; one whose
    /// stop is in flight waits in the queue until the stop has finished, then once.
    @Test func addsMergeAndAnAgentBeingStoppedWaits() async throws {
        try apply(fleet(["a", "b"]), to: store, at: clock.now)
        let reconciles = Reconciles()
        let controller = controller { $0.onReconcile = { reconciles.add($0) } }
        await controller.reconcileNow()
        let a = ResourceID(kind: "Agent", name: "a")
        let before = reconciles.all["a"] ?? 0
        await controller.reconcile([a, a, a])
        #expect(reconciles.all["a"] == before + 1)

        runtime.closeGate()
        try apply(fleet(["a", "b"], suspended: ["a"]), to: store, at: clock.now)
        await controller.reconcileNow()
        await events.wait { $0.reason == .suspended && $0.resource?.name == "a" }
        let stopping = reconciles.all["a"] ?? 0
        // Being stopped: queued, not reconciled, however often it is added.
        await controller.reconcile([a, a])
        await controller.reconcileNow()
        #expect(reconciles.all["a"] == stopping)
        runtime.openGate()
        await events.wait { $0.reason == .stopped && $0.resource?.name == "a" }
        await controller.reconcile([])
        #expect(reconciles.all["a"] == stopping + 1)
        #expect(try status("a")?.condition(ResourceStatus.ready)?.reason == "SuspendedInSpec")
    }
}

@Suite struct WorkQueueTests {
    @Test func aKeyIsTakenOnceAndABusyOneStays() {
        var queue = WorkQueue<String>()
        for key in ["b", "a", "b", "c", "a"] { queue.add(key) }
        #expect(queue.count == 3)
        #expect(queue.take(where: { $0 != "c" }) == ["a", "b"])
        #expect(queue.contains("c"))
        #expect(queue.take(where: { $0 != "c" }).isEmpty)
        #expect(queue.take(where: { _ in true }) == ["c"])
        #expect(queue.count == 0)
    }
}
