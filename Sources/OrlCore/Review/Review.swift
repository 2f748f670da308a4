public import OrlJSON

/// What a change of manifests (a pull request, from a base revision to a head) does,
/// computed from the two validated sets alone: the resource plan, what each agent gains
/// and loses in effective permissions with the Policy change that caused it, budget
/// changes, and which problems of the audit are new, fixed or still present.
public struct Review: Sendable {
    public struct PermissionChange: Sendable, Hashable {
        public enum Change: String, Sendable, Hashable {
            case gained
            case lost
        }

        public enum Subject: Sendable, Hashable, CustomStringConvertible {
            case permission(PermissionKind, String)
            /// Using a tool without a human approval gate: a gate requirement removed
            /// gains it, one added loses it.
            case approval(tool: String)
            /// Receiving data of a class that other agents read, through a chain of
            /// handoffs (handoffs are transitive).
            case reach(dataClass: String)
            /// Running unconfined (`isolation: none`): gained when an agent leaves its
            /// sandbox, lost when it enters one.
            case unconfined

            /// `tool "web-search"`, `use of tool "publish" without an approval gate`.
            public var description: String {
                switch self {
                case .permission(let kind, let value): "\(kind.noun) \(Diagnostic.quoted(value))"
                case .approval(let tool): "use of tool \(Diagnostic.quoted(tool)) without an approval gate"
                case .reach(let dataClass): "data of class \(Diagnostic.quoted(dataClass)) by handoffs"
                case .unconfined: "running unconfined (isolation: none)"
                }
            }
        }

        public var agent: ResourceID
        public var subject: Subject
        public var change: Change
        /// What caused it: the deciding rule and how the Policy changed.
        public var cause: String
        /// The deciding rule (in head when it is there, else in base).
        public var location: SourceLocation?
        /// For a gain, what it means (see `Review.meaning`).
        public var details: [String] = []
    }

    public struct BudgetChange: Sendable, Hashable {
        public enum Change: String, Sendable, Hashable {
            case added
            case removed
            case raised
            case lowered
            case changed
            /// An agent no Budget covers any more (or a new one that none covers).
            case uncovered
        }

        /// The Budget, or the agent for `uncovered`.
        public var subject: ResourceID
        public var change: Change
        public var message: String
        public var location: SourceLocation?
        /// Whether it lets agents spend more than before.
        public var loosens: Bool
    }

    /// Base to head, with removals as prunes.
    public var plan: Plan
    public var permissions: [PermissionChange]
    public var budgets: [BudgetChange]
    /// Problems of head that base did not have, those base had and head has not, and
    /// those both have (as head reports them).
    public var newDiagnostics: [Diagnostic]
    public var fixedDiagnostics: [Diagnostic]
    public var remainingDiagnostics: [Diagnostic]
    /// Tools whose behaviour changed, and agents whose model or provider did.
    public var tools: [ToolChange] = []
    public var models: [ModelChange] = []
    /// The worst-case spend before and after, as the Budgets cap it (nil when base could
    /// not be read).
    public var spend: SpendChange?
    /// The projected monthly spend before and after (nil when base could not be read).
    public var projection: ProjectionChange?

    public var gained: Int { permissions.count { $0.change == .gained } }
    public var lost: Int { permissions.count { $0.change == .lost } }
    public var newErrors: Int { newDiagnostics.count { $0.severity == .error } }

    /// `2 to add, 1 to change, 0 to remove · permissions: 3 gained, 1 lost · violations: 1 new, 2 fixed`.
    /// `· escalations: N` follows when a budget, tool or model change escalates too.
    public var summary: String {
        let others = escalations - gained
        return
            "\(plan.additions) to add, \(plan.updates) to change, \(plan.prunes) to remove · permissions: \(gained) gained, \(lost) lost · violations: \(newDiagnostics.count) new, \(fixedDiagnostics.count) fixed"
            + (others > 0 ? " · other escalations: \(others)" : "")
    }

    /// Base has documents that could not be read, so what it granted is unknown and
    /// permissions and budgets are not compared (head's are judged by its audit alone).
    public var baseIncomplete = false

