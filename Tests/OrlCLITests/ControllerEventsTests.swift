import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The controller's events end to end: in the store (`orlctl events`, `describe`), as
/// JSON lines, and `orlctl controller --detach`.
@Suite(.serialized) struct ControllerEventsTests {
    typealias Harness = ControllerCommandTests.Harness

    /// Reasons of the agent's stored events from the controller (not apply's), oldest first.
    func reasons(_ h: Harness, _ agent: String) -> [String] {
        guard let result = try? h.orlctl(["events", "--for", "agent/\(agent)", "-o", "json"]),
            let json = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
            let items = json["events"] as? [[String: Any]]
        else { return [] }
        return items.reversed().compactMap { $0["reason"] as? String }.filter { !["Created", "Updated"].contains($0) }
    }

    /// No such process, or a zombie (it is not our child: init reaps it).
    func isGone(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")")
        else { return true }
        return stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
    }

    @Test func lifecycleEventsAreStoredAndLoggedAsJSONLines() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a")])
        try h.startController(arguments: ["--log-format", "json"])
        let first = try await h.waitForAgents(["a"], "after start")
        #expect(await waitUntil { reasons(h, "a") == ["Started"] }, "\(reasons(h, "a"))\n\(h.log())")

        kill(first["a"]!, SIGKILL)
        #expect(await waitUntil { h.agents()["a"].map { $0.count == 1 && $0[0] != first["a"] } == true }, "\(h.log())")
        #expect(await waitUntil { reasons(h, "a").last == "Started" && reasons(h, "a").count >= 3 }, "\(reasons(h, "a"))")
        let afterKill = reasons(h, "a")
        #expect(Array(afterKill.prefix(2)) == ["Started", "Exited"], "\(afterKill)")
        #expect(afterKill.last == "Started")

        let text = try h.orlctl(["events", "--for", "agent/a"])
        let exited = text.stdout.split(separator: "\n").filter { $0.contains(" Exited ") }
        #expect(exited.count == 1 && exited.allSatisfy { $0.contains(" Warning ") }, "\(text.stdout)")
        #expect(text.stdout.contains("killed by signal 9"), "\(text.stdout)")
        let describe = try h.orlctl(["describe", "agent/a"])
        #expect(describe.stdout.contains("Exited") && describe.stdout.contains("Started"), "\(describe.stdout)")

        try await h.stopController()
        #expect(reasons(h, "a").last == "Stopped", "\(reasons(h, "a"))")

        // Every line of the log is one JSON object with the fixed members.
        let lines = h.log().split(separator: "\n")
        #expect(!lines.isEmpty)
        var events: [String] = []
        for line in lines {
            let object = try #require(
                try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
            #expect(object["time"] is String && object["level"] is String && object["message"] is String, "\(line)")
            events.append(object["event"] as? String ?? "")
            if object["event"] as? String == "Started" {
                #expect(object["resource"] as? String == "Agent/a" && object["namespace"] as? String == "default")
                #expect(object["pid"] is Int && object["level"] as? String == "info")
            }
            if object["event"] as? String == "Exited" { #expect(object["level"] as? String == "warning") }
        }
        #expect(events.filter { $0 == "Started" }.count == 2, "\(events)")
        #expect(events.contains("Exited") && events.contains("Stopped"), "\(events)")
        #expect(h.agents().isEmpty)
    }

    @Test func detachStartsAControllerInItsOwnSessionAndRefusesASecond() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a")])
        let started = try h.orlctl(["controller", "--detach"])
        #expect(started.status == 0, "\(started.stderr)")
        let logPath = h.state + "/logs/controller.log"
        let prefix = "controller started (pid "
        let suffix = "); logs in \(logPath)\n"
        #expect(started.stdout.hasPrefix(prefix) && started.stdout.hasSuffix(suffix), "\(started.stdout)")
        let pid = try #require(Int32(started.stdout.dropFirst(prefix.count).dropLast(suffix.count)))
        h.detached.append(pid)
        #expect(getsid(pid) == pid)
        #expect(getpgid(pid) == pid)
        _ = try await h.waitForAgents(["a"], "after --detach")
        #expect(await waitUntil { ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").contains("started Agent/a pid") })

        let second = try h.orlctl(["controller", "--detach"])
        #expect(second.status == 2)
        #expect(second.stderr == "orlctl: error: a controller already runs for \(h.state) (pid \(pid))\n")

        let stop = try h.orlctl(["controller", "stop"])
        #expect(stop.status == 0, "\(stop.stderr)")
        #expect(await waitUntil { isGone(pid) })
        #expect(h.agents().isEmpty)
        #expect(((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").contains("stopped Agent/a pid"))
    }
    /// `--detach` hears from the child itself (a pipe it inherits): it returns once the API
    /// listens (controller.api is written by then), and a child that cannot start is
    /// reported with its own error and exit code 2, the moment it gives up.
    @Test func detachReturnsOnceTheAPIListensAndReportsAChildThatFails() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a")])
        // A port that is taken: the child holds the lock, then cannot serve its API.
        let (taken, port) = try #require(RawSocket.listen())
        defer { close(taken) }
        let failed = try h.orlctl(["controller", "--detach", "--listen", "127.0.0.1:\(port)"])
        #expect(failed.status == 2, "\(failed.stdout)\(failed.stderr)")
        #expect(failed.stderr.hasPrefix("orlctl: error: the controller exited with code 2 at once: "), "\(failed.stderr)")
        #expect(failed.stderr.contains("cannot serve the API on 127.0.0.1:\(port)"), "\(failed.stderr)")
        #expect(failed.stderr.contains("(log: \(h.state)/logs/controller.log)"), "\(failed.stderr)")
        #expect(try PIDLockProbe.isFree(h.state), "the failed child is gone, and its lock with it")

        let started = try h.orlctl(["controller", "--detach"])
        #expect(started.status == 0, "\(started.stderr)")
        let pid = try #require(Int32(started.stdout.split(separator: "(pid ").last?.prefix { $0.isNumber } ?? ""), "\(started.stdout)")
        h.detached.append(pid)
        // Ready means serving: no wait here.
        let api = try String(contentsOfFile: h.state + "/controller.api", encoding: .utf8)
        #expect(api.hasPrefix("http://127.0.0.1:"), "\(api)")
        #expect(try h.orlctl(["controller", "stop"]).status == 0)
        #expect(await waitUntil { isGone(pid) })
    }
}

/// Whether nobody holds `<state>/controller.lock` (tried, and let go at once).
enum PIDLockProbe {
    static func isFree(_ state: String) throws -> Bool {
        let fd = open(state + "/controller.lock", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return errno == ENOENT }
        defer { close(fd) }
        return flock(fd, LOCK_EX | LOCK_NB) == 0
    }
}
