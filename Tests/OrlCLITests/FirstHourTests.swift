import Foundation
import Glibc
import Testing

/// What a newcomer does in the first hour, end to end on a fresh state.
@Suite(.serialized) struct FirstHourTests {
    typealias Harness = ControllerCommandTests.Harness

    static func json(_ result: Orlctl.Result) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)\(result.stderr)")
    }

    /// The mission's command, from the repository's root, with nothing prepared: the
    /// controller starts and the three demo agents run the repository's agent.py.
    @Test func applyOfTheDemoManifestsAloneRunsTheFleet() async throws {
        let h = try Harness()
        defer { _ = try? h.orlctl(["controller", "stop"]) }
        let apply = try Orlctl.run(["apply", "-f", "manifests/", "--state", h.state], environment: ["ORL_NO_CONTROLLER": ""])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("controller started"), "\(apply.stdout)")
        var phases: [String: String] = [:]
        let running = await eventually(seconds: 30) {
            guard let list = try? Self.json(h.orlctl(["get", "agents", "-o", "json"])),
                let items = list["items"] as? [[String: Any]]
            else { return false }
            phases = [:]
            for item in items {
                let name = (item["metadata"] as? [String: Any])?["name"] as? String ?? "?"
                phases[name] = (item["status"] as? [String: Any])?["phase"] as? String
            }
            return phases == ["publisher": "Running", "researcher": "Running", "writer": "Running"]
        }
        #expect(running, "\(phases)\n\((try? String(contentsOfFile: h.state + "/logs/controller.log", encoding: .utf8)) ?? "")")
        let log = (try? String(contentsOfFile: h.state + "/logs/default/writer.log", encoding: .utf8)) ?? ""
        #expect(
            await eventually(seconds: 10) {
                ((try? String(contentsOfFile: h.state + "/logs/default/writer.log", encoding: .utf8)) ?? "").contains("started")
            }, "\(log)")

        // The README's next step: the pipeline runs, its writer saves the draft with the
        // drafts.py command Tool (resolved in the repository too), the publisher reads it.
        let created = try h.orlctl(["run", "workflow/content-pipeline", "--input", "topic=vector databases"])
        let run = try #require(created.stdout.split(separator: " ").first.map(String.init), "\(created.stderr)")
        func status() -> String {
            let runs = (try? Self.json(h.orlctl(["runs", "-o", "json"])))?["runs"] as? [[String: Any]] ?? []
            return runs.first { "run/" + ($0["id"] as? String ?? "") == run }?["status"] as? String ?? "?"
        }
        #expect(await eventually(seconds: 30) { status() == "WaitingApproval" }, "\(status())")
        let approve = try h.orlctl(["approve", run, "--step", "editorial-review"])
        #expect(approve.status == 0, "\(approve.stderr)")
        #expect(await eventually(seconds: 30) { status() == "Succeeded" }, "\(status())")
        let drafts = (try? FileManager.default.contentsOfDirectory(atPath: h.state + "/workspace/drafts")) ?? []
        #expect(drafts.count == 1, "\(drafts)")

        let stop = try h.orlctl(["controller", "stop"])
        #expect(stop.status == 0, "\(stop.stderr)")
    }

    /// `get -o json` carries what the tables show as fields of `status`.
    @Test func getJSONCarriesTheProcessAsStatusFields() async throws {
        let h = try Harness()
        try h.apply([.init(name: "up"), .init(name: "down", script: "exit 3")])
        try h.startController()
        defer { h.stopControllerAtEnd() }
        func status(_ name: String) throws -> [String: Any] {
            try Self.json(h.orlctl(["get", "agent/\(name)", "-o", "json"]))["status"] as? [String: Any] ?? [:]
        }
        var up: [String: Any] = [:]
        #expect(
            await eventually(seconds: 15) {
                up = (try? status("up")) ?? [:]
                return up["pid"] != nil && up["phase"] as? String == "Running"
            }, "\(up)")
        #expect(up["phase"] as? String == "Running")
        #expect(up["restarts"] as? Int == 0)
        #expect((up["startTime"] as? String)?.hasSuffix("Z") == true)
        #expect(up["lastExit"] == nil && up["reason"] == nil)
        let table = try h.orlctl(["get", "agent/up"]).stdout
        #expect(table.contains(" \(up["pid"] as? Int ?? -1) "), "\(table)")

        var down: [String: Any] = [:]
        #expect(
            await eventually(seconds: 15) {
                down = (try? status("down")) ?? [:]
                return down["lastExit"] != nil
            }, "\(down)")
        let lastExit = down["lastExit"] as? [String: Any] ?? [:]
        #expect(lastExit["exitCode"] as? Int == 3)
        #expect(lastExit["reason"] as? String == "Error")
        #expect((lastExit["finishedAt"] as? String)?.hasSuffix("Z") == true)
        #expect(down["pid"] == nil)
        #expect(down["phase"] as? String != "Running")
        #expect(down["reason"] as? String != nil, "\(down)")
        #expect(down["conditions"] != nil)

        let yaml = try h.orlctl(["get", "agent/down", "-o", "yaml"]).stdout
        #expect(yaml.contains("  lastExit:\n    exitCode: 3\n    reason: Error\n"), "\(yaml)")
    }

    /// `sync --once` starts the controller the applied agents need, as apply does.
    @Test func syncStartsAControllerAsApplyDoes() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        defer { _ = try? repo.orlctl(["controller", "stop"]) }
        let sync = try Orlctl.run(
            ["sync", "--once", "--repo", repo.root.path, "--path", "fleet", "--state", repo.state], in: repo.directory.url,
            environment: ["ORL_NO_CONTROLLER": ""])
        #expect(sync.status == 0, "\(sync.stdout)\(sync.stderr)")
        #expect(sync.stdout.contains("controller started"), "\(sync.stdout)")
        // `controller stop` exits 0 only when a controller ran (1: none runs).
        let stop = try repo.orlctl(["controller", "stop"])
        #expect(stop.status == 0, "\(stop.stdout)\(stop.stderr)")
    }
}

extension FirstHourTests {
    /// `watch` starts the controller the applied agents need, as apply and sync do (its
    /// messages on stderr, its log lines on stdout).
    @Test func watchStartsAControllerAsApplyDoes() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        defer { _ = try? repo.orlctl(["controller", "stop"]) }
        let process = Process()
        process.executableURL = Orlctl.binary
        process.arguments = ["watch", "--repo", repo.root.path, "--path", "fleet", "--interval", "1h", "--state", repo.state]
        process.currentDirectoryURL = repo.directory.url
        var environment = ProcessInfo.processInfo.environment
        environment["NO_COLOR"] = "1"
        environment["ORL_NO_CONTROLLER"] = nil
        process.environment = environment
        let output = repo.directory.url.appendingPathComponent("watch.log")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            try? handle.close()
        }
        func log() -> String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }
        #expect(await eventually(seconds: 30) { log().contains("controller started") }, "\(log())")
        process.terminate()
        process.waitUntilExit()
        // The controller outlives the watcher: `controller stop` exits 0 only when one ran.
        let stop = try repo.orlctl(["controller", "stop"])
        #expect(stop.status == 0, "\(stop.stdout)\(stop.stderr)\n\(log())")
    }
}

/// `waitUntil`, for a condition that may throw (as false).
func eventually(seconds: Double, _ condition: () throws -> Bool) async -> Bool {
    await waitUntil(seconds: seconds) { (try? condition()) == true }
}
