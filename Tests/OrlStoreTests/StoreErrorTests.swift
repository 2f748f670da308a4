import Dispatch
import Foundation
import OrlCore
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
}
