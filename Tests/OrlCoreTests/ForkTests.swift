import OrlCore
import OrlJSON
import OrlYAML
import Synchronization
import Testing

/// `Fork` and the cross-resource checks it splits: whichever half ends first, the
/// diagnostics come out as the checks made one after the other report them.
@Suite struct ForkTests {
    /// The base fleet with something for each half to find: a tool no Policy entry
    /// matches (found without the engine), an unknown tool and a denied one (the
    /// references, and the engine's checks of what an agent declares).
    static let findings =
        baseFleet + """

            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: stale}
            spec:
              appliesTo: {agents: [writer]}
              allow: {tools: [retired-tool]}
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: stray, labels: {team: content}}
            spec:
              model: sim/small
              runtime: {command: python3}
              tools: [missing-tool, publish-post]
            """

    static func read() -> ReadManifests {
        ManifestReader().read(YAMLParser().parse(findings, file: "fleet.yaml"))
    }

    /// The other half after `here`, on the caller's thread: the opposite of `inline`.
    static let reversed = Fork { other, here in
        here()
        other()
    }

    @Test func theChecksReportInOneOrderHoweverTheyAreMade() {
        let read = Self.read()
        let inline = ManifestValidation.crossChecks(read)
        let codes = Set(inline.diagnostics.map(\.code))
        #expect(codes.contains(.policyUnmatched), "\(codes)")
        #expect(codes.count >= 3, "\(codes)")
        // The order the checks had when made one after the other in `crossChecks`.
        let fleet = inline.fleet
        let sequential = ReferenceCheck.run(fleet) + WorkflowCheck.run(fleet) + PolicyAudit.run(fleet, engine: PolicyEngine(fleet))
        #expect(Array(inline.diagnostics.suffix(sequential.count)) == sequential)
        #expect(ManifestValidation.crossChecks(read, fork: Self.reversed).diagnostics == inline.diagnostics)
    }

    @Test func bothGivesEachResultAndHeresError() {
        struct Refused: Error {}
        let (a, b) = Fork.inline.both({ 6 * 7 }, { "here" })
        #expect(a == 42 && b == "here")
        let made = Atomic<Int>(0)
        #expect(throws: Refused.self) {
            _ = try Self.reversed.both(
                { _ = made.add(1, ordering: .relaxed) },
                { () throws(Refused) in throw Refused() })
        }
        // The other half ran although `here` failed.
        #expect(made.load(ordering: .relaxed) == 1)
    }
}
