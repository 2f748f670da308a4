public import OrlCore

/// The state's tables as plain rows, for `orlctl state migrate`.
extension SQLiteStateStore: StateTables {
    public func exportTables() throws(StoreError) -> [TableRows] {
        try transaction(.deferred, intent: "read every table of the state") { access throws(StoreError) in
            try Self.export(try access.connection())
        }
    }

    private static func export(_ database: Database) throws(StoreError) -> [TableRows] {
        var tables: [TableRows] = []
        for (name, key) in StateTableCatalog.tables {
            let columns = try columns(of: name, in: database)
            let intent = "read table \(name)"
            let rows = try database.withStatement(
                "SELECT \(columns.joined(separator: ", ")) FROM \(name) ORDER BY \(key.joined(separator: ", "))", intent: intent
            ) { s throws(StoreError) in
                var rows: [[TableValue]] = []
                while try s.step(intent: intent) { rows.append((0..<s.columnCount).map { s.value($0) }) }
                return rows
            }
            tables.append(TableRows(name: name, columns: columns, rows: rows))
        }
        return tables
    }

    public func importTables(_ tables: [TableRows], replace: Bool) throws(StoreError) {
        try transaction(.immediate, intent: "write every table of the state") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            let known = Set(StateTableCatalog.tables.map(\.name))
            for table in tables where !known.contains(table.name) {
                throw StoreError("cannot import table \(table.name): a state has no such table")
            }
            if !replace {
                for (name, _) in StateTableCatalog.tables {
                    let count = try database.scalar("SELECT count(*) FROM \(name)", intent: "count the rows of \(name)") ?? 0
                    // alert_cursor always holds its one row: an empty state's cursor is at 0.
                    let empty = name == "alert_cursor" ? try Self.cursorIsFresh(database) : count == 0
                    guard empty else {
                        throw StoreError(
                            "the target state is not empty (table \(name) has \(count) row\(count == 1 ? "" : "s")); "
                                + "migrate into an empty state, or give --replace to overwrite it")
                    }
                }
            }
            // Children first, so that no foreign key is left dangling on the way.
            for (name, _) in StateTableCatalog.tables.reversed() {
                try database.execute("DELETE FROM \(name)", intent: "empty table \(name)")
            }
            // The run tables are rewritten: a controller watching the state learns it.
            access.wroteRunTables()
            access.wroteResourceAndEventTables()
            for table in tables {
                let columns = try Self.columns(of: table.name, in: database)
                guard Set(columns) == Set(table.columns) else {
                    throw StoreError(
                        "cannot import table \(table.name): its columns (\(table.columns.joined(separator: ", "))) are not this "
                            + "state's (\(columns.joined(separator: ", "))); migrate between states of the same orlctl version")
                }
                let placeholders = (1...max(1, table.columns.count)).map { "?\($0)" }.joined(separator: ", ")
                let sql = "INSERT INTO \(table.name) (\(table.columns.joined(separator: ", "))) VALUES (\(placeholders))"
                let intent = "write table \(table.name)"
                for row in table.rows {
                    try database.withStatement(sql, intent: intent) { s throws(StoreError) in
                        for (index, value) in row.enumerated() { try s.bind(Int32(index + 1), value: value) }
                        try s.run(intent: intent)
                    }
                }
            }
            try verify(tables, against: try Self.export(database))
        }
    }

    /// The table's columns, by name.
    static func columns(of table: String, in database: Database) throws(StoreError) -> [String] {
        let intent = "read the columns of \(table)"
        return try database.withStatement("SELECT name FROM pragma_table_info(?1) ORDER BY cid", intent: intent) {
            s throws(StoreError) in
            try s.bind(1, table)
            var columns: [String] = []
            while try s.step(intent: intent) { columns.append(s.text(0)) }
            // By name: the backends created some columns in another order.
            return columns.sorted()
        }
    }

    private static func cursorIsFresh(_ database: Database) throws(StoreError) -> Bool {
        (try database.scalar("SELECT coalesce(max(event_number), 0) FROM alert_cursor", intent: "read the alert cursor") ?? 0) == 0
    }
}