    /// Compares two revisions. Head must be complete (`Fleet.isComplete`): a diff built
    /// on a partial fleet reports what the unread documents grant or deny as changes,
    /// so the caller shows head's errors instead.
    /// `observed`: recent tokens per agent from a ledger, which the spend projection
    /// prices at each revision's models (nil: from the schedules alone).
    public static func compare(base: ValidationReport, head: ValidationReport, observed: ObservedUsage? = nil) -> Review {
        let comparable = base.fleet.isComplete
        var review = Review(
            plan: plan(base: base.fleet, head: head.fleet),
            permissions: comparable ? permissionChanges(base: base.fleet, head: head.fleet) : [],
            budgets: comparable ? budgetChanges(base: base.fleet, head: head.fleet) : [],
            diagnostics: (base.diagnostics, head.diagnostics + McpPinChanges.findings(base: base.fleet, head: head.fleet)))
        review.baseIncomplete = !comparable
        if comparable {
            review.tools = toolChanges(base: base.fleet, head: head.fleet)
            review.models = modelChanges(base: base.fleet, head: head.fleet)
            review.spend = SpendChange(before: ProjectedSpend(base.fleet), after: ProjectedSpend(head.fleet))
            review.projection = ProjectionChange(
                before: SpendProjection(base.fleet, observed: observed), after: SpendProjection(head.fleet, observed: observed))
        }
        return review
    }

    private init(
        plan: Plan, permissions: [PermissionChange], budgets: [BudgetChange], diagnostics: (base: [Diagnostic], head: [Diagnostic])
    ) {
        self.plan = plan
        self.permissions = permissions
        self.budgets = budgets
        let before = Set(diagnostics.base.map(\.fingerprint))
        let after = Set(diagnostics.head.map(\.fingerprint))
        newDiagnostics = diagnostics.head.filter { !before.contains($0.fingerprint) }
        remainingDiagnostics = diagnostics.head.filter { before.contains($0.fingerprint) }
        fixedDiagnostics = diagnostics.base.filter { !after.contains($0.fingerprint) }
    }

    // MARK: Plan

    /// The plan that applying head over base would make, by the same planner as apply.
    /// A resource that head defines but cannot read is not shown as removed: its errors
    /// are the news.
    static func plan(base: Fleet, head: Fleet) -> Plan {
        let source = "review"
        let options = ApplyOptions(source: source, prune: true, allowEmpty: true, maxDeletions: .max, appliedBy: source)
        let state = FleetState(base, source: source)
        var plan =
            (try? Planner.plan(desired: head, actual: state, options: options, now: Timestamp(milliseconds: 0)))
            ?? Plan(source: source, changes: [], unchanged: [])
        plan.changes.removeAll { $0.action == .prune && head.unreadable.contains($0.id) }
        return plan
    }

    // MARK: Permissions

