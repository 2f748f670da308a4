public import OrlJSON

/// An answer to "may this agent do X?" with everything that explains it: the deciding
/// rules, the allows a deny overrode, and for tools the approval gates they need.
public struct PermissionAnswer: Sendable {
    public var kind: PermissionKind
    public var value: String
    public var decision: PermissionDecision
    /// Allow rules that match but lose to a deny: shown so "why is this denied when my
    /// policy allows it?" answers itself.
    public var overridden: [PolicyRule]
    /// Rules that put a tool behind a human approval gate (tools only).
    public var approval: [PolicyRule]

    public var isAllowed: Bool { decision.isAllowed }
}

/// Why an agent may or may not do what it does: the policies that select it, all of
/// their rules, and the answer for each thing the agent declares. `orlctl explain`
/// renders it.
public struct AgentExplanation: Sendable {
    /// A Policy that applies to the agent, and how it selects it.
    public struct SelectingPolicy: Sendable {
        public var policy: Resource
        /// Named in `appliesTo.agents`.
        public var byName: Bool
        /// Matched by `appliesTo.selector`.
        public var byLabels: Bool
    }

    /// Something the agent's spec asks for (its model, a tool, a secret), where, and
    /// whether its policies let it.
    public struct Use: Sendable {
        public var answer: PermissionAnswer
        public var location: SourceLocation
    }

    public let agent: Resource
    public let permissions: EffectivePermissions
    /// In name order, as the engine applies them.
    public let policies: [SelectingPolicy]
    /// The model, then the tools and secrets in spec order.
    public let uses: [Use]
    /// Secrets orl presents itself (provider keys, tool credentials), which no agent reads.
    private let credentials: CredentialSecrets
    /// The workflow steps the agent may serve, with the bounded path each is on
    /// ("via route billing of step \"classify\"", "sub-task delegated by \"plan\", round ≤ 2"):
    /// what the audit proves this agent's permissions for.
    public let serves: [Service]

    public struct Service: Sendable, Hashable {
        public var workflow: ResourceID
        /// The step as written (loop rounds, slots and turns fold into it).
        public var step: String
        /// How the agent comes to serve it, empty for a plain step.
        public var path: String
        public var location: SourceLocation
    }

    /// Nil when the fleet has no such agent.
    public init?(agent id: ResourceID, fleet: Fleet, engine: PolicyEngine) {
        guard let agent = fleet[id], let spec = agent.agent else { return nil }
        let permissions = engine.permissions(of: id)
        self.agent = agent
        self.permissions = permissions
        let credentials = CredentialSecrets(fleet)
        self.credentials = credentials
        policies = permissions.policies.compactMap { policyID in
            guard let policy = fleet[policyID], let appliesTo = policy.policy?.appliesTo else { return nil }
            return SelectingPolicy(
                policy: policy, byName: appliesTo.agents.contains { $0.value == id.name },
                byLabels: appliesTo.selector?.matches(agent.metadata.labels) ?? false)
        }
        let namespace = id.namespace
        func answer(_ kind: PermissionKind, _ value: String) -> PermissionAnswer {
            Self.answer(kind, value, permissions, credentials, namespace: namespace)
        }
        var uses = [Use(answer: answer(.model, spec.model.value.description), location: spec.model.location)]
        uses += spec.tools.map { Use(answer: answer(.tool, $0.value), location: $0.location) }
        uses += spec.secrets.map { Use(answer: answer(.secret, $0.name.value), location: $0.name.location) }
        self.uses = uses
        serves = Self.services(of: id, in: fleet)
    }

