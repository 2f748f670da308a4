public import OrlCore
import PostgresNIO

/// Retention, the usage report, the metrics gauges and the change marker: the SQLite
/// store's (`OrlStore/Retention.swift`, `Gauges.swift`) in PostgreSQL's dialect.
extension PostgresStateStore: StateUpkeep {
    public func retain(_ policy: RetentionPolicy, now: Timestamp) throws(StoreError) -> RetentionReport {
        try transaction(writable: true, intent: "apply the retention policy") { access throws(StoreError) in
            let session = try access.connection(writing: true)
            var report = RetentionReport()
            func delete(_ sql: String, _ value: Int64, intent: String) throws(StoreError) -> Int {
                try session.execute(sql, [.int(value)], intent: intent)
            }
            if let cutoff = RetentionPolicy.cutoff(policy.runsMaxAge, now: now) {
                report.runs += try delete(
                    "DELETE FROM runs WHERE ended_at IS NOT NULL AND ended_at < $1", cutoff.milliseconds, intent: "delete old runs")
            }
            if let count = policy.runsMaxCount {
                report.runs += try delete(
                    """
                    DELETE FROM runs WHERE ended_at IS NOT NULL
                        AND id NOT IN (SELECT id FROM runs WHERE ended_at IS NOT NULL ORDER BY id DESC LIMIT $1)
                    """, Int64(count), intent: "delete the runs beyond the count kept")
            }
            // Deleted runs (their steps, attempts and values with them) move the topic.
            if report.runs > 0 { access.wroteRunTables() }
            if let cutoff = RetentionPolicy.cutoff(policy.eventsMaxAge, now: now) {
                report.events += try delete("DELETE FROM events WHERE time < $1", cutoff.milliseconds, intent: "delete old events")
            }
            if let count = policy.eventsMaxCount {
                report.events += try delete(
                    "DELETE FROM events WHERE number <= (SELECT max(number) FROM events) - $1", Int64(count),
                    intent: "delete the events beyond the count kept")
            }
            if let cutoff = RetentionPolicy.cutoff(policy.ledgerMaxAge, now: now) {
                report.ledgerDays = try session.execute(
                    """
                    INSERT INTO ledger_daily (day, kind, namespace, name, model, calls, prompt_tokens, completion_tokens, usd)
                    SELECT to_char(to_timestamp(time / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), kind, namespace, name, model,
                        count(*), sum(prompt_tokens), sum(completion_tokens), coalesce(sum(usd), 0)
                    FROM ledger WHERE time < $1 GROUP BY 1, 2, 3, 4, 5
                    ON CONFLICT (day, kind, namespace, name, model) DO UPDATE SET
                        calls = ledger_daily.calls + excluded.calls,
                        prompt_tokens = ledger_daily.prompt_tokens + excluded.prompt_tokens,
                        completion_tokens = ledger_daily.completion_tokens + excluded.completion_tokens,
                        usd = ledger_daily.usd + excluded.usd
                    """, [.int(cutoff.milliseconds)], intent: "roll the ledger up by day")
                report.ledgerRows = try delete(
                    "DELETE FROM ledger WHERE time < $1", cutoff.milliseconds, intent: "delete rolled-up ledger rows")
            }
            return report
        }
    }

    public func usage(_ query: LedgerQuery) throws(StoreError) -> (calls: [LedgerEntry], days: [LedgerDay]) {
        try transaction(writable: false, intent: "read the ledger") { access throws(StoreError) in
            (
                try access.ledger(query),
                try access.ledgerDays(agent: query.agent, from: LedgerDay.name(of: query.since ?? Timestamp(milliseconds: 0)))
            )
        }
    }

    public func ledgerDaily() throws(StoreError) -> [LedgerDay] {
        try transaction(writable: false, intent: "read the ledger's daily roll-up") { access throws(StoreError) in
            try access.ledgerDays(agent: nil, from: "")
        }
    }

    public func fleetGauges() throws(StoreError) -> FleetGauges {
        try transaction(writable: false, intent: "read the fleet's gauges") { access throws(StoreError) in
            let session = try access.connection()
            var agents: [FleetGauges.Agent] = []
            for row in try session.query(
                """
                SELECT r.namespace, r.name,
                    (SELECT c->>'message' FROM jsonb_array_elements(s.conditions::jsonb) AS c WHERE c->>'type' = 'Ready' LIMIT 1),
                    coalesce(v.restarts, 0)::bigint, coalesce(v.crashes, 0)::bigint
                FROM resources AS r
                LEFT JOIN status AS s ON s.kind = r.kind AND s.namespace = r.namespace AND s.name = r.name
                LEFT JOIN supervision AS v ON v.kind = r.kind AND v.namespace = r.namespace AND v.name = r.name
                WHERE r.kind = 'Agent' ORDER BY r.namespace, r.name
                """, intent: "read the agents' phases")
            {
                agents.append(
                    FleetGauges.Agent(
                        id: ResourceID(kind: "Agent", namespace: try row.text(0), name: try row.text(1)),
                        phase: FleetGauges.Agent.phase(readyMessage: try row.optionalText(2)), restarts: try row.int(3),
                        crashes: try row.int(4)))
            }
            var steps: [FleetGauges.StepCount] = []
            for row in try session.query(
                "SELECT namespace, state, count(*)::bigint FROM run_steps GROUP BY namespace, state ORDER BY namespace, state",
                intent: "count the run steps")
            {
                guard let state = StepState(rawValue: try row.text(1)) else { continue }
                steps.append(FleetGauges.StepCount(namespace: try row.text(0), state: state, count: try row.int(2)))
            }
            return FleetGauges(agents: agents, steps: steps, sources: try access.sources())
        }
    }

