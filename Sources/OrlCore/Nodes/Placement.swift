/// A node as the placer sees it: its labels and its lease.
public struct NodeView: Sendable, Hashable {
    public var lease: NodeLease
    public var labels: [String: String]
    /// A cordoned node keeps what it runs but is given nothing new.
    public var cordoned: Bool

    public var name: String { lease.node }

    public init(lease: NodeLease, labels: [String: String] = [:], cordoned: Bool = false) {
        self.lease = lease
        self.labels = labels
        self.cordoned = cordoned
    }
}

/// The node an agent is placed on, under the lease generation the node held when it was placed.
/// A node that re-registers gets a new generation, so its old assignments read as lapsed.
public struct Assignment: Sendable, Hashable {
    public var node: String
    public var generation: Int64

    public init(node: String, generation: Int64) {
        self.node = node
        self.generation = generation
    }
}

/// One agent to place: its selector (`spec.runtime.nodeSelector`) and where it is now.
public struct PlacementRequest: Sendable, Hashable {
    public var agent: ResourceID
    public var nodeSelector: [String: String]
    public var current: Assignment?

    public init(agent: ResourceID, nodeSelector: [String: String] = [:], current: Assignment? = nil) {
        self.agent = agent
        self.nodeSelector = nodeSelector
        self.current = current
    }
}

public enum PlacementDecision: Sendable, Hashable {
    /// Where it is: the node is live, under the same lease, and still matches.
    case stay(Assignment)
    /// Put on a node. `replacing` is the assignment it leaves, if any: the new node may start
    /// the agent only once that one is released or lapsed (`Placement.mayStart`).
    case place(Assignment, replacing: Assignment?)
    /// No live, uncordoned node matches; the agent keeps its old assignment, if any, so a node
    /// that is only slow to renew is not robbed of it.
    case unschedulable(reason: String)
}

/// Where each agent runs. Stable first: an agent stays on its node while that node's lease is
/// live and the node still matches its selector, so a new node or a restart of the placer moves
/// nothing. Then spread: the agents to place go, in name order, to the matching node with the
/// fewest agents (ties to the first name), so the result depends only on its inputs.
public enum Placement {
    public static func plan(_ requests: [PlacementRequest], nodes: [NodeView], at now: Timestamp) -> [ResourceID: PlacementDecision] {
        let live = Dictionary(
            nodes.filter { $0.lease.isLive(at: now) }.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var load: [String: Int] = live.mapValues { _ in 0 }
        var decisions: [ResourceID: PlacementDecision] = [:]
        var toPlace: [PlacementRequest] = []

        for request in requests {
            if let current = request.current, let node = live[current.node], node.lease.generation == current.generation,
                matches(request.nodeSelector, node.labels)
            {
                decisions[request.agent] = .stay(current)
                load[current.node, default: 0] += 1
            } else {
                toPlace.append(request)
            }
        }

        let candidates = live.values.filter { !$0.cordoned }.sorted { $0.name < $1.name }
        for request in toPlace.sorted(by: { $0.agent < $1.agent }) {
            let matching = candidates.filter { matches(request.nodeSelector, $0.labels) }
            guard let best = matching.min(by: { load[$0.name, default: 0] < load[$1.name, default: 0] }) else {
                decisions[request.agent] = .unschedulable(
                    reason: unschedulableReason(request, live: live.count, candidates: candidates.count))
                continue
            }
            load[best.name, default: 0] += 1
            decisions[request.agent] = .place(Assignment(node: best.name, generation: best.lease.generation), replacing: request.current)
        }
        return decisions
    }

    /// Whether `node`, holding `lease`, may start an agent assigned to it. The assignment must be
    /// the node's under its current lease, and the assignment it replaces (if any) must be over:
    /// released by its node (which stopped the agent and said so), or lapsed, meaning that node's
    /// lease expired or was renewed under another generation, after which that node has stopped
    /// everything by `LeaseTiming.stopDeadline`.
    public static func mayStart(
        _ assignment: Assignment, replacing previous: Assignment?, released: Bool, on lease: NodeLease, leases: [NodeLease],
        at now: Timestamp
    ) -> Bool {
        guard assignment.node == lease.node, assignment.generation == lease.generation, lease.isLive(at: now) else { return false }
        guard let previous, previous != assignment, !released else { return true }
        guard let holder = leases.first(where: { $0.node == previous.node }) else { return true }
        return holder.generation != previous.generation || !holder.isLive(at: now)
    }

    static func matches(_ selector: [String: String], _ labels: [String: String]) -> Bool {
        selector.allSatisfy { labels[$0.key] == $0.value }
    }

    static func unschedulableReason(_ request: PlacementRequest, live: Int, candidates: Int) -> String {
        if live == 0 { return "no node holds a live lease" }
        if candidates == 0 { return "every live node is cordoned" }
        let wanted = request.nodeSelector.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        return "no live node matches nodeSelector \(wanted)"
    }
}
