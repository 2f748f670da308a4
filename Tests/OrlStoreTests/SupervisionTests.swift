import Foundation
import OrlCore
import OrlJSON
import OrlTestSupport
import Testing

@testable import OrlStore

@Suite struct SupervisionTests {
    let full = SupervisionRecord(
        agent: agent("writer"), process: ProcessIdentity(pid: 4242, startTime: 123_456_789), launchHash: "ab12",
        tokenDigest: AgentToken.digest("t0k"),
        startedAt: Timestamp(milliseconds: 1000), restarts: 3, crashes: 2, lastExit: .signaled(signal: 9),
        exitedAt: Timestamp(milliseconds: 900))

    @Test func putThenReadReturnsEveryField() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let empty = SupervisionRecord(agent: agent("reader", namespace: "team-a"))
            try store.write { s throws(StoreError) in
                try s.putSupervision(full)
                try s.putSupervision(empty)
            }
            #expect(try store.read { s throws(StoreError) in try s.supervision(for: agent("writer")) } == full)
            #expect(try store.read { s throws(StoreError) in try s.supervision(for: agent("reader", namespace: "team-a")) } == empty)
            #expect(try store.read { s throws(StoreError) in try s.supervision(for: agent("other")) } == nil)
            #expect(try store.read { s throws(StoreError) in try s.allSupervision() } == [full, empty])
        }
    }

    @Test func putReplacesAndDeleteForgets() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            var changed = full
            changed.process = nil
            changed.lastExit = .exited(code: 3)
            changed.restarts = 4
            try store.write { s throws(StoreError) in
                try s.putSupervision(full)
                try s.putSupervision(changed)
            }
            #expect(try store.read { s throws(StoreError) in try s.allSupervision() } == [changed])
            try store.write { s throws(StoreError) in
                try s.deleteSupervision(for: agent("writer"))
                try s.deleteSupervision(for: agent("never"))
            }
            #expect(try store.read { s throws(StoreError) in try s.allSupervision() }.isEmpty)
        }
    }

    /// A record outlives its Agent: the removed agent's process still has to be stopped.
    @Test func survivesTheResourceBeingDeleted() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            try store.write { s throws(StoreError) in
                try s.put(stored(agent("writer")))
                try s.putSupervision(full)
                try s.delete(agent("writer"))
            }
            #expect(try store.read { s throws(StoreError) in try s.supervision(for: agent("writer")) } == full)
        }
    }

    @Test func survivesReopening() throws {
        try withStateDirectory { directory in
            try SQLiteStateStore(directory: directory).write { s throws(StoreError) in try s.putSupervision(full) }
            let reopened = try SQLiteStateStore(directory: directory)
            #expect(try reopened.read { s throws(StoreError) in try s.allSupervision() } == [full])
        }
    }

    @Test func changeMarkerMovesOnlyForOtherConnectionsWrites() throws {
        try withStateDirectory { directory in
            let controller = try SQLiteStateStore(directory: directory)
            let apply = try SQLiteStateStore(directory: directory)
            let before = try controller.changeMarker()
            try controller.write { s throws(StoreError) in try s.putSupervision(full) }
            #expect(try controller.changeMarker() == before)
            try apply.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
            #expect(try controller.changeMarker() != before)
        }
    }

    @Test func exitsRoundTrip() {
        for exit in [ProcessExit.exited(code: 0), .exited(code: 3), .signaled(signal: 9), .signaled(signal: 0)] {
            #expect(ProcessExit(stored: exit.stored) == exit)
        }
        #expect(ProcessExit(stored: "exited") == nil)
        #expect(ProcessExit(stored: "stopped:1") == nil)
    }
}