    /// The sum of the change counters (`changeGenerations`): it moves when a write to the
    /// resources, the vault, the runs or the events commits, from any connection.
    public func changeMarker() throws(StoreError) -> Int64 {
        try changeGenerations().values.reduce(0, &+)
    }

    /// Each topic's generation (resources, secrets, runs, events), moved by the writing
    /// transactions as SQLite's are.
    public func changeGenerations() throws(StoreError) -> [ChangeTopic: Int64] {
        try pool.withConnection(intent: "read the change generations") { session throws(StoreError) in
            var generations: [ChangeTopic: Int64] = [:]
            for row in try session.query("SELECT topic, generation FROM change_topics", intent: "read the change generations") {
                if let topic = ChangeTopic(rawValue: try row.text(0)) { generations[topic] = try row.int64(1) }
            }
            return generations
        }
    }
}

extension PostgresAccess {
    /// Daily roll-ups from `day` (`YYYY-MM-DD`) on, oldest first; one agent's when given.
    func ledgerDays(agent: ResourceID?, from day: String) throws(StoreError) -> [LedgerDay] {
        var binds: [PostgresValue] = [.text(day)]
        var sql = """
            SELECT day, kind, namespace, name, model, calls, prompt_tokens, completion_tokens, usd FROM ledger_daily
            WHERE day >= $1
            """
        if let agent {
            binds += [.text(agent.kind), .text(agent.namespace), .text(agent.name)]
            sql += " AND kind = $2 AND namespace = $3 AND name = $4"
        }
        sql += " ORDER BY day, namespace, name, model"
        var days: [LedgerDay] = []
        for row in try connection().query(sql, binds, intent: "read the ledger's daily roll-up") {
            days.append(
                LedgerDay(
                    day: try row.text(0), agent: ResourceID(kind: try row.text(1), namespace: try row.text(2), name: try row.text(3)),
                    model: try row.text(4), calls: try row.int(5), usage: TokenUsage(prompt: try row.int(6), completion: try row.int(7)),
                    usd: try row.double(8)))
        }
        return days
    }

    /// The events numbered after `number`, oldest first.
    func events(after number: Int, limit: Int) throws(StoreError) -> [StoreEvent] {
        var events: [StoreEvent] = []
        for row in try connection().query(
            """
            SELECT number, time, kind, resource_kind, resource_namespace, resource_name, reason, message
            FROM events WHERE number > $1 ORDER BY number LIMIT $2
            """, [.int(number), .int(max(limit, 0))], intent: "read the new events")
        {
            var subject: ResourceID?
            if let kind = try row.optionalText(3) {
                subject = ResourceID(kind: kind, namespace: try row.text(4), name: try row.text(5))
            }
            events.append(
                StoreEvent(
                    number: try row.int(0), time: Timestamp(milliseconds: try row.int64(1)),
                    kind: StoreEvent.Kind(rawValue: try row.text(2)) ?? .normal, resource: subject, reason: try row.text(6),
                    message: try row.text(7)))
        }
        return events
    }
}

/// The alert outbox beside the event log (the SQLite store's `AlertAccess.swift`): an
/// event's notifications are queued in one write with the cursor that passes it. Writes
/// take the state's write lock, so event numbers are committed in order and the cursor
/// never passes an event a slower writer has yet to commit.
extension PostgresStateStore: AlertOutbox {
    public func enqueueAlerts(
        limit: Int, route: (any StateReader, [StoreEvent]) throws(StoreError) -> [AlertNotification]
    ) throws(StoreError) -> Int {
        try transaction(writable: true, intent: "queue alerts") { access throws(StoreError) in
            let session = try access.connection(writing: true)
            let cursor =
                try session.query("SELECT event_number FROM alert_cursor WHERE id = 1", intent: "read the alert cursor").first
                .map { row throws(StoreError) in try row.int(0) } ?? 0
            let events = try access.events(after: cursor, limit: limit)
            guard let last = events.last?.number else { return 0 }
            let notifications = try route(access, events)
            for n in notifications {
                try session.execute(
                    """
                    INSERT INTO alert_outbox (event_number, namespace, alert, type, time, resource_kind, resource_namespace,
                        resource_name, reason, message, action, next_attempt_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $5) ON CONFLICT DO NOTHING
                    """,
                    [
                        .int(n.event), .text(n.alert.namespace), .text(n.alert.name), .text(n.type.rawValue), .int(n.time.milliseconds),
                        .text(n.subject.kind), .text(n.subject.namespace), .text(n.subject.name), .text(n.reason), .text(n.message),
                        .text(n.action),
                    ], intent: "queue an alert")
            }
            try session.execute(
                "INSERT INTO alert_cursor (id, event_number) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET event_number = $1",
                [.int(last)], intent: "move the alert cursor")
            return notifications.count
        }
    }

