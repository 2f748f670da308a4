internal import Crypto
import OrlJSON

/// One event on its way to one Alert's webhook: what the outbox keeps, and the bodies
/// and signature sent. Pure: the HTTP client and the outbox are adapters'.
public struct AlertNotification: Sendable, Hashable {
    /// The store event's number: with the Alert, what makes a delivery unique.
    public var event: Int
    public var alert: ResourceID
    public var type: AlertEventType
    public var time: Timestamp
    public var subject: ResourceID
    public var reason: String
    public var message: String
    /// What a person runs about it (`orlctl approve ...`), when there is one thing to run.
    public var action: String?

    public init(
        event: Int, alert: ResourceID, type: AlertEventType, time: Timestamp, subject: ResourceID, reason: String, message: String,
        action: String?
    ) {
        self.event = event
        self.alert = alert
        self.type = type
        self.time = time
        self.subject = subject
        self.reason = reason
        self.message = message
        self.action = action
    }

    /// The id receivers deduplicate by (`X-Orl-Event-Id`, the body's `id`): the same for
    /// every attempt at the event, whichever controller makes it.
    public var id: String { "evt-\(event)" }

    /// The notifications the events make for the Alerts: each event to each Alert that
    /// chose its type and covers its namespace, in event order.
    public static func route(_ events: [StoreEvent], alerts: [(id: ResourceID, spec: AlertSpec)]) -> [AlertNotification] {
        guard !alerts.isEmpty else { return [] }
        var out: [AlertNotification] = []
        for event in events {
            guard let type = AlertEventType.classify(event), let subject = event.resource else { continue }
            for alert in alerts where alert.spec.events.contains(type) {
                guard alert.spec.covers(namespace: subject.namespace, own: alert.id.namespace) else { continue }
                out.append(
                    AlertNotification(
                        event: event.number, alert: alert.id, type: type, time: event.time, subject: subject, reason: event.reason,
                        message: event.message, action: action(type, subject: subject, message: event.message)))
            }
        }
        return out
    }

    /// The command that acts on it: for an approval, the approve (deny is the same with
    /// `deny`); for the rest, the describe that shows why.
    static func action(_ type: AlertEventType, subject: ResourceID, message: String) -> String? {
        let namespace = subject.namespace == ResourceID.defaultNamespace ? "" : " -n \(subject.namespace)"
        switch type {
        case .approvalRequested:
            // The message starts `step "gate" waits for approval`, as RunOperations writes it.
            guard message.hasPrefix("step \""), let end = message.dropFirst(6).firstIndex(of: "\"") else {
                return "orlctl describe run/\(subject.name)"
            }
            let step = message[message.index(message.startIndex, offsetBy: 6)..<end]
            return "orlctl approve run/\(subject.name) --step \(step) --reason '...'"
        case .runFailed, .deadLetter: return "orlctl describe run/\(subject.name)"
        case .syncFailed, .syncRefused: return "orlctl describe source/\(subject.name)"
        case .budgetThreshold, .budgetExhausted: return "orlctl budget status\(namespace)"
        case .budgetHalt, .crashLoopBackOff, .stalled: return "orlctl describe agent/\(subject.name)\(namespace)"
        }
    }

    /// The generic body: one JSON object, members in a fixed order.
    public var jsonBody: String {
        JSONValue.object([
            ("id", .string(id)),
            ("type", .string(type.rawValue)),
            ("severity", .string(type.isWarning ? "warning" : "info")),
            ("time", .string(time.description)),
            ("alert", .object([("namespace", .string(alert.namespace)), ("name", .string(alert.name))])),
            (
                "resource",
                .object([("kind", .string(subject.kind)), ("namespace", .string(subject.namespace)), ("name", .string(subject.name))])
            ),
            ("reason", .string(reason)),
            ("message", .string(message)),
            ("action", action.map { .string($0) }),
        ]).compactRendered()
    }

