import ArgumentParser
import Foundation
import OrlCore
import OrlPostgres
import OrlStore
import Synchronization

/// The budget hammer across processes: several processes, each with many threads,
/// reserve against one small cap in one state (PostgreSQL or SQLite) and settle each
/// grant at its full amount. Exactly `capacity` grants may land; the overshoot (spent
/// past the cap) must be zero.
struct BudgetHammerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "budget-hammer",
        abstract: "Reserve from several processes at once against one cap; report grants, throughput and overshoot."
    )

    @Option(help: "The state: postgres://… or a directory.")
    var state: String

    @Option(help: "How many processes.")
    var processes = 3

    @Option(help: "Threads per process.")
    var threads = 16

    @Option(help: "Reservations per thread.")
    var attempts = 50

    @Option(help: "How many calls' worth the cap holds (at each call's cost).")
    var capacity = 200

    @Option(help: "What each call reserves (its worst case), in µ$; the cost when absent.")
    var worst: Int64?

    @Option(help: "What each call costs when it settles, in µ$.")
    var cost: Int64 = 12_345

    @Option(help: "Connections per process to PostgreSQL (a controller's pool has 16).")
    var connections = 16

    @Option(help: ArgumentHelp(visibility: .private))
    var worker: String?

    var reserve: Int64 { worst ?? cost }

    func open() throws -> any StateBackend {
        PostgresURL.isPostgres(state)
            ? try PostgresStateStore(
                url: PostgresURL(parsing: state, environment: ProcessInfo.processInfo.environment), maxConnections: connections)
            : try SQLiteStateStore(directory: state)
    }

    func line(_ budget: String) -> BudgetLine {
        BudgetLine(
            account: BudgetMeter.Account(budget: ResourceID(kind: "Budget", name: budget), agent: nil), window: .day,
            windowStart: Timestamp(milliseconds: 0), cap: BudgetAmount(microUSD: cost * Int64(capacity), tokens: nil))
    }

    func run() throws {
        if let worker { return try hammer(worker) }
        let budget = "hammer-\(UInt32.random(in: 0...UInt32.max))"
        let start = DispatchTime.now().uptimeNanoseconds
        var children: [(Process, Pipe)] = []
        for _ in 0..<processes {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
            process.arguments = [
                "budget-hammer", "--state", state, "--threads", "\(threads)", "--attempts", "\(attempts)", "--capacity", "\(capacity)",
                "--cost", "\(cost)", "--worst", "\(reserve)", "--connections", "\(connections)", "--worker", budget,
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            children.append((process, pipe))
        }
        var granted = 0
        var refused = 0
        // The line as the earliest refusal saw it (the least spent of every first refusal).
        var firstRefusal: (spent: Int, reserved: Int)?
        for (process, pipe) in children {
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            let numbers = output.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
            guard process.terminationStatus == 0, numbers.count == 4 else {
                throw ValidationError("a worker failed (exit \(process.terminationStatus)): \(output)")
            }
            granted += numbers[0]
            refused += numbers[1]
            if numbers[1] > 0, firstRefusal.map({ numbers[2] < $0.spent }) ?? true { firstRefusal = (numbers[2], numbers[3]) }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let stored = try open().budgetLines(since: nil).first { $0.key == line(budget).key }
        let spent = stored?.spent.microUSD ?? 0
        let cap = cost * Int64(capacity)
        let total = processes * threads * attempts
        print(
            "budget hammer: \(processes) processes × \(threads) threads × \(attempts) reservations against a cap of \(capacity) calls "
                + "(each reserves \(reserve) µ$, costs \(cost) µ$; \(connections) connections per process)")
        print(
            String(
                format: "  %d reservations in %.2f s (%.0f/s, with process start-up): %d granted, %d refused", total, seconds,
                Double(total) / seconds, granted, refused))
        print("  spent \(spent) of cap \(cap) µ$, reserved left \(stored?.reserved.microUSD ?? 0), overshoot \(max(0, spent - cap)) µ$")
        if let firstRefusal {
            print(
                String(
                    format: "  first refusal at spent %.1f%% of the cap (spent + holds of calls in flight %.1f%%)",
                    100 * Double(firstRefusal.spent) / Double(cap), 100 * Double(firstRefusal.spent + firstRefusal.reserved) / Double(cap)))
        }
        guard spent <= cap, stored?.reserved.microUSD ?? 0 == 0 else { throw ValidationError("the cap was not kept") }
        if reserve == cost {
            guard granted == capacity, spent == cap else { throw ValidationError("the cap was not filled exactly") }
        }
    }

    private func hammer(_ budget: String) throws {
        let store = try open()
        let line = line(budget)
        let granted = Atomic<Int>(0)
        let refused = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        let first = Mutex<(spent: Int64, reserved: Int64)?>(nil)
        let (reserve, cost, attempts) = (reserve, cost, attempts)
        // One thread per client (concurrentPerform would run as many as there are cores).
        let group = DispatchGroup()
        for _ in 0..<threads {
            group.enter()
            Thread {
                defer { group.leave() }
                for _ in 0..<attempts {
                    do {
                        switch try store.reserve(
                            BudgetAmount(microUSD: reserve, tokens: 1), against: [line], spentBefore: [:], now: Timestamp(milliseconds: 0))
                        {
                        case .reserved(let hold):
                            granted.add(1, ordering: .relaxed)
                            _ = try store.settle(hold.id, cost: BudgetAmount(microUSD: cost, tokens: 1))
                        case .refused(let state):
                            refused.add(1, ordering: .relaxed)
                            let seen = (state.spent.microUSD ?? 0, state.reserved.microUSD ?? 0)
                            first.withLock { earliest in
                                if earliest.map({ seen.0 < $0.spent }) ?? true { earliest = seen }
                            }
                        }
                    } catch {
                        FileHandle.standardError.write(Data("\(error)\n".utf8))
                        failed.add(1, ordering: .relaxed)
                        return
                    }
                }
            }.start()
        }
        group.wait()
        guard failed.load(ordering: .relaxed) == 0 else { throw ExitCode(2) }
        let seen: (spent: Int64, reserved: Int64) = first.withLock { $0 } ?? (0, 0)
        print("\(granted.load(ordering: .relaxed)) \(refused.load(ordering: .relaxed)) \(seen.spent) \(seen.reserved)")
    }
}
