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

/// One Policy's rules, in source order, and its place among the engine's policies.
final class CompiledPolicy: Sendable {
    let id: ResourceID
    let rules: [PolicyRule]
    /// Position among the engine's policies (fleet order, which is name order within a
    /// namespace): decisions list rules by policy in this order.
    let ordinal: Int32

    init(id: ResourceID, rules: [PolicyRule], ordinal: Int) {
        self.id = id
        self.rules = rules
        self.ordinal = Int32(ordinal)
    }
}

/// One rule of one of the engine's policies: ordered by policy, then by the rule's
/// place in it, the order every decision lists rules in.
struct RuleRef: Sendable, Comparable {
    var policy: Int32
    var rule: Int32

    static func < (a: RuleRef, b: RuleRef) -> Bool { (a.policy, a.rule) < (b.policy, b.rule) }
}

/// Several policies' rules merged into one index, shared by every agent they all apply
/// to: the policies of a namespace with the same label selector, or one policy that
/// names an agent. Deciding costs a lookup per group an agent belongs to, not one per
/// policy that selects it (a team-wide policy may select thousands, and a team may
/// have thousands of such policies).
final class PolicyGroup: Sendable {
    struct Effects: OptionSet, Sendable {
        let rawValue: UInt8
        static let allow = Effects(rawValue: 1)
        static let deny = Effects(rawValue: 2)
        static let requireApproval = Effects(rawValue: 4)

        init(rawValue: UInt8) { self.rawValue = rawValue }

        init(_ effect: PolicyRule.Effect) {
            switch effect {
            case .allow: self = .allow
            case .deny: self = .deny
            case .requireApproval: self = .requireApproval
            }
        }
    }

    /// The policies' ordinals, ascending.
    let members: [Int32]
    /// By kind (`PermissionKind.index`): rules that match one value (a name, or a
    /// pattern whose `*` is not a wildcard for its kind), by that value.
    private let exact: [[String: [RuleRef]]]
    /// By kind: `PROVIDER/*` and `SERVER/*` rules, by the prefix they match (with its `/`).
    private let prefixed: [[String: [RuleRef]]]
    /// By kind: `*` rules.
    private let any: [[RuleRef]]
    /// What `permits` needs, without the rules: the effects of each entry above.
    private let exactEffects: [[String: Effects]]
    private let prefixEffects: [[String: Effects]]
    private let anyEffects: [Effects]
    /// By `kind.index * 3 + effect`: every rule of that kind and effect, in order.
    private let byKindAndEffect: [[RuleRef]]

    init(_ policies: [CompiledPolicy]) {
        members = policies.map(\.ordinal)
        let kinds = PermissionKind.allCases.count
        var exact = [[String: [RuleRef]]](repeating: [:], count: kinds)
        var prefixed = [[String: [RuleRef]]](repeating: [:], count: kinds)
        var any = [[RuleRef]](repeating: [], count: kinds)
        var exactEffects = [[String: Effects]](repeating: [:], count: kinds)
        var prefixEffects = [[String: Effects]](repeating: [:], count: kinds)
        var anyEffects = [Effects](repeating: [], count: kinds)
        var byKindAndEffect = [[RuleRef]](repeating: [], count: kinds * 3)
        for policy in policies {
            for (i, rule) in policy.rules.enumerated() {
                let ref = RuleRef(policy: policy.ordinal, rule: Int32(i))
                let k = rule.kind.index
                let effect = Effects(rule.effect)
                byKindAndEffect[k * 3 + Self.slot(rule.effect)].append(ref)
                // As `PolicyRule.matches` reads a pattern.
                if rule.pattern == "*" {
                    any[k].append(ref)
                    anyEffects[k].formUnion(effect)
                } else if rule.pattern.contains("*"), rule.kind == .model || rule.kind == .tool, rule.pattern.hasSuffix("/*") {
                    let prefix = String(rule.pattern.dropLast())
                    prefixed[k][prefix, default: []].append(ref)
                    prefixEffects[k][prefix, default: []].formUnion(effect)
                } else {
                    exact[k][rule.pattern, default: []].append(ref)
                    exactEffects[k][rule.pattern, default: []].formUnion(effect)
                }
            }
        }
        self.exact = exact
        self.prefixed = prefixed
        self.any = any
        self.exactEffects = exactEffects
        self.prefixEffects = prefixEffects
        self.anyEffects = anyEffects
        self.byKindAndEffect = byKindAndEffect
    }

    private static func slot(_ effect: PolicyRule.Effect) -> Int {
        switch effect {
        case .allow: 0
        case .deny: 1
        case .requireApproval: 2
        }
    }

    /// The effects of the rules that match `value`.
    func effects(_ kind: PermissionKind, _ value: String) -> Effects {
        let k = kind.index
        var effects = anyEffects[k]
        if let found = exactEffects[k][value] { effects.formUnion(found) }
        if !prefixEffects[k].isEmpty {
            Self.prefixes(of: value, among: prefixEffects[k]) { effects.formUnion($0) }
        }
        return effects
    }

