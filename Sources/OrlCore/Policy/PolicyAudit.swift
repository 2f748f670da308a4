import OrlJSON

/// Proves, before anything runs, that agents and workflow DAGs respect the policies:
/// tools, models, secrets, handoffs along DAG edges, approval gates on every path, data
/// classes along every edge, and budgets.
///
/// Every check is linear (or near-linear) in steps and edges: facts are propagated
/// once through the DAG in topological order, never by enumerating paths.
public enum PolicyAudit {
    public static func run(_ fleet: Fleet, engine: PolicyEngine) -> [Diagnostic] {
        // Without every Policy of a namespace the audit would report denials that the
        // unreadable one may grant; its schema error is the problem to fix first. Budgets
        // likewise for coverage.
        // A document that could not even be named may be a Policy or Budget of any namespace.
        let namespaces = Set(fleet.resources.map(\.metadata.namespace))
        let blindPolicies = namespaces.filter { fleet.mayMiss(.policy, in: $0) }
        let blindBudgets = namespaces.filter { fleet.mayMiss(.budget, in: $0) }
        var diagnostics: [Diagnostic] = []
        let credentials = CredentialSecrets(fleet)
        for agent in fleet.resources(of: .agent) {
            let namespace = agent.metadata.namespace
            diagnostics += audit(
                agent: agent, permissions: engine.permissions(of: agent.id), credentials: credentials, fleet: fleet,
                permissions: !blindPolicies.contains(namespace), budgets: !blindBudgets.contains(namespace))
        }
        for workflow in fleet.resources(of: .workflow) where !blindPolicies.contains(workflow.metadata.namespace) {
            diagnostics += WorkflowAudit(workflow: workflow, fleet: fleet, engine: engine)?.run() ?? []
        }
        return diagnostics
    }

    /// What an agent declares, checked on its own: its model, its secrets, its tools, and
    /// whether any budget caps it.
    private static func audit(
        agent: Resource, permissions: EffectivePermissions, credentials: CredentialSecrets, fleet: Fleet,
        permissions checkPermissions: Bool, budgets checkBudgets: Bool
    ) -> [Diagnostic] {
        guard let spec = agent.agent else { return [] }
        var diagnostics: [Diagnostic] = []
        if checkBudgets, let missing = budgetMissing(agent, fleet) { diagnostics.append(missing) }
        guard checkPermissions else { return diagnostics }
        let name = agent.metadata.name
        let namespace = agent.metadata.namespace
        if let unconfined = unconfined(agent, spec, fleet) { diagnostics.append(unconfined) }
        // Only what resolves is judged: a missing tool or model is reported once, as
        // ref.missing, not again as a permission problem.
        let model = spec.model.value.description
        let modelExists =
            fleet.resource(.modelProvider, spec.model.value.provider, namespace: namespace)?.modelProvider?.model(
                named: spec.model.value.model) != nil
        if modelExists, !permissions.permits(.model, model) {
            let modelDecision = permissions.decide(.model, model)
            diagnostics.append(
                .error(
                    .permModelDenied, "agent \"\(name)\" may not use model \"\(model)\": \(modelDecision.reason)",
                    at: spec.model.location, resource: agent.id, path: ValuePath([.key("spec"), .key("model")]),
                    notes: notes(for: modelDecision, permissions)))
        }
        for (i, secret) in spec.secrets.enumerated() {
            let id = SecretID(namespace: namespace, name: secret.name.value)
            guard !credentials.permits(id, permissions) else { continue }
            let decision = credentials.decide(id, permissions)
            let path = ValuePath([.key("spec"), .key("secrets"), .index(i), .key("name")])
            if decision.outcome == .reserved {
                // Whatever the policies say: the fix is to stop asking, not to allow it.
                diagnostics.append(
                    .error(
                        .permSecretReserved, "agent \"\(name)\" may not read secret \"\(secret.name.value)\": \(decision.reason)",
                        at: secret.name.location, resource: agent.id, path: path,
                        notes: credentials.users(of: id).map { .init("\($0.resource) uses it here", at: $0.location) }))
                continue
            }
            diagnostics.append(
                .error(
                    .permSecretDenied, "agent \"\(name)\" may not read secret \"\(secret.name.value)\": \(decision.reason)",
                    at: secret.name.location, resource: agent.id, path: path, notes: notes(for: decision, permissions)))
        }
        for (i, tool) in spec.tools.enumerated() where fleet.tool(tool.value, namespace: namespace) != nil {
            guard !permissions.permits(.tool, tool.value) else { continue }
            let decision = permissions.decide(.tool, tool.value)
            diagnostics.append(
                .error(
                    .permToolDenied, "agent \"\(name)\" declares tool \"\(tool.value)\", which it may not use: \(decision.reason)",
                    at: tool.location, resource: agent.id, path: ValuePath([.key("spec"), .key("tools"), .index(i)]),
                    notes: notes(for: decision, permissions)))
        }
        return diagnostics
    }

