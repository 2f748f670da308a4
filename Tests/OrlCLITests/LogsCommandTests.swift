import Foundation
import Glibc
import Testing

/// `orlctl logs` end to end, and the controller's log rotation.
@Suite(.serialized) struct LogsCommandTests {
    typealias Harness = ControllerCommandTests.Harness

    func logPath(_ h: Harness, _ name: String) -> String { h.state + "/logs/default/\(name).log" }

    @Test func printsTailsFollowsAcrossRotationAndReportsWhatIsMissing() async throws {
        let h = try Harness()
        let script = "for i in 1 2 3 4 5; do echo line$i; done; exec sleep 1000"
        try h.apply([.init(name: "alpha", script: script)])

        let unknown = try h.orlctl(["logs", "agent/alpah"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("Agent \"alpah\" not found in namespace \"default\""), "\(unknown.stderr)")
        #expect(unknown.stderr.contains("did you mean \"alpha\""), "\(unknown.stderr)")
        let none = try h.orlctl(["logs", "agent/alpha"])
        #expect(none.status == 1)
        #expect(none.stderr.contains("agent \"alpha\" has no log yet"), "\(none.stderr)")

        try h.startController()
        _ = try await h.waitForAgents(["alpha"], "after start")
        #expect(await waitUntil { (try? String(contentsOfFile: logPath(h, "alpha"), encoding: .utf8))?.contains("line5") == true })

        let all = try h.orlctl(["logs", "agent/alpha"])
        #expect(all.status == 0)
        #expect(all.stdout == "line1\nline2\nline3\nline4\nline5\n")
        let tail = try h.orlctl(["logs", "agent", "alpha", "--tail", "2"])
        #expect(tail.stdout == "line4\nline5\n")
        let previous = try h.orlctl(["logs", "agent/alpha", "--previous"])
        #expect(previous.status == 1)
        #expect(previous.stderr.contains("has no previous log"))

        // Following: new output, then a rotation (truncated in place), then more output.
        let (follower, followed) = try follow(h, ["--tail", "1", "agent/alpha"])
        defer { if follower.isRunning { kill(follower.processIdentifier, SIGKILL) } }
        #expect(await waitUntil { followed() == "line5\n" }, "\(followed())")

        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath(h, "alpha")))
        try log.seekToEnd()
        try log.write(contentsOf: Data("appended\n".utf8))
        #expect(await waitUntil { followed() == "line5\nappended\n" }, "\(followed())")
        try log.truncate(atOffset: 0)
        try log.write(contentsOf: Data("new\n".utf8))
        try log.close()
        #expect(await waitUntil { followed() == "line5\nappended\nnew\n" }, "\(followed())")

