/// `Policy.spec`: see schemas/policy.schema.json.
public struct PolicySpec: Sendable, Hashable, Decodable {
    /// One side (allow or deny) of a policy. Entries keep their location so every
    /// permission decision can name the line that made it.
    public struct Rules: Sendable, Hashable, Decodable {
        public var tools: [Located<String>]
        public var models: [Located<String>]
        public var secrets: [Located<String>]
        public var handoffs: [Located<String>]
        public var dataClasses: [Located<String>]
        public var egress: [Located<String>]

        public init() {
            tools = []
            models = []
            secrets = []
            handoffs = []
            dataClasses = []
            egress = []
        }

        enum CodingKeys: String, CodingKey { case tools, models, secrets, handoffs, dataClasses, egress }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            tools = try c.decodeIfPresent([Located<String>].self, forKey: .tools) ?? []
            models = try c.decodeIfPresent([Located<String>].self, forKey: .models) ?? []
            secrets = try c.decodeIfPresent([Located<String>].self, forKey: .secrets) ?? []
            handoffs = try c.decodeIfPresent([Located<String>].self, forKey: .handoffs) ?? []
            dataClasses = try c.decodeIfPresent([Located<String>].self, forKey: .dataClasses) ?? []
            egress = try c.decodeIfPresent([Located<String>].self, forKey: .egress) ?? []
        }
    }

    public var description: String?
    public var appliesTo: AgentSelector
    public var allow: Rules
    public var deny: Rules
    public var approvalTools: [Located<String>]
    /// Tools with any of these capabilities need a gate, whatever their name.
    public var approvalCapabilities: [Located<ToolSpec.Capability>]
    /// Tools of this risk or higher need a gate.
    public var approvalRisk: Located<ToolSpec.Risk>?
    /// An approval step that approves itself on timeout counts as the gate.
    public var acceptTimeoutApproval: Bool
    /// `requireIsolation: strict`: the agents it selects may not run unconfined.
    public var requireIsolation: Located<AgentSpec.Isolation>?

    enum CodingKeys: String, CodingKey { case description, appliesTo, allow, deny, requireApproval, requireIsolation }
    enum ApprovalKeys: String, CodingKey { case tools, capabilities, risk, acceptTimeoutApproval }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        appliesTo = try c.decode(AgentSelector.self, forKey: .appliesTo)
        allow = try c.decodeIfPresent(Rules.self, forKey: .allow) ?? Rules()
        deny = try c.decodeIfPresent(Rules.self, forKey: .deny) ?? Rules()
        requireIsolation = try c.decodeIfPresent(Located<AgentSpec.Isolation>.self, forKey: .requireIsolation)
        if c.contains(.requireApproval) {
            let approval = try c.nestedContainer(keyedBy: ApprovalKeys.self, forKey: .requireApproval)
            approvalTools = try approval.decodeIfPresent([Located<String>].self, forKey: .tools) ?? []
            approvalCapabilities = try approval.decodeIfPresent([Located<ToolSpec.Capability>].self, forKey: .capabilities) ?? []
            approvalRisk = try approval.decodeIfPresent(Located<ToolSpec.Risk>.self, forKey: .risk)
            acceptTimeoutApproval = try approval.decodeIfPresent(Bool.self, forKey: .acceptTimeoutApproval) ?? false
        } else {
            approvalTools = []
            approvalCapabilities = []
            approvalRisk = nil
            acceptTimeoutApproval = false
        }
    }
}
