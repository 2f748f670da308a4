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

        let gc = try await orlctl(["gc", "--keep-runs", "1", "--keep-events", "5"])
        #expect(gc.status == 0, "\(gc.stdout)\(gc.stderr)")
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
        #expect(daily.allSatisfy { $0.agent == writer && $0.tokens == $0.calls * 150 })
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
}
