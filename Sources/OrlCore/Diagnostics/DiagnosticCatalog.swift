/// What a diagnostic code means and what to do about it: the one description of every
/// code. `orlctl validate -o sarif` publishes it as SARIF rules, and the table in
/// docs/diagnostics.md mirrors it row for row (a test compares them), so the help a
/// user sees in GitHub code scanning and in the docs is the same text.
public struct DiagnosticInfo: Sendable, Hashable {
    public var code: DiagnosticCode
    /// A few words, as a heading: "Dependency cycle".
    public var title: String
    /// The severities the code is reported with, the usual one first.
    public var severities: [Diagnostic.Severity]
    /// What the problem is. Markdown (inline code only).
    public var summary: String
    /// What to do about it. Markdown (inline code only).
    public var help: String

    /// `DagCycle` for `dag.cycle`: the identifier-like name SARIF rules carry.
    /// The row docs/diagnostics.md has for this code (scripts/gen-docs writes the table).
    public var markdownRow: String {
        "| `\(code)` | \(severities.map(\.rawValue).joined(separator: " / ")) | **\(title).** \(summary) | \(help) |"
    }

    public var name: String {
        code.rawValue.split(whereSeparator: { $0 == "." || $0 == "-" }).map { $0.prefix(1).uppercased() + $0.dropFirst() }
            .joined()
    }

    /// Markdown as plain text: the catalog only uses inline code, so dropping the
    /// backticks is enough.
    public static func plainText(_ markdown: String) -> String {
        markdown.replacing("`", with: "")
    }
}

extension DiagnosticCode {
    /// The catalog entry for this code. A code without one (a defect a test catches)
    /// still gets a usable entry rather than crashing a report.
    public var info: DiagnosticInfo {
        DiagnosticCode.catalogIndex[self]
            ?? DiagnosticInfo(code: self, title: rawValue, severities: [.error], summary: rawValue, help: "See docs/diagnostics.md.")
    }

    private static let catalogIndex: [DiagnosticCode: DiagnosticInfo] = Dictionary(
        uniqueKeysWithValues: catalog.map { ($0.code, $0) })

