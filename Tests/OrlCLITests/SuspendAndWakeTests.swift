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

    @Test func suspendHoldsAcrossReapplyUntilResumed() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a"), .init(name: "b")])
        try h.startController()
        let first = try await h.waitForAgents(["a", "b"], "after start")

        let suspend = try h.orlctl(["suspend", "agent/a"])
        #expect(suspend.status == 0, "\(suspend.stderr)")
        #expect(suspend.stdout == "agent \"a\" suspended\n")
        _ = try await h.waitForAgents(["b"], "after suspend")
        #expect(await waitUntil { readyReason(h, "a") == "SuspendedByUser" }, "\(readyReason(h, "a") ?? "-")")
        #expect(try h.orlctl(["suspend", "agent/a"]).stdout == "agent \"a\" already suspended\n")

        // A re-apply (b changes) does not undo the hold.
        try h.apply([.init(name: "a"), .init(name: "b", env: "v2")])
        #expect(await waitUntil { h.agents()["b"].map { $0.count == 1 && $0[0] != first["b"] } == true }, "\(h.log())")
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
        _ = try await h.waitForAgents(["a", "b"], "after resume")
        let describe = try h.orlctl(["describe", "agent/a"])
        #expect(describe.stdout.contains("Suspended"), "\(describe.stdout)")
        #expect(describe.stdout.contains("Resumed"), "\(describe.stdout)")

        let all = try h.orlctl(["suspend", "--all"])
        #expect(all.stdout == "agent \"a\" suspended\nagent \"b\" suspended\n")
        #expect(await waitUntil { h.agents().isEmpty })
        #expect(try h.orlctl(["resume", "--all"]).status == 0)
        _ = try await h.waitForAgents(["a", "b"], "after resume --all")
        try await h.stopController()
    }

    @Test func applyWakesTheControllerAndNeverSignalsAStalePID() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a")])
        try h.startController()
        _ = try await h.waitForAgents(["a"], "after start")
        #expect(!h.log().contains("woken"))
        try h.apply([.init(name: "a"), .init(name: "b")])
        #expect(await waitUntil { h.log().contains("woken: SIGUSR1") }, "\(h.log())")
        _ = try await h.waitForAgents(["a", "b"], "after the second apply")
        try await h.stopController()

        // Whether an apply signals is read from a stand-in lock holder that blocks SIGUSR1:
        // a signal sent stays pending in it, so once `apply` has returned there is nothing
        // left to wait for. An apply that changes nothing does not signal...
        let holder = try SignalProbe(holdingLock: h.state + "/controller.lock")
        defer { holder.stop() }
        try h.apply([.init(name: "a"), .init(name: "b")])
        #expect(!holder.signalled)
        // ...one that changes something does (and so the probe sees a signal).
        try h.apply([.init(name: "a"), .init(name: "b", env: "v2")])
        #expect(holder.signalled)
        holder.stop()

        // No controller holds the lock: the PID in the file is not signalled.
        let bystander = try SignalProbe(holdingLock: nil)
        defer { bystander.stop() }
        try "\(bystander.pid)\n".write(toFile: h.state + "/controller.lock", atomically: false, encoding: .utf8)
        try h.apply([.init(name: "a")], prune: true)
        #expect(!bystander.signalled)
    }
}

/// A process that blocks SIGUSR1, so that a SIGUSR1 sent to it stays pending (/proc's
/// ShdPnd) instead of being handled or ending it: whether one was sent is read at once,
/// with no wait for a delivery. With a lock file, it holds the file's flock with its PID
/// in it, as a controller holds `controller.lock`.
final class SignalProbe {
    let process = Process()
    var pid: Int32 { process.processIdentifier }

    init(holdingLock lock: String?) throws {
        let script = """
            import fcntl, os, signal, sys
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            if len(sys.argv) > 1:
                lock = open(sys.argv[1], "a+")
                fcntl.flock(lock, fcntl.LOCK_EX)
                lock.truncate(0)
                lock.write("%d\\n" % os.getpid())
                lock.flush()
            print("ready", flush=True)
            sys.stdin.read()
            """
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + (lock.map { [$0] } ?? [])
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = Pipe()
        try process.run()
        // Blocked and holding the lock once it says so (it reads stdin until stopped).
        let said = String(decoding: output.fileHandleForReading.readData(ofLength: 6), as: UTF8.self)
        guard said == "ready\n" else { throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "probe: \(said)"]) }
    }

    /// Whether a SIGUSR1 waits in it.
    var signalled: Bool {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let pending = status.split(separator: "\n").filter { $0.hasPrefix("ShdPnd:") || $0.hasPrefix("SigPnd:") }
        return pending.contains { line in
            UInt64(line.split(separator: "\t").last.map(String.init) ?? "", radix: 16).map { $0 & (1 << (UInt64(SIGUSR1) - 1)) != 0 }
                ?? false
        }
    }

    func stop() {
        guard process.isRunning else { return }
        kill(pid, SIGKILL)
        process.waitUntilExit()
    }

    deinit { stop() }
}
