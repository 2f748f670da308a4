public import OrlJSON

/// What a change means beyond the permission diff, for a reviewer approving it: what a
/// gained permission lets the agent do, which agents a changed Tool reaches, and what
/// moving an agent to another model or provider costs. Each is marked when it
/// escalates, which `--fail-on-escalation` and SARIF report.
extension Review {
    /// A Tool whose behaviour changed (type, endpoint, command, capabilities, risk, data
    /// classes), with the agents that can call it in head.
    public struct ToolChange: Sendable, Hashable {
        public var tool: ResourceID
        /// `capabilities +code-execution`, `risk medium → critical`, `type http → command`.
        public var changes: [String]
        /// Agents that declare it and may use it, each marked when no approval gate covers it.
        public var agents: [String]
        /// It gained a capability or its risk went up.
        public var escalates: Bool
        public var location: SourceLocation?

        /// `Tool/shell: type http → command; capabilities +code-execution. Agents that can call it: echo (no approval gate)`.
        public var message: String {
            let who = agents.isEmpty ? "no agent can call it" : "agents that can call it: " + agents.joined(separator: ", ")
            return "\(tool): \(changes.joined(separator: "; ")). \(who)"
        }
    }

    /// An agent whose model, or the provider behind it, changed.
    public struct ModelChange: Sendable, Hashable {
        public var agent: ResourceID
        public var before: String
        public var after: String
        /// The provider changed, or a price went up.
        public var escalates: Bool
        public var location: SourceLocation?

        public var message: String { "\(agent): \(before) → \(after)" }
    }

    /// Gains, loosened budgets, escalating tool and model changes: what
    /// `--fail-on-escalation` fails on.
    public var escalations: Int {
        gained + budgets.count(where: \.loosens) + tools.count(where: \.escalates) + models.count(where: \.escalates)
    }

    // MARK: What a gained permission means

    /// For a permission an agent gains in head: the tool's capabilities and risk and
    /// whether an approval gate covers it, the model's provider and price, and whether
    /// it comes through a wildcard.
    static func meaning(of kind: PermissionKind, _ value: String, agent: ResourceID, head: Fleet, after: EffectivePermissions)
        -> [String]
    {
        var details: [String] = []
        switch kind {
        case .tool:
            if let tool = head.resource(.tool, value, namespace: agent.namespace)?.tool {
                details.append(Self.describe(tool))
            }
            let gates = after.approvalRules(forTool: value)
            details.append(
                gates.isEmpty
                    ? "no approval gate"
                    : "behind an approval gate (\(Array(Set(gates.map(\.policy.description))).sorted().joined(separator: ", ")))")
        case .model:
            if let described = Self.describeModel(value, namespace: agent.namespace, in: head) { details.append(described) }
        default:
            break
        }
        let decision = after.decide(kind, value)
        if decision.isAllowed, decision.rules.allSatisfy({ $0.pattern.contains("*") }), let rule = decision.rules.first {
            details.append("through the wildcard \(Diagnostic.quoted(rule.pattern)) of \(rule.policy)")
        }
        return details
    }

    /// `command tool; capabilities: code-execution, filesystem; risk: critical`.
    static func describe(_ tool: ToolSpec) -> String {
        let capabilities =
            tool.capabilities.isEmpty
            ? "no declared capabilities" : "capabilities: " + tool.capabilities.map(\.rawValue).joined(separator: ", ")
        return "\(tool.type.rawValue) tool; \(capabilities); risk: \(tool.risk.rawValue)"
    }

    /// `openai/gpt-4o (openai provider, $2.5/$10 per 1M tokens in/out)`; nil when it does not resolve.
    static func describeModel(_ model: String, namespace: String, in fleet: Fleet) -> String? {
        let parts = model.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2, let provider = fleet.resource(.modelProvider, parts[0], namespace: namespace)?.modelProvider else {
            return nil
        }
        var kind = "\(provider.apiStyle.rawValue) provider"
        if let url = provider.baseURL { kind += " at \(url)" }
        guard let pricing = provider.model(named: parts[1])?.pricing else { return "\(model) (\(kind))" }
        return "\(model) (\(kind), \(money(pricing.input))/\(money(pricing.output)) per 1M tokens in/out)"
    }

    // MARK: Tools

