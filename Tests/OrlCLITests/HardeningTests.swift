import Foundation
import Testing

/// The attacks of issue 20, end to end with their numbers, against the real `orlctl`,
/// with time and memory measured from outside the process.
@Suite(.serialized) struct HardeningTests {
    /// One 3 MB anchored string aliased 1,000 times: 3 GB once expanded. It is
    /// refused at the first alias past the limit, naming file:line:col, in bounded time
    /// and memory, and writes nothing.
    @Test func anAliasAmplificationIsRefusedInBoundedTimeAndMemory() throws {
        let work = try TemporaryDirectory()
        let big = String(repeating: "x", count: 3_000_000)
        var text = """
            apiVersion: orl.dev/v1
            kind: Agent
            metadata:
              name: bomb
              annotations:
                a0: &s "\(big)"

            """
        for i in 1...1000 { text += "    a\(i): *s\n" }
        text += "spec: {model: sim/small, runtime: {command: /bin/true}}\n"
        try work.write("bomb.yaml", text)
        let file = work.url.appendingPathComponent("bomb.yaml").path
        let state = work.url.appendingPathComponent("state").path

        for verb in [["validate", "-f", file], ["apply", "-f", file, "--state", state]] {
            let result = try Measured.run(verb)
            #expect(result.status != 0 && result.status < 128, "\(verb[0]): \(result.status) \(result.stderr)")
            // The 5th alias passes 16 MiB: line 7 is a1, so a5 is line 11, column 9.
            #expect(
                result.stdout.contains("bomb.yaml:11:9") || result.stderr.contains("bomb.yaml:11:9"), "\(result.stdout)\(result.stderr)")
            #expect((result.stdout + result.stderr).contains("bytes of text"))
            #expect(result.seconds < 10, "\(verb[0]) took \(result.seconds) s")
            #expect(result.peakMiB < 200, "\(verb[0]) peaked at \(result.peakMiB) MiB")
        }
        let get = try Orlctl.run(["get", "agents", "--state", state])
        #expect(!get.stdout.contains("bomb"))
    }

    /// Aliased 100 times the same string stays under the file's limit only if small:
    /// a resource's stored text is bounded too (1 MiB), so nothing large reaches the
    /// state to be loaded at every pass.
    @Test func aResourceLargerThanTheStoredLimitIsRefused() throws {
        let work = try TemporaryDirectory()
        let chunk = String(repeating: "y", count: 100_000)
        var text = """
            apiVersion: orl.dev/v1
            kind: Agent
            metadata:
              name: heavy
              annotations:
                a0: &s "\(chunk)"

            """
        for i in 1...100 { text += "    a\(i): *s\n" }
        text += "spec: {model: sim/small, runtime: {command: /bin/true}}\n"
        try work.write("heavy.yaml", text)
        let result = try Measured.run(["validate", "-f", work.url.appendingPathComponent("heavy.yaml").path])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.stdout.contains("heavy.yaml:1:1") && result.stdout.contains("more than 1048576 bytes of text"), "\(result.stdout)")
        #expect(result.peakMiB < 200)
    }

    /// A mapping of 200,000 unknown keys is reported in linear time: every "did you
    /// mean" is bounded (40,000 keys once took 57 s, 200,000 a quarter of an hour).
    @Test func manyUnknownKeysAreReportedInLinearTime() throws {
        let work = try TemporaryDirectory()
        var text =
            "apiVersion: orl.dev/v1\nkind: Agent\nmetadata: {name: keys}\nspec:\n  model: sim/small\n  runtime: {command: /bin/true}\n"
        for i in 0..<200_000 { text += "  modle\(i): 1\n" }
        try work.write("keys.yaml", text)
        let result = try Measured.run(["validate", "-f", work.url.appendingPathComponent("keys.yaml").path, "-o", "json"])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.cpuSeconds < 60, "took \(result.cpuSeconds) s of CPU (\(result.seconds) s wall)")
        #expect(result.peakMiB < 2048, "peaked at \(result.peakMiB) MiB")
        #expect(result.stdout.contains("unknown field \\\"modle199999\\\""))
    }

    /// `-f` naming a FIFO or a device is refused at once, as inside directories.
    @Test func nonRegularFilesAreRefusedByName() throws {
        let work = try TemporaryDirectory()
        let fifo = work.url.appendingPathComponent("pipe.yaml").path
        #expect(mkfifo(fifo, 0o600) == 0)
        for path in [fifo, "/dev/zero", "/dev/null"] {
            let result = try Measured.run(["validate", "-f", path])
            #expect(result.status == 2, "\(path): \(result.status)")
            #expect(result.stderr.contains("not a manifest file"), "\(path): \(result.stderr)")
            #expect(result.seconds < 5)
        }
    }

    /// State files are the user's alone whatever the directory's mode; a group- or
    /// world-readable state directory is warned about; an empty or corrupt state.db
    /// is refused at once, never taken for a new state.
    @Test func stateFilesArePrivateAndABadStateIsRefusedFast() throws {
        let work = try TemporaryDirectory()
        let state = work.url.appendingPathComponent("home").path
        #expect(mkdir(state, 0o755) == 0 && chmod(state, 0o755) == 0)
        try work.write(
            "fleet/a.yaml",
            "apiVersion: orl.dev/v1\nkind: ModelProvider\nmetadata: {name: sim}\nspec: {apiStyle: simulated, models: [{name: small, pricing: {input: 1, output: 1}}]}\n"
        )
        let applied = try Measured.run(["apply", "-f", work.url.appendingPathComponent("fleet").path, "--state", state])
        #expect(applied.status == 1 || applied.status == 0, "\(applied.stderr)")
        #expect(
            applied.stderr.contains("warning: the state directory \(state) is open to other local users (mode 755)"), "\(applied.stderr)")
        for name in try FileManager.default.contentsOfDirectory(atPath: state) {
            // The mode of the entry itself (attributes do not follow a symbolic link).
            let mode = try FileManager.default.attributesOfItem(atPath: state + "/" + name)[.posixPermissions] as? Int ?? 0o777
            #expect(mode & 0o077 == 0, "\(name) is \(String(mode, radix: 8))")
        }
        // A state.db someone made readable is made private again on open.
        #expect(chmod(state + "/state.db", 0o644) == 0)
        _ = try Measured.run(["get", "providers", "--state", state])
        #expect(try FileManager.default.attributesOfItem(atPath: state + "/state.db")[.posixPermissions] as? Int == 0o600)

        // Zero length: refused, and left as it was.
        let empty = work.url.appendingPathComponent("empty").path
        #expect(mkdir(empty, 0o700) == 0)
        #expect(FileManager.default.createFile(atPath: empty + "/state.db", contents: Data()))
        let refused = try Measured.run(["get", "providers", "--state", empty])
        #expect(refused.status == 2 && refused.stderr.contains("is empty (0 bytes)"), "\(refused.stderr)")
        #expect((try? FileManager.default.attributesOfItem(atPath: empty + "/state.db")[.size] as? Int) == 0)

        // Corrupt: refused in well under the 30 s busy timeout.
        let corrupt = work.url.appendingPathComponent("corrupt").path
        #expect(mkdir(corrupt, 0o700) == 0)
        #expect(FileManager.default.createFile(atPath: corrupt + "/state.db", contents: Data(repeating: 0x5a, count: 8192)))
        let bad = try Measured.run(["get", "providers", "--state", corrupt])
        #expect(bad.status == 2 && bad.stderr.contains("not a database"), "\(bad.stderr)")
        #expect(bad.seconds < 5, "took \(bad.seconds) s")
    }
}

