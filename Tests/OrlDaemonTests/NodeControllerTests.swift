import Foundation
import OrlController
import OrlCore
import OrlStore
import Synchronization
import Testing

/// Several controller nodes in process: real SQLite state, a fake runtime per node, the
/// membership stepped by the test with its own monotonic clock.
@Suite struct NodeControllerTests {
    final class Node {
        let runtime = FakeRuntime()
        let controller: Controller
        let membership: NodeMembership

        init(
            _ name: String, labels: [String: String] = [:], state: TemporaryState, store: any NodeStore & StateStore, clock: TestClock,
            failing: FailingNodeStore? = nil, nodeStore: (any NodeStore)? = nil, events: EventLog? = nil,
            timing: LeaseTiming = NodeControllerTests.timing, monotonic: (@Sendable () -> Int64)? = nil
        ) {
            var configuration = Controller.Configuration(stateDirectory: state.directory)
            configuration.node = name
            let runtime = self.runtime
            controller = Controller(
                store: store, runtime: runtime, configuration: configuration, log: { events?.record($0) }, clock: { clock.now },
                random: { 0.5 })
            var membershipConfiguration = NodeMembership.Configuration(name: name, labels: labels)
            membershipConfiguration.timing = timing
            membership = NodeMembership(
                store: failing ?? nodeStore ?? store, controller: controller, configuration: membershipConfiguration,
                log: { events?.record($0) }, clock: { clock.now },
                monotonic: monotonic ?? { [monotonicClock = MonotonicBox.shared(for: name)] in monotonicClock.now })
        }

        /// One renewal and one membership step, then one reconcile of the controller with
        /// what it was told.
        func step() async {
            await membership.renew()
            await membership.step()
            await controller.reconcileNow()
        }

        var running: Set<String> {
            Set(["a", "b", "c", "d", "gpu"].filter { runtime.running($0) != nil })
        }
    }

    let state: TemporaryState
    let store: SQLiteStateStore
    let clock = TestClock()
    /// A long lease (by the database's real clock), so that a slow machine running every
    /// suite at once never lets one lapse between the test's steps; the stop deadline is
    /// driven by the test's monotonic clock.
    static let timing = LeaseTiming(duration: .seconds(300), renewInterval: .seconds(2), safetyMargin: .seconds(2))

    init() throws {
        state = try TemporaryState()
        store = try SQLiteStateStore(directory: state.directory)
    }

    func fleetWithSelector() -> String {
        fleet(["a", "b", "c", "d"]) + """

            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: gpu}
            spec:
              appliesTo: {agents: [gpu]}
              allow: {models: ["sim/*"]}
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: gpu}
            spec: {model: sim/small, runtime: {command: /bin/sleep, args: ["1000"], nodeSelector: {accelerator: gpu}}}
            """
    }

