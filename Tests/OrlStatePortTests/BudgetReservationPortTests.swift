import Foundation
import OrlCore
import OrlTestSupport
import Synchronization
import Testing

private let now = Timestamp(milliseconds: 1_795_161_600_000 + 3_600_000)
private let team = BudgetMeter.Account(budget: ResourceID(kind: "Budget", name: "team"), agent: nil)
private let writerAccount = BudgetMeter.Account(budget: ResourceID(kind: "Budget", name: "per-agent"), agent: agent("writer"))

private func line(_ account: BudgetMeter.Account = team, _ window: BudgetSpec.Window = .day, usd: Int64?, tokens: Int64? = nil)
    -> BudgetLine
{
    BudgetLine(
        account: account, window: window, windowStart: window.interval(containing: now).lowerBound,
        cap: BudgetAmount(microUSD: usd, tokens: tokens))
}

private func amount(_ micro: Int64, tokens: Int64 = 0) -> BudgetAmount { BudgetAmount(microUSD: micro, tokens: tokens) }

/// The `BudgetReservations` port: a reservation is granted only within every cap, all lines
/// or none; settling and releasing move the amounts; and many processes reserving at once
/// against one small cap never pass it (the budget hammer).
@Suite struct BudgetReservationPortTests {
    @Test(arguments: Backend.available) func reservationsStayWithinTheCapAllLinesOrNone(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let day = line(usd: 1_000_000)
        let month = line(team, .month, usd: 1_500_000, tokens: 1000)
        guard case .reserved(let first) = try store.reserve(amount(600_000, tokens: 10), against: [month, day], spentBefore: [:], now: now)
        else {
            Issue.record("the first reservation was refused")
            return
        }
        #expect(first.lines == [day.key, month.key].sorted())
        // 600,000 + 500,000 > 1,000,000: refused by the day line; the month line keeps nothing of it.
        guard case .refused(let refusal) = try store.reserve(amount(500_000), against: [day, month], spentBefore: [:], now: now) else {
            Issue.record("a reservation past the cap was granted")
            return
        }
        #expect(refusal.key == day.key && refusal.reserved.microUSD == 600_000 && refusal.cap.microUSD == 1_000_000)
        let lines = try store.budgetLines(since: nil)
        #expect(lines.map(\.reserved.microUSD) == [600_000, 600_000])
        // Exactly at the cap is allowed.
        guard case .reserved(let second) = try store.reserve(amount(400_000), against: [day], spentBefore: [:], now: now) else {
            Issue.record("a reservation reaching the cap exactly was refused")
            return
        }
        // Settling replaces the reservation by the cost; releasing gives it back; once only.
        #expect(try store.settle(first.id, cost: amount(250_000, tokens: 7)))
        #expect(try !store.settle(first.id, cost: amount(250_000, tokens: 7)))
        #expect(try store.release(second.id))
        #expect(try !store.release(second.id))
        let after = try store.budgetLines(since: nil)
        #expect(after.map(\.spent) == [amount(250_000, tokens: 7), amount(250_000, tokens: 7)])
        #expect(after.allSatisfy { $0.reserved == amount(0) })
        // Refused by a line taken after one it granted (day, then month: 7 + 994 tokens >
        // 1000): the day line gives back what it took.
        guard
            case .refused(let byMonth) = try store.reserve(amount(100_000, tokens: 994), against: [day, month], spentBefore: [:], now: now)
        else {
            Issue.record("a reservation past the month's token cap was granted")
            return
        }
        #expect(byMonth.key == month.key && byMonth.spent.tokens == 7 && byMonth.reserved == amount(0))
        #expect(try store.budgetLines(since: nil).allSatisfy { $0.reserved == amount(0) })
        // A line first counted starts at what the ledger says was spent before.
        let agentDay = line(writerAccount, usd: 100)
        let refused = try store.reserve(amount(50), against: [agentDay], spentBefore: [agentDay.key: amount(60)], now: now)
        guard case .refused(let state) = refused else {
            Issue.record("spent before was ignored")
            return
        }
        #expect(state.spent.microUSD == 60)
        // A lower cap applied later counts at once; a metric without a cap is not limited.
        let lower = line(usd: 300_000)
        guard case .refused = try store.reserve(amount(100_000), against: [lower], spentBefore: [:], now: now) else {
            Issue.record("a lowered cap was ignored")
            return
        }
        guard case .reserved = try store.reserve(amount(0, tokens: 1_000_000), against: [line(usd: nil)], spentBefore: [:], now: now)
        else {
            Issue.record("an unlimited metric was limited")
            return
        }
    }

