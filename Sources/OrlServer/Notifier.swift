import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
public import OrlCore

/// Sends Alerts' notifications: queues the new events of the store's event log into the
/// alert outbox, then posts the due ones to their webhooks, retrying with backoff.
///
/// Everything is in the store, so a controller killed mid-delivery loses nothing: the
/// next one finds the notification still Pending and sends it again, with the same
/// `X-Orl-Event-Id`, which is how a receiver keeps it to once. One acknowledged (2xx) is
/// recorded Delivered and never sent again.
public actor Notifier {
    private let store: any AlertOutbox
    private let secret: @Sendable (SecretID) -> String?
    private let log: @Sendable (ControllerEvent) -> Void
    private let clock: @Sendable () -> Timestamp
    private let resync: Duration
    private let client: HTTPClient
    private let executor: StoreExecutor

    /// Posted when another connection wrote (the daemon's change feed): new events may
    /// be waiting for the outbox.
    public nonisolated let storeChanged = Inbox<Bool>()
    /// The store is SQLite: its calls block, so they run on a thread of the notifier's own.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// `resync`: the longest the notifier sleeps with nothing due and nothing announced.
    public init(
        store: any AlertOutbox, secret: @escaping @Sendable (SecretID) -> String?, log: @escaping @Sendable (ControllerEvent) -> Void,
        clock: @escaping @Sendable () -> Timestamp, resync: Duration = .seconds(60),
        executor: StoreExecutor = StoreExecutor(label: "orl.notifier")
    ) {
        self.store = store
        self.secret = secret
        self.log = log
        self.clock = clock
        self.resync = resync
        self.executor = executor
        self.client = Gateway.sharedClient
    }

    /// Rounds until the task is cancelled: each after a change is announced or when the
    /// next retry is due, never on a fixed tick, so an idle controller does no work here.
    public func run() async {
        var changed = true
        while !Task.isCancelled {
            await tick(queueing: changed)
            changed = !(await storeChanged.take(waitingAtMost: untilNextDue())).isEmpty
        }
    }

    /// One round: new events queued (when told the store changed), then every due
    /// notification sent once.
    public func tick(queueing: Bool = true) async {
        if queueing { queue() }
        let now = clock()
        let due: [(notification: AlertNotification, attempts: Int)]
        do {
            due = try store.dueAlerts(now: now, limit: 64)
        } catch {
            log(ControllerEvent(time: now, reason: .error, message: "reading the alert outbox: \(error.message)"))
            return
        }
        guard !due.isEmpty else { return }
        let alerts = readAlerts()
        for (notification, attempts) in due {
            if Task.isCancelled { return }
            await deliver(notification, attempts: attempts, spec: alerts[notification.alert])
        }
    }

    private func untilNextDue() -> Duration {
        guard let next = try? store.nextAlertDue() else { return resync }
        let wait = Duration.milliseconds(max(next.milliseconds - clock().milliseconds, 0))
        return min(wait, resync)
    }

    private func queue() {
        do {
            // Whole batches until the log is caught up: a burst of events is not left behind.
            while try store.enqueueAlerts(
                limit: 500,
                route: { reader, events throws(StoreError) in
                    let stored = try reader.resources(kind: .alert, namespace: nil)
                    guard !stored.isEmpty else { return [] }
                    let fleet = Fleet.applied(stored).fleet
                    let alerts = fleet.resources(of: .alert).compactMap { r in r.alert.map { (id: r.id, spec: $0) } }
                    return AlertNotification.route(events, alerts: alerts)
                }) > 0
            {}
        } catch {
            log(ControllerEvent(time: clock(), reason: .error, message: "queueing alerts: \(error.message)"))
        }
    }

    private func readAlerts() -> [ResourceID: AlertSpec] {
        guard let stored = try? store.read({ reader throws(StoreError) in try reader.resources(kind: .alert, namespace: nil) }) else {
            return [:]
        }
        var out: [ResourceID: AlertSpec] = [:]
        for resource in Fleet.applied(stored).fleet.resources(of: .alert) { out[resource.id] = resource.alert }
        return out
    }

    private func deliver(_ notification: AlertNotification, attempts: Int, spec: AlertSpec?) async {
        let failure: String
        var maxAttempts = 10
        if let spec {
            maxAttempts = spec.webhook.maxAttempts
            switch await post(notification, spec: spec, attempt: attempts + 1) {
            case nil:
                record(notification, delivered: true, error: nil, retryAt: nil, event: nil)
                return
            case let error?: failure = error
            }
        } else {
            failure = "\(notification.alert) is no longer applied"
            maxAttempts = 0
        }
        let now = clock()
        let tried = attempts + 1
        if tried < maxAttempts {
            let wait = AlertNotification.backoff(afterAttempts: tried)
            log(
                ControllerEvent(
                    time: now, reason: .error, resource: notification.alert,
                    message: "\(notification.id) not delivered (attempt \(tried) of \(maxAttempts)): \(failure); again in \(wait)"))
            record(
                notification, delivered: false, error: failure, retryAt: Timestamp(milliseconds: now.milliseconds + wait.wholeMilliseconds),
                event: nil)
        } else {
            let event = StoreEvent(
                time: now, kind: .warning, resource: notification.alert, reason: "AlertFailed",
                message:
                    "\(notification.id) (\(notification.type.rawValue) \(notification.subject.kind)/\(notification.subject.name)) not delivered after \(tried) attempt\(tried == 1 ? "" : "s"): \(failure)"
            )
            log(ControllerEvent(time: now, reason: .error, resource: notification.alert, message: event.message))
            record(notification, delivered: false, error: failure, retryAt: nil, event: event)
        }
    }

    private func record(_ notification: AlertNotification, delivered: Bool, error: String?, retryAt: Timestamp?, event: StoreEvent?) {
        do {
            try store.recordAlert(notification, delivered: delivered, error: error, retryAt: retryAt, event: event, now: clock())
        } catch {
            log(ControllerEvent(time: clock(), reason: .error, message: "recording the delivery of \(notification.id): \(error.message)"))
        }
    }

    /// Posts it; nil when the receiver acknowledged it (2xx), else why not.
    private func post(_ notification: AlertNotification, spec: AlertSpec, attempt: Int) async -> String? {
        let namespace = notification.alert.namespace
        let urlName = spec.webhook.urlSecret.value
        guard let url = secret(SecretID(namespace: namespace, name: urlName)), !url.isEmpty else {
            return "the vault secret \(namespace)/\(urlName) (its URL) is missing or unreadable"
        }
        let trimmed = url.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix("http://") || trimmed.hasPrefix("https://") else {
            return "the vault secret \(namespace)/\(urlName) does not hold an http(s) URL"
        }
        let body = notification.body(spec.webhook.format)
        let timestamp = clock().milliseconds / 1000
        var request = HTTPClientRequest(url: trimmed)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "orl-notifier")
        request.headers.add(name: "X-Orl-Event-Id", value: notification.id)
        request.headers.add(name: "X-Orl-Event-Type", value: notification.type.rawValue)
        request.headers.add(name: "X-Orl-Delivery-Attempt", value: String(attempt))
        request.headers.add(name: "X-Orl-Timestamp", value: String(timestamp))
        if let keyName = spec.webhook.signingKeySecret?.value {
            guard let key = secret(SecretID(namespace: namespace, name: keyName)), !key.isEmpty else {
                return "the vault secret \(namespace)/\(keyName) (the signing key) is missing or unreadable"
            }
            request.headers.add(
                name: "X-Orl-Signature", value: AlertNotification.signature(key: key, timestamp: timestamp, body: body))
        }
        request.body = .bytes(ByteBuffer(string: body))
        do {
            let response = try await client.execute(
                request, timeout: .milliseconds(max(spec.webhook.timeout.duration.wholeMilliseconds, 1)))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            guard (200..<300).contains(Int(response.status.code)) else { return "the webhook answered \(response.status.code)" }
            return nil
        } catch {
            return "the webhook could not be reached: \(error)"
        }
    }
}