    /// Steps until `done` holds (each node a step and a reconcile per round), at most 20 rounds.
    func settle(_ nodes: [Node], until done: () -> Bool) async {
        for _ in 0..<20 {
            if done() { return }
            for node in nodes { await node.step() }
            // Stops end on a task of their own.
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func agentsSpreadBySelectorAndRunOnExactlyOneNode() async throws {
        try apply(fleetWithSelector(), to: store, at: clock.now)
        let n1 = Node("n1", state: state, store: store, clock: clock)
        let n2 = Node(
            "n2", labels: ["accelerator": "gpu"], state: state, store: try SQLiteStateStore(directory: state.directory), clock: clock)
        // Both registered before anything is placed.
        await n1.membership.step()
        await n2.membership.step()
        await settle([n1, n2]) { n1.running.count + n2.running.count == 5 }
        #expect(n1.running.isDisjoint(with: n2.running))
        #expect(n1.running.union(n2.running) == ["a", "b", "c", "d", "gpu"])
        #expect(n2.running.contains("gpu"))
        // Spread: the four free agents two and two, gpu on top of n2's.
        #expect(n1.running.count == 3 || n1.running.count == 2)
        // Stable: more steps move nothing.
        let before = (n1.running, n2.running)
        await settle([n1, n2]) { false }
        #expect((n1.running, n2.running) == before)
        // Supervision records carry the node and its generation.
        let records = try store.read { reader throws(StoreError) in try reader.allSupervision() }
        #expect(records.count == 5)
        for record in records {
            let node = try #require(record.node)
            #expect((node.node == "n1" ? n1.running : n2.running).contains(record.agent.name))
            #expect(node.generation == 1)
        }
    }

    @Test func anAgentNoNodeMatchesIsReportedUnschedulableAndRunsNowhere() async throws {
        try apply(fleetWithSelector(), to: store, at: clock.now)
        let events = EventLog()
        let n1 = Node("n1", state: state, store: store, clock: clock, events: events)
        await settle([n1]) { n1.running.count == 4 }
        #expect(n1.running == ["a", "b", "c", "d"])
        #expect(
            events.lines.contains { $0.contains("node Agent/gpu: unschedulable: no live node matches nodeSelector accelerator=gpu") },
            "\(events.lines)")
    }

    @Test func aNodeWhoseLeaseWasSupersededStopsEverythingBeforeRegisteringAgain() async throws {
        try apply(fleet(["a", "b"]), to: store, at: clock.now)
        let n1 = Node("n1", state: state, store: store, clock: clock)
        await settle([n1]) { n1.running == ["a", "b"] }
        #expect(n1.running == ["a", "b"])
        let stale = try #require(await n1.membership.currentLease)
        // Another process registers the same name: generation 2 fences this one.
        _ = try store.registerNode("n1", labels: [:], duration: .seconds(10))
        await n1.membership.step()
        #expect(await n1.membership.currentLease == nil)
        // Stopped without another step of the membership (which would register again).
        for _ in 0..<100 where !n1.running.isEmpty {
            await n1.controller.reconcileNow()
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(n1.running.isEmpty)
        // Its stale generation writes nothing.
        #expect(throws: StoreError.self) { try store.write { w throws(StoreError) in try w.requireLease(stale) } }
        // Once nothing runs, it registers again (generation 3) and its agents come back.
        await settle([n1]) { n1.running == ["a", "b"] }
        #expect(n1.running == ["a", "b"])
        #expect(await n1.membership.currentLease?.generation == 3)
        for name in ["a", "b"] { #expect(n1.runtime.processes(of: name).count == 2) }
    }

    @Test func aNodeThatCannotRenewStopsItsAgentsBeforeItsLeaseCanLapse() async throws {
        try apply(fleet(["a", "b"]), to: store, at: clock.now)
        let failing = FailingNodeStore(store)
        let name = "cut-\(UUID().uuidString.prefix(8))"
        let events = EventLog()
        let n1 = Node(name, state: state, store: store, clock: clock, failing: failing, events: events)
        let monotonic = MonotonicBox.shared(for: name)
        await settle([n1]) { n1.running == ["a", "b"] }
        #expect(n1.running == ["a", "b"])
        // Renewed at t; then the database is unreachable.
        await n1.membership.renew()
        let renewedAt = monotonic.now
        failing.failing = true
        let timing = Self.timing
        let stopAt = renewedAt + (timing.duration - timing.safetyMargin - .seconds(3)).wholeMilliseconds
        monotonic.set(stopAt - 1)
        await n1.membership.renew()
        await n1.membership.step()
        n1.membership.checkDeadline()
        await n1.controller.reconcileNow()
        #expect(n1.running == ["a", "b"])
        // At (last renewal sent) + lease − margin − stop lead: stopped, grace cut to what is
        // left before the deadline, well before the lease lapses at + 10 s.
        monotonic.set(stopAt)
        n1.membership.checkDeadline()
        await n1.controller.reconcileNow()
        await settle([]) { n1.running.isEmpty }
        for _ in 0..<50 where !n1.running.isEmpty {
            await n1.controller.reconcileNow()
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(n1.running.isEmpty)
        // Its stops say why: not a move to another node.
        #expect(events.lines.contains { $0.contains("its node's lease could not be renewed in time") }, "\(events.lines)")
        #expect(!events.lines.contains { $0.contains("placed on another node") }, "\(events.lines)")
        let lease = try #require(try store.nodeSnapshot().nodes.first)
        // The lease (by the database's clock) is still live: the agents stopped before it lapsed.
        #expect(lease.lease.isLive(at: try store.nodeSnapshot().now))
    }

    /// The watcher of `run` sleeps until the stop deadline (no look every 100 ms) and acts
    /// then on its own: no test calls `checkDeadline` here, on the real monotonic clock.
    @Test(.timeLimit(.minutes(1))) func theWatcherOfARunningNodeGivesItsAgentsUpWhenTheDeadlineComes() async throws {
        try apply(fleet(["a"]), to: store, at: clock.now)
        let failing = FailingNodeStore(store)
        let name = "due-\(UUID().uuidString.prefix(8))"
        let events = EventLog()
        // The agents are given up 4.5 s − 1 s (margin) − 3 s (stop lead) after the last
        // renewal that succeeded: the registration.
        let timing = LeaseTiming(duration: .milliseconds(4500), renewInterval: .milliseconds(200), safetyMargin: .seconds(1))
        let n1 = Node(
            name, state: state, store: store, clock: clock, failing: failing, events: events, timing: timing,
            monotonic: NodeMembership.monotonicNow)
        let before = ContinuousClock.now
        await n1.membership.step()
        failing.failing = true
        let membership = n1.membership
        let run = Task { await membership.run() }
        await events.wait { $0.message.contains("could not renew its lease") }
        #expect(ContinuousClock.now - before >= .milliseconds(500), "not before the deadline")
        run.cancel()
        await run.value
    }

    @Test func aNodeWhosePlacementIsHeldUpKeepsRenewingAndKeepsItsAgents() async throws {
        try apply(fleet(["a", "b"]), to: store, at: clock.now)
        let stalling = StallingNodeStore(store)
        let name = "busy-\(UUID().uuidString.prefix(8))"
        let events = EventLog()
        // Renewals every 100 ms (real time); the stop lead falls 295 s after the last renewal
        // (the test's monotonic clock).
        let timing = LeaseTiming(duration: .seconds(300), renewInterval: .milliseconds(100), safetyMargin: .seconds(2))
        let n1 = Node(name, state: state, store: store, clock: clock, nodeStore: stalling, events: events, timing: timing)
        let monotonic = MonotonicBox.shared(for: name)
        await settle([n1]) { n1.running == ["a", "b"] }
        #expect(n1.running == ["a", "b"])
        // Placement held up (as by another node holding its lock) for as long as the test likes.
        stalling.holdPlacement()
        let membership = n1.membership
        let run = Task { await membership.run() }
        #expect(await stalling.event("place", atLeast: 0) != nil, "the step never reached placement")
        // 6 × 60 s: past the stop lead, counted from any renewal sent before placement was held
        // up; each jump waits for a renewal sent after it.
        var renewedThroughout = true
        for _ in 0..<6 {
            let jumped = monotonic.now + 60_000
            monotonic.set(jumped)
            guard await stalling.event("renew", atLeast: jumped) != nil else {
                renewedThroughout = false
                break
            }
            n1.membership.checkDeadline()
        }
        #expect(renewedThroughout, "no renewal while placement was held up")
        n1.membership.checkDeadline()
        #expect(!events.lines.contains { $0.contains("could not renew") }, "\(events.lines)")
        await n1.controller.reconcileNow()
        #expect(n1.running == ["a", "b"])
        for name in ["a", "b"] { #expect(n1.runtime.processes(of: name).count == 1) }
        stalling.releasePlacement()
        run.cancel()
        await run.value
        #expect(n1.membership.currentLease?.generation == 1)
    }
}

/// A monotonic clock per node name that tests set.
final class MonotonicBox: Sendable {
    private let value = Mutex<Int64>(1_000_000)
    var now: Int64 { value.withLock { $0 } }
    func set(_ ms: Int64) { value.withLock { $0 = ms } }
    private static let all = Mutex<[String: MonotonicBox]>([:])
    static func shared(for name: String) -> MonotonicBox {
        all.withLock { all in
            if let box = all[name] { return box }
            let box = MonotonicBox()
            all[name] = box
            return box
        }
    }
}

/// The node store, with renewals that fail (an unreachable database) while `failing`.
final class FailingNodeStore: NodeStore {
    let base: SQLiteStateStore
    private let state = Mutex(false)
    var failing: Bool {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
    init(_ base: SQLiteStateStore) { self.base = base }
    private func check() throws(StoreError) { if failing { throw StoreError("the database is unreachable") } }
    func registerNode(_ name: String, labels: [String: String], duration: Duration) throws(StoreError) -> NodeLease {
        try check()
        return try base.registerNode(name, labels: labels, duration: duration)
    }
    func renewNode(_ lease: NodeLease, duration: Duration) throws(StoreError) -> NodeLease {
        try check()
        return try base.renewNode(lease, duration: duration)
    }
    func expireNode(_ lease: NodeLease) throws(StoreError) {
        try check()
        try base.expireNode(lease)
    }
    func nodeSnapshot() throws(StoreError) -> NodeSnapshot {
        try check()
        return try base.nodeSnapshot()
    }
    func place(by lease: NodeLease, _ decide: (NodeSnapshot) -> [ResourceID: AgentAssignment?]) throws(StoreError) -> NodeSnapshot {
        try check()
        return try base.place(by: lease, decide)
    }
    func release(_ agents: [ResourceID], by lease: NodeLease) throws(StoreError) {
        try check()
        try base.release(agents, by: lease)
    }
    func setCordoned(_ node: String, _ cordoned: Bool) throws(StoreError) -> Bool {
        try check()
        return try base.setCordoned(node, cordoned)
    }
    func claimSingleton(_ role: String, by lease: NodeLease) throws(StoreError) -> Bool {
        try check()
        return try base.claimSingleton(role, by: lease)
    }
}

/// The node store, with placement held up while the test holds it (as another node holding
/// placement's lock would), and each renewal and held-up placement told with the node's
/// monotonic time when it reached the store.
final class StallingNodeStore: NodeStore {
    let base: SQLiteStateStore
    private struct State {
        var holding = false
        var events: [(what: String, at: Int64)] = []
        var waiters: [Int: (what: String, atLeast: Int64, CheckedContinuation<Int64?, Never>)] = [:]
        var next = 0
    }
    private let state = Mutex(State())
    private let released = DispatchSemaphore(value: 0)

    init(_ base: SQLiteStateStore) { self.base = base }

    func holdPlacement() { state.withLock { $0.holding = true } }
    func releasePlacement() {
        let held = state.withLock { state in
            defer { state.holding = false }
            return state.holding
        }
        if held { released.signal() }
    }

    private func record(_ what: String, node: String) {
        let at = MonotonicBox.shared(for: node).now
        let ready = state.withLock { state in
            state.events.append((what, at))
            let matched = state.waiters.filter { $0.value.what == what && at >= $0.value.atLeast }
            for id in matched.keys { state.waiters[id] = nil }
            return matched.values.map(\.2)
        }
        for waiter in ready { waiter.resume(returning: at) }
    }

    /// The time of an event `what` at `atLeast` or later (one already seen, or the next), or
    /// nil when none came within 30 s.
    func event(_ what: String, atLeast: Int64) async -> Int64? {
        let id = state.withLock { state in
            defer { state.next += 1 }
            return state.next
        }
        let timeout = Task {
            try? await Task.sleep(for: .seconds(30))
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.2.resume(returning: nil)
        }
        defer { timeout.cancel() }
        return await withCheckedContinuation { continuation in
            let seen = state.withLock { state -> Int64? in
                if let event = state.events.last(where: { $0.what == what && $0.at >= atLeast }) { return event.at }
                state.waiters[id] = (what, atLeast, continuation)
                return nil
            }
            if let seen { continuation.resume(returning: seen) }
        }
    }

    func registerNode(_ name: String, labels: [String: String], duration: Duration) throws(StoreError) -> NodeLease {
        try base.registerNode(name, labels: labels, duration: duration)
    }
    func renewNode(_ lease: NodeLease, duration: Duration) throws(StoreError) -> NodeLease {
        record("renew", node: lease.node)
        return try base.renewNode(lease, duration: duration)
    }
    func expireNode(_ lease: NodeLease) throws(StoreError) { try base.expireNode(lease) }
    func nodeSnapshot() throws(StoreError) -> NodeSnapshot { try base.nodeSnapshot() }
    func place(by lease: NodeLease, _ decide: (NodeSnapshot) -> [ResourceID: AgentAssignment?]) throws(StoreError) -> NodeSnapshot {
        if state.withLock({ $0.holding }) {
            record("place", node: lease.node)
            released.wait()
        }
        return try base.place(by: lease, decide)
    }
    func release(_ agents: [ResourceID], by lease: NodeLease) throws(StoreError) { try base.release(agents, by: lease) }
    func setCordoned(_ node: String, _ cordoned: Bool) throws(StoreError) -> Bool { try base.setCordoned(node, cordoned) }
    func claimSingleton(_ role: String, by lease: NodeLease) throws(StoreError) -> Bool { try base.claimSingleton(role, by: lease) }
}
