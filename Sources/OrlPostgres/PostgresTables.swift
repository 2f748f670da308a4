public import OrlCore
import PostgresNIO

/// The state's tables as plain rows, for `orlctl state migrate`.
extension PostgresStateStore: StateTables {
    public func exportTables() throws(StoreError) -> [TableRows] {
        try transaction(writable: false, intent: "read every table of the state") { access throws(StoreError) in
            try Self.export(try access.connection())
        }
    }

    private static func export(_ session: PostgresSession) throws(StoreError) -> [TableRows] {
        var tables: [TableRows] = []
        for (name, key) in StateTableCatalog.tables {
            let columns = try columns(of: name, session)
            let intent = "read table \(name)"
            var rows: [[TableValue]] = []
            for row in try session.query(
                "SELECT \(columns.map(\.name).joined(separator: ", ")) FROM \(name) ORDER BY \(key.joined(separator: ", "))",
                intent: intent)
            {
                var values: [TableValue] = []
                for (index, column) in columns.enumerated() { values.append(try value(row, index, column.type)) }
                rows.append(values)
            }
            tables.append(TableRows(name: name, columns: columns.map(\.name), rows: rows))
        }
        return tables
    }

    public func importTables(_ tables: [TableRows], replace: Bool) throws(StoreError) {
        try transaction(writable: true, intent: "write every table of the state") { access throws(StoreError) in
            let session = try access.connection(writing: true)
            let known = Set(StateTableCatalog.tables.map(\.name))
            for table in tables where !known.contains(table.name) {
                throw StoreError("cannot import table \(table.name): a state has no such table")
            }
            if !replace {
                for (name, _) in StateTableCatalog.tables {
                    let filter = name == "alert_cursor" ? " WHERE event_number <> 0" : ""
                    let count =
                        try session.query("SELECT count(*)::bigint FROM \(name)\(filter)", intent: "count the rows of \(name)")
                        .first.map { row throws(StoreError) in try row.int(0) } ?? 0
                    guard count == 0 else {
                        throw StoreError(
                            "the target state is not empty (table \(name) has \(count) row\(count == 1 ? "" : "s")); "
                                + "migrate into an empty state, or give --replace to overwrite it")
                    }
                }
            }
            for (name, _) in StateTableCatalog.tables.reversed() {
                try session.execute("DELETE FROM \(name)", intent: "empty table \(name)")
            }
            // The run tables are rewritten: a controller watching the state learns it.
            access.wroteRunTables()
            for table in tables {
                let columns = try Self.columns(of: table.name, session)
                guard Set(columns.map(\.name)) == Set(table.columns) else {
                    throw StoreError(
                        "cannot import table \(table.name): its columns (\(table.columns.joined(separator: ", "))) are not this "
                            + "state's (\(columns.map(\.name).joined(separator: ", "))); migrate between states of the same orlctl version")
                }
                let types = Dictionary(uniqueKeysWithValues: columns.map { ($0.name, $0.type) })
                let casts = table.columns.map { types[$0] ?? "text" }
                let identity = columns.contains { $0.identity }
                // Several rows per statement (at most 60,000 parameters, under PostgreSQL's 65,535).
                let perStatement = max(1, min(1000, 60_000 / max(1, table.columns.count)))
                var start = 0
                while start < table.rows.count {
                    let batch = table.rows[start..<min(start + perStatement, table.rows.count)]
                    var binds: [PostgresValue] = []
                    var tuples: [String] = []
                    for row in batch {
                        guard row.count == table.columns.count else {
                            throw StoreError(
                                "cannot import table \(table.name): a row has \(row.count) values for \(table.columns.count) columns")
                        }
                        var placeholders: [String] = []
                        for (index, value) in row.enumerated() {
                            binds.append(Self.bind(value))
                            placeholders.append("$\(binds.count)::\(casts[index])")
                        }
                        tuples.append("(" + placeholders.joined(separator: ", ") + ")")
                    }
                    try session.execute(
                        "INSERT INTO \(table.name) (\(table.columns.joined(separator: ", ")))\(identity ? " OVERRIDING SYSTEM VALUE" : "") "
                            + "VALUES \(tuples.joined(separator: ", "))", binds, intent: "write table \(table.name)")
                    start += perStatement
                }
                // Numbers continue after the highest imported, as SQLite's AUTOINCREMENT does.
                for column in columns where column.identity {
                    try session.execute(
                        """
                        SELECT setval(pg_get_serial_sequence('\(table.name)', '\(column.name)'),
                            coalesce((SELECT max(\(column.name)) FROM \(table.name)), 0) + 1, false)
                        """, intent: "continue the numbers of \(table.name)")
                }
            }
            try verify(tables, against: try Self.export(session))
        }
    }

    private struct Column {
        var name: String
        /// The type to cast parameters to: bigint, double precision, bytea or text.
        var type: String
        var identity: Bool
    }

    /// The table's columns, by name.
    private static func columns(of table: String, _ session: PostgresSession) throws(StoreError) -> [Column] {
        var columns: [Column] = []
        for row in try session.query(
            """
            SELECT column_name::text, data_type::text, is_identity::text FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = $1 ORDER BY column_name
            """, [.text(table)], intent: "read the columns of \(table)")
        {
            columns.append(Column(name: try row.text(0), type: try row.text(1), identity: try row.text(2) == "YES"))
        }
        guard !columns.isEmpty else { throw StoreError("the PostgreSQL state has no table \(table); is its schema current?") }
        return columns.sorted { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }
    }

    private static func value(_ row: PostgresRandomAccessRow, _ index: Int, _ type: String) throws(StoreError) -> TableValue {
        switch type {
        case "bigint", "integer", "smallint": return try row.optionalInt64(index).map(TableValue.integer) ?? .null
        case "double precision", "real": return try row.optionalDouble(index).map(TableValue.real) ?? .null
        case "bytea": return try row.optionalBytes(index).map(TableValue.blob) ?? .null
        default: return try row.optionalText(index).map(TableValue.text) ?? .null
        }
    }

    private static func bind(_ value: TableValue) -> PostgresValue {
        switch value {
        case .null: .text(nil)
        case .integer(let n): .int(n)
        case .real(let d): .double(d)
        case .text(let s): .text(s)
        case .blob(let b): .bytes(b)
        }
    }
}

extension PostgresRandomAccessRow {
    func optionalDouble(_ index: Int) throws(StoreError) -> Double? {
        do {
            return try self[index].decode(Double?.self)
        } catch {
            throw StoreError("the PostgreSQL state has an unexpected value in column \(self[index].columnName): \(error)")
        }
    }

    func optionalBytes(_ index: Int) throws(StoreError) -> [UInt8]? {
        do {
            guard let buffer = try self[index].decode(ByteBuffer?.self) else { return nil }
            return buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []
        } catch {
            throw StoreError("the PostgreSQL state has an unexpected value in column \(self[index].columnName): \(error)")
        }
    }
}