    /// `isolation: none`: a warning, or an error when a Policy that selects the agent
    /// requires strict isolation.
    private static func unconfined(_ agent: Resource, _ spec: AgentSpec, _ fleet: Fleet) -> Diagnostic? {
        guard spec.runtime.isolation == .none, let setting = spec.runtime.isolationSetting else { return nil }
        let path = ValuePath([.key("spec"), .key("runtime"), .key("isolation")])
        let requiring = fleet.resources(of: .policy, namespace: agent.metadata.namespace).compactMap { policy -> Diagnostic.Note? in
            guard let spec = policy.policy, let required = spec.requireIsolation, spec.appliesTo.selects(agent.metadata) else { return nil }
            return .init("policy \"\(policy.metadata.name)\" requires isolation \(required.value.rawValue) here", at: required.location)
        }
        let name = agent.metadata.name
        if requiring.isEmpty {
            return .warning(
                .permUnconfined,
                "agent \"\(name)\" runs unconfined (isolation: none): what its policies allow is not enforced by the kernel",
                at: setting.location, resource: agent.id, path: path)
        }
        return .error(
            .permUnconfined, "agent \"\(name)\" may not run unconfined (isolation: none): a Policy that applies to it requires strict",
            at: setting.location, resource: agent.id, path: path, notes: requiring)
    }

    private static func budgetMissing(_ agent: Resource, _ fleet: Fleet) -> Diagnostic? {
        let covered = fleet.resources(of: .budget, namespace: agent.metadata.namespace).contains { budget in
            budget.budget?.appliesTo.selects(agent.metadata) ?? false
        }
        guard !covered else { return nil }
        return .warning(
            .budgetMissing, "no Budget covers agent \"\(agent.metadata.name)\", so nothing caps what it spends on models",
            at: agent.nameLocation, resource: agent.id, path: ValuePath([.key("metadata"), .key("name")]))
    }

    /// Notes that point at the rules behind a decision, or, when nothing allowed it, at
    /// the policies that apply to the agent (or say that none does).
    static func notes(for decision: PermissionDecision, _ permissions: EffectivePermissions) -> [Diagnostic.Note] {
        switch decision.outcome {
        case .denied:
            return decision.rules.map { .init("denied by \($0.policy) here", at: $0.location) }
        case .allowed, .reserved:
            return []
        case .notAllowed:
            if permissions.policies.isEmpty {
                return [.init("no Policy applies to agent \"\(permissions.agent.name)\"; nothing is allowed unless a Policy allows it")]
            }
            let names = permissions.policies.map(\.description).joined(separator: ", ")
            return [.init("policies that apply to agent \"\(permissions.agent.name)\": \(names); none allows it")]
        }
    }
}

/// The audit of one workflow's DAG.
struct WorkflowAudit {
    let workflow: Resource
    let spec: WorkflowSpec
    let graph: WorkflowGraph
    let order: [Int]
    let fleet: Fleet
    let engine: PolicyEngine
    /// The Agent of each step (nil for approval gates and unresolved agents).
    let agents: [Resource?]

    /// Nil when the DAG is not one (cycles are reported by the structural check).
    init?(workflow: Resource, fleet: Fleet, engine: PolicyEngine) {
        guard let spec = workflow.workflow else { return nil }
        let graph = WorkflowGraph(spec)
        guard let order = graph.topologicalOrder() else { return nil }
        self.workflow = workflow
        self.spec = spec
        self.graph = graph
        self.order = order
        self.fleet = fleet
        self.engine = engine
        var byName: [String: Resource?] = [:]
        agents = spec.steps.map { step in
            guard let name = step.agent?.value else { return nil }
            if let known = byName[name] { return known }
            let agent = fleet.resource(.agent, name, namespace: workflow.metadata.namespace)
            byName[name] = agent
            return agent
        }
    }

    func stepPath(_ i: Int) -> ValuePath { ValuePath([.key("spec"), .key("steps"), .index(i)]) }
    func id(_ i: Int) -> String { spec.steps[i].id.value }

