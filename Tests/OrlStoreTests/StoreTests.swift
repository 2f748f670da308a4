import Foundation
import OrlCore
import OrlJSON
import Testing

@testable import OrlStore

@Suite struct ResourceTests {
    @Test func putThenGetReturnsEveryField() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let writer = stored(agent("writer"), revision: nil)
            try store.write { s throws(StoreError) in try s.put(writer) }
            #expect(try store.read { s throws(StoreError) in try s.resource(agent("writer")) } == writer)
            #expect(try store.read { s throws(StoreError) in try s.resource(agent("reader")) } == nil)
            #expect(try store.read { s throws(StoreError) in try s.resource(agent("writer", namespace: "team-a")) } == nil)
        }
    }

    @Test func putReplacesTheWholeResource() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            try store.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
            var changed = stored(agent("writer"), manifest: #"{"changed":true}"#, generation: 2, source: "other/", revision: nil)
            changed.line = 42
            changed.appliedBy = "bob"
            try store.write { s throws(StoreError) in try s.put(changed) }
            #expect(try store.read { s throws(StoreError) in try s.resource(agent("writer")) } == changed)
            #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.count == 1)
        }
    }

    @Test func listingsAreInKindOrderThenNamespaceThenName() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let ids = [
                ResourceID(kind: "Workflow", name: "ship"),
                ResourceID(kind: "Agent", namespace: "team-b", name: "a"),
                ResourceID(kind: "Agent", name: "writer"),
                ResourceID(kind: "Agent", name: "reader"),
                ResourceID(kind: "Budget", name: "monthly"),
                ResourceID(kind: "Tool", name: "search"),
                ResourceID(kind: "Policy", name: "no-shell"),
                ResourceID(kind: "ModelProvider", name: "openai"),
                ResourceID(kind: "Agent", namespace: "team-a", name: "z"),
            ]
            try store.write { writer throws(StoreError) in
                for id in ids { try writer.put(stored(id)) }
            }
            let listed = try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id)
            #expect(
                listed == [
                    ResourceID(kind: "ModelProvider", name: "openai"),
                    ResourceID(kind: "Tool", name: "search"),
                    ResourceID(kind: "Agent", name: "reader"),
                    ResourceID(kind: "Agent", name: "writer"),
                    ResourceID(kind: "Agent", namespace: "team-a", name: "z"),
                    ResourceID(kind: "Agent", namespace: "team-b", name: "a"),
                    ResourceID(kind: "Policy", name: "no-shell"),
                    ResourceID(kind: "Budget", name: "monthly"),
                    ResourceID(kind: "Workflow", name: "ship"),
                ])
            let agents = try store.read { s throws(StoreError) in try s.resources(kind: .agent, namespace: nil) }.map(\.id.name)
            #expect(agents == ["reader", "writer", "z", "a"])
            let teamA = try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: "team-a") }.map(\.id)
            #expect(teamA == [ResourceID(kind: "Agent", namespace: "team-a", name: "z")])
            let defaultAgents = try store.read { s throws(StoreError) in try s.resources(kind: .agent, namespace: "default") }.map(
                \.id.name)
            #expect(defaultAgents == ["reader", "writer"])
            #expect(try store.read { s throws(StoreError) in try s.resources(kind: .tool, namespace: "team-a") }.isEmpty)
        }
    }

    @Test func deleteRemovesOnlyThatResourceAndIgnoresMissingOnes() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            try store.write { writer throws(StoreError) in
                try writer.put(stored(agent("writer")))
                try writer.put(stored(agent("writer", namespace: "team-a")))
            }
            try store.write { writer throws(StoreError) in
                try writer.delete(agent("writer"))
                try writer.delete(agent("never-there"))
            }
            #expect(try store.read { s throws(StoreError) in try s.resource(agent("writer")) } == nil)
            #expect(
                try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id) == [
                    agent("writer", namespace: "team-a")
                ])
        }
    }

    @Test func inventoryIsWhatASourceOwns() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            try store.write { writer throws(StoreError) in
                try writer.put(stored(agent("b"), source: "git:fleet"))
                try writer.put(stored(ResourceID(kind: "Tool", name: "search"), source: "git:fleet"))
                try writer.put(stored(agent("a"), source: "git:fleet"))
                try writer.put(stored(agent("local"), source: "manifests/"))
            }
            #expect(
                try store.read { s throws(StoreError) in try s.inventory(source: "git:fleet") } == [
                    ResourceID(kind: "Tool", name: "search"), agent("a"), agent("b"),
                ])
            #expect(try store.read { s throws(StoreError) in try s.inventory(source: "manifests/") } == [agent("local")])
            #expect(try store.read { s throws(StoreError) in try s.inventory(source: "nothing") }.isEmpty)
            // A resource moved to another source leaves the first one's inventory.
            try store.write { s throws(StoreError) in try s.put(stored(agent("a"), source: "manifests/")) }
            #expect(
                try store.read { s throws(StoreError) in try s.inventory(source: "git:fleet") } == [
                    ResourceID(kind: "Tool", name: "search"), agent("b"),
                ])
        }
    }

    @Test func manifestsRoundTripByteForByteWhateverTheirSizeAndContent() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let large = String(repeating: #"{"k":"välue ✓ 🚀","n":[1,2,3]}"#, count: 80_000)  // about 2.6 MB
            let withNUL = "before\u{0}after"
            var empty = stored(agent("empty"), manifest: "", revision: "")
            empty.file = ""
            empty.appliedBy = ""
            try store.write { writer throws(StoreError) in
                try writer.put(stored(agent("large"), manifest: large))
                try writer.put(stored(agent("nul"), manifest: withNUL))
                try writer.put(empty)
            }
            let reopened = try SQLiteStateStore(directory: directory)
            #expect(try reopened.read { s throws(StoreError) in try s.resource(agent("large")) }?.manifest == large)
            #expect(try reopened.read { s throws(StoreError) in try s.resource(agent("nul")) }?.manifest.utf8.count == withNUL.utf8.count)
            #expect(try reopened.read { s throws(StoreError) in try s.resource(agent("nul")) }?.manifest == withNUL)
            // Empty strings stay empty strings (not NULL), and "" stays distinct from nil.
            #expect(try reopened.read { s throws(StoreError) in try s.resource(agent("empty")) } == empty)
        }
    }
}

