import OrlCore
import OrlJSON
import Testing

/// The engine groups a namespace's policies by label selector and indexes each group
/// once. Held here to the definition, over seeded random fleets: an agent's policies are
/// those whose `appliesTo` selects it, in fleet order, and every decision is what
/// `PolicyRule.matches` over those policies' rules gives, in policy then source order.
@Suite struct PolicyEngineTests {
    @Test(arguments: 0..<40)
    func decisionsEqualTheRulesReadOneByOne(seed: Int) {
        var random = SeededGenerator(seed: UInt64(seed))
        let report = validate(Self.fleet(&random))
        #expect(!report.diagnostics.contains { $0.code == .schemaInvalid || $0.code == .resourceInvalid }, "\(report.diagnostics)")
        let fleet = report.fleet
        let engine = PolicyEngine(fleet)
        let policies = fleet.resources(of: .policy)
        #expect(!policies.isEmpty)
        let probes = Self.probes(fleet)
        for agent in fleet.resources(of: .agent) {
            let permissions = engine.permissions(of: agent.id)
            let selecting = policies.filter {
                $0.metadata.namespace == agent.metadata.namespace && $0.policy!.appliesTo.selects(agent.metadata)
            }
            #expect(permissions.policies == selecting.map(\.id), "\(agent.id)")
            let rules = permissions.rules
            // Grouped by policy, in the order of `policies`.
            let order = Dictionary(uniqueKeysWithValues: selecting.enumerated().map { ($1.id, $0) })
            #expect(rules.map { order[$0.policy] ?? -1 } == rules.map { order[$0.policy] ?? -1 }.sorted(), "\(agent.id)")
            #expect(Set(rules.map(\.policy)).isSubset(of: Set(selecting.map(\.id))))
            for kind in PermissionKind.allCases {
                for effect in [PolicyRule.Effect.allow, .deny, .requireApproval] {
                    let expected = rules.filter { $0.kind == kind && $0.effect == effect }
                    #expect(permissions.rules(kind, effect) == expected, "\(agent.id) \(kind) \(effect)")
                    #expect(permissions.hasRule(kind, effect) == !expected.isEmpty)
                }
                for value in probes {
                    let matching = rules.filter { $0.kind == kind && $0.matches(value) }
                    let denies = matching.filter { $0.effect == .deny }
                    let allows = matching.filter { $0.effect == .allow }
                    let expected =
                        !denies.isEmpty
                        ? PermissionDecision(outcome: .denied, rules: denies)
                        : !allows.isEmpty
                            ? PermissionDecision(outcome: .allowed, rules: allows) : PermissionDecision(outcome: .notAllowed, rules: [])
                    #expect(permissions.decide(kind, value) == expected, "\(agent.id) \(kind) \(value)")
                    #expect(permissions.permits(kind, value) == (expected.outcome == .allowed), "\(agent.id) \(kind) \(value)")
                    if kind == .tool {
                        #expect(permissions.approvalRules(forTool: value) == matching.filter { $0.effect == .requireApproval })
                    }
                }
            }
        }
    }

    /// Every name the fleet's rules and resources spell, and values around them: other
    /// models of a provider, tools of a server, non-ASCII ones, a name that is only
    /// canonically equal to another.
    static func probes(_ fleet: Fleet) -> [String] {
        var values: Set<String> = [
            "t0", "t1", "t2", "srv/x", "srv/y", "srv", "srv/", "p/m", "p/other", "q/m", "p", "*", "x*", "a", "b", "c", "pii",
            "public", "s0", "s1", "é/x", "p/é", "K/x", "\u{212A}/x", "p/K", "p/m/n", "a0", "a1", "a2", "a3",
        ]
        let engine = PolicyEngine(fleet)
        for agent in fleet.resources(of: .agent) {
            values.formUnion(engine.permissions(of: agent.id).rules.map(\.pattern))
        }
        return values.sorted()
    }

