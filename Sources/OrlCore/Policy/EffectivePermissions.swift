public import OrlJSON

/// What a permission is about. The raw values are the prefixes users type:
/// `orlctl explain agent/x --can use tool/web-search`.
public enum PermissionKind: String, CaseIterable, Sendable, Hashable {
    case tool
    case model
    case secret
    case handoff
    /// Clearance to receive data of a class.
    case dataClass = "data-class"
    /// Leave to send data of a class out through an egress tool.
    case egress

    /// Position in `allCases`, for tables indexed by kind.
    var index: Int {
        switch self {
        case .tool: 0
        case .model: 1
        case .secret: 2
        case .handoff: 3
        case .dataClass: 4
        case .egress: 5
        }
    }

    /// How the kind is named in messages: `tool "web-search"`.
    public var noun: String {
        switch self {
        case .tool: "tool"
        case .model: "model"
        case .secret: "secret"
        case .handoff: "handoff to"
        case .dataClass: "data class"
        case .egress: "egress of data class"
        }
    }
}

/// One entry of a Policy that grants, denies or gates something: the unit every
/// permission decision is explained by.
public struct PolicyRule: Sendable, Hashable {
    public enum Effect: String, Sendable, Hashable {
        case allow
        case deny
        case requireApproval
    }

    public var effect: Effect
    public var kind: PermissionKind
    /// As written: a name, `*`, or for models `PROVIDER/*`.
    public var pattern: String
    public var policy: ResourceID
    public var location: SourceLocation
    /// For an approval rule that names no tool but a capability or a risk: which
    /// (`capability "irreversible"`, `risk high or above`). The pattern is then the tool
    /// it was found to cover.
    public var via: String?
    /// For an approval rule: an approval step that approves itself on timeout satisfies it.
    public var acceptsTimeoutApproval = false

    public init(
        effect: Effect, kind: PermissionKind, pattern: String, policy: ResourceID, location: SourceLocation, via: String? = nil,
        acceptsTimeoutApproval: Bool = false
    ) {
        self.effect = effect
        self.kind = kind
        self.pattern = pattern
        self.policy = policy
        self.location = location
        self.via = via
        self.acceptsTimeoutApproval = acceptsTimeoutApproval
    }

    /// `Policy/guardrails`, or `Policy/guardrails (capability "irreversible")`.
    public var source: String { policy.description + (via.map { " (\($0))" } ?? "") }

    public func matches(_ value: String) -> Bool {
        if pattern == "*" || pattern == value { return true }
        // `openai/*` covers every model of the provider `openai`; `github/*` every tool
        // of the MCP server `github`.
        if kind == .model || kind == .tool, pattern.hasSuffix("/*") {
            return value.hasPrefix(pattern.dropLast())
        }
        return false
    }
}

/// The answer to "may this agent use X?", with the rules that decided it.
public struct PermissionDecision: Sendable, Hashable {
    public enum Outcome: Sendable, Hashable {
        case allowed
        /// A policy denies it (and denies win over allows).
        case denied
        /// No policy allows it: nothing is allowed by default.
        case notAllowed
        /// A secret that orl itself presents (a provider's API key, a tool's
        /// credential): no agent gets it, whatever its policies say.
        case reserved
    }

    public var outcome: Outcome
    /// The denying rules when denied, the allowing rules when allowed, none otherwise
    /// (for `reserved`, the allows the reservation overrides).
    public var rules: [PolicyRule]
    /// For `reserved`: why (`it is the API key of ModelProvider/openai, which only orl presents`).
    public var reservation: String?

    public init(outcome: Outcome, rules: [PolicyRule], reservation: String? = nil) {
        self.outcome = outcome
        self.rules = rules
        self.reservation = reservation
    }

    public var isAllowed: Bool { outcome == .allowed }

    /// `denied by Policy/team-guardrails` / `allowed by Policy/a, Policy/b` /
    /// `no policy allows it`.
    public var reason: String {
        let policies = Array(Set(rules.map(\.policy))).sorted().map(\.description).joined(separator: ", ")
        switch outcome {
        case .allowed: return "allowed by \(policies)"
        case .denied: return "denied by \(policies)"
        case .notAllowed: return "no policy allows it"
        case .reserved: return reservation ?? "orl alone presents it"
        }
    }
}

/// One Policy's rules, indexed once and shared by every agent the policy selects (a
/// team-wide policy may select hundreds).
final class CompiledPolicy: Sendable {
    let id: ResourceID
    let rules: [PolicyRule]
    /// Rule positions by kind (`PermissionKind.index`), then by the exact value they
    /// name: deciding is one lookup per policy.
    let exact: [[String: [Int]]]
    /// Rules with `*` patterns, by kind: checked against every value.
    let wildcards: [[Int]]
    /// What `permits` needs, without copying whole rules (their strings and locations
    /// cost a retain each) on the audit's hot path: the effects of exact rules by kind
    /// and value, and the wildcard rules as tests.
    let exactEffects: [[String: [PolicyRule.Effect]]]
    let wildcardTests: [[(effect: PolicyRule.Effect, test: WildcardTest)]]

