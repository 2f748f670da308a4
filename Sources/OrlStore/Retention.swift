public import OrlCore

extension SQLiteStateStore {
    /// Deletes the history `policy` does not keep, in one write transaction: ended runs
    /// (their steps, attempts and blackboard values go with them), events, and ledger rows,
    /// which are first added to the daily roll-up (`ledger_daily`). Running runs are never
    /// touched; budgets only read the current day and month, which the policy keeps.
    public func retain(_ policy: RetentionPolicy, now: Timestamp) throws(StoreError) -> RetentionReport {
        try transaction(.immediate, intent: "apply the retention policy") { access throws(StoreError) in
            try access.retain(policy, now: now)
        }
    }

    /// What `orlctl usage` reports, read in one transaction (so retention cannot move a
    /// call from one to the other in between): the calls since `since`, newest first, and
    /// the daily roll-ups of the days from the one holding `since` on.
    public func usage(_ query: LedgerQuery) throws(StoreError) -> (calls: [LedgerEntry], days: [LedgerDay]) {
        try transaction(.deferred, intent: "read the ledger") { access throws(StoreError) in
            (
                try access.ledger(query),
                try access.ledgerDays(agent: query.agent, from: LedgerDay.name(of: query.since ?? Timestamp(milliseconds: 0)))
            )
        }
    }

    /// The ledger's daily roll-up, oldest day first.
    public func ledgerDaily() throws(StoreError) -> [LedgerDay] {
        try transaction(.deferred, intent: "read the ledger's daily roll-up") { access throws(StoreError) in
            try access.ledgerDays(agent: nil, from: "")
        }
    }
}

extension SQLiteStateStore: StateUpkeep {}

extension SQLStateAccess {
    func retain(_ policy: RetentionPolicy, now: Timestamp) throws(StoreError) -> RetentionReport {
        let database = try connection(writing: true)
        var report = RetentionReport()
        func delete(_ sql: String, _ value: Int64, intent: String) throws(StoreError) -> Int {
            try database.withStatement(sql, intent: intent) { statement throws(StoreError) in
                try statement.bind(1, value)
                try statement.run(intent: intent)
            }
            return database.changes
        }
        if let cutoff = RetentionPolicy.cutoff(policy.runsMaxAge, now: now) {
            report.runs += try delete(
                "DELETE FROM runs WHERE ended_at IS NOT NULL AND ended_at < ?1", cutoff.milliseconds, intent: "delete old runs")
        }
        if let count = policy.runsMaxCount {
            report.runs += try delete(
                """
                DELETE FROM runs WHERE ended_at IS NOT NULL
                    AND id NOT IN (SELECT id FROM runs WHERE ended_at IS NOT NULL ORDER BY id DESC LIMIT ?1)
                """, Int64(count), intent: "delete the runs beyond the count kept")
        }
        // Deleted runs (their steps, attempts and values with them) move the topic.
        if report.runs > 0 { wroteRunTables() }
        if let cutoff = RetentionPolicy.cutoff(policy.eventsMaxAge, now: now) {
            report.events += try delete("DELETE FROM events WHERE time < ?1", cutoff.milliseconds, intent: "delete old events")
        }
        if let count = policy.eventsMaxCount {
            report.events += try delete(
                "DELETE FROM events WHERE number <= (SELECT max(number) FROM events) - ?1", Int64(count),
                intent: "delete the events beyond the count kept")
        }
        if let cutoff = RetentionPolicy.cutoff(policy.ledgerMaxAge, now: now) {
            let intent = "roll the ledger up by day"
            try database.withStatement(
                """
                INSERT INTO ledger_daily (day, kind, namespace, name, model, calls, prompt_tokens, completion_tokens, usd)
                SELECT strftime('%Y-%m-%d', time / 1000, 'unixepoch'), kind, namespace, name, model, count(*),
                    sum(prompt_tokens), sum(completion_tokens), total(usd)
                FROM ledger WHERE time < ?1 GROUP BY 1, 2, 3, 4, 5
                ON CONFLICT (day, kind, namespace, name, model) DO UPDATE SET
                    calls = calls + excluded.calls, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = completion_tokens + excluded.completion_tokens, usd = usd + excluded.usd
                """, intent: intent
            ) { statement throws(StoreError) in
                try statement.bind(1, cutoff.milliseconds)
                try statement.run(intent: intent)
            }
            report.ledgerDays = database.changes
            report.ledgerRows = try delete(
                "DELETE FROM ledger WHERE time < ?1", cutoff.milliseconds, intent: "delete rolled-up ledger rows")
        }
        return report
    }

    /// Daily roll-ups from `day` (`YYYY-MM-DD`) on, oldest first; one agent's when given.
    func ledgerDays(agent: ResourceID?, from day: String) throws(StoreError) -> [LedgerDay] {
        let intent = "read the ledger's daily roll-up"
        var sql = """
            SELECT day, kind, namespace, name, model, calls, prompt_tokens, completion_tokens, usd FROM ledger_daily
            WHERE day >= ?1
            """
        if agent != nil { sql += " AND kind = ?2 AND namespace = ?3 AND name = ?4" }
        sql += " ORDER BY day, namespace, name, model"
        return try connection().withStatement(sql, intent: intent) { statement throws(StoreError) in
            try statement.bind(1, day)
            if let agent {
                try statement.bind(2, agent.kind)
                try statement.bind(3, agent.namespace)
                try statement.bind(4, agent.name)
            }
            var days: [LedgerDay] = []
            while try statement.step(intent: intent) {
                days.append(
                    LedgerDay(
                        day: statement.text(0),
                        agent: ResourceID(kind: statement.text(1), namespace: statement.text(2), name: statement.text(3)),
                        model: statement.text(4), calls: statement.int(5),
                        usage: TokenUsage(prompt: statement.int(6), completion: statement.int(7)), usd: statement.double(8)))
            }
            return days
        }
    }
}
