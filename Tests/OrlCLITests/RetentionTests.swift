import Foundation
import OrlController
import OrlCore
import OrlJSON
import OrlStore
import Testing

/// `orlctl gc` on a real state: what it deletes, what it keeps, what it rolls up.
@Suite(.serialized) struct RetentionTests {
    @Test func gcDeletesOldHistoryRollsUpTheLedgerAndShowsSizes() async throws {
        let work = try TemporaryDirectory()
        let state = work.url.appendingPathComponent("state").path
        func orlctl(_ arguments: [String]) async throws -> Orlctl.Result { try await Orlctl.call(arguments + ["--state", state]) }
        #expect(try await orlctl(["apply", "-f", "manifests/"]).status == 0)
        var ids: [String] = []
        for topic in ["a", "b", "c", "d"] {
            let created = try await orlctl(["run", "workflow/content-pipeline", "--input", "topic=\(topic)"])
            ids.append(try #require(created.stdout.split(separator: " ").first.map(String.init), "\(created.stderr)"))
        }
        // Three end; the fourth still runs and is never collected.
        for id in ids.prefix(3) { #expect(try await orlctl(["cancel", id]).status == 0) }

        let store = try SQLiteStateStore(directory: state)
        let now = Controller.systemTime()
        let day: Int64 = 86_400_000
        let writer = ResourceID(kind: "Agent", namespace: "default", name: "writer")
        func entry(_ daysAgo: Int64, usd: Double) -> LedgerEntry {
            LedgerEntry(
                time: Timestamp(milliseconds: now.milliseconds - daysAgo * day), agent: writer, model: "sim/gpt-4o",
                usage: TokenUsage(prompt: 100, completion: 50), usd: usd, latencyMilliseconds: 5, requestID: "r\(daysAgo)-\(usd)",
                outcome: "ok")
        }
        try store.write { writer throws(StoreError) in
            try writer.append([entry(100, usd: 0.25), entry(100, usd: 0.5), entry(90, usd: 1), entry(1, usd: 2)])
        }

        // A value on each run's blackboard, as a step's output: it goes with its run.
        let runIDs = ids.compactMap { RunID($0.replacingOccurrences(of: "run/", with: "")) }
        #expect(runIDs.count == 4)
        try store.writeRuns { writer throws(StoreError) in
            for run in runIDs {
                try writer.put(
                    BlackboardValue(run: run, key: "research", value: "{\"notes\":\"n\"}", writtenAt: now, step: "research", attempt: 1))
            }
        }
        func blackboard(_ run: RunID) throws -> Int { try store.readRuns { reader throws(StoreError) in try reader.values(of: run).count } }
        #expect(try runIDs.allSatisfy { try blackboard($0) == 1 })

        let gc = try await orlctl(["gc", "--keep-runs", "1", "--keep-events", "5"])
        #expect(gc.status == 0, "\(gc.stdout)\(gc.stderr)")
        #expect(try blackboard(runIDs[0]) == 0 && blackboard(runIDs[1]) == 0)
        #expect(try blackboard(runIDs[2]) > 0 && blackboard(runIDs[3]) > 0)
        #expect(gc.stdout.contains("Deleted 2 runs, "), "\(gc.stdout)")
        #expect(gc.stdout.contains("and 3 ledger rows (rolled up into 2 daily rows)"), "\(gc.stdout)")
        #expect(gc.stdout.contains("database"), "\(gc.stdout)")

        let runs = try await orlctl(["runs", "-o", "json"]).stdout
        ids = ids.map { "\"\($0.replacingOccurrences(of: "run/", with: ""))\"" }
        #expect(runs.contains(ids[3]) && runs.contains(ids[2]), "\(runs)")
        #expect(!runs.contains(ids[0]) && !runs.contains(ids[1]), "\(runs)")
        let events = try JSONSerialization.jsonObject(with: Data(try await orlctl(["events", "-o", "json"]).stdout.utf8)) as? [String: Any]
        #expect((events?["events"] as? [Any])?.count == 5)

        let daily = try store.ledgerDaily()
        #expect(daily.map(\.calls) == [2, 1], "\(daily)")
        #expect(daily.map(\.usd) == [0.75, 1], "\(daily)")
        #expect(daily.allSatisfy { $0.agent == writer && $0.usage.prompt + $0.usage.completion == $0.calls * 150 })
        let kept = try store.read { reader throws(StoreError) in try reader.ledger(LedgerQuery()) }
        #expect(kept.map(\.usd) == [2])

        // A second pass finds nothing more to do.
        let again = try await orlctl(["gc", "--keep-runs", "1", "--keep-events", "5"])
        #expect(again.stdout.hasPrefix("Deleted 0 runs, 0 events and 0 ledger rows"), "\(again.stdout)")
        #expect(try await orlctl(["gc", "--ledger-older-than", "7d"]).status == 2)

        let described = try await orlctl(["describe", "state"])
        #expect(described.status == 0, "\(described.stderr)")
        #expect(described.stdout.contains("State:              \(state)"), "\(described.stdout)")
        #expect(described.stdout.contains("database") && described.stdout.contains(" KiB"), "\(described.stdout)")
    }

    /// Spend per agent and day stays reportable after retention has deleted the calls:
    /// `usage` reads the daily roll-up for the days gc rolled up.
    @Test func usageReportsDaysRolledUpByGC() async throws {
        let work = try TemporaryDirectory()
        let state = work.url.appendingPathComponent("state").path
        func orlctl(_ arguments: [String]) async throws -> Orlctl.Result { try await Orlctl.call(arguments + ["--state", state]) }
        let store = try SQLiteStateStore(directory: state)
        let day: Int64 = 86_400_000
        let now = Controller.systemTime()
        // Noon, 100 days ago: well past the ledger's 62 days.
        let old = Timestamp(milliseconds: (now.milliseconds / day - 100) * day + day / 2)
        let oldDay = LedgerDay.name(of: old)
        func entry(_ agent: String, at time: Timestamp, usd: Double, model: String = "sim/small") -> LedgerEntry {
            LedgerEntry(
                time: time, agent: ResourceID(kind: "Agent", name: agent), model: model, usage: TokenUsage(prompt: 100, completion: 50),
                usd: usd, latencyMilliseconds: 5, requestID: UUID().uuidString, outcome: "ok")
        }
        try store.write { writer throws(StoreError) in
            try writer.append([
                entry("writer", at: old, usd: 0.25), entry("writer", at: old, usd: 0.5),
                entry("writer", at: old, usd: 1, model: "sim/large"),
                entry("researcher", at: old, usd: 2), entry("writer", at: Timestamp(milliseconds: old.milliseconds + day), usd: 4),
                entry("writer", at: now, usd: 8),
            ])
        }
        func summary(_ arguments: [String]) async throws -> [String: Any] {
            let result = try await orlctl(["usage", "-o", "json"] + arguments)
            #expect(result.status == 0, "\(result.stderr)")
            return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        }
        let before = try await summary(["--since", oldDay, "--by-day"])
        #expect(before["rolledUpCalls"] as? Int == 0)

        let gc = try await orlctl(["gc"])
        #expect(gc.status == 0, "\(gc.stderr)")
        #expect(gc.stdout.contains("and 5 ledger rows (rolled up into 4 daily rows)"), "\(gc.stdout)")
        #expect(try store.read { reader throws(StoreError) in try reader.ledger(LedgerQuery()) }.count == 1)

        // The same report as before gc: per day, agent and model.
        let after = try await summary(["--since", oldDay, "--by-day"])
        #expect(after["rolledUpCalls"] as? Int == 5)
        #expect(after["calls"] as? Int == 6 && after["usd"] as? Double == 15.75, "\(after)")
        func rows(_ object: [String: Any]) -> [String] {
            (object["byDayAgentAndModel"] as? [[String: Any]] ?? []).map {
                "\($0["day"]!) \($0["agent"]!) \($0["model"]!) \($0["calls"]!) \($0["promptTokens"]!) \($0["usd"]!)"
            }
        }
        #expect(rows(after) == rows(before), "\(rows(after))")
        #expect(rows(after).first == "\(oldDay) researcher sim/small 1 100 2.0")
        #expect(rows(after).contains("\(oldDay) writer sim/small 2 200 0.75"))

        // One agent, one day's summary, in text.
        let writer = try await orlctl(["usage", "--agent", "writer", "--since", oldDay, "--by-day"])
        #expect(writer.stdout.contains("\(oldDay)  writer  sim/large  1 "), "\(writer.stdout)")
        #expect(writer.stdout.contains("5 calls since \(oldDay)T00:00:00Z: $13.7500"), "\(writer.stdout)")
        #expect(writer.stdout.contains("(4 of them from the daily totals retention kept, \(oldDay) on)"), "\(writer.stdout)")
        // The calls themselves are gone, and --calls says so.
        let listed = try await orlctl(["usage", "--calls", "--since", oldDay])
        #expect(listed.stderr.contains("5 calls of 2 days from \(oldDay) on were rolled up by retention"), "\(listed.stderr)")
        #expect(listed.stdout.split(separator: "\n").count == 2, "\(listed.stdout)")
    }

    @Test func describeStateGivesBytesToScripts() async throws {
        let work = try TemporaryDirectory()
        let state = work.url.appendingPathComponent("state").path
        #expect(try await Orlctl.call(["apply", "-f", "manifests/", "--state", state]).status == 0)
        let json = try await Orlctl.call(["describe", "state", "-o", "json", "--state", state])
        #expect(json.status == 0, "\(json.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let parts = try #require(object["parts"] as? [[String: Any]])
        #expect(parts.map { $0["part"] as? String } == ["database", "logs", "git mirrors", "code trees", "agents' directories"])
        let database = try #require(parts.first)
        #expect(database["path"] as? String == state + "/state.db")
        #expect((database["bytes"] as? Int ?? 0) > 4096, "\(database)")
        #expect(parts[2]["bytes"] is NSNull, "no git source: no mirrors")
        #expect(object["totalBytes"] as? Int == parts.compactMap { $0["bytes"] as? Int }.reduce(0, +))
        let yaml = try await Orlctl.call(["describe", "state", "-o", "yaml", "--state", state])
        #expect(yaml.stdout.contains("- part: database\n"), "\(yaml.stdout)")
        let text = try await Orlctl.call(["describe", "state", "--state", state])
        #expect(text.stdout.contains(" KiB\n") && text.stdout.contains("\ntotal "), "\(text.stdout)")
        // Resources are described in text; get gives them to scripts.
        let resource = try await Orlctl.call(["describe", "agent/researcher", "-o", "json", "--state", state])
        #expect(resource.status == 2 && resource.stderr.contains("use get -o json"), "\(resource.stderr)")
    }

    /// `gc` has git repack and prune each git source's mirror, and says what it freed.
    @Test func gcCollectsGitMirrors() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        func sync() async throws {
            let result = try await Orlctl.call(
                ["sync", "--once", "--repo", repo.root.path, "--path", "fleet", "--state", repo.state], in: repo.directory.url)
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        }
        try await sync()
        for round in 1...3 {
            try repo.write("notes/\(round).txt", String(repeating: "round \(round)\n", count: 2_000))
            try repo.commit("round \(round)")
            try await sync()
        }
        let packs = repo.state + "/git/repo.git/objects/pack"
        func count() -> Int { ((try? FileManager.default.contentsOfDirectory(atPath: packs)) ?? []).filter { $0.hasSuffix(".pack") }.count }
        let loose = repo.state + "/git/repo.git/objects"
        func looseObjects() -> Int {
            ((try? FileManager.default.contentsOfDirectory(atPath: loose)) ?? []).filter { $0.count == 2 }.count
        }
        #expect(count() + looseObjects() > 1, "four fetches leave more than one pack or loose objects")

        // No git on PATH: said, not failed.
        let without = try await Orlctl.call(["gc", "--state", repo.state], environment: ["PATH": "/nonexistent"])
        #expect(without.status == 0, "\(without.stderr)")
        #expect(without.stdout.contains("Git mirrors not collected: no git on PATH"), "\(without.stdout)")

        let gc = try await Orlctl.call(["gc", "--state", repo.state])
        #expect(gc.status == 0, "\(gc.stderr)")
        #expect(gc.stdout.contains("Collected git mirror \"repo\": "), "\(gc.stdout)")
        #expect(gc.stdout.contains("(freed "), "\(gc.stdout)")
        #expect(count() == 1 && looseObjects() == 0, "\(count()) packs, \(looseObjects()) loose")
        // The mirror still serves the source.
        try repo.write("notes/4.txt", "four\n")
        try repo.commit("round 4")
        try await sync()
    }
}
