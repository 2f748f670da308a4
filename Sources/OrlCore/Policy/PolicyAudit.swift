import OrlJSON

/// Proves, before anything runs, that agents and workflow DAGs respect the policies:
/// tools, models, secrets, handoffs along DAG edges, approval gates on every path, data
/// classes along every edge, and budgets.
///
/// Every check is linear (or near-linear) in steps and edges: facts are propagated
/// once through the DAG in topological order, never by enumerating paths.
public enum PolicyAudit {
    public static func run(_ fleet: Fleet, engine: PolicyEngine) -> [Diagnostic] {
        let (declared, handoffs) = engineChecks(fleet, engine: engine)
        return declared + unmatched(fleet) + handoffs
    }

    /// The checks that need no `PolicyEngine`: names a Policy gives that match nothing.
    /// `run` reports them between `engineChecks`' two parts; apart, so that they can be
    /// made on another core while the engine is built.
    static func unmatched(_ fleet: Fleet) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        var names: [String: NamespaceNames] = [:]
        for policy in fleet.resources(of: .policy) {
            let namespace = policy.metadata.namespace
            let known = names[namespace] ?? NamespaceNames(namespace, in: fleet)
            names[namespace] = known
            diagnostics += unmatchedNames(policy, in: fleet, names: known)
        }
        return diagnostics
    }

    /// The checks against the engine: what agents and workflows declare, then (apart,
    /// as `run` reports them after `unmatched`) the handoffs' reach.
    static func engineChecks(_ fleet: Fleet, engine: PolicyEngine) -> (declared: [Diagnostic], handoffs: [Diagnostic]) {
        // Without every Policy of a namespace the audit would report denials that the
        // unreadable one may grant; its schema error is the problem to fix first. Budgets
        // likewise for coverage.
        // A document that could not even be named may be a Policy or Budget of any namespace.
        let namespaces = Set(fleet.resources.map(\.metadata.namespace))
        let blindPolicies = namespaces.filter { fleet.mayMiss(.policy, in: $0) }
        let blindBudgets = namespaces.filter { fleet.mayMiss(.budget, in: $0) }
        var diagnostics: [Diagnostic] = []
        let credentials = CredentialSecrets(fleet)
        // Whether some Budget covers each agent, by namespace: its Budgets' selectors
        // evaluated once per label class, not once per agent.
        var coverage: (namespace: String, agents: AgentClasses, budgets: AgentCoverage)?
        for agent in fleet.resources(of: .agent) {
            let namespace = agent.metadata.namespace
            if coverage?.namespace != namespace {
                let agents = AgentClasses(fleet, namespace: namespace)
                let budgets = fleet.resources(of: .budget, namespace: namespace).compactMap { $0.budget?.appliesTo }
                coverage = (namespace, agents, AgentCoverage(budgets, in: agents))
            }
            let covered = coverage.map { $0.budgets.covers($0.agents.byName[agent.metadata.name]!, of: $0.agents) } ?? false
            diagnostics += audit(
                agent: agent, permissions: engine.permissions(of: agent.id), credentials: credentials, fleet: fleet,
                permissions: !blindPolicies.contains(namespace), budgets: !blindBudgets.contains(namespace), covered: covered)
        }
        for workflow in fleet.resources(of: .workflow) where !blindPolicies.contains(workflow.metadata.namespace) {
            diagnostics += WorkflowAudit(workflow: workflow, fleet: fleet, engine: engine)?.run() ?? []
        }
        var handoffs: [Diagnostic] = []
        for namespace in namespaces.sorted() where !blindPolicies.contains(namespace) && !fleet.mayMiss(.agent, in: namespace) {
            handoffs += handoffReach(in: namespace, of: fleet, engine: engine)
        }
        return (diagnostics, handoffs)
    }

    /// The audit of one workflow, and how many judgements it made (one per step, agent
    /// and thing judged): a deterministic measure of its work for benchmarks and tests.
    public static func audit(workflow: Resource, in fleet: Fleet, engine: PolicyEngine) -> (diagnostics: [Diagnostic], work: Int) {
        guard let audit = WorkflowAudit(workflow: workflow, fleet: fleet, engine: engine) else { return ([], 0) }
        let diagnostics = audit.run()
        return (diagnostics, audit.work.count)
    }

    /// What an agent declares, checked on its own: its model, its secrets, its tools, and
    /// whether any budget caps it.
    private static func audit(
        agent: Resource, permissions: EffectivePermissions, credentials: CredentialSecrets, fleet: Fleet,
        permissions checkPermissions: Bool, budgets checkBudgets: Bool, covered: Bool
    ) -> [Diagnostic] {
        guard let spec = agent.agent else { return [] }
        var diagnostics: [Diagnostic] = []
        if checkBudgets, !covered { diagnostics.append(budgetMissing(agent)) }
        guard checkPermissions else { return diagnostics }
        if let trifecta = trifectaDiagnostic(agent, permissions, fleet) { diagnostics.append(trifecta) }
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

    private static func budgetMissing(_ agent: Resource) -> Diagnostic {
        .warning(
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
    /// The Agents that may serve each step: its agent, or for a delegated sub-task
    /// every worker of the pool, each with where the manifest names it (empty for
    /// approval gates and unresolved agents). Every check runs for each of them, so a
    /// sub-task is proven for whichever worker the planner picks at run time.
    let agents: [[(agent: Resource, named: SourceLocation)]]
    /// The sub-task slots after the first of their round: each is the first one again
    /// (same pool, tools, inputs and neighbours; only the id differs), so the per-step
    /// checks judge the first for all of them and a delegation costs the audit
    /// rounds × workers, not slots × workers. The budget still counts every slot.
    let mirrors: [Bool]
    /// What the audit judged: one per (step, agent, thing judged) pair it visits. A
    /// deterministic measure of its work, which tests bound as the patterns' bounds grow.
    let work = WorkCounter()

    final class WorkCounter {
        var count = 0
    }

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
        agents = RunCost.agents(of: spec, namespace: workflow.metadata.namespace, fleet: fleet)
        mirrors = spec.steps.map { ($0.generated?.task ?? 1) > 1 }
    }

    func stepPath(_ i: Int) -> ValuePath { ValuePath([.key("spec"), .key("steps"), .index(i)]) }
    func id(_ i: Int) -> String { spec.steps[i].id.value }

    func run() -> [Diagnostic] {
        PatternAudit.refine(
            tools() + handoffs() + approvals() + dataflow() + trifecta() + budgets(), spec: spec, graph: graph, workflow: workflow.id)
    }

    // MARK: Tools

    private func tools() -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        // The sub-task slots of a delegation repeat the same (worker, tool) pairs: each
        // is judged once, so the audit grows with slots + workers, not their product.
        var verdicts: [String: (declared: Bool, permitted: Bool)] = [:]
        for i in order where !mirrors[i] {
            for (agent, _) in agents[i] {
                guard let agentSpec = agent.agent else { continue }
                let permissions = engine.permissions(of: agent.id)
                for (j, tool) in spec.steps[i].tools.enumerated()
                where fleet.tool(tool.value, namespace: workflow.metadata.namespace) != nil {
                    work.count += 1
                    let key = "\(agent.id)|\(tool.value)"
                    let verdict =
                        verdicts[key]
                        ?? {
                            let v = (agentSpec.tools.contains { $0.value == tool.value }, permissions.permits(.tool, tool.value))
                            verdicts[key] = v
                            return v
                        }()
                    guard !verdict.declared || !verdict.permitted else { continue }
                    let path = stepPath(i).appending("tools").appending(j)
                    if !verdict.declared {
                        diagnostics.append(
                            .error(
                                .permToolUndeclared,
                                "step \"\(id(i))\" uses tool \"\(tool.value)\", which agent \"\(agent.metadata.name)\" does not declare in spec.tools",
                                at: tool.location, resource: workflow.id, path: path,
                                notes: [.init("agent \"\(agent.metadata.name)\" is defined here", at: agent.nameLocation)]))
                    }
                    if !verdict.permitted {
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
        }
        return diagnostics
    }

    // MARK: Handoffs

    /// For each step, the agent steps whose output reaches it directly or through
    /// approval gates (a gate passes on what it was shown), with the place in the step
    /// that names the edge.
    private func providers() -> [[(step: Int, location: SourceLocation, topic: String?)]] {
        var providers = [[(step: Int, location: SourceLocation, topic: String?)]](repeating: [], count: spec.steps.count)
        // What a gate passes on: the agent steps behind it.
        var behindGate = [[Int]](repeating: [], count: spec.steps.count)
        for i in order {
            var seen = Set<Int>()
            for source in graph.dataSources[i] {
                let origins = spec.steps[source.step].isApprovalGate ? behindGate[source.step] : [source.step]
                for origin in origins where seen.insert(origin).inserted {
                    providers[i].append((origin, source.location, nil))
                }
            }
            // A topic's publishers (agent steps) reach each subscriber directly.
            for source in graph.topicSources[i] where seen.insert(source.step).inserted {
                providers[i].append((source.step, source.location, source.topic))
            }
            if spec.steps[i].isApprovalGate { behindGate[i] = providers[i].map(\.step) }
        }
        return providers
    }

    private func handoffs() -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        let providers = providers()
        // Judged once per pair of agents, and reported once per pair and step: a step
        // after a delegation receives from every slot, each served by any worker.
        var allowed: [String: Bool] = [:]
        for i in order where !mirrors[i] {
            var seen = Set<String>()
            for (receiver, named) in agents[i] {
                for (source, edge, topic) in providers[i] where !mirrors[source] {
                    for (sender, _) in agents[source] where sender.id != receiver.id {
                        work.count += 1
                        let pair = "\(sender.id)|\(receiver.id)"
                        guard seen.insert(pair).inserted else { continue }
                        // A sub-task's finding is about the worker: point at it in the pool.
                        let location = agents[i].count > 1 ? named : edge
                        let permissions = engine.permissions(of: sender.id)
                        let permitted =
                            allowed[pair]
                            ?? {
                                let p = permissions.permits(.handoff, receiver.metadata.name)
                                allowed[pair] = p
                                return p
                            }()
                        guard !permitted else { continue }
                        let decision = permissions.decide(.handoff, receiver.metadata.name)
                        diagnostics.append(
                            .error(
                                .permHandoffDenied,
                                "step \"\(id(i))\" \(topic.map { "reads topic \"\($0)\", which step \"\(id(source))\" publishes" } ?? "receives the output of step \"\(id(source))\""), but agent \"\(sender.metadata.name)\" may not hand off to agent \"\(receiver.metadata.name)\": \(decision.reason)",
                                at: location, resource: workflow.id, path: stepPath(i),
                                notes: PolicyAudit.notes(for: decision, permissions)))
                    }
                }
            }
        }
        return diagnostics + transitiveHandoffs(providers)
    }

    /// Handoffs are transitive: what A's output says can reach C through B, so a deny of
    /// A's handoff to C holds along every path, not only on a direct edge. (A handoff no
    /// policy allows is only required of direct edges: a chain of per-hop allows is how a
    /// pipeline is written.)
    private func transitiveHandoffs(_ providers: [[(step: Int, location: SourceLocation, topic: String?)]]) -> [Diagnostic] {
        // Only senders with a handoff deny can be refused along a path.
        let denying = Set(
            agents.joined().map(\.agent).filter { agent in
                engine.permissions(of: agent.id).hasRule(.handoff, .deny)
            }.map(\.id))
        guard !denying.isEmpty else { return [] }
        // upstream[i]: the agent steps whose output reaches step i along some path.
        var upstream = [BitSet](repeating: BitSet(count: spec.steps.count), count: spec.steps.count)
        // Topic edges may run against the DAG's order: then to a fixed point (each pass
        // only adds, so at most one pass per step more).
        var changed = true
        while changed {
            changed = false
            for i in order {
                let before = upstream[i]
                for source in providers[i] {
                    upstream[i].insert(source.step)
                    upstream[i].formUnion(upstream[source.step])
                }
                if upstream[i] != before { changed = true }
            }
            if !graph.hasTopics { break }
        }
        var diagnostics: [Diagnostic] = []
        for i in order where !mirrors[i] {
            let direct = Set(providers[i].map(\.step))
            // Reported once per pair of agents and receiving step, as direct handoffs are.
            var seen = Set<String>()
            for origin in upstream[i].elements where !direct.contains(origin) && !mirrors[origin] {
                for (receiver, _) in agents[i] {
                    work.count += 1
                    for (sender, _) in agents[origin] where sender.id != receiver.id && denying.contains(sender.id) {
                        guard seen.insert("\(sender.id)|\(receiver.id)").inserted else { continue }
                        let permissions = engine.permissions(of: sender.id)
                        let decision = permissions.decide(.handoff, receiver.metadata.name)
                        guard decision.outcome == .denied else { continue }
                        // One way the output travels, walked back from the receiver.
                        var hops = [i]
                        var visited: Set<Int> = [i]
                        while let next = providers[hops[hops.count - 1]].first(where: {
                            !visited.contains($0.step) && ($0.step == origin || upstream[$0.step].contains(origin))
                        }) {
                            hops.append(next.step)
                            visited.insert(next.step)
                            if next.step == origin { break }
                        }
                        let route = hops.reversed().map { "\"\(id($0))\"" }.joined(separator: " → ")
                        diagnostics.append(
                            .error(
                                .permHandoffDenied,
                                "step \"\(id(i))\" receives the output of step \"\(id(origin))\" through \(route), but agent \"\(sender.metadata.name)\" may not hand off to agent \"\(receiver.metadata.name)\": \(decision.reason)",
                                at: spec.steps[i].id.location, resource: workflow.id, path: stepPath(i),
                                notes: PolicyAudit.notes(for: decision, permissions)))
                    }
                }
            }
        }
        return diagnostics
    }

    // MARK: Approval gates

    /// Whether step `i` is an approval gate that counts as a human decision: one that
    /// approves itself when its timeout passes does not, unless every rule asking for the
    /// gate says it may (`acceptTimeoutApproval`).
    private func isHumanGate(_ i: Int, acceptTimeout: Bool) -> Bool {
        guard case .approval(let approval) = spec.steps[i].executor else { return false }
        return acceptTimeout || approval.onTimeout == .deny
    }

    /// ungated[i]: some path from a root reaches step i without passing a gate that
    /// counts; via[i] is the previous step on one such path.
    private func ungatedPaths(acceptTimeout: Bool) -> (ungated: [Bool], via: [Int?]) {
        var ungated = [Bool](repeating: false, count: spec.steps.count)
        var via = [Int?](repeating: nil, count: spec.steps.count)
        for i in order where !isHumanGate(i, acceptTimeout: acceptTimeout) {
            if graph.dependencies[i].isEmpty {
                ungated[i] = true
            } else if let open = graph.dependencies[i].first(where: { ungated[$0] }) {
                ungated[i] = true
                via[i] = open
            }
        }
        return (ungated, via)
    }

    private func approvals() -> [Diagnostic] {
        let strict = ungatedPaths(acceptTimeout: false)
        // Only computed when some gate approves itself: otherwise both are the same.
        let selfApproving = spec.steps.contains {
            if case .approval(let approval) = $0.executor { return approval.onTimeout == .approve }
            return false
        }
        let lenient = selfApproving ? ungatedPaths(acceptTimeout: true) : strict
        var diagnostics: [Diagnostic] = []
        for i in order where strict.ungated[i] && !mirrors[i] {
            for (agent, _) in agents[i] {
                let permissions = engine.permissions(of: agent.id)
                for (j, tool) in spec.steps[i].tools.enumerated() {
                    work.count += 1
                    let rules = permissions.approvalRules(forTool: tool.value)
                    if rules.isEmpty {
                        if let risky = risky(tool.value) {
                            let route = route(to: i, strict.via)
                            diagnostics.append(
                                .warning(
                                    .permRiskyUngated,
                                    "step \(Diagnostic.quoted(id(i))) uses tool \(Diagnostic.quoted(tool.value)) (\(risky)) with no human approval gate on the path \(route.text), and no Policy requires one",
                                    at: tool.location, resource: workflow.id, path: stepPath(i).appending("tools").appending(j),
                                    notes: selfApprovalNotes(route.steps)))
                        }
                        continue
                    }
                    let paths = rules.allSatisfy(\.acceptsTimeoutApproval) ? lenient : strict
                    guard paths.ungated[i] else { continue }
                    let route = route(to: i, paths.via)
                    let policies = Array(Set(rules.map(\.source))).sorted().joined(separator: ", ")
                    diagnostics.append(
                        .error(
                            .permApprovalMissing,
                            "step \"\(id(i))\" uses tool \"\(tool.value)\", which needs a human approval gate (\(policies)), but the path \(route.text) reaches it without one",
                            at: tool.location, resource: workflow.id, path: stepPath(i).appending("tools").appending(j),
                            notes: rules.map { .init("approval required by \($0.source) here", at: $0.location) }
                                + selfApprovalNotes(route.steps)))
                }
            }
        }
        return diagnostics
    }

    /// `"a" → "b" → "c"`: the ungated path to step `i`, from its root.
    private func route(to i: Int, _ via: [Int?]) -> (steps: [Int], text: String) {
        var path = [i]
        while let previous = via[path[path.count - 1]] { path.append(previous) }
        let steps = Array(path.reversed())
        return (steps, steps.map { "\"\(id($0))\"" }.joined(separator: " → "))
    }

    /// Why a gate on the path did not count.
    private func selfApprovalNotes(_ steps: [Int]) -> [Diagnostic.Note] {
        steps.filter { spec.steps[$0].isApprovalGate }.map { g in
            .init(
                "approval step \(Diagnostic.quoted(id(g))) approves itself when its timeout passes (onTimeout: approve), so it is not a human gate; set onTimeout: deny, or acceptTimeoutApproval: true in the Policy",
                at: spec.steps[g].id.location)
        }
    }

    /// What makes a tool dangerous to run unattended: `irreversible`, `code-execution`,
    /// `risk: critical`; nil when none.
    private func risky(_ name: String) -> String? {
        guard let tool = fleet.tool(name, namespace: workflow.metadata.namespace) else { return nil }
        var why = tool.capabilities.filter { $0 == .irreversible || $0 == .codeExecution }.map(\.rawValue)
        if tool.risk == .critical { why.append("risk: critical") }
        return why.isEmpty ? nil : why.joined(separator: ", ")
    }

    // MARK: Data classes

    private func dataflow() -> [Diagnostic] {
        let flow = DataClassFlow(spec: spec, graph: graph, order: order, namespace: workflow.metadata.namespace, fleet: fleet)
        guard !flow.classNames.isEmpty else { return [] }
        let classNames = flow.classNames
        var diagnostics: [Diagnostic] = []
        // Once per agent, kind and class (a delegation's slots repeat them).
        var memo: [String: Bool] = [:]
        func permits(_ permissions: EffectivePermissions, _ kind: PermissionKind, _ value: String) -> Bool {
            let key = "\(permissions.agent)|\(kind)|\(value)"
            if let known = memo[key] { return known }
            let verdict = permissions.permits(kind, value)
            memo[key] = verdict
            return verdict
        }
        for i in order where !mirrors[i] {
            let step = spec.steps[i]
            for (agent, _) in agents[i] {
                let permissions = engine.permissions(of: agent.id)
                let name = agent.metadata.name

                for c in flow.carried[i].elements {
                    work.count += 1
                    guard !permits(permissions, .dataClass, classNames[c]) else { continue }
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
                        guard !permits(permissions, .egress, classNames[c]) else { continue }
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
        }
        return diagnostics
    }

    // MARK: Untrusted content

    /// The lethal trifecta along the DAG: a step that can send data out through an
    /// egress tool while it holds a data class and content from a tool whose output is
    /// untrusted, with no human gate between the untrusted content and the step. An
    /// agent that holds all three by itself is reported once, on the agent.
    private func trifecta() -> [Diagnostic] {
        let namespace = workflow.metadata.namespace
        func untrusted(_ tool: String) -> Bool { fleet.tool(tool, namespace: namespace)?.untrustedOutput == true }
        guard spec.steps.contains(where: { $0.tools.contains { untrusted($0.value) } }) else { return [] }
        let flow = DataClassFlow(spec: spec, graph: graph, order: order, namespace: namespace, fleet: fleet)
        // tainted[i]: step i's output may carry untrusted content; origin[i] is the step
        // that read it (a human gate stops it: a person saw what passes).
        var tainted = [Bool](repeating: false, count: spec.steps.count)
        var via = [Int?](repeating: nil, count: spec.steps.count)
        // Through topics too, to a fixed point (a step only ever becomes tainted).
        var changed = true
        while changed {
            changed = false
            for i in order where !tainted[i] {
                if isHumanGate(i, acceptTimeout: false) { continue }
                if spec.steps[i].tools.contains(where: { untrusted($0.value) }) {
                    tainted[i] = true
                } else if let source = graph.dataSources[i].first(where: { tainted[$0.step] })
                    ?? graph.topicSources[i].first(where: { tainted[$0.step] }).map({ (step: $0.step, location: $0.location) })
                {
                    tainted[i] = true
                    via[i] = source.step
                }
                if tainted[i] { changed = true }
            }
            if !graph.hasTopics { break }
        }
        var diagnostics: [Diagnostic] = []
        for i in order where tainted[i] {
            // Skipped when every agent that may serve the step has an agent-level trifecta
            // warning of its own already.
            guard !mirrors[i],
                agents[i].contains(where: { PolicyAudit.trifecta(of: $0.agent, engine.permissions(of: $0.agent.id), fleet) == nil })
            else { continue }
            let step = spec.steps[i]
            // An approval rule on the egress tool is not enough here: a gate before the
            // untrusted content is read approves something the person never saw.
            for (j, used) in step.tools.enumerated() where flow.egressTools.contains(used.value) {
                let held = flow.received[i].union(flow.classes(of: step.tools.filter { $0.value != used.value }))
                guard let c = held.elements.min(by: { flow.classNames[$0] < flow.classNames[$1] }) else { continue }
                var hops = [i]
                while let previous = via[hops[hops.count - 1]] { hops.append(previous) }
                let reader = spec.steps[hops[hops.count - 1]].tools.first { untrusted($0.value) }?.value ?? "?"
                let path = hops.reversed().map { "\"\(id($0))\"" }.joined(separator: " → ")
                diagnostics.append(
                    .warning(
                        .permLethalTrifecta,
                        "step \(Diagnostic.quoted(id(i))) can send data of class \(Diagnostic.quoted(flow.classNames[c])) (\(route(of: c, to: i, flow, besides: used.value))) out through egress tool \(Diagnostic.quoted(used.value)) while holding untrusted content (from tool \(Diagnostic.quoted(reader)) in \(path)) with no human approval gate between: a prompt injection in that content can send the data out",
                        at: used.location, resource: workflow.id, path: stepPath(i).appending("tools").appending(j)))
            }
        }
        return diagnostics
    }

    /// `from tool "crm" in "triage" → "draft" → "send"`: one way a class reached a step,
    /// rebuilt only for a report by walking back through the sources that carry it.
    /// `besides`: the egress tool the data leaves through, which is not where it came
    /// from (what a tool returns is not what the step sends out through it).
    private func route(of dataClass: Int, to step: Int, _ flow: DataClassFlow, besides: String? = nil) -> String {
        // (step, the topic it was read from on the way to the next hop)
        var hops: [(step: Int, topic: String?)] = [(step, nil)]
        var visited: Set<Int> = [step]
        while true {
            let current = hops[hops.count - 1].step
            if let upstream = graph.dataSources[current].first(where: {
                !visited.contains($0.step) && flow.carried[$0.step].contains(dataClass)
            }) {
                hops.append((upstream.step, nil))
                visited.insert(upstream.step)
            } else if !spec.steps[current].tools.contains(where: {
                flow.toolClasses[$0.value]?.contains(dataClass) == true && !(current == step && $0.value == besides)
            }),
                let published = graph.topicSources[current].first(where: {
                    !visited.contains($0.step) && flow.carried[$0.step].contains(dataClass)
                })
            {
                hops[hops.count - 1].topic = published.topic
                hops.append((published.step, nil))
                visited.insert(published.step)
            } else {
                break
            }
        }
        let first = hops[hops.count - 1].step
        let origin = spec.steps[first].tools.first {
            flow.toolClasses[$0.value]?.contains(dataClass) == true && !(first == step && $0.value == besides)
        }
        var text = ""
        for (k, hop) in hops.reversed().enumerated() {
            if k > 0 { text += " → " }
            text += "\"\(id(hop.step))\""
            // The next hop (towards the receiver) read this one's output through the topic.
            if k + 1 < hops.count, let topic = hops[hops.count - 2 - k].topic { text += " → topic \"\(topic)\"" }
        }
        return "from tool \"\(origin?.value ?? "?")\" in " + text
    }

    // MARK: Budgets

    private func budgets() -> [Diagnostic] {
        let namespace = workflow.metadata.namespace
        // A sub-task counts once, at its dearest worker the budget covers.
        // A round's sub-task slots cost the same: priced once, counted for each slot.
        let worst = RunCost.grouped(spec, order: order, agents: agents.map { $0.map(\.agent) }, fleet: fleet)
        work.count += worst.reduce(0) { $0 + $1.candidates.count + $1.times }
        guard !worst.isEmpty else { return [] }

        var diagnostics: [Diagnostic] = []
        for budget in fleet.resources(of: .budget, namespace: namespace) {
            guard let budgetSpec = budget.budget else { continue }
            // A shared pool pays for a sub-task once, at its dearest covered worker; a
            // per-agent budget, for each worker, every sub-task it may be given.
            let covered: [(agent: Resource, usd: Double, tokens: Int)] = worst.flatMap { entry in
                let mine = entry.candidates.filter { budgetSpec.appliesTo.selects($0.agent.metadata) }.map {
                    (agent: $0.agent, usd: $0.usd * Double(entry.times), tokens: $0.tokens.saturatingMultiplied(by: entry.times))
                }
                guard budgetSpec.scope == .shared else { return mine }
                return mine.max { ($0.usd, $0.tokens) < ($1.usd, $1.tokens) }.map { [$0] } ?? []
            }
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
        // What a subscriber reads is what its topics' publishers hold, whenever they
        // run: with topics, propagate to a fixed point (classes only get added, so the
        // passes are bounded by the number of classes).
        var changed = true
        while changed {
            changed = false
            for i in order {
                for source in graph.dataSources[i] { received[i].formUnion(carried[source.step]) }
                for source in graph.topicSources[i] { received[i].formUnion(carried[source.step]) }
                let next = received[i].union(classes(of: spec.steps[i].tools))
                if next != carried[i] {
                    carried[i] = next
                    changed = true
                }
            }
            if !graph.hasTopics { break }
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
