import Foundation
import OrlCore
import OrlJSON
import OrlTestSupport
import Testing

@testable import OrlStore

@Suite struct ResourceTests {
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

/// The port's suite (OrlStatePortTests) holds both backends to the rest.
@Suite struct TransactionTests {
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
}
