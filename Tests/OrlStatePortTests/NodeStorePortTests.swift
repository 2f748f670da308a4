import Foundation
import OrlCore
import OrlTestSupport
import Testing

/// The `NodeStore` port: leases by the database's clock with a generation that fences stale
/// writers, placement in one serialized transaction, singletons; on every backend.
@Suite struct NodeStorePortTests {
    @Test(arguments: Backend.available) func registeringAgainGrowsTheGenerationAndKeepsCordoning(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let first = try store.registerNode("n1", labels: ["zone": "a", "gpu": "yes"], duration: .seconds(10))
        #expect(first.generation == 1)
        #expect(try store.setCordoned("n1", true))
        #expect(try !store.setCordoned("nope", true))
        let second = try store.registerNode("n1", labels: ["zone": "b"], duration: .seconds(10))
        #expect(second.generation == 2)
        let other = try state.open().registerNode("n2", labels: [:], duration: .seconds(10))
        #expect(other.generation == 1)
        let snapshot = try store.nodeSnapshot()
        #expect(snapshot.nodes.map(\.name) == ["n1", "n2"])
        let n1 = try #require(snapshot.nodes.first)
        #expect(n1.view.labels == ["zone": "b"])
        #expect(n1.view.cordoned)
        #expect(n1.lease == second)
        #expect(n1.lease.isLive(at: snapshot.now))
        // The database's clock, not the test's: the lease runs ten seconds from about now.
        let ahead = n1.lease.expiresAt.milliseconds - snapshot.now.milliseconds
        #expect(ahead > 5_000 && ahead <= 10_000)
    }

    @Test(arguments: Backend.available) func aSupersededOrLapsedLeaseIsNotRenewedAndFencesWrites(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let old = try store.registerNode("n1", labels: [:], duration: .seconds(10))
        let renewed = try store.renewNode(old, duration: .seconds(20))
        #expect(renewed.generation == old.generation)
        #expect(renewed.expiresAt > old.expiresAt)
        let current = try state.open().registerNode("n1", labels: [:], duration: .seconds(10))

        // Renewing, stamping a record and placing with the old generation are all refused.
        #expect(throws: StoreError.self) { try store.renewNode(old, duration: .seconds(10)) }
        #expect(fenced { try store.renewNode(old, duration: .seconds(10)) })
        #expect(fenced { try store.write { s throws(StoreError) in try s.requireLease(old) } })
        var record = SupervisionRecord(agent: agent("a"), process: ProcessIdentity(pid: 42, startTime: 7), launchHash: "h")
        record.node = Assignment(node: "n1", generation: old.generation)
        #expect(fenced { try store.write { s throws(StoreError) in try s.putSupervision(record) } })
        #expect(fenced { try store.place(by: old) { _ in [:] } })
        #expect(fenced { _ = try store.claimSingleton("runs", by: old) })
        #expect(fenced { try store.release([agent("a")], by: old) })
        // A refused write writes nothing, not even what came before the refusal.
        #expect(
            fenced {
                try store.write { s throws(StoreError) in
                    try s.append(StoreEvent(time: Timestamp(milliseconds: 1), kind: .normal, resource: nil, reason: "X", message: "m"))
                    try s.requireLease(old)
                }
            })
        #expect(try store.read { s throws(StoreError) in try s.events(for: nil, limit: 10) }.isEmpty)
        #expect(try store.read { s throws(StoreError) in try s.supervision(for: agent("a")) } == nil)

        // The current generation writes, and the record reads back with its node.
        record.node = Assignment(node: "n1", generation: current.generation)
        try store.write { s throws(StoreError) in
            try s.requireLease(current)
            try s.putSupervision(record)
        }
        #expect(try store.read { s throws(StoreError) in try s.supervision(for: agent("a")) } == record)

        // A lease that ran out is not renewed, by the database's clock.
        let short = try store.registerNode("n2", labels: [:], duration: .milliseconds(50))
        try waitForTheLeaseToLapse(short, store)
        #expect(fenced { try store.renewNode(short, duration: .seconds(10)) })
        #expect(try !store.nodeSnapshot().nodes.first { $0.name == "n2" }!.lease.isLive(at: store.nodeSnapshot().now))

