import OrlJSON

/// The parts of the audit that look at the fleet as the policies shape it, beyond what
/// any one workflow does: an agent that holds the lethal trifecta by itself, data that
/// handoffs can carry to an agent not cleared for it, and policy entries that name
/// nothing (a typo that fails open).
extension PolicyAudit {
    // MARK: The lethal trifecta

    /// An agent that may call a tool whose output is untrusted, a tool that returns a data
    /// class, and an egress tool no approval gate covers: a prompt injection in the first
    /// can make it send the second out through the third. Nil when it cannot.
    static func trifecta(of agent: Resource, _ permissions: EffectivePermissions, _ fleet: Fleet) -> (
        untrusted: Located<String>, data: (tool: Located<String>, dataClass: String), egress: Located<String>
    )? {
        guard let spec = agent.agent else { return nil }
        let namespace = agent.metadata.namespace
        let usable = spec.tools.compactMap { tool -> (Located<String>, ToolSpec)? in
            guard let resolved = fleet.tool(tool.value, namespace: namespace), permissions.permits(.tool, tool.value) else { return nil }
            return (tool, resolved)
        }
        guard let untrusted = usable.first(where: { $0.1.untrustedOutput })?.0,
            let data = usable.first(where: { !$0.1.dataClasses.isEmpty }),
            let egress = usable.first(where: { tool in
                tool.1.capabilities.contains(.egress) && permissions.approvalRules(forTool: tool.0.value).isEmpty
            })?.0
        else { return nil }
        return (untrusted, (data.0, data.1.dataClasses.sorted()[0]), egress)
    }

    static func trifectaDiagnostic(_ agent: Resource, _ permissions: EffectivePermissions, _ fleet: Fleet) -> Diagnostic? {
        guard let found = trifecta(of: agent, permissions, fleet) else { return nil }
        let name = agent.metadata.name
        return .warning(
            .permLethalTrifecta,
            "agent \(Diagnostic.quoted(name)) reads untrusted content from tool \(Diagnostic.quoted(found.untrusted.value)), data of class \(Diagnostic.quoted(found.data.dataClass)) from tool \(Diagnostic.quoted(found.data.tool.value)), and can send out through egress tool \(Diagnostic.quoted(found.egress.value)) with no approval gate: a prompt injection in the untrusted content can send the data out",
            at: found.egress.location, resource: agent.id, path: nil,
            notes: [
                .init("untrusted content comes in here", at: found.untrusted.location),
                .init("data of class \(Diagnostic.quoted(found.data.dataClass)) comes in here", at: found.data.tool.location),
            ])
    }

    // MARK: Handoff reach

    /// One way data of a class can travel by handoffs from an agent that reads it to
    /// another: the agents in order and the rule allowing each hop.
    struct Reach: Sendable, Hashable {
        var dataClass: String
        var agents: [String]
        /// The tool of the first agent that returns the class.
        var tool: String
        var rules: [PolicyRule]

        /// `"triage" → "writer" → "mailer"`.
        var route: String { agents.map { Diagnostic.quoted($0) }.joined(separator: " → ") }
    }

