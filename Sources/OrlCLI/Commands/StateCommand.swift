import ArgumentParser
import OrlCore
import OrlJSON
import OrlPostgres

/// `orlctl state`: operations on a state as a whole.
struct StateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "Operations on a whole state: move it between a directory and PostgreSQL.",
        subcommands: [MigrateState.self]
    )
}

struct MigrateState: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Copy a state into another: a SQLite directory into PostgreSQL, or back.",
        discussion: """
            Every table moves (resources, history, events, statuses, supervision, holds, the \
            ledger and its daily roll-up, the vault's sealed secrets, sources, the manifest \
            index, runs with their steps, attempts and values, cron slots, tool approvals, the \
            alert outbox, budget reservations) in one transaction of the target: all or \
            nothing. The target must be empty unless --replace is given, which empties it \
            first. Inside that transaction every table is read back and compared with the \
            source by row count and content hash; any difference rolls it all back. The \
            counts and hashes are printed at the end. Secrets stay sealed: the target is \
            opened with the same master key ($ORL_MASTER_KEY, or the directory's master.key, \
            which is not copied: set ORL_MASTER_KEY to it for a PostgreSQL target). Stop \
            controllers on both states first: the source is read in one snapshot, and writes \
            made after it are not copied.

            Exit codes: 0 migrated and verified, 2 error (nothing was written).
            """
    )

    @Option(help: ArgumentHelp("The state to copy: a directory or postgres://….", valueName: "dir|url"))
    var from: String

    @Option(help: ArgumentHelp("The state to copy into: a directory or postgres://….", valueName: "dir|url"))
    var to: String

    @Flag(help: "Empty a target that is not empty before copying into it.")
    var replace = false

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    func validate() throws {
        guard from != to else { throw ValidationError("--from and --to name the same state") }
    }

    func run() async throws {
        let source = try StateOptions.parse(["--state", from])
        let target = try StateOptions.parse(["--state", to])
        let reading = try source.open()
        let writing = try target.open()
        let tables: [TableRows]
        do {
            tables = try reading.exportTables()
            try writing.importTables(tables, replace: replace)
        } catch {
            throw CommandFailure(message: "cannot migrate \(source.label) to \(target.label): \(error.description)")
        }
        switch output {
        case .text:
            var rows = [["TABLE", "ROWS", "SHA-256"]]
            for table in tables { rows.append([table.name, String(table.rows.count), String(table.contentHash.prefix(16))]) }
            writeStandardOutput(TextTable.render(rows))
            let total = tables.reduce(0) { $0 + $1.rows.count }
            writeStandardOutput(
                "Migrated \(total) rows of \(tables.count) tables from \(source.label) to \(target.label); "
                    + "every table read back with the same count and hash.\n")
        case .json:
            writeStandardOutput(
                JSONValue.object([
                    ("from", .string(source.label)), ("to", .string(target.label)),
                    (
                        "tables",
                        .array(
                            tables.map {
                                .object([("table", .string($0.name)), ("rows", .int($0.rows.count)), ("sha256", .string($0.contentHash))])
                            })
                    ),
                ]).rendered())
        }
    }
}
