/// What the controller keeps about one agent's process, so that a controller that
/// crashed and restarted can adopt the processes the previous one started instead of
/// starting duplicates, and keep counting restarts and crashes.
///
/// Not tied to the applied resource: a row outlives the Agent it is about until the
/// controller has stopped that agent's process.
public struct SupervisionRecord: Sendable, Hashable {
    public var agent: ResourceID
    public var process: ProcessIdentity?
    /// The launch hash the process was started with.
    public var launchHash: String?
    /// The digest of the process's credential for orl's API (ORL_TOKEN, and
    /// OPENAI_API_KEY for the gateway): an adopted process keeps its token, and the
    /// gateway recognises it by this digest. The token itself is never stored.
    public var tokenDigest: String?
    public var startedAt: Timestamp?
    public var restarts: Int
    public var crashes: Int
    public var lastExit: ProcessExit?
    public var exitedAt: Timestamp?
    /// The node that supervises the process, under the lease it held (nil: a controller
    /// without `--node`). The store refuses a record stamped with a lease that is not the
    /// node's current, live one.
    public var node: Assignment?

    public init(
        agent: ResourceID, process: ProcessIdentity? = nil, launchHash: String? = nil, tokenDigest: String? = nil,
        startedAt: Timestamp? = nil, restarts: Int = 0, crashes: Int = 0, lastExit: ProcessExit? = nil, exitedAt: Timestamp? = nil,
        node: Assignment? = nil
    ) {
        self.node = node
        self.agent = agent
        self.process = process
        self.launchHash = launchHash
        self.tokenDigest = tokenDigest
        self.startedAt = startedAt
        self.restarts = restarts
        self.crashes = crashes
        self.lastExit = lastExit
        self.exitedAt = exitedAt
    }

    /// The observation the reconciler starts from; `running` is for the caller to check.
    public func observation(running: Bool) -> AgentObservation {
        AgentObservation(
            process: process, running: running, launchHash: launchHash, startedAt: startedAt, lastExit: lastExit, exitedAt: exitedAt,
            crashes: crashes, restarts: restarts)
    }

    public init(agent: ResourceID, observation: AgentObservation, tokenDigest: String?, node: Assignment? = nil) {
        self.init(
            agent: agent, process: observation.process, launchHash: observation.launchHash, tokenDigest: tokenDigest,
            startedAt: observation.startedAt, restarts: observation.restarts, crashes: observation.crashes,
            lastExit: observation.lastExit, exitedAt: observation.exitedAt, node: node)
    }
}

extension ProcessExit {
    /// `exited:3`, `signaled:9`: how the store spells an exit.
    public var stored: String {
        switch self {
        case .exited(let code): "exited:\(code)"
        case .signaled(let signal): "signaled:\(signal)"
        }
    }

    public init?(stored: String) {
        let parts = stored.split(separator: ":")
        guard parts.count == 2, let value = Int32(parts[1]) else { return nil }
        switch parts[0] {
        case "exited": self = .exited(code: value)
        case "signaled": self = .signaled(signal: value)
        default: return nil
        }
    }
}

/// An imperative suspend (`orlctl suspend`), kept apart from the manifest so that a
/// GitOps re-apply does not undo it, as `flux suspend` does.
public struct UserHold: Sendable, Hashable {
    public var agent: ResourceID
    public var at: Timestamp
    public var by: String

    public init(agent: ResourceID, at: Timestamp, by: String) {
        self.agent = agent
        self.at = at
        self.by = by
    }
}
