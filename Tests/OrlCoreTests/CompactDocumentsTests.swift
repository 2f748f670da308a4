import OrlCore
import OrlJSON
import OrlYAML
import Testing

/// `validate` reads resources without keeping their documents (`keepsDocuments`): it must
/// report exactly what reading with them reports, positions included, on fleets edited at
/// random (broken references, schema and YAML errors, duplicates, cycles) and on the
/// fixtures with the audit's findings.
@Suite struct CompactDocumentsTests {
    static func report(_ sources: [ParsedSource], keep: Bool) -> ValidationReport {
        var reader = ManifestReader()
        reader.keepsDocuments = keep
        return ManifestValidation.validate(sources, reader: reader)
    }

    @Test(arguments: 0..<8)
    func editedFleetsReportTheSame(seed: Int) {
        var g = IncrementalValidationTests.Generator(state: UInt64(seed) &* 7919)
        var files = IncrementalValidationTests.fleet(&g)
        var serial = 0
        let parser = YAMLParser()
        for _ in 0..<12 {
            IncrementalValidationTests.edit(&files, &g, serial: &serial)
            let sources = files.map { parser.parse(IncrementalValidationTests.render($0), file: $0.path) }
            let kept = Self.report(sources, keep: true)
            let compact = Self.report(sources, keep: false)
            #expect(compact.diagnostics == kept.diagnostics)
            #expect(compact.resourceCount == kept.resourceCount)
            #expect(compact.fleet.resources.map(\.id) == kept.fleet.resources.map(\.id))
            #expect(compact.fleet.resources.map(\.nameLocation) == kept.fleet.resources.map(\.nameLocation))
            #expect(compact.fleet.resources.map(\.location) == kept.fleet.resources.map(\.location))
            #expect(compact.fleet.resources.map(\.selectorLocation) == kept.fleet.resources.map(\.selectorLocation))
            #expect(compact.fleet.resources.allSatisfy { $0.metadata.annotations.isEmpty })
        }
    }

    /// Without documents, annotations are checked but not kept, on both decoding paths;
    /// with them, both paths keep them.
    @Test(arguments: [true, false])
    func annotationsAreKeptWithTheDocuments(direct: Bool) {
        let yaml = """
            apiVersion: orl.dev/v1
            kind: Tool
            metadata:
              name: search
              labels: {team: a}
              annotations: {orl.dev/owner: someone@example.com, orl.dev/runbook: "https://runbooks.example.com/search"}
            spec: {type: http, http: {url: "https://search.example.com"}}
            """
        let source = YAMLParser().parse(yaml, file: "tool.yaml")
        for keep in [true, false] {
            var reader = ManifestReader()
            reader.keepsDocuments = keep
            reader.decodesDirectly = direct
            let read = reader.read(source)
            #expect(read.diagnostics.isEmpty && read.resources.count == 1)
            let metadata = read.resources.first?.metadata
            // Without the document, only where it starts and where its parts are.
            #expect((read.resources.first?.document["spec"] == nil) == !keep)
            #expect(read.resources.first?.nameLocation == source.documents.first?.root["metadata"]?["name"]?.location)
            #expect(metadata?.labels == ["team": "a"])
            #expect(
                metadata?.annotations
                    == (keep ? ["orl.dev/owner": "someone@example.com", "orl.dev/runbook": "https://runbooks.example.com/search"] : [:]))
        }
    }

    @Test(arguments: [baseFleet, supportFleet])
    func fixturesReportTheSame(_ yaml: String) {
        // An empty selector's place, an agent no budget covers, a typo in a policy.
        let extra = """
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: nobody}
            spec:
              appliesTo:
                selector:
                  matchLabels: {team: nobody}
              deny:
                tools: [web-serch]
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: stray}
            spec:
              model: sim/small
              runtime: {command: /bin/true}
            """
        let sources = [YAMLParser().parse(yaml + "\n" + extra, file: "fleet.yaml")]
        let kept = Self.report(sources, keep: true)
        let compact = Self.report(sources, keep: false)
        #expect(compact.diagnostics == kept.diagnostics)
        #expect(kept.diagnostics.contains { $0.code == .selectorEmpty })
        #expect(kept.diagnostics.contains { $0.code == .policyUnmatched })
    }
}
