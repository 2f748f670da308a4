/// `ModelProvider.spec`: see schemas/modelprovider.schema.json.
public struct ModelProviderSpec: Sendable, Hashable, Decodable {
    public enum APIStyle: String, Sendable, Hashable, Decodable {
        case openai
        case anthropic
        case simulated
    }

    /// USD per million tokens.
    public struct Pricing: Sendable, Hashable, Decodable {
        public var input: Double
        public var output: Double
    }

    public struct Model: Sendable, Hashable, Decodable {
        public var name: String
        public var contextWindow: Int?
        public var maxOutputTokens: Int?
        public var pricing: Pricing
    }

    public var description: String?
    public var apiStyle: APIStyle
    public var baseURL: String?
    public var apiKeySecret: Located<String>?
    public var timeout: DurationValue
    public var models: [Model]

    enum CodingKeys: String, CodingKey { case description, apiStyle, baseURL, apiKeySecret, timeout, models }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        apiStyle = try c.decode(APIStyle.self, forKey: .apiStyle)
        baseURL = try c.decodeIfPresent(String.self, forKey: .baseURL)
        apiKeySecret = try c.decodeIfPresent(Located<String>.self, forKey: .apiKeySecret)
        timeout = try c.decodeIfPresent(DurationValue.self, forKey: .timeout) ?? DurationValue("120s")!
        models = try c.decode([Model].self, forKey: .models)
    }

    public func model(named name: String) -> Model? { models.first { $0.name == name } }
}