        // A lease ended on purpose lapses at once; ending a superseded one does nothing.
        try store.expireNode(old)
        #expect(try store.nodeSnapshot().nodes.first { $0.name == "n1" }!.lease.isLive(at: store.nodeSnapshot().now))
        try store.expireNode(current)
        let after = try store.nodeSnapshot()
        #expect(!after.nodes.first { $0.name == "n1" }!.lease.isLive(at: after.now))
    }

    @Test(arguments: Backend.available) func placementWritesAssignmentsAndReleases(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let n1 = try store.registerNode("n1", labels: [:], duration: .seconds(30))
        let n2 = try state.open().registerNode("n2", labels: [:], duration: .seconds(30))
        let placed = try store.place(by: n1) { snapshot in
            #expect(snapshot.assignments.isEmpty)
            return [
                agent("a"): AgentAssignment(
                    agent: agent("a"), assignment: Assignment(node: "n1", generation: n1.generation), assignedAt: snapshot.now),
                agent("b"): AgentAssignment(
                    agent: agent("b"), assignment: Assignment(node: "n2", generation: n2.generation), assignedAt: snapshot.now),
            ]
        }
        #expect(placed.assignments[agent("a")]?.assignment.node == "n1")
        // Moved from n1 to n2: n1 releases it once it has stopped it.
        try state.open().place(by: n2) { snapshot in
            [
                agent("a"): AgentAssignment(
                    agent: agent("a"), assignment: Assignment(node: "n2", generation: n2.generation),
                    replacing: snapshot.assignments[agent("a")]?.assignment, assignedAt: snapshot.now),
                agent("b"): nil,
            ]
        }
        var snapshot = try store.nodeSnapshot()
        #expect(snapshot.assignments[agent("b")] == nil)
        let moved = try #require(snapshot.assignments[agent("a")])
        #expect(moved.assignment == Assignment(node: "n2", generation: n2.generation))
        #expect(moved.replacing == Assignment(node: "n1", generation: n1.generation))
        #expect(!moved.released)
        // Only the replaced node's release counts.
        try store.release([agent("a")], by: n2)
        #expect(try !store.nodeSnapshot().assignments[agent("a")]!.released)
        try store.release([agent("a")], by: n1)
        snapshot = try store.nodeSnapshot()
        #expect(snapshot.assignments[agent("a")]!.released)
        #expect(
            Placement.mayStart(
                moved.assignment, replacing: moved.replacing, released: true, on: n2, leases: snapshot.leases, at: snapshot.now))
    }

    @Test(arguments: Backend.available) func aSingletonHasOneHolderUntilItsLeaseLapses(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let n1 = try store.registerNode("n1", labels: [:], duration: .milliseconds(1500))
        let n2 = try state.open().registerNode("n2", labels: [:], duration: .seconds(30))
        #expect(try store.claimSingleton("runs", by: n1))
        #expect(try store.claimSingleton("runs", by: n1))
        #expect(try !store.claimSingleton("runs", by: n2))
        #expect(try store.claimSingleton("source:fleet", by: n2))
        #expect(try store.nodeSnapshot().holder(of: "runs") == "n1")
        try waitForTheLeaseToLapse(n1, store)
        // n1's lease lapsed: the role moves.
        #expect(try store.nodeSnapshot().holder(of: "runs") == nil)
        #expect(try store.claimSingleton("runs", by: n2))
        // n1 comes back: a new generation, and the role stays with n2.
        let again = try store.registerNode("n1", labels: [:], duration: .seconds(30))
        #expect(try !store.claimSingleton("runs", by: again))
        #expect(try store.nodeSnapshot().holder(of: "runs") == "n2")
    }

    @Test(arguments: Backend.available) func concurrentPlacersNeverDecideFromTheSameSnapshot(_ backend: Backend) throws {
        let state = try TestState(backend)
        let n1 = try state.open().registerNode("n1", labels: [:], duration: .seconds(30))
        let n2 = try state.open().registerNode("n2", labels: [:], duration: .seconds(30))
        // Each placer gives every unplaced agent to itself: were two to read the same
        // snapshot, one would overwrite the other's choices.
        DispatchQueue.concurrentPerform(iterations: 2) { index in
            let lease = index == 0 ? n1 : n2
            guard let store = try? state.open() else { return }
            for round in 0..<10 {
                _ = try? store.place(by: lease) { snapshot in
                    var changes: [ResourceID: AgentAssignment?] = [:]
                    for n in 0..<3 {
                        let id = agent("a\(round)-\(n)")
                        if snapshot.assignments[id] == nil {
                            changes[id] = AgentAssignment(
                                agent: id, assignment: Assignment(node: lease.node, generation: lease.generation), assignedAt: snapshot.now)
                        }
                    }
                    return changes
                }
            }
        }
        let snapshot = try state.open().nodeSnapshot()
        #expect(snapshot.assignments.count == 30)
        // Each round's three agents went to one node: the two placers' transactions did not interleave.
        for round in 0..<10 {
            let nodes = Set((0..<3).compactMap { snapshot.assignments[agent("a\(round)-\($0)")]?.assignment.node })
            #expect(nodes.count == 1)
        }
    }

    func fenced(_ body: () throws -> Void) -> Bool {
        do {
            try body()
            return false
        } catch let error as StoreError {
            return error.isFenced
        } catch {
            return false
        }
    }
}

/// Returns once the database's clock has passed the lease's end (time passing on
/// purpose: a lease lapses by that clock, which no test can move).
func waitForTheLeaseToLapse(_ lease: NodeLease, _ store: any NodeStore) throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while lease.isLive(at: try store.nodeSnapshot().now) {
        guard ContinuousClock.now < deadline else {
            Issue.record("the lease of \(lease.node) did not lapse within 30 s")
            return
        }
        Thread.sleep(forTimeInterval: 0.01)
    }
}