    /// Holds that expire: one whose gateway stops renewing it, and one whose node's lease
    /// ended, are released by a sweep (from another connection, as another node's gateway);
    /// a hold without a holder, and one of a live node that is renewed, are not. A settlement
    /// arriving after the release counts the call's cost once and gives nothing back twice.
    @Test(arguments: Backend.available) func abandonedHoldsAreReleasedAndALateSettlementCountsOnce(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let sweeper = try state.open()
        let day = line(usd: 10_000_000)
        func reserved() throws -> Int64? { try sweeper.budgetLines(since: nil).first?.reserved.microUSD }
        func spent() throws -> Int64? { try sweeper.budgetLines(since: nil).first?.spent.microUSD }
        func hold(_ micro: Int64, _ holder: BudgetHolder?) throws -> Int64 {
            guard case .reserved(let hold) = try store.reserve(amount(micro), against: [day], spentBefore: [:], now: now, holder: holder)
            else { throw StoreError("refused") }
            return hold.id
        }
        let n1 = try store.registerNode("n1", labels: [:], duration: .seconds(30))
        let n2 = try store.registerNode("n2", labels: [:], duration: .seconds(30))
        let lapsing = try hold(400_000, BudgetHolder(owner: "gw-a", lease: .seconds(60)))
        let ofNode = try hold(300_000, BudgetHolder(owner: "gw-b", node: "n1", generation: n1.generation, lease: .seconds(60)))
        let forever = try hold(100_000, nil)
        let live = try hold(50_000, BudgetHolder(owner: "gw-d", node: "n2", generation: n2.generation, lease: .seconds(60)))
        #expect(try sweeper.releaseAbandonedHolds() == 0)
        #expect(try reserved() == 850_000)

        // gw-a's last renewal gives it 200 ms more; then it renews no more (it died).
        #expect(try store.renewHolds(of: "gw-a", lease: .milliseconds(200)) == 1)
        #expect(try store.renewHolds(of: "nobody", lease: .seconds(60)) == 0)
        var released = 0
        let deadline = ContinuousClock.now + .seconds(10)
        while released == 0 && ContinuousClock.now < deadline {
            released = try sweeper.releaseAbandonedHolds()
            if released == 0 { Thread.sleep(forTimeInterval: 0.05) }
        }
        #expect(released == 1)
        #expect(try reserved() == 450_000)

        // n1's lease ends (its guard saw it die): its hold goes at the next sweep, though its
        // own lease has most of a minute left; n2's, live, stays.
        try store.expireNode(n1)
        #expect(try sweeper.releaseAbandonedHolds() == 1)
        #expect(try reserved() == 150_000)
        #expect(try sweeper.releaseAbandonedHolds() == 0)

        // The gateway of gw-a was alive after all: its late settlement counts the cost, once,
        // and gives back nothing more; a late release of n1's hold changes nothing.
        #expect(try store.settle(lapsing, cost: amount(350_000)))
        #expect(try spent() == 350_000 && reserved() == 150_000)
        #expect(try !store.settle(lapsing, cost: amount(350_000)))
        #expect(try store.release(ofNode))
        #expect(try !store.release(ofNode))
        #expect(try spent() == 350_000 && reserved() == 150_000)

        // The others are settled as usual.
        #expect(try store.settle(live, cost: amount(20_000)))
        #expect(try store.release(forever))
        #expect(try spent() == 370_000 && reserved() == 0)
    }

