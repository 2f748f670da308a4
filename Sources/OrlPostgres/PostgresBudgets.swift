public import OrlCore
import PostgresNIO

/// Budget reservations exact across processes and machines. A reservation is, per line,
/// one conditional UPDATE (`… WHERE spent + reserved + amount <= cap`): the row lock it
/// takes makes a concurrent reserver on the same line wait, and then re-check the
/// condition against the committed row (READ COMMITTED re-evaluates it), so the sum never
/// passes the cap. Lines are updated in key order, so two reservations never deadlock.
/// None of this takes the state's write lock: reservations do not queue behind an apply.
///
/// A reservation is one statement and so is a settlement (functions of the schema, see
/// `PostgresSchema`): one round trip each, and a line's row lock is held for that statement
/// and its commit, never while the client and the server talk, which is what bounds the
/// calls a second one budget can take from every gateway together.
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
        let statement = Self.reservation(amount, lines, spentBefore, now, holder)
        let rows = try pool.withConnection(intent: statement.intent) { session throws(StoreError) in
            try session.query(statement.sql, statement.binds, intent: statement.intent)
        }
        return try statement.outcome(rows)
    }

    public func settle(_ hold: Int64, cost: BudgetAmount) throws(StoreError) -> Bool {
        try end(hold, cost: cost)
    }

    public func release(_ hold: Int64) throws(StoreError) -> Bool {
        try end(hold, cost: nil)
    }

    private func end(_ hold: Int64, cost: BudgetAmount?) throws(StoreError) -> Bool {
        let statement = Self.ending(hold, cost: cost)
        return try !pool.withConnection(intent: statement.intent) { session throws(StoreError) in
            try session.query(statement.sql, statement.binds, intent: statement.intent)
        }.isEmpty
    }

    /// A reservation's statement and how to read its answer.
    struct Reservation {
        var sql: String
        var binds: [PostgresValue]
        var intent: String
        var outcome: ([PostgresRandomAccessRow]) throws(StoreError) -> BudgetReservation
    }

    /// One statement, its own transaction: `orl_budget_reserve` (PostgresSchema) takes the
    /// lines in key order and refuses them all if one is full; the hold is recorded when
    /// none was, with its holder and its lease by the server's clock (nodes whose clocks
    /// disagree agree on it).
    static func reservation(
        _ amount: BudgetAmount, _ lines: [BudgetLine], _ spentBefore: [BudgetLineKey: BudgetAmount], _ now: Timestamp,
        _ holder: BudgetHolder?
    ) -> Reservation {
        let intent = "reserve against a budget"
        let ordered = lines.sorted()
        let keys = ordered.map(\.key)
        let before = keys.map { spentBefore[$0] ?? BudgetAmount(microUSD: 0, tokens: 0) }
        let sql = """
            WITH r AS MATERIALIZED (
                SELECT * FROM orl_budget_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            ), hold AS (
                INSERT INTO budget_holds (micro_usd, tokens, created_at, lines, owner, node, node_generation, expires_at)
                SELECT $11, $12, $13, $14, $15, $16, $17, \(PostgresNodes.now) + $18::bigint FROM r WHERE r.refused_line IS NULL
                RETURNING id
            )
            SELECT (SELECT id FROM hold), r.refused_line::bigint, r.line_spent_usd, r.line_spent_tokens, r.line_reserved_usd,
                r.line_reserved_tokens
            FROM r
            """
        let binds: [PostgresValue] = [
            .texts(keys.map(\.budgetNamespace)), .texts(keys.map(\.budgetName)), .texts(keys.map(\.agentNamespace)),
            .texts(keys.map(\.agentName)), .texts(keys.map(\.window)), .ints(keys.map(\.windowStart)),
            .ints(ordered.map { $0.cap.microUSD ?? -1 }), .ints(ordered.map { $0.cap.tokens ?? -1 }),
            .ints(before.map { $0.microUSD ?? 0 }), .ints(before.map { $0.tokens ?? 0 }), .int(amount.microUSD ?? 0),
            .int(amount.tokens ?? 0), .int(now.milliseconds), .text(BudgetLineKey.encode(keys)), .text(holder?.owner ?? ""),
            .text(holder?.node ?? ""), .int(holder?.generation ?? 0), .int(holder?.lease.wholeMilliseconds),
        ]
        return Reservation(sql: sql, binds: binds, intent: intent) { rows throws(StoreError) in
            guard let row = rows.first else { throw StoreError("cannot \(intent): the database returned nothing") }
            if let id = try row.optionalInt64(0) {
                return .reserved(BudgetHold(id: id, amount: amount, lines: keys))
            }
            guard let refused = try row.optionalInt64(1), refused >= 1, refused <= ordered.count else {
                throw StoreError("cannot \(intent): the database neither reserved nor refused")
            }
            let line = ordered[Int(refused) - 1]
            return .refused(
                BudgetLineState(
                    key: line.key, cap: line.cap, spent: BudgetAmount(microUSD: try row.int64(2), tokens: try row.int64(3)),
                    reserved: BudgetAmount(microUSD: try row.int64(4), tokens: try row.int64(5))))
        }
    }

    /// One statement: deleting claims the hold (of two settlers, or a settler and an
    /// expiry, one gets the row, the other none; a DELETE that waited for an expiry's UPDATE
    /// returns the row as released), `orl_budget_settle` moves its amount off its lines in
    /// key order. A hold released as abandoned gave its reservation back then: only a cost
    /// is left to count. A row back means the hold was known.
    static func ending(_ hold: Int64, cost: BudgetAmount?) -> (sql: String, binds: [PostgresValue], intent: String) {
        (
            """
            WITH hold AS (
                DELETE FROM budget_holds WHERE id = $1 RETURNING micro_usd, tokens, lines, released_at IS NOT NULL AS released
            )
            SELECT CASE WHEN released AND $4::bigint = 1 THEN true
                ELSE orl_budget_settle(lines, CASE WHEN released THEN 0 ELSE micro_usd END, CASE WHEN released THEN 0 ELSE tokens END,
                    $2, $3) END
            FROM hold
            """, [.int(hold), .int(cost?.microUSD ?? 0), .int(cost?.tokens ?? 0), .int(cost == nil ? 1 : 0)],
            cost == nil ? "release a budget hold" : "settle a budget hold"
        )
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

/// The gateway's path: the same statements, awaited without holding a thread.
extension PostgresStateStore: AsyncBudgetReservations {
    public func reserve(
        _ amount: BudgetAmount, against lines: [BudgetLine], spentBefore: [BudgetLineKey: BudgetAmount], now: Timestamp,
        holder: BudgetHolder?
    ) async throws(StoreError) -> BudgetReservation {
        let statement = Self.reservation(amount, lines, spentBefore, now, holder)
        return try statement.outcome(try await pool.query(statement.sql, statement.binds, intent: statement.intent))
    }

    public func settle(_ hold: Int64, cost: BudgetAmount) async throws(StoreError) -> Bool {
        let statement = Self.ending(hold, cost: cost)
        return try await !pool.query(statement.sql, statement.binds, intent: statement.intent).isEmpty
    }

    public func release(_ hold: Int64) async throws(StoreError) -> Bool {
        let statement = Self.ending(hold, cost: nil)
        return try await !pool.query(statement.sql, statement.binds, intent: statement.intent).isEmpty
    }
}
