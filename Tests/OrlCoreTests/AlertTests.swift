import OrlCore
import OrlJSON
import Testing

@Suite struct AlertTests {
    static let alert = """
        apiVersion: orl.dev/v1
        kind: Alert
        metadata: {name: oncall, namespace: ops}
        spec:
          events: [ApprovalRequested, SyncFailed, CrashLoopBackOff]
          webhook: {urlSecret: hook-url, signingKeySecret: hook-key}
        """

    @Test func anAlertValidatesAndItsMistakesArePlaced() throws {
        let report = validate(Self.alert)
        #expect(report.isValid, "\(report.diagnostics.map(\.message))")
        let spec = try #require(report.fleet.resources(of: .alert).first?.alert)
        #expect(spec.webhook.format == .json && spec.webhook.maxAttempts == 10 && spec.webhook.timeout.text == "10s")

        let wrong = Self.alert.replacing("CrashLoopBackOff]", with: "CrashLooping]")
        let bad = validate(wrong, file: "alerts.yaml")
        #expect(!bad.isValid)
        let place = try #require(position(of: "CrashLooping", in: wrong))
        #expect(
            bad.diagnostics.contains {
                $0.location?.file == "alerts.yaml" && $0.location?.line == place.line && $0.message.contains("CrashLooping")
            },
            "\(bad.diagnostics.map { "\($0.location?.line ?? 0):\($0.location?.column ?? 0) \($0.message)" })")
        #expect(!validate(Self.alert.replacing("urlSecret: hook-url, ", with: "")).isValid)
        #expect(!validate(Self.alert.replacing("{urlSecret", with: "{format: teams, urlSecret")).isValid)
    }

    @Test func anAlertsSecretsAreNeverGivenToAnAgent() throws {
        let report = validate(Self.alert)
        let reserved = CredentialSecrets(report.fleet).reservation(of: SecretID(namespace: "ops", name: "hook-key"))
        #expect(reserved?.contains("the webhook of Alert/oncall") == true, "\(reserved ?? "nil")")
    }

    @Test func eventsAreRoutedByTypeAndNamespace() throws {
        let spec = try #require(validate(Self.alert).fleet.resources(of: .alert).first?.alert)
        let alert = ResourceID(kind: "Alert", namespace: "ops", name: "oncall")
        let t = Timestamp(milliseconds: 1_700_000_000_000)
        let events = [
            StoreEvent(
                number: 7, time: t, kind: .normal, resource: ResourceID(kind: "Run", namespace: "ops", name: "1m95359jwkn69"),
                reason: "ApprovalRequested", message: "step \"gate\" waits for approval until 2026-12-06T08:12:43Z (then deny)"),
            // Another namespace: not this Alert's.
            StoreEvent(
                number: 8, time: t, kind: .warning, resource: ResourceID(kind: "Agent", namespace: "default", name: "a"), reason: "BackOff",
                message: "x"),
            StoreEvent(
                number: 9, time: t, kind: .warning, resource: ResourceID(kind: "Agent", namespace: "ops", name: "a"), reason: "BackOff",
                message: "x"),
            // Not chosen: a run that failed.
            StoreEvent(
                number: 10, time: t, kind: .warning, resource: ResourceID(kind: "Run", namespace: "ops", name: "r"), reason: "Failed",
                message: "x"),
            StoreEvent(
                number: 11, time: t, kind: .normal, resource: ResourceID(kind: "Agent", namespace: "ops", name: "a"), reason: "Started",
                message: "x"),
        ]
        let routed = AlertNotification.route(events, alerts: [(alert, spec)])
        #expect(routed.map(\.id) == ["evt-7", "evt-9"])
        #expect(routed.map(\.type) == [.approvalRequested, .crashLoopBackOff])
        #expect(routed[0].action == "orlctl approve run/1m95359jwkn69 --step gate --reason '...'")
        #expect(routed[1].action == "orlctl describe agent/a -n ops")

        var everywhere = spec
        everywhere.namespaces = ["*"]
        #expect(AlertNotification.route(events, alerts: [(alert, everywhere)]).map(\.id) == ["evt-7", "evt-8", "evt-9"])
    }

    @Test func theSignatureIsTheHMACOfTheTimestampAndTheBody() {
        // Python: hmac.new(b"whsec-test", b'1700000000.{"id":"evt-1"}', hashlib.sha256).hexdigest()
        #expect(
            AlertNotification.signature(key: "whsec-test", timestamp: 1_700_000_000, body: #"{"id":"evt-1"}"#)
                == "v1=c48966fef1a0aa4f266aac2237f9a7f257ab024d57102dbd8119b8616a18240f")
    }

    @Test func slackTextIsEscapedAndBackoffIsBounded() {
        let n = AlertNotification(
            event: 1, alert: ResourceID(kind: "Alert", name: "a"), type: .runFailed, time: Timestamp(milliseconds: 0),
            subject: ResourceID(kind: "Run", name: "r"), reason: "Failed", message: "<b>&", action: nil)
        #expect(n.slackBody == #"{"text":":warning: *RunFailed* Run/r\n&lt;b&gt;&amp;"}"#)
        #expect(AlertNotification.backoff(afterAttempts: 1) == .seconds(1))
        #expect(AlertNotification.backoff(afterAttempts: 4) == .seconds(8))
        #expect(AlertNotification.backoff(afterAttempts: 40) == .seconds(300))
    }
}
