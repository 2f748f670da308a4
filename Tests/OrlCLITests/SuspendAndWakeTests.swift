import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `orlctl suspend`/`resume` and the controller's wake on SIGUSR1, end to end.
@Suite(.serialized) struct SuspendAndWakeTests {
    typealias Harness = ControllerCommandTests.Harness

    func readyReason(_ h: Harness, _ name: String) -> String? {
        guard let r = try? h.orlctl(["get", "agent/\(name)", "-o", "json"]),
            let json = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
            let conditions = (json["status"] as? [String: Any])?["conditions"] as? [[String: Any]]
        else { return nil }
        return conditions.first { $0["type"] as? String == "Ready" }?["reason"] as? String
    }

    @Test func suspendHoldsAcrossReapplyUntilResumed() throws {
        let h = try Harness()
        try h.apply([.init(name: "a"), .init(name: "b")])
        try h.startController()
        let first = try h.waitForAgents(["a", "b"], "after start")

        let suspend = try h.orlctl(["suspend", "agent/a"])
        #expect(suspend.status == 0, "\(suspend.stderr)")
        #expect(suspend.stdout == "agent \"a\" suspended\n")
        _ = try h.waitForAgents(["b"], "after suspend")
        #expect(waitUntil { readyReason(h, "a") == "SuspendedByUser" }, "\(readyReason(h, "a") ?? "-")")
        #expect(try h.orlctl(["suspend", "agent/a"]).stdout == "agent \"a\" already suspended\n")

        // A re-apply (b changes) does not undo the hold.
        try h.apply([.init(name: "a"), .init(name: "b", env: "v2")])
        #expect(waitUntil { h.agents()["b"].map { $0.count == 1 && $0[0] != first["b"] } == true }, "\(h.log())")
        #expect(h.agents()["a"] == nil)

        // An unknown agent: nothing changes, b is not held.
        let unknown = try h.orlctl(["suspend", "agent/b", "agent/zz"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("Agent \"zz\" not found"), "\(unknown.stderr)")
        #expect(unknown.stderr.contains("nothing was changed"))
        #expect(try h.orlctl(["resume", "agent/b"]).stdout == "agent \"b\" was not suspended\n")

        let resume = try h.orlctl(["resume", "agent/a"])
        #expect(resume.status == 0)
        #expect(resume.stdout == "agent \"a\" resumed\n")
        _ = try h.waitForAgents(["a", "b"], "after resume")
        let describe = try h.orlctl(["describe", "agent/a"])
        #expect(describe.stdout.contains("Suspended"), "\(describe.stdout)")
        #expect(describe.stdout.contains("Resumed"), "\(describe.stdout)")

        let all = try h.orlctl(["suspend", "--all"])
        #expect(all.stdout == "agent \"a\" suspended\nagent \"b\" suspended\n")
        #expect(waitUntil { h.agents().isEmpty })
        #expect(try h.orlctl(["resume", "--all"]).status == 0)
        _ = try h.waitForAgents(["a", "b"], "after resume --all")
        try h.stopController()
    }

    @Test func applyWakesTheControllerAndNeverSignalsAStalePID() throws {
        let h = try Harness()
        try h.apply([.init(name: "a")])
        try h.startController()
        _ = try h.waitForAgents(["a"], "after start")
        #expect(!h.log().contains("woken"))
        try h.apply([.init(name: "a"), .init(name: "b")])
        #expect(waitUntil { h.log().contains("woken: SIGUSR1") }, "\(h.log())")
        _ = try h.waitForAgents(["a", "b"], "after the second apply")
        // An apply that changes nothing does not signal.
        let before = h.log().components(separatedBy: "woken").count
        try h.apply([.init(name: "a"), .init(name: "b")])
        usleep(300_000)
        #expect(h.log().components(separatedBy: "woken").count == before)
        try h.stopController()

        // No controller holds the lock: the PID in the file is not signalled.
        let bystander = Process()
        bystander.executableURL = URL(fileURLWithPath: "/bin/sleep")
        bystander.arguments = ["100"]
        try bystander.run()
        defer { if bystander.isRunning { kill(bystander.processIdentifier, SIGKILL) } }
        try "\(bystander.processIdentifier)\n".write(toFile: h.state + "/controller.lock", atomically: false, encoding: .utf8)
        try h.apply([.init(name: "a")], prune: true)
        usleep(200_000)
        #expect(bystander.isRunning)
    }
}
