import OrlCore
import Testing

@Suite struct PlacementTests {
    let now = Timestamp(milliseconds: 1_000_000)

    func node(_ name: String, generation: Int64 = 1, expiresIn ms: Int64 = 10_000, labels: [String: String] = [:], cordoned: Bool = false)
        -> NodeView
    {
        NodeView(
            lease: NodeLease(node: name, generation: generation, expiresAt: Timestamp(milliseconds: now.milliseconds + ms)), labels: labels,
            cordoned: cordoned)
    }

    func agent(_ name: String) -> ResourceID { ResourceID(kind: "Agent", name: name) }

    func placed(_ decisions: [ResourceID: PlacementDecision]) -> [String: String] {
        var out: [String: String] = [:]
        for (id, decision) in decisions {
            switch decision {
            case .stay(let a), .place(let a, _): out[id.name] = a.node
            case .unschedulable: out[id.name] = "-"
            }
        }
        return out
    }

    @Test func newAgentsSpreadEvenlyInNameOrder() {
        let requests = (1...7).map { PlacementRequest(agent: agent("a\($0)")) }
        let decisions = Placement.plan(requests, nodes: [node("n2"), node("n1"), node("n3")], at: now)
        let counts = Dictionary(grouping: placed(decisions).values, by: { $0 }).mapValues(\.count)
        #expect(counts == ["n1": 3, "n2": 2, "n3": 2])
        #expect(placed(decisions)["a1"] == "n1")
        #expect(placed(decisions)["a2"] == "n2")
        // The same inputs in another order give the same placement.
        #expect(Placement.plan(requests.reversed(), nodes: [node("n3"), node("n1"), node("n2")], at: now) == decisions)
    }

    @Test func agentsStayPutWhenANodeJoins() {
        let current = Assignment(node: "n1", generation: 1)
        let requests = [PlacementRequest(agent: agent("a"), current: current), PlacementRequest(agent: agent("b"), current: current)]
        let decisions = Placement.plan(requests, nodes: [node("n1"), node("n2")], at: now)
        #expect(decisions[agent("a")] == .stay(current))
        #expect(decisions[agent("b")] == .stay(current))
    }

    @Test func agentsOfALapsedNodeMoveAndNameWhatTheyReplace() {
        let old = Assignment(node: "n1", generation: 4)
        let decisions = Placement.plan(
            [PlacementRequest(agent: agent("a"), current: old)],
            nodes: [node("n1", generation: 4, expiresIn: 0), node("n2", generation: 9)],
            at: now)
        #expect(decisions[agent("a")] == .place(Assignment(node: "n2", generation: 9), replacing: old))
    }

    @Test func aNodeThatReRegisteredGetsItsAgentsUnderItsNewGeneration() {
        let old = Assignment(node: "n1", generation: 4)
        let decisions = Placement.plan([PlacementRequest(agent: agent("a"), current: old)], nodes: [node("n1", generation: 5)], at: now)
        #expect(decisions[agent("a")] == .place(Assignment(node: "n1", generation: 5), replacing: old))
    }

