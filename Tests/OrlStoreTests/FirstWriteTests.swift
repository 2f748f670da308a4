import Foundation
import OrlCore
import OrlTestSupport
import Testing

@testable import OrlStore

/// The first write into a database its store created goes around the WAL (each page is
/// then written once, not to the WAL and again at the checkpoint), and the database is in
/// WAL mode again after it, whatever became of the write.
@Suite struct FirstWriteTests {
    private func walExists(_ directory: String) -> Bool {
        FileManager.default.fileExists(atPath: SQLiteStateStore.databasePath(directory) + "-wal")
    }

    @Test func theFirstWriteIntoANewDatabaseSkipsTheWALAndLeavesItInWALMode() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            #expect(store.firstWritePending)
            let ids = (0..<2_000).map { agent("a\($0)") }
            let walDuringWrite = try store.write { s throws(StoreError) in
                for id in ids { try s.put(stored(id, manifest: String(repeating: "x", count: 900))) }
                return walExists(directory)
            }
            #expect(!walDuringWrite)
            #expect(!store.firstWritePending)
            #expect(try store.journalMode() == "wal")
            // The next write goes through the WAL, as every write of a store that found the file.
            let walDuringSecond = try store.write { s throws(StoreError) in
                try s.put(stored(agent("late")))
                return walExists(directory)
            }
            #expect(walDuringSecond)
            let reopened = try SQLiteStateStore(existing: directory)
            #expect(!reopened.firstWritePending)
            #expect(try reopened.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.count == ids.count + 1)
            #expect(
                try reopened.read { s throws(StoreError) in try s.resource(agent("a1999")) }?.manifest == String(repeating: "x", count: 900)
            )
        }
    }

    @Test func aFirstWriteThatFailsLeavesNothingAndTheDatabaseInWALMode() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            #expect(throws: StoreError.self) {
                try store.write { s throws(StoreError) in
                    for i in 0..<2_000 { try s.put(stored(agent("a\(i)"), manifest: String(repeating: "x", count: 900))) }
                    throw StoreError("given up")
                }
            }
            #expect(try store.journalMode() == "wal")
            let reopened = try SQLiteStateStore(existing: directory)
            #expect(try reopened.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.isEmpty)
            try reopened.write { s throws(StoreError) in try s.put(stored(agent("after"))) }
            #expect(try store.read { s throws(StoreError) in try s.resource(agent("after")) } != nil)
        }
    }

    @Test func aStoreThatFoundTheDatabaseWritesThroughTheWAL() throws {
        try withStateDirectory { directory in
            _ = try SQLiteStateStore(directory: directory)
            let store = try SQLiteStateStore(directory: directory)
            #expect(!store.firstWritePending)
            #expect(
                try store.write { s throws(StoreError) in
                    try s.put(stored(agent("writer")))
                    return walExists(directory)
                })
        }
    }

    @Test func aNewDatabaseAnotherConnectionHoldsIsWrittenThroughTheWAL() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let other = try SQLiteStateStore(existing: directory)
            #expect(try other.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.isEmpty)
            #expect(
                try store.write { s throws(StoreError) in
                    try s.put(stored(agent("writer")))
                    return walExists(directory)
                })
            #expect(try store.journalMode() == "wal")
            #expect(try other.read { s throws(StoreError) in try s.resource(agent("writer")) } != nil)
        }
    }
}

extension FirstWriteTests {
    /// A state removed while its store is open is written as before (through the WAL, into
    /// the file the store holds), not refused for want of a journal beside it.
    @Test func aNewDatabaseRemovedBeforeItsFirstWriteIsWrittenAsBefore() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("orl-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let store = try SQLiteStateStore(directory: root.appendingPathComponent("state").path)
        try FileManager.default.removeItem(at: root)
        try store.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
        #expect(try store.read { s throws(StoreError) in try s.resource(agent("writer")) } != nil)
    }
}
