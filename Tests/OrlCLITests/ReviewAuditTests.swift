import Foundation
import OrlController
import OrlCore
import OrlStore
import Testing

/// `orlctl review` on real git repositories for the stronger audit (issue 17, parts D
/// and E): gates by capability, self-approving gates, names that match nothing, the
/// lethal trifecta, transitive handoffs, and the projected spend ceiling.
@Suite(.serialized) struct ReviewAuditTests {
    let trust = ReviewTrustTests()

    static let fleet = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: small, pricing: {input: 0.15, output: 0.6}}]
        ---
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: web}
        spec: {type: http, http: {url: "https://fetch.example.com"}, capabilities: [network], untrustedOutput: true}
        ---
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: crm}
        spec: {type: http, http: {url: "https://crm.example.com"}, dataClasses: [pii]}
        ---
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: post}
        spec: {type: http, http: {url: "https://post.example.com"}, capabilities: [egress, irreversible]}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: reader, labels: {team: x}}
        spec: {model: sim/small, runtime: {command: /bin/sleep, args: ["1"]}, tools: [web]}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: sender, labels: {team: x}}
        spec: {model: sim/small, runtime: {command: /bin/sleep, args: ["1"]}, tools: [crm, post]}
        ---
        apiVersion: orl.dev/v1
        kind: Budget
        metadata: {name: daily}
        spec: {appliesTo: {selector: {matchLabels: {team: x}}}, limits: [{window: day, usd: 5}]}
        ---
        apiVersion: orl.dev/v1
        kind: Workflow
        metadata: {name: digest}
        spec:
          steps:
            - {id: read, agent: reader, tools: [web]}
            - {id: look, approval: {message: send it?}, dependsOn: [read]}
            - {id: send, agent: sender, dependsOn: [look], tools: [crm, post]}
        """

    static let policy = """
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: team}
        spec:
          appliesTo: {selector: {matchLabels: {team: x}}}
          allow: {models: ["sim/*"], tools: [web, crm, post], dataClasses: [pii], egress: [pii], handoffs: [sender]}
          requireApproval: {capabilities: [irreversible]}
        """

    func repository(_ head: (GitFixture) throws -> Void) throws -> GitFixture {
        try trust.repository(
            base: { repo in
                try repo.write("fleet/fleet.yaml", Self.fleet)
                try repo.write("fleet/policy.yaml", Self.policy)
            }, head: head)
    }

    func review(_ repo: GitFixture, _ extra: [String] = []) async throws -> Orlctl.Result { try await trust.review(repo, extra) }

    func sarifResults(_ text: String) throws -> [[String: Any]] {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        return ((object?["runs"] as? [[String: Any]])?.first?["results"] as? [[String: Any]]) ?? []
    }

    @Test func theBaseFleetIsClean() async throws {
        let repo = try repository { _ in }
        let result = try await review(repo)
        #expect(result.status == 0)
        #expect(result.stdout.contains("still present: 0"), "\(result.stdout)")
    }

    @Test func aGateThatApprovesItselfIsReportedWithItsPath() async throws {
        let repo = try repository { repo in
            try repo.write(
                "fleet/fleet.yaml",
                Self.fleet.replacingOccurrences(
                    of: "approval: {message: send it?}", with: "approval: {message: send it?, onTimeout: approve}"))
        }
        let result = try await review(repo)
        #expect(result.status == 1, "\(result.stdout)")
        #expect(
            result.stdout.contains(
                #"fleet/fleet.yaml:45:65: error[perm.approval-missing]: step "send" uses tool "post", which needs a human approval gate (Policy/team (capability "irreversible")), but the path "read" → "look" → "send" reaches it without one"#
            ), "\(result.stdout)")
        // The untrusted content now reaches the sending step with no human gate between.
        #expect(result.stdout.contains("warning[perm.lethal-trifecta]"), "\(result.stdout)")
        let sarif = try await review(repo, ["-o", "sarif"])
        let rules = Set(try sarifResults(sarif.stdout).compactMap { $0["ruleId"] as? String })
        #expect(rules.isSuperset(of: ["perm.approval-missing", "perm.lethal-trifecta"]), "\(sarif.stdout)")
    }

    @Test func droppingACapabilityGateIsAGainAndATypoIsReported() async throws {
        let repo = try repository { repo in
            try repo.write(
                "fleet/policy.yaml",
                Self.policy.replacingOccurrences(
                    of: "requireApproval: {capabilities: [irreversible]}", with: "requireApproval: {tools: [psot]}"))
        }
        let result = try await review(repo, ["--fail-on-escalation"])
        #expect(result.status == 1)
        #expect(
            result.stdout.contains(
                #"+ gained  use of tool "post" without an approval gate: no longer required: its requirement was removed from Policy/team"#),
            "\(result.stdout)")
        #expect(
            result.stdout.contains(
                #"fleet/policy.yaml:7:29: warning[policy.unmatched]: Policy/team names tool "psot", which matches nothing in namespace "default"; this entry allows, denies or gates nothing (did you mean "post"?)"#
            ), "\(result.stdout)")
        // The other way round, adding a capability rule, is a loss of the ungated use.
        let added = try trust.repository(
            base: { repo in
                try repo.write("fleet/fleet.yaml", Self.fleet)
                try repo.write(
                    "fleet/policy.yaml",
                    Self.policy.replacingOccurrences(of: "\n  requireApproval: {capabilities: [irreversible]}", with: ""))
            },
            head: { repo in try repo.write("fleet/policy.yaml", Self.policy) })
        let gated = try await review(added)
        #expect(
            gated.stdout.contains(
                #"- lost    use of tool "post" without an approval gate: required by Policy/team (capability "irreversible")"#),
            "\(gated.stdout)")
    }

    @Test func aHandoffChainIsAGainOfReach() async throws {
        let repo = try repository { repo in
            try repo.write(
                "fleet/auditor.yaml",
                """
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: auditor}
                spec: {model: sim/small, runtime: {command: /bin/sleep, args: ["1"]}}
                ---
                apiVersion: orl.dev/v1
                kind: Policy
                metadata: {name: sender-to-auditor}
                spec:
                  appliesTo: {agents: [sender]}
                  allow: {handoffs: [auditor]}
                ---
                apiVersion: orl.dev/v1
                kind: Policy
                metadata: {name: auditor}
                spec:
                  appliesTo: {agents: [auditor]}
                  allow: {models: ["sim/*"]}
                ---
                apiVersion: orl.dev/v1
                kind: Budget
                metadata: {name: auditor}
                spec: {appliesTo: {agents: [auditor]}, limits: [{window: day, usd: 1}]}
                """)
        }
        let result = try await review(repo, ["--fail-on-escalation"])
        #expect(result.status == 1)
        #expect(
            result.stdout.contains(#"+ gained  data of class "pii" by handoffs: handoffs along "sender" → "auditor" (from tool "crm")"#),
            "\(result.stdout)")
        #expect(
            result.stdout.contains(
                #"warning[perm.handoff-reach]: handoffs can carry data of class "pii" (from tool "crm") along "sender" → "auditor" to agent "auditor", which is not cleared for it"#
            ), "\(result.stdout)")
        let json = try await review(repo, ["-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        let reach = (object?["permissions"] as? [[String: Any]])?.first { $0["kind"] as? String == "reach" }
        #expect(reach?["value"] as? String == "pii")
        #expect(reach?["details"] as? [String] == ["not cleared for it"])
    }

    // MARK: Projected spend (part E)

    @Test func aRaisedBudgetRaisesTheCeilingAndCanFailTheCheck() async throws {
        let repo = try repository { repo in
            try repo.write("fleet/fleet.yaml", Self.fleet.replacingOccurrences(of: "usd: 5}", with: "usd: 50}"))
        }
        let result = try await review(repo)
        #expect(result.status == 0)
        #expect(result.stdout.contains("before: at most $5.00 a day, $155.00 a month"), "\(result.stdout)")
        #expect(
            result.stdout.contains("after:  at most $50.00 a day, $1550.00 a month")
                || result.stdout.contains("after:  at most $50.00 a day, $1,550.00 a month"), "\(result.stdout)")
        #expect(
            result.stdout.contains("change: +$45.00 a day, +$1395.00 a month") || result.stdout.contains("+$1,395.00 a month"),
            "\(result.stdout)")

        let failing = try await review(repo, ["--max-cost-increase", "100"])
        #expect(failing.status == 1)
        #expect(failing.stderr.contains("more than --max-cost-increase"), "\(failing.stderr)")
        #expect(try await review(repo, ["--max-cost-increase", "1395"]).status == 0)

        let json = try await review(repo, ["-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        let spend = object?["spend"] as? [String: Any]
        #expect((spend?["monthlyIncreaseUSD"] as? Double) == 1395)
    }

    @Test func anAgentLeftUncappedIsAnUnboundedIncrease() async throws {
        let repo = try repository { repo in
            try repo.write(
                "fleet/fleet.yaml",
                Self.fleet.replacingOccurrences(
                    of: "limits: [{window: day, usd: 5}]}", with: "limits: [{window: day, usd: 5}], onExceeded: alert}"))
        }
        let result = try await review(repo, ["--max-cost-increase", "1000000"])
        #expect(result.status == 1)
        #expect(result.stdout.contains(#"after:  no ceiling: no halting Budget caps agents "reader", "sender""#), "\(result.stdout)")
        #expect(result.stdout.contains("change: unbounded"), "\(result.stdout)")
        // A cheaper fleet passes any limit.
        let lowered = try repository { repo in
            try repo.write("fleet/fleet.yaml", Self.fleet.replacingOccurrences(of: "usd: 5}", with: "usd: 1}"))
        }
        #expect(try await review(lowered, ["--max-cost-increase", "0"]).status == 0)
    }

    /// The digest, run every hour, its agent steps bounded: 24 × 365.2425 / 12 runs a
    /// month, each at most (20,000 + 2 × 10,000) tokens at $0.60 per million.
    static let scheduled = fleet.replacingOccurrences(
        of: """
                - {id: read, agent: reader, tools: [web]}
                - {id: look, approval: {message: send it?}, dependsOn: [read]}
                - {id: send, agent: sender, dependsOn: [look], tools: [crm, post]}
            """,
        with: """
                - {id: read, agent: reader, tools: [web], maxTokens: 20000}
                - {id: look, approval: {message: send it?}, dependsOn: [read]}
                - {id: send, agent: sender, dependsOn: [look], tools: [crm, post], maxTokens: 10000, retry: {attempts: 2}}
              triggers: [{type: schedule, cron: "0 * * * *"}]
            """)

    @Test func aScheduleIsProjectedFromItsTokenBoundsAndCanFailTheCheck() async throws {
        #expect(Self.scheduled != Self.fleet)
        let repo = try repository { repo in try repo.write("fleet/fleet.yaml", Self.scheduled) }
        let result = try await review(repo)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("Projected spend (a month):\n  before: $0.00\n  after:  $17.54\n"), "\(result.stdout)")
        #expect(result.stdout.contains("↑ change: +$17.54 a month"), "\(result.stdout)")
        #expect(result.stdout.contains("↑ Agent/reader: $0.00 → $8.77"), "\(result.stdout)")
        #expect(result.stdout.contains("↑ Workflow/digest: $0.00 → $17.54 (730.5 runs a month, at most $0.03 a run)"), "\(result.stdout)")

        // The ceiling does not move (the same $5 a day); the projection does.
        let failing = try await review(repo, ["--max-cost-increase", "10"])
        #expect(failing.status == 1)
        #expect(
            failing.stderr.contains("the projected spend change, +$17.54 a month, is more than --max-cost-increase $10.00"),
            "\(failing.stderr)")
        #expect(!failing.stderr.contains("worst-case"), "\(failing.stderr)")
        #expect(try await review(repo, ["--max-cost-increase", "18"]).status == 0)

        let json = try await review(repo, ["-o", "json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let projected = try #require(object["projectedSpend"] as? [String: Any])
        let increase = try #require(projected["monthlyIncreaseUSD"] as? Double)
        #expect(abs(increase - 24 * 30.436875 * 0.024) < 1e-6)
        let after = try #require(projected["after"] as? [String: Any])
        let workflow = try #require((after["workflows"] as? [[String: Any]])?.first)
        #expect(workflow["workflow"] as? String == "Workflow/digest")
        #expect(abs((workflow["runsPerMonth"] as? Double ?? 0) - 24 * 30.436875) < 1e-6)
        #expect(abs((workflow["perRunUSD"] as? Double ?? 0) - 0.024) < 1e-12)

        let markdown = try await review(repo, ["-o", "markdown"])
        #expect(
            markdown.stdout.contains("### Projected spend (a month)\n\n- before: $0.00\n- after:  $17.54\n- ⚠️ change: +$17.54 a month\n"),
            "\(markdown.stdout)")
        let sarif = try sarifResults(try await review(repo, ["-o", "sarif"]).stdout)
        let spend = sarif.filter { $0["ruleId"] as? String == "review.spend-increase" }
        #expect(spend.count == 1, "\(sarif)")
        let message = (spend.first?["message"] as? [String: Any])?["text"] as? String ?? ""
        #expect(
            message.hasPrefix(
                "projected spend: $0.00 → $17.54 a month, +$17.54 a month (agent \"reader\" $0.00 → $8.77, agent \"sender\" $0.00 → $8.77)"),
            "\(message)")

        // A step that loses its bound leaves the projection unbounded, which no limit passes.
        let unbounded = try repository { repo in
            try repo.write("fleet/fleet.yaml", Self.scheduled.replacingOccurrences(of: ", maxTokens: 20000", with: ""))
        }
        let open = try await review(unbounded, ["--max-cost-increase", "1000000"])
        #expect(open.status == 1)
        #expect(open.stdout.contains(#"workflow/digest step "read" has no maxTokens: its spend is not projected"#), "\(open.stdout)")
        #expect(open.stderr.contains("the projected spend change, unbounded"), "\(open.stderr)")
    }

    /// With --state, each agent's recent tokens in the ledger are priced at the model it
    /// has in each revision; review reads nothing else from the state.
    @Test func aLedgerGivenWithStateIsPricedAtEachRevisionsModels() async throws {
        let dearer = Self.fleet.replacingOccurrences(
            of: "models: [{name: small, pricing: {input: 0.15, output: 0.6}}]",
            with: "models: [{name: small, pricing: {input: 0.15, output: 0.6}}, {name: large, pricing: {input: 3, output: 15}}]")
        let repo = try trust.repository(
            base: { repo in
                try repo.write("fleet/fleet.yaml", dearer)
                try repo.write("fleet/policy.yaml", Self.policy)
            },
            head: { repo in
                try repo.write(
                    "fleet/fleet.yaml",
                    dearer.replacingOccurrences(
                        of: "metadata: {name: reader, labels: {team: x}}\nspec: {model: sim/small",
                        with: "metadata: {name: reader, labels: {team: x}}\nspec: {model: sim/large"))
            })
        let state = repo.directory.url.appendingPathComponent("ledger").path
        let store = try SQLiteStateStore(directory: state)
        let now = Controller.systemTime()
        try store.write { writer throws(StoreError) in
            try writer.append([
                LedgerEntry(
                    time: Timestamp(milliseconds: now.milliseconds - 86_400_000), agent: ResourceID(kind: "Agent", name: "reader"),
                    model: "sim/small", usage: TokenUsage(prompt: 1_000_000, completion: 1_000_000), usd: 0.75, latencyMilliseconds: 5,
                    requestID: "r1", outcome: "ok"),
                // Older than the 30 days read.
                LedgerEntry(
                    time: Timestamp(milliseconds: now.milliseconds - 40 * 86_400_000), agent: ResourceID(kind: "Agent", name: "reader"),
                    model: "sim/small", usage: TokenUsage(prompt: 9_000_000, completion: 0), usd: 1.35, latencyMilliseconds: 5,
                    requestID: "r2", outcome: "ok"),
            ])
        }
        // Offline, the change projects nothing: nothing is scheduled.
        let offline = try await review(repo)
        #expect(offline.stdout.contains("Projected spend (a month):\n  before: $0.00\n  after:  $0.00\n"), "\(offline.stdout)")

        let result = try await review(repo, ["--state", state])
        #expect(result.status == 0, "\(result.stderr)")
        // 1M + 1M tokens in 30 days: $0.75 at small's prices, $18 at large's, for an average month.
        #expect(result.stdout.contains("↑ Agent/reader: $0.77 → $18.27 (from the ledger: $18.27)"), "\(result.stdout)")
        #expect(try await review(repo, ["--state", state, "--max-cost-increase", "17"]).status == 1)
        #expect(try await review(repo, ["--state", state, "--max-cost-increase", "18"]).status == 0)

        let missing = try await review(repo, ["--state", state + "-typo"])
        #expect(missing.status == 2 && missing.stderr.contains("no orl state there"), "\(missing.stderr)")
    }
}
