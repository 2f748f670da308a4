import OrlJSON

/// Turns an applied Agent into the exact process to run: its declared environment, the
/// secrets its policies allow, and orl's own variables, nothing else.
public enum AgentLaunch {
    /// What the controller provides that manifests do not.
    public struct Context: Sendable {
        /// Where logs and default working directories live (the state directory).
        public var stateDirectory: String
        /// The controller's loopback API, given to agents as ORL_API_URL; its `/v1` is
        /// the gateway, given as OPENAI_BASE_URL (and as ANTHROPIC_BASE_URL, without `/v1`).
        public var apiURL: String
        /// Whether a path exists: which arguments name files of the agent's source (see
        /// `CodeOrigin.resolve`). The core does no I/O; the controller looks.
        public var fileExists: @Sendable (String) -> Bool

        public init(stateDirectory: String, apiURL: String, fileExists: @escaping @Sendable (String) -> Bool = { _ in false }) {
            self.stateDirectory = stateDirectory
            self.apiURL = apiURL
            self.fileExists = fileExists
        }
    }

    /// orl's own variables; they always win over an Agent's env entry or secret of the
    /// same name, so an agent cannot be started with another agent's identity, nor be
    /// pointed past the gateway.
    public static let reservedPrefix = "ORL_"
    public static let gatewayVariables: Set<String> = ["OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"]

    /// The variable that names an agent process's state directory.
    public static let stateVariable = "ORL_STATE_DIR"
    /// On a node's agents: the node that started them, and the state directory it started
    /// them for (what its guard and its sweep of unrecorded agents look for).
    public static let nodeVariable = "ORL_NODE"
    public static let nodeStateVariable = "ORL_NODE_STATE"

    static func reserved(_ name: String) -> Bool { name.hasPrefix(reservedPrefix) || gatewayVariables.contains(name) }

    public struct Launch: Sendable {
        /// The process, but for its token (see `process(token:)`).
        public var process: ProcessSpec
        /// SHA-256 over everything that shapes the process but its token: when it
        /// changes, the process is restarted (a spec edit, a policy that now allows
        /// another secret, a secret set to a new value, a new gateway address). Secrets
        /// count by their version, never their value, so the hash, which the store
        /// keeps, tells nothing about a value. The token is left out so that an adopted
        /// process, whose token only the process knows, is recognised.
        public var hash: String
        /// Secrets the Agent asks for that it may not have (its policies do not allow
        /// them, or they are a provider's or a tool's credential): left out.
        public var withheldSecrets: [String]
        /// Allowed secrets the vault does not hold.
        public var missingSecrets: [String]
        /// Set when the process cannot be started as the spec says: an allowed secret is
        /// missing or cannot be read. The agent is not started (nor restarted) until it can be.
        public var waiting: Waiting?

        /// The process to start: with the agent's own credential for orl's API, which
        /// is also its OpenAI API key at the gateway.
        public func process(token: String) -> ProcessSpec {
            var process = self.process
            process.environment += [("ORL_TOKEN", token), ("OPENAI_API_KEY", token), ("ANTHROPIC_API_KEY", token)]
            return process
        }
    }

    /// Why an agent waits to start, for its Ready condition: a CamelCase reason and a sentence.
    public struct Waiting: Sendable, Hashable {
        public var reason: String
        public var message: String

        public init(reason: String, message: String) {
            self.reason = reason
            self.message = message
        }
    }

