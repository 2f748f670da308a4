import OrlJSON

/// Checks that every reference between resources resolves: Agent → model and tools,
/// Policy and Budget → the agents they name or select.
///
/// References resolve inside the referring resource's namespace.
public enum ReferenceCheck {
    public static func run(_ fleet: Fleet) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        // Whether a label selector matches some agent, by namespace: the Policies and
        // Budgets of a team tend to share one, and each answer looks through the
        // namespace's agents.
        var matched: [String: [LabelSelector: Bool]] = [:]
        for resource in fleet.resources {
            switch resource.spec {
            case .agent(let agent):
                diagnostics += check(agent, of: resource, in: fleet)
            case .policy(let policy):
                diagnostics += check(policy.appliesTo, of: resource, in: fleet, matched: &matched)
            case .budget(let budget):
                diagnostics += check(budget.appliesTo, of: resource, in: fleet, matched: &matched)
            case .modelProvider, .tool, .workflow, .alert:
                break
            }
        }
        return diagnostics
    }

    /// A reference to `kind/name` in `namespace` that did not resolve.
    static func missing(
        _ kind: ResourceKind, _ name: Located<String>, from resource: Resource, path: ValuePath, in fleet: Fleet,
        severity: Diagnostic.Severity = .error, consequence: String = ""
    ) -> Diagnostic {
        let namespace = resource.metadata.namespace
        if kind == .tool, let slash = name.value.firstIndex(of: "/"),
            let server = fleet.resource(.tool, String(name.value[..<slash]), namespace: namespace)
        {
            return mcpToolMissing(name, server: server, from: resource, path: path, severity: severity)
        }
        let candidates = fleet.names(of: kind, namespace: namespace)
        let place = namespace == ResourceID.defaultNamespace ? "" : " in namespace \"\(namespace)\""
        return Diagnostic(
            severity, .refMissing,
            "\(kind.rawValue) \"\(name.value)\" is not defined\(place)\(Suggestion.hint(for: name.value, among: candidates))\(consequence)",
            at: name.location, resource: resource.id, path: path)
    }

    /// `SERVER/TOOL` where SERVER is a Tool: says whether it is an MCP server at all,
    /// whether it is pinned, and which tools it has.
    private static func mcpToolMissing(
        _ name: Located<String>, server: Resource, from resource: Resource, path: ValuePath, severity: Diagnostic.Severity
    ) -> Diagnostic {
        let tool = String(name.value[name.value.index(after: name.value.firstIndex(of: "/")!)...])
        let why: String
        if let spec = server.tool, spec.type == .mcp, let mcp = spec.mcp {
            if mcp.pins.isEmpty {
                why = "MCP server \"\(server.metadata.name)\" has no pinned tools; pin them with orlctl mcp pin -f DIR"
            } else if mcp.pins.contains(where: { $0.name == tool }) {
                why = "MCP server \"\(server.metadata.name)\" does not expose its tool \"\(tool)\" (spec.mcp.tools)"
            } else {
                why =
                    "MCP server \"\(server.metadata.name)\" has no pinned tool \"\(tool)\"\(Suggestion.hint(for: tool, among: mcp.exposed.map(\.name))); if the server has it now, pin again with orlctl mcp pin -f DIR"
            }
        } else {
            why = "Tool \"\(server.metadata.name)\" is not an MCP server (type: mcp), so it has no tool \"\(tool)\""
        }
        return Diagnostic(
            severity, .refMissing, why, at: name.location, resource: resource.id, path: path,
            notes: [.init("\(server.id) is defined here", at: server.nameLocation)])
    }

    private static func check(_ agent: AgentSpec, of resource: Resource, in fleet: Fleet) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        let namespace = resource.metadata.namespace
        let model = agent.model
        let modelPath = ValuePath([.key("spec"), .key("model")])
        let providerName = Located(model.value.provider, at: model.location)
        if let provider = fleet.resource(.modelProvider, model.value.provider, namespace: namespace) {
            if let spec = provider.modelProvider, spec.model(named: model.value.model) == nil {
                let hint = Suggestion.hint(for: model.value.model, among: spec.models.map(\.name))
                diagnostics.append(
                    .error(
                        .refMissing, "ModelProvider \"\(model.value.provider)\" has no model \"\(model.value.model)\"\(hint)",
                        at: model.location, resource: resource.id, path: modelPath,
                        notes: [.init("ModelProvider \"\(model.value.provider)\" is defined here", at: provider.nameLocation)]))
            }
        } else if !fleet.declares(.modelProvider, model.value.provider, namespace: namespace) {
            diagnostics.append(missing(.modelProvider, providerName, from: resource, path: modelPath, in: fleet))
        }
        for (i, tool) in agent.tools.enumerated() where !fleet.declaresTool(tool.value, namespace: namespace) {
            diagnostics.append(missing(.tool, tool, from: resource, path: ValuePath([.key("spec"), .key("tools"), .index(i)]), in: fleet))
        }
        return diagnostics
    }

    /// Named agents that do not exist, and label selectors that match no agent, are
    /// warnings: the resource is valid but grants or caps nothing for them.
    private static func check(
        _ selector: AgentSelector, of resource: Resource, in fleet: Fleet, matched: inout [String: [LabelSelector: Bool]]
    ) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        let namespace = resource.metadata.namespace
        let base = ValuePath([.key("spec"), .key("appliesTo")])
        for (i, name) in selector.agents.enumerated() where !fleet.declares(.agent, name.value, namespace: namespace) {
            let consequence = resource.kind == .policy ? "; this policy grants it nothing" : "; this budget caps nothing for it"
            diagnostics.append(
                missing(
                    .agent, name, from: resource, path: base.appending("agents").appending(i), in: fleet, severity: .warning,
                    consequence: consequence))
        }
        if let labels = selector.selector,
            !(matched[namespace, default: [:]][labels]
                ?? {
                    let found = fleet.resources(of: .agent, namespace: namespace).contains { labels.matches($0.metadata.labels) }
                    matched[namespace, default: [:]][labels] = found
                    return found
                }())
        {
            let location = resource.selectorLocation ?? selector.location
            diagnostics.append(
                .warning(
                    .selectorEmpty,
                    "the selector of \(resource.id) matches no Agent\(namespace == ResourceID.defaultNamespace ? "" : " in namespace \"\(namespace)\"")",
                    at: location, resource: resource.id, path: base.appending("selector")))
        }
        return diagnostics
    }
}