    /// The rules that match `value`, appended to `refs` (unordered).
    func matching(_ kind: PermissionKind, _ value: String, into refs: inout [RuleRef]) {
        let k = kind.index
        refs += any[k]
        if let found = exact[k][value] { refs += found }
        if !prefixed[k].isEmpty {
            Self.prefixes(of: value, among: prefixed[k]) { refs += $0 }
        }
    }

    func rules(_ kind: PermissionKind, _ effect: PolicyRule.Effect) -> [RuleRef] {
        byKindAndEffect[kind.index * 3 + Self.slot(effect)]
    }

    /// The entries of `table` whose prefix `value` starts with. A prefix ends with `/`,
    /// so for an ASCII value it is one of the value's own prefixes up to a `/`; any
    /// other value is tested against every prefix, as `PolicyRule.matches` does.
    private static func prefixes<T>(of value: String, among table: [String: T], _ body: (T) -> Void) {
        let utf8 = value.utf8
        if utf8.allSatisfy({ $0 < 0x80 }) {
            var i = utf8.startIndex
            while i != utf8.endIndex {
                let next = utf8.index(after: i)
                if utf8[i] == UInt8(ascii: "/"), let found = table[String(value[..<next])] { body(found) }
                i = next
            }
        } else {
            for (prefix, found) in table where value.hasPrefix(prefix) { body(found) }
        }
    }
}

/// Everything the Policies that select an agent say about it. Deny by default; the
/// allows of all policies add up; any deny wins.
public struct EffectivePermissions: Sendable {
    public let agent: ResourceID
    /// The groups of policies that select the agent: each policy in exactly one.
    private let groups: [PolicyGroup]
    /// The engine's policies, by ordinal.
    private let table: [CompiledPolicy]

    init(agent: ResourceID, groups: [PolicyGroup], table: [CompiledPolicy]) {
        self.agent = agent
        self.groups = groups
        self.table = table
    }

    /// The ordinals of the policies that select the agent, ascending.
    private var ordinals: [Int32] {
        groups.count == 1 ? groups[0].members : groups.flatMap(\.members).sorted()
    }

    /// The policies that select the agent, in name order.
    public var policies: [ResourceID] { ordinals.map { table[Int($0)].id } }

    /// Every allow, deny and approval rule of those policies, in policy then source order.
    public var rules: [PolicyRule] { ordinals.flatMap { table[Int($0)].rules } }

    private func resolve(_ refs: [RuleRef]) -> [PolicyRule] {
        refs.map { table[Int($0.policy)].rules[Int($0.rule)] }
    }

    /// The rules of `kind` with `effect`, in the order of `rules`, without copying the
    /// others (the audit asks this of every agent of every workflow).
    public func rules(_ kind: PermissionKind, _ effect: PolicyRule.Effect) -> [PolicyRule] {
        if groups.count == 1 { return resolve(groups[0].rules(kind, effect)) }
        return resolve(groups.flatMap { $0.rules(kind, effect) }.sorted())
    }

    /// Whether any rule is of `kind` with `effect`.
    public func hasRule(_ kind: PermissionKind, _ effect: PolicyRule.Effect) -> Bool {
        groups.contains { !$0.rules(kind, effect).isEmpty }
    }

    /// Whether the agent may: the audit's fast path, which builds no explanation.
    public func permits(_ kind: PermissionKind, _ value: String) -> Bool {
        var allowed = false
        for group in groups {
            let effects = group.effects(kind, value)
            if effects.contains(.deny) { return false }
            if effects.contains(.allow) { allowed = true }
        }
        return allowed
    }

    /// The rules that match `value`, in policy then source order.
    private func matching(_ kind: PermissionKind, _ value: String) -> [PolicyRule] {
        var refs: [RuleRef] = []
        for group in groups { group.matching(kind, value, into: &refs) }
        return resolve(refs.sorted())
    }

    public func decide(_ kind: PermissionKind, _ value: String) -> PermissionDecision {
        var allows: [PolicyRule] = []
        var denies: [PolicyRule] = []
        for rule in matching(kind, value) {
            switch rule.effect {
            case .allow: allows.append(rule)
            case .deny: denies.append(rule)
            case .requireApproval: break
            }
        }
        if !denies.isEmpty { return PermissionDecision(outcome: .denied, rules: denies) }
        if !allows.isEmpty { return PermissionDecision(outcome: .allowed, rules: allows) }
        return PermissionDecision(outcome: .notAllowed, rules: [])
    }

    /// The rules that put `tool` behind a human approval gate for this agent.
    public func approvalRules(forTool tool: String) -> [PolicyRule] {
        matching(.tool, tool).filter { $0.effect == .requireApproval }
    }
}

/// Computes effective permissions for the agents of a fleet, once per agent.
///
/// The policies of a namespace are grouped by label selector, each group indexed once;
/// an agent's permissions are the groups whose selector matches its labels, plus each
/// policy that names it and whose selector does not. So building the engine and each
/// decision grow with the groups an agent is in, not with the policies that select it.
public struct PolicyEngine: Sendable {
    private let byAgent: [ResourceID: EffectivePermissions]
    private let table: [CompiledPolicy]

