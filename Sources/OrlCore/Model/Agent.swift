/// `Agent.spec`: see schemas/agent.schema.json for the meaning of each field.
public struct AgentSpec: Sendable, Hashable, Decodable {
    public enum RestartPolicy: String, Sendable, Hashable, Decodable {
        case always = "Always"
        case onFailure = "OnFailure"
        case never = "Never"
    }

    public struct EnvVar: Sendable, Hashable, Decodable {
        public var name: String
        public var value: String
    }

    public struct Resources: Sendable, Hashable, Decodable {
        public var memory: ByteQuantity?
        public var openFiles: Int?
        public var cpuTime: DurationValue?
        /// Processes and threads at once.
        public var pids: Int?
        /// CPU cores' worth of time per period, e.g. 0.5.
        public var cpu: Double?
    }

    /// `spec.runtime.mounts[]`: a host path offered inside the sandbox.
    public struct Mount: Sendable, Hashable, Decodable {
        public var path: String
        public var writable: Bool

        enum CodingKeys: String, CodingKey { case path, writable }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            path = try c.decode(String.self, forKey: .path)
            writable = try c.decodeIfPresent(Bool.self, forKey: .writable) ?? false
        }
    }

    /// `spec.runtime.isolation`: how the process is confined (docs/sandbox.md).
    public enum Isolation: String, Sendable, Hashable, Decodable {
        /// Its own namespaces, a read-only view of what it needs, orl's API as its only
        /// way out, an unprivileged uid, a seccomp filter.
        case strict
        /// An ordinary process of the controller's user (reported as perm.unconfined).
        case none
    }

    public struct Runtime: Sendable, Hashable, Decodable {
        public var command: String
        public var args: [String]
        public var env: [EnvVar]
        public var workingDir: String?
        public var restartPolicy: RestartPolicy
        public var gracePeriod: DurationValue
        public var resources: Resources?
        /// As written, for its location; nil means strict.
        public var isolationSetting: Located<Isolation>?
        public var isolation: Isolation { isolationSetting?.value ?? .strict }
        public var mounts: [Mount]
        /// Labels a node must carry to run the agent (`orlctl controller --node`).
        public var nodeSelector: [String: String]

        enum CodingKeys: String, CodingKey {
            case command, args, env, workingDir, restartPolicy, gracePeriod, resources, isolation, mounts, nodeSelector
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            command = try c.decode(String.self, forKey: .command)
            args = try c.decodeIfPresent([String].self, forKey: .args) ?? []
            env = try c.decodeIfPresent([EnvVar].self, forKey: .env) ?? []
            workingDir = try c.decodeIfPresent(String.self, forKey: .workingDir)
            restartPolicy = try c.decodeIfPresent(RestartPolicy.self, forKey: .restartPolicy) ?? .always
            gracePeriod = try c.decodeIfPresent(DurationValue.self, forKey: .gracePeriod) ?? DurationValue("10s")!
            resources = try c.decodeIfPresent(Resources.self, forKey: .resources)
            isolationSetting = try c.decodeIfPresent(Located<Isolation>.self, forKey: .isolation)
            mounts = try c.decodeIfPresent([Mount].self, forKey: .mounts) ?? []
            nodeSelector = try c.decodeIfPresent([String: String].self, forKey: .nodeSelector) ?? [:]
        }
    }

    /// A vault secret the agent needs, and the variable it arrives in.
    public struct SecretRequest: Sendable, Hashable, Decodable {
        public var name: Located<String>
        public var env: String

        enum CodingKeys: String, CodingKey { case name, env }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(Located<String>.self, forKey: .name)
            env = try c.decodeIfPresent(String.self, forKey: .env) ?? SecretRequest.defaultEnv(for: name.value)
        }

        /// `search-api-key` arrives as `SEARCH_API_KEY`.
        public static func defaultEnv(for name: String) -> String {
            String(name.uppercased().map { $0 == "-" ? "_" : $0 })
        }
    }

    public var description: String?
    public var model: Located<ModelRef>
    public var runtime: Runtime
    public var tools: [Located<String>]
    public var secrets: [SecretRequest]
    public var maxTokensPerCall: Int?
    public var suspend: Bool

    enum CodingKeys: String, CodingKey { case description, model, runtime, tools, secrets, maxTokensPerCall, suspend }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        model = try c.decode(Located<ModelRef>.self, forKey: .model)
        runtime = try c.decode(Runtime.self, forKey: .runtime)
        tools = try c.decodeIfPresent([Located<String>].self, forKey: .tools) ?? []
        secrets = try c.decodeIfPresent([SecretRequest].self, forKey: .secrets) ?? []
        maxTokensPerCall = try c.decodeIfPresent(Int.self, forKey: .maxTokensPerCall)
        suspend = try c.decodeIfPresent(Bool.self, forKey: .suspend) ?? false
    }
}
