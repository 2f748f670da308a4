import Foundation
import OrlCore
import OrlJSON
import OrlTestSupport
import Testing

@testable import OrlStore

@Suite struct SchemaTests {
    /// An empty state.db was truncated (a full disk, a bad copy): SQLite would take it
    /// for a new database, and the whole state would silently be gone.
    @Test func anEmptyFileIsRefusedNotTakenForANewState() throws {
        try withStateDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
            #expect(FileManager.default.createFile(atPath: directory + "/state.db", contents: Data()))
            #expect(throws: StoreError.self) { _ = try SQLiteStateStore(directory: directory) }
            do {
                _ = try SQLiteStateStore(directory: directory)
            } catch {
                #expect((error as? StoreError)?.message.contains("is empty (0 bytes)") == true)
            }
            #expect((try FileManager.default.attributesOfItem(atPath: directory + "/state.db")[.size] as? Int) == 0)
        }
    }

    @Test func aNewStateIsCreatedWholeAndPrivate() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            try store.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
            let database = try Database(path: store.path)
            #expect(try database.scalar("PRAGMA user_version", intent: "test") == Int64(Schema.version))
            let tables = try names(in: database, of: "table")
            #expect(Set(["resources", "applies", "events", "status"]).isSubset(of: tables))
            for file in try FileManager.default.contentsOfDirectory(atPath: directory) {
                let mode = try FileManager.default.attributesOfItem(atPath: directory + "/" + file)[.posixPermissions] as? Int
                #expect(mode == 0o600, "\(file)")
                #expect(!file.contains(".new-"), "no temporary file is left: \(file)")
            }
        }
    }

    @Test func opensCreateMissingDirectoriesPrivateToTheUser() throws {
        try withStateDirectory { directory in
            let nested = directory + "/deeper/still"
            _ = try SQLiteStateStore(directory: nested)
            for path in [directory, directory + "/deeper", nested] {
                let attributes = try FileManager.default.attributesOfItem(atPath: path)
                #expect((attributes[.posixPermissions] as? Int) == 0o700, "\(path)")
            }
            #expect(FileManager.default.fileExists(atPath: nested + "/state.db"))
            // Opening again (existing directory and schema) is fine.
            _ = try SQLiteStateStore(directory: nested + "/")
        }
    }

    @Test func aFileInPlaceOfTheDirectoryIsAClearError() throws {
        try withStateDirectory { directory in
            #expect(FileManager.default.createFile(atPath: directory, contents: Data("x".utf8)))
            let error = #expect(throws: StoreError.self) { try SQLiteStateStore(directory: directory) }
            #expect(error?.message.contains("is not a directory") == true)
        }
    }

    @Test func aDatabaseFromANewerOrlctlIsRefused() throws {
        try withStateDirectory { directory in
            let path = try SQLiteStateStore(directory: directory).path
            do {
                let database = try Database(path: path)
                try database.execute("PRAGMA user_version = 99", intent: "test")
            }
            let error = #expect(throws: StoreError.self) { try SQLiteStateStore(directory: directory) }
            #expect(error?.message.contains("this state was written by a newer orlctl (schema 99); upgrade orlctl") == true)
        }
    }

    @Test func theDatabaseIsInWALMode() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            try store.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
            let database = try Database(path: store.path)
            let mode = try database.withStatement("PRAGMA journal_mode", intent: "test") { statement throws(StoreError) in
                try statement.step(intent: "test") ? statement.text(0) : ""
            }
            #expect(mode == "wal")
        }
    }

    @Test func applyNumbersAreNeverReusedAfterDeletes() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            for source in ["a", "b", "c"] { _ = try store.write { s throws(StoreError) in try s.record(apply(source)) } }
            do {
                // Pruning old history, or the newest apply, must not free its number.
                let database = try Database(path: store.path)
                try database.execute("DELETE FROM applies WHERE number >= 2", intent: "test")
            }
            #expect(try store.write { s throws(StoreError) in try s.record(apply("d")) } == 4)
            #expect(try store.read { s throws(StoreError) in try s.history(limit: 10) }.map(\.number) == [4, 1])
        }
    }

    @Test func statusGoesAwayWithItsResource() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            try store.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
            let database = try Database(path: store.path)
            try database.execute("PRAGMA foreign_keys = ON", intent: "test")
            try database.execute(
                "INSERT INTO status (kind, namespace, name, phase, updated_at) VALUES ('Agent', 'default', 'writer', 'Ready', 1)",
                intent: "test")
            // A put (an upsert) keeps the status; a delete removes it.
            try store.write { s throws(StoreError) in try s.put(stored(agent("writer"), generation: 2)) }
            #expect(try database.scalar("SELECT count(*) FROM status", intent: "test") == 1)
            try store.write { s throws(StoreError) in try s.delete(agent("writer")) }
            #expect(try database.scalar("SELECT count(*) FROM status", intent: "test") == 0)
        }
    }

    private func names(in database: Database, of type: String) throws -> Set<String> {
        try database.withStatement("SELECT name FROM sqlite_schema WHERE type = ?1", intent: "test") { statement throws(StoreError) in
            try statement.bind(1, type)
            var names: Set<String> = []
            while try statement.step(intent: "test") { names.insert(statement.text(0)) }
            return names
        }
    }
}
