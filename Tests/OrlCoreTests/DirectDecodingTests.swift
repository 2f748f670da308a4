import Foundation
import OrlCore
import OrlJSON
import OrlYAML
import Testing

/// The hot kinds are read straight from their nodes (`DirectDecoding`) and fall back to
/// `Decodable` at anything unexpected: both paths must give the same resources and the
/// same report, positions included, on every example, on the fixtures and on fleets
/// edited at random.
@Suite struct DirectDecodingTests {
    static func report(_ sources: [ParsedSource], direct: Bool) -> ValidationReport {
        var reader = ManifestReader()
        reader.decodesDirectly = direct
        return ManifestValidation.validate(sources, reader: reader)
    }

    static func expectSame(_ sources: [ParsedSource]) {
        let direct = report(sources, direct: true)
        let generic = report(sources, direct: false)
        #expect(direct.diagnostics == generic.diagnostics)
        #expect(direct.resourceCount == generic.resourceCount)
        let pairs = zip(direct.fleet.resources, generic.fleet.resources)
        #expect(direct.fleet.resources.count == generic.fleet.resources.count)
        for (a, b) in pairs {
            #expect(a.id == b.id)
            #expect(a.metadata == b.metadata)
            #expect(Self.same(a.spec, b.spec), "\(a.id)")
            // What equality leaves out: where each located value was written.
            #expect(String(reflecting: a.spec) == String(reflecting: b.spec) || a.kind == .workflow, "\(a.id)")
        }
    }

    static func same(_ a: Resource.Spec, _ b: Resource.Spec) -> Bool {
        switch (a, b) {
        case (.modelProvider(let x), .modelProvider(let y)): x == y
        case (.tool(let x), .tool(let y)): x == y
        case (.agent(let x), .agent(let y)): x == y
        case (.policy(let x), .policy(let y)): x == y
        case (.budget(let x), .budget(let y)): x == y
        case (.workflow(let x), .workflow(let y)): x == y
        case (.alert(let x), .alert(let y)): x == y
        default: false
        }
    }

    @Test func examplesReadTheSame() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../examples").standardized
        let files = FileManager.default.enumerator(atPath: root.path)!.compactMap { $0 as? String }.filter {
            $0.hasSuffix(".yaml") || $0.hasSuffix(".yml")
        }.sorted()
        #expect(files.count > 20)
        let parser = YAMLParser()
        let sources = try files.map { path in
            parser.parse(try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8), file: path)
        }
        Self.expectSame(sources)
    }

    @Test(arguments: [baseFleet, supportFleet])
    func fixturesReadTheSame(_ yaml: String) {
        Self.expectSame([YAMLParser().parse(yaml, file: "fleet.yaml")])
    }

    @Test(arguments: 0..<6)
    func editedFleetsReadTheSame(seed: Int) {
        var g = IncrementalValidationTests.Generator(state: UInt64(seed) &* 104_729)
        var files = IncrementalValidationTests.fleet(&g)
        var serial = 0
        let parser = YAMLParser()
        for _ in 0..<8 {
            IncrementalValidationTests.edit(&files, &g, serial: &serial)
            Self.expectSame(files.map { parser.parse(IncrementalValidationTests.render($0), file: $0.path) })
        }
    }

    /// Values the schemas accept but the model reads differently, nulls for optional
    /// fields, defaults, every optional field of the hot kinds written out.
    @Test func unusualButValidDocumentsReadTheSame() {
        let yaml = """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: p, namespace: ns, labels: {a: "1", b: "2"}, annotations: {}}
            spec:
              apiStyle: openai
              description: null
              baseURL: https://x.example.com
              apiKeySecret: key
              timeout: 1h30m
              models:
                - {name: m, contextWindow: 1000, maxOutputTokens: null, pricing: {input: 1, output: 2.5}}
            ---
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: t, namespace: ns, labels: {b: "2", a: "1"}}
            spec:
              type: command
              command: {command: /bin/echo, args: [a, b]}
              capabilities: [filesystem, code-execution]
              dataClasses: [pii]
              risk: high
              untrustedOutput: true
              timeout: 5s
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: a, namespace: ns, labels: {a: "1", b: "2"}}
            spec:
              model: p/m
              tools: [t]
              suspend: true
              maxTokensPerCall: 10
              secrets: [{name: key}, {name: other-key, env: OTHER}]
              runtime:
                command: /bin/true
                args: []
                env: [{name: A, value: b}]
                workingDir: /tmp
                restartPolicy: Never
                gracePeriod: 1s
                isolation: none
                mounts: [{path: /data, writable: true}]
                nodeSelector: {zone: a}
                resources: {memory: 1Gi, openFiles: 10, cpuTime: 1m, pids: 5, cpu: 0.5}
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: pol, namespace: ns}
            spec:
              appliesTo:
                agents: [a]
                selector:
                  matchLabels: {a: "1"}
                  matchExpressions: [{key: b, operator: In, values: ["2"]}, {key: c, operator: DoesNotExist}]
              allow: {tools: [t], models: [p/*], secrets: [key], handoffs: [a], dataClasses: [pii], egress: [pii]}
              deny: null
              requireIsolation: strict
              requireApproval: {tools: [t], capabilities: [filesystem], risk: high, acceptTimeoutApproval: true}
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: b, namespace: ns}
            spec:
              appliesTo: {selector: {matchLabels: {a: "1"}}}
              scope: perAgent
              limits: [{window: day, usd: 1.25}, {window: month, tokens: 100}]
              onExceeded: alert
              alertThresholds: [50]
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: w, namespace: ns}
            spec:
              description: d
              triggers: [{type: manual}, {type: schedule, cron: "0 9 * * *"}]
              inputs: [{name: topic, required: true, default: x, description: y}]
              steps:
                - id: one
                  agent: a
                  tools: [t]
                  prompt: p
                  maxTokens: 5
                  timeout: 1m
                  heartbeatTimeout: 10s
                  retry: {attempts: 2}
                  continueOnFailure: true
                  inputs: {topic: {input: topic}, fixed: {value: [1, {a: b}]}}
                  publish: [news]
                - id: gate
                  dependsOn: [one]
                  approval: {message: ok?, timeout: 1h}
                - id: two
                  agent: a
                  dependsOn: [gate]
                  subscribe: [news]
                  inputs: {notes: {step: one, key: k}}
            """
        Self.expectSame([YAMLParser().parse(yaml, file: "unusual.yaml")])
    }
}
