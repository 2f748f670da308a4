import OrlStore
import Testing

/// SQLite is opened when a state database first is, not at every start of `orlctl`.
@Suite struct SQLiteLibraryTests {
    @Test func theLibraryOrlLoadsServes() {
        #expect(SQLiteLibrary.soname == "libsqlite3.so.0")
        #expect(SQLiteLibrary.check(SQLiteLibrary.soname) == nil)
    }

    @Test func aMissingLibraryIsNamedInTheError() throws {
        let message = try #require(SQLiteLibrary.check("libsqlite3.so.0-not-installed"))
        #expect(message.hasPrefix("cannot load libsqlite3.so.0-not-installed (SQLite 3, which the state needs): "), "\(message)")
    }

    @Test func aLibraryWithoutSQLitesFunctionsIsRefused() throws {
        // zlib loads, but is not SQLite.
        let message = try #require(SQLiteLibrary.check("libz.so.1"))
        #expect(message.hasPrefix("libz.so.1 has no sqlite3_open_v2"), "\(message)")
    }
}