@Suite struct HistoryAndEventTests {
    @Test func historyIsNumberedInOrderAndReadNewestFirst() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let first = try store.write { s throws(StoreError) in try s.record(apply("a")) }
            let second = try store.write { s throws(StoreError) in try s.record(apply("b")) }
            let third = try store.write { s throws(StoreError) in try s.record(apply("c")) }
            #expect((first, second, third) == (1, 2, 3))
            let history = try store.read { s throws(StoreError) in try s.history(limit: 10) }
            #expect(history.map(\.number) == [3, 2, 1])
            #expect(history.map(\.source) == ["c", "b", "a"])
            #expect(
                history.last
                    == ApplyRecord(
                        number: 1, source: "a", revision: nil, appliedAt: Timestamp(milliseconds: 1000), appliedBy: "alice",
                        summary: "Plan: 1 to add, 0 to change, 0 to prune (0 unchanged).", plan: "{}", result: "applied"))
            #expect(try store.read { s throws(StoreError) in try s.history(limit: 2) }.map(\.number) == [3, 2])
            #expect(try store.read { s throws(StoreError) in try s.history(limit: 0) }.isEmpty)
        }
    }

    @Test func eventsAreReadNewestFirstForOneResourceOrAll() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let writer = agent("writer")
            let elsewhere = agent("writer", namespace: "team-a")
            try store.write { events throws(StoreError) in
                try events.append(
                    StoreEvent(time: Timestamp(milliseconds: 1), kind: .normal, resource: writer, reason: "Created", message: "m1"))
                try events.append(
                    StoreEvent(time: Timestamp(milliseconds: 2), kind: .normal, resource: elsewhere, reason: "Created", message: "m2"))
                try events.append(
                    StoreEvent(time: Timestamp(milliseconds: 3), kind: .warning, resource: nil, reason: "SourceFailed", message: "m3"))
                try events.append(
                    StoreEvent(time: Timestamp(milliseconds: 4), kind: .normal, resource: writer, reason: "Updated", message: "m4"))
            }
            let mine = try store.read { s throws(StoreError) in try s.events(for: writer, limit: 10) }
            #expect(mine.map(\.reason) == ["Updated", "Created"])
            #expect(mine.map(\.number) == [4, 1])
            #expect(
                mine.first
                    == StoreEvent(
                        number: 4, time: Timestamp(milliseconds: 4), kind: .normal, resource: writer, reason: "Updated", message: "m4"))
            let all = try store.read { s throws(StoreError) in try s.events(for: nil, limit: 10) }
            #expect(all.map(\.message) == ["m4", "m3", "m2", "m1"])
            #expect(all[1].resource == nil && all[1].kind == .warning)
            #expect(try store.read { s throws(StoreError) in try s.events(for: nil, limit: 3) }.map(\.number) == [4, 3, 2])
            #expect(try store.read { s throws(StoreError) in try s.events(for: writer, limit: 1) }.map(\.number) == [4])
            // Events outlive their resource.
            try store.write { s throws(StoreError) in try s.delete(writer) }
            #expect(try store.read { s throws(StoreError) in try s.events(for: writer, limit: 10) }.count == 2)
        }
    }
}

