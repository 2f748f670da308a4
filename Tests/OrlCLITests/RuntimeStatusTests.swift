import Foundation
import Glibc
import Testing

/// What `get` and `describe` show of agent processes, end to end.
@Suite(.serialized) struct RuntimeStatusTests {
    typealias Harness = ControllerCommandTests.Harness

    /// The `get agents` row of `name`, split on runs of spaces, keyed by the header.
    func row(_ h: Harness, _ name: String, wide: Bool = false) -> [String: String] {
        guard let r = try? h.orlctl(["get", "agents"] + (wide ? ["-o", "wide"] : [])) else { return [:] }
        let lines = r.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        guard let header = lines.first, let row = lines.first(where: { $0.first == name }), row.count == header.count else { return [:] }
        return Dictionary(uniqueKeysWithValues: zip(header, row))
    }

    @Test func getAndDescribeShowTheProcess() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a")])
        let before = row(h, "a")
        #expect(before["PHASE"] == "-" && before["PID"] == "-" && before["RESTARTS"] == "-", "\(before)")

        try h.startController()
        let first = try await h.waitForAgents(["a"], "after start")
        #expect(await waitUntil { row(h, "a")["PHASE"] == "Running" }, "\(row(h, "a"))")
        let running = row(h, "a", wide: true)
        // The PID orl supervises is the sandbox's init (PID 1 inside, the program its
        // only child), as a container's PID is: killing it ends the whole sandbox.
        let supervised = parentPID(of: first["a"]!)
        #expect(running["PID"] == String(supervised), "\(running)")
        #expect(running["ISOLATION"] == "strict", "\(running)")
        #expect(processName(supervised) == "orl-sandbox")
        #expect(running["RESTARTS"] == "0")
        #expect(running["STARTED"]?.hasSuffix("Z") == true, "\(running)")
        #expect(running["LAST-EXIT"] == "-")

        // The program itself is killed: its init reports the signal, not 128+9.
        kill(first["a"]!, SIGKILL)
        #expect(await waitUntil { h.agents()["a"].map { $0.count == 1 && $0[0] != first["a"] } == true }, "\(h.log())")
        let pid = parentPID(of: h.agents()["a"]![0])
        #expect(await waitUntil { row(h, "a")["PID"] == String(pid) }, "\(row(h, "a"))")
        let restarted = row(h, "a", wide: true)
        #expect(restarted["RESTARTS"] == "1" && restarted["LAST-EXIT"] == "signaled:9", "\(restarted)")

        var describe = try h.orlctl(["describe", "agent/a"])
        let expected = "Process:\n  Phase:                Running\n  PID:                  \(pid)\n"
        #expect(
            await waitUntil {
                describe = (try? h.orlctl(["describe", "agent/a"])) ?? describe
                return describe.stdout.contains(expected)
            }, "\(describe.stdout)")
        #expect(describe.stdout.contains("  Restarts:             1\n"), "\(describe.stdout)")
        #expect(describe.stdout.contains("  Last Exit:            killed by signal 9 at "), "\(describe.stdout)")
        #expect(describe.stdout.contains("  Log File:             \(h.state)/logs/default/a.log\n"), "\(describe.stdout)")
        try await h.stopController()
    }
}

/// The kernel's name of a process (`comm`, what `ps` and `top` show).
func processName(_ pid: Int32) -> String? {
    (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
}