    /// Settlements racing expiry: holds whose lease has run out are settled (or released)
    /// by their gateways while other stores sweep them as abandoned, all at once. Whoever
    /// claims each hold first, every reservation is given back exactly once and every cost
    /// counted exactly once: nothing is left reserved, nothing spent twice.
    @Test(arguments: Backend.available) func settlementsRacingExpiryCountEachHoldOnce(_ backend: Backend) throws {
        let state = try TestState(backend)
        let stores = try (0..<3).map { _ in try state.open() }
        let day = line(usd: 1_000_000_000)
        let count = 120
        let holds = try (0..<count).map { index -> Int64 in
            // Already past their lease when the race starts.
            let holder = BudgetHolder(owner: "gw-\(index % 3)", lease: .milliseconds(1))
            guard case .reserved(let hold) = try stores[0].reserve(amount(1000), against: [day], spentBefore: [:], now: now, holder: holder)
            else { throw StoreError("refused") }
            return hold.id
        }
        Thread.sleep(forTimeInterval: 0.01)
        let failures = Failures()
        let settled = Atomic<Int>(0)
        let swept = Atomic<Int>(0)
        let settlers = (0..<3).map { part -> @Sendable () -> Void in
            {
                // Even holds are settled at a cost of 7, odd ones released.
                for (index, hold) in holds.enumerated() where index % 3 == part {
                    do {
                        let known = index % 2 == 0 ? try stores[part].settle(hold, cost: amount(7)) : try stores[part].release(hold)
                        if known { settled.add(1, ordering: .relaxed) }
                    } catch {
                        failures.record(error)
                    }
                }
            }
        }
        let sweepers = (0..<3).map { part -> @Sendable () -> Void in
            {
                for _ in 0..<20 {
                    do {
                        swept.add(try stores[part].releaseAbandonedHolds(), ordering: .relaxed)
                    } catch {
                        failures.record(error)
                    }
                }
            }
        }
        onThreads(settlers + sweepers)
        #expect(failures.all.isEmpty, "\(failures.all)")
        // Every hold was known to its settler (released or not), once.
        #expect(settled.load(ordering: .relaxed) == count)
        #expect(swept.load(ordering: .relaxed) <= count)
        let after = try #require(try stores[1].budgetLines(since: nil).first { $0.key == day.key })
        #expect(after.reserved.microUSD == 0, "\(after)")
        #expect(after.spent.microUSD == Int64(count / 2) * 7, "\(after)")
        #expect(try stores[2].releaseAbandonedHolds() == 0)
    }

    /// The hammer: several stores (each its own connections, as several processes or
    /// nodes have), each with several threads, reserve as fast as they can against one cap
    /// of 100 calls' worth, settle each at its full amount, and keep going after refusals.
    /// Exactly 100 are granted, whatever the interleaving: zero overshoot, no lost grant.
    @Test(arguments: Backend.available) func theBudgetHammerNeverOvershoots(_ backend: Backend) throws {
        let state = try TestState(backend)
        let cost: Int64 = 12_345
        let capacity: Int64 = 100
        let cap = line(usd: cost * capacity)
        let month = line(team, .month, usd: cost * capacity * 10)
        let stores = try (0..<3).map { _ in try state.open() }
        let threadsPerStore = 4
        let attemptsPerThread = 60
        let granted = Atomic<Int>(0)
        let refused = Atomic<Int>(0)
        let failures = Failures()
        let started = ContinuousClock.now
        onThreads(
            stores.flatMap { store in
                (0..<threadsPerStore).map { _ -> @Sendable () -> Void in
                    {
                        for _ in 0..<attemptsPerThread {
                            do {
                                switch try store.reserve(amount(cost, tokens: 10), against: [cap, month], spentBefore: [:], now: now) {
                                case .reserved(let hold):
                                    granted.add(1, ordering: .relaxed)
                                    _ = try store.settle(hold.id, cost: amount(cost, tokens: 10))
                                case .refused:
                                    refused.add(1, ordering: .relaxed)
                                }
                            } catch {
                                failures.record(error)
                                return
                            }
                        }
                    }
                }
            })
        let took = ContinuousClock.now - started
        #expect(failures.all.isEmpty, "\(failures.all)")
        let attempts = stores.count * threadsPerStore * attemptsPerThread
        let lines = try stores[0].budgetLines(since: nil)
        let day = try #require(lines.first { $0.key == cap.key })
        print(
            "budget hammer (\(backend)): \(stores.count) stores × \(threadsPerStore) threads, \(attempts) reservations in \(took): "
                + "\(granted.load(ordering: .relaxed)) granted, \(refused.load(ordering: .relaxed)) refused; spent "
                + "\(day.spent.microUSD ?? 0) of cap \(day.cap.microUSD ?? 0) µ$, overshoot \(max(0, (day.spent.microUSD ?? 0) - (day.cap.microUSD ?? 0)))"
        )
        #expect(granted.load(ordering: .relaxed) == Int(capacity))
        #expect(granted.load(ordering: .relaxed) + refused.load(ordering: .relaxed) == attempts)
        #expect(day.spent.microUSD == cost * capacity)
        #expect(day.reserved.microUSD == 0)
        #expect(lines.first { $0.key == month.key }?.spent.tokens == 10 * capacity)
    }
}