    /// `secretValue` reads the vault (nil: the secret is not set); `credentials` are the
    /// secrets no agent receives.
    public static func launch(
        _ agent: Resource, permissions: EffectivePermissions, credentials: CredentialSecrets, context: Context,
        secretValue: (SecretID) throws(VaultError) -> SecretValue?
    ) -> Launch? {
        guard let spec = agent.agent else { return nil }
        let runtime = spec.runtime
        var environment: [(name: String, value: String)] = runtime.env
            .filter { !reserved($0.name) }
            .map { ($0.name, $0.value) }
        // What the hash sees of the environment: secrets by version.
        var hashed = environment
        var withheld: [String] = []
        var missing: [String] = []
        var unreadable: [String] = []
        for secret in spec.secrets {
            let id = SecretID(namespace: agent.metadata.namespace, name: secret.name.value)
            guard credentials.permits(id, permissions),
                !reserved(secret.env)
            else {
                withheld.append(id.name)
                continue
            }
            let value: SecretValue
            do throws(VaultError) {
                guard let found = try secretValue(id) else {
                    missing.append(id.name)
                    continue
                }
                value = found
            } catch {
                unreadable.append("cannot read \(id): \(error.message)")
                continue
            }
            environment.removeAll { $0.name == secret.env }
            environment.append((secret.env, value.value))
            hashed.removeAll { $0.name == secret.env }
            hashed.append((secret.env, "vault:\(value.version)"))
        }
        var waiting: Waiting?
        if let first = unreadable.first {
            waiting = Waiting(reason: "SecretUnavailable", message: first)
        } else if !missing.isEmpty {
            let namespace = agent.metadata.namespace
            let (noun, verb) = missing.count == 1 ? ("secret", "is") : ("secrets", "are")
            let scope = namespace == ResourceID.defaultNamespace ? "" : " in namespace \(Diagnostic.quoted(namespace))"
            let flag = namespace == ResourceID.defaultNamespace ? "" : " -n \(namespace)"
            waiting = Waiting(
                reason: "SecretMissing",
                message: "waiting for \(noun) \(missing.map(Diagnostic.quoted).joined(separator: ", "))\(scope), which \(verb) not "
                    + "in the vault (orlctl secret set \(missing[0])\(flag))")
        }
        let id = agent.id
        // ORL_MODEL: the model the Agent declares, so a program need not repeat it.
        // Inside a sandbox the API is at 127.0.0.1 on the same port, served by the
        // controller on a listener in the agent's own network namespace.
        let strict = runtime.isolation == .strict
        let apiPort = port(of: context.apiURL)
        let apiURL = strict ? "http://127.0.0.1:\(apiPort ?? 0)" : context.apiURL
        let own = [
            ("ORL_AGENT", id.name), ("ORL_NAMESPACE", id.namespace), ("ORL_MODEL", spec.model.value.description),
            ("ORL_API_URL", apiURL), ("OPENAI_BASE_URL", apiURL + "/v1"),
            // Anthropic's SDKs add /v1 themselves.
            ("ANTHROPIC_BASE_URL", apiURL),
        ]
        var code: [(String, String)] = []
        if let origin = agent.origin {
            code.append(("ORL_CODE_DIR", origin.root))
            if let revision = origin.revision { code.append(("ORL_CODE_REVISION", revision)) }
        }
        environment += own + code
        hashed += own + code
        // Which state the process belongs to, so that a controller that finds it running
        // unrecorded (its predecessor was killed before writing the record) knows it for
        // its own. Out of the hash: the working directory and log file already depend on
        // the state directory, and agents started before it existed keep their hash.
        environment.append((stateVariable, context.stateDirectory))

        let workingDirectory = Self.workingDirectory(runtime.workingDir, of: id, stateDirectory: context.stateDirectory)
        let limits = ProcessLimits(
            addressSpace: runtime.resources?.memory?.bytes, openFiles: runtime.resources?.openFiles,
            cpuSeconds: runtime.resources?.cpuTime.map { Int($0.duration.components.seconds) })
        var (command, arguments) = (runtime.command, runtime.args)
        if let origin = agent.origin {
            (command, arguments) = origin.resolve(command: command, arguments: arguments, exists: context.fileExists)
        }
        let sandbox =
            strict
            ? Self.sandbox(runtime, workingDirectory: workingDirectory, context: context, apiPort: apiPort, code: agent.origin?.root) : nil
        let process = ProcessSpec(
            agent: id, command: command, arguments: arguments, environment: environment, workingDirectory: workingDirectory,
            limits: limits, logFile: "\(context.stateDirectory)/logs/\(id.namespace)/\(id.name).log",
            gracePeriod: runtime.gracePeriod.duration, codeDirectory: agent.origin?.root, sandbox: sandbox)
        var forHash = process
        forHash.environment = hashed
        return Launch(process: process, hash: hash(forHash), withheldSecrets: withheld, missingSecrets: missing, waiting: waiting)
    }

    /// The sandbox of an agent (apiPort set) or of its command tools (nil).
    public static func sandbox(
        _ runtime: AgentSpec.Runtime, workingDirectory: String, context: Context, apiPort: Int?, code: String? = nil
    ) -> SandboxSpec {
        SandboxSpec(
            stateDirectory: context.stateDirectory, writable: [workingDirectory] + runtime.mounts.filter(\.writable).map(\.path),
            readOnly: runtime.mounts.filter { !$0.writable }.map(\.path) + (code.map { [$0] } ?? []), apiPort: apiPort,
            memory: runtime.resources?.memory?.bytes,
            pids: runtime.resources?.pids, cpu: runtime.resources?.cpu)
    }

    /// The port of `http://host:port`.
    static func port(of url: String) -> Int? {
        guard let colon = url.lastIndex(of: ":") else { return nil }
        return Int(url[url.index(after: colon)...].prefix { $0.isNumber })
    }

    /// Where the agent runs and writes (and its command tools with it):
    /// `spec.runtime.workingDir`, relative to the state directory, else
    /// `<state>/agents/<namespace>/<name>`. Never the code's directory (`CodeOrigin`),
    /// which the agent reads and does not write: a git source's tree is read-only.
    public static func workingDirectory(_ workingDir: String?, of agent: ResourceID, stateDirectory: String) -> String {
        switch workingDir {
        case nil: "\(stateDirectory)/agents/\(agent.namespace)/\(agent.name)"
        case let dir? where dir.hasPrefix("/"): dir
        case let dir?: "\(stateDirectory)/\(dir)"
        }
    }

    /// Over `process` as given: the caller puts secrets' versions in place of their values.
    static func hash(_ process: ProcessSpec) -> String {
        let at = SourceLocation.file("<launch>")
        func string(_ s: String) -> Node { Node(.string(s), at: at) }
        func member(_ key: String, _ value: Node) -> Node.Member { Node.Member(key: key, keyLocation: at, value: value) }
        func int(_ i: Int?) -> Node { i.map { Node(.number(Number(integer: $0)), at: at) } ?? Node(.null, at: at) }
        var members = [
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
        ]
        // Only when set: agents applied before code had a place keep their hash, so an
        // upgrade of orl does not restart them.
        if let code = process.codeDirectory { members.append(member("codeDirectory", string(code))) }
        members += [
            member("isolation", string(process.sandbox == nil ? "none" : "strict")),
            member("writable", Node(.array((process.sandbox?.writable ?? []).map(string)), at: at)),
            member("readOnly", Node(.array((process.sandbox?.readOnly ?? []).map(string)), at: at)),
            member("pids", int(process.sandbox?.pids)),
            member("cpuMillis", int(process.sandbox?.cpu.map { Int(($0 * 1000).rounded()) })),
        ]
        let node = Node(.object(members), at: at)
        return CanonicalJSON.hash(node)
    }
}
