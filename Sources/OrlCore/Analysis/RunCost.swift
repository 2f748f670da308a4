import OrlJSON

/// What one run of a workflow can spend at most, step by step: every attempt of an agent
/// step spends the step's `maxTokens` at the dearer of its model's input and output
/// prices. A step without `maxTokens` has no bound to plan with (`maxTokensPerCall`
/// bounds one call, and an attempt makes several); the gateway still enforces budgets at
/// run time. The budget audit and the review's spend projection both count this way.
struct RunCost {
    struct Candidate {
        var agent: Resource
        var usd: Double
        var tokens: Int
    }

    /// Per bounded agent step, in `order`: the agents that may serve it (`agents[i]`),
    /// each with what the step costs at most when it does. Agents whose model has no
    /// price are left out (validation reports them).
    static func bounded(_ spec: WorkflowSpec, order: [Int], agents: [[Resource]], fleet: Fleet) -> [[Candidate]] {
        var steps: [[Candidate]] = []
        for i in order {
            let step = spec.steps[i]
            guard let maxTokens = step.maxTokens else { continue }
            var candidates: [Candidate] = []
            for agent in agents[i] {
                guard let pricing = price(of: agent, fleet: fleet) else { continue }
                let tokens = step.retry.attempts.saturatingMultiplied(by: maxTokens)
                candidates.append(
                    Candidate(agent: agent, usd: Double(tokens) * max(pricing.input, pricing.output) / 1_000_000, tokens: tokens))
            }
            if !candidates.isEmpty { steps.append(candidates) }
        }
        return steps
    }

    /// The agents that may serve each step: its agent, or for a delegated sub-task every
    /// worker of the pool, each with where the manifest names it.
    static func agents(of spec: WorkflowSpec, namespace: String, fleet: Fleet) -> [[(agent: Resource, named: SourceLocation)]] {
        var byName: [String: Resource?] = [:]
        func resolve(_ name: String) -> Resource? {
            if let known = byName[name] { return known }
            let agent = fleet.resource(.agent, name, namespace: namespace)
            byName[name] = agent
            return agent
        }
        return spec.steps.map { step in
            guard let agent = step.agent else { return [] }
            let pool = step.generated?.pool ?? []
            return (pool.isEmpty ? [agent] : pool).compactMap { name in resolve(name.value).map { ($0, name.location) } }
        }
    }

    /// The price of the agent's model, USD per million tokens.
    static func price(of agent: Resource, fleet: Fleet) -> ModelProviderSpec.Pricing? {
        guard let model = agent.agent?.model.value else { return nil }
        return fleet.resource(.modelProvider, model.provider, namespace: agent.metadata.namespace)?.modelProvider?.model(
            named: model.model)?
            .pricing
    }
}