    private static let alertColumns =
        "event_number, namespace, alert, type, time, resource_kind, resource_namespace, resource_name, reason, message, action, state, attempts, last_error, delivered_at"

    private static func delivery(_ row: PostgresRandomAccessRow) throws(StoreError) -> AlertDelivery {
        let typeText = try row.text(3)
        let stateText = try row.text(11)
        guard let type = AlertEventType(rawValue: typeText), let state = AlertDelivery.State(rawValue: stateText) else {
            throw StoreError("the alert outbox row of event \(try row.int(0)) is corrupt (type \(typeText), state \(stateText))")
        }
        let notification = AlertNotification(
            event: try row.int(0), alert: ResourceID(kind: ResourceKind.alert.rawValue, namespace: try row.text(1), name: try row.text(2)),
            type: type, time: Timestamp(milliseconds: try row.int64(4)),
            subject: ResourceID(kind: try row.text(5), namespace: try row.text(6), name: try row.text(7)), reason: try row.text(8),
            message: try row.text(9), action: try row.optionalText(10))
        return AlertDelivery(
            notification: notification, state: state, attempts: try row.int(12), lastError: try row.optionalText(13),
            deliveredAt: try row.optionalInt64(14).map(Timestamp.init(milliseconds:)))
    }

    public func dueAlerts(now: Timestamp, limit: Int) throws(StoreError) -> [(notification: AlertNotification, attempts: Int)] {
        try transaction(writable: false, intent: "read the due alerts") { access throws(StoreError) in
            var out: [(AlertNotification, Int)] = []
            for row in try access.connection().query(
                """
                SELECT \(Self.alertColumns) FROM alert_outbox
                WHERE state = 'Pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, event_number LIMIT $2
                """, [.int(now.milliseconds), .int(limit)], intent: "read the due alerts")
            {
                let delivery = try Self.delivery(row)
                out.append((delivery.notification, delivery.attempts))
            }
            return out
        }
    }

    public func nextAlertDue() throws(StoreError) -> Timestamp? {
        try transaction(writable: false, intent: "read the next alert") { access throws(StoreError) in
            try access.connection().query(
                "SELECT min(next_attempt_at) FROM alert_outbox WHERE state = 'Pending'", intent: "read the next alert"
            ).first.flatMap { row throws(StoreError) in try row.optionalInt64(0) }.map(Timestamp.init(milliseconds:))
        }
    }

    public func recordAlert(
        _ n: AlertNotification, delivered: Bool, error: String?, retryAt: Timestamp?, event: StoreEvent?, now: Timestamp
    ) throws(StoreError) {
        try transaction(writable: true, intent: "record an alert delivery") { access throws(StoreError) in
            let state: AlertDelivery.State = delivered ? .delivered : retryAt == nil ? .failed : .pending
            try access.connection(writing: true).execute(
                """
                UPDATE alert_outbox SET state = $4, attempts = attempts + 1, last_error = $5, next_attempt_at = $6, delivered_at = $7
                WHERE namespace = $1 AND alert = $2 AND event_number = $3 AND state = 'Pending'
                """,
                [
                    .text(n.alert.namespace), .text(n.alert.name), .int(n.event), .text(state.rawValue), .text(error),
                    .int((retryAt ?? now).milliseconds), .int(delivered ? now.milliseconds : nil),
                ], intent: "record the delivery of \(n.id) to \(n.alert)")
            if let event { try access.append(event) }
        }
    }

    public func alertDeliveries(limit: Int) throws(StoreError) -> [AlertDelivery] {
        try transaction(writable: false, intent: "read the alert deliveries") { access throws(StoreError) in
            var out: [AlertDelivery] = []
            for row in try access.connection().query(
                "SELECT \(Self.alertColumns) FROM alert_outbox ORDER BY event_number DESC, namespace, alert LIMIT $1", [.int(limit)],
                intent: "read the alert deliveries")
            {
                out.append(try Self.delivery(row))
            }
            return out
        }
    }
}
