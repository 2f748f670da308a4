public import OrlCore

/// The alert outbox (migration 11) beside the event log it is fed from: an event's
/// notifications are queued in one transaction with the cursor that passes it, so none is
/// queued twice or skipped, whichever controller does it.
extension SQLiteStateStore: AlertOutbox {
    public func enqueueAlerts(
        limit: Int, route: (any StateReader, [StoreEvent]) throws(StoreError) -> [AlertNotification]
    ) throws(StoreError) -> Int {
        try transaction(.immediate, intent: "queue alerts") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            let cursor = Int(
                try database.scalar("SELECT event_number FROM alert_cursor WHERE id = 1", intent: "read the alert cursor") ?? 0)
            let events = try access.events(after: cursor, limit: limit)
            guard let last = events.last?.number else { return 0 }
            let notifications = try route(access, events)
            let intent = "queue an alert"
            try database.withStatement(
                """
                INSERT OR IGNORE INTO alert_outbox (event_number, namespace, alert, type, time, resource_kind, resource_namespace,
                    resource_name, reason, message, action, next_attempt_at)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?5)
                """, intent: intent
            ) { statement throws(StoreError) in
                for n in notifications {
                    statement.reset()
                    try statement.bind(1, n.event)
                    try statement.bind(2, n.alert.namespace)
                    try statement.bind(3, n.alert.name)
                    try statement.bind(4, n.type.rawValue)
                    try statement.bind(5, n.time.milliseconds)
                    try statement.bind(6, n.subject.kind)
                    try statement.bind(7, n.subject.namespace)
                    try statement.bind(8, n.subject.name)
                    try statement.bind(9, n.reason)
                    try statement.bind(10, n.message)
                    try statement.bind(11, n.action)
                    try statement.run(intent: intent)
                }
            }
            try database.withStatement(
                "INSERT INTO alert_cursor (id, event_number) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET event_number = ?1",
                intent: "move the alert cursor"
            ) { statement throws(StoreError) in
                try statement.bind(1, last)
                try statement.run(intent: "move the alert cursor")
            }
            return notifications.count
        }
    }

    private static let columns =
        "event_number, namespace, alert, type, time, resource_kind, resource_namespace, resource_name, reason, message, action, state, attempts, last_error, delivered_at"

    private static func delivery(_ row: Statement) throws(StoreError) -> AlertDelivery {
        guard let type = AlertEventType(rawValue: row.text(3)), let state = AlertDelivery.State(rawValue: row.text(11)) else {
            throw StoreError("the alert outbox row of event \(row.int(0)) is corrupt (type \(row.text(3)), state \(row.text(11)))")
        }
        let notification = AlertNotification(
            event: row.int(0), alert: ResourceID(kind: ResourceKind.alert.rawValue, namespace: row.text(1), name: row.text(2)),
            type: type, time: Timestamp(milliseconds: row.int64(4)),
            subject: ResourceID(kind: row.text(5), namespace: row.text(6), name: row.text(7)), reason: row.text(8), message: row.text(9),
            action: row.optionalText(10))
        return AlertDelivery(
            notification: notification, state: state, attempts: row.int(12), lastError: row.optionalText(13),
            deliveredAt: row.optionalInt64(14).map(Timestamp.init(milliseconds:)))
    }

    public func dueAlerts(now: Timestamp, limit: Int) throws(StoreError) -> [(notification: AlertNotification, attempts: Int)] {
        try transaction(.deferred, intent: "read the due alerts") { access throws(StoreError) in
            let intent = "read the due alerts"
            return try access.connection().withStatement(
                """
                SELECT \(Self.columns) FROM alert_outbox
                WHERE state = 'Pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, event_number LIMIT ?2
                """, intent: intent
            ) { statement throws(StoreError) in
                try statement.bind(1, now.milliseconds)
                try statement.bind(2, limit)
                var out: [(AlertNotification, Int)] = []
                while try statement.step(intent: intent) {
                    let delivery = try Self.delivery(statement)
                    out.append((delivery.notification, delivery.attempts))
                }
                return out
            }
        }
    }

    public func nextAlertDue() throws(StoreError) -> Timestamp? {
        try transaction(.deferred, intent: "read the next alert") { access throws(StoreError) in
            try access.connection().scalar(
                "SELECT MIN(next_attempt_at) FROM alert_outbox WHERE state = 'Pending'", intent: "read the next alert"
            ).map(Timestamp.init(milliseconds:))
        }
    }

    public func recordAlert(
        _ n: AlertNotification, delivered: Bool, error: String?, retryAt: Timestamp?, event: StoreEvent?, now: Timestamp
    ) throws(StoreError) {
        try transaction(.immediate, intent: "record an alert delivery") { access throws(StoreError) in
            let intent = "record the delivery of \(n.id) to \(n.alert)"
            let state: AlertDelivery.State = delivered ? .delivered : retryAt == nil ? .failed : .pending
            try access.connection(writing: true).withStatement(
                """
                UPDATE alert_outbox SET state = ?4, attempts = attempts + 1, last_error = ?5, next_attempt_at = ?6, delivered_at = ?7
                WHERE namespace = ?1 AND alert = ?2 AND event_number = ?3 AND state = 'Pending'
                """, intent: intent
            ) { statement throws(StoreError) in
                try statement.bind(1, n.alert.namespace)
                try statement.bind(2, n.alert.name)
                try statement.bind(3, n.event)
                try statement.bind(4, state.rawValue)
                try statement.bind(5, error)
                try statement.bind(6, (retryAt ?? now).milliseconds)
                try statement.bind(7, delivered ? now.milliseconds : nil)
                try statement.run(intent: intent)
            }
            if let event { try access.append(event) }
        }
    }

    public func alertDeliveries(limit: Int) throws(StoreError) -> [AlertDelivery] {
        try transaction(.deferred, intent: "read the alert deliveries") { access throws(StoreError) in
            let intent = "read the alert deliveries"
            return try access.connection().withStatement(
                "SELECT \(Self.columns) FROM alert_outbox ORDER BY event_number DESC, namespace, alert LIMIT ?1", intent: intent
            ) { statement throws(StoreError) in
                try statement.bind(1, limit)
                var out: [AlertDelivery] = []
                while try statement.step(intent: intent) { out.append(try Self.delivery(statement)) }
                return out
            }
        }
    }
}

