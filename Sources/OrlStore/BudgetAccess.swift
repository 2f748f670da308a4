public import OrlCore

/// Budget reservations in the state's database. A SQLite write is exclusive
/// (`BEGIN IMMEDIATE`), so the checks of one reservation see every other's, in any process.
extension SQLiteStateStore: BudgetReservations {
    public func reserve(
        _ amount: BudgetAmount, against lines: [BudgetLine], spentBefore: [BudgetLineKey: BudgetAmount], now: Timestamp,
        holder: BudgetHolder?
    ) throws(StoreError) -> BudgetReservation {
        try transaction(.immediate, intent: "reserve against a budget") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            let ordered = lines.sorted()
            for line in ordered {
                let key = line.key
                let before = spentBefore[key] ?? BudgetAmount(microUSD: 0, tokens: 0)
                try database.withStatement(
                    """
                    INSERT INTO budget_lines (budget_namespace, budget_name, agent_namespace, agent_name, period, period_start,
                        cap_micro_usd, cap_tokens, spent_micro_usd, spent_tokens, reserved_micro_usd, reserved_tokens)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, 0) ON CONFLICT DO NOTHING
                    """, intent: "count a budget line"
                ) { s throws(StoreError) in
                    try Self.bind(key, s)
                    try s.bind(7, line.cap.microUSD)
                    try s.bind(8, line.cap.tokens)
                    try s.bind(9, before.microUSD ?? 0)
                    try s.bind(10, before.tokens ?? 0)
                    try s.run(intent: "count a budget line")
                }
            }
            // The write is exclusive: what the checks read cannot change before the updates.
            for line in ordered {
                let key = line.key
                guard let state = try Self.lines(database, where: Self.keyFilter, key: key).first else {
                    throw StoreError("budget line \(key) vanished inside its transaction")
                }
                let cap = line.cap
                let usdOver = cap.microUSD.map {
                    (state.spent.microUSD ?? 0) + (state.reserved.microUSD ?? 0) + (amount.microUSD ?? 0) > $0
                }
                let tokensOver = cap.tokens.map { (state.spent.tokens ?? 0) + (state.reserved.tokens ?? 0) + (amount.tokens ?? 0) > $0 }
                if usdOver == true || tokensOver == true {
                    var refused = state
                    refused.cap = cap
                    return .refused(refused)
                }
            }
            for line in ordered {
                try database.withStatement(
                    """
                    UPDATE budget_lines SET cap_micro_usd = ?7, cap_tokens = ?8,
                        reserved_micro_usd = reserved_micro_usd + ?9, reserved_tokens = reserved_tokens + ?10
                    WHERE \(Self.keyFilter)
                    """, intent: "reserve against a budget line"
                ) { s throws(StoreError) in
                    try Self.bind(line.key, s)
                    try s.bind(7, line.cap.microUSD)
                    try s.bind(8, line.cap.tokens)
                    try s.bind(9, amount.microUSD ?? 0)
                    try s.bind(10, amount.tokens ?? 0)
                    try s.run(intent: "reserve against a budget line")
                }
            }
            let expires = try holder.map { holder throws(StoreError) in try SQLNodes.now(database) + holder.lease.wholeMilliseconds }
            let id = try database.withStatement(
                """
                INSERT INTO budget_holds (micro_usd, tokens, created_at, lines, owner, node, node_generation, expires_at)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                """, intent: "record a budget hold"
            ) { s throws(StoreError) -> Int64 in
                try s.bind(1, amount.microUSD ?? 0)
                try s.bind(2, amount.tokens ?? 0)
                try s.bind(3, now.milliseconds)
                try s.bind(4, BudgetLineKey.encode(ordered.map(\.key)))
                try s.bind(5, holder?.owner ?? "")
                try s.bind(6, holder?.node ?? "")
                try s.bind(7, holder?.generation ?? 0)
                try s.bind(8, expires)
                try s.run(intent: "record a budget hold")
                return database.lastInsertedRowID
            }
            return .reserved(BudgetHold(id: id, amount: amount, lines: ordered.map(\.key)))
        }
    }

    public func settle(_ hold: Int64, cost: BudgetAmount) throws(StoreError) -> Bool {
        try end(hold, cost: cost)
    }

    public func release(_ hold: Int64) throws(StoreError) -> Bool {
        try end(hold, cost: nil)
    }

    private func end(_ hold: Int64, cost: BudgetAmount?) throws(StoreError) -> Bool {
        try transaction(.immediate, intent: cost == nil ? "release a budget hold" : "settle a budget hold") {
            access throws(StoreError) -> Bool in
            let database = try access.connection(writing: true)
            // Deleting claims the hold: of a settlement, a release and an expiry, one gets it.
            let found = try database.withStatement(
                "DELETE FROM budget_holds WHERE id = ?1 RETURNING micro_usd, tokens, lines, released_at IS NOT NULL",
                intent: "end a budget hold"
            ) { s throws(StoreError) -> (BudgetAmount, String, Bool)? in
                try s.bind(1, hold)
                guard try s.step(intent: "end a budget hold") else { return nil }
                let held = (BudgetAmount(microUSD: s.int64(0), tokens: s.int64(1)), s.text(2), s.int64(3) != 0)
                _ = try s.step(intent: "end a budget hold")
                return held
            }
            guard let (reserved, text, released) = found else { return false }
            guard let keys = BudgetLineKey.decode(text) else { throw StoreError("budget hold \(hold) is corrupt (its lines)") }
            // Released as abandoned: its reservation was given back then; only a cost is left to count.
            if released && cost == nil { return true }
            let held = released ? BudgetAmount.none : reserved
            for key in keys.sorted() {
                try database.withStatement(
                    """
                    UPDATE budget_lines SET reserved_micro_usd = reserved_micro_usd - ?7, reserved_tokens = reserved_tokens - ?8,
                        spent_micro_usd = spent_micro_usd + ?9, spent_tokens = spent_tokens + ?10
                    WHERE budget_namespace = ?1 AND budget_name = ?2 AND agent_namespace = ?3 AND agent_name = ?4
                        AND period = ?5 AND period_start = ?6
                    """, intent: "settle a budget line"
                ) { s throws(StoreError) in
                    try Self.bind(key, s)
                    try s.bind(7, held.microUSD ?? 0)
                    try s.bind(8, held.tokens ?? 0)
                    try s.bind(9, cost?.microUSD ?? 0)
                    try s.bind(10, cost?.tokens ?? 0)
                    try s.run(intent: "settle a budget line")
                }
            }
            return true
        }
    }

    public func renewHolds(of owner: String, lease: Duration) throws(StoreError) -> Int {
        try transaction(.immediate, intent: "renew budget holds") { access throws(StoreError) -> Int in
            let database = try access.connection(writing: true)
            let expires = try SQLNodes.now(database) + lease.wholeMilliseconds
            return try database.withStatement(
                "UPDATE budget_holds SET expires_at = ?2 WHERE owner = ?1 AND released_at IS NULL AND expires_at IS NOT NULL",
                intent: "renew budget holds"
            ) { s throws(StoreError) -> Int in
                try s.bind(1, owner)
                try s.bind(2, expires)
                try s.run(intent: "renew budget holds")
                return database.changes
            }
        }
    }

    public func releaseAbandonedHolds() throws(StoreError) -> Int {
        // Most sweeps find nothing: they look first without the write lock.
        let due = try transaction(.deferred, intent: "look for abandoned budget holds") { access throws(StoreError) -> Bool in
            let database = try access.connection()
            let now = try SQLNodes.now(database)
            return try database.withStatement(
                "SELECT EXISTS (SELECT 1 FROM budget_holds h WHERE \(Self.abandoned)) OR EXISTS (SELECT 1 FROM budget_holds WHERE released_at < ?2)",
                intent: "look for abandoned budget holds"
            ) { s throws(StoreError) -> Bool in
                try s.bind(1, now)
                try s.bind(2, now - BudgetHolder.releasedMemory.wholeMilliseconds)
                return try s.step(intent: "look for abandoned budget holds") && s.int64(0) != 0
            }
        }
        guard due else { return 0 }
        return try transaction(.immediate, intent: "release abandoned budget holds") { access throws(StoreError) -> Int in
            let database = try access.connection(writing: true)
            let now = try SQLNodes.now(database)
            let intent = "release abandoned budget holds"
            let holds = try database.withStatement(
                "UPDATE budget_holds AS h SET released_at = ?1 WHERE \(Self.abandoned) RETURNING id, micro_usd, tokens, lines",
                intent: intent
            ) { s throws(StoreError) -> [(Int64, BudgetAmount, String)] in
                try s.bind(1, now)
                var holds: [(Int64, BudgetAmount, String)] = []
                while try s.step(intent: intent) {
                    holds.append((s.int64(0), BudgetAmount(microUSD: s.int64(1), tokens: s.int64(2)), s.text(3)))
                }
                return holds
            }
            for (key, amount) in try Self.byLine(holds).sorted(by: { $0.key < $1.key }) {
                try database.withStatement(
                    """
                    UPDATE budget_lines SET reserved_micro_usd = reserved_micro_usd - ?7, reserved_tokens = reserved_tokens - ?8
                    WHERE \(Self.keyFilter)
                    """, intent: intent
                ) { s throws(StoreError) in
                    try Self.bind(key, s)
                    try s.bind(7, amount.microUSD ?? 0)
                    try s.bind(8, amount.tokens ?? 0)
                    try s.run(intent: intent)
                }
            }
            try database.withStatement("DELETE FROM budget_holds WHERE released_at < ?1", intent: "forget released budget holds") {
                s throws(StoreError) in
                try s.bind(1, now - BudgetHolder.releasedMemory.wholeMilliseconds)
                try s.run(intent: "forget released budget holds")
            }
            return holds.count
        }
    }

    /// A hold (`h`) no one will settle in time: its gateway stopped renewing it, or its node's
    /// lease under the generation it was made with is no longer live (?1: the database's now).
    static let abandoned = """
        h.released_at IS NULL AND h.expires_at IS NOT NULL AND (h.expires_at <= ?1 OR (h.node <> '' AND NOT EXISTS (
            SELECT 1 FROM nodes n WHERE n.name = h.node AND n.generation = h.node_generation AND n.expires_at > ?1)))
        """

    /// What the holds reserved, summed per line.
    static func byLine(_ holds: [(Int64, BudgetAmount, String)]) throws(StoreError) -> [BudgetLineKey: BudgetAmount] {
        var sums: [BudgetLineKey: BudgetAmount] = [:]
        for (id, amount, text) in holds {
            guard let keys = BudgetLineKey.decode(text) else { throw StoreError("budget hold \(id) is corrupt (its lines)") }
            for key in keys {
                let sum = sums[key] ?? .none
                sums[key] = BudgetAmount(
                    microUSD: (sum.microUSD ?? 0) + (amount.microUSD ?? 0), tokens: (sum.tokens ?? 0) + (amount.tokens ?? 0))
            }
        }
        return sums
    }

    public func budgetLines(since: Timestamp?) throws(StoreError) -> [BudgetLineState] {
        try transaction(.deferred, intent: "read the budget lines") { access throws(StoreError) in
            let database = try access.connection()
            let intent = "read the budget lines"
            return try database.withStatement(
                "SELECT \(Self.lineColumns) FROM budget_lines WHERE period_start >= ?1 ORDER BY \(Self.keyColumns)", intent: intent
            ) { s throws(StoreError) in
                try s.bind(1, since?.milliseconds ?? Int64.min)
                var lines: [BudgetLineState] = []
                while try s.step(intent: intent) { lines.append(Self.line(s)) }
                return lines
            }
        }
    }

    // MARK: Helpers

    static let keyColumns = "budget_namespace, budget_name, agent_namespace, agent_name, period, period_start"
    static let lineColumns =
        "\(keyColumns), cap_micro_usd, cap_tokens, spent_micro_usd, spent_tokens, reserved_micro_usd, reserved_tokens"
    static let keyFilter =
        "budget_namespace = ?1 AND budget_name = ?2 AND agent_namespace = ?3 AND agent_name = ?4 AND period = ?5 AND period_start = ?6"

    static func bind(_ key: BudgetLineKey, _ s: Statement) throws(StoreError) {
        try s.bind(1, key.budgetNamespace)
        try s.bind(2, key.budgetName)
        try s.bind(3, key.agentNamespace)
        try s.bind(4, key.agentName)
        try s.bind(5, key.window)
        try s.bind(6, key.windowStart)
    }

    static func line(_ s: Statement) -> BudgetLineState {
        BudgetLineState(
            key: BudgetLineKey(
                budgetNamespace: s.text(0), budgetName: s.text(1), agentNamespace: s.text(2), agentName: s.text(3), window: s.text(4),
                windowStart: s.int64(5)),
            cap: BudgetAmount(microUSD: s.optionalInt64(6), tokens: s.optionalInt64(7)),
            spent: BudgetAmount(microUSD: s.int64(8), tokens: s.int64(9)),
            reserved: BudgetAmount(microUSD: s.int64(10), tokens: s.int64(11)))
    }

    static func lines(_ database: Database, where filter: String, key: BudgetLineKey) throws(StoreError) -> [BudgetLineState] {
        let intent = "read a budget line"
        return try database.withStatement("SELECT \(lineColumns) FROM budget_lines WHERE \(filter)", intent: intent) {
            s throws(StoreError) in
            try bind(key, s)
            var lines: [BudgetLineState] = []
            while try s.step(intent: intent) { lines.append(line(s)) }
            return lines
        }
    }
}

extension BudgetAmount {
    static let none = BudgetAmount(microUSD: 0, tokens: 0)
}
