public import OrlCore
import PostgresNIO

/// Per-call tool approvals, as the SQLite store keeps them (`OrlStore/ToolApprovalAccess.swift`):
/// each write with its event, in one write transaction, so two decisions cannot both land.
extension PostgresStateStore: ToolApprovalStore {
    public func request(_ approval: ToolApproval) throws(StoreError) {
        try transaction(writable: true, intent: "record a tool call waiting for approval") { access throws(StoreError) in
            try access.put(approval, new: true)
            try access.append(approval.event)
        }
    }

    public func toolApproval(_ id: String) throws(StoreError) -> ToolApproval? {
        try transaction(writable: false, intent: "read a tool approval") { access throws(StoreError) in
            try access.toolApprovals(where: "id = $1", [.text(id)]).first
        }
    }

    public func pendingToolApprovals(namespace: String?) throws(StoreError) -> [ToolApproval] {
        try transaction(writable: false, intent: "list the tool calls waiting for approval") { access throws(StoreError) in
            try access.toolApprovals(
                where: "state = 'Pending'" + (namespace == nil ? "" : " AND namespace = $1"), namespace.map { [.text($0)] } ?? [])
        }
    }

    public func updateToolApproval(
        _ id: String, _ decide: (ToolApproval) -> Result<ToolApproval, RunError>
    ) throws(StoreError) -> Result<ToolApproval, RunError>? {
        try transaction(writable: true, intent: "decide a tool approval") { access throws(StoreError) -> Result<ToolApproval, RunError>? in
            guard let current = try access.toolApprovals(where: "id = $1", [.text(id)]).first else { return nil }
            let result = decide(current)
            if case .success(let decided) = result, decided != current {
                try access.put(decided, new: false)
                try access.append(decided.event)
            }
            return result
        }
    }
}

extension PostgresAccess {
    private static let approvalColumns =
        "id, namespace, agent, tool, arguments, requested_at, expires_at, state, decided_by, reason, decided_at"

    func put(_ approval: ToolApproval, new: Bool) throws(StoreError) {
        let update =
            new
            ? ""
            : """
             ON CONFLICT (id) DO UPDATE SET namespace = excluded.namespace, agent = excluded.agent, tool = excluded.tool,
                arguments = excluded.arguments, requested_at = excluded.requested_at, expires_at = excluded.expires_at,
                state = excluded.state, decided_by = excluded.decided_by, reason = excluded.reason, decided_at = excluded.decided_at
            """
        wroteRunTables()
        try connection(writing: true).execute(
            "INSERT INTO tool_approvals (\(Self.approvalColumns)) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)\(update)",
            [
                .text(approval.id), .text(approval.agent.namespace), .text(approval.agent.name), .text(approval.tool),
                .text(approval.arguments), .int(approval.requestedAt.milliseconds), .int(approval.expiresAt.milliseconds),
                .text(approval.state.rawValue), .text(approval.decidedBy), .text(approval.reason), .int(approval.decidedAt?.milliseconds),
            ], intent: "store tool approval \(approval.id)")
    }

    func toolApprovals(where condition: String, _ binds: [PostgresValue]) throws(StoreError) -> [ToolApproval] {
        var result: [ToolApproval] = []
        for row in try connection().query(
            "SELECT \(Self.approvalColumns) FROM tool_approvals WHERE \(condition) ORDER BY requested_at, id", binds,
            intent: "read tool approvals")
        {
            let stateText = try row.text(7)
            guard let state = ToolApproval.State(rawValue: stateText) else {
                throw StoreError("the stored tool approval \(try row.text(0)) is corrupt (state \(stateText))")
            }
            result.append(
                ToolApproval(
                    id: try row.text(0),
                    agent: ResourceID(kind: ResourceKind.agent.rawValue, namespace: try row.text(1), name: try row.text(2)),
                    tool: try row.text(3), arguments: try row.text(4), requestedAt: Timestamp(milliseconds: try row.int64(5)),
                    expiresAt: Timestamp(milliseconds: try row.int64(6)), state: state, decidedBy: try row.optionalText(8),
                    reason: try row.optionalText(9), decidedAt: try row.optionalInt64(10).map(Timestamp.init(milliseconds:))))
        }
        return result
    }
}

/// Spend per UTC day, from the ledger and the daily roll-ups retention leaves.
extension PostgresStateStore: SpendHistory {
    public func dailySpend(since: Timestamp, until: Timestamp?, agent: ResourceID?) throws(StoreError) -> [Int: Charge] {
        try transaction(writable: false, intent: "sum the spend per day") { access throws(StoreError) in
            let session = try access.connection()
            var binds: [PostgresValue] = [.int(since.milliseconds)]
            var filter = ""
            if let agent {
                binds += [.text(agent.kind), .text(agent.namespace), .text(agent.name)]
                filter += " AND kind = $2 AND namespace = $3 AND name = $4"
            }
            let end = until == nil ? "" : " AND time < $\(binds.count + 1)"
            var days: [Int: Charge] = [:]
            func add(_ day: Int, _ usd: Double, _ tokens: Double) {
                let before = days[day] ?? Charge(usd: 0, tokens: 0)
                days[day] = Charge(usd: before.usd + usd, tokens: before.tokens + Int(clamping: Int64(tokens)))
            }
            let intent = "sum the spend per day"
            for row in try session.query(
                """
                SELECT (time / 86400000)::bigint, coalesce(sum(usd), 0)::float8, coalesce(sum(prompt_tokens + completion_tokens), 0)::float8
                FROM ledger WHERE time >= $1\(filter)\(end) GROUP BY time / 86400000
                """, binds + (until.map { [.int($0.milliseconds)] } ?? []), intent: intent)
            {
                add(try row.int(0), try row.double(1), try row.double(2))
            }
            let first = CivilDate(daysSinceEpoch: Int(since.milliseconds / 86_400_000))
            func pad(_ value: Int, _ width: Int) -> String {
                let text = String(value)
                return String(repeating: "0", count: max(0, width - text.count)) + text
            }
            func dayText(_ date: CivilDate) -> String { "\(pad(date.year, 4))-\(pad(date.month, 2))-\(pad(date.day, 2))" }
            binds[0] = .text(dayText(first))
            if let until {
                // The days wholly before `until`, and the one it falls in when it is not a midnight.
                binds.append(.text(dayText(CivilDate(daysSinceEpoch: Int((until.milliseconds + 86_399_999) / 86_400_000)))))
            }
            for row in try session.query(
                """
                SELECT day, coalesce(sum(usd), 0)::float8, coalesce(sum(prompt_tokens + completion_tokens), 0)::float8
                FROM ledger_daily WHERE day >= $1\(filter)\(until == nil ? "" : " AND day < $\(binds.count)") GROUP BY day
                """, binds, intent: intent)
            {
                let parts = try row.text(0).split(separator: "-").compactMap { Int($0) }
                guard parts.count == 3 else { continue }
                add(CivilDate(year: parts[0], month: parts[1], day: parts[2]).daysSinceEpoch, try row.double(1), try row.double(2))
            }
            return days
        }
    }
}