    /// `PolicyRule.matches` for a pattern with a `*`, decided once.
    enum WildcardTest: Sendable {
        case any
        case prefix(String)
        /// A `*` that is not a wildcard for its kind matches only itself.
        case literal(String)

        init(_ rule: PolicyRule) {
            if rule.pattern == "*" {
                self = .any
            } else if rule.kind == .model || rule.kind == .tool, rule.pattern.hasSuffix("/*") {
                self = .prefix(String(rule.pattern.dropLast()))
            } else {
                self = .literal(rule.pattern)
            }
        }

        func matches(_ value: String) -> Bool {
            switch self {
            case .any: true
            case .prefix(let prefix): value.hasPrefix(prefix)
            case .literal(let pattern): value == pattern
            }
        }
    }

    init(id: ResourceID, rules: [PolicyRule]) {
        self.id = id
        self.rules = rules
        var exact = [[String: [Int]]](repeating: [:], count: PermissionKind.allCases.count)
        var wildcards = [[Int]](repeating: [], count: PermissionKind.allCases.count)
        var exactEffects = [[String: [PolicyRule.Effect]]](repeating: [:], count: PermissionKind.allCases.count)
        var wildcardTests = [[(effect: PolicyRule.Effect, test: WildcardTest)]](repeating: [], count: PermissionKind.allCases.count)
        for (i, rule) in rules.enumerated() {
            if rule.pattern.contains("*") {
                wildcards[rule.kind.index].append(i)
                wildcardTests[rule.kind.index].append((rule.effect, WildcardTest(rule)))
            } else {
                exact[rule.kind.index][rule.pattern, default: []].append(i)
                exactEffects[rule.kind.index][rule.pattern, default: []].append(rule.effect)
            }
        }
        self.exact = exact
        self.wildcards = wildcards
        self.exactEffects = exactEffects
        self.wildcardTests = wildcardTests
    }

    /// The positions of this policy's rules that match `value`.
    func matching(_ kind: PermissionKind, _ value: String) -> [Int] {
        (exact[kind.index][value] ?? []) + wildcards[kind.index].filter { rules[$0].matches(value) }
    }
}

/// Everything the Policies that select an agent say about it. Deny by default; the
/// allows of all policies add up; any deny wins.
public struct EffectivePermissions: Sendable {
    public let agent: ResourceID
    private let compiled: [CompiledPolicy]

    init(agent: ResourceID, compiled: [CompiledPolicy]) {
        self.agent = agent
        self.compiled = compiled
    }

    /// The policies that select the agent, in name order.
    public var policies: [ResourceID] { compiled.map(\.id) }

    /// Every allow, deny and approval rule of those policies, in policy then source order.
    public var rules: [PolicyRule] { compiled.flatMap(\.rules) }

    /// The rules of `kind` with `effect`, in the order of `rules`, without copying the
    /// others (the audit asks this of every agent of every workflow).
    public func rules(_ kind: PermissionKind, _ effect: PolicyRule.Effect) -> [PolicyRule] {
        var out: [PolicyRule] = []
        for policy in compiled {
            for rule in policy.rules where rule.kind == kind && rule.effect == effect { out.append(rule) }
        }
        return out
    }

    /// Whether any rule is of `kind` with `effect`.
    public func hasRule(_ kind: PermissionKind, _ effect: PolicyRule.Effect) -> Bool {
        compiled.contains { $0.rules.contains { $0.kind == kind && $0.effect == effect } }
    }

    /// Whether the agent may: the audit's fast path, which builds no explanation.
    public func permits(_ kind: PermissionKind, _ value: String) -> Bool {
        var allowed = false
        let k = kind.index
        for policy in compiled {
            if let effects = policy.exactEffects[k][value] {
                for effect in effects {
                    switch effect {
                    case .deny: return false
                    case .allow: allowed = true
                    case .requireApproval: break
                    }
                }
            }
            for wildcard in policy.wildcardTests[k] where wildcard.test.matches(value) {
                switch wildcard.effect {
                case .deny: return false
                case .allow: allowed = true
                case .requireApproval: break
                }
            }
        }
        return allowed
    }

    public func decide(_ kind: PermissionKind, _ value: String) -> PermissionDecision {
        var allows: [PolicyRule] = []
        var denies: [PolicyRule] = []
        for policy in compiled {
            for i in policy.matching(kind, value).sorted() {
                let rule = policy.rules[i]
                switch rule.effect {
                case .allow: allows.append(rule)
                case .deny: denies.append(rule)
                case .requireApproval: break
                }
            }
        }
        if !denies.isEmpty { return PermissionDecision(outcome: .denied, rules: denies) }
        if !allows.isEmpty { return PermissionDecision(outcome: .allowed, rules: allows) }
        return PermissionDecision(outcome: .notAllowed, rules: [])
    }

