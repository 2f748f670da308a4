import OrlJSON

/// Something the controller (or its gateway) did or saw. One model feeds every output:
/// the text and JSON lines of `orlctl controller`, and (for agents' lifecycles and
/// budgets' thresholds) the store's event log that `orlctl events` and `describe` show.
public struct ControllerEvent: Sendable, Hashable {
    public enum Level: String, Sendable, Hashable {
        case info, warning, error
    }

    /// A CamelCase word, as the store's events use.
    public enum Reason: String, Sendable, Hashable, CaseIterable {
        case started = "Started"
        case exited = "Exited"
        case backOff = "BackOff"
        case failedToStart = "FailedToStart"
        /// Not started until something changes: an allowed secret is missing or unreadable.
        case waiting = "Waiting"
        case restarting = "Restarting"
        case suspended = "Suspended"
        case halted = "Halted"
        case removed = "Removed"
        case stopping = "Stopping"
        case stopped = "Stopped"
        case adopted = "Adopted"
        case woken = "Woken"
        case logRotated = "LogRotated"
        case listening = "Listening"
        case budgetThreshold = "BudgetThreshold"
        case budgetExhausted = "BudgetExhausted"
        /// Something that happened to a workflow run (already in the store's event log,
        /// under the run): the message starts with its reason, such as `Retrying:`.
        case run = "Run"
        case runWarning = "RunWarning"
        /// An agent called a tool through the controller (logged, not stored).
        case toolCall = "ToolCall"
        /// A tool call was refused: the agent's policies or its task do not allow it.
        case toolRefused = "ToolRefused"
        /// The node's lease, placement or singletons (`orlctl controller --node`).
        case node = "Node"
        case error = "Error"

        /// The word a text line starts with.
        var verb: String {
            switch self {
            case .started: "started"
            case .exited: "exited"
            case .backOff: "backing off"
            case .failedToStart: "error starting"
            case .waiting: "not starting"
            case .restarting: "restarting"
            case .suspended: "suspending"
            case .halted: "halting"
            case .removed: "removing"
            case .stopping: "stopping"
            case .stopped: "stopped"
            case .adopted: "adopted"
            case .woken: "woken:"
            case .logRotated: "rotated"
            case .listening: "listening on"
            case .budgetThreshold: "threshold"
            case .budgetExhausted: "exhausted"
            case .run, .runWarning: "run"
            case .toolCall: "tool call"
            case .toolRefused: "tool call refused"
            case .node: "node"
            case .error: "error"
            }
        }

        /// Whether the store's event log keeps it (an agent's lifecycle, a budget's).
        var isStored: Bool {
            switch self {
            case .woken, .logRotated, .listening, .error, .stopping, .run, .runWarning, .toolCall, .node: false
            default: true
            }
        }

        var level: Level {
            switch self {
            case .exited, .backOff, .waiting, .budgetThreshold, .budgetExhausted, .runWarning, .toolRefused: .warning
            case .failedToStart, .error: .error
            default: .info
            }
        }
    }

    public var time: Timestamp
    public var reason: Reason
    /// The agent, or the budget, it is about.
    public var resource: ResourceID?
    public var pid: Int32?
    public var message: String

    public init(time: Timestamp, reason: Reason, resource: ResourceID? = nil, pid: Int32? = nil, message: String) {
        self.time = time
        self.reason = reason
        self.resource = resource
        self.pid = pid
        self.message = message
    }

    public var level: Level { reason.level }

    /// `2026-11-21T16:45:03Z started Agent/echo pid 123`.
    public var textLine: String {
        var line = "\(time.rfc3339Seconds) \(reason.verb)"
        if let resource { line += " \(resource)" }
        if !message.isEmpty { line += (resource != nil && pid == nil ? ": " : " ") + message }
        return line
    }

    /// One JSON object on one line, members in a fixed order; absent ones are left out.
    public var jsonLine: String {
        JSONValue.object([
            ("time", .string(time.description)),
            ("level", .string(level.rawValue)),
            ("event", .string(reason.rawValue)),
            ("resource", resource.map { .string("\($0.kind)/\($0.name)") }),
            ("namespace", resource.map { .string($0.namespace) }),
            ("pid", pid.map { .int(Int($0)) }),
            ("message", .string(message)),
        ]).compactRendered()
    }

    /// What the store keeps of it; nil for events that are about no resource's life.
    public var storeEvent: StoreEvent? {
        guard reason.isStored, let resource else { return nil }
        return StoreEvent(
            time: time, kind: level == .info ? .normal : .warning, resource: resource, reason: reason.rawValue, message: message)
    }
}