/// 1,100 idle connections (no token needed to open one) against a real controller
/// started with a soft limit of 1,024 open files: it raises its limit, and an agent's
/// call still succeeds promptly.
@Suite(.serialized) struct ConnectionExhaustionTests {
    @Test func idleConnectionsDoNotLockAgentsOut() async throws {
        let h = try ControllerCommandTests.Harness()
        try h.apply([.init(name: "a")])
        // The controller inherits a soft limit of 1,024, as from a login shell.
        RawSocket.setSoftOpenFiles(1024)
        let controller = try h.startController()
        RawSocket.setSoftOpenFiles(nil)
        defer { h.stopControllerAtEnd() }
        let pids = try await h.waitForAgents(["a"], "after start")
        let environ = try String(contentsOfFile: "/proc/\(pids["a"]!)/environ", encoding: .utf8)
        let token = try #require(environ.split(separator: "\0").first { $0.hasPrefix("ORL_TOKEN=") }.map { String($0.dropFirst(10)) })
        let api = try String(contentsOfFile: h.state + "/controller.api", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let port = try #require(Int(api.split(separator: ":").last ?? ""))

        let limits = RawSocket.openFileLimits(of: controller.processIdentifier)
        #expect(limits != nil && limits?.soft == limits?.hard, "the controller raised its soft limit: \(String(describing: limits))")

        var idle: [Int32] = []
        defer { for fd in idle { close(fd) } }
        for _ in 0..<1100 {
            let fd = RawSocket.connect(port: port)
            if fd >= 0 { idle.append(fd) }
        }
        #expect(idle.count == 1100, "the test could open its connections")
        // Half of them start a request head and stop (slowloris).
        for fd in idle.prefix(550) {
            var bytes = Array("POST /v1/tasks/next HTTP/1.1\r\nHost: x\r\n".utf8)
            _ = write(fd, &bytes, bytes.count)
        }
        let started = ContinuousClock.now
        let request =
            "POST /v1/tasks/next?wait=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        let status = RawSocket.status(port: port, request, seconds: 10)
        #expect(status == 204, "the agent's call: \(String(describing: status)); \(h.log())")
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(RawSocket.status(port: port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 200)
    }
}