    static func permissionChanges(base: Fleet, head: Fleet) -> [PermissionChange] {
        let baseEngine = PolicyEngine(base)
        let headEngine = PolicyEngine(head)
        let baseCredentials = CredentialSecrets(base)
        let headCredentials = CredentialSecrets(head)
        var universes: [String: [PermissionKind: [String]]] = [:]
        var reaches: [String: (base: [String: [String: PolicyAudit.Reach]], head: [String: [String: PolicyAudit.Reach]])] = [:]
        var changes: [PermissionChange] = []
        let agents = Set(base.resources(of: .agent).map(\.id)).union(head.resources(of: .agent).map(\.id)).sorted()
        for agent in agents {
            // What a removed agent loses, the plan already says.
            guard head[agent] != nil else { continue }
            let universe =
                universes[agent.namespace]
                ?? {
                    let u = Self.universe(of: [base, head], namespace: agent.namespace)
                    universes[agent.namespace] = u
                    return u
                }()
            let before = base[agent] == nil ? nil : baseEngine.permissions(of: agent)
            let after = headEngine.permissions(of: agent)
            let context = CauseContext(agent: agent, base: base, head: head, before: before, after: after)
            for kind in PermissionKind.allCases {
                for value in universe[kind] ?? [] {
                    // A secret orl presents itself is never the agent's, whatever the
                    // policies say: the same decision as the audit and the controller.
                    let secret = SecretID(namespace: agent.namespace, name: value)
                    let was = before.map { kind == .secret ? baseCredentials.permits(secret, $0) : $0.permits(kind, value) } ?? false
                    let now = kind == .secret ? headCredentials.permits(secret, after) : after.permits(kind, value)
                    guard was != now else { continue }
                    var (cause, location) = now ? context.gain(kind, value) : context.loss(kind, value)
                    if !now, kind == .secret, let why = headCredentials.reservation(of: secret) { (cause, location) = (why, nil) }
                    changes.append(
                        PermissionChange(
                            agent: agent, subject: .permission(kind, value), change: now ? .gained : .lost, cause: cause,
                            location: location,
                            details: now ? meaning(of: kind, value, agent: agent, head: head, after: after) : []))
                }
            }
            let reach =
                reaches[agent.namespace]
                ?? {
                    let r = (
                        PolicyAudit.reach(in: agent.namespace, of: base, engine: baseEngine),
                        PolicyAudit.reach(in: agent.namespace, of: head, engine: headEngine)
                    )
                    reaches[agent.namespace] = r
                    return r
                }()
            let reachBefore = before == nil ? [:] : reach.base[agent.name] ?? [:]
            let reachAfter = reach.head[agent.name] ?? [:]
            for (dataClass, found) in reachAfter.sorted(by: { $0.key < $1.key }) where reachBefore[dataClass] == nil {
                changes.append(
                    PermissionChange(
                        agent: agent, subject: .reach(dataClass: dataClass), change: .gained,
                        cause: "handoffs along \(found.route) (from tool \(Diagnostic.quoted(found.tool)))",
                        location: found.rules.last?.location,
                        details: after.permits(.dataClass, dataClass) ? [] : ["not cleared for it"]))
            }
            for (dataClass, found) in reachBefore.sorted(by: { $0.key < $1.key }) where reachAfter[dataClass] == nil {
                changes.append(
                    PermissionChange(
                        agent: agent, subject: .reach(dataClass: dataClass), change: .lost,
                        cause: "no handoff chain brings it any more (was \(found.route))", location: nil))
            }
            let wasUnconfined = base[agent]?.agent?.runtime.isolation == Optional.some(.none)
            if let spec = head[agent]?.agent, (spec.runtime.isolation == .none) != wasUnconfined {
                let setting = spec.runtime.isolationSetting
                changes.append(
                    PermissionChange(
                        agent: agent, subject: .unconfined, change: wasUnconfined ? .lost : .gained,
                        cause: wasUnconfined
                            ? "isolation \(spec.runtime.isolation.rawValue): the kernel now enforces its policies"
                            : "spec.runtime.isolation: none: its process is no longer sandboxed",
                        location: setting?.location ?? head[agent]?.nameLocation))
            }
            guard let before else { continue }
            for tool in universe[.tool] ?? [] where before.permits(.tool, tool) && after.permits(.tool, tool) {
                let gatesBefore = before.approvalRules(forTool: tool)
                let gatesAfter = after.approvalRules(forTool: tool)
                if gatesBefore.isEmpty, let rule = gatesAfter.first {
                    changes.append(
                        PermissionChange(
                            agent: agent, subject: .approval(tool: tool), change: .lost,
                            cause: "required by \(rule.source) (\(rule.location))\(context.qualifier(rule.policy, added: "requirement"))",
                            location: rule.location))
                } else if gatesAfter.isEmpty, let rule = gatesBefore.first {
                    let (why, location) = context.gone(rule.policy, what: "requirement")
                    changes.append(
                        PermissionChange(
                            agent: agent, subject: .approval(tool: tool), change: .gained,
                            cause: "no longer required: \(why)", location: location,
                            details: head.resource(.tool, tool, namespace: agent.namespace)?.tool.map { [describe($0)] } ?? []))
                }
            }
        }
        return changes
    }