    /// Each expanded step the agent may serve, folded onto its declared step, once per
    /// way (a loop's rounds, a planner's slots and a chain's turns are one line each).
    static func services(of agent: ResourceID, in fleet: Fleet) -> [Service] {
        var result: [Service] = []
        var seen = Set<String>()
        for workflow in fleet.resources(of: .workflow, namespace: agent.namespace) {
            guard let spec = workflow.workflow else { continue }
            let graph = spec.graph
            var branches: BranchMembership?
            for (i, step) in spec.steps.enumerated() where graph.index[step.id.value] == i {
                let pool = step.generated?.pool ?? []
                let mine = pool.isEmpty ? step.agent?.value == agent.name : pool.contains { $0.value == agent.name }
                guard mine else { continue }
                let g = step.generated
                var parts: [String] = []
                var declared = step.outputKey
                if let from = g?.takesOverFrom, let n = g?.fallback {
                    declared = spec.steps[graph.index[from] ?? i].outputKey
                    parts.append("fallback \(n) of \"\(declared)\" (when its agent exhausts its retries)")
                } else if let turn = g?.turn, let handoff = step.handoff {
                    _ = turn
                    parts.append(
                        "hand-off turn of \"\(declared)\", after its agent hands the task off (at most \(handoff.maxHandoffs) hand-off\(handoff.maxHandoffs == 1 ? "" : "s"))"
                    )
                } else if let planner = g?.delegation, g?.task != nil,
                    let p = graph.index[planner], let delegate = spec.steps[p].delegate
                {
                    declared = planner
                    parts.append(
                        "sub-task delegated by \"\(planner)\" (agent \(spec.steps[p].agent?.value ?? "?")), round ≤ \(delegate.maxRounds), at most \(delegate.maxTasks) a round"
                    )
                } else if let planner = g?.delegation, let delegate = spec.steps[graph.index[planner] ?? i].delegate,
                    delegate.maxRounds > 1
                {
                    parts.append("planner, round ≤ \(delegate.maxRounds)")
                }
                if let handoff = step.handoff, g?.turn == nil {
                    parts.append(
                        "may hand the task to \(handoff.agents.map(\.value).joined(separator: ", ")) (at most \(handoff.maxHandoffs))")
                }
                if let loop = g?.loop, let closing = graph.index[loop], let bound = spec.steps[closing].loop?.maxRounds {
                    parts.append("round ≤ \(bound) of loop \"\(loop)\"")
                }
                if branches == nil, spec.steps.contains(where: { $0.route != nil }) {
                    branches = BranchMembership(spec: spec, graph: graph)
                }
                parts += (branches?.routes(of: i) ?? []).map { "via route \($0)" }
                if !step.publish.isEmpty { parts.append("publishes \(step.publish.map(\.value).joined(separator: ", "))") }
                if !step.subscribe.isEmpty { parts.append("subscribes to \(step.subscribe.map(\.value).joined(separator: ", "))") }
                let path = parts.joined(separator: "; ")
                guard seen.insert("\(workflow.id)|\(declared)|\(path)").inserted else { continue }
                let location = graph.index[declared].map { spec.steps[$0].id.location } ?? step.id.location
                result.append(Service(workflow: workflow.id, step: declared, path: path, location: location))
            }
        }
        return result
    }

    public func answer(_ kind: PermissionKind, _ value: String) -> PermissionAnswer {
        Self.answer(kind, value, permissions, credentials, namespace: agent.metadata.namespace)
    }

    static func answer(
        _ kind: PermissionKind, _ value: String, _ permissions: EffectivePermissions, _ credentials: CredentialSecrets, namespace: String
    ) -> PermissionAnswer {
        let decision =
            kind == .secret
            ? credentials.decide(SecretID(namespace: namespace, name: value), permissions) : permissions.decide(kind, value)
        let overridden =
            decision.outcome == .denied
            ? permissions.rules.filter { $0.effect == .allow && $0.kind == kind && $0.matches(value) } : []
        let approval = kind == .tool ? permissions.approvalRules(forTool: value) : []
        return PermissionAnswer(kind: kind, value: value, decision: decision, overridden: overridden, approval: approval)
    }

    /// The allow and deny rules about one kind of permission, in policy then source order.
    public func rules(_ kind: PermissionKind) -> [PolicyRule] {
        permissions.rules.filter { $0.kind == kind && $0.effect != .requireApproval }
    }

    /// The rules that put tools behind a human approval gate.
    public var approvalRules: [PolicyRule] {
        permissions.rules.filter { $0.effect == .requireApproval }
    }
}
