import Foundation
import OrlCore
import OrlJSON
import OrlTestSupport
import Testing

@testable import OrlStore

@Suite struct HoldTests {
    @Test func holdsSurviveReapplyAndGoWithTheResource() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let hold = UserHold(agent: agent("writer"), at: Timestamp(milliseconds: 5), by: "alice@host")
            try store.write { s throws(StoreError) in
                try s.put(stored(agent("writer")))
                try s.put(stored(agent("reader")))
                try s.putHold(hold)
                try s.putHold(hold)
                // A re-apply updates the resource in place: the hold stays.
                try s.put(stored(agent("writer"), generation: 2))
            }
            #expect(try store.read { s throws(StoreError) in try s.holds() } == [hold])
            try store.write { s throws(StoreError) in try s.deleteHold(for: agent("reader")) }
            #expect(try store.read { s throws(StoreError) in try s.holds() } == [hold])
            try store.write { s throws(StoreError) in try s.delete(agent("writer")) }
            #expect(try store.read { s throws(StoreError) in try s.holds() } == [])
        }
    }

    @Test func aHoldNeedsTheResource() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            #expect(throws: StoreError.self) {
                try store.write { s throws(StoreError) in
                    try s.putHold(UserHold(agent: agent("ghost"), at: Timestamp(milliseconds: 5), by: "me"))
                }
            }
        }
    }
}
