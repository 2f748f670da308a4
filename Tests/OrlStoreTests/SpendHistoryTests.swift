import OrlCore
import OrlTestSupport
import Testing

@testable import OrlStore

/// Spend per day as the dashboard charts it: the raw ledger and the days retention
/// rolled up, each counted once, within `since ..< until`.
@Suite struct SpendHistoryTests {
    static let day: Int64 = 86_400_000
    // Noon, so that "today" is not a boundary.
    static let now = Timestamp(milliseconds: 20_000 * day + day / 2)

    static func entry(_ daysAgo: Int64, usd: Double, agent name: String = "writer") -> LedgerEntry {
        LedgerEntry(
            time: Timestamp(milliseconds: now.milliseconds - daysAgo * day), agent: agent(name), model: "sim/m",
            usage: TokenUsage(prompt: 10, completion: 5), usd: usd, latencyMilliseconds: 1, requestID: "r\(daysAgo)-\(usd)-\(name)",
            outcome: "ok")
    }

    @Test func daysAreSummedWithinTheirBoundsFromTheLedgerAndItsRollUps() throws {
        try withStateDirectory { path in
            let store = try SQLiteStateStore(directory: path)
            try store.write { writer throws(StoreError) in
                try writer.append([
                    Self.entry(10, usd: 1), Self.entry(10, usd: 1, agent: "other"), Self.entry(3, usd: 2), Self.entry(1, usd: 4),
                    Self.entry(0, usd: 8),
                ])
            }
            // Rows older than a week are rolled up into ledger_daily and deleted.
            _ = try store.retain(RetentionPolicy(ledgerMaxAge: .seconds(7 * 86_400)), now: Self.now)
            let today = Int(Self.now.milliseconds / Self.day)
            let since = Timestamp(milliseconds: (Int64(today) - 13) * Self.day)
            let all = try store.dailySpend(since: since, agent: nil)
            #expect(all.mapValues(\.usd) == [today - 10: 2, today - 3: 2, today - 1: 4, today: 8])
            #expect(all[today - 10]?.tokens == 30)

            let yesterday = Timestamp(milliseconds: (Int64(today) - 1) * Self.day)
            let closed = try store.dailySpend(since: since, until: yesterday, agent: nil)
            #expect(closed.mapValues(\.usd) == [today - 10: 2, today - 3: 2])
            let open = try store.dailySpend(since: yesterday, until: nil, agent: nil)
            #expect(open.mapValues(\.usd) == [today - 1: 4, today: 8])

            let one = try store.dailySpend(since: since, until: yesterday, agent: agent("other"))
            #expect(one.mapValues(\.usd) == [today - 10: 1])
        }
    }
}