    /// Slack's incoming-webhook shape (also Mattermost's and Rocket.Chat's): `text` in
    /// mrkdwn, with `&`, `<` and `>` escaped as Slack asks.
    public var slackBody: String {
        func escaped(_ text: String) -> String {
            text.replacing("&", with: "&amp;").replacing("<", with: "&lt;").replacing(">", with: "&gt;")
        }
        let icon = type.isWarning ? ":warning:" : ":information_source:"
        var text = "\(icon) *\(type.rawValue)* \(escaped(subject.kind))/\(escaped(subject.name))"
        if subject.namespace != ResourceID.defaultNamespace { text += " (namespace \(escaped(subject.namespace)))" }
        text += "\n\(escaped(message))"
        if let action { text += "\n`\(escaped(action))`" }
        return JSONValue.object([("text", .string(text))]).compactRendered()
    }

    public func body(_ format: AlertSpec.Format) -> String {
        switch format {
        case .json: jsonBody
        case .slack: slackBody
        }
    }

    /// `X-Orl-Signature`: `v1=` and the hex HMAC-SHA256, keyed with the signing key, of
    /// the `X-Orl-Timestamp` value (Unix seconds), a `.`, and the body. The timestamp is
    /// signed so that a receiver can refuse an old delivery replayed.
    public static func signature(key: String, timestamp: Int64, body: String) -> String {
        let message = Array("\(timestamp).".utf8) + Array(body.utf8)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(key.utf8)))
        return "v1=" + CanonicalJSON.hex(mac)
    }

    /// The wait before attempt `attempt + 1` after `attempt` failed ones: 1s, 2s, 4s, ...
    /// at most five minutes.
    public static func backoff(afterAttempts attempts: Int) -> Duration {
        let seconds = 1 << min(max(attempts - 1, 0), 9)
        return .seconds(min(seconds, 300))
    }
}

/// The store's side of alert delivery: an outbox that the event log feeds, in the same
/// database, so that a notification is recorded before it is sent and survives a
/// controller killed mid-delivery.
public protocol AlertOutbox: StateStore {
    /// Reads the events after the outbox's cursor (at most `limit`), adds the
    /// notifications `route` makes of them and moves the cursor past them, in one write
    /// transaction; returns how many notifications were added.
    func enqueueAlerts(limit: Int, route: (any StateReader, [StoreEvent]) throws(StoreError) -> [AlertNotification]) throws(StoreError)
        -> Int
    /// Undelivered notifications due by `now`, oldest first, with their failed attempts.
    func dueAlerts(now: Timestamp, limit: Int) throws(StoreError) -> [(notification: AlertNotification, attempts: Int)]
    /// When the next undelivered notification is due; nil when none waits.
    func nextAlertDue() throws(StoreError) -> Timestamp?
    /// Records an outcome: delivered; or failed, to try again at `retryAt`, or given up
    /// (retryAt nil) with `event` recorded in the same transaction.
    func recordAlert(
        _ notification: AlertNotification, delivered: Bool, error: String?, retryAt: Timestamp?, event: StoreEvent?, now: Timestamp)
        throws(StoreError)
    /// Every notification of an Alert, newest first (the dashboard, tests).
    func alertDeliveries(limit: Int) throws(StoreError) -> [AlertDelivery]
}

/// A notification and how its delivery went.
public struct AlertDelivery: Sendable, Hashable {
    public enum State: String, Sendable, Hashable {
        case pending = "Pending"
        case delivered = "Delivered"
        case failed = "Failed"
    }

    public var notification: AlertNotification
    public var state: State
    public var attempts: Int
    public var lastError: String?
    public var deliveredAt: Timestamp?

    public init(notification: AlertNotification, state: State, attempts: Int, lastError: String?, deliveredAt: Timestamp?) {
        self.notification = notification
        self.state = state
        self.attempts = attempts
        self.lastError = lastError
        self.deliveredAt = deliveredAt
    }
}
