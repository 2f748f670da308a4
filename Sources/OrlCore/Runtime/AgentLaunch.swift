/// Turns an applied Agent into the exact process to run: its declared environment, the
/// secrets its policies allow, and orl's own variables, nothing else.
public enum AgentLaunch {
    /// What the controller provides that manifests do not.
    public struct Context: Sendable {
        /// Where logs and default working directories live (the state directory).
        public var stateDirectory: String
        /// The controller's loopback API, given to agents as ORL_API_URL; its `/v1` is
        /// the gateway, given as OPENAI_BASE_URL.
        public var apiURL: String

        public init(stateDirectory: String, apiURL: String) {
            self.stateDirectory = stateDirectory
            self.apiURL = apiURL
        }
    }

    /// orl's own variables; they always win over an Agent's env entry or secret of the
    /// same name, so an agent cannot be started with another agent's identity, nor be
    /// pointed past the gateway.
    public static let reservedPrefix = "ORL_"
    public static let gatewayVariables: Set<String> = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]

    static func reserved(_ name: String) -> Bool { name.hasPrefix(reservedPrefix) || gatewayVariables.contains(name) }

    public struct Launch: Sendable {
        /// The process, but for its token (see `process(token:)`).
        public var process: ProcessSpec
        /// SHA-256 over everything that shapes the process but its token: when it
        /// changes, the process is restarted (a spec edit, a policy that now allows
        /// another secret, a new gateway address). The token is left out so that an
        /// adopted process, whose token only the process knows, is recognised.
        public var hash: String
        /// Secrets the Agent asks for that its policies do not allow: left out.
        public var withheldSecrets: [String]
        /// Allowed secrets the vault does not hold: left out.
        public var missingSecrets: [String]

        /// The process to start: with the agent's own credential for orl's API, which
        /// is also its OpenAI API key at the gateway.
        public func process(token: String) -> ProcessSpec {
            var process = self.process
            process.environment += [("ORL_TOKEN", token), ("OPENAI_API_KEY", token)]
            return process
        }
    }

    /// `secretValue` reads the vault.
    public static func launch(
        _ agent: Resource, permissions: EffectivePermissions, context: Context, secretValue: (String) -> String?
    ) -> Launch? {
        guard let spec = agent.agent else { return nil }
        let runtime = spec.runtime
        var environment: [(name: String, value: String)] = runtime.env
            .filter { !reserved($0.name) }
            .map { ($0.name, $0.value) }
        var withheld: [String] = []
        var missing: [String] = []
        for secret in spec.secrets {
            guard permissions.permits(.secret, secret.name.value) else {
                withheld.append(secret.name.value)
                continue
            }
            guard let value = secretValue(secret.name.value) else {
                missing.append(secret.name.value)
                continue
            }
            guard !reserved(secret.env) else { continue }
            environment.removeAll { $0.name == secret.env }
            environment.append((secret.env, value))
        }
        let id = agent.id
        environment += [
            ("ORL_AGENT", id.name), ("ORL_NAMESPACE", id.namespace), ("ORL_API_URL", context.apiURL),
            ("OPENAI_BASE_URL", context.apiURL + "/v1"),
        ]

        let home = "\(context.stateDirectory)/agents/\(id.namespace)/\(id.name)"
        let workingDirectory: String =
            switch runtime.workingDir {
            case nil: home
            case let dir? where dir.hasPrefix("/"): dir
            case let dir?: "\(context.stateDirectory)/\(dir)"
            }
        let limits = ProcessLimits(
            addressSpace: runtime.resources?.memory?.bytes, openFiles: runtime.resources?.openFiles,
            cpuSeconds: runtime.resources?.cpuTime.map { Int($0.duration.components.seconds) })
        let process = ProcessSpec(
            agent: id, command: runtime.command, arguments: runtime.args, environment: environment, workingDirectory: workingDirectory,
            limits: limits, logFile: "\(context.stateDirectory)/logs/\(id.namespace)/\(id.name).log",
            gracePeriod: runtime.gracePeriod.duration)
        return Launch(process: process, hash: hash(process), withheldSecrets: withheld, missingSecrets: missing)
    }

    static func hash(_ process: ProcessSpec) -> String {
        let at = SourceLocation.file("<launch>")
        func string(_ s: String) -> Node { Node(.string(s), at: at) }
        func member(_ key: String, _ value: Node) -> Node.Member { Node.Member(key: key, keyLocation: at, value: value) }
        func int(_ i: Int?) -> Node { i.map { Node(.number(Number(integer: $0)), at: at) } ?? Node(.null, at: at) }
        let node = Node(
            .object([
                member("command", string(process.command)),
                member("arguments", Node(.array(process.arguments.map(string)), at: at)),
                member(
                    "environment",
                    Node(.array(process.environment.map { Node(.array([string($0.name), string($0.value)]), at: at) }), at: at)),
                member("workingDirectory", string(process.workingDirectory)),
                member("addressSpace", int(process.limits.addressSpace)),
                member("openFiles", int(process.limits.openFiles)),
                member("cpuSeconds", int(process.limits.cpuSeconds)),
                member("logFile", string(process.logFile)),
                member("graceMilliseconds", int(Int((process.gracePeriod.inSeconds * 1000).rounded()))),
            ]), at: at)
        return CanonicalJSON.hash(node)
    }
}
