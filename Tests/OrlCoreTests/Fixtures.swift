import Foundation
import OrlCore
import OrlJSON
import OrlYAML
import Testing

/// Validates manifests written inline, as `orlctl validate` would a file of that name.
func validate(_ yaml: String, file: String = "fleet.yaml", strict: Bool = false) -> ValidationReport {
    ManifestValidation.validate([YAMLParser().parse(yaml, file: file)], strict: strict)
}

/// The 1-based line and column where `needle` first appears in `text` at or after
/// the line holding `after`, so tests can say where a diagnostic must point without
/// counting lines by hand.
func position(of needle: String, in text: String, after: String? = nil) -> (line: Int, column: Int)? {
    var started = after == nil
    for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        if !started, let after, line.contains(after) { started = true }
        guard started, let range = line.range(of: needle) else { continue }
        return (i + 1, line.distance(from: line.startIndex, to: range.lowerBound) + 1)
    }
    return nil
}

/// A small fleet that passes every check, the audit included: one provider, two tools,
/// three agents, two policies, a budget and a diamond-shaped workflow with an approval
/// gate. Cases add to it or change it.
let baseFleet = """
    apiVersion: orl.dev/v1
    kind: ModelProvider
    metadata: {name: sim}
    spec:
      apiStyle: simulated
      models:
        - name: small
          pricing: {input: 0.15, output: 0.6}
    ---
    apiVersion: orl.dev/v1
    kind: Tool
    metadata: {name: web-search}
    spec:
      type: http
      http: {url: "https://search.example.com/q"}
      capabilities: [network]
    ---
    apiVersion: orl.dev/v1
    kind: Tool
    metadata: {name: publish-post}
    spec:
      type: command
      command: {command: /usr/local/bin/publish}
      capabilities: [egress, irreversible]
      risk: high
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata:
      name: researcher
      labels: {team: content}
    spec:
      model: sim/small
      runtime: {command: python3}
      tools: [web-search]
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata:
      name: writer
      labels: {team: content}
    spec:
      model: sim/small
      runtime: {command: python3}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: publisher}
    spec:
      model: sim/small
      runtime: {command: python3}
      tools: [publish-post]
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: content-team}
    spec:
      appliesTo:
        agents: [publisher]
        selector: {matchLabels: {team: content}}
      allow: {tools: [web-search], models: ["sim/*"], handoffs: [writer, publisher]}
      requireApproval: {tools: [publish-post]}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: publishing}
    spec:
      appliesTo: {agents: [publisher]}
      allow: {tools: [publish-post]}
    ---
    apiVersion: orl.dev/v1
    kind: Budget
    metadata: {name: daily}
    spec:
      appliesTo: {selector: {matchLabels: {team: content}}, agents: [publisher]}
      limits: [{window: day, usd: 10}]
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: pipeline}
    spec:
      inputs: [{name: topic}]
      steps:
        - id: research
          agent: researcher
          inputs: {topic: {input: topic}}
        - id: draft-a
          agent: writer
          dependsOn: [research]
        - id: draft-b
          agent: writer
          dependsOn: [research]
        - id: approve
          approval: {message: Publish?}
          dependsOn: [draft-a, draft-b]
        - id: publish
          agent: publisher
          dependsOn: [approve]
          tools: [publish-post]
          inputs: {post: {step: draft-a, key: text}}
    """