    /// The rules that put `tool` behind a human approval gate for this agent.
    public func approvalRules(forTool tool: String) -> [PolicyRule] {
        compiled.flatMap { policy in
            policy.matching(.tool, tool).sorted().map { policy.rules[$0] }.filter { $0.effect == .requireApproval }
        }
    }
}

/// Computes effective permissions for the agents of a fleet, once per agent.
public struct PolicyEngine: Sendable {
    private let byAgent: [ResourceID: EffectivePermissions]

    public init(_ fleet: Fleet) {
        var policiesOf: [ResourceID: [CompiledPolicy]] = [:]
        var toolsOf: [String: [(name: String, spec: ToolSpec)]] = [:]
        for policy in fleet.resources(of: .policy) {
            guard let spec = policy.policy else { continue }
            var rules = Self.rules(of: policy)
            if !spec.approvalCapabilities.isEmpty || spec.approvalRisk != nil {
                let namespace = policy.metadata.namespace
                let tools =
                    toolsOf[namespace]
                    ?? {
                        let tools = Self.tools(in: fleet, namespace: namespace)
                        toolsOf[namespace] = tools
                        return tools
                    }()
                rules += Self.approvalRules(of: policy, spec, tools: tools)
            }
            let compiled = CompiledPolicy(id: policy.id, rules: rules)
            for agent in fleet.agents(selectedBy: spec.appliesTo, namespace: policy.metadata.namespace) {
                policiesOf[agent.id, default: []].append(compiled)
            }
        }
        var byAgent: [ResourceID: EffectivePermissions] = [:]
        for agent in fleet.resources(of: .agent) {
            // Fleet order is name order, so each agent's policies are too.
            byAgent[agent.id] = EffectivePermissions(agent: agent.id, compiled: policiesOf[agent.id] ?? [])
        }
        self.byAgent = byAgent
    }

    /// The agent's permissions; an agent no policy selects may do nothing.
    public func permissions(of agent: ResourceID) -> EffectivePermissions {
        byAgent[agent] ?? EffectivePermissions(agent: agent, compiled: [])
    }

    static func rules(of policy: Resource) -> [PolicyRule] {
        guard let spec = policy.policy else { return [] }
        func rules(_ entries: [Located<String>], _ kind: PermissionKind, _ effect: PolicyRule.Effect) -> [PolicyRule] {
            entries.map { PolicyRule(effect: effect, kind: kind, pattern: $0.value, policy: policy.id, location: $0.location) }
        }
        var all: [PolicyRule] = []
        for (side, effect) in [(spec.allow, PolicyRule.Effect.allow), (spec.deny, .deny)] {
            all += rules(side.tools, .tool, effect)
            all += rules(side.models, .model, effect)
            all += rules(side.secrets, .secret, effect)
            all += rules(side.handoffs, .handoff, effect)
            all += rules(side.dataClasses, .dataClass, effect)
            all += rules(side.egress, .egress, effect)
        }
        all += rules(spec.approvalTools, .tool, .requireApproval).map { rule in
            var rule = rule
            rule.acceptsTimeoutApproval = spec.acceptTimeoutApproval
            return rule
        }
        return all
    }

    /// Every tool of a namespace by the name agents call it: Tool resources and the
    /// pinned tools of MCP servers (`SERVER/TOOL`).
    static func tools(in fleet: Fleet, namespace: String) -> [(name: String, spec: ToolSpec)] {
        fleet.resources(of: .tool, namespace: namespace).flatMap { resource -> [(name: String, spec: ToolSpec)] in
            guard let spec = resource.tool else { return [] }
            return [(resource.metadata.name, spec)] + spec.mcpTools(server: resource.metadata.name)
        }
    }

    /// `requireApproval` by capability or risk, as one rule per tool it covers: the gate
    /// then follows the tool's declaration (a tool that becomes irreversible needs the
    /// gate without the policy changing), and every consumer of approval rules (audit,
    /// review, explain, the gateway) sees the same rules.
    static func approvalRules(of policy: Resource, _ spec: PolicySpec, tools: [(name: String, spec: ToolSpec)]) -> [PolicyRule] {
        var rules: [PolicyRule] = []
        for tool in tools {
            if let capability = spec.approvalCapabilities.first(where: { tool.spec.capabilities.contains($0.value) }) {
                rules.append(
                    PolicyRule(
                        effect: .requireApproval, kind: .tool, pattern: tool.name, policy: policy.id, location: capability.location,
                        via: "capability \(Diagnostic.quoted(capability.value.rawValue))",
                        acceptsTimeoutApproval: spec.acceptTimeoutApproval))
            } else if let risk = spec.approvalRisk, tool.spec.risk >= risk.value {
                rules.append(
                    PolicyRule(
                        effect: .requireApproval, kind: .tool, pattern: tool.name, policy: policy.id, location: risk.location,
                        via: "risk \(risk.value.rawValue) or above", acceptsTimeoutApproval: spec.acceptTimeoutApproval))
            }
        }
        return rules
    }
}
