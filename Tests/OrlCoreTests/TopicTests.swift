import Foundation
import OrlCore
import OrlJSON
import Testing

/// Blackboard topics (examples/blackboard): the audit treats every publisher →
/// subscriber pair as a step input, and the run refuses any topic a step does not declare.
@Suite struct TopicTests {
    static let fleet: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("examples/blackboard/fleet.yaml"), encoding: .utf8)) ?? ""
    }()

    static func edited(_ edits: [(String, String)]) throws -> String {
        var yaml = fleet
        for (old, new) in edits {
            try #require(yaml.contains(old), "the example has no \(old)")
            yaml = yaml.replacingOccurrences(of: old, with: new)
        }
        return yaml
    }

    @Test func theExamplePassesAndEachSubscriberReadsFromEachPublisher() throws {
        let report = validate(Self.fleet, strict: true)
        #expect(report.diagnostics.isEmpty, "\(report.diagnostics.map { "\($0.code): \($0.message)" })")
        let spec = try #require(report.fleet.resources(of: .workflow).first?.workflow)
        let graph = WorkflowGraph(spec)
        let names = { (i: Int) in graph.topicSources[i].map { "\(spec.steps[$0.step].id.value) via \($0.topic)" } }
        #expect(spec.steps.map(\.id.value) == ["gather", "watch", "write"])
        #expect(names(1) == ["gather via findings"] && names(2) == ["gather via findings"] && names(0).isEmpty)
    }

    @Test func aSubscriberThePublisherMayNotHandOffToIsFlagged() throws {
        let diagnostics = validate(try Self.edited([("handoffs: [writer, auditor]", "handoffs: [writer]")])).diagnostics
        let denied = diagnostics.filter { $0.code == .permHandoffDenied }
        #expect(denied.count == 1, "\(diagnostics.map(\.message))")
        #expect(
            denied.first?.message.hasPrefix(
                #"step "watch" reads topic "findings", which step "gather" publishes, but agent "scout" may not hand off to agent "auditor""#
            )
                == true, "\(denied.map(\.message))")
        // Pointed at the subscription.
        #expect(denied.first?.path?.description == "spec.steps[1]")
    }

    @Test func dataClassesFlowThroughTopicsToEverySubscriber() throws {
        let yaml =
            Self.fleet + """
                ---
                apiVersion: orl.dev/v1
                kind: Policy
                metadata: { name: auditor-no-customers, namespace: blackboard }
                spec:
                  appliesTo: { agents: [auditor] }
                  deny: { dataClasses: [customer-data] }

                """
        let flagged = validate(yaml).diagnostics.filter { $0.code == .permDataflow }
        #expect(flagged.count == 1, "\(flagged.map(\.message))")
        #expect(
            flagged.first?.message.contains(
                #"data of class "customer-data" reaches step "watch" (from tool "crm-lookup" in "gather" → topic "findings" → "watch")"#)
                == true, "\(flagged.map(\.message))")
        // Its twin: the writer is cleared, so nothing is said about it.
        #expect(!flagged.contains { $0.message.contains(#"step "write""#) })
    }

    @Test func aTopicNoStepPublishesIsAValidationError() throws {
        let diagnostics = validate(
            try Self.edited([("      subscribe: [findings]\n    - id: write", "      subscribe: [findngs]\n    - id: write")])
        ).diagnostics
        let invalid = diagnostics.filter { $0.code == .dagPatternInvalid }
        #expect(
            invalid.map(\.message) == [
                #"step "watch" subscribes to topic "findngs", which no other step of this workflow publishes (did you mean "findings"?)"#
            ], "\(diagnostics.map(\.message))")
        let gate = validate(
            try Self.edited([
                (
                    "    - id: watch\n      agent: auditor\n      prompt: Check the findings posted so far.\n",
                    "    - id: watch\n      approval: {}\n"
                )
            ])
        ).diagnostics
        #expect(gate.contains { $0.code == .schemaInvalid }, "\(gate.map(\.message))")
    }

    @Test func aStepWritesAndReadsOnlyTheTopicsItDeclares() throws {
        let h = RunHarness(try Self.edited([("namespace: blackboard", "namespace: default")]))
        let run = try h.start("account-brief")
        let gather = try #require(try h.claim("scout"))
        #expect(gather.id.step == "gather" && gather.publish == ["findings"] && gather.subscribe.isEmpty)
        #expect(gather.json.compactRendered().contains(#""publish":["findings"]"#))
        let scout = RunHarness.agent("scout")
        let value = try JSONParser.parse(#"{"account": "acme"}"#, file: "<test>")
        #expect(try h.operations.publish(gather.id, agent: scout, topic: "findings", value: value, now: h.now) == 1)
        #expect(try h.operations.publish(gather.id, agent: scout, topic: "findings", value: value, now: h.now) == 2)

        // Fail closed: a topic the step does not publish, or reads it does not declare.
        #expect {
            try h.operations.publish(gather.id, agent: scout, topic: "secrets", value: value, now: h.now)
        } throws: { ($0 as? RunError)?.kind == .forbidden && "\($0)".contains(#"does not publish topic "secrets""#) }
        #expect {
            try h.operations.read(gather.id, agent: scout, topic: "findings")
        } throws: { ($0 as? RunError)?.kind == .forbidden && "\($0)".contains("it declares no topics in subscribe") }
        // Another agent cannot use the task.
        #expect {
            try h.operations.publish(gather.id, agent: RunHarness.agent("writer"), topic: "findings", value: value, now: h.now)
        } throws: { ($0 as? RunError)?.kind == .forbidden }

        // The auditor's watch runs at once, beside gather, and reads the latest version.
        let watch = try #require(try h.claim("auditor"))
        #expect(watch.id.step == "watch" && watch.subscribe == ["findings"])
        let read = try #require(try h.operations.read(watch.id, agent: RunHarness.agent("auditor"), topic: "findings"))
        #expect(read.version == 2 && read.value == #"{"account":"acme"}"# && read.step == "gather")
        #expect {
            try h.operations.publish(watch.id, agent: RunHarness.agent("auditor"), topic: "findings", value: value, now: h.now)
        } throws: { ($0 as? RunError)?.kind == .forbidden }
        try h.complete(watch)
        try h.complete(gather)
        // A task that has ended writes nothing more.
        #expect {
            try h.operations.publish(gather.id, agent: scout, topic: "findings", value: value, now: h.now)
        } throws: { ($0 as? RunError)?.kind == .conflict }

        let write = try #require(try h.claim("writer"))
        #expect(
            try h.operations.read(write.id, agent: RunHarness.agent("writer"), topic: "findings")?.value == #"{"account":"acme"}"#)
        #expect(write.dataClasses == ["customer-data"], "what it reads through the topic is what it holds")
        try h.complete(write)
        #expect(h.run(run).phase == .succeeded)
    }

    @Test func thePlanKeepsTheTopicsInItsStoredForm() throws {
        let h = RunHarness(try Self.edited([("namespace: blackboard", "namespace: default")]))
        let run = try h.start("account-brief")
        let plan = try #require(h.store.snapshot.plans[run.id])
        #expect(try RunPlan(json: plan.json) == plan)
        #expect(plan.steps.map(\.publish) == [["findings"], [], []] && plan.steps.map(\.subscribe) == [[], ["findings"], ["findings"]])
    }
}
