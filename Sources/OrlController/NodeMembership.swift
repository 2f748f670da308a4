public import OrlCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Which singleton roles (`runs`) this node holds now.
public final class NodeRoles: Sendable {
    private let roles = Mutex<Set<String>>([])
    public init() {}
    public func holds(_ role: String) -> Bool { roles.withLock { $0.contains(role) } }
    func set(_ role: String, _ held: Bool) {
        roles.withLock { roles in
            if held { roles.insert(role) } else { roles.remove(role) }
        }
    }
    func clear() { roles.withLock { $0.removeAll() } }
}

/// A controller node's membership of the fleet (`orlctl controller --node`): it registers
/// the node and renews its lease, places agents, tells its `Controller` what it may run
/// (`NodeGate`), releases the agents moved away once stopped, and claims singleton roles.
///
/// **Who places.** Every node, at every step, in one write transaction of the store
/// (`NodeStore.place`), which serializes placers: `Placement.plan` is stable and depends
/// only on what it reads, so the second placer finds nothing to change. No leader is needed,
/// and a node's death is noticed by whichever node steps first after its lease lapses.
///
/// **Renewal on its own.** The lease is renewed by a loop of its own, on an executor (and a
/// store: on PostgreSQL, a connection) of its own, every `renewInterval`: a step waits for
/// placement's lock, for the controller and for the other placers, and none of that may hold
/// up a renewal, or a healthy node would stop its agents. Steps read the current lease (its
/// generation is the fencing token) from `LeaseKeeper`.
///
/// **Never twice.** A node starts an agent only when it is assigned to it under its current
/// generation and the assignment it replaced was released or lapsed (`Placement.mayStart`,
/// by the database's clock). A node that cannot renew starts stopping its agents `stopLead`
/// before `LeaseTiming.stopDeadline` (its grace periods cut to fit), and its guard process
/// kills what is left at the deadline, before the lease lapses anywhere; both are measured
/// on this host's monotonic clock from when the last successful renewal was sent. A watcher
/// task keeps that time, so a renewal stuck on a dead connection does not hold it up. A node
/// told its lease is gone (fenced), by a renewal or any other write, stops everything at once
/// and registers again, under a new generation, only once nothing runs.
public actor NodeMembership {
    public struct Configuration: Sendable {
        public var name: String
        public var labels: [String: String]
        public var timing: LeaseTiming = .standard
        /// How long before the stop deadline a node that cannot renew starts stopping agents.
        public var stopLead: Duration = .seconds(3)
        /// How often it places and looks at the others' leases: the renewal interval too.
        public var stepInterval: Duration { timing.renewInterval }
        /// Singleton roles it claims while it holds its lease (`runs`).
        public var roles: [String] = []

        public init(name: String, labels: [String: String] = [:]) {
            self.name = name
            self.labels = labels
        }

        /// How long an agent of a node that dies stays unassigned at most (beyond the time its
        /// new node takes to start it): the lease runs out, then the next step of another node.
        public var failoverBound: Duration { timing.failoverBound(placementInterval: stepInterval) }
    }

    private let store: any NodeStore
    /// Where the lease is registered, renewed and ended: a store of its own, so that a
    /// renewal never waits for a connection the step holds (nil: `store`).
    private let leaseStore: any NodeStore
    private let controller: Controller
    private let configuration: Configuration
    private let log: @Sendable (ControllerEvent) -> Void
    private let clock: @Sendable () -> Timestamp
    private let monotonic: @Sendable () -> Int64
    private let executor: StoreExecutor
    /// Where renewals run: never behind a step blocked in the store.
    private let leaseExecutor: StoreExecutor
    /// Posted when the store changed (new agents to place), or to step now.
    public nonisolated let inbox = Inbox<Bool>()
    public nonisolated let roles: NodeRoles
    /// The role of the node that drives workflow runs and cron triggers.
    public static let runsRole = "runs"
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private let keeper: LeaseKeeper
    private var lastSnapshot: NodeSnapshot?
    /// Agents no live node can run, and why, as last said.
    private var unschedulable: [ResourceID: String] = [:]

    public init(
        store: any NodeStore, leaseStore: (any NodeStore)? = nil, controller: Controller, configuration: Configuration,
        log: @escaping @Sendable (ControllerEvent) -> Void,
        clock: @escaping @Sendable () -> Timestamp = Controller.systemTime,
        monotonic: @escaping @Sendable () -> Int64 = NodeMembership.monotonicNow, guardLink: (any NodeGuardLink)? = nil,
        executor: StoreExecutor = StoreExecutor(label: "orl.node"), leaseExecutor: StoreExecutor = StoreExecutor(label: "orl.node.lease"),
        onLease: (@Sendable (NodeLease?) -> Void)? = nil
    ) {
        self.store = store
        self.leaseStore = leaseStore ?? store
        self.controller = controller
        self.configuration = configuration
        self.log = log
        self.clock = clock
        self.monotonic = monotonic
        self.executor = executor
        self.leaseExecutor = leaseExecutor
        let roles = NodeRoles()
        self.roles = roles
        self.keeper = LeaseKeeper(
            configuration: configuration, controller: controller, roles: roles, guardLink: guardLink, onLease: onLease, log: log,
            clock: clock)
    }

    /// CLOCK_MONOTONIC in milliseconds: the clock the guard process reads too.
    public static let monotonicNow: @Sendable () -> Int64 = {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    public nonisolated var currentLease: NodeLease? { keeper.lease }
    public var snapshot: NodeSnapshot? { lastSnapshot }

    /// Steps every `stepInterval` (and when woken), and renews the lease every
    /// `renewInterval` on a loop of its own, until cancelled; then ends the lease, so that
    /// the node's agents, which the controller stops, move at once.
    public func run() async {
        let watcher = Task.detached { [keeper, monotonic] in
            while !Task.isCancelled {
                keeper.watch(now: monotonic())
                // Asleep until the point where it must start stopping its agents (a renewal
                // meanwhile moves it: looked at then, and asleep again until the new one), or
                // until there is one (a lease registered, renewals back after a cut).
                let wait = keeper.stopDue().map { Duration.milliseconds(max(1, $0 - monotonic())) }
                _ = await keeper.watchable.take(waitingAtMost: wait)
            }
        }
        let renewing = Task.detached { [self] in
            let interval = configuration.timing.renewInterval
            while !Task.isCancelled {
                let began = monotonic()
                await renew()
                let spent = Duration.milliseconds(monotonic() - began)
                try? await Task.sleep(for: max(.milliseconds(100), interval - spent))
            }
        }
        while !Task.isCancelled {
            let began = monotonic()
            await step()
            let spent = Duration.milliseconds(monotonic() - began)
            _ = await inbox.take(waitingAtMost: max(.milliseconds(100), configuration.stepInterval - spent))
        }
        // No renewal after this: `leave` ends the lease.
        renewing.cancel()
        await renewing.value
        watcher.cancel()
    }

    /// Renews the lease it holds now (nothing without one), on the lease's own executor: what
    /// the loop of `run` does every `renewInterval` (a test calls it itself).
    public nonisolated func renew() async {
        await leaseExecutor.run { [keeper, leaseStore, monotonic, configuration] in
            keeper.renew(leaseStore, duration: configuration.timing.duration, sent: monotonic)
        }
    }

    /// Ends the lease now (a clean shutdown, after the controller stopped every agent).
    public func leave() {
        guard let lease = keeper.take() else { return }
        do {
            try leaseStore.expireNode(lease)
            log(ControllerEvent(time: clock(), reason: .node, message: "\(lease.node) left (lease generation \(lease.generation) ended)"))
        } catch {
            log(ControllerEvent(time: clock(), reason: .error, message: "ending the lease of node \(lease.node): \(error.message)"))
        }
    }

    /// Looks at the stop deadline now, as the watcher task of `run` does when it is due (a
    /// test drives it with its own monotonic clock).
    public nonisolated func checkDeadline() {
        keeper.watch(now: monotonic())
    }

    /// One step: register (when it holds no lease), place, tell the controller what it may
    /// run, release what it stopped, claim its roles. The lease is renewed elsewhere (`renew`).
    public func step() async {
        let name = configuration.name
        let timing = configuration.timing
        if keeper.lease == nil {
            // Before anything else, nothing of an earlier lease may run.
            controller.gate(NodeGate(lease: nil, graceCap: .zero, reason: keeper.why))
            let running = await controller.localAgents()
            if !running.isEmpty { return }
            let sent = monotonic()
            do {
                let registered = try leaseStore.registerNode(name, labels: configuration.labels, duration: timing.duration)
                keeper.registered(registered, sent: sent)
                log(
                    ControllerEvent(
                        time: clock(), reason: .node,
                        message: "\(name) registered (lease generation \(registered.generation), \(timing.duration.orlText) renewed every "
                            + "\(timing.renewInterval.orlText))"))
            } catch {
                log(ControllerEvent(time: clock(), reason: .error, message: "registering node \(name): \(error.message)"))
                return
            }
        }
        guard let lease = keeper.lease else { return }
        let requests = await controller.placementRequests()
        let snapshot: NodeSnapshot
        do {
            snapshot = try store.place(by: lease) { snapshot in Self.decide(requests, snapshot) }
        } catch  where error.isFenced {
            keeper.lost(lease, why: error.message)
            return
        } catch {
            log(ControllerEvent(time: clock(), reason: .error, message: "placing agents on node \(name): \(error.message)"))
            return
        }
        lastSnapshot = snapshot
        keeper.gate(lease, in: snapshot)
        reportUnschedulable(requests, snapshot)

        let local = await controller.localAgents()
        let released = snapshot.assignments.values.filter {
            $0.replacing?.node == name && !$0.released && $0.assignment.node != name && !local.contains($0.agent)
        }.map(\.agent)
        do {
            try store.release(released.sorted(), by: lease)
            for role in configuration.roles {
                let holds = try store.claimSingleton(role, by: lease)
                keeper.ifCurrent(lease) {
                    if holds != roles.holds(role) {
                        log(
                            ControllerEvent(time: clock(), reason: .node, message: "\(name) \(holds ? "took" : "gave up") the \(role) role")
                        )
                    }
                    roles.set(role, holds)
                }
            }
        } catch  where error.isFenced {
            keeper.lost(lease, why: error.message)
        } catch {
            log(ControllerEvent(time: clock(), reason: .error, message: "node \(name): \(error.message)"))
        }
    }

    /// Agents no live node can run, said once each time the reason changes (their status is
    /// written by the node that runs them, and none does).
    private func reportUnschedulable(_ requests: [ResourceID: [String: String]], _ snapshot: NodeSnapshot) {
        let placement = requests.map { id, selector in
            PlacementRequest(agent: id, nodeSelector: selector, current: snapshot.assignments[id]?.assignment)
        }
        var now: [ResourceID: String] = [:]
        for (id, decision) in Placement.plan(placement, nodes: snapshot.nodes.map(\.view), at: snapshot.now) {
            if case .unschedulable(let reason) = decision { now[id] = reason }
        }
        for (id, reason) in now.sorted(by: { $0.key < $1.key }) where unschedulable[id] != reason {
            log(ControllerEvent(time: clock(), reason: .node, resource: id, message: "unschedulable: \(reason)"))
        }
        unschedulable = now
    }

    /// What the node may run under `lease`, as `snapshot` places agents.
    static func gate(for lease: NodeLease, in snapshot: NodeSnapshot) -> NodeGate {
        var assigned: Set<ResourceID> = []
        var runnable: Set<ResourceID> = []
        let mine = Assignment(node: lease.node, generation: lease.generation)
        for entry in snapshot.assignments.values where entry.assignment == mine {
            assigned.insert(entry.agent)
            if Placement.mayStart(
                entry.assignment, replacing: entry.replacing, released: entry.released, on: lease, leases: snapshot.leases,
                at: snapshot.now)
            {
                runnable.insert(entry.agent)
            }
        }
        return NodeGate(lease: lease, assigned: assigned, runnable: runnable)
    }

    /// The assignments to write: `Placement.plan`'s moves. An agent moved again before the
    /// node it first left released it keeps waiting for that node (not the one in between,
    /// which never started it).
    static func decide(_ requests: [ResourceID: [String: String]], _ snapshot: NodeSnapshot) -> [ResourceID: AgentAssignment?] {
        let placementRequests = requests.map { id, selector in
            PlacementRequest(agent: id, nodeSelector: selector, current: snapshot.assignments[id]?.assignment)
        }
        var changes: [ResourceID: AgentAssignment?] = [:]
        for (id, decision) in Placement.plan(placementRequests, nodes: snapshot.nodes.map(\.view), at: snapshot.now) {
            guard case .place(let assignment, let replacing) = decision else { continue }
            var replaced = replacing
            if let current = snapshot.assignments[id], let older = current.replacing, !current.released,
                let holder = snapshot.nodes.first(where: { $0.name == older.node }), holder.lease.generation == older.generation,
                holder.lease.isLive(at: snapshot.now)
            {
                replaced = older
            }
            changes[id] = AgentAssignment(agent: id, assignment: assignment, replacing: replaced, assignedAt: snapshot.now)
        }
        return changes
    }
}

/// The lease a node holds, shared by its renewal loop, its steps and the watcher of its stop
/// deadline, which run on different executors: every change is made under one lock, and what
/// depends on it (the controller's gate, the guard's deadline, the gateway's lease, the
/// roles) is told under that lock too, so a step that placed under a lease since lost or
/// stalled never gates the controller after the node gave its agents up.
final class LeaseKeeper: Sendable {
    struct Held {
        var lease: NodeLease?
        /// When the last renewal that succeeded was sent (the node's monotonic clock).
        var lastGood: Int64?
        /// The node gave its agents up (its renewals stalled, or its lease was lost) since.
        var cut = false
        /// Why it runs nothing, while it holds no lease or has given its agents up.
        var why: String?
    }

    private let state = Mutex(Held())
    /// Posted when a stop deadline starts to count (a lease registered, renewals back
    /// after a cut): the watcher sleeps until the deadline, or until there is one.
    let watchable = Inbox<Bool>()
    private let configuration: NodeMembership.Configuration
    private let controller: Controller
    private let roles: NodeRoles
    private let guardLink: (any NodeGuardLink)?
    private let onLease: (@Sendable (NodeLease?) -> Void)?
    private let log: @Sendable (ControllerEvent) -> Void
    private let clock: @Sendable () -> Timestamp

    /// Why a node that stalled stops its agents, as their stop events say.
    static let stalled = "its node's lease could not be renewed in time"

    init(
        configuration: NodeMembership.Configuration, controller: Controller, roles: NodeRoles, guardLink: (any NodeGuardLink)?,
        onLease: (@Sendable (NodeLease?) -> Void)?, log: @escaping @Sendable (ControllerEvent) -> Void,
        clock: @escaping @Sendable () -> Timestamp
    ) {
        self.configuration = configuration
        self.controller = controller
        self.roles = roles
        self.guardLink = guardLink
        self.onLease = onLease
        self.log = log
        self.clock = clock
    }

    var lease: NodeLease? { state.withLock { $0.lease } }
    var why: String? { state.withLock { $0.why } }

    /// The node registered under `lease`, the registration sent at `sent`.
    func registered(_ lease: NodeLease, sent: Int64) {
        state.withLock { held in
            held = Held(lease: lease, lastGood: sent, cut: false, why: nil)
            guardLink?.lease(lease.generation)
            guardLink?.deadline(deadline(after: sent))
            onLease?(lease)
        }
        watchable.post(true)
    }

    /// One renewal of the lease held now (blocks on the store: run on the lease's executor).
    func renew(_ store: any NodeStore, duration: Duration, sent monotonic: () -> Int64) {
        guard let held = lease else { return }
        let sent = monotonic()
        do {
            let renewed = try store.renewNode(held, duration: duration)
            let counts = state.withLock { state -> Bool in
                // Lost, or registered again, while the renewal was in flight: not this one's.
                guard state.lease?.generation == held.generation else { return false }
                state.lease = renewed
                // A renewal sent before one already confirmed moves nothing back.
                if let good = state.lastGood, good > sent { return false }
                let counted = state.lastGood != nil && !state.cut
                state.lastGood = sent
                state.cut = false
                state.why = nil
                guardLink?.deadline(deadline(after: sent))
                onLease?(renewed)
                return !counted
            }
            // Only a deadline that starts to count again wakes the watcher: one moved later
            // is seen when the earlier one is due.
            if counts { watchable.post(true) }
        } catch  where error.isFenced {
            lost(held, why: error.message)
        } catch {
            log(
                ControllerEvent(
                    time: clock(), reason: .error, message: "renewing the lease of node \(configuration.name): \(error.message)"))
        }
    }

    /// The store refused the lease: someone may already run this node's agents. Everything
    /// stops now, without grace; the node registers again once nothing runs.
    func lost(_ lost: NodeLease, why: String) {
        state.withLock { state in
            guard state.lease?.generation == lost.generation else { return }
            log(
                ControllerEvent(time: clock(), reason: .error, message: "node \(lost.node) lost its lease: \(why); stopping its agents now")
            )
            let reason = "its node lost its lease"
            state = Held(lease: nil, lastGood: nil, cut: true, why: reason)
            roles.clear()
            controller.gate(NodeGate(lease: nil, graceCap: .zero, reason: reason))
            onLease?(nil)
        }
    }

    /// Ends the node's hold on its lease (a clean shutdown): the lease to end.
    func take() -> NodeLease? {
        state.withLock { state in
            let lease = state.lease
            state.lease = nil
            roles.clear()
            if lease != nil { onLease?(nil) }
            return lease
        }
    }

    /// Tells the controller what it may run under `lease`, as `snapshot` places agents:
    /// unless the node lost that lease or gave its agents up since it placed.
    func gate(_ lease: NodeLease, in snapshot: NodeSnapshot) {
        state.withLock { state in
            guard state.lease?.generation == lease.generation, !state.cut else { return }
            controller.gate(NodeMembership.gate(for: lease, in: snapshot))
        }
    }

    /// Runs `body` while `lease` is still the node's (its roles are set only then).
    func ifCurrent(_ lease: NodeLease, _ body: () -> Void) {
        state.withLock { state in
            if state.lease?.generation == lease.generation { body() }
        }
    }

    /// Past the point where it must start stopping its agents, with no renewal since: the
    /// node gives them up (the controller stops them within what is left before the deadline).
    func watch(now: Int64) {
        state.withLock { state in
            guard let good = state.lastGood, !state.cut, now >= good + stopAfter else { return }
            state.cut = true
            state.why = Self.stalled
            let left = max(0, deadline(after: good) - now - 500)
            log(
                ControllerEvent(
                    time: clock(), reason: .error,
                    message: "node \(configuration.name) could not renew its lease: stopping its agents within \(left) ms, before it lapses"
                ))
            controller.gate(NodeGate(lease: nil, graceCap: .milliseconds(left), reason: Self.stalled))
        }
    }

    /// How long after a renewal was sent the node starts stopping its agents, when none
    /// succeeded since.
    private var stopAfter: Int64 {
        (configuration.timing.duration - configuration.timing.safetyMargin - configuration.stopLead).wholeMilliseconds
    }

    /// When `watch` next has something to do (nil: not until a deadline starts to count).
    func stopDue() -> Int64? {
        state.withLock { state in
            guard let good = state.lastGood, !state.cut else { return nil }
            return good + stopAfter
        }
    }

    /// When the guard must have killed everything, given when the last renewal that
    /// succeeded was sent.
    private func deadline(after sent: Int64) -> Int64 {
        let timing = configuration.timing
        return sent + (timing.duration - timing.safetyMargin).wholeMilliseconds
    }
}
