public import OrlCore
import PostgresNIO

/// Budget reservations exact across processes and machines. A reservation is, per line,
/// one conditional UPDATE (`… WHERE spent + reserved + amount <= cap RETURNING`): the row
/// lock it takes makes a concurrent reserver on the same line wait, and then re-check the
/// condition against the committed row (READ COMMITTED re-evaluates it), so the sum never
/// passes the cap. Lines are updated in key order, so two reservations never deadlock.
/// None of this takes the state's write lock: reservations do not queue behind an apply.
///
/// Reservations and settlements commit without waiting for the WAL to reach the disk
/// (`synchronous_commit = off`, for these transactions only): every gateway's calls on a
/// budget queue for its line's row, which is held until the commit, so a flush per call
/// would cap a budget at a few dozen calls a second on an ordinary disk. The order of
/// commits is kept and nothing is torn; a crash of the server (not of a client) can lose
/// the last fraction of a second of them (`wal_writer_delay`, 200 ms by default, times
/// three at most), which the ledger, written durably, still records.
extension PostgresStateStore: BudgetReservations {
    public func reserve(
        _ amount: BudgetAmount, against lines: [BudgetLine], spentBefore: [BudgetLineKey: BudgetAmount], now: Timestamp,
        holder: BudgetHolder?
    ) throws(StoreError) -> BudgetReservation {
        let intent = "reserve against a budget"
        let ordered = lines.sorted()
        return try pool.withConnection(intent: intent) { session throws(StoreError) -> BudgetReservation in
            try session.execute("BEGIN ISOLATION LEVEL READ COMMITTED", intent: intent)
            do throws(StoreError) {
                try session.execute("SET LOCAL synchronous_commit TO off", intent: intent)
                // The hold first: the lines' row locks, which serialize every gateway's calls
                // on a budget, are then held for one statement and the commit only.
                // Its lease by the server's clock (nodes whose clocks disagree agree on it).
                let id = try session.query(
                    """
                    INSERT INTO budget_holds (micro_usd, tokens, created_at, lines, owner, node, node_generation, expires_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, \(PostgresNodes.now) + $8::bigint) RETURNING id
                    """,
                    [
                        .int(amount.microUSD ?? 0), .int(amount.tokens ?? 0), .int(now.milliseconds),
                        .text(BudgetLineKey.encode(ordered.map(\.key))), .text(holder?.owner ?? ""), .text(holder?.node ?? ""),
                        .int(holder?.generation ?? 0), .int(holder?.lease.wholeMilliseconds),
                    ],
                    intent: "record a budget hold"
                ).first.map { row throws(StoreError) in try row.int64(0) }
                guard let id else { throw StoreError("cannot \(intent): the hold was not recorded") }
                for line in ordered {
                    let key = line.key
                    let before = spentBefore[key] ?? BudgetAmount(microUSD: 0, tokens: 0)
                    try session.execute(
                        """
                        INSERT INTO budget_lines (budget_namespace, budget_name, agent_namespace, agent_name, period, period_start,
                            cap_micro_usd, cap_tokens, spent_micro_usd, spent_tokens, reserved_micro_usd, reserved_tokens)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 0) ON CONFLICT DO NOTHING
                        """,
                        Self.binds(key) + [
                            .int(line.cap.microUSD), .int(line.cap.tokens), .int(before.microUSD ?? 0), .int(before.tokens ?? 0),
                        ],
                        intent: "count a budget line")
                    let granted = try session.query(
                        """
                        UPDATE budget_lines SET cap_micro_usd = $7, cap_tokens = $8,
                            reserved_micro_usd = reserved_micro_usd + $9, reserved_tokens = reserved_tokens + $10
                        WHERE \(Self.keyFilter)
                            AND ($7::bigint IS NULL OR spent_micro_usd + reserved_micro_usd + $9 <= $7::bigint)
                            AND ($8::bigint IS NULL OR spent_tokens + reserved_tokens + $10 <= $8::bigint)
                        RETURNING 1
                        """,
                        Self.binds(key) + [
                            .int(line.cap.microUSD), .int(line.cap.tokens), .int(amount.microUSD ?? 0), .int(amount.tokens ?? 0),
                        ],
                        intent: "reserve against a budget line")
                    if granted.isEmpty {
                        // The line as it stands (this statement waited for the row's lock, so
                        // it reads what the refusing check read or later).
                        let found = try session.query(
                            "SELECT \(Self.lineColumns) FROM budget_lines WHERE \(Self.keyFilter)", Self.binds(key), intent: intent)
                        var state =
                            try found.first.map { row throws(StoreError) in try Self.line(row) }
                            ?? BudgetLineState(key: key, cap: line.cap, spent: before, reserved: BudgetAmount(microUSD: 0, tokens: 0))
                        state.cap = line.cap
                        try session.execute("ROLLBACK", intent: intent)
                        return .refused(state)
                    }
                }
                try session.execute("COMMIT", intent: intent)
                return .reserved(BudgetHold(id: id, amount: amount, lines: ordered.map(\.key)))
            } catch {
                if !session.isBroken { _ = try? session.execute("ROLLBACK", intent: intent) }
                throw error
            }
        }
    }