    /// Every code, in the order docs/diagnostics.md lists them: by the stage that finds
    /// them, as a reader meets them.
    public static let catalog: [DiagnosticInfo] = [
        DiagnosticInfo(
            code: .fileUnreadable, title: "Unreadable file", severities: [.error],
            summary: "The file is not UTF-8 text: UTF-16, invalid UTF-8 bytes, or NUL bytes.",
            help: "Save it as UTF-8."),
        DiagnosticInfo(
            code: .yamlSyntax, title: "YAML syntax error", severities: [.error],
            summary:
                "The file is not valid YAML (or JSON). The documents before the error in the same file are still read; the broken one and those after it are not.",
            help: "Fix the syntax at the reported line and column. Tabs cannot indent YAML."),
        DiagnosticInfo(
            code: .yamlDuplicateKey, title: "Duplicate key", severities: [.error],
            summary:
                "A mapping has the same key twice. Reported at each repeated key, with a note at the first. YAML parsers differ on which one wins, so orl refuses both.",
            help: "Remove or rename one of them."),
        DiagnosticInfo(
            code: .yamlLimit, title: "Size, depth or alias limit", severities: [.error],
            summary:
                "A file is over 4 MiB, nests deeper than 100 levels, its aliases expand to more than 100,000 nodes (an alias \"bomb\"), or it has more than 100 problems. Reading of the file stops there, so time and memory stay bounded; the documents before that point are kept.",
            help: "Split the file, flatten the structure, or expand fewer aliases."),
        DiagnosticInfo(
            code: .yamlUnsupported, title: "Unsupported YAML construct", severities: [.error],
            summary:
                "A construct orl does not accept in manifests: a mapping or sequence used as a key, an application tag such as `!Ref`, a value that contradicts its tag (`!!int abc`).",
            help: "Use plain scalar keys and standard values."),
        DiagnosticInfo(
            code: .resourceInvalid, title: "Not a resource", severities: [.error],
            summary: "A document is not a resource: not a mapping, or missing `apiVersion` or `kind`.",
            help: "Give every document `apiVersion: orl.dev/v1`, `kind`, `metadata` and `spec`."),
        DiagnosticInfo(
            code: .resourceUnknownAPIVersion, title: "Unknown apiVersion", severities: [.error],
            summary: "`apiVersion` is not `orl.dev/v1`.",
            help: "Use `orl.dev/v1`."),
        DiagnosticInfo(
            code: .resourceUnknownKind, title: "Unknown kind", severities: [.error],
            summary: "`kind` is not one of Agent, Tool, ModelProvider, Policy, Budget, Workflow, Alert (a close match is suggested).",
            help: "Fix the kind's spelling."),
        DiagnosticInfo(
            code: .schemaInvalid, title: "Schema violation", severities: [.error],
            summary:
                "The document breaks its kind's JSON Schema (`schemas/KIND.schema.json`): a missing or unknown field (with \"did you mean\"), a wrong type, a value outside its range or enum, a pattern mismatch. The text output prefixes the field's path.",
            help: "Fix the field; the schema's descriptions explain each field."),
        DiagnosticInfo(
            code: .resourceDuplicate, title: "Duplicate resource", severities: [.error],
            summary: "Two documents define the same kind, namespace and name. Reported at the second, with a note at the first.",
            help: "Rename or remove one."),
        DiagnosticInfo(
            code: .refMissing, title: "Missing reference", severities: [.error, .warning],
            summary:
                "A reference does not resolve in the resource's namespace: an Agent's model (`PROVIDER/MODEL`: the provider, or the model in it), an Agent's tool, a step's agent or tool, a step input's run input. A name in a Policy's or Budget's `appliesTo.agents` that does not exist is a warning: the resource is valid but does nothing for that name.",
            help: "Define the missing resource or fix the name (a close match is suggested)."),
        DiagnosticInfo(
            code: .selectorEmpty, title: "Selector matches nothing", severities: [.warning],
            summary: "A Policy's or Budget's label selector matches no Agent, so it grants or caps nothing.",
            help: "Fix the labels on the selector or on the agents."),
        DiagnosticInfo(
            code: .dagDuplicateStep, title: "Duplicate step id", severities: [.error],
            summary: "Two steps of a Workflow have the same `id`.",
            help: "Rename one."),
        DiagnosticInfo(
            code: .dagUnknownDependency, title: "Unknown step dependency", severities: [.error],
            summary: "A step's `dependsOn` (or a step input's `step`) names a step the workflow does not have.",
            help: "Fix the step id."),
        DiagnosticInfo(
            code: .dagCycle, title: "Dependency cycle", severities: [.error],
            summary:
                "Steps depend on each other in a cycle; the message prints it (`a → b → c → a`), with a note for each dependency on the way.",
            help: "Remove one of the dependencies."),
        DiagnosticInfo(
            code: .dagInputNotUpstream, title: "Input not upstream", severities: [.error],
            summary:
                "A step reads the output of a step that does not always finish before it (not among its transitive `dependsOn`), or its own.",
            help: "Add the step to `dependsOn`, directly or through another step."),
        DiagnosticInfo(
            code: .dagPatternInvalid, title: "Invalid route, loop, fallback or delegation", severities: [.error],
            summary:
                "A step's `route`, `loop`, `fallback` or `delegate` cannot be bounded or run as written: a branch names no step of the workflow or the router itself, a step starts two branches, `default` names no branch, a loop's `from` is not upstream of the step that closes it, two loops share a step, a route sits inside a loop, a planner sits inside a loop or also routes, loops or falls back, its pool lists an agent twice, or `maxConcurrent` exceeds `maxTasks`.",
            help: "Fix the construct the message names; docs/patterns.md shows each one."),
        DiagnosticInfo(
            code: .triggerCronInvalid, title: "Invalid cron expression", severities: [.error],
            summary:
                "A `schedule` trigger's `cron` is not a five-field cron expression (`minute hour day-of-month month day-of-week`, UTC) that orl can read: a value out of range, an unknown name, a backwards range, or a date that never comes (`0 0 30 2 *`).",
            help:
                "Fix the field the message names. Fields take `*`, numbers, ranges `a-b`, lists `a,b`, steps `*/n`, and names `jan`-`dec`, `sun`-`sat`."
        ),
        DiagnosticInfo(
            code: .permToolDenied, title: "Tool not allowed", severities: [.error],
            summary:
                "An Agent declares a tool in `spec.tools`, or a workflow step uses one, that the agent's Policies do not allow: a Policy denies it, or none allows it (nothing is allowed by default). Notes point at the denying rules or name the Policies that apply.",
            help:
                "Allow the tool in a Policy that applies to the agent, or stop using it. `orlctl explain agent/NAME --can use tool/TOOL` shows which rules decide."
        ),
        DiagnosticInfo(
            code: .permToolUndeclared, title: "Step uses an undeclared tool", severities: [.error],
            summary: "A workflow step uses a tool that its agent does not list in `spec.tools`.",
            help: "Add the tool to the agent's `spec.tools` (and allow it in a Policy), or remove it from the step."),
        DiagnosticInfo(
            code: .permModelDenied, title: "Model not allowed", severities: [.error],
            summary: "An Agent's `model` is denied by a Policy that applies to it, or no Policy allows it.",
            help:
                "Allow the model (`PROVIDER/MODEL` or `PROVIDER/*`) in a Policy that applies to the agent, or pick an allowed one."),
        DiagnosticInfo(
            code: .permSecretDenied, title: "Secret not allowed", severities: [.error],
            summary: "An Agent asks for a vault secret in `spec.secrets` that its Policies deny or do not allow.",
            help:
                "Allow the secret in a Policy that applies to the agent, or move the credential to the Tool or ModelProvider that needs it."
        ),
        DiagnosticInfo(
            code: .permSecretReserved, title: "Secret reserved for orl", severities: [.error],
            summary:
                "An Agent asks in `spec.secrets` for a vault secret that is a ModelProvider's `apiKeySecret` or a Tool's `credentialSecret`. orl presents those itself (the gateway, the tool call); no agent receives one, whatever its Policies allow.",
            help:
                "Remove it from the agent's `spec.secrets`: orl uses it on the agent's behalf (the gateway sends the provider's key upstream; a tool call carries the tool's credential). Give the agent a secret of its own if it needs one."
        ),
        DiagnosticInfo(
            code: .permUnconfined, title: "Agent runs unconfined", severities: [.warning, .error],
            summary:
                "An Agent sets `spec.runtime.isolation: none`: its process runs as an ordinary process of the controller's user, so it can reach the network, the state directory and other processes directly, past the gateway and the policies. A warning; an error when a Policy that selects the agent sets `requireIsolation: strict`.",
            help:
                "Remove `isolation: none` (strict is the default; see docs/sandbox.md), offering the paths the agent needs with `spec.runtime.mounts`."
        ),
        DiagnosticInfo(
            code: .permHandoffDenied, title: "Handoff not allowed", severities: [.error],
            summary:
                "A workflow passes one agent's output to another agent (directly, or through approval gates) but the sender's Policies do not allow handing off to the receiver.",
            help: "Allow the receiving agent in `allow.handoffs` of a Policy that applies to the sender, or change the DAG."),
        DiagnosticInfo(
            code: .permApprovalMissing, title: "Approval gate missing", severities: [.error],
            summary:
                "A step uses a tool that a Policy puts behind `requireApproval` (by name, capability or risk), but some path through the DAG reaches the step without passing a human approval gate; the message prints that path. An approval step with `onTimeout: approve` is not a human gate unless the Policy sets `acceptTimeoutApproval: true`.",
            help: "Add an `approval` step (with `onTimeout: deny`, the default) that the step depends on, on every path to it."),
        DiagnosticInfo(
            code: .permDataflow, title: "Data class not cleared", severities: [.error],
            summary:
                "Data of a class (from a tool's `dataClasses`) reaches a step whose agent is not cleared for it (`dataClasses`), or a step can send it out through an `egress` tool without leave (`egress`). The message prints the route the data takes.",
            help: "Clear the agent for the class in a Policy, keep the data away from the step, or drop the egress tool."),
        DiagnosticInfo(
            code: .permRiskyUngated, title: "Risky tool without a gate", severities: [.warning],
            summary:
                "A workflow step uses a tool that is `irreversible`, has `code-execution` or is of `risk: critical`, some path reaches the step without a human approval gate, and no Policy requires one. An approval step with `onTimeout: approve` is not a human gate.",
            help:
                "Put an `approval` step before it, or make the gate a rule: `requireApproval: {capabilities: [irreversible, code-execution]}` or `{risk: critical}` in a Policy. `validate --strict` fails on it."
        ),
        DiagnosticInfo(
            code: .permLethalTrifecta, title: "Untrusted content, private data and egress meet", severities: [.warning],
            summary:
                "An agent (or a workflow step, with what reaches it through the DAG) can read content from a Tool with `untrustedOutput: true`, holds data of a class, and can send out through an `egress` tool, with no human approval gate between: a prompt injection in the untrusted content can make it send the data out (the lethal trifecta).",
            help:
                "Take one of the three away from the agent, or gate the egress tool: `requireApproval: {capabilities: [egress]}` in a Policy, with an `approval` step (onTimeout: deny) before the step that sends."
        ),
        DiagnosticInfo(
            code: .permHandoffReach, title: "Handoffs carry data to an agent not cleared for it", severities: [.warning],
            summary:
                "Handoffs are transitive: if A may hand off to B and B to C, what A reads can reach C. An agent reads data of a class (a tool it may call returns it), and the Policies' `handoffs` let it travel, directly or through other agents, to an agent whose Policies do not clear it for the class. The message prints the route; the location is the rule allowing the last hop.",
            help: "Clear the receiving agent for the class (`allow.dataClasses`), or remove a handoff on the route."),
        DiagnosticInfo(
            code: .policyUnmatched, title: "Policy entry matches nothing", severities: [.warning],
            summary:
                "A Policy's `allow`, `deny` or `requireApproval` entry names a tool, model or agent that its namespace does not define, or a secret or data class that nothing there uses but that is close to one that is (a likely typo). A misspelt deny restricts nothing while a `*` allow still grants the real name.",
            help: "Fix the name (a suggestion is shown when one is close), or remove the entry."),
        DiagnosticInfo(
            code: .budgetMissing, title: "No budget", severities: [.warning],
            summary: "No Budget covers an Agent, so nothing caps what it spends on models.",
            help: "Add a Budget whose `appliesTo` selects the agent."),
        DiagnosticInfo(
            code: .budgetInfeasible, title: "Budget too small for a run", severities: [.warning],
            summary:
                "One run of a workflow can cost more than a Budget that covers its agents allows (every attempt of every step using its `maxTokens`, at the model's dearer price).",
            help: "Raise the budget, lower `maxTokens` or retries, or use a cheaper model."),
        DiagnosticInfo(
            code: .mcpUnpinned, title: "MCP server not pinned", severities: [.warning],
            summary:
                "A Tool of type `mcp` has no pinned tool definitions in `mcp.lock.json` next to the manifests, so agents can call none of its tools: orl only forwards calls to definitions it has pinned.",
            help: "Run `orlctl mcp pin -f DIR` against the server, review the lock file and commit it with the manifests."),
        DiagnosticInfo(
            code: .mcpPinInvalid, title: "Invalid MCP pin", severities: [.error],
            summary:
                "An entry of `mcp.lock.json` is malformed, or a tool's `hash` does not match its definition (the file was edited by hand).",
            help: "Pin again with `orlctl mcp pin -f DIR` rather than editing the lock file."),
        DiagnosticInfo(
            code: .mcpPinChanged, title: "MCP tool definition changed", severities: [.warning],
            summary:
                "Reported by `orlctl review` only: the change pins a new or altered definition of an MCP tool (its description, schemas or annotations). A description is what the model reads, so a changed one can change what agents do with the tool (the \"rug pull\").",
            help: "Read the new definition in `mcp.lock.json` before merging; revert the pin if the server's change is not wanted."),
    ]
}
