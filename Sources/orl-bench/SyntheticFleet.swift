/// Writes a synthetic but valid fleet: `count` manifests of about 30 lines each, the six
/// kinds in turn, spread over 20 namespaces, referring to each other as real fleets do
/// (agents to providers and tools, policies and budgets to agents by name and label,
/// workflows to agents), so validation does all its work, references included.
struct SyntheticFleet {
    var count: Int
    static let namespaces = 20

    /// (relative path, contents) of every manifest.
    func files() -> [(path: String, text: String)] {
        (0..<count).map { i in
            let kind = i % 6
            let group = i / 6
            let ns = "team-\(group % Self.namespaces)"
            let text: String
            switch kind {
            case 0: text = provider(group, ns)
            case 1: text = tool(group, ns)
            case 2: text = agent(group, ns)
            case 3: text = policy(group, ns)
            case 4: text = budget(group, ns)
            default: text = workflow(group, ns)
            }
            let names = ["provider", "tool", "agent", "policy", "budget", "workflow"]
            return ("\(ns)/\(names[kind])-\(group).yaml", text)
        }
    }

    private func header(_ kind: String, _ name: String, _ ns: String, tier: Int) -> String {
        """
        apiVersion: orl.dev/v1
        kind: \(kind)
        metadata:
          name: \(name)
          namespace: \(ns)
          labels:
            app.orl.dev/team: \(ns)
            app.orl.dev/tier: \(["gold", "silver", "bronze"][tier % 3])
            app.orl.dev/component: \(kind.lowercased())
            app.orl.dev/managed-by: orl
          annotations:
            orl.dev/owner: owner-\(tier % 7)@example.com
            orl.dev/repo: https://git.example.com/platform/fleet
            orl.dev/runbook: https://runbooks.example.com/\(ns)/\(name)

        """
    }

    private func provider(_ g: Int, _ ns: String) -> String {
        header("ModelProvider", "provider-\(g)", ns, tier: g) + """
            spec:
              description: Synthetic OpenAI-compatible endpoint \(g)
              apiStyle: openai
              baseURL: https://llm-\(g).example.com/v1
              apiKeySecret: provider-\(g)-key
              timeout: 60s
              models:
                - name: model-small
                  contextWindow: 128000
                  maxOutputTokens: 16384
                  pricing: {input: 0.15, output: 0.60}
                - name: model-large
                  contextWindow: 200000
                  pricing:
                    input: 2.5
                    output: 10

            """
    }

    private func tool(_ g: Int, _ ns: String) -> String {
        header("Tool", "tool-\(g)", ns, tier: g) + """
            spec:
              description: Synthetic search tool \(g)
              type: http
              http:
                url: https://tools.example.com/search/\(g)
                method: POST
                headers:
                  X-Team: \(ns)
                credentialSecret: search-key-\(g)
              timeout: 30s
              capabilities: [network]
              dataClasses: [public]
              risk: low

            """
    }

    private func agent(_ g: Int, _ ns: String) -> String {
        header("Agent", "agent-\(g)", ns, tier: g) + """
            spec:
              description: Synthetic agent \(g)
              model: provider-\(g)/model-small
              runtime:
                command: python3
                args: [agent.py, --id, "\(g)"]
                env:
                  - name: LOG_LEVEL
                    value: info
                restartPolicy: OnFailure
                gracePeriod: 15s
                resources:
                  memory: 512Mi
                  openFiles: 1024
              tools: [tool-\(g)]
              secrets:
                - name: agent-key-\(g)
              maxTokensPerCall: 4096

            """
    }

    private func policy(_ g: Int, _ ns: String) -> String {
        header("Policy", "policy-\(g)", ns, tier: g) + """
            spec:
              description: Least privilege for agent \(g)
              appliesTo:
                agents: [agent-\(g)]
                selector:
                  matchLabels:
                    app.orl.dev/team: \(ns)
              allow:
                tools: [tool-\(g)]
                models: [provider-\(g)/*]
                secrets: [agent-key-\(g)]
                dataClasses: [public, internal]
              deny:
                tools: [shell]
                egress: [pii]
              requireApproval:
                tools: [publish]

            """
    }

    private func budget(_ g: Int, _ ns: String) -> String {
        header("Budget", "budget-\(g)", ns, tier: g) + """
            spec:
              description: Daily and monthly caps \(g)
              appliesTo:
                agents: [agent-\(g)]
                selector:
                  matchLabels:
                    app.orl.dev/team: \(ns)
              scope: perAgent
              limits:
                - window: day
                  usd: 25
                  tokens: 2000000
                - window: month
                  usd: 500
              onExceeded: halt
              alertThresholds: [50, 80, 95]

            """
    }

    private func workflow(_ g: Int, _ ns: String) -> String {
        header("Workflow", "workflow-\(g)", ns, tier: g) + """
            spec:
              triggers:
                - type: manual
                - type: schedule
                  cron: "0 9 * * 1-5"
              inputs:
                - name: topic
                  required: true
              steps:
                - id: research
                  agent: agent-\(g)
                  inputs:
                    topic: {input: topic}
                - id: summarize
                  agent: agent-\(g)
                  dependsOn: [research]
                  inputs:
                    notes: {step: research}
                  retry: {attempts: 3, backoff: 2s}

            """
    }
}
