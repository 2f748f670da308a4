import Foundation
import OrlCore
import OrlJSON
import Testing

/// The audit a security reviewer relies on (issue 17, part D): gates by capability and
/// risk, gates that approve themselves, names that match nothing, untrusted content
/// meeting private data and egress, and handoffs followed transitively.
@Suite struct AuditTrustTests {
    func edited(_ edits: [(String, String)], in fleet: String = supportFleet) throws -> String {
        try edits.reduce(fleet) { text, edit in
            try #require(text.contains(edit.0), "the fixture has no \(edit.0)")
            return text.replacingOccurrences(of: edit.0, with: edit.1)
        }
    }

    func findings(_ yaml: String, _ code: String) -> [Diagnostic] {
        validate(yaml).diagnostics.filter { $0.code.rawValue == code }
    }

    /// The reply step straight after the draft: no gate on its path.
    static let ungated = (
        "      dependsOn: [approve]\n      tools: [email, refund]", "      dependsOn: [draft]\n      tools: [email, refund]"
    )

    // MARK: requireApproval by capability and risk

    @Test func approvalByCapabilityCoversEveryToolWithIt() throws {
        let yaml = try edited([
            ("requireApproval: {tools: [refund]}", "requireApproval: {capabilities: [irreversible]}"), Self.ungated,
        ])
        let missing = findings(yaml, "perm.approval-missing")
        #expect(missing.count == 2, "\(missing.map(\.message))")
        let email = try #require(missing.first { $0.message.contains("\"email\"") })
        #expect(
            email.message
                == #"step "reply" uses tool "email", which needs a human approval gate (Policy/support (capability "irreversible")), but the path "triage" → "draft" → "reply" reaches it without one"#
        )
        // The note points at the capability entry of the Policy.
        let note = try #require(email.notes.first)
        let at = try #require(position(of: "irreversible]}", in: yaml, after: "name: support"))
        #expect(note.location?.line == at.line && note.location?.column == at.column)
        // With the gate, both pass.
        let gated = try edited([("requireApproval: {tools: [refund]}", "requireApproval: {capabilities: [irreversible]}")])
        #expect(findings(gated, "perm.approval-missing").isEmpty)
    }

    @Test func approvalByRiskCoversThatRiskAndAbove() throws {
        let yaml = try edited([("requireApproval: {tools: [refund]}", "requireApproval: {risk: high}"), Self.ungated])
        let missing = findings(yaml, "perm.approval-missing")
        #expect(missing.map { $0.message.contains("\"refund\"") } == [true], "\(missing.map(\.message))")
        #expect(missing.first?.message.contains("Policy/support (risk high or above)") == true)
        // email is irreversible but low risk: no rule covers it, so it is the risky-ungated warning.
        let risky = findings(yaml, "perm.risky-ungated")
        #expect(
            risky.map(\.message) == [
                #"step "reply" uses tool "email" (irreversible) with no human approval gate on the path "triage" → "draft" → "reply", and no Policy requires one"#
            ])
        #expect(risky.first?.severity == .warning)
        // --strict makes it an error.
        #expect(validate(yaml, strict: true).diagnostics.first { $0.code.rawValue == "perm.risky-ungated" }?.severity == .error)
    }

    @Test func capabilityRulesReachTheGatewayAndExplain() throws {
        let yaml = try edited([("requireApproval: {tools: [refund]}", "requireApproval: {capabilities: [egress]}")])
        let report = validate(yaml)
        let engine = PolicyEngine(report.fleet)
        let mailer = ResourceID(kind: "Agent", namespace: "default", name: "mailer")
        let rules = engine.permissions(of: mailer).approvalRules(forTool: "email")
        #expect(rules.map(\.source) == [#"Policy/support (capability "egress")"#])
        #expect(engine.permissions(of: mailer).approvalRules(forTool: "refund").isEmpty)
    }

    // MARK: A gate that approves itself

    @Test func aGateThatApprovesOnTimeoutIsNotAHumanGate() throws {
        let yaml = try edited([("approval: {message: Send this reply?}", "approval: {message: Send this reply?, onTimeout: approve}")])
        let missing = findings(yaml, "perm.approval-missing")
        #expect(missing.count == 1, "\(missing.map(\.message))")
        #expect(
            missing.first?.message
                == #"step "reply" uses tool "refund", which needs a human approval gate (Policy/support), but the path "triage" → "draft" → "approve" → "reply" reaches it without one"#
        )
        #expect(
            missing.first?.notes.contains {
                $0.message.hasPrefix(#"approval step "approve" approves itself when its timeout passes (onTimeout: approve)"#)
            } == true)
        // email (irreversible) is now reached with no human gate either.
        #expect(findings(yaml, "perm.risky-ungated").count == 1)

        // A Policy can say a self-approving gate is enough for its rules.
        let accepted = try edited(
            [
                ("approval: {message: Send this reply?}", "approval: {message: Send this reply?, onTimeout: approve}"),
                ("requireApproval: {tools: [refund]}", "requireApproval: {tools: [refund], acceptTimeoutApproval: true}"),
            ])
        #expect(findings(accepted, "perm.approval-missing").isEmpty)
        // onTimeout: deny (the default) is a human gate.
        #expect(findings(supportFleet, "perm.approval-missing").isEmpty)
        #expect(findings(supportFleet, "perm.risky-ungated").isEmpty)
    }

    // MARK: Names that match nothing

    @Test func aMisspeltDenyIsReported() throws {
        let yaml = try edited([
            (
                "allow: {tools: [email, refund], egress: [public, pii]}",
                "allow: {tools: [\"*\"], egress: [public, pii]}\n  deny: {tools: [refnud]}"
            )
        ])
        let unmatched = findings(yaml, "policy.unmatched")
        #expect(
            unmatched.map(\.message) == [
                #"Policy/mailer-can names tool "refnud", which matches nothing in namespace "default"; this entry allows, denies or gates nothing (did you mean "refund"?)"#
            ])
        let at = try #require(position(of: "refnud", in: yaml))
        #expect(unmatched.first?.location?.line == at.line && unmatched.first?.location?.column == at.column)
        #expect(unmatched.first?.severity == .warning)
    }

    @Test(arguments: [
        (
            "allow: {models: [\"sim/*\"], dataClasses: [public, pii]}",
            "allow: {models: [\"sim/*\", sim/smal], dataClasses: [public, pii]}", "model \"sim/smal\""
        ),
        (
            "allow: {models: [\"sim/*\"], dataClasses: [public, pii]}",
            "allow: {models: [\"sim/*\", \"sym/*\"], dataClasses: [public, pii]}", "model \"sym/*\""
        ),
        (
            "allow: {models: [\"sim/*\"], dataClasses: [public, pii]}", "allow: {models: [\"sim/*\"], dataClasses: [public, pi]}",
            "data class \"pi\""
        ),
        ("allow: {tools: [crm, search], handoffs: [writer]}", "allow: {tools: [crm, search], handoffs: [writter]}", "agent \"writter\""),
        ("requireApproval: {tools: [refund]}", "requireApproval: {tools: [refunds]}", "tool \"refunds\""),
    ])
    func everyKindOfEntryIsChecked(_ from: String, _ to: String, _ noun: String) throws {
        let yaml = try edited([(from, to)])
        let unmatched = findings(yaml, "policy.unmatched")
        #expect(
            unmatched.count == 1 && unmatched.first?.message.contains("names \(noun), which matches nothing") == true,
            "\(unmatched.map(\.message))")
    }

    @Test func aSecretOrDataClassIsReportedOnlyWhenCloseToARealOne() throws {
        let withSecret = try edited([
            (
                "name: writer, labels: {team: support}}\nspec:\n  model: sim/small",
                "name: writer, labels: {team: support}}\nspec:\n  secrets: [{name: crm-token}]\n  model: sim/small"
            ),
            (
                "allow: {handoffs: [mailer]}",
                "allow: {handoffs: [mailer], secrets: [crm-token]}\n  deny: {secrets: [crm-tokn, vault-root], egress: [payment]}"
            ),
        ])
        // crm-tokn is a typo of the secret the writer reads; vault-root and payment are denied
        // ahead of time on purpose.
        #expect(
            findings(withSecret, "policy.unmatched").map(\.message) == [
                #"Policy/writer-can names secret "crm-tokn", which matches nothing in namespace "default"; this entry allows, denies or gates nothing (did you mean "crm-token"?)"#
            ])
    }

    @Test func theSupportFleetNamesNothingThatIsMissing() {
        #expect(findings(supportFleet, "policy.unmatched").isEmpty)
    }

    // MARK: The lethal trifecta

    static let trifectaFleet = """
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
        spec: {type: http, http: {url: "https://post.example.com"}, capabilities: [egress]}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: reader, labels: {team: x}}
        spec: {model: sim/small, runtime: {command: python3}, tools: [web]}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: sender, labels: {team: x}}
        spec: {model: sim/small, runtime: {command: python3}, tools: [crm, post]}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: team}
        spec:
          appliesTo: {selector: {matchLabels: {team: x}}}
          allow: {models: ["sim/*"], tools: [web, crm, post], dataClasses: [pii], egress: [pii], handoffs: [sender]}
        ---
        apiVersion: orl.dev/v1
        kind: Budget
        metadata: {name: b}
        spec: {appliesTo: {selector: {matchLabels: {team: x}}}, limits: [{window: day, usd: 5}]}
        ---
        apiVersion: orl.dev/v1
        kind: Workflow
        metadata: {name: digest}
        spec:
          steps:
            - {id: read, agent: reader, tools: [web]}
            - {id: send, agent: sender, dependsOn: [read], tools: [crm, post]}
        """

    @Test func untrustedContentDataAndEgressMeetingAlongTheDAG() throws {
        let found = findings(Self.trifectaFleet, "perm.lethal-trifecta")
        #expect(
            found.map(\.message) == [
                #"step "send" can send data of class "pii" (from tool "crm" in "send") out through egress tool "post" while holding untrusted content (from tool "web" in "read" → "send") with no human approval gate between: a prompt injection in that content can send the data out"#
            ])
        let at = try #require(position(of: "post]}", in: Self.trifectaFleet, after: "id: send"))
        #expect(found.first?.location?.line == at.line && found.first?.location?.column == at.column)

        // A human gate between the untrusted content and the step stops it.
        let gated = try edited(
            [
                (
                    "    - {id: send, agent: sender, dependsOn: [read]",
                    "    - {id: look, approval: {message: ok?}, dependsOn: [read]}\n    - {id: send, agent: sender, dependsOn: [look]"
                )
            ], in: Self.trifectaFleet)
        #expect(findings(gated, "perm.lethal-trifecta").isEmpty)
        // A gate that approves itself does not.
        let selfApproving = gated.replacingOccurrences(of: "approval: {message: ok?}", with: "approval: {message: ok?, onTimeout: approve}")
        #expect(findings(selfApproving, "perm.lethal-trifecta").count == 1)
    }

    @Test func anAgentHoldingAllThreeIsReportedOnTheAgent() throws {
        let yaml = try edited(
            [("tools: [crm, post]}\n---", "tools: [crm, post, web]}\n---")], in: Self.trifectaFleet)
        let found = findings(yaml, "perm.lethal-trifecta")
        // Once, on the agent: the step's report would repeat it.
        #expect(found.count == 1, "\(found.map(\.message))")
        #expect(
            found.first?.message
                == #"agent "sender" reads untrusted content from tool "web", data of class "pii" from tool "crm", and can send out through egress tool "post" with no approval gate: a prompt injection in the untrusted content can send the data out"#
        )
        #expect(found.first?.resource?.name == "sender")
        // Gating egress by capability clears both reports.
        let gatedEgress = yaml.replacingOccurrences(
            of: "handoffs: [sender]}", with: "handoffs: [sender]}\n  requireApproval: {capabilities: [egress]}")
        // The agent is no longer reported; the workflow, which sends with no human gate
        // after the untrusted content, still is (and now misses the gate the rule asks for).
        #expect(findings(gatedEgress, "perm.lethal-trifecta").map { $0.resource?.kind } == ["Workflow"])
        #expect(findings(gatedEgress, "perm.approval-missing").count == 1)
    }

    // MARK: Transitive handoffs

    static let chainFleet = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: small, pricing: {input: 0.15, output: 0.6}}]
        ---
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: crm}
        spec: {type: http, http: {url: "https://crm.example.com"}, dataClasses: [pii]}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: a, labels: {team: x}}
        spec: {model: sim/small, runtime: {command: python3}, tools: [crm]}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: b, labels: {team: x}}
        spec: {model: sim/small, runtime: {command: python3}}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: c, labels: {team: x}}
        spec: {model: sim/small, runtime: {command: python3}}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: all}
        spec:
          appliesTo: {selector: {matchLabels: {team: x}}}
          allow: {models: ["sim/*"]}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: a-can}
        spec:
          appliesTo: {agents: [a]}
          allow: {tools: [crm], dataClasses: [pii], handoffs: [b]}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: b-can}
        spec:
          appliesTo: {agents: [b]}
          allow: {dataClasses: [pii], handoffs: [c]}
        ---
        apiVersion: orl.dev/v1
        kind: Budget
        metadata: {name: b}
        spec: {appliesTo: {selector: {matchLabels: {team: x}}}, limits: [{window: day, usd: 5}]}
        """

    @Test func handoffsCarryDataToTheEndOfTheChain() throws {
        let found = findings(Self.chainFleet, "perm.handoff-reach")
        #expect(
            found.map(\.message) == [
                #"handoffs can carry data of class "pii" (from tool "crm") along "a" → "b" → "c" to agent "c", which is not cleared for it: no policy allows it"#
            ])
        // Reported at the rule allowing the last hop, with a note per hop.
        let at = try #require(position(of: "c]}", in: Self.chainFleet, after: "name: b-can"))
        #expect(found.first?.location?.line == at.line && found.first?.location?.column == at.column)
        #expect(found.first?.notes.count == 2)
        // Clearing c, or cutting the chain, ends it.
        let cleared = Self.chainFleet.replacingOccurrences(
            of: "allow: {models: [\"sim/*\"]}", with: "allow: {models: [\"sim/*\"], dataClasses: [pii]}")
        #expect(findings(cleared, "perm.handoff-reach").isEmpty)
        let cut = Self.chainFleet.replacingOccurrences(of: "handoffs: [c]", with: "handoffs: []")
        #expect(findings(cut, "perm.handoff-reach").isEmpty)
    }

    @Test func aDeniedHandoffHoldsAlongEveryPathOfAWorkflow() throws {
        let yaml =
            Self.chainFleet.replacingOccurrences(
                of: "allow: {tools: [crm], dataClasses: [pii], handoffs: [b]}",
                with: "allow: {tools: [crm], dataClasses: [pii], handoffs: [b]}\n  deny: {handoffs: [c]}")
                + """

                ---
                apiVersion: orl.dev/v1
                kind: Workflow
                metadata: {name: chain}
                spec:
                  steps:
                    - {id: one, agent: a}
                    - {id: two, agent: b, dependsOn: [one]}
                    - {id: three, agent: c, dependsOn: [two]}
                """
        let denied = findings(yaml, "perm.handoff-denied")
        #expect(
            denied.map(\.message) == [
                #"step "three" receives the output of step "one" through "one" → "two" → "three", but agent "a" may not hand off to agent "c": denied by Policy/a-can"#
            ])
        // A chain of per-hop allows with no deny is how a pipeline is written: no error.
        let allowed = yaml.replacingOccurrences(of: "\n  deny: {handoffs: [c]}", with: "")
        #expect(findings(allowed, "perm.handoff-denied").isEmpty)
    }
}