    static func toolChanges(base: Fleet, head: Fleet) -> [ToolChange] {
        let engine = PolicyEngine(head)
        var changes: [ToolChange] = []
        for resource in head.resources(of: .tool) {
            guard let new = resource.tool, let old = base[resource.id]?.tool else { continue }
            var what: [String] = []
            if old.type != new.type { what.append("type \(old.type.rawValue) → \(new.type.rawValue)") }
            if old.http?.url != new.http?.url, let url = new.http?.url { what.append("url \(old.http?.url ?? "-") → \(url)") }
            if old.command != new.command, let command = new.command {
                let before = old.command.map { ([$0.command] + $0.args).joined(separator: " ") } ?? "-"
                what.append("command \(before) → \(([command.command] + command.args).joined(separator: " "))")
            }
            let added = new.capabilities.filter { !old.capabilities.contains($0) }
            let removed = old.capabilities.filter { !new.capabilities.contains($0) }
            if !added.isEmpty || !removed.isEmpty {
                what.append(
                    "capabilities " + (added.map { "+\($0.rawValue)" } + removed.map { "-\($0.rawValue)" }).joined(separator: " "))
            }
            if old.risk != new.risk { what.append("risk \(old.risk.rawValue) → \(new.risk.rawValue)") }
            let classesAdded = new.dataClasses.filter { !old.dataClasses.contains($0) }
            let classesRemoved = old.dataClasses.filter { !new.dataClasses.contains($0) }
            if !classesAdded.isEmpty || !classesRemoved.isEmpty {
                what.append("data classes " + (classesAdded.map { "+\($0)" } + classesRemoved.map { "-\($0)" }).joined(separator: " "))
            }
            guard !what.isEmpty else { continue }
            let name = resource.metadata.name
            let agents = head.resources(of: .agent, namespace: resource.metadata.namespace).compactMap { agent -> String? in
                guard agent.agent?.tools.contains(where: { $0.value == name }) == true else { return nil }
                let permissions = engine.permissions(of: agent.id)
                guard permissions.permits(.tool, name) else { return nil }
                return agent.metadata.name + (permissions.approvalRules(forTool: name).isEmpty ? " (no approval gate)" : "")
            }
            changes.append(
                ToolChange(
                    tool: resource.id, changes: what, agents: agents,
                    escalates: !added.isEmpty || new.risk > old.risk || old.type != new.type || !classesAdded.isEmpty,
                    location: resource.nameLocation))
        }
        return changes
    }

    // MARK: Models

    static func modelChanges(base: Fleet, head: Fleet) -> [ModelChange] {
        var changes: [ModelChange] = []
        for agent in head.resources(of: .agent) {
            guard let new = agent.agent, let old = base[agent.id]?.agent else { continue }
            let namespace = agent.metadata.namespace
            let before = describeModel(old.model.value.description, namespace: namespace, in: base) ?? old.model.value.description
            let after = describeModel(new.model.value.description, namespace: namespace, in: head) ?? new.model.value.description
            guard before != after else { continue }
            let oldProvider = base.resource(.modelProvider, old.model.value.provider, namespace: namespace)?.modelProvider
            let newProvider = head.resource(.modelProvider, new.model.value.provider, namespace: namespace)?.modelProvider
            let oldPrice = oldProvider?.model(named: old.model.value.model)?.pricing
            let newPrice = newProvider?.model(named: new.model.value.model)?.pricing
            let dearer = (newPrice?.input ?? 0) > (oldPrice?.input ?? 0) || (newPrice?.output ?? 0) > (oldPrice?.output ?? 0)
            let moved =
                old.model.value.provider != new.model.value.provider || oldProvider?.apiStyle != newProvider?.apiStyle
                || oldProvider?.baseURL != newProvider?.baseURL
            changes.append(
                ModelChange(agent: agent.id, before: before, after: after, escalates: dearer || moved, location: new.model.location))
        }
        return changes
    }
}

extension Review {
    /// The rule SARIF files escalations under: not a problem of head's manifests (those
    /// are diagnostics), but what a reviewer must look at before approving.
    public static let escalationRule = DiagnosticInfo(
        code: DiagnosticCode("review.escalation"), title: "Escalation under review", severities: [.warning],
        summary:
            "The change gives an agent more than it had: a permission gained or an approval gate dropped, a budget loosened, a tool gaining a capability or risk, or a move to another provider or a dearer model.",
        help: "Check that the escalation is intended; `orlctl review --fail-on-escalation` fails a check on it.")

    /// Every escalation as one line and its place, for SARIF and the like.
    public var escalationItems: [(message: String, location: SourceLocation?)] {
        var items: [(String, SourceLocation?)] = []
        for change in permissions where change.change == .gained {
            let details = change.details.isEmpty ? "" : " (" + change.details.joined(separator: "; ") + ")"
            items.append(("\(change.agent) gains \(change.subject): \(change.cause)\(details)", change.location))
        }
        for change in budgets where change.loosens { items.append(("budget loosened: \(change.message)", change.location)) }
        for change in tools where change.escalates { items.append((change.message, change.location)) }
        for change in models where change.escalates { items.append(("model: \(change.message)", change.location)) }
        return items
    }
}
