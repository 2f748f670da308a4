/// What a metrics scrape reads of the state, in one read: each agent's phase and
/// restarts, the run steps per state, the approvals waiting and the sources.
public struct FleetGauges: Sendable, Hashable {
    public struct Agent: Sendable, Hashable {
        public var id: ResourceID
        /// The phase the controller last wrote (the Ready condition's message starts
        /// with it); nil when no controller has observed the agent yet.
        public var phase: AgentPhase?
        public var restarts: Int
        public var crashes: Int

        public init(id: ResourceID, phase: AgentPhase?, restarts: Int, crashes: Int) {
            self.id = id
            self.phase = phase
            self.restarts = restarts
            self.crashes = crashes
        }

        /// The phase named at the head of a Ready condition's message (`Running: ...`).
        public static func phase(readyMessage: String?) -> AgentPhase? {
            guard let message = readyMessage, let head = message.split(separator: ":", maxSplits: 1).first else { return nil }
            return AgentPhase(rawValue: String(head))
        }
    }

    public struct StepCount: Sendable, Hashable {
        public var namespace: String
        public var state: StepState
        public var count: Int

        public init(namespace: String, state: StepState, count: Int) {
            self.namespace = namespace
            self.state = state
            self.count = count
        }
    }

    public var agents: [Agent]
    /// Steps of every run the state keeps, per namespace and state.
    public var steps: [StepCount]
    public var sources: [SourceRecord]

    public init(agents: [Agent], steps: [StepCount], sources: [SourceRecord]) {
        self.agents = agents
        self.steps = steps
        self.sources = sources
    }
}