    /// The values each kind of permission is judged on in a namespace: everything either
    /// revision names (tools, models, secrets, agents, data classes) and every exact
    /// value a policy rule names. A wildcard rule is judged by the values it covers.
    static func universe(of fleets: [Fleet], namespace: String) -> [PermissionKind: [String]] {
        var values: [PermissionKind: Set<String>] = [:]
        for fleet in fleets {
            for tool in fleet.resources(of: .tool, namespace: namespace) {
                values[.tool, default: []].insert(tool.metadata.name)
                for dataClass in tool.tool?.dataClasses ?? [] { values[.dataClass, default: []].insert(dataClass) }
                for (name, _) in tool.tool?.mcpTools(server: tool.metadata.name) ?? [] { values[.tool, default: []].insert(name) }
            }
            for provider in fleet.resources(of: .modelProvider, namespace: namespace) {
                for model in provider.modelProvider?.models ?? [] {
                    values[.model, default: []].insert("\(provider.metadata.name)/\(model.name)")
                }
            }
            for agent in fleet.resources(of: .agent, namespace: namespace) {
                values[.handoff, default: []].insert(agent.metadata.name)
                guard let spec = agent.agent else { continue }
                values[.model, default: []].insert(spec.model.value.description)
                for tool in spec.tools { values[.tool, default: []].insert(tool.value) }
                for secret in spec.secrets { values[.secret, default: []].insert(secret.name.value) }
            }
            for policy in fleet.resources(of: .policy, namespace: namespace) {
                for rule in PolicyEngine.rules(of: policy) where !rule.pattern.contains("*") {
                    values[rule.kind == .egress ? .dataClass : rule.kind, default: []].insert(rule.pattern)
                }
            }
        }
        values[.egress] = values[.dataClass]
        return values.mapValues { $0.sorted() }
    }

    /// Explains a change of one agent's permissions by the Policies on both sides.
    private struct CauseContext {
        var agent: ResourceID
        var base: Fleet
        var head: Fleet
        var before: EffectivePermissions?
        var after: EffectivePermissions

        func gain(_ kind: PermissionKind, _ value: String) -> (String, SourceLocation?) {
            let decision = after.decide(kind, value)
            guard let rule = decision.rules.first else { return ("", nil) }
            var cause = "allowed by \(rule.policy) (\(rule.location))"
            if let before, before.decide(kind, value).outcome == .denied, let deny = before.decide(kind, value).rules.first {
                cause += "; the deny of \(deny.policy) is gone: " + gone(deny.policy, what: "deny").0
            } else {
                cause += qualifier(rule.policy, added: "allow")
            }
            return (cause, rule.location)
        }

        func loss(_ kind: PermissionKind, _ value: String) -> (String, SourceLocation?) {
            let decision = after.decide(kind, value)
            if decision.outcome == .denied, let rule = decision.rules.first {
                return ("denied by \(rule.policy) (\(rule.location))\(qualifier(rule.policy, added: "deny"))", rule.location)
            }
            guard let allow = before?.decide(kind, value).rules.first else { return ("no policy allows it", nil) }
            return gone(allow.policy, what: "allow")
        }

        /// Why a rule of `policy` that decided in base no longer does.
        func gone(_ policy: ResourceID, what: String) -> (String, SourceLocation?) {
            guard let now = head[policy] else { return ("\(policy) was removed", nil) }
            if !after.policies.contains(policy) { return ("\(policy) no longer applies to it", now.nameLocation) }
            return ("its \(what) was removed from \(policy)", now.nameLocation)
        }

        /// How the Policy that decides in head came to: new, newly applying to the agent,
        /// or a rule added to it (or the agent is new).
        func qualifier(_ policy: ResourceID, added what: String) -> String {
            guard let before else { return "; new agent" }
            if base[policy] == nil { return "; \(policy) is new" }
            if !before.policies.contains(policy) { return "; \(policy) now applies to it" }
            return "; \(what) added to \(policy)"
        }
    }

    // MARK: Budgets

