/// The stable identifier of a kind of problem, in dotted families (`yaml.syntax`,
/// `dag.cycle`). Codes are part of the `-o json` contract and of SARIF rule ids: add
/// new ones, never rename. docs/diagnostics.md documents each.
public struct DiagnosticCode: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }

    public static func < (lhs: DiagnosticCode, rhs: DiagnosticCode) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { rawValue }

    // Reading files.
    /// The file is not UTF-8 text (UTF-16, invalid bytes, NUL bytes).
    public static let fileUnreadable = DiagnosticCode("file.unreadable")

    // Parsing.
    public static let yamlSyntax = DiagnosticCode("yaml.syntax")
    public static let yamlDuplicateKey = DiagnosticCode("yaml.duplicate-key")
    /// A size, depth or alias-expansion limit was hit; parsing of that document stopped.
    public static let yamlLimit = DiagnosticCode("yaml.limit")
    /// A construct orl does not accept in manifests: non-scalar keys, unknown tags.
    public static let yamlUnsupported = DiagnosticCode("yaml.unsupported")

    // Documents and resources.
    public static let resourceInvalid = DiagnosticCode("resource.invalid")
    public static let resourceUnknownAPIVersion = DiagnosticCode("resource.unknown-api-version")
    public static let resourceUnknownKind = DiagnosticCode("resource.unknown-kind")
    public static let resourceDuplicate = DiagnosticCode("resource.duplicate")
    public static let schemaInvalid = DiagnosticCode("schema.invalid")

    // Cross-resource references.
    public static let refMissing = DiagnosticCode("ref.missing")
    public static let selectorEmpty = DiagnosticCode("selector.empty")

    // Workflow DAG structure.
    public static let dagCycle = DiagnosticCode("dag.cycle")
    public static let dagUnknownDependency = DiagnosticCode("dag.unknown-dependency")
    public static let dagDuplicateStep = DiagnosticCode("dag.duplicate-step")
    /// A step reads the output of a step that does not always finish before it.
    public static let dagInputNotUpstream = DiagnosticCode("dag.input-not-upstream")
    /// A route, loop, fallback or delegation whose shape orl cannot bound or run.
    public static let dagPatternInvalid = DiagnosticCode("dag.pattern-invalid")

    // Triggers.
    /// A schedule trigger's cron expression does not parse, or never fires.
    public static let triggerCronInvalid = DiagnosticCode("trigger.cron-invalid")

    // The permission audit: workflows checked against the policies before anything runs.
    public static let permToolDenied = DiagnosticCode("perm.tool-denied")
    public static let permToolUndeclared = DiagnosticCode("perm.tool-undeclared")
    public static let permModelDenied = DiagnosticCode("perm.model-denied")
    public static let permSecretDenied = DiagnosticCode("perm.secret-denied")
    /// An agent asks for a provider's API key or a tool's credential, which only orl uses.
    public static let permSecretReserved = DiagnosticCode("perm.secret-reserved")
    public static let permHandoffDenied = DiagnosticCode("perm.handoff-denied")
    public static let permApprovalMissing = DiagnosticCode("perm.approval-missing")
    public static let permDataflow = DiagnosticCode("perm.dataflow")
    /// A tool that is irreversible, runs code or is of critical risk, used by a step no
    /// human gate stands before, and no Policy asks for one.
    public static let permRiskyUngated = DiagnosticCode("perm.risky-ungated")
    /// Untrusted content, a data class and an egress tool meet with no gate between.
    public static let permLethalTrifecta = DiagnosticCode("perm.lethal-trifecta")
    /// Handoffs (transitively) can carry a data class to an agent not cleared for it.
    public static let permHandoffReach = DiagnosticCode("perm.handoff-reach")
    /// A Policy entry that names no tool, model, agent, secret or data class.
    public static let policyUnmatched = DiagnosticCode("policy.unmatched")
    /// An Agent with `spec.runtime.isolation: none`: its process is not sandboxed.
    public static let permUnconfined = DiagnosticCode("perm.unconfined")

    // Budgets.
    /// An agent no Budget covers: nothing caps its spend.
    public static let budgetMissing = DiagnosticCode("budget.missing")
    /// A workflow's worst case costs more than a budget that covers its agents.
    public static let budgetInfeasible = DiagnosticCode("budget.infeasible")

    // MCP servers.
    /// An MCP server with no pinned tools: agents can call none of them.
    public static let mcpUnpinned = DiagnosticCode("mcp.unpinned")
    /// A lock file entry that is malformed or whose hash does not match its definition.
    public static let mcpPinInvalid = DiagnosticCode("mcp.pin-invalid")
    /// `review`: a pinned MCP tool definition that the change adds or alters.
    public static let mcpPinChanged = DiagnosticCode("mcp.pin-changed")
}
