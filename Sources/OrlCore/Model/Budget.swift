/// `Budget.spec`: see schemas/budget.schema.json.
public struct BudgetSpec: Sendable, Hashable, Decodable {
    public enum Scope: String, Sendable, Hashable, Decodable {
        case shared
        case perAgent
    }

    /// A UTC calendar window.
    public enum Window: String, Sendable, Hashable, Decodable {
        case day
        case month
    }

    public enum OnExceeded: String, Sendable, Hashable, Decodable {
        case halt
        case alert
    }

    public struct Limit: Sendable, Hashable, Decodable {
        public var window: Window
        public var usd: Double?
        public var tokens: Int?
    }

    public var description: String?
    public var appliesTo: AgentSelector
    public var scope: Scope
    public var limits: [Limit]
    public var onExceeded: OnExceeded
    public var alertThresholds: [Int]

    enum CodingKeys: String, CodingKey { case description, appliesTo, scope, limits, onExceeded, alertThresholds }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        appliesTo = try c.decode(AgentSelector.self, forKey: .appliesTo)
        scope = try c.decodeIfPresent(Scope.self, forKey: .scope) ?? .shared
        limits = try c.decode([Limit].self, forKey: .limits)
        onExceeded = try c.decodeIfPresent(OnExceeded.self, forKey: .onExceeded) ?? .halt
        alertThresholds = try c.decodeIfPresent([Int].self, forKey: .alertThresholds) ?? []
    }
}
