import ArgumentParser
import Foundation
import OrlCore
import OrlYAML

/// The static audit over many large workflows, in process, so the figure is the audit's
/// own and not parsing's.
struct AuditBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Time the policy audit of W workflows of S steps (chains with diamonds, gates, data classes)."
    )

    @Option(help: "How many workflows.")
    var workflows = 1_000

    @Option(help: "Steps per workflow.")
    var steps = 100

    @Option(help: "How many timed runs (the median is reported).")
    var runs = 5

    @Flag(
        help:
            "Instead: one workflow with bounded patterns (a 10-way route, a 20-worker round of 5 rounds, a 3-round writer/reviewer loop, fallbacks), then each bound doubled, to show how the audit grows."
    )
    var patterns = false

    func run() throws {
        if patterns { return try PatternAuditBench(runs: runs).run() }
        let yaml = AuditFleet(workflows: workflows, steps: steps).yaml()
        let clock = ContinuousClock()
        var start = clock.now
        let parsed = YAMLParser(limits: .init(maxFileBytes: Int.max)).parse(yaml, file: "bench.yaml")
        let read = ManifestReader().read(parsed)
        let parse = clock.now - start
        guard read.diagnostics.isEmpty else {
            throw ValidationError("the synthetic fleet does not read cleanly: \(read.diagnostics.prefix(3).map(\.message))")
        }
        start = clock.now
        let report = ManifestValidation.validate(read)
        let validate = clock.now - start
        guard report.isValid else {
            throw ValidationError("the synthetic fleet is not valid: \(report.diagnostics.prefix(3).map(\.message))")
        }

        var audits: [Duration] = []
        for _ in 0..<runs {
            start = clock.now
            let diagnostics = PolicyAudit.run(report.fleet, engine: PolicyEngine(report.fleet))
            audits.append(clock.now - start)
            precondition(diagnostics.isEmpty, "the synthetic fleet must pass the audit")
        }
        audits.sort()
        let edges = report.fleet.resources(of: .workflow).reduce(0) { total, workflow in
            total + WorkflowGraph(workflow.workflow!).dependencies.reduce(0) { $0 + $1.count }
        }
        print(
            "audit: \(workflows) workflows × \(steps) steps (\(workflows * steps) steps, \(edges) edges), \(report.resourceCount) resources"
        )
        print("parse and read: \(parse.seconds) s; all cross-resource checks and the audit: \(validate.seconds) s")
        print("policy audit alone: median \(audits[audits.count / 2].seconds) s over \(runs) runs (min \(audits.first!.seconds) s)")
    }
}

extension Duration {
    var seconds: String { String(format: "%.3f", Double(components.seconds) + Double(components.attoseconds) / 1e18) }
    var milliseconds: String { String(format: "%.1f", Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15) }
}

/// Workflows shaped like real ones: mostly chains, with a fan-out and fan-in every few
/// steps, an approval gate before the gated tool, inputs that reach back several
/// steps, and tools that carry data classes, so every rule of the audit does work.
struct AuditFleet {
    var workflows: Int
    var steps: Int
    let agents = 20

    /// The simulated provider and the data-carrying lookup tool every audit benchmark uses.
    static let providerAndLookup = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec: {apiStyle: simulated, models: [{name: small, pricing: {input: 0.15, output: 0.6}}]}
        ---
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: lookup}
        spec: {type: http, http: {url: "https://crm.example.com"}, dataClasses: [internal, pii]}
        ---
        """ + "\n"

    func yaml() -> String {
        var out =
            Self.providerAndLookup + """
                apiVersion: orl.dev/v1
                kind: Tool
                metadata: {name: search}
                spec: {type: http, http: {url: "https://search.example.com"}, dataClasses: [public]}
                ---
                apiVersion: orl.dev/v1
                kind: Tool
                metadata: {name: send}
                spec: {type: command, command: {command: send}, capabilities: [egress, irreversible]}
                ---
                apiVersion: orl.dev/v1
                kind: Policy
                metadata: {name: fleet}
                spec:
                  appliesTo: {selector: {matchLabels: {team: bench}}}
                  allow:
                    tools: [lookup, search, send]
                    models: ["sim/*"]
                    handoffs: ["*"]
                    dataClasses: [public, internal, pii]
                    egress: [public, internal, pii]
                  requireApproval: {tools: [send]}
                ---
                apiVersion: orl.dev/v1
                kind: Budget
                metadata: {name: fleet}
                spec:
                  appliesTo: {selector: {matchLabels: {team: bench}}}
                  limits: [{window: day, usd: 1000000}]

                """
        for a in 0..<agents {
            out += """
                ---
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: agent-\(a), labels: {team: bench}}
                spec: {model: sim/small, runtime: {command: python3}, tools: [lookup, search, send]}

                """
        }
        for w in 0..<workflows {
            out += "---\napiVersion: orl.dev/v1\nkind: Workflow\nmetadata: {name: wf-\(w)}\nspec:\n  steps:\n"
            for s in 0..<steps {
                let id = "s\(s)"
                if s % 10 == 9 {
                    // A gate closes each block of ten, so what follows may use `send`.
                    out += "    - {id: \(id), approval: {}, dependsOn: [\(deps(s))]}\n"
                    continue
                }
                let tools = s % 10 == 0 && s > 0 ? "[send]" : s % 3 == 0 ? "[lookup]" : "[search]"
                let input = s >= 4 ? ", inputs: {back: {step: s\(s - 4)}}" : ""
                out +=
                    "    - {id: \(id), agent: agent-\((w + s) % agents), tools: \(tools), maxTokens: 1000\(s == 0 ? "" : ", dependsOn: [\(deps(s))]")\(input)}\n"
            }
        }
        return out
    }

    /// Step s waits for s-1, and in the middle of each block two parallel branches
    /// (s-1 and s-2) join: a diamond.
    private func deps(_ s: Int) -> String {
        s % 10 == 5 || s % 10 == 9 ? "s\(s - 1), s\(s - 2)" : "s\(s - 1)"
    }
}