    public func settle(_ hold: Int64, cost: BudgetAmount) throws(StoreError) -> Bool {
        try end(hold, cost: cost)
    }

    public func release(_ hold: Int64) throws(StoreError) -> Bool {
        try end(hold, cost: nil)
    }

    private func end(_ hold: Int64, cost: BudgetAmount?) throws(StoreError) -> Bool {
        let intent = cost == nil ? "release a budget hold" : "settle a budget hold"
        return try pool.withConnection(intent: intent) { session throws(StoreError) -> Bool in
            try session.execute("BEGIN ISOLATION LEVEL READ COMMITTED", intent: intent)
            do throws(StoreError) {
                try session.execute("SET LOCAL synchronous_commit TO off", intent: intent)
                // Deleting claims the hold: of two settlers (or a settler and an expiry), one
                // gets the row, the other none; a DELETE that waited for an expiry's UPDATE
                // returns the row as released.
                guard
                    let row = try session.query(
                        "DELETE FROM budget_holds WHERE id = $1 RETURNING micro_usd, tokens, lines, CASE WHEN released_at IS NULL THEN 0::bigint ELSE 1::bigint END",
                        [.int(hold)],
                        intent: intent
                    ).first
                else {
                    try session.execute("ROLLBACK", intent: intent)
                    return false
                }
                guard let keys = BudgetLineKey.decode(try row.text(2)) else {
                    throw StoreError("budget hold \(hold) is corrupt (its lines)")
                }
                // Released as abandoned: its reservation was given back then; only a cost is left to count.
                let released = try row.int64(3) != 0
                if released && cost == nil {
                    try session.execute("COMMIT", intent: intent)
                    return true
                }
                let held =
                    released ? BudgetAmount(microUSD: 0, tokens: 0) : BudgetAmount(microUSD: try row.int64(0), tokens: try row.int64(1))
                for key in keys.sorted() {
                    try session.execute(
                        """
                        UPDATE budget_lines SET reserved_micro_usd = reserved_micro_usd - $7, reserved_tokens = reserved_tokens - $8,
                            spent_micro_usd = spent_micro_usd + $9, spent_tokens = spent_tokens + $10
                        WHERE \(Self.keyFilter)
                        """,
                        Self.binds(key) + [
                            .int(held.microUSD ?? 0), .int(held.tokens ?? 0), .int(cost?.microUSD ?? 0), .int(cost?.tokens ?? 0),
                        ],
                        intent: intent)
                }
                try session.execute("COMMIT", intent: intent)
                return true
            } catch {
                if !session.isBroken { _ = try? session.execute("ROLLBACK", intent: intent) }
                throw error
            }
        }
    }

    public func renewHolds(of owner: String, lease: Duration) throws(StoreError) -> Int {
        let intent = "renew budget holds"
        return try pool.withConnection(intent: intent) { session throws(StoreError) -> Int in
            // One statement, its own transaction: no line is locked.
            try session.execute(
                """
                UPDATE budget_holds SET expires_at = \(PostgresNodes.now) + $2::bigint
                WHERE owner = $1 AND released_at IS NULL AND expires_at IS NOT NULL
                """, [.text(owner), .int(lease.wholeMilliseconds)], intent: intent)
        }
    }