@Suite struct TransactionTests {
    struct Abort: Error {}

    @Test func anErrorInsideWriteRollsBackEverything() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            try store.write { s throws(StoreError) in try s.put(stored(agent("kept"))) }
            #expect(throws: StoreError.self) {
                try store.write { writer throws(StoreError) in
                    try writer.put(stored(agent("added")))
                    try writer.put(stored(agent("kept"), generation: 9))
                    try writer.delete(agent("kept"))
                    _ = try writer.record(apply("a"))
                    try writer.append(StoreEvent(time: Timestamp(milliseconds: 1), kind: .normal, resource: nil, reason: "R", message: "m"))
                    throw StoreError("the plan changed under us")
                }
            }
            try store.read { reader throws(StoreError) in
                #expect(try reader.resources(kind: nil, namespace: nil) == [stored(agent("kept"))])
                #expect(try reader.history(limit: 10).isEmpty)
                #expect(try reader.events(for: nil, limit: 10).isEmpty)
            }
            // No transaction was left open: the next write works, and other connections see it.
            try store.write { s throws(StoreError) in try s.put(stored(agent("after"))) }
            let other = try SQLiteStateStore(directory: directory)
            #expect(
                try other.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name) == ["after", "kept"])
        }
    }

    @Test func theThrownErrorIsTheBodysOwn() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            do throws(StoreError) {
                try store.write { _ throws(StoreError) in throw StoreError("mine") }
                Issue.record("write did not throw")
            } catch {
                #expect(error.message == "mine")
            }
        }
    }

    @Test func aReaderKeptPastItsBodyRefusesToRun() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let escaped = try store.write { $0 }
            #expect(throws: StoreError.self) { try escaped.put(stored(agent("late"))) }
            #expect(throws: StoreError.self) { try escaped.resource(agent("late")) }
        }
    }

    @Test func writingInsideAReadIsRefused() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            #expect(throws: StoreError.self) {
                try store.read { reader throws(StoreError) in
                    guard let writer = reader as? any StateWriter else { return }
                    try writer.put(stored(agent("sneaky")))
                }
            }
            #expect(try store.read { s throws(StoreError) in try s.resource(agent("sneaky")) } == nil)
        }
    }

    @Test func aReopenedStoreSeesCommittedData() throws {
        try withStateDirectory { directory in
            do {
                let store = try SQLiteStateStore(directory: directory)
                try store.write { writer throws(StoreError) in
                    try writer.put(stored(agent("writer")))
                    _ = try writer.record(apply("a"))
                }
            }
            let reopened = try SQLiteStateStore(directory: directory)
            #expect(try reopened.read { s throws(StoreError) in try s.resource(agent("writer")) } == stored(agent("writer")))
            #expect(try reopened.read { s throws(StoreError) in try s.history(limit: 1) }.map(\.number) == [1])
            #expect(try reopened.write { s throws(StoreError) in try s.record(apply("b")) } == 2)
        }
    }

    @Test func aReadSeesOneSnapshot() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let other = try SQLiteStateStore(directory: directory)
            try store.write { s throws(StoreError) in try s.put(stored(agent("a"))) }
            let (before, after) = try store.read { reader throws(StoreError) in
                let before = try reader.resources(kind: nil, namespace: nil).count
                // Another connection commits in the middle of the read.
                try other.write { s throws(StoreError) in try s.put(stored(agent("b"))) }
                return (before, try reader.resources(kind: nil, namespace: nil).count)
            }
            #expect(before == 1 && after == 1)
            #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.count == 2)
        }
    }
}
