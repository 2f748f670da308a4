/// The agents of one namespace, grouped by their labels: agents with the same labels
/// match the same label selectors, so a selector is evaluated once per group, not once
/// per agent. A namespace where every Policy selects its team's agents would otherwise
/// cost policies × agents (2,000 × 2,000 at 120,000 manifests).
struct AgentClasses: Sendable {
    /// The namespace's agents, in fleet order.
    let agents: [Resource]
    /// The class of each agent (same position as `agents`).
    let classOf: [Int]
    /// The labels of each class.
    let labels: [[String: String]]
    /// Agent positions by name.
    let byName: [String: Int]

    init(_ fleet: Fleet, namespace: String) {
        agents = fleet.resources(of: .agent, namespace: namespace)
        var classIndex: [[String: String]: Int] = [:]
        var labels: [[String: String]] = []
        var classOf: [Int] = []
        classOf.reserveCapacity(agents.count)
        var byName: [String: Int] = [:]
        for (i, agent) in agents.enumerated() {
            byName[agent.metadata.name] = i
            let own = agent.metadata.labels
            if let known = classIndex[own] {
                classOf.append(known)
            } else {
                classIndex[own] = labels.count
                classOf.append(labels.count)
                labels.append(own)
            }
        }
        self.classOf = classOf
        self.labels = labels
        self.byName = byName
    }

    /// For each class, whether `selector` matches its labels.
    func matches(_ selector: LabelSelector) -> [Bool] {
        labels.map { selector.matches($0) }
    }
}

/// Which agents of a namespace any of a set of selectors (a kind's Budgets, say) picks,
/// by name or by label: each distinct label selector is evaluated once per label class.
struct AgentCoverage {
    private var classes: [Bool]
    private var names: Set<String> = []

    init(_ selectors: some Sequence<AgentSelector>, in agents: AgentClasses) {
        classes = [Bool](repeating: false, count: agents.labels.count)
        var seen = Set<LabelSelector>()
        for selector in selectors {
            for name in selector.agents { names.insert(name.value) }
            guard let labels = selector.selector, seen.insert(labels).inserted else { continue }
            for (c, matched) in agents.matches(labels).enumerated() where matched { classes[c] = true }
        }
    }

    /// Whether some selector picks the agent at `position` of `agents`.
    func covers(_ position: Int, of agents: AgentClasses) -> Bool {
        classes[agents.classOf[position]] || names.contains(agents.agents[position].metadata.name)
    }
}
