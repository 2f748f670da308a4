import Foundation
import OrlCore
import OrlJSON
import Testing

@Suite struct ManifestValidationTests {
    @Test func baseFleetIsClean() {
        let report = validate(baseFleet)
        #expect(report.diagnostics.isEmpty, "\(report.diagnostics)")
        #expect(report.resourceCount == 10)
        #expect(
            report.fleet.resources.map(\.kind) == [
                .modelProvider, .tool, .tool, .agent, .agent, .agent, .policy, .policy, .budget, .workflow,
            ])
    }

    /// One case per rule: the text to add to (or replace in) the base fleet, what must be
    /// reported, and where.
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var yaml: String
        var code: String
        var severity: Diagnostic.Severity = .error
        var message: String
        /// The text the diagnostic must point at (first occurrence after `after`).
        var at: String
        var after: String? = nil
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "unknown kind with a suggestion",
            yaml: baseFleet + "\n---\napiVersion: orl.dev/v1\nkind: Agnet\nmetadata: {name: x}\nspec: {}\n",
            code: "resource.unknown-kind", message: #"unknown kind "Agnet" (did you mean "Agent"?)"#, at: "Agnet"),
        Case(
            name: "unknown apiVersion",
            yaml: "apiVersion: orl.dev/v2\nkind: Agent\nmetadata: {name: x}\nspec: {}\n",
            code: "resource.unknown-api-version", message: #"unknown apiVersion "orl.dev/v2""#, at: "orl.dev/v2"),
        Case(
            name: "not a mapping",
            yaml: "- just\n- a list\n",
            code: "resource.invalid", message: "expected a resource", at: "- just"),
        Case(
            name: "duplicate resource points at the first",
            yaml: baseFleet
                + "\n---\napiVersion: orl.dev/v1\nkind: Tool\nmetadata:\n  name: web-search\nspec: {type: command, command: {command: x}}\n",
            code: "resource.duplicate", message: "Tool/web-search is defined more than once", at: "web-search", after: "  name: web-search"),
        Case(
            name: "agent's provider is missing",
            yaml: baseFleet.replacingOccurrences(
                of: "  model: sim/small\n  runtime: {command: python3}\n  tools: [web-search]",
                with: "  model: simm/small\n  runtime: {command: python3}\n  tools: [web-search]"),
            code: "ref.missing", message: #"ModelProvider "simm" is not defined (did you mean "sim"?)"#, at: "simm/small"),
        Case(
            name: "agent's model is not offered by the provider",
            yaml: baseFleet.replacingOccurrences(
                of: "name: writer\n  labels: {team: content}\nspec:\n  model: sim/small",
                with: "name: writer\n  labels: {team: content}\nspec:\n  model: sim/smal"),
            code: "ref.missing", message: #"ModelProvider "sim" has no model "smal" (did you mean "small"?)"#, at: "sim/smal",
            after: "name: writer"),
        Case(
            name: "agent's tool is missing",
            yaml: baseFleet.replacingOccurrences(of: "\n  tools: [publish-post]", with: "\n  tools: [publish-post, publish-posts]"),
            code: "ref.missing", message: #"Tool "publish-posts" is not defined (did you mean "publish-post"?)"#, at: "publish-posts"),
        Case(
            name: "step's agent is missing",
            yaml: baseFleet.replacingOccurrences(of: "agent: publisher\n", with: "agent: publsher\n"),
            code: "ref.missing", message: #"Agent "publsher" is not defined (did you mean "publisher"?)"#, at: "publsher"),
        Case(
            name: "policy names an agent that does not exist",
            yaml: baseFleet.replacingOccurrences(of: "appliesTo: {agents: [publisher]}", with: "appliesTo: {agents: [publisher, ghost]}"),
            code: "ref.missing", severity: .warning, message: #"Agent "ghost" is not defined; this policy grants it nothing"#, at: "ghost"),
        Case(
            name: "budget selector matches nothing",
            yaml: baseFleet.replacingOccurrences(
                of: "appliesTo: {selector: {matchLabels: {team: content}}, agents: [publisher]}",
                with: "appliesTo: {selector: {matchLabels: {team: marketing}}, agents: [researcher, writer, publisher]}"
            ),
            code: "selector.empty", severity: .warning, message: "the selector of Budget/daily matches no Agent",
            at: "{matchLabels: {team: marketing}}"),
        Case(
            name: "unknown dependency",
            yaml: baseFleet.replacingOccurrences(of: "dependsOn: [draft-a, draft-b]", with: "dependsOn: [draft-a, draft-bb]"),
            code: "dag.unknown-dependency",
            message: #"step "approve" depends on "draft-bb", which is not a step of this workflow (did you mean "draft-b"?)"#,
            at: "draft-bb"),
        Case(
            name: "duplicate step id",
            yaml: baseFleet.replacingOccurrences(of: "- id: draft-b", with: "- id: draft-a")
                .replacingOccurrences(of: "dependsOn: [draft-a, draft-b]", with: "dependsOn: [draft-a]"),
            code: "dag.duplicate-step", message: #"step id "draft-a" is used more than once"#, at: "draft-a", after: "dependsOn: [research]"
        ),
        Case(
            name: "cycle through three steps",
            yaml: baseFleet.replacingOccurrences(
                of: "inputs: {topic: {input: topic}}", with: "inputs: {topic: {input: topic}}\n      dependsOn: [publish]"),
            code: "dag.cycle", message: "dependency cycle: research → draft-a → approve → publish → research", at: "publish",
            after: "inputs: {topic: {input: topic}}"),
        Case(
            name: "step depends on itself",
            yaml: baseFleet.replacingOccurrences(of: "dependsOn: [approve]", with: "dependsOn: [approve, publish]"),
            code: "dag.cycle", message: "dependency cycle: publish → publish", at: "publish]"),
        Case(
            name: "input reads a step that does not finish first",
            yaml: baseFleet.replacingOccurrences(
                of: "- id: draft-b\n      agent: writer\n      dependsOn: [research]",
                with: "- id: draft-b\n      agent: writer\n      dependsOn: [research]\n      inputs: {other: {step: draft-a}}"),
            code: "dag.input-not-upstream",
            message: #"input "other" of step "draft-b" reads step "draft-a", which does not finish before it"#, at: "draft-a}}"),
        Case(
            name: "input reads an undeclared run input",
            yaml: baseFleet.replacingOccurrences(of: "inputs: {topic: {input: topic}}", with: "inputs: {topic: {input: subject}}"),
            code: "ref.missing", message: #"reads run input "subject", which spec.inputs does not declare"#, at: "subject"),
        Case(
            name: "schema: misspelt field",
            yaml: baseFleet.replacingOccurrences(
                of: "  runtime: {command: python3}\n  tools: [publish-post]",
                with: "  runtime: {command: python3, restartPolicy: Allways}\n  tools: [publish-post]"),
            code: "schema.invalid", message: #"did you mean "Always"?"#, at: "Allways"),
    ]

    @Test(arguments: cases)
    func reportsEachRule(_ c: Case) throws {
        let report = validate(c.yaml)
        let found = report.diagnostics.filter { $0.code.rawValue == c.code }
        #expect(
            found.count == 1,
            "expected one \(c.code), got \(report.diagnostics.map { "\($0.location.map(String.init(describing:)) ?? ""): \($0.code): \($0.message)" })"
        )
        let d = try #require(found.first)
        #expect(d.severity == c.severity)
        #expect(d.message.contains(c.message), "message was: \(d.message)")
        let expected = try #require(position(of: c.at, in: c.yaml, after: c.after))
        #expect(
            d.location?.line == expected.line && d.location?.column == expected.column,
            "at \(String(describing: d.location)), expected \(expected)")
        #expect(d.location?.file == "fleet.yaml")
        // Nothing else is reported: each case breaks one rule.
        #expect(report.diagnostics.count == 1, "\(report.diagnostics.map(\.message))")
    }

    @Test func cycleHasANotePerDependency() throws {
        let yaml = baseFleet.replacingOccurrences(
            of: "inputs: {topic: {input: topic}}", with: "inputs: {topic: {input: topic}}\n      dependsOn: [publish]")
        let cycle = try #require(validate(yaml).diagnostics.first { $0.code == .dagCycle })
        #expect(
            cycle.notes.map(\.message) == [
                #""draft-a" depends on "research""#, #""approve" depends on "draft-a""#, #""publish" depends on "approve""#,
            ])
        #expect(cycle.resource?.description == "Workflow/pipeline")
        #expect(cycle.path?.description == "spec.steps[0].dependsOn")
    }

    @Test func duplicateNotePointsAtFirstDefinition() throws {
        let yaml =
            baseFleet
            + "\n---\napiVersion: orl.dev/v1\nkind: Budget\nmetadata: {name: daily}\nspec: {appliesTo: {agents: [writer]}, limits: [{window: month, tokens: 5}]}\n"
        let d = try #require(validate(yaml).diagnostics.first { $0.code == .resourceDuplicate })
        let first = try #require(position(of: "name: daily", in: yaml))
        #expect(d.notes.first?.location?.line == first.line)
    }

    @Test func referencesResolveOnlyInTheirNamespace() {
        let yaml =
            baseFleet + """

                ---
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: outsider, namespace: other}
                spec:
                  model: sim/small
                  runtime: {command: python3}
                """
        let d = validate(yaml).diagnostics.filter { $0.code != .budgetMissing }
        #expect(d.map(\.code) == [.refMissing])
        #expect(d.first?.message == #"ModelProvider "sim" is not defined in namespace "other""#)
    }

    @Test func sameNameInTwoNamespacesIsNoDuplicate() {
        let yaml =
            baseFleet
            + "\n---\napiVersion: orl.dev/v1\nkind: Tool\nmetadata: {name: web-search, namespace: other}\nspec: {type: command, command: {command: x}}\n"
        #expect(validate(yaml).diagnostics.isEmpty)
    }

    @Test func strictTurnsWarningsIntoErrors() {
        let yaml = baseFleet.replacingOccurrences(of: "appliesTo: {agents: [publisher]}", with: "appliesTo: {agents: [publisher, ghost]}")
        #expect(validate(yaml).isValid)
        let strict = validate(yaml, strict: true)
        #expect(!strict.isValid)
        #expect(strict.diagnostics.map(\.severity) == [.error])
    }

    @Test func everyProblemIsReportedSortedByLine() {
        let yaml =
            baseFleet
            .replacingOccurrences(of: "\n  tools: [publish-post]", with: "\n  tools: [nope]")
            .replacingOccurrences(of: "dependsOn: [approve]", with: "dependsOn: [nada]")
            .replacingOccurrences(of: "- id: draft-b", with: "- id: draft-a")
            .replacingOccurrences(of: "dependsOn: [draft-a, draft-b]", with: "dependsOn: [draft-a]")
        let d = validate(yaml).diagnostics
        // publish no longer waits for approve: its input from draft-a is not upstream, and its
        // gated tool is reachable without the gate; its agent no longer declares that tool.
        #expect(
            d.map(\.code) == [
                .refMissing, .dagDuplicateStep, .dagUnknownDependency, .permApprovalMissing, .permToolUndeclared, .dagInputNotUpstream,
            ])
        #expect(d.map { $0.location!.line } == d.map { $0.location!.line }.sorted())
    }

    @Test func aBrokenResourceIsNotReportedAgainWhereItIsReferenced() {
        // publisher breaks its schema; the step and the policy that name it must not
        // add "not defined" errors on top.
        let yaml = baseFleet.replacingOccurrences(of: "\n  tools: [publish-post]", with: "\n  tools: [publish-post]\n  replicas: 2")
        let report = validate(yaml)
        #expect(report.diagnostics.map(\.code) == [.schemaInvalid], "\(report.diagnostics.map(\.message))")
        #expect(report.resourceCount == 10)
        #expect(report.fleet.unreadable == [ResourceID(kind: "Agent", name: "publisher")])
    }

    @Test func approvalStepNeedsNoAgent() {
        // The base fleet's approve step has no agent and must not be reported.
        #expect(!validate(baseFleet).diagnostics.contains { $0.message.contains("approve") })
    }
}
