import Foundation
import Synchronization
import Testing

/// `apply` and `diff` in process, with a temporary state directory and a copy of the
/// demo fleet to edit; concurrent and killed applies run the real binary.
@Suite(.serialized) struct ApplyCommandTests {
    let work: TemporaryDirectory
    var state: String { work.url.appendingPathComponent("state").path }
    var fleet: URL { work.url.appendingPathComponent("fleet") }

    init() throws {
        work = try TemporaryDirectory()
        try FileManager.default.copyItem(
            at: Orlctl.packageRoot.appendingPathComponent("manifests"), to: work.url.appendingPathComponent("fleet"))
    }

    func orlctl(_ arguments: [String]) async throws -> Orlctl.Result {
        try await Orlctl.call(arguments + ["--state", state], in: work.url)
    }

    func edit(_ file: String, _ old: String, _ new: String) throws {
        let url = fleet.appendingPathComponent(file)
        let text = try String(contentsOf: url, encoding: .utf8)
        #expect(text.contains(old), "\(file) has no \(old)")
        try text.replacingOccurrences(of: old, with: new).write(to: url, atomically: true, encoding: .utf8)
    }

    @Test func applyThenReapplyWritesNothing() async throws {
        let first = try await orlctl(["apply", "-f", "fleet"])
        #expect(first.status == 0, "\(first.stdout)\(first.stderr)")
        #expect(first.stdout.contains("  + ModelProvider/sim"))
        #expect(first.stdout.contains("Plan: 18 to add, 0 to change, 0 to prune (0 unchanged).\nApplied as #1.\n"))
        let again = try await orlctl(["apply", "-f", "fleet"])
        #expect(again.status == 0)
        #expect(again.stdout == "No changes. 18 resources up to date.\n")
        #expect(try await orlctl(["diff", "-f", "fleet"]).status == 0)
        // The same directory named another way is the same source.
        #expect(try await orlctl(["diff", "-f", "./fleet/"]).status == 0)
    }

    @Test func oneFieldChangeIsOneUpdate() async throws {
        _ = try await orlctl(["apply", "-f", "fleet"])
        try edit("budgets/publisher.yaml", "usd: 0.50", "usd: 0.75")
        let diff = try await orlctl(["diff", "-f", "fleet"])
        #expect(diff.status == 1)
        #expect(diff.stdout.contains("  ~ Budget/publisher"))
        #expect(diff.stdout.contains("      ~ spec.limits[window=day].usd: 0.5 → 0.75"), "\(diff.stdout)")
        #expect(diff.stdout.contains("Plan: 0 to add, 1 to change, 0 to prune (17 unchanged)."))
        let apply = try await orlctl(["apply", "-f", "fleet", "-o", "json"])
        #expect(apply.status == 0)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(apply.stdout.utf8)) as? [String: Any])
        #expect(json["applied"] as? Bool == true && json["applyNumber"] as? Int == 2 && json["change"] as? Int == 1)
        #expect(try await orlctl(["diff", "-f", "fleet"]).status == 0)
    }

    @Test func pruneOnlyWhenAsked() async throws {
        _ = try await orlctl(["apply", "-f", "fleet"])
        try FileManager.default.removeItem(at: fleet.appendingPathComponent("tools/notify-slack.yaml"))
        try edit("agents/publisher.yaml", ", notify-slack]", "]")
        try edit("workflows/content-pipeline.yaml", "tools: [notify-slack]", "tools: []")
        try edit("policies/agents.yaml", ", notify-slack]", "]")
        let keep = try await orlctl(["apply", "-f", "fleet"])
        #expect(keep.status == 0, "\(keep.stdout)\(keep.stderr)")
        #expect(keep.stdout.contains("0 to prune"))
        let prune = try await orlctl(["apply", "-f", "fleet", "--prune"])
        #expect(prune.status == 0, "\(prune.stdout)\(prune.stderr)")
        #expect(prune.stdout.contains("  - Tool/notify-slack"))
        #expect(prune.stdout.contains("1 to prune"))
    }

    @Test func aBrokenFileMeansNothingIsWritten() async throws {
        try "apiVersion: orl.dev/v1\nkind: Tool\nmetadata: {name: broken}\nspec: {type: http}\n"
            .write(to: fleet.appendingPathComponent("tools/broken.yaml"), atomically: true, encoding: .utf8)
        let apply = try await orlctl(["apply", "-f", "fleet"])
        #expect(apply.status == 1)
        #expect(apply.stdout.contains("error[schema.invalid]"))
        #expect(apply.stderr.contains("nothing was applied"))
        try FileManager.default.removeItem(at: fleet.appendingPathComponent("tools/broken.yaml"))
        #expect(try await orlctl(["diff", "-f", "fleet"]).stdout.contains("Plan: 18 to add"))
    }

