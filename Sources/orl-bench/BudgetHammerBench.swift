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

    @Option(help: "How many calls' worth the cap holds.")
    var capacity = 200

    @Option(help: ArgumentHelp(visibility: .private))
    var worker: String?

    static let cost: Int64 = 12_345

    func open() throws -> any StateBackend {
        PostgresURL.isPostgres(state)
            ? try PostgresStateStore(
                url: PostgresURL(parsing: state, environment: ProcessInfo.processInfo.environment), maxConnections: threads)
            : try SQLiteStateStore(directory: state)
    }

    func line(_ budget: String) -> BudgetLine {
        BudgetLine(
            account: BudgetMeter.Account(budget: ResourceID(kind: "Budget", name: budget), agent: nil), window: .day,
            windowStart: Timestamp(milliseconds: 0), cap: BudgetAmount(microUSD: Self.cost * Int64(capacity), tokens: nil))
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
                "--worker", budget,
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            children.append((process, pipe))
        }
        var granted = 0
        var refused = 0
        for (process, pipe) in children {
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            let numbers = output.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
            guard process.terminationStatus == 0, numbers.count == 2 else {
                throw ValidationError("a worker failed (exit \(process.terminationStatus)): \(output)")
            }
            granted += numbers[0]
            refused += numbers[1]
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let stored = try open().budgetLines(since: nil).first { $0.key == line(budget).key }
        let spent = stored?.spent.microUSD ?? 0
        let cap = Self.cost * Int64(capacity)
        let total = processes * threads * attempts
        print("budget hammer: \(processes) processes × \(threads) threads × \(attempts) reservations against a cap of \(capacity) calls")
        print(
            String(
                format: "  %d reservations in %.2f s (%.0f/s, with process start-up): %d granted, %d refused", total, seconds,
                Double(total) / seconds, granted, refused))
        print("  spent \(spent) of cap \(cap) µ$, reserved left \(stored?.reserved.microUSD ?? 0), overshoot \(max(0, spent - cap)) µ$")
        guard granted == capacity, spent == cap else { throw ValidationError("the cap was not kept exactly") }
    }

    private func hammer(_ budget: String) throws {
        let store = try open()
        let line = line(budget)
        let granted = Atomic<Int>(0)
        let refused = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            for _ in 0..<attempts {
                do {
                    switch try store.reserve(
                        BudgetAmount(microUSD: Self.cost, tokens: 1), against: [line], spentBefore: [:], now: Timestamp(milliseconds: 0))
                    {
                    case .reserved(let hold):
                        granted.add(1, ordering: .relaxed)
                        _ = try store.settle(hold.id, cost: BudgetAmount(microUSD: Self.cost, tokens: 1))
                    case .refused:
                        refused.add(1, ordering: .relaxed)
                    }
                } catch {
                    FileHandle.standardError.write(Data("\(error)\n".utf8))
                    failed.add(1, ordering: .relaxed)
                    return
                }
            }
        }
        guard failed.load(ordering: .relaxed) == 0 else { throw ExitCode(2) }
        print("\(granted.load(ordering: .relaxed)) \(refused.load(ordering: .relaxed))")
    }
}