    static func fleet(_ random: inout SeededGenerator) -> String {
        var docs: [String] = []
        let namespaces = ["default", "team-b"]
        for ns in namespaces {
            docs.append(
                """
                apiVersion: orl.dev/v1
                kind: ModelProvider
                metadata: {name: p, namespace: \(ns)}
                spec:
                  apiStyle: simulated
                  models:
                    - {name: m, pricing: {input: 1, output: 1}}
                """)
            for t in 0..<3 {
                let capabilities = random.pick([[], ["irreversible"], ["egress"], ["network", "egress"]])
                docs.append(
                    """
                    apiVersion: orl.dev/v1
                    kind: Tool
                    metadata: {name: t\(t), namespace: \(ns)}
                    spec:
                      type: http
                      http: {url: "https://example.com/\(t)"}
                      capabilities: [\(capabilities.joined(separator: ", "))]
                      risk: \(random.pick(["low", "medium", "high", "critical"]))
                    """)
            }
            let agents = random.below(6) + 1
            for a in 0..<agents {
                var labels: [String] = []
                if random.below(3) > 0 { labels.append("tier: \(random.pick(["gold", "silver"]))") }
                if random.below(2) > 0 { labels.append("team: \(random.pick(["x", "y"]))") }
                docs.append(
                    """
                    apiVersion: orl.dev/v1
                    kind: Agent
                    metadata: {name: a\(a), namespace: \(ns), labels: {\(labels.joined(separator: ", "))}}
                    spec:
                      model: p/m
                      runtime: {command: /bin/true}
                    """)
            }
            for i in 0..<(random.below(8) + 1) {
                var appliesTo: [String] = []
                if random.below(2) == 0 {
                    let names = (0..<(random.below(3) + 1)).map { _ in "a\(random.below(agents + 1))" }
                    appliesTo.append("agents: [\(Array(Set(names)).sorted().joined(separator: ", "))]")
                }
                if appliesTo.isEmpty || random.below(3) > 0 {
                    let selectors = [
                        "{matchLabels: {tier: gold}}", "{matchLabels: {tier: silver}}", "{matchLabels: {team: x}}",
                        "{matchLabels: {tier: gold, team: x}}",
                        "{matchExpressions: [{key: tier, operator: Exists}]}",
                        "{matchExpressions: [{key: team, operator: DoesNotExist}]}",
                        "{matchExpressions: [{key: tier, operator: NotIn, values: [gold]}]}",
                        "{matchExpressions: [{key: team, operator: In, values: [x, y]}]}",
                    ]
                    appliesTo.append("selector: \(random.pick(selectors))")
                }
                func entries(_ pool: [String]) -> String {
                    let picked = Set((0..<random.below(3)).map { _ in random.pick(pool) })
                    return "[" + picked.sorted().map { "\"\($0)\"" }.joined(separator: ", ") + "]"
                }
                func side() -> String {
                    """
                    {tools: \(entries(["t0", "t1", "t2", "*", "srv/*", "srv/x", "t0/*"])), models: \(entries(["p/m", "p/*", "*", "q/*", "p/é", "p/\u{212A}"])), secrets: \(entries(["s0", "s1", "*"])), handoffs: \(entries(["a0", "a1", "a2", "*"])), dataClasses: \(entries(["pii", "public"])), egress: \(entries(["pii", "public"]))}
                    """
                }
                var approval = "tools: \(entries(["t0", "t1", "*", "srv/*"]))"
                if random.below(3) == 0 { approval += ", capabilities: [irreversible]" }
                if random.below(3) == 0 { approval += ", risk: \(random.pick(["medium", "critical"]))" }
                if random.below(2) == 0 { approval += ", acceptTimeoutApproval: true" }
                docs.append(
                    """
                    apiVersion: orl.dev/v1
                    kind: Policy
                    metadata: {name: policy-\(i), namespace: \(ns)}
                    spec:
                      appliesTo: {\(appliesTo.joined(separator: ", "))}
                      allow: \(side())
                      deny: \(side())
                      requireApproval: {\(approval)}
                    """)
            }
        }
        return docs.joined(separator: "\n---\n")
    }
}

extension SeededGenerator {
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    mutating func pick<T>(_ values: [T]) -> T { values[below(values.count)] }
}
