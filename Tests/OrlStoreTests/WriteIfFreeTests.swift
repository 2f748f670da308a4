import Foundation
import OrlCore
import OrlJSON
import Testing

@testable import OrlStore

/// `writeRunsIfFree`, the write a stream's completion makes on its event loop: it never
/// waits, and its commit leaves the checkpoint (which writes and syncs the database
/// file) to `finishWrites`.
@Suite(.serialized) struct WriteIfFreeTests {
    /// Another connection holds SQLite's write lock: the write steps aside at once, with
    /// nothing written, and goes through once the lock is free.
    @Test func aWriteThatMustNotWaitStepsAsideForAnotherWriter() throws {
        try withStateDirectory { directory in
            let store = try storeWithFleet(directory)
            let run = try startRun("one", in: store)
            let operations = RunOperations(store: store)
            let task = try #require(try operations.claim(agent: worker, now: start))
            let other = try SQLiteStateStore(directory: directory)
            let output = try JSONParser.parse(#"{"text":"done"}"#, file: "")
            let asked = ContinuousClock.now
            let aside = try other.write { _ throws(StoreError) in
                Result { try operations.completeAndClaimIfFree(task.id, agent: worker, output: output, now: start) }
            }
            #expect(try aside.get() == nil)
            // Not after the busy timeout (30 s): at once.
            #expect(ContinuousClock.now - asked < .seconds(10))
            #expect(try store.readRuns { reader throws(StoreError) in try reader.steps(of: run.id).map(\.state) } == [.running])

            let done = try #require(try operations.completeAndClaimIfFree(task.id, agent: worker, output: output, now: start))
            #expect(done.record.state == .succeeded && done.next == nil)
            #expect(try store.readRuns { reader throws(StoreError) in try reader.run(run.id)?.phase } == .succeeded)
        }
    }

    /// Another thread of this process holds the connection (here this very thread, in a
    /// write of its own, which would deadlock on the connection's mutex): nil at once.
    @Test func aWriteThatMustNotWaitStepsAsideForItsOwnConnection() throws {
        try withStateDirectory { directory in
            let store = try storeWithFleet(directory)
            _ = try startRun("one", in: store)
            let written = try store.write { _ throws(StoreError) in
                try store.writeRunsIfFree { _ throws(StoreError) in true }
            }
            #expect(written == nil)
            #expect(try store.writeRunsIfFree { _ throws(StoreError) in true } == true)
        }
    }

    /// A commit that brings the WAL past SQLite's checkpoint threshold checkpoints at once
    /// in an ordinary write (as SQLite's automatic checkpoint did), and is left due in a
    /// write that must not wait, until `finishWrites`: the database file only grows by
    /// the value's pages once they are checkpointed.
    @Test func aWriteThatMustNotWaitLeavesItsCheckpointToFinishWrites() throws {
        try withStateDirectory { directory in
            let store = try storeWithFleet(directory)
            let run = try startRun("one", in: store)
            let path = SQLiteStateStore.databasePath(directory)
            // Some 1,300 pages of 4 KiB: past the threshold of 1,000 in one commit.
            let large = "\"" + String(repeating: "x", count: 5_000_000) + "\""
            func put(_ key: String) -> (any RunWriter) throws(StoreError) -> Void {
                { writer throws(StoreError) in
                    try writer.put(BlackboardValue(run: run.id, key: key, value: large, writtenAt: start, step: nil, attempt: nil))
                }
            }
            let before = try fileSize(path)
            try store.writeRuns(put("checkpointed"))
            let checkpointed = try fileSize(path)
            #expect(checkpointed >= before + 4_000_000, "an ordinary write's commit checkpoints as SQLite's own would")
            #expect(!store.hasUnfinishedWrites)

            #expect(try store.writeRunsIfFree(put("deferred")) != nil)
            #expect(store.hasUnfinishedWrites)
            #expect(try fileSize(path) < checkpointed + 4_000_000, "the checkpoint was made by a write that must not wait")
            store.finishWrites()
            #expect(!store.hasUnfinishedWrites)
            #expect(try fileSize(path) >= checkpointed + 4_000_000)
            #expect(try store.readRuns { reader throws(StoreError) in try reader.value(of: run.id, key: "deferred")?.value } == large)
        }
    }

    private func fileSize(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    }
}