extension SQLStateAccess {
    /// The events numbered after `number`, oldest first.
    func events(after number: Int, limit: Int) throws(StoreError) -> [StoreEvent] {
        let intent = "read the new events"
        return try connection().withStatement(
            """
            SELECT number, time, kind, resource_kind, resource_namespace, resource_name, reason, message
            FROM events WHERE number > ?1 ORDER BY number LIMIT ?2
            """,
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, number)
            try statement.bind(2, max(limit, 0))
            var events: [StoreEvent] = []
            while try statement.step(intent: intent) {
                let kind = StoreEvent.Kind(rawValue: statement.text(2)) ?? .normal
                var subject: ResourceID?
                if let kind = statement.optionalText(3) {
                    subject = ResourceID(kind: kind, namespace: statement.text(4), name: statement.text(5))
                }
                events.append(
                    StoreEvent(
                        number: statement.int(0), time: Timestamp(milliseconds: statement.int64(1)), kind: kind, resource: subject,
                        reason: statement.text(6), message: statement.text(7)))
            }
            return events
        }
    }
}

extension SQLiteStateStore: SpendHistory {
    public func dailySpend(since: Timestamp, until: Timestamp?, agent: ResourceID?) throws(StoreError) -> [Int: Charge] {
        try transaction(.deferred, intent: "sum the spend per day") { access throws(StoreError) in
            let database = try access.connection()
            let filter = agent == nil ? "" : " AND kind = ?2 AND namespace = ?3 AND name = ?4"
            let end = until == nil ? "" : " AND time < ?5"
            let endDay = until == nil ? "" : " AND day < ?5"
            var days: [Int: Charge] = [:]
            func add(_ day: Int, _ usd: Double, _ tokens: Double) {
                let before = days[day] ?? Charge(usd: 0, tokens: 0)
                days[day] = Charge(usd: before.usd + usd, tokens: before.tokens + Int(clamping: Int64(tokens)))
            }
            let intent = "sum the spend per day"
            try database.withStatement(
                """
                SELECT time / 86400000, total(usd), total(prompt_tokens + completion_tokens) FROM ledger
                WHERE time >= ?1\(filter)\(end) GROUP BY time / 86400000
                """, intent: intent
            ) { statement throws(StoreError) in
                try statement.bind(1, since.milliseconds)
                if let agent { try statement.bind(2, agent) }
                if let until { try statement.bind(5, until.milliseconds) }
                while try statement.step(intent: intent) { add(statement.int(0), statement.double(1), statement.double(2)) }
            }
            let first = CivilDate(daysSinceEpoch: Int(since.milliseconds / 86_400_000))
            func pad(_ value: Int, _ width: Int) -> String {
                let text = String(value)
                return String(repeating: "0", count: max(0, width - text.count)) + text
            }
            func dayText(_ date: CivilDate) -> String { "\(pad(date.year, 4))-\(pad(date.month, 2))-\(pad(date.day, 2))" }
            let firstDay = dayText(first)
            try database.withStatement(
                """
                SELECT day, total(usd), total(prompt_tokens + completion_tokens) FROM ledger_daily
                WHERE day >= ?1\(filter)\(endDay) GROUP BY day
                """, intent: intent
            ) { statement throws(StoreError) in
                try statement.bind(1, firstDay)
                if let agent { try statement.bind(2, agent) }
                if let until {
                    // The days wholly before `until`, and the one it falls in when it is not a midnight.
                    let day = Int((until.milliseconds + 86_399_999) / 86_400_000)
                    try statement.bind(5, dayText(CivilDate(daysSinceEpoch: day)))
                }
                while try statement.step(intent: intent) {
                    let parts = statement.text(0).split(separator: "-").compactMap { Int($0) }
                    guard parts.count == 3 else { continue }
                    add(CivilDate(year: parts[0], month: parts[1], day: parts[2]).daysSinceEpoch, statement.double(1), statement.double(2))
                }
            }
            return days
        }
    }
}