    /// For each agent of a namespace, the data classes that handoffs can carry to it from
    /// agents that read them, each with one route (the shortest). Handoffs are
    /// transitive: A → B → C brings A's data to C even when A may not hand off to C.
    static func reach(in namespace: String, of fleet: Fleet, engine: PolicyEngine) -> [String: [String: Reach]] {
        let agents = fleet.resources(of: .agent, namespace: namespace)
        guard agents.count > 1 else { return [:] }
        var index: [String: Int] = [:]
        for (i, agent) in agents.enumerated() { index[agent.metadata.name] = i }
        let permissions = agents.map { engine.permissions(of: $0.id) }
        // What each agent reads itself: the classes of the tools it may call.
        var held: [[(dataClass: String, tool: String)]] = []
        for (i, agent) in agents.enumerated() {
            var classes: [(String, String)] = []
            var seen = Set<String>()
            for tool in agent.agent?.tools ?? [] where permissions[i].permits(.tool, tool.value) {
                for c in fleet.tool(tool.value, namespace: namespace)?.dataClasses ?? [] where seen.insert(c).inserted {
                    classes.append((c, tool.value))
                }
            }
            held.append(classes)
        }
        guard held.contains(where: { !$0.isEmpty }) else { return [:] }
        // Handoff edges, each with the rule that allows it. A wildcard makes every agent a
        // candidate; otherwise only the names the rules spell.
        var edges = [[(to: Int, rule: PolicyRule)]](repeating: [], count: agents.count)
        for (i, agent) in agents.enumerated() {
            let rules = permissions[i].rules(.handoff, .allow)
            guard !rules.isEmpty else { continue }
            let candidates: [Int] =
                rules.contains { $0.pattern.contains("*") } ? Array(agents.indices) : rules.compactMap { index[$0.pattern] }
            for j in candidates where j != i {
                let name = agents[j].metadata.name
                guard permissions[i].permits(.handoff, name), let rule = permissions[i].decide(.handoff, name).rules.first else {
                    continue
                }
                edges[i].append((j, rule))
            }
            _ = agent
        }
        var result: [String: [String: Reach]] = [:]
        let classes = Set(held.flatMap { $0.map(\.dataClass) }).sorted()
        for c in classes {
            // Breadth first from every agent that reads the class: each agent reached gets
            // its shortest route.
            var parent = [(from: Int, rule: PolicyRule)?](repeating: nil, count: agents.count)
            var origin = [Int?](repeating: nil, count: agents.count)
            var queue: [Int] = []
            for i in agents.indices where held[i].contains(where: { $0.dataClass == c }) {
                origin[i] = i
                queue.append(i)
            }
            var head = 0
            while head < queue.count {
                let i = queue[head]
                head += 1
                for edge in edges[i] where origin[edge.to] == nil {
                    origin[edge.to] = origin[i]
                    parent[edge.to] = (i, edge.rule)
                    queue.append(edge.to)
                }
            }
            for j in agents.indices where parent[j] != nil {
                var names = [agents[j].metadata.name]
                var rules: [PolicyRule] = []
                var at = j
                while let step = parent[at] {
                    rules.append(step.rule)
                    names.append(agents[step.from].metadata.name)
                    at = step.from
                }
                let tool = held[at].first { $0.dataClass == c }?.tool ?? "?"
                result[agents[j].metadata.name, default: [:]][c] = Reach(
                    dataClass: c, agents: names.reversed(), tool: tool, rules: rules.reversed())
            }
        }
        return result
    }

    /// Data that handoffs can carry to an agent that is not cleared for its class.
    static func handoffReach(in namespace: String, of fleet: Fleet, engine: PolicyEngine) -> [Diagnostic] {
        let reach = reach(in: namespace, of: fleet, engine: engine)
        var diagnostics: [Diagnostic] = []
        for agent in fleet.resources(of: .agent, namespace: namespace) {
            let permissions = engine.permissions(of: agent.id)
            for (c, found) in (reach[agent.metadata.name] ?? [:]).sorted(by: { $0.key < $1.key }) {
                guard !permissions.permits(.dataClass, c), let last = found.rules.last else { continue }
                let decision = permissions.decide(.dataClass, c)
                diagnostics.append(
                    .warning(
                        .permHandoffReach,
                        "handoffs can carry data of class \(Diagnostic.quoted(c)) (from tool \(Diagnostic.quoted(found.tool))) along \(found.route) to agent \(Diagnostic.quoted(agent.metadata.name)), which is not cleared for it: \(decision.reason)",
                        at: last.location, resource: last.policy, path: nil,
                        notes: found.rules.map { .init("\($0.policy) allows this hop here", at: $0.location) }))
            }
        }
        return diagnostics
    }

    // MARK: Names that match nothing

    /// A Policy entry that names no tool, model, agent, secret or data class of its
    /// namespace matches nothing: a typo in a deny fails to restrict while a `*` allow
    /// still grants the real thing. Not reported where a document that could not be read
    /// may define the name.
    /// What a namespace defines that a Policy may name, gathered once for all of its Policies
    /// (per Policy, it made the audit quadratic in a namespace's size).
    struct NamespaceNames {
        let tools: [String]
        let toolSet: Set<String>
        let servers: Set<String>
        let providerNames: Set<String>
        let models: [String]
        let modelSet: Set<String>
        let agentNames: [String]
        let agentSet: Set<String>
        let secrets: Set<String>
        let sortedSecrets: [String]
        let classes: Set<String>
        let sortedClasses: [String]
        /// "Did you mean" answers by list and name: every Policy of a namespace may miss
        /// the same names (a `deny: shell` in each), and each answer looks through the
        /// namespace's every name.
        let hints = Hints()

        final class Hints {
            var known: [String: String] = [:]

            func hint(for word: String, list: String, among candidates: [String]) -> String {
                let key = list + "\u{0}" + word
                if let hint = known[key] { return hint }
                let hint = Suggestion.hint(for: word, among: candidates)
                known[key] = hint
                return hint
            }
        }

