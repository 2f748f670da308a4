public import OrlCore

/// Per-call tool approvals (`ToolApproval`), in the state's database: each write with
/// its event, in one transaction.
extension SQLiteStateStore: ToolApprovalStore {
    public func request(_ approval: ToolApproval) throws(StoreError) {
        try transaction(.immediate, intent: "record a tool call waiting for approval") { access throws(StoreError) in
            try access.put(approval, new: true)
            try access.append(approval.event)
        }
    }

    public func toolApproval(_ id: String) throws(StoreError) -> ToolApproval? {
        try transaction(.deferred, intent: "read a tool approval") { access throws(StoreError) in try access.toolApproval(id) }
    }

    public func pendingToolApprovals(namespace: String?) throws(StoreError) -> [ToolApproval] {
        try transaction(.deferred, intent: "list the tool calls waiting for approval") { access throws(StoreError) in
            try access.toolApprovals(
                where: "state = 'Pending'" + (namespace == nil ? "" : " AND namespace = ?1"), namespace: namespace)
        }
    }

    public func updateToolApproval(
        _ id: String, _ decide: (ToolApproval) -> Result<ToolApproval, RunError>
    ) throws(StoreError) -> Result<ToolApproval, RunError>? {
        try transaction(.immediate, intent: "decide a tool approval") { access throws(StoreError) -> Result<ToolApproval, RunError>? in
            guard let current = try access.toolApproval(id) else { return nil }
            let result = decide(current)
            if case .success(let decided) = result, decided != current {
                try access.put(decided, new: false)
                try access.append(decided.event)
            }
            return result
        }
    }
}

extension SQLStateAccess {
    private static let approvalColumns =
        "id, namespace, agent, tool, arguments, requested_at, expires_at, state, decided_by, reason, decided_at"

    func put(_ approval: ToolApproval, new: Bool) throws(StoreError) {
        let intent = "store tool approval \(approval.id)"
        wroteRunTables()
        try connection(writing: true).withStatement(
            """
            \(new ? "INSERT" : "REPLACE") INTO tool_approvals (\(Self.approvalColumns))
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
            """,
            intent: intent
        ) { s throws(StoreError) in
            try s.bind(1, approval.id)
            try s.bind(2, approval.agent.namespace)
            try s.bind(3, approval.agent.name)
            try s.bind(4, approval.tool)
            try s.bind(5, approval.arguments)
            try s.bind(6, approval.requestedAt.milliseconds)
            try s.bind(7, approval.expiresAt.milliseconds)
            try s.bind(8, approval.state.rawValue)
            try s.bind(9, approval.decidedBy)
            try s.bind(10, approval.reason)
            try s.bind(11, approval.decidedAt?.milliseconds)
            try s.run(intent: intent)
        }
    }

    func toolApproval(_ id: String) throws(StoreError) -> ToolApproval? {
        try toolApprovals(where: "id = ?2", namespace: nil, id: id).first
    }

    func toolApprovals(where condition: String, namespace: String?, id: String? = nil) throws(StoreError) -> [ToolApproval] {
        let intent = "read tool approvals"
        return try connection().withStatement(
            "SELECT \(Self.approvalColumns) FROM tool_approvals WHERE \(condition) ORDER BY requested_at, id", intent: intent
        ) { s throws(StoreError) in
            if let namespace { try s.bind(1, namespace) }
            if let id { try s.bind(2, id) }
            var result: [ToolApproval] = []
            while try s.step(intent: intent) {
                guard let state = ToolApproval.State(rawValue: s.text(7)) else {
                    throw StoreError("the stored tool approval \(s.text(0)) is corrupt (state \(s.text(7)))")
                }
                result.append(
                    ToolApproval(
                        id: s.text(0), agent: ResourceID(kind: ResourceKind.agent.rawValue, namespace: s.text(1), name: s.text(2)),
                        tool: s.text(3), arguments: s.text(4), requestedAt: Timestamp(milliseconds: s.int64(5)),
                        expiresAt: Timestamp(milliseconds: s.int64(6)), state: state, decidedBy: s.optionalText(8),
                        reason: s.optionalText(9), decidedAt: s.optionalInt64(10).map(Timestamp.init(milliseconds:))))
            }
            return result
        }
    }
}