    func run() -> [Diagnostic] {
        PatternAudit.refine(
            tools() + handoffs() + approvals() + dataflow() + budgets(), spec: spec, graph: graph, workflow: workflow.id)
    }

    // MARK: Tools

    private func tools() -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        for i in order {
            guard let agent = agents[i], let agentSpec = agent.agent else { continue }
            let permissions = engine.permissions(of: agent.id)
            let declared = Set(agentSpec.tools.map(\.value))
            for (j, tool) in spec.steps[i].tools.enumerated()
            where fleet.tool(tool.value, namespace: workflow.metadata.namespace) != nil {
                let path = stepPath(i).appending("tools").appending(j)
                if !declared.contains(tool.value) {
                    diagnostics.append(
                        .error(
                            .permToolUndeclared,
                            "step \"\(id(i))\" uses tool \"\(tool.value)\", which agent \"\(agent.metadata.name)\" does not declare in spec.tools",
                            at: tool.location, resource: workflow.id, path: path,
                            notes: [.init("agent \"\(agent.metadata.name)\" is defined here", at: agent.nameLocation)]))
                }
                if !permissions.permits(.tool, tool.value) {
                    let decision = permissions.decide(.tool, tool.value)
                    diagnostics.append(
                        .error(
                            .permToolDenied,
                            "step \"\(id(i))\" uses tool \"\(tool.value)\", which agent \"\(agent.metadata.name)\" may not use: \(decision.reason)",
                            at: tool.location, resource: workflow.id, path: path,
                            notes: PolicyAudit.notes(for: decision, permissions)))
                }
            }
        }
        return diagnostics
    }

    // MARK: Handoffs

    /// For each step, the agent steps whose output reaches it directly or through
    /// approval gates (a gate passes on what it was shown), with the place in the step
    /// that names the edge.
    private func providers() -> [[(step: Int, location: SourceLocation)]] {
        var providers = [[(step: Int, location: SourceLocation)]](repeating: [], count: spec.steps.count)
        // What a gate passes on: the agent steps behind it.
        var behindGate = [[Int]](repeating: [], count: spec.steps.count)
        for i in order {
            var seen = Set<Int>()
            for source in graph.dataSources[i] {
                let origins = spec.steps[source.step].isApprovalGate ? behindGate[source.step] : [source.step]
                for origin in origins where seen.insert(origin).inserted {
                    providers[i].append((origin, source.location))
                }
            }
            if spec.steps[i].isApprovalGate { behindGate[i] = providers[i].map(\.step) }
        }
        return providers
    }

    private func handoffs() -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        let providers = providers()
        for i in order {
            guard let receiver = agents[i] else { continue }
            for (source, location) in providers[i] {
                guard let sender = agents[source], sender.id != receiver.id else { continue }
                let permissions = engine.permissions(of: sender.id)
                guard !permissions.permits(.handoff, receiver.metadata.name) else { continue }
                let decision = permissions.decide(.handoff, receiver.metadata.name)
                diagnostics.append(
                    .error(
                        .permHandoffDenied,
                        "step \"\(id(i))\" receives the output of step \"\(id(source))\", but agent \"\(sender.metadata.name)\" may not hand off to agent \"\(receiver.metadata.name)\": \(decision.reason)",
                        at: location, resource: workflow.id, path: stepPath(i),
                        notes: PolicyAudit.notes(for: decision, permissions)))
            }
        }
        return diagnostics
    }

    // MARK: Approval gates

    private func approvals() -> [Diagnostic] {
        // ungated[i]: some path from a root reaches step i without passing a gate;
        // via[i] is the previous step on one such path.
        var ungated = [Bool](repeating: false, count: spec.steps.count)
        var via = [Int?](repeating: nil, count: spec.steps.count)
        for i in order where !spec.steps[i].isApprovalGate {
            if graph.dependencies[i].isEmpty {
                ungated[i] = true
            } else if let open = graph.dependencies[i].first(where: { ungated[$0] }) {
                ungated[i] = true
                via[i] = open
            }
        }
        var diagnostics: [Diagnostic] = []
        for i in order where ungated[i] {
            guard let agent = agents[i] else { continue }
            let permissions = engine.permissions(of: agent.id)
            for (j, tool) in spec.steps[i].tools.enumerated() {
                let rules = permissions.approvalRules(forTool: tool.value)
                guard !rules.isEmpty else { continue }
                var path = [i]
                while let previous = via[path[path.count - 1]] { path.append(previous) }
                let route = path.reversed().map { "\"\(id($0))\"" }.joined(separator: " → ")
                let policies = Array(Set(rules.map(\.policy.description))).sorted().joined(separator: ", ")
                diagnostics.append(
                    .error(
                        .permApprovalMissing,
                        "step \"\(id(i))\" uses tool \"\(tool.value)\", which needs a human approval gate (\(policies)), but the path \(route) reaches it without one",
                        at: tool.location, resource: workflow.id, path: stepPath(i).appending("tools").appending(j),
                        notes: rules.map { .init("approval required by \($0.policy) here", at: $0.location) }))
            }
        }
        return diagnostics
    }

    // MARK: Data classes

    private func dataflow() -> [Diagnostic] {
        let flow = DataClassFlow(spec: spec, graph: graph, order: order, namespace: workflow.metadata.namespace, fleet: fleet)
        guard !flow.classNames.isEmpty else { return [] }
        let classNames = flow.classNames
        var diagnostics: [Diagnostic] = []
        for i in order {
            let step = spec.steps[i]
            guard let agent = agents[i] else { continue }
            let permissions = engine.permissions(of: agent.id)
            let name = agent.metadata.name

            for c in flow.carried[i].elements {
                guard !permissions.permits(.dataClass, classNames[c]) else { continue }
                let decision = permissions.decide(.dataClass, classNames[c])
                diagnostics.append(
                    .error(
                        .permDataflow,
                        "data of class \"\(classNames[c])\" reaches step \"\(id(i))\" (\(route(of: c, to: i, flow))), but agent \"\(name)\" is not cleared for it: \(decision.reason)",
                        at: step.id.location, resource: workflow.id, path: stepPath(i),
                        notes: PolicyAudit.notes(for: decision, permissions)))
            }

            for (j, used) in step.tools.enumerated() where flow.egressTools.contains(used.value) {
                // What the step can send out: everything it holds but what this tool itself returns.
                let sent = flow.received[i].union(flow.classes(of: step.tools.filter { $0.value != used.value }))
                for c in sent.elements {
                    guard !permissions.permits(.egress, classNames[c]) else { continue }
                    let decision = permissions.decide(.egress, classNames[c])
                    diagnostics.append(
                        .error(
                            .permDataflow,
                            "step \"\(id(i))\" can send data of class \"\(classNames[c])\" (\(route(of: c, to: i, flow, besides: used.value))) out through egress tool \"\(used.value)\", but agent \"\(name)\" may not send \"\(classNames[c])\" out: \(decision.reason)",
                            at: used.location, resource: workflow.id, path: stepPath(i).appending("tools").appending(j),
                            notes: PolicyAudit.notes(for: decision, permissions)))
                }
            }
        }
        return diagnostics
    }

    /// `from tool "crm" in "triage" → "draft" → "send"`: one way a class reached a step,
    /// rebuilt only for a report by walking back through the sources that carry it.
    /// `besides`: the egress tool the data leaves through, which is not where it came
    /// from (what a tool returns is not what the step sends out through it).
    private func route(of dataClass: Int, to step: Int, _ flow: DataClassFlow, besides: String? = nil) -> String {
        var hops = [step]
        while let upstream = graph.dataSources[hops[hops.count - 1]].first(where: { flow.carried[$0.step].contains(dataClass) }) {
            hops.append(upstream.step)
        }
        let first = hops[hops.count - 1]
        let origin = spec.steps[first].tools.first {
            flow.toolClasses[$0.value]?.contains(dataClass) == true && !(first == step && $0.value == besides)
        }
        return "from tool \"\(origin?.value ?? "?")\" in " + hops.reversed().map { "\"\(id($0))\"" }.joined(separator: " → ")
    }

    // MARK: Budgets

    private func budgets() -> [Diagnostic] {
        let namespace = workflow.metadata.namespace
        // Worst case per agent step: every attempt spends the step's maxTokens at the
        // model's dearer price (input or output). A step without maxTokens has no bound
        // to plan with (maxTokensPerCall bounds one call, and an attempt makes several);
        // the gateway still enforces the budget at run time.
        var worst: [(agent: Resource, usd: Double, tokens: Int)] = []
        for i in order {
            let step = spec.steps[i]
            guard let agent = agents[i], let agentSpec = agent.agent, let maxTokens = step.maxTokens else {
                continue
            }
            let model = agentSpec.model.value
            guard
                let pricing = fleet.resource(.modelProvider, model.provider, namespace: namespace)?.modelProvider?.model(
                    named: model.model)?.pricing
            else { continue }
            let tokens = step.retry.attempts.saturatingMultiplied(by: maxTokens)
            worst.append((agent, Double(tokens) * max(pricing.input, pricing.output) / 1_000_000, tokens))
        }
        guard !worst.isEmpty else { return [] }

        var diagnostics: [Diagnostic] = []
        for budget in fleet.resources(of: .budget, namespace: namespace) {
            guard let budgetSpec = budget.budget else { continue }
            let covered = worst.filter { budgetSpec.appliesTo.selects($0.agent.metadata) }
            guard !covered.isEmpty else { continue }
            // A shared pool pays for every covered step; a per-agent budget for each agent's own.
            let groups: [(who: String, usd: Double, tokens: Int)] =
                switch budgetSpec.scope {
                case .shared:
                    [("", covered.map(\.usd).reduce(0, +), covered.map(\.tokens).reduce(0) { $0.saturatingAdding($1) })]
                case .perAgent:
                    Dictionary(grouping: covered, by: { $0.agent.metadata.name }).sorted { $0.key < $1.key }.map { name, items in
                        (" for agent \"\(name)\"", items.map(\.usd).reduce(0, +), items.map(\.tokens).reduce(0) { $0.saturatingAdding($1) })
                    }
                }
            for group in groups {
                for limit in budgetSpec.limits {
                    var over: [String] = []
                    if let usd = limit.usd, group.usd > usd {
                        over.append("$\(Self.money(group.usd)) against the $\(Self.money(usd)) per \(limit.window.rawValue)")
                    }
                    if let tokens = limit.tokens, group.tokens > tokens {
                        over.append("\(group.tokens) tokens against the \(tokens) per \(limit.window.rawValue)")
                    }
                    guard !over.isEmpty else { continue }
                    diagnostics.append(
                        .warning(
                            .budgetInfeasible,
                            "one run of this workflow can spend up to \(over.joined(separator: " and ")) of \(budget.id)\(group.who) (every attempt of every step using its maxTokens)",
                            at: workflow.nameLocation, resource: workflow.id, path: ValuePath([.key("metadata"), .key("name")]),
                            notes: [.init("\(budget.id) is defined here", at: budget.nameLocation)]))
                }
            }
        }
        return diagnostics
    }

    /// Dollars with cents: 3.5 → "3.50", rounded up: a worst case is never shown as less than it is.
    static func money(_ value: Double) -> String { String(Money.format(value, rounding: .up).dropFirst()) }
}

