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
/// **Never twice.** A node starts an agent only when it is assigned to it under its current
/// generation and the assignment it replaced was released or lapsed (`Placement.mayStart`,
/// by the database's clock). A node that cannot renew starts stopping its agents `stopLead`
/// before `LeaseTiming.stopDeadline` (its grace periods cut to fit), and its guard process
/// kills what is left at the deadline, before the lease lapses anywhere; both are measured
/// on this host's monotonic clock from when the last successful renewal was sent. A watcher
/// task outside the actor keeps that time, so a renewal stuck on a dead connection does not
/// hold it up. A node told its lease is gone (fenced) stops everything at once and
/// registers again, under a new generation, only once nothing runs.
public actor NodeMembership {
    public struct Configuration: Sendable {
        public var name: String
        public var labels: [String: String]
        public var timing: LeaseTiming = .standard
        /// How long before the stop deadline a node that cannot renew starts stopping agents.
        public var stopLead: Duration = .seconds(3)
        /// How often it places and looks at the others' leases (and renews): the renewal interval.
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
    private let controller: Controller
    private let configuration: Configuration
    private let log: @Sendable (ControllerEvent) -> Void
    private let clock: @Sendable () -> Timestamp
    private let monotonic: @Sendable () -> Int64
    private let guardLink: (any NodeGuardLink)?
    private let executor: StoreExecutor
    /// Posted when the store changed (new agents to place), or to step now.
    public nonisolated let inbox = Inbox<Bool>()
    public nonisolated let roles = NodeRoles()
    /// The role of the node that drives workflow runs and cron triggers.
    public static let runsRole = "runs"
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private var lease: NodeLease? { didSet { if lease != oldValue { onLease?(lease) } } }
    /// Told each lease the node holds from now on (nil: none), e.g. the gateway's holds.
    private let onLease: (@Sendable (NodeLease?) -> Void)?
    private let renewal: Renewal
    private var lastSnapshot: NodeSnapshot?
    /// Agents no live node can run, and why, as last said.
    private var unschedulable: [ResourceID: String] = [:]

    /// When the last renewal that succeeded was sent, and whether the node has given up its
    /// agents since: shared with the watcher task.
    final class Renewal: Sendable {
        let state = Mutex<(lastGood: Int64?, cut: Bool)>((nil, false))
    }

    public init(
        store: any NodeStore, controller: Controller, configuration: Configuration, log: @escaping @Sendable (ControllerEvent) -> Void,
        clock: @escaping @Sendable () -> Timestamp = Controller.systemTime,
        monotonic: @escaping @Sendable () -> Int64 = NodeMembership.monotonicNow, guardLink: (any NodeGuardLink)? = nil,
        executor: StoreExecutor = StoreExecutor(label: "orl.node"), onLease: (@Sendable (NodeLease?) -> Void)? = nil
    ) {
        self.onLease = onLease
        self.store = store
        self.controller = controller
        self.configuration = configuration
        self.log = log
        self.clock = clock
        self.monotonic = monotonic
        self.guardLink = guardLink
        self.executor = executor
        self.renewal = Renewal()
    }

    /// CLOCK_MONOTONIC in milliseconds: the clock the guard process reads too.
    public static let monotonicNow: @Sendable () -> Int64 = {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    public var currentLease: NodeLease? { lease }
    public var snapshot: NodeSnapshot? { lastSnapshot }

    /// Steps every `stepInterval` (and when woken) until cancelled; then ends the lease, so
    /// that the node's agents, which the controller stops, move at once.
    public func run() async {
        let watcher = Task.detached { [renewal, configuration, monotonic, controller, log, clock] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                Self.watch(renewal, configuration, monotonic(), controller, log: log, clock: clock)
            }
        }
        defer { watcher.cancel() }
        while !Task.isCancelled {
            let began = monotonic()
            await step()
            let spent = Duration.milliseconds(monotonic() - began)
            _ = await inbox.take(waitingAtMost: max(.milliseconds(100), configuration.stepInterval - spent))
        }
    }

    /// Ends the lease now (a clean shutdown, after the controller stopped every agent).
    public func leave() {
        guard let lease else { return }
        do {
            try store.expireNode(lease)
            log(ControllerEvent(time: clock(), reason: .node, message: "\(lease.node) left (lease generation \(lease.generation) ended)"))
        } catch {
            log(ControllerEvent(time: clock(), reason: .error, message: "ending the lease of node \(lease.node): \(error.message)"))
        }
        self.lease = nil
        roles.clear()
    }

    /// Looks at the stop deadline now, as the watcher task of `run` does every 100 ms (a
    /// test drives it with its own monotonic clock).
    public nonisolated func checkDeadline() {
        Self.watch(renewal, configuration, monotonic(), controller, log: log, clock: clock)
    }

    /// Past the point where it must start stopping its agents, with no renewal since: the
    /// node gives them up (the controller stops them within what is left before the deadline).
    static func watch(
        _ renewal: Renewal, _ configuration: Configuration, _ now: Int64, _ controller: Controller,
        log: @Sendable (ControllerEvent) -> Void, clock: () -> Timestamp
    ) {
        let timing = configuration.timing
        let deadlineAfter = (timing.duration - timing.safetyMargin).wholeMilliseconds
        let stopAt = deadlineAfter - configuration.stopLead.wholeMilliseconds
        let cut = renewal.state.withLock { state -> Int64? in
            guard let good = state.lastGood, !state.cut, now >= good + stopAt else { return nil }
            state.cut = true
            return good + deadlineAfter
        }
        guard let deadline = cut else { return }
        let left = max(0, deadline - now - 500)
        log(
            ControllerEvent(
                time: clock(), reason: .error,
                message: "node \(configuration.name) could not renew its lease: stopping its agents within \(left) ms, before it lapses"))
        controller.gate(NodeGate(lease: nil, graceCap: .milliseconds(left)))
    }

    /// One step: register or renew, place, tell the controller what it may run, release what
    /// it stopped, claim its roles.
    public func step() async {
        let name = configuration.name
        let timing = configuration.timing
        if lease == nil {
            // Before anything else, nothing of an earlier lease may run.
            controller.gate(NodeGate(lease: nil, graceCap: .zero))
            let running = await controller.localAgents()
            if !running.isEmpty { return }
            let sent = monotonic()
            do {
                let registered = try store.registerNode(name, labels: configuration.labels, duration: timing.duration)
                lease = registered
                guardLink?.lease(registered.generation)
                renewed(sent: sent)
                log(
                    ControllerEvent(
                        time: clock(), reason: .node,
                        message: "\(name) registered (lease generation \(registered.generation), \(timing.duration.orlText) renewed every "
                            + "\(timing.renewInterval.orlText))"))
            } catch {
                log(ControllerEvent(time: clock(), reason: .error, message: "registering node \(name): \(error.message)"))
                return
            }
        } else if let held = lease {
            let sent = monotonic()
            do {
                lease = try store.renewNode(held, duration: timing.duration)
                renewed(sent: sent)
            } catch  where error.isFenced {
                lost(held, why: error.message)
                return
            } catch {
                log(ControllerEvent(time: clock(), reason: .error, message: "renewing the lease of node \(name): \(error.message)"))
                return
            }
        }
        guard let lease else { return }
        let requests = await controller.placementRequests()
        let snapshot: NodeSnapshot
        do {
            snapshot = try store.place(by: lease) { snapshot in Self.decide(requests, snapshot) }
        } catch  where error.isFenced {
            lost(lease, why: error.message)
            return
        } catch {
            log(ControllerEvent(time: clock(), reason: .error, message: "placing agents on node \(name): \(error.message)"))
            return
        }
        lastSnapshot = snapshot
        controller.gate(Self.gate(for: lease, in: snapshot, cut: renewal.state.withLock { $0.cut }))
        reportUnschedulable(requests, snapshot)

        let local = await controller.localAgents()
        let released = snapshot.assignments.values.filter {
            $0.replacing?.node == name && !$0.released && $0.assignment.node != name && !local.contains($0.agent)
        }.map(\.agent)
        do {
            try store.release(released.sorted(), by: lease)
            for role in configuration.roles {
                let holds = try store.claimSingleton(role, by: lease)
                if holds != roles.holds(role) {
                    log(ControllerEvent(time: clock(), reason: .node, message: "\(name) \(holds ? "took" : "gave up") the \(role) role"))
                }
                roles.set(role, holds)
            }
        } catch  where error.isFenced {
            lost(lease, why: error.message)
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

    private func renewed(sent: Int64) {
        let timing = configuration.timing
        renewal.state.withLock { $0 = (sent, false) }
        guardLink?.deadline(sent + (timing.duration - timing.safetyMargin).wholeMilliseconds)
    }

    /// The store refused the lease: someone may already run this node's agents. Everything
    /// stops now, without grace; the node registers again once nothing runs.
    private func lost(_ held: NodeLease, why: String) {
        log(ControllerEvent(time: clock(), reason: .error, message: "node \(held.node) lost its lease: \(why); stopping its agents now"))
        lease = nil
        roles.clear()
        renewal.state.withLock { $0 = (nil, true) }
        controller.gate(NodeGate(lease: nil, graceCap: .zero))
    }

    /// What the node may run under `lease`, as `snapshot` places agents.
    static func gate(for lease: NodeLease, in snapshot: NodeSnapshot, cut: Bool) -> NodeGate {
        guard !cut else { return NodeGate(lease: nil, graceCap: .zero) }
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
