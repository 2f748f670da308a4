/// One call of a tool that a Policy puts behind `requireApproval`, made outside a
/// workflow step (where no approval gate stands before it): the call waits until a
/// person decides (`orlctl approve call/ID`, `orlctl deny call/ID`), or until its
/// deadline, when it is refused. Each decision is recorded with who and why.
public struct ToolApproval: Sendable, Hashable {
    public enum State: String, Sendable, Hashable {
        case pending = "Pending"
        case approved = "Approved"
        case denied = "Denied"
        /// No decision came before the deadline: refused.
        case expired = "Expired"
    }

    /// `call-` and 12 hex digits.
    public var id: String
    public var agent: ResourceID
    /// As policies name it: `SERVER/TOOL`.
    public var tool: String
    /// The call's arguments as the agent sent them (compact JSON, at most 4 KiB: what
    /// the person is asked to approve).
    public var arguments: String
    public var requestedAt: Timestamp
    public var expiresAt: Timestamp
    public var state: State
    public var decidedBy: String?
    public var reason: String?
    public var decidedAt: Timestamp?

    public init(
        id: String, agent: ResourceID, tool: String, arguments: String, requestedAt: Timestamp, expiresAt: Timestamp,
        state: State = .pending, decidedBy: String? = nil, reason: String? = nil, decidedAt: Timestamp? = nil
    ) {
        self.id = id
        self.agent = agent
        self.tool = tool
        self.arguments = arguments
        self.requestedAt = requestedAt
        self.expiresAt = expiresAt
        self.state = state
        self.decidedBy = decidedBy
        self.reason = reason
        self.decidedAt = decidedAt
    }

    public static let argumentLimit = 4096

    /// `call-` and 12 random hex digits.
    public static func newID<R: RandomNumberGenerator>(using random: inout R) -> String {
        let value = UInt64.random(in: 0..<(1 << 48), using: &random)
        let hex = String(value, radix: 16)
        return "call-" + String(repeating: "0", count: 12 - hex.count) + hex
    }

    /// `call/ID`, as `orlctl approve` takes it.
    public var reference: String { "call/\(id)" }

    /// The event a request or a decision records, under the agent.
    public var event: StoreEvent {
        let what = "\(reference): tool \(Diagnostic.quoted(tool)) with \(arguments)"
        switch state {
        case .pending:
            return StoreEvent(
                time: requestedAt, kind: .normal, resource: agent, reason: "ToolApprovalRequested",
                message: "\(what) waits for approval until \(expiresAt) (orlctl approve \(reference) or deny)")
        case .approved:
            return StoreEvent(
                time: decidedAt ?? requestedAt, kind: .normal, resource: agent, reason: "ToolApproved",
                message: "\(what) approved by \(decidedBy ?? "?")\(reason.map { ": \($0)" } ?? "")")
        case .denied:
            return StoreEvent(
                time: decidedAt ?? requestedAt, kind: .warning, resource: agent, reason: "ToolDenied",
                message: "\(what) denied by \(decidedBy ?? "?")\(reason.map { ": \($0)" } ?? "")")
        case .expired:
            return StoreEvent(
                time: decidedAt ?? expiresAt, kind: .warning, resource: agent, reason: "ToolApprovalExpired",
                message: "\(what) refused: no decision by \(expiresAt)")
        }
    }

    /// The approval after a decision, or why it cannot be decided.
    public func deciding(_ state: State, by: String, reason: String?, now: Timestamp) -> Result<ToolApproval, RunError> {
        guard self.state == .pending else {
            let who = decidedBy.map { " by \($0)" } ?? ""
            return .failure(RunError(.conflict, "\(reference) is not waiting for a decision: \(self.state.rawValue)\(who)"))
        }
        var decided = self
        decided.state = state
        decided.decidedBy = by
        decided.reason = reason
        decided.decidedAt = now
        return .success(decided)
    }
}

/// Where tool approvals are kept: each write with its event, in one transaction.
public protocol ToolApprovalStore: Sendable {
    /// Stores a new pending approval.
    func request(_ approval: ToolApproval) throws(StoreError)
    func toolApproval(_ id: String) throws(StoreError) -> ToolApproval?
    /// Pending ones, oldest first; in one namespace when given.
    func pendingToolApprovals(namespace: String?) throws(StoreError) -> [ToolApproval]
    /// Applies `decide` to the stored approval (nil: no such approval) and stores what
    /// it gives, with its event; in one transaction, so two decisions cannot both land.
    func updateToolApproval(
        _ id: String, _ decide: (ToolApproval) -> Result<ToolApproval, RunError>
    ) throws(StoreError) -> Result<ToolApproval, RunError>?
}

extension ToolApprovalStore {
    /// Approves or denies a pending call (`by`: who, as `orlctl` names the caller).
    public func decide(_ id: String, approve: Bool, by: String, reason: String?, now: Timestamp) throws(RunError) -> ToolApproval {
        let result: Result<ToolApproval, RunError>?
        do throws(StoreError) {
            result = try updateToolApproval(id) { $0.deciding(approve ? .approved : .denied, by: by, reason: reason, now: now) }
        } catch {
            throw RunError(error)
        }
        guard let result else { throw RunError(.notFound, "call/\(id) not found: no tool call waits under that name") }
        return try result.get()
    }
}