    public init(_ fleet: Fleet) {
        var table: [CompiledPolicy] = []
        var selectors: [AgentSelector] = []
        var toolsOf: [String: [(name: String, spec: ToolSpec)]] = [:]
        var namespaces: [String] = []
        for policy in fleet.resources(of: .policy) {
            guard let spec = policy.policy else { continue }
            let namespace = policy.metadata.namespace
            var rules = Self.rules(of: policy)
            if !spec.approvalCapabilities.isEmpty || spec.approvalRisk != nil {
                let tools =
                    toolsOf[namespace]
                    ?? {
                        let tools = Self.tools(in: fleet, namespace: namespace)
                        toolsOf[namespace] = tools
                        return tools
                    }()
                rules += Self.approvalRules(of: policy, spec, tools: tools)
            }
            if namespaces.last != namespace { namespaces.append(namespace) }
            table.append(CompiledPolicy(id: policy.id, rules: rules, ordinal: table.count))
            selectors.append(spec.appliesTo)
        }
        var byAgent: [ResourceID: EffectivePermissions] = [:]
        // Fleet order groups a namespace's policies together.
        var start = 0
        for namespace in namespaces {
            var end = start
            while end < table.count, table[end].id.namespace == namespace { end += 1 }
            let agents = AgentClasses(fleet, namespace: namespace)
            var groupOf: [LabelSelector: Int] = [:]
            var members: [[CompiledPolicy]] = []
            var groupSelectors: [LabelSelector] = []
            var named = [[Int]](repeating: [], count: agents.agents.count)
            for o in start..<end {
                if let labels = selectors[o].selector {
                    if let g = groupOf[labels] {
                        members[g].append(table[o])
                    } else {
                        groupOf[labels] = members.count
                        members.append([table[o]])
                        groupSelectors.append(labels)
                    }
                }
                for name in selectors[o].agents {
                    // A name listed twice selects once.
                    guard let a = agents.byName[name.value], named[a].last != o else { continue }
                    named[a].append(o)
                }
            }
            let groups = members.map(PolicyGroup.init)
            let matches = groupSelectors.map(agents.matches)
            let classGroups = agents.labels.indices.map { c in groups.indices.filter { matches[$0][c] }.map { groups[$0] } }
            var single: [Int: PolicyGroup] = [:]
            for (a, agent) in agents.agents.enumerated() {
                let c = agents.classOf[a]
                var own = classGroups[c]
                for o in named[a] {
                    // Already in through its selector.
                    if let labels = selectors[o].selector, let g = groupOf[labels], matches[g][c] { continue }
                    let group =
                        single[o]
                        ?? {
                            let group = PolicyGroup([table[o]])
                            single[o] = group
                            return group
                        }()
                    own.append(group)
                }
                byAgent[agent.id] = EffectivePermissions(agent: agent.id, groups: own, table: table)
            }
            start = end
        }
        for agent in fleet.resources(of: .agent) where byAgent[agent.id] == nil {
            byAgent[agent.id] = EffectivePermissions(agent: agent.id, groups: [], table: table)
        }
        self.byAgent = byAgent
        self.table = table
    }

    /// The agent's permissions; an agent no policy selects may do nothing.
    public func permissions(of agent: ResourceID) -> EffectivePermissions {
        byAgent[agent] ?? EffectivePermissions(agent: agent, groups: [], table: table)
    }

    static func rules(of policy: Resource) -> [PolicyRule] {
        guard let spec = policy.policy else { return [] }
        let sides = [(spec.allow, PolicyRule.Effect.allow), (spec.deny, .deny)]
        var all: [PolicyRule] = []
        // Exactly, not by doubling: an engine keeps every policy's rules.
        all.reserveCapacity(
            sides.reduce(spec.approvalTools.count) { count, side in
                let rules = side.0
                return count + rules.tools.count + rules.models.count + rules.secrets.count + rules.handoffs.count
                    + rules.dataClasses.count + rules.egress.count
            })
        func add(_ entries: [Located<String>], _ kind: PermissionKind, _ effect: PolicyRule.Effect) {
            for entry in entries {
                all.append(PolicyRule(effect: effect, kind: kind, pattern: entry.value, policy: policy.id, location: entry.location))
            }
        }
        for (side, effect) in sides {
            add(side.tools, .tool, effect)
            add(side.models, .model, effect)
            add(side.secrets, .secret, effect)
            add(side.handoffs, .handoff, effect)
            add(side.dataClasses, .dataClass, effect)
            add(side.egress, .egress, effect)
        }
        for tool in spec.approvalTools {
            all.append(
                PolicyRule(
                    effect: .requireApproval, kind: .tool, pattern: tool.value, policy: policy.id, location: tool.location,
                    acceptsTimeoutApproval: spec.acceptTimeoutApproval))
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