    @Test func guardsStopABigOrEmptyPrune() async throws {
        _ = try await orlctl(["apply", "-f", "fleet"])
        try "# nothing here\n".write(to: work.url.appendingPathComponent("empty.yaml"), atomically: true, encoding: .utf8)
        let empty = try await orlctl(["apply", "-f", "empty.yaml", "--source", try sourceOfFleet(), "--prune"])
        #expect(empty.status == 1)
        #expect(empty.stderr.contains("--allow-empty"))
        let many = try await orlctl(["apply", "-f", "empty.yaml", "--source", try sourceOfFleet(), "--prune", "--allow-empty"])
        #expect(many.status == 1)
        #expect(many.stderr.contains("prunes 18 resources, more than --max-deletions 10"))
        #expect(try await orlctl(["diff", "-f", "fleet"]).status == 0, "refused plans write nothing")
        let dry = try await orlctl([
            "apply", "-f", "empty.yaml", "--source", try sourceOfFleet(), "--prune", "--allow-empty", "--max-deletions", "18", "--dry-run",
        ])
        #expect(dry.status == 0 && dry.stdout.contains("Dry run: nothing was written."))
        #expect(try await orlctl(["diff", "-f", "fleet"]).status == 0)
    }

    func sourceOfFleet() throws -> String {
        "files:" + fleet.standardizedFileURL.resolvingSymlinksInPath().path
    }

    @Test func twoAppliesAtOnceBothLand() async throws {
        // Two sources applied by two processes at the same moment: both succeed, one
        // after the other, and neither loses the other's resources.
        let other = work.url.appendingPathComponent("other")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        try "apiVersion: orl.dev/v1\nkind: Tool\nmetadata: {name: extra, namespace: ops}\nspec: {type: command, command: {command: x}}\n"
            .write(to: other.appendingPathComponent("tool.yaml"), atomically: true, encoding: .utf8)
        let (state, directory) = (state, work.url)
        let results = try [["apply", "-f", "fleet"], ["apply", "-f", "other"]].concurrentMap {
            try Orlctl.run($0 + ["--state", state], in: directory)
        }
        #expect(results.map(\.status) == [0, 0], "\(results.map { $0.stdout + $0.stderr })")
        #expect(try await orlctl(["diff", "-f", "fleet"]).status == 0)
        #expect(try await orlctl(["diff", "-f", "other"]).status == 0)
    }

    @Test func killedMidApplyLeavesAllOrNothing() async throws {
        // A large set, killed while its transaction is being written (the WAL file is
        // growing): the store then holds none of it; applied again, all of it.
        let big = work.url.appendingPathComponent("big")
        try FileManager.default.createDirectory(at: big, withIntermediateDirectories: true)
        var text = ""
        for i in 0..<3000 {
            text +=
                "---\napiVersion: orl.dev/v1\nkind: Tool\nmetadata: {name: tool-\(i)}\nspec: {type: command, command: {command: run, args: [\"\(i)\"]}}\n"
        }
        try text.write(to: big.appendingPathComponent("tools.yaml"), atomically: true, encoding: .utf8)
        // Create the database first, so that the only writing left is the apply's own.
        #expect(try await orlctl(["diff", "-f", "big"]).status == 1)
        let wal = URL(fileURLWithPath: state).appendingPathComponent("state.db-wal").path

        let process = Process()
        process.executableURL = Orlctl.binary
        process.arguments = ["apply", "-f", "big", "--state", state]
        process.currentDirectoryURL = work.url
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var walBytes = 0
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning, Date() < deadline {
            walBytes = (try? FileManager.default.attributesOfItem(atPath: wal)[.size] as? Int) ?? 0
            if walBytes > 64 * 1024 { break }
            usleep(200)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "the apply finished before it could be killed")
        #expect(walBytes > 64 * 1024, "killed before the transaction was being written")

        let after = try await orlctl(["diff", "-f", "big"])
        #expect(after.stdout.contains("Plan: 3000 to add, 0 to change, 0 to prune (0 unchanged)."), "\(after.stdout.suffix(300))")
        #expect(try await orlctl(["apply", "-f", "big"]).status == 0)
        #expect(try await orlctl(["diff", "-f", "big"]).stdout == "No changes. 3000 resources up to date.\n")
    }
}

extension Array where Element: Sendable {
    /// Runs `transform` on every element at once, each on its own thread.
    func concurrentMap<T: Sendable>(_ transform: @escaping @Sendable (Element) throws -> T) throws -> [T] {
        let results = Mutex([Result<T, any Error>?](repeating: nil, count: count))
        let done = DispatchGroup()
        let threads = enumerated().map { index, element in
            done.enter()
            return Thread {
                let result = Result { try transform(element) }
                results.withLock { $0[index] = result }
                done.leave()
            }
        }
        for thread in threads { thread.start() }
        done.wait()
        let collected = results.withLock { $0 }
        return try collected.map { try $0!.get() }
    }
}
