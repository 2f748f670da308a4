/// `Alert.spec`: see schemas/alert.schema.json.
public struct AlertSpec: Sendable, Hashable, Decodable {
    public enum Format: String, Sendable, Hashable, Decodable {
        case json
        case slack
    }

    public struct Webhook: Sendable, Hashable, Decodable {
        public var format: Format
        /// The vault secret holding the URL: Slack's webhook URLs are credentials.
        public var urlSecret: Located<String>
        public var signingKeySecret: Located<String>?
        public var timeout: DurationValue
        public var maxAttempts: Int

        enum CodingKeys: String, CodingKey { case format, urlSecret, signingKeySecret, timeout, maxAttempts }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            format = try c.decodeIfPresent(Format.self, forKey: .format) ?? .json
            urlSecret = try c.decode(Located<String>.self, forKey: .urlSecret)
            signingKeySecret = try c.decodeIfPresent(Located<String>.self, forKey: .signingKeySecret)
            timeout = try c.decodeIfPresent(DurationValue.self, forKey: .timeout) ?? DurationValue("10s")!
            maxAttempts = try c.decodeIfPresent(Int.self, forKey: .maxAttempts) ?? 10
        }
    }

    public var description: String?
    public var events: [AlertEventType]
    /// Nil: the Alert's own namespace only.
    public var namespaces: [String]?
    public var webhook: Webhook

    enum CodingKeys: String, CodingKey { case description, events, namespaces, webhook }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        events = try c.decode([AlertEventType].self, forKey: .events)
        namespaces = try c.decodeIfPresent([String].self, forKey: .namespaces)
        webhook = try c.decode(Webhook.self, forKey: .webhook)
    }

    /// Whether an event about a resource of `namespace` is for this Alert, which lives in `own`.
    public func covers(namespace: String, own: String) -> Bool {
        guard let namespaces else { return namespace == own }
        return namespaces.contains("*") || namespaces.contains(namespace)
    }
}

/// What an Alert can be told about: each a class of the store's events.
public enum AlertEventType: String, Sendable, Hashable, Decodable, CaseIterable {
    case budgetThreshold = "BudgetThreshold"
    case budgetExhausted = "BudgetExhausted"
    case budgetHalt = "BudgetHalt"
    case approvalRequested = "ApprovalRequested"
    case runFailed = "RunFailed"
    case deadLetter = "DeadLetter"
    case syncFailed = "SyncFailed"
    case syncRefused = "SyncRefused"
    case crashLoopBackOff = "CrashLoopBackOff"
    case stalled = "Stalled"

    /// The class of a stored event, or nil for events no Alert is about. The reasons are
    /// those the gateway (budgets), the controller (agents), the run operations and the
    /// git sync record; one table, so a new reason is classified in one place.
    public static func classify(_ event: StoreEvent) -> AlertEventType? {
        guard let kind = event.resource?.kind else { return nil }
        switch (kind, event.reason) {
        case ("Budget", "BudgetThreshold"): return .budgetThreshold
        case ("Budget", "BudgetExhausted"): return .budgetExhausted
        case ("Agent", "Halted"): return .budgetHalt
        case ("Agent", "BackOff"): return .crashLoopBackOff
        case ("Agent", "FailedToStart"): return .stalled
        case (RunRecord.eventKind, "ApprovalRequested"): return .approvalRequested
        case (RunRecord.eventKind, "Failed"): return .runFailed
        case (RunRecord.eventKind, "DeadLetter"): return .deadLetter
        case (SourceRecord.kind, "SyncFailed"), (SourceRecord.kind, "InvalidManifests"), (SourceRecord.kind, "Unreachable"):
            return .syncFailed
        case (SourceRecord.kind, "SyncRefused"), (SourceRecord.kind, "RewindRefused"): return .syncRefused
        default: return nil
        }
    }

    public var isWarning: Bool {
        switch self {
        case .approvalRequested, .budgetThreshold: false
        default: true
        }
    }
}