    @Test func selectorsChooseNodesAndSayWhyNoneFits() {
        let gpu = ["gpu": "true"]
        let requests = [
            PlacementRequest(agent: agent("trainer"), nodeSelector: gpu),
            PlacementRequest(agent: agent("eu"), nodeSelector: ["region": "eu"]),
        ]
        let decisions = Placement.plan(requests, nodes: [node("cpu1"), node("gpu1", labels: ["gpu": "true", "region": "us"])], at: now)
        #expect(placed(decisions)["trainer"] == "gpu1")
        #expect(decisions[agent("eu")] == .unschedulable(reason: "no live node matches nodeSelector region=eu"))
        // An agent whose node stops matching is moved.
        let moved = Placement.plan(
            [PlacementRequest(agent: agent("trainer"), nodeSelector: ["gpu": "true"], current: Assignment(node: "cpu1", generation: 1))],
            nodes: [node("cpu1"), node("gpu1", labels: gpu)], at: now)
        #expect(
            moved[agent("trainer")] == .place(Assignment(node: "gpu1", generation: 1), replacing: Assignment(node: "cpu1", generation: 1)))
    }

    @Test func cordonedNodesKeepTheirAgentsButGetNoNewOnes() {
        let current = Assignment(node: "n1", generation: 1)
        let decisions = Placement.plan(
            [PlacementRequest(agent: agent("kept"), current: current), PlacementRequest(agent: agent("new"))],
            nodes: [node("n1", cordoned: true)], at: now)
        #expect(decisions[agent("kept")] == .stay(current))
        #expect(decisions[agent("new")] == .unschedulable(reason: "every live node is cordoned"))
        #expect(
            Placement.plan([PlacementRequest(agent: agent("x"))], nodes: [node("n1", expiresIn: -1)], at: now)[agent("x")]
                == .unschedulable(reason: "no node holds a live lease"))
    }

    @Test func aReplacementStartsOnlyOnceTheOldHolderIsOverOrReleasedIt() {
        let new = Assignment(node: "n2", generation: 3)
        let old = Assignment(node: "n1", generation: 7)
        let n2 = NodeLease(node: "n2", generation: 3, expiresAt: Timestamp(milliseconds: now.milliseconds + 10_000))
        let n1Live = NodeLease(node: "n1", generation: 7, expiresAt: Timestamp(milliseconds: now.milliseconds + 1))
        let n1Lapsed = NodeLease(node: "n1", generation: 7, expiresAt: now)
        let n1Again = NodeLease(node: "n1", generation: 8, expiresAt: Timestamp(milliseconds: now.milliseconds + 10_000))

        #expect(!Placement.mayStart(new, replacing: old, released: false, on: n2, leases: [n1Live, n2], at: now))
        #expect(Placement.mayStart(new, replacing: old, released: true, on: n2, leases: [n1Live, n2], at: now))
        #expect(Placement.mayStart(new, replacing: old, released: false, on: n2, leases: [n1Lapsed, n2], at: now))
        #expect(Placement.mayStart(new, replacing: old, released: false, on: n2, leases: [n1Again, n2], at: now))
        #expect(Placement.mayStart(new, replacing: nil, released: false, on: n2, leases: [n2], at: now))
        // Not the node's, or not under its current lease, or its own lease is over: never.
        #expect(!Placement.mayStart(new, replacing: nil, released: false, on: n1Again, leases: [n2], at: now))
        var renewed = n2
        renewed.generation = 4
        #expect(!Placement.mayStart(new, replacing: nil, released: false, on: renewed, leases: [n2], at: now))
        var expired = n2
        expired.expiresAt = now
        #expect(!Placement.mayStart(new, replacing: nil, released: false, on: expired, leases: [n2], at: now))
    }

    @Test func aNodeStopsBeforeItsLeaseCanLapseAnywhere() throws {
        let timing = LeaseTiming.standard
        try timing.validate()
        let sent = ContinuousClock.Instant.now
        #expect(sent.duration(to: timing.stopDeadline(lastRenewalSentAt: sent)) == .seconds(8))
        #expect(timing.failoverBound(placementInterval: .seconds(1)) == .seconds(11))
        #expect(throws: LeaseTiming.Problem.self) {
            try LeaseTiming(duration: .seconds(5), renewInterval: .seconds(2), safetyMargin: .seconds(1)).validate()
        }
        let problem = LeaseTiming.Problem.tooFewRenewals(
            duration: .seconds(5), renewInterval: .milliseconds(1500), safetyMargin: .seconds(1))
        #expect(problem.description.hasPrefix("a lease of 5s renewed every 1.5s with a 1s safety margin"))
        #expect(throws: LeaseTiming.Problem.nonPositive("duration")) {
            try LeaseTiming(duration: .zero, renewInterval: .seconds(1), safetyMargin: .seconds(1)).validate()
        }
    }
}
