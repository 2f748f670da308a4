import Foundation
import OrlCore
import OrlStore
import Testing

/// Alerts end to end: the real controller sends run events to a webhook receiver (a
/// Python HTTP server that checks the HMAC signature on its own), including across a
/// `kill -9` of the controller in the middle of a delivery.
@Suite(.serialized) struct AlertDeliveryTests {
    static let receiverScript = Orlctl.packageRoot.appendingPathComponent("Tests/OrlCLITests/Fixtures/alerts/webhook_receiver.py").path
    static let signingKey = "whsec-test-8c1f2a"

    static func manifests(port: Int) -> String {
        """
        apiVersion: orl.dev/v1
        kind: Workflow
        metadata: {name: gated}
        spec:
          steps:
            - id: gate
              approval: {message: Ship it?, timeout: 1h}
        ---
        apiVersion: orl.dev/v1
        kind: Alert
        metadata: {name: oncall}
        spec:
          events: [ApprovalRequested, RunFailed]
          webhook: {urlSecret: oncall-url, signingKeySecret: oncall-key, timeout: 10m}
        ---
        apiVersion: orl.dev/v1
        kind: Alert
        metadata: {name: chat}
        spec:
          events: [RunFailed]
          webhook: {format: slack, urlSecret: chat-url}
        ---
        apiVersion: orl.dev/v1
        kind: Alert
        metadata: {name: broken}
        spec:
          events: [RunFailed]
          webhook: {urlSecret: broken-url, maxAttempts: 2}
        """
    }

    final class Receiver {
        let process: Process
        let directory: URL
        let port: Int

        init(in directory: URL) async throws {
            self.directory = directory
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = [AlertDeliveryTests.receiverScript, directory.path, AlertDeliveryTests.signingKey]
            try process.run()
            let portFile = directory.appendingPathComponent("port").path
            #expect(await waitUntil(seconds: 20) { FileManager.default.fileExists(atPath: portFile) }, "the receiver did not start")
            port = Int((try? String(contentsOfFile: portFile, encoding: .utf8)) ?? "") ?? 0
        }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        var journal: [[String: Any]] {
            let text = (try? String(contentsOf: directory.appendingPathComponent("journal.jsonl"), encoding: .utf8)) ?? ""
            return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }

        func requests(path: String = "/hook") -> [[String: Any]] { journal.filter { $0["path"] as? String == path } }
    }

    @Test func eachAlertArrivesOnceSignedEvenWhenTheControllerIsKilledMidDelivery() async throws {
        let h = try AgentRunsTests.Harness()
        let receiver = try await Receiver(in: h.work.url.appendingPathComponent("receiver"))
        for (name, value) in [
            ("oncall-url", "http://127.0.0.1:\(receiver.port)/hook"), ("oncall-key", Self.signingKey),
            ("chat-url", "http://127.0.0.1:\(receiver.port)/slack"), ("broken-url", "http://127.0.0.1:\(receiver.port)/broken"),
        ] {
            let set = try Orlctl.run(["secret", "set", name, "--state", h.state], stdin: value, in: h.work.url)
            #expect(set.status == 0, "\(set.stderr)")
        }
        try h.work.write("fleet.yaml", Self.manifests(port: receiver.port))
        try h.apply("fleet.yaml")

        // The receiver holds its first answer; the controller is killed while it waits. The
        // webhook's timeout is long, so that the held attempt is still the only one when the
        // test sees it, however late (at the default 10 s, a test starved of threads saw the
        // retry first and waited for one request in vain).
        let hold = receiver.directory.appendingPathComponent("hold")
        _ = FileManager.default.createFile(atPath: hold.path, contents: nil)
        let first = try h.startController()
        let run = try h.start("gated")
        #expect(await waitUntil(seconds: 30) { receiver.requests().count == 1 }, "no delivery arrived\n\(h.file("controller.log"))")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        let approvalID = receiver.requests().first?["id"] as? String ?? "?"

        // The next controller sends it again, with the same id, and it is acknowledged.
        try h.startController(log: "controller2.log")
        #expect(
            await waitUntil(seconds: 30) { receiver.requests().count == 2 },
            "the killed delivery was not sent again\n\(h.file("controller2.log"))")
        try FileManager.default.removeItem(at: hold)
        #expect(
            await waitUntil(seconds: 10) {
                (try? SQLiteStateStore(directory: h.state).alertDeliveries(limit: 10))?.contains {
                    $0.notification.id == approvalID && $0.state == .delivered
                } ?? false
            }, "the delivery was not recorded")

        // A denial fails the run: RunFailed goes to the signed hook, to Slack, and to the
        // broken hook, which gives up after its two attempts and says so in an event.
        let denied = try h.orlctl(["deny", "run/\(run)", "--step", "gate", "--reason", "not today"])
        #expect(denied.status == 0, "\(denied.stderr)")
        #expect(await waitUntil(seconds: 30) { receiver.requests().count == 3 && receiver.requests(path: "/slack").count == 1 })
        #expect(await waitUntil(seconds: 30) { receiver.requests(path: "/broken").count == 2 })
        let store = try SQLiteStateStore(directory: h.state)
        let alertFailed = ResourceID(kind: "Alert", namespace: "default", name: "broken")
        #expect(
            await waitUntil(seconds: 10) {
                ((try? store.read { reader throws(StoreError) in try reader.events(for: alertFailed, limit: 5) }) ?? []).contains {
                    $0.reason == "AlertFailed" && $0.message.contains("after 2 attempts") && $0.message.contains("answered 500")
                }
            }, "no AlertFailed event")

        // A controller restarted after the acknowledgements sends nothing again.
        try h.stopController()
        try h.startController(log: "controller3.log")
        let second = try h.start("gated")
        #expect(await waitUntil(seconds: 30) { receiver.requests().count == 4 }, "\(h.file("controller3.log"))")
        try h.stopController()

        let hooks = receiver.requests()
        let ids = hooks.compactMap { $0["id"] as? String }
        #expect(ids.filter { $0 == approvalID }.count == 2, "the held delivery and its resend: \(ids)")
        #expect(Set(ids).count == 3, "\(ids)")
        #expect(hooks.allSatisfy { $0["valid"] as? Bool == true && $0["fresh"] as? Bool == true }, "\(hooks)")
        #expect(!hooks.contains { $0["duplicate"] as? Bool == true }, "a delivery was sent again after its acknowledgement: \(hooks)")
        let bodies = hooks.compactMap { $0["body"] as? [String: Any] }
        #expect(bodies.map { $0["type"] as? String ?? "" } == ["ApprovalRequested", "ApprovalRequested", "RunFailed", "ApprovalRequested"])
        #expect(bodies[0]["action"] as? String == "orlctl approve run/\(run) --step gate --reason '...'")
        #expect((bodies[3]["resource"] as? [String: Any])?["name"] as? String == second)
        #expect((bodies[2]["message"] as? String)?.contains("denied by") == true, "\(bodies[2])")
        let slack = receiver.requests(path: "/slack")
        #expect(slack.first?["signed"] as? Bool == false)
        #expect(((slack.first?["body"] as? [String: Any])?["text"] as? String)?.contains("*RunFailed* Run/\(run)") == true, "\(slack)")
    }
}
