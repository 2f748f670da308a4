/// `Tool.spec`: see schemas/tool.schema.json.
public struct ToolSpec: Sendable, Hashable, Decodable {
    public enum InvocationType: String, Sendable, Hashable, Decodable {
        case http
        case command
        /// An MCP server: its pinned tools are the tools, named `SERVER/TOOL`.
        case mcp
    }

    public enum Capability: String, Sendable, Hashable, Decodable, CaseIterable {
        case egress
        case irreversible
        case filesystem
        case codeExecution = "code-execution"
        case network
    }

    public enum Risk: String, Sendable, Hashable, Decodable, Comparable {
        case low, medium, high, critical

        public static func < (lhs: Risk, rhs: Risk) -> Bool {
            let order: [Risk] = [.low, .medium, .high, .critical]
            return order.firstIndex(of: lhs)! < order.firstIndex(of: rhs)!
        }
    }

    public struct HTTPEndpoint: Sendable, Hashable, Decodable {
        public var url: String
        public var method: String
        public var headers: [String: String]
        public var credentialSecret: Located<String>?

        enum CodingKeys: String, CodingKey { case url, method, headers, credentialSecret }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            url = try c.decode(String.self, forKey: .url)
            method = try c.decodeIfPresent(String.self, forKey: .method) ?? "POST"
            headers = try c.decodeIfPresent([String: String].self, forKey: .headers) ?? [:]
            credentialSecret = try c.decodeIfPresent(Located<String>.self, forKey: .credentialSecret)
        }
    }

    public struct Command: Sendable, Hashable, Decodable {
        public var command: String
        public var args: [String]

        enum CodingKeys: String, CodingKey { case command, args }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            command = try c.decode(String.self, forKey: .command)
            args = try c.decodeIfPresent([String].self, forKey: .args) ?? []
        }
    }

    public var description: String?
    public var type: InvocationType
    public var http: HTTPEndpoint?
    public var command: Command?
    public var mcp: McpServerSpec?
    /// For a tool `SERVER/TOOL` of an MCP server: its pinned definition.
    public var pinned: McpPin?
    public var timeout: DurationValue
    public var capabilities: [Capability]
    public var dataClasses: [String]
    public var risk: Risk
    /// Its output may hold text written by anyone (web pages, inbound email): a prompt
    /// injection can come in through it.
    public var untrustedOutput: Bool

    enum CodingKeys: String, CodingKey {
        case description, type, http, command, mcp, timeout, capabilities, dataClasses, risk, untrustedOutput
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        type = try c.decode(InvocationType.self, forKey: .type)
        http = try c.decodeIfPresent(HTTPEndpoint.self, forKey: .http)
        command = try c.decodeIfPresent(Command.self, forKey: .command)
        mcp = try c.decodeIfPresent(McpServerSpec.self, forKey: .mcp)
        pinned = nil
        timeout = try c.decodeIfPresent(DurationValue.self, forKey: .timeout) ?? DurationValue("30s")!
        capabilities = try c.decodeIfPresent([Capability].self, forKey: .capabilities) ?? []
        dataClasses = try c.decodeIfPresent([String].self, forKey: .dataClasses) ?? []
        risk = try c.decodeIfPresent(Risk.self, forKey: .risk) ?? .low
        untrustedOutput = try c.decodeIfPresent(Bool.self, forKey: .untrustedOutput) ?? false
    }
}