/// The data classes along a workflow's DAG: what each step receives from the steps it
/// reads, and what its output carries (that, and what its own tools return). The audit
/// judges them; a run records them on each step's task.
struct DataClassFlow {
    /// The classes this workflow's tools carry, numbered, so each step's set is a bit
    /// set and propagating them costs a few word operations per edge.
    private(set) var classNames: [String] = []
    private(set) var toolClasses: [String: [Int]] = [:]
    private(set) var egressTools = Set<String>()
    private(set) var received: [BitSet] = []
    private(set) var carried: [BitSet] = []

    init(spec: WorkflowSpec, graph: WorkflowGraph, order: [Int], namespace: String, fleet: Fleet) {
        var classIndex: [String: Int] = [:]
        for step in spec.steps {
            for used in step.tools where toolClasses[used.value] == nil {
                let tool = fleet.tool(used.value, namespace: namespace)
                if tool?.capabilities.contains(.egress) == true { egressTools.insert(used.value) }
                toolClasses[used.value] = (tool?.dataClasses ?? []).map { name in
                    if let i = classIndex[name] { return i }
                    classIndex[name] = classNames.count
                    classNames.append(name)
                    return classNames.count - 1
                }
            }
        }
        let empty = BitSet(count: classNames.count)
        received = [BitSet](repeating: empty, count: spec.steps.count)
        carried = received
        guard !classNames.isEmpty else { return }
        for i in order {
            for source in graph.dataSources[i] { received[i].formUnion(carried[source.step]) }
            carried[i] = received[i].union(classes(of: spec.steps[i].tools))
        }
    }

    func classes(of tools: some Sequence<Located<String>>) -> BitSet {
        var set = BitSet(count: classNames.count)
        for tool in tools {
            for c in toolClasses[tool.value] ?? [] { set.insert(c) }
        }
        return set
    }

    /// The names of the classes in `set`, sorted.
    func names(_ set: BitSet) -> [String] { set.elements.map { classNames[$0] }.sorted() }
}
