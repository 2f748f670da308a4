import Foundation
import OrlCore
import OrlStore
import Synchronization
import Testing

@testable import OrlDaemon

/// The change feed against a real store: each subscriber is called for the topics it
/// reads, whichever connection wrote them, and never for the daemon's own bookkeeping.
/// Looks are driven by the test, not by the feed's timer.
@Suite struct ChangeFeedTests {
    @Test func wakesOnlyTheSubscribersOfTheTopicsWritten() async throws {
        let state = try TemporaryState()
        let store = try SQLiteStateStore(directory: state.directory)
        let (resources, secrets, runs, events) = (Counter(), Counter(), Counter(), Counter())
        let feed = ChangeFeed(
            store: try SQLiteStateStore(directory: state.directory), interval: .seconds(3600),
            subscribers: [
                .init(topics: [.resources]) { resources.add() }, .init(topics: [.secrets]) { secrets.add() },
                .init(topics: [.runs]) { runs.add() }, .init(topics: [.events]) { events.add() },
            ], log: { _ in })
        await feed.start()
        #expect(await feed.look() == [])

        let now = Timestamp(milliseconds: 1_795_161_600_000)
        // An apply writes resources and its events.
        try apply(fleet(["a"]), to: store, at: now)
        #expect(await feed.look() == [.resources, .events])
        #expect((resources.value, secrets.value, runs.value, events.value) == (1, 0, 0, 1))

        // What the controller writes as it goes: statuses and supervision records. The
        // store moved (data_version), no topic did.
        let agent = ResourceID(kind: "Agent", name: "a")
        try store.write { writer throws(StoreError) in
            try writer.putStatus(ResourceStatus(conditions: [], observedGeneration: 1, updatedAt: now), for: agent)
            try writer.putSupervision(SupervisionRecord(agent: agent))
        }
        #expect(await feed.look() == [])
        #expect((resources.value, secrets.value, runs.value, events.value) == (1, 0, 0, 1))
        // An event is news for the notifier only.
        try store.write { writer throws(StoreError) in
            try writer.append(StoreEvent(time: now, kind: .normal, resource: agent, reason: "Started", message: "test"))
        }
        #expect(await feed.look() == [.events])

        try store.write { writer throws(StoreError) in try writer.putHold(UserHold(agent: agent, at: now, by: "test")) }
        #expect(await feed.look() == [.resources])
        let sealed = SealedSecret(id: SecretID(name: "key"), box: [1, 2, 3], keyCheck: "check", size: 3, updatedAt: now, updatedBy: "test")
        try store.write { writer throws(StoreError) in try writer.putSecret(sealed) }
        #expect(await feed.look() == [.secrets])
        #expect((resources.value, secrets.value, runs.value, events.value) == (2, 1, 0, 2))
    }
}

/// A controller whose state is deleted stops: the feed ends, and with it the group.
@Suite struct RemovedStateTests {
    @Test func theFeedEndsWhenTheStateDatabaseIsRemoved() async throws {
        let state = try TemporaryState()
        let messages = Messages()
        let feed = ChangeFeed(
            store: try SQLiteStateStore(directory: state.directory), interval: .milliseconds(1), subscribers: [],
            log: { messages.add($0) })
        #expect(await feed.stateRemoved() == false)
        let watching = Task { await feed.watch() }
        try FileManager.default.removeItem(atPath: state.directory)
        // Returns by itself: the test waits for the task, not for a time.
        await watching.value
        #expect(messages.all.contains { $0.contains("was removed") }, "\(messages.all)")
    }
}

final class Messages: Sendable {
    private let list = Mutex<[String]>([])
    func add(_ message: String) { list.withLock { $0.append(message) } }
    var all: [String] { list.withLock { $0 } }
}
