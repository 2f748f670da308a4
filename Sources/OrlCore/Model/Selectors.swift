public import OrlJSON

/// A Kubernetes label selector: all `matchLabels` and all `matchExpressions` hold.
public struct LabelSelector: Sendable, Hashable, Decodable {
    public struct Requirement: Sendable, Hashable, Decodable {
        public enum Operator: String, Sendable, Hashable, Decodable {
            case `in` = "In"
            case notIn = "NotIn"
            case exists = "Exists"
            case doesNotExist = "DoesNotExist"
        }

        public var key: String
        public var `operator`: Operator
        public var values: [String]

        public init(key: String, operator: Operator, values: [String] = []) {
            self.key = key
            self.operator = `operator`
            self.values = values
        }

        enum CodingKeys: String, CodingKey { case key, `operator`, values }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            key = try c.decode(String.self, forKey: .key)
            `operator` = try c.decode(Operator.self, forKey: .operator)
            values = try c.decodeIfPresent([String].self, forKey: .values) ?? []
        }

        public func matches(_ labels: [String: String]) -> Bool {
            switch `operator` {
            case .in: labels[key].map(values.contains) ?? false
            case .notIn: labels[key].map { !values.contains($0) } ?? true
            case .exists: labels[key] != nil
            case .doesNotExist: labels[key] == nil
            }
        }
    }

    public var matchLabels: [String: String]
    public var matchExpressions: [Requirement]

    public init(matchLabels: [String: String] = [:], matchExpressions: [Requirement] = []) {
        self.matchLabels = matchLabels
        self.matchExpressions = matchExpressions
    }

    enum CodingKeys: String, CodingKey { case matchLabels, matchExpressions }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        matchLabels = try c.decodeIfPresent([String: String].self, forKey: .matchLabels) ?? [:]
        matchExpressions = try c.decodeIfPresent([Requirement].self, forKey: .matchExpressions) ?? []
    }

    public func matches(_ labels: [String: String]) -> Bool {
        matchLabels.allSatisfy { labels[$0.key] == $0.value } && matchExpressions.allSatisfy { $0.matches(labels) }
    }
}

/// The agents a Policy or Budget applies to: the named ones plus those whose labels
/// match the selector.
public struct AgentSelector: Sendable, Hashable, Decodable {
    public var agents: [Located<String>]
    public var selector: LabelSelector?
    public var location: SourceLocation

    enum CodingKeys: String, CodingKey { case agents, selector }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        agents = try c.decodeIfPresent([Located<String>].self, forKey: .agents) ?? []
        selector = try c.decodeIfPresent(LabelSelector.self, forKey: .selector)
        location = (decoder as? any LocatingDecoder)?.node.location ?? .file("")
    }

    public func selects(_ agent: ObjectMeta) -> Bool {
        agents.contains { $0.value == agent.name } || (selector?.matches(agent.labels) ?? false)
    }
}
