/// A node as the shared state records it: its lease, labels, whether it is cordoned, and
/// when it registered and last renewed (all by the database's clock).
public struct NodeRecord: Sendable, Hashable {
    public var view: NodeView
    public var registeredAt: Timestamp
    public var renewedAt: Timestamp

    public var name: String { view.name }
    public var lease: NodeLease { view.lease }

    public init(view: NodeView, registeredAt: Timestamp, renewedAt: Timestamp) {
        self.view = view
        self.registeredAt = registeredAt
        self.renewedAt = renewedAt
    }
}

/// Where an agent is placed, as stored: its node and that node's generation when placed, the
/// assignment it replaced (if any), and whether the replaced node has stopped it since.
public struct AgentAssignment: Sendable, Hashable {
    public var agent: ResourceID
    public var assignment: Assignment
    public var replacing: Assignment?
    /// The replaced node stopped the agent and said so: the new node need not wait for the
    /// old lease to lapse.
    public var released: Bool
    public var assignedAt: Timestamp

    public init(agent: ResourceID, assignment: Assignment, replacing: Assignment? = nil, released: Bool = false, assignedAt: Timestamp) {
        self.agent = agent
        self.assignment = assignment
        self.replacing = replacing
        self.released = released
        self.assignedAt = assignedAt
    }
}

/// What the nodes see of each other, read in one transaction: the database's time, every
/// node, every assignment and which node holds each singleton.
public struct NodeSnapshot: Sendable, Hashable {
    public var now: Timestamp
    public var nodes: [NodeRecord]
    public var assignments: [ResourceID: AgentAssignment]
    /// Each singleton role (`runs`, `source:NAME`) and the node and generation that claimed it.
    public var singletons: [String: Assignment]

    public init(now: Timestamp, nodes: [NodeRecord], assignments: [ResourceID: AgentAssignment], singletons: [String: Assignment] = [:]) {
        self.now = now
        self.nodes = nodes
        self.assignments = assignments
        self.singletons = singletons
    }

    public var leases: [NodeLease] { nodes.map(\.lease) }

    /// The node holding `role` now: its claimant, while that claimant's lease is live under
    /// the generation it claimed with.
    public func holder(of role: String) -> String? {
        guard let claim = singletons[role],
            let node = nodes.first(where: { $0.name == claim.node }), node.lease.generation == claim.generation,
            node.lease.isLive(at: now)
        else { return nil }
        return claim.node
    }
}

/// The port through which controller nodes share one state: leases, placement and
/// singletons. Every call is one transaction, and every time is the database's own, so nodes
/// whose clocks disagree agree on who holds what.
///
/// Fencing: a call made on behalf of a node names its lease; the store refuses it (a
/// `StoreError` whose `isFenced` is set), inside the same transaction and before writing
/// anything, unless the node's stored lease has that generation and is live.
public protocol NodeStore: Sendable {
    /// Registers the node (or registers it again): a generation one higher than any it had,
    /// a lease of `duration` from the database's now, its labels replaced. Cordoning is kept.
    func registerNode(_ name: String, labels: [String: String], duration: Duration) throws(StoreError) -> NodeLease
    /// Extends the lease to `duration` from the database's now. Fenced: a lease that lapsed
    /// or was superseded by a newer registration is not renewed.
    func renewNode(_ lease: NodeLease, duration: Duration) throws(StoreError) -> NodeLease
    /// Ends the lease now (a node that shuts down cleanly), so that its agents move at once.
    /// Ending a lease already superseded does nothing.
    func expireNode(_ lease: NodeLease) throws(StoreError)
    func nodeSnapshot() throws(StoreError) -> NodeSnapshot
    /// Places agents: `decide` reads a snapshot taken inside a write transaction (writers are
    /// serialized, so two placers never decide from the same snapshot) and returns the
    /// assignments to write (nil: delete the agent's). Fenced by the placer's lease.
    /// Returns the snapshot with the writes applied.
    @discardableResult
    func place(by lease: NodeLease, _ decide: (NodeSnapshot) -> [ResourceID: AgentAssignment?]) throws(StoreError) -> NodeSnapshot
    /// The node has stopped these agents, which were moved away from it: their assignments
    /// that replaced it are marked released. Fenced.
    func release(_ agents: [ResourceID], by lease: NodeLease) throws(StoreError)
    /// Cordons (or uncordons) a node; false when no node has that name.
    func setCordoned(_ node: String, _ cordoned: Bool) throws(StoreError) -> Bool
    /// Claims a singleton role for the lease's node: true when the node holds it (it did, or
    /// the role was free, or its claimant's lease lapsed or was superseded). Fenced.
    func claimSingleton(_ role: String, by lease: NodeLease) throws(StoreError) -> Bool
}

/// Label keys and values as `--node-label` and `nodeSelector` take them (Kubernetes' syntax):
/// a key of letters, digits, `-`, `_`, `.` and `/`; a value of letters, digits, `-`, `_`, `.`.
public enum NodeLabels {
    public static func problem(key: String, value: String) -> String? {
        func ok(_ text: String, slash: Bool) -> Bool {
            !text.isEmpty && text.count <= 253
                && text.unicodeScalars.allSatisfy { c in
                    (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "-" || c == "_" || c == "."
                        || (slash && c == "/")
                }
        }
        if !ok(key, slash: true) { return "the label key \"\(key)\" must be letters, digits, '-', '_', '.' or '/'" }
        if !value.isEmpty && !ok(value, slash: false) { return "the label value \"\(value)\" must be letters, digits, '-', '_' or '.'" }
        return nil
    }

    /// `k=v` lines in key order: how both stores keep them.
    public static func encode(_ labels: [String: String]) -> String {
        labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n")
    }

    public static func decode(_ text: String) -> [String: String] {
        var labels: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            labels[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return labels
    }

    /// A node name: what `--node` takes (a label value's syntax, 1 to 63 characters).
    public static func nameProblem(_ name: String) -> String? {
        guard !name.isEmpty, name.count <= 63, problem(key: "node", value: name) == nil else {
            return "the node name \"\(name)\" must be 1 to 63 letters, digits, '-', '_' or '.'"
        }
        return nil
    }
}

extension StoreError {
    /// A write on behalf of a node whose lease lapsed or was superseded.
    public static func fenced(_ lease: NodeLease, why: String) -> StoreError {
        var error = StoreError("node \(lease.node) no longer holds lease generation \(lease.generation): \(why)")
        error.isFenced = true
        return error
    }
}
