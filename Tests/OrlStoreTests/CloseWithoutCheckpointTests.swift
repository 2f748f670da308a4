import Foundation
import OrlCore
import OrlTestSupport
import Testing

@testable import OrlStore

/// A store closed without a checkpoint (`sync --once`) leaves its commits in the WAL,
/// synced, for the next connection to read back; a WAL that has grown is folded in by a
/// commit's checkpoint all the same.
@Suite struct CloseWithoutCheckpointTests {
    private func size(_ path: String) -> Int {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1
    }

    @Test func theCloseLeavesTheWALAndTheNextConnectionReadsItBack() throws {
        try withStateDirectory { directory in
            let database = SQLiteStateStore.databasePath(directory)
            // Written once through the WAL and closed as usual: folded in, the WAL removed.
            do {
                let store = try SQLiteStateStore(directory: directory)
                try store.write { s throws(StoreError) in try s.put(stored(agent("first"))) }
                try store.write { s throws(StoreError) in try s.put(stored(agent("second"))) }
            }
            #expect(!FileManager.default.fileExists(atPath: database + "-wal"))
            let folded = size(database)

            do {
                let store = try SQLiteStateStore(existing: directory)
                try store.closeWithoutCheckpoint()
                try store.write { s throws(StoreError) in try s.put(stored(agent("third"), manifest: String(repeating: "x", count: 5000))) }
            }
            // The commit is in the WAL, not in the database file.
            #expect(size(database + "-wal") > 4096)
            #expect(size(database) == folded)

            let reopened = try SQLiteStateStore(existing: directory)
            let names = try reopened.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name).sorted()
            #expect(names == ["first", "second", "third"])
            #expect(
                try reopened.read { s throws(StoreError) in try s.resource(agent("third")) }?.manifest
                    == String(repeating: "x", count: 5000))
        }
    }

    @Test func aWALGrownPastItsLimitIsFoldedInByACommit() throws {
        try withStateDirectory { directory in
            let database = SQLiteStateStore.databasePath(directory)
            _ = try SQLiteStateStore(directory: directory)
            let before = size(database)
            let store = try SQLiteStateStore(existing: directory)
            try store.closeWithoutCheckpoint()
            // Each write about two pages of manifest: past the limit within 200 of them.
            for i in 0..<200 {
                try store.write { s throws(StoreError) in try s.put(stored(agent("a\(i)"), manifest: String(repeating: "y", count: 6000))) }
            }
            // The checkpoint copied the pages into the database file and emptied the WAL (a
            // WAL kept whole would be read back by the next connection, every frame as not
            // yet checkpointed): it holds less than the limit's worth of frames (4,096
            // bytes and a 24-byte header each).
            #expect(size(database) > before + 100 * 4096)
            #expect(size(database + "-wal") < Int(Database.checkpointPagesWithoutCheckpointAtClose) * 4120)
            #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.count == 200)
        }
    }
}