        init(_ namespace: String, in fleet: Fleet) {
            tools = PolicyEngine.tools(in: fleet, namespace: namespace).map(\.name)
            toolSet = Set(tools)
            let toolResources = fleet.resources(of: .tool, namespace: namespace)
            servers = Set(toolResources.filter { $0.tool?.type == .mcp }.map(\.metadata.name))
            let providers = fleet.resources(of: .modelProvider, namespace: namespace)
            providerNames = Set(providers.map(\.metadata.name))
            models = providers.flatMap { p in (p.modelProvider?.models ?? []).map { "\(p.metadata.name)/\($0.name)" } }
            modelSet = Set(models)
            let agents = fleet.resources(of: .agent, namespace: namespace)
            agentNames = agents.map(\.metadata.name)
            agentSet = Set(agentNames)
            var secrets = Set(agents.flatMap { $0.agent?.secrets.map(\.name.value) ?? [] })
            for provider in providers { if let key = provider.modelProvider?.apiKeySecret?.value { secrets.insert(key) } }
            for tool in toolResources {
                if let secret = tool.tool?.http?.credentialSecret?.value { secrets.insert(secret) }
                if let secret = tool.tool?.mcp?.credentialSecret?.value { secrets.insert(secret) }
            }
            self.secrets = secrets
            sortedSecrets = secrets.sorted()
            classes = Set(toolResources.flatMap { $0.tool?.dataClasses ?? [] })
            sortedClasses = classes.sorted()
        }
    }

    static func unmatchedNames(_ policy: Resource, in fleet: Fleet, names: NamespaceNames) -> [Diagnostic] {
        guard let spec = policy.policy else { return [] }
        let namespace = policy.metadata.namespace

        var diagnostics: [Diagnostic] = []
        // A data class or secret that nothing names yet may be denied ahead of time on
        // purpose; only one close to a real name is a likely typo.
        func check(
            _ entries: [Located<String>], _ path: ValuePath, noun: String, blind: Bool, candidates: [String], list: String,
            onlyTypos: Bool = false, exists: (String) -> Bool
        ) {
            guard !blind else { return }
            for (i, entry) in entries.enumerated() where entry.value != "*" && !exists(entry.value) {
                let hint = names.hints.hint(for: entry.value, list: list, among: candidates)
                if onlyTypos && hint.isEmpty { continue }
                diagnostics.append(
                    .warning(
                        .policyUnmatched,
                        "\(policy.id) names \(noun) \(Diagnostic.quoted(entry.value)), which matches nothing in namespace \(Diagnostic.quoted(namespace)); this entry allows, denies or gates nothing\(hint)",
                        at: entry.location, resource: policy.id, path: path.appending(i)))
            }
        }
        let toolExists = { (name: String) -> Bool in
            if name.hasSuffix("/*") { return names.servers.contains(String(name.dropLast(2))) }
            return names.toolSet.contains(name) || fleet.declaresTool(name, namespace: namespace)
        }
        let modelExists = { (name: String) -> Bool in
            if name.hasSuffix("/*") { return names.providerNames.contains(String(name.dropLast(2))) }
            return names.modelSet.contains(name)
        }
        let blindTools = fleet.mayMiss(.tool, in: namespace)
        for (side, rules) in [("allow", spec.allow), ("deny", spec.deny)] {
            let base = ValuePath([.key("spec"), .key(side)])
            check(
                rules.tools, base.appending("tools"), noun: "tool", blind: blindTools, candidates: names.tools, list: "tools",
                exists: toolExists)
            check(
                rules.models, base.appending("models"), noun: "model", blind: fleet.mayMiss(.modelProvider, in: namespace),
                candidates: names.models, list: "models", exists: modelExists)
            check(
                rules.handoffs, base.appending("handoffs"), noun: "agent", blind: fleet.mayMiss(.agent, in: namespace),
                candidates: names.agentNames, list: "agents", exists: { names.agentSet.contains($0) })
            check(
                rules.secrets, base.appending("secrets"), noun: "secret", blind: fleet.unidentified > 0 || !fleet.isComplete,
                candidates: names.sortedSecrets, list: "secrets", onlyTypos: true, exists: { names.secrets.contains($0) })
            check(
                rules.dataClasses, base.appending("dataClasses"), noun: "data class", blind: blindTools, candidates: names.sortedClasses,
                list: "classes", onlyTypos: true, exists: { names.classes.contains($0) })
            check(
                rules.egress, base.appending("egress"), noun: "data class", blind: blindTools, candidates: names.sortedClasses,
                list: "classes", onlyTypos: true, exists: { names.classes.contains($0) })
        }
        check(
            spec.approvalTools, ValuePath([.key("spec"), .key("requireApproval"), .key("tools")]), noun: "tool", blind: blindTools,
            candidates: names.tools, list: "tools", exists: toolExists)
        return diagnostics
    }
}
