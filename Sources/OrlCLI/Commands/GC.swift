import ArgumentParser
import Foundation
import OrlCore
import OrlDaemon
import OrlJSON
import OrlPostgres
import OrlStore

/// `orlctl gc`: the housekeeping a long-running fleet needs, on demand or from cron (the
/// controller also runs the standard policy every hour).
struct GC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Delete old runs, events and ledger rows (kept as spend per agent and day), collect git mirrors; show the state's sizes.",
        discussion: """
            Ended runs (with their steps and blackboard values) and events older than their \
            age or beyond their count are deleted; ledger rows older than theirs are added to \
            the daily roll-up (spend per agent, model and UTC day) and deleted. Running runs \
            and the current budget windows are never touched. 0 for an age or a count keeps \
            everything of that kind. Git sources' mirrors are repacked and pruned by git's \
            own gc (skipped, with a message, when git is not installed). Then prints what was \
            removed and freed and the size of the database, logs, git mirrors and code trees \
            (code trees no applied revision needs are removed when a source syncs).

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
        let store = try state.open()
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
        if let postgres = store as? PostgresStateStore {
            // No git mirrors or logs live beside a database; its tables are what it holds.
            do {
                return writeStandardOutput(Self.describe(try postgres.info(), url: state.label))
            } catch {
                throw CommandFailure(message: error.description)
            }
        }
        let directory = PIDLock.absolute(state.resolvedDirectory)
        writeStandardOutput(
            Self.describe(
                GitMirrors.collect(in: directory + "/git", thorough: true, environment: CommandContext.current.environment)))
        writeStandardOutput(Self.sizes(directory))
    }

    /// The state directory's parts and their sizes on disk.
    static func parts(_ directory: String) -> [StatePart] {
        [
            ("database", "state.db"), ("logs", "logs"), ("git mirrors", "git"), ("code trees", "code"),
            ("agents' directories", "agents"),
        ].map { part, name in
            let path = directory + "/" + name
            return StatePart(part: part, path: path, bytes: FileManager.default.fileExists(atPath: path) ? DiskUsage.bytes(at: path) : nil)
        }
    }

    /// The parts as a table, sizes human-readable.
    static func sizes(_ parts: [StatePart]) -> String {
        var rows = [["PART", "PATH", "SIZE"]]
        for part in parts { rows.append([part.part, part.path, part.bytes.map(DiskUsage.human) ?? "-"]) }
        rows.append(["total", "", DiskUsage.human(parts.compactMap(\.bytes).reduce(0, +))])
        return TextTable.render(rows)
    }

    static func sizes(_ directory: String) -> String { sizes(parts(directory)) }

    /// The parts for scripts: bytes as numbers, null for a part that does not exist.
    static func json(_ directory: String, _ parts: [StatePart]) -> JSONValue {
        .object([
            ("directory", .string(directory)),
            (
                "parts",
                .array(
                    parts.map {
                        .object([("part", .string($0.part)), ("path", .string($0.path)), ("bytes", $0.bytes.map { .int($0) } ?? .null)])
                    })
            ),
            ("totalBytes", .int(parts.compactMap(\.bytes).reduce(0, +))),
        ])
    }

    /// A PostgreSQL state: the server, the schema, and each table's size.
    static func describe(_ info: PostgresStateInfo, url: String) -> String {
        var rows = [["TABLE", "ROWS", "SIZE"]]
        for table in info.tables { rows.append([table.name, String(table.rows), DiskUsage.human(table.bytes)]) }
        rows.append(["total (database)", "", DiskUsage.human(info.databaseBytes)])
        return "State:              \(url)\nServer:             PostgreSQL \(info.serverVersion)\n"
            + "Schema:             \(info.schemaVersion)\n" + TextTable.render(rows)
    }

    static func json(_ info: PostgresStateInfo, url: String) -> JSONValue {
        .object([
            ("url", .string(url)), ("serverVersion", .string(info.serverVersion)), ("schemaVersion", .int(info.schemaVersion)),
            (
                "tables",
                .array(
                    info.tables.map {
                        .object([("table", .string($0.name)), ("rows", .int($0.rows)), ("bytes", .int($0.bytes))])
                    })
            ),
            ("totalBytes", .int(info.databaseBytes)),
        ])
    }

    /// What collecting the git mirrors did, one line each.
    static func describe(_ mirrors: GitMirrors.Report) -> String {
        if mirrors.gitMissing {
            return "Git mirrors not collected: no git on PATH (install git to repack and prune them).\n"
        }
        var text = ""
        for mirror in mirrors.mirrors {
            if let error = mirror.error {
                text += "Git mirror \(Diagnostic.quoted(mirror.name)) not collected: \(error)\n"
            } else {
                text +=
                    "Collected git mirror \(Diagnostic.quoted(mirror.name)): \(DiskUsage.human(mirror.bytesBefore)) → \(DiskUsage.human(mirror.bytesAfter)) (freed \(DiskUsage.human(mirror.freed))).\n"
            }
        }
        return text
    }
}

/// A part of the state directory and its size (nil: it does not exist).
struct StatePart {
    var part: String
    var path: String
    var bytes: Int?
}
