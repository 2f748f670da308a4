import ArgumentParser
import Foundation
import OrlCore
import OrlStore

/// `orlctl gc`: the housekeeping a long-running fleet needs, on demand or from cron (the
/// controller also runs the standard policy every hour).
struct GC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Delete old runs, events and ledger rows (kept as spend per agent and day); show the state's sizes.",
        discussion: """
            Ended runs (with their steps and blackboard values) and events older than their \
            age or beyond their count are deleted; ledger rows older than theirs are added to \
            the daily roll-up (spend per agent, model and UTC day) and deleted. Running runs \
            and the current budget windows are never touched. 0 for an age or a count keeps \
            everything of that kind. Then prints what was removed and the size of the \
            database, logs, git mirrors and code trees.

            Exit codes: 0 done, 2 error.
            """
    )

    @OptionGroup var state: StateOptions

    @Option(help: ArgumentHelp("Delete ended runs older than this (e.g. 30d; 0 keeps them).", valueName: "age"))
    var runsOlderThan = "30d"

    @Option(help: ArgumentHelp("Keep at most this many ended runs, the newest (0: no limit).", valueName: "n"))
    var keepRuns = 10_000

    @Option(help: ArgumentHelp("Delete events older than this (0 keeps them).", valueName: "age"))
    var eventsOlderThan = "30d"

    @Option(help: ArgumentHelp("Keep at most this many events, the newest (0: no limit).", valueName: "n"))
    var keepEvents = 100_000

    @Option(help: ArgumentHelp("Roll up and delete ledger rows older than this (at least 62d; 0 keeps them).", valueName: "age"))
    var ledgerOlderThan = "62d"

    static func age(_ text: String, flag: String) throws -> Duration? {
        if text == "0" { return nil }
        guard let duration = DurationValue(text)?.duration, duration > .zero else {
            throw ValidationError("\(flag): \(Diagnostic.quoted(text)) is not an age such as 30d or 12h")
        }
        return duration
    }

    func policy() throws -> RetentionPolicy {
        let ledger = try Self.age(ledgerOlderThan, flag: "--ledger-older-than")
        // Budgets' month windows read the ledger's rows: a shorter age would undercount them.
        if let ledger, ledger < .seconds(62 * 86_400) {
            throw ValidationError("--ledger-older-than must be at least 62d: budgets read the current month's rows")
        }
        return RetentionPolicy(
            runsMaxAge: try Self.age(runsOlderThan, flag: "--runs-older-than"), runsMaxCount: keepRuns > 0 ? keepRuns : nil,
            eventsMaxAge: try Self.age(eventsOlderThan, flag: "--events-older-than"), eventsMaxCount: keepEvents > 0 ? keepEvents : nil,
            ledgerMaxAge: ledger)
    }

    func validate() throws {
        if keepRuns < 0 || keepEvents < 0 { throw ValidationError("--keep-runs and --keep-events must be 0 or more") }
        _ = try policy()
    }

    func run() async throws {
        let store = try state.openStore()
        let report: RetentionReport
        let policy = try policy()
        do throws(StoreError) {
            report = try store.retain(policy, now: Caller.now)
        } catch {
            throw CommandFailure(message: error.description)
        }
        writeStandardOutput(
            "Deleted \(report.runs) run\(report.runs == 1 ? "" : "s"), \(report.events) event\(report.events == 1 ? "" : "s") "
                + "and \(report.ledgerRows) ledger row\(report.ledgerRows == 1 ? "" : "s") (rolled up into \(report.ledgerDays) daily row\(report.ledgerDays == 1 ? "" : "s")).\n"
        )
        writeStandardOutput(Self.sizes(PIDLock.absolute(state.resolvedDirectory)))
    }

    /// The state directory's parts and their sizes on disk.
    static func sizes(_ directory: String) -> String {
        var rows = [["PART", "PATH", "SIZE"]]
        for (part, path) in [
            ("database", directory + "/state.db"), ("logs", directory + "/logs"), ("git mirrors", directory + "/git"),
            ("code trees", directory + "/code"), ("agents' directories", directory + "/agents"),
        ] {
            rows.append([part, path, FileManager.default.fileExists(atPath: path) ? bytes(size(of: path)) : "-"])
        }
        return TextTable.render(rows)
    }

    static func size(of path: String) -> Int {
        var total = 0
        var info = stat()
        guard lstat(path, &info) == 0 else { return 0 }
        total += Int(info.st_blocks) * 512
        if info.st_mode & S_IFMT == S_IFDIR, let enumerator = FileManager.default.enumerator(atPath: path) {
            while let relative = enumerator.nextObject() as? String {
                if lstat(path + "/" + relative, &info) == 0 { total += Int(info.st_blocks) * 512 }
            }
        }
        if info.st_mode & S_IFMT != S_IFDIR, path.hasSuffix(".db") {
            for suffix in ["-wal", "-shm"] where lstat(path + suffix, &info) == 0 { total += Int(info.st_blocks) * 512 }
        }
        return total
    }

    static func bytes(_ n: Int) -> String {
        switch n {
        case ..<1024: "\(n) B"
        case ..<(1 << 20): String(format: "%.1f KiB", Double(n) / 1024)
        case ..<(1 << 30): String(format: "%.1f MiB", Double(n) / Double(1 << 20))
        default: String(format: "%.1f GiB", Double(n) / Double(1 << 30))
        }
    }
}