    public func releaseAbandonedHolds() throws(StoreError) -> Int {
        let intent = "release abandoned budget holds"
        return try pool.withConnection(intent: intent) { session throws(StoreError) -> Int in
            try session.execute("BEGIN ISOLATION LEVEL READ COMMITTED", intent: intent)
            do throws(StoreError) {
                try session.execute("SET LOCAL synchronous_commit TO off", intent: intent)
                let now = try session.query("SELECT \(PostgresNodes.now)", intent: intent).first.map { row throws(StoreError) in
                    try row.int64(0)
                }
                guard let now else { throw StoreError("cannot \(intent): the server's time was not read") }
                // The UPDATE claims each hold (its row lock): a settlement or another sweep that
                // meets it waits, then finds it released (or gone) and does not give it back again.
                let rows = try session.query(
                    """
                    UPDATE budget_holds h SET released_at = $1
                    WHERE h.released_at IS NULL AND h.expires_at IS NOT NULL AND (h.expires_at <= $1 OR (h.node <> '' AND NOT EXISTS (
                        SELECT 1 FROM nodes n WHERE n.name = h.node AND n.generation = h.node_generation AND n.expires_at > $1)))
                    RETURNING id, micro_usd, tokens, lines
                    """, [.int(now)], intent: intent)
                var sums: [BudgetLineKey: (Int64, Int64)] = [:]
                for row in rows {
                    guard let keys = BudgetLineKey.decode(try row.text(3)) else {
                        throw StoreError("budget hold \(try row.int64(0)) is corrupt (its lines)")
                    }
                    let (usd, tokens) = (try row.int64(1), try row.int64(2))
                    for key in keys {
                        let sum = sums[key] ?? (0, 0)
                        sums[key] = (sum.0 + usd, sum.1 + tokens)
                    }
                }
                // In key order, as reservations lock lines: no cycle of waits.
                for (key, amount) in sums.sorted(by: { $0.key < $1.key }) {
                    try session.execute(
                        """
                        UPDATE budget_lines SET reserved_micro_usd = reserved_micro_usd - $7, reserved_tokens = reserved_tokens - $8
                        WHERE \(Self.keyFilter)
                        """, Self.binds(key) + [.int(amount.0), .int(amount.1)], intent: intent)
                }
                try session.execute(
                    "DELETE FROM budget_holds WHERE released_at < $1", [.int(now - BudgetHolder.releasedMemory.wholeMilliseconds)],
                    intent: "forget released budget holds")
                try session.execute("COMMIT", intent: intent)
                return rows.count
            } catch {
                if !session.isBroken { _ = try? session.execute("ROLLBACK", intent: intent) }
                throw error
            }
        }
    }

    public func budgetLines(since: Timestamp?) throws(StoreError) -> [BudgetLineState] {
        try transaction(writable: false, intent: "read the budget lines") { access throws(StoreError) in
            var lines: [BudgetLineState] = []
            for row in try access.connection().query(
                "SELECT \(Self.lineColumns) FROM budget_lines WHERE period_start >= $1 ORDER BY \(Self.keyColumns)",
                [.int(since?.milliseconds ?? Int64.min)], intent: "read the budget lines")
            {
                lines.append(try Self.line(row))
            }
            return lines
        }
    }

    private static let keyColumns = "budget_namespace, budget_name, agent_namespace, agent_name, period, period_start"
    private static let lineColumns =
        "\(keyColumns), cap_micro_usd, cap_tokens, spent_micro_usd, spent_tokens, reserved_micro_usd, reserved_tokens"
    private static let keyFilter =
        "budget_namespace = $1 AND budget_name = $2 AND agent_namespace = $3 AND agent_name = $4 AND period = $5 AND period_start = $6"

    private static func binds(_ key: BudgetLineKey) -> [PostgresValue] {
        [
            .text(key.budgetNamespace), .text(key.budgetName), .text(key.agentNamespace), .text(key.agentName), .text(key.window),
            .int(key.windowStart),
        ]
    }

    private static func line(_ row: PostgresRandomAccessRow) throws(StoreError) -> BudgetLineState {
        BudgetLineState(
            key: BudgetLineKey(
                budgetNamespace: try row.text(0), budgetName: try row.text(1), agentNamespace: try row.text(2), agentName: try row.text(3),
                window: try row.text(4), windowStart: try row.int64(5)),
            cap: BudgetAmount(microUSD: try row.optionalInt64(6), tokens: try row.optionalInt64(7)),
            spent: BudgetAmount(microUSD: try row.int64(8), tokens: try row.int64(9)),
            reserved: BudgetAmount(microUSD: try row.int64(10), tokens: try row.int64(11)))
    }
}
