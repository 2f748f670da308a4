import Dispatch
import Foundation
import OrlCore
import OrlTestSupport
import Testing

@testable import OrlStore

/// Store errors carry SQLite's result code, so that callers decide on it (retry a
/// busy database, give up on a corrupt one) rather than on the wording.
@Suite struct StoreErrorTests {
    @Test func aLockHeldPastTheBusyTimeoutIsBusyWithSQLitesCode() throws {
        try withStateDirectory { directory in
            let first = try SQLiteStateStore(directory: directory)
            let second = try SQLiteStateStore(directory: directory, busyTimeout: .milliseconds(50))
            let holding = DispatchSemaphore(value: 0)
            let release = DispatchSemaphore(value: 0)
            let failure = Locked<StoreError?>(nil)
            onThreads([
                {
                    try? first.write { writer throws(StoreError) in
                        try writer.put(stored(agent("first")))
                        holding.signal()
                        release.wait()
                    }
                },
                {
                    holding.wait()
                    do throws(StoreError) {
                        try second.write { writer throws(StoreError) in try writer.put(stored(agent("second"))) }
                    } catch {
                        failure.withLock { $0 = error }
                    }
                    release.signal()
                },
            ])
            let error = try #require(failure.withLock { $0 })
            #expect(error.isBusy)
            #expect(error.resultCode.map { $0 & 0xFF } == 5, "SQLITE_BUSY, got \(String(describing: error.resultCode))")
            #expect(error.message.contains("stayed locked by another orlctl or controller"), "\(error)")
        }
    }

    @Test func aFileThatIsNotADatabaseKeepsSQLitesCodeAndIsNotRetried() throws {
        try withStateDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try String(repeating: "not a database\n", count: 100).write(toFile: directory + "/state.db", atomically: true, encoding: .utf8)
            let error = try #require(throws: StoreError.self) { _ = try SQLiteStateStore(directory: directory) }
            #expect(!error.isBusy)
            #expect(error.resultCode == 26, "SQLITE_NOTADB, got \(String(describing: error.resultCode)): \(error)")
        }
    }

    /// A process that found the state earlier opens it again `existing`: once removed, it
    /// stays removed (no new, empty state under the old name) and the opener is told why.
    @Test func anExistingStateRemovedIsNotMadeAgain() throws {
        try withStateDirectory { directory in
            #expect(throws: StoreError.self) { _ = try SQLiteStateStore(existing: directory) }
            #expect(!FileManager.default.fileExists(atPath: directory))
            do {
                let made = try SQLiteStateStore(directory: directory)
                try made.write { writer throws(StoreError) in try writer.put(stored(agent("kept"))) }
            }
            let again = try SQLiteStateStore(existing: directory)
            #expect(try again.read { reader throws(StoreError) in try reader.resource(agent("kept")) } != nil)
            try FileManager.default.removeItem(atPath: directory)
            let error = try #require(throws: StoreError.self) { _ = try SQLiteStateStore(existing: directory) }
            #expect(error.message.contains("does not exist (the state was removed)"), "\(error)")
            #expect(!FileManager.default.fileExists(atPath: directory))
            // The directory is there, its database not: SQLite is not let to make one either.
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            #expect(throws: StoreError.self) { _ = try SQLiteStateStore(existing: directory) }
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
        }
    }
}