        kill(follower.processIdentifier, SIGINT)
        #expect(await waitUntil { !follower.isRunning })
        try await h.stopController()
    }

    @Test func theControllerRotatesLogsBySize() async throws {
        let h = try Harness()
        let line = String(repeating: "x", count: 100)
        try h.apply([.init(name: "chatty", script: "while true; do echo \(line); sleep 0.02; done")])
        // Detached, so that its own log is <state>/logs/controller.log, rotated too.
        let started = try h.orlctl(["controller", "--detach", "--log-max-bytes", "150", "--log-keep", "2"])
        #expect(started.status == 0, "\(started.stderr)")
        let pid = try #require(Int32(started.stdout.split(separator: "(pid ").last?.prefix { $0.isNumber } ?? ""), "\(started.stdout)")
        h.detached.append(pid)
        _ = try await h.waitForAgents(["chatty"], "after start")
        let controllerLog = h.state + "/logs/controller.log"
        func size(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }
        // The rotation's timer is 10 s; SIGUSR1 (what apply sends) has the logs looked at now.
        #expect(await waitUntil(seconds: 25) { size(logPath(h, "chatty")) > 150 }, "\(h.log())")
        kill(pid, SIGUSR1)
        #expect(await waitUntil(seconds: 25) { FileManager.default.fileExists(atPath: logPath(h, "chatty") + ".1") }, "\(h.log())")
        // The controller's own log passes 150 bytes by the line saying so, if not before: the
        // next look rotates it.
        let controllerRotated = { FileManager.default.fileExists(atPath: controllerLog + ".1") }
        #expect(await waitUntil(seconds: 25) { controllerRotated() || size(controllerLog) > 150 })
        if !controllerRotated() { kill(pid, SIGUSR1) }
        #expect(await waitUntil(seconds: 25) { controllerRotated() })
        let rotated = (try? String(contentsOfFile: controllerLog + ".1", encoding: .utf8)) ?? ""
        let current = (try? String(contentsOfFile: controllerLog, encoding: .utf8)) ?? ""
        #expect((rotated + current).contains("rotated \(logPath(h, "chatty"))"), "\(rotated)\(current)")
        #expect(rotated.contains("listening on http://127.0.0.1:"), "\(rotated)")
        let previous = try h.orlctl(["logs", "agent/chatty", "--previous"])
        #expect(previous.status == 0)
        #expect(previous.stdout.hasPrefix(line + "\n"))
        try await h.stopController()
    }
    /// `-f` is told by inotify: it watches the log, sleeps with no timer due meanwhile
    /// (a 200 ms look would always have one), and follows a log renamed away to the new
    /// file of its name, as `tail -F`, after the renamed one's last lines.
    @Test func followWatchesTheLogAndFollowsARenameToTheNewFile() async throws {
        let h = try Harness()
        try h.apply([.init(name: "beta", script: "exec sleep 1000")])
        let path = logPath(h, "beta")
        try FileManager.default.createDirectory(atPath: h.state + "/logs/default", withIntermediateDirectories: true)
        try "first\n".write(toFile: path, atomically: false, encoding: .utf8)

        let (follower, followed) = try follow(h, ["agent/beta"])
        defer { if follower.isRunning { kill(follower.processIdentifier, SIGKILL) } }
        #expect(await waitUntil { followed() == "first\n" }, "\(followed())")

        let pid = follower.processIdentifier
        let inode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int)
        #expect(await waitUntil { Self.inotifyInodes(of: pid).contains(UInt64(inode)) }, "the log itself is watched")
        // Swift's sleeps (ContinuousClock: CLOCK_BOOTTIME) are what a look every 200 ms
        // arms; libdispatch's own 1 Hz check of its thread pool is on CLOCK_MONOTONIC.
        let soon = Self.timersDue(of: pid, clock: CLOCK_BOOTTIME).filter { $0 < 60 }
        #expect(soon.isEmpty, "no sleep due while idle: \(soon) s")

        // A rotation by rename: the old file's last line, then the new file's.
        try #require(rename(path, path + ".1") == 0)
        let old = try FileHandle(forWritingTo: URL(fileURLWithPath: path + ".1"))
        try old.seekToEnd()
        try old.write(contentsOf: Data("last of the old\n".utf8))
        try old.close()
        try "first of the new\n".write(toFile: path, atomically: false, encoding: .utf8)
        #expect(await waitUntil { followed() == "first\nlast of the old\nfirst of the new\n" }, "\(followed())")
        let new = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try new.seekToEnd()
        try new.write(contentsOf: Data("more\n".utf8))
        try new.close()
        #expect(await waitUntil { followed() == "first\nlast of the old\nfirst of the new\nmore\n" }, "\(followed())")

        kill(pid, SIGINT)
        #expect(await waitUntil { !follower.isRunning })
    }

    /// The inodes a process's inotify descriptors watch (/proc/PID/fdinfo).
    static func inotifyInodes(of pid: Int32) -> Set<UInt64> {
        var inodes: Set<UInt64> = []
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fdinfo")) ?? [] {
            let text = (try? String(contentsOfFile: "/proc/\(pid)/fdinfo/\(fd)", encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") where line.hasPrefix("inotify wd:") {
                for field in line.split(separator: " ") where field.hasPrefix("ino:") {
                    if let inode = UInt64(field.dropFirst(4), radix: 16) { inodes.insert(inode) }
                }
            }
        }
        return inodes
    }

    /// In how many seconds each armed timer (timerfd) of a process on `clock` fires.
    static func timersDue(of pid: Int32, clock: Int32) -> [Double] {
        var due: [Double] = []
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fdinfo")) ?? [] {
            let text = (try? String(contentsOfFile: "/proc/\(pid)/fdinfo/\(fd)", encoding: .utf8)) ?? ""
            guard text.contains("clockid: \(clock)\n"), let line = text.split(separator: "\n").first(where: { $0.hasPrefix("it_value:") })
            else {
                continue
            }
            // it_value: (SECONDS, NANOSECONDS); (0, 0) is disarmed.
            let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Double($0) }
            guard numbers.count == 2, numbers != [0, 0] else { continue }
            due.append(numbers[0] + numbers[1] / 1e9)
        }
        return due
    }

    /// `orlctl logs -f ARGUMENTS` started on the harness's state, its output going to a
    /// file: the process and a reader of what it printed so far.
    func follow(_ h: Harness, _ arguments: [String]) throws -> (Process, @Sendable () -> String) {
        let follower = Process()
        follower.executableURL = Orlctl.binary
        follower.arguments = ["logs", "-f"] + arguments + ["--state", h.state]
        let outURL = h.work.url.appendingPathComponent("follow.out")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        follower.standardOutput = try FileHandle(forWritingTo: outURL)
        follower.standardError = FileHandle.nullDevice
        Changes.signalOnExit(follower)
        try follower.run()
        return (follower, { (try? String(contentsOf: outURL, encoding: .utf8)) ?? "" })
    }
}