    static func budgetChanges(base: Fleet, head: Fleet) -> [BudgetChange] {
        var changes: [BudgetChange] = []
        let budgets = Set(base.resources(of: .budget).map(\.id)).union(head.resources(of: .budget).map(\.id)).sorted()
        for id in budgets {
            let old = base[id]
            let new = head[id]
            guard let newSpec = new?.budget else {
                if let old, old.budget != nil {
                    changes.append(
                        BudgetChange(
                            subject: id, change: .removed, message: "\(id) removed (it capped \(limits(old.budget!)))", location: nil,
                            loosens: true))
                }
                continue
            }
            let location = new?.nameLocation
            guard let oldSpec = old?.budget else {
                changes.append(
                    BudgetChange(
                        subject: id, change: .added, message: "\(id) added: \(limits(newSpec))", location: location, loosens: false))
                continue
            }
            for window in [BudgetSpec.Window.day, .month] {
                let a = oldSpec.limits.first { $0.window == window }
                let b = newSpec.limits.first { $0.window == window }
                for (unit, before, after) in [
                    ("usd", a?.usd.map(money), b?.usd.map(money)), ("tokens", a?.tokens.map(String.init), b?.tokens.map(String.init)),
                ] {
                    let x = unit == "usd" ? a?.usd : a?.tokens.map(Double.init)
                    let y = unit == "usd" ? b?.usd : b?.tokens.map(Double.init)
                    guard x != y else { continue }
                    let field = "\(window.rawValue) \(unit)"
                    switch (x, y) {
                    case (let x?, let y?):
                        changes.append(
                            BudgetChange(
                                subject: id, change: y > x ? .raised : .lowered, message: "\(id) \(field): \(before!) → \(after!)",
                                location: location, loosens: y > x))
                    case (nil, _?):
                        changes.append(
                            BudgetChange(
                                subject: id, change: .lowered, message: "\(id) \(field): no cap → \(after!)", location: location,
                                loosens: false))
                    case (_?, nil):
                        changes.append(
                            BudgetChange(
                                subject: id, change: .raised, message: "\(id) \(field): \(before!) → no cap", location: location,
                                loosens: true))
                    case (nil, nil):
                        break
                    }
                }
            }
            if oldSpec.scope != newSpec.scope {
                changes.append(
                    BudgetChange(
                        subject: id, change: .changed, message: "\(id) scope: \(oldSpec.scope.rawValue) → \(newSpec.scope.rawValue)",
                        location: location, loosens: oldSpec.scope == .perAgent))
            }
            if oldSpec.onExceeded != newSpec.onExceeded {
                changes.append(
                    BudgetChange(
                        subject: id, change: .changed,
                        message: "\(id) onExceeded: \(oldSpec.onExceeded.rawValue) → \(newSpec.onExceeded.rawValue)", location: location,
                        loosens: newSpec.onExceeded == .alert))
            }
        }
        for agent in head.resources(of: .agent) where !covered(agent, in: head) {
            let previous = base[agent.id]
            guard previous == nil || covered(previous!, in: base) else { continue }
            let what = previous == nil ? "new agent" : "agent"
            changes.append(
                BudgetChange(
                    subject: agent.id, change: .uncovered,
                    message: "\(what) \(Diagnostic.quoted(agent.metadata.name)) is covered by no Budget, so nothing caps its spend",
                    location: agent.nameLocation, loosens: true))
        }
        return changes
    }

    static func covered(_ agent: Resource, in fleet: Fleet) -> Bool {
        fleet.resources(of: .budget, namespace: agent.metadata.namespace).contains { $0.budget?.appliesTo.selects(agent.metadata) ?? false }
    }

    /// `day: $10, 5000000 tokens; month: $150`.
    static func limits(_ spec: BudgetSpec) -> String {
        spec.limits.map { limit in
            var caps: [String] = []
            if let usd = limit.usd { caps.append(money(usd)) }
            if let tokens = limit.tokens { caps.append("\(tokens) tokens") }
            return "\(limit.window.rawValue): " + caps.joined(separator: ", ")
        }.joined(separator: "; ")
    }

    /// `$10`, `$0.5`.
    static func money(_ value: Double) -> String {
        let text = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        return "$" + text
    }
}

/// A fleet seen as the actual state, so that the planner can diff two revisions as it
/// diffs manifests against the store.
private struct FleetState: AppliedResources {
    let stored: [ResourceID: StoredResource]
    let order: [ResourceID]

    init(_ fleet: Fleet, source: String) {
        var stored: [ResourceID: StoredResource] = [:]
        for resource in fleet.resources {
            let canonical = resource.canonical
            stored[resource.id] = StoredResource(
                id: resource.id, manifest: canonical.text, specHash: canonical.specHash, generation: 1, resourceVersion: 1,
                source: source, file: resource.file, line: resource.location.line, revision: nil, appliedAt: Timestamp(milliseconds: 0),
                appliedBy: source)
        }
        self.stored = stored
        order = fleet.resources.map(\.id)
    }

    func resources(kind: ResourceKind?, namespace: String?) throws(StoreError) -> [StoredResource] {
        order.compactMap { stored[$0] }.filter { r in
            (kind.map { $0.rawValue == r.id.kind } ?? true) && (namespace.map { $0 == r.id.namespace } ?? true)
        }
    }
    func inventory(source: String) throws(StoreError) -> [ResourceID] { order }
}
