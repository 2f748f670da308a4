internal import Crypto

/// A value of a state's table, as both backends store it.
public enum TableValue: Sendable, Hashable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

/// One table of a state: its columns and every row, in primary-key order.
public struct TableRows: Sendable, Hashable {
    public var name: String
    public var columns: [String]
    public var rows: [[TableValue]]

    public init(name: String, columns: [String], rows: [[TableValue]]) {
        self.name = name
        self.columns = columns
        self.rows = rows
    }

    /// SHA-256, hex, of the rows in a form that does not depend on the backend: each
    /// value tagged with its type, lengths before bytes, rows in the order given (both
    /// backends read them in primary-key order, which collates bytewise on both).
    public var contentHash: String {
        var hasher = SHA256()
        func add(_ bytes: some Collection<UInt8>) {
            var count = UInt64(bytes.count).bigEndian
            withUnsafeBytes(of: &count) { hasher.update(bufferPointer: $0) }
            hasher.update(data: Array(bytes))
        }
        add(Array(columns.joined(separator: ",").utf8))
        for row in rows {
            for value in row {
                switch value {
                case .null: add([0])
                case .integer(let n): add(Array("i\(n)".utf8))
                case .real(let d): add(Array("r\(d.bitPattern)".utf8))
                case .text(let s): add([1] + Array(s.utf8))
                case .blob(let b): add([2] + b)
                }
            }
        }
        return CanonicalJSON.hex(hasher.finalize())
    }
}

/// A state's tables as plain rows: how `orlctl state migrate` moves a state from one
/// backend to the other. The backends hold the same tables with the same columns.
public protocol StateTables: Sendable {
    /// Every table `StateTableCatalog.tables` names, read in one snapshot.
    func exportTables() throws(StoreError) -> [TableRows]
    /// Writes `tables` into this state in one transaction, all or nothing: refused when
    /// the state holds anything unless `replace`, which first empties it. Counters (event,
    /// apply and ledger numbers) continue after the highest number imported.
    func importTables(_ tables: [TableRows], replace: Bool) throws(StoreError)
}

/// Throws unless `written`, read back inside the importing transaction, holds exactly the
/// rows of `imported` (same counts, same content hashes): the import then rolls back.
public func verify(_ imported: [TableRows], against written: [TableRows]) throws(StoreError) {
    let expected = Dictionary(imported.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    for table in written {
        let source = expected[table.name] ?? TableRows(name: table.name, columns: table.columns, rows: [])
        guard source.rows.count == table.rows.count, source.contentHash == table.contentHash else {
            throw StoreError(
                "the imported table \(table.name) does not read back as written (\(source.rows.count) rows, hash "
                    + "\(source.contentHash.prefix(12)); read back \(table.rows.count) rows, hash \(table.contentHash.prefix(12))); "
                    + "nothing was imported")
        }
    }
}

/// The tables a state moves with, in an order where each table comes after those its
/// rows refer to; each with the columns of its primary key (what rows are sorted by).
/// Bookkeeping that each backend keeps on its own (schema versions, the change counters)
/// does not move.
public enum StateTableCatalog {
    public static let tables: [(name: String, key: [String])] = [
        ("resources", ["kind", "namespace", "name"]),
        ("applies", ["number"]),
        ("events", ["number"]),
        ("status", ["kind", "namespace", "name"]),
        ("supervision", ["kind", "namespace", "name"]),
        ("holds", ["kind", "namespace", "name"]),
        ("ledger", ["number"]),
        ("ledger_daily", ["day", "kind", "namespace", "name", "model"]),
        ("secrets", ["namespace", "name"]),
        ("sources", ["name"]),
        ("manifest_indexes", ["source"]),
        ("runs", ["id"]),
        ("run_steps", ["run_id", "idx"]),
        ("run_attempts", ["run_id", "step", "attempt"]),
        ("run_values", ["run_id", "key", "version"]),
        ("cron_slots", ["namespace", "workflow", "cron"]),
        ("tool_approvals", ["id"]),
        ("alert_outbox", ["namespace", "alert", "event_number"]),
        ("alert_cursor", ["id"]),
        ("budget_lines", ["budget_namespace", "budget_name", "agent_namespace", "agent_name", "period", "period_start"]),
        ("budget_holds", ["id"]),
    ]
}
