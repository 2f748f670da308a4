import Crypto
import OrlJSON

/// Who may call what through orl's API: which token is which agent, which models each
/// agent may call (at which price) and which tools. The gateway, the tool and MCP routes
/// and the agents' task routes all read it. The controller builds a new table on every
/// pass from the applied state, so an apply that changes a policy changes the next call.
public struct CallerTable: Sendable {
    /// A model an agent may call.
    public struct Route: Sendable, Hashable {
        public var provider: ResourceID
        public var spec: ModelProviderSpec
        public var model: ModelProviderSpec.Model

        /// `provider/model`, as agents name it and `/v1/models` lists it.
        public var id: String { "\(provider.name)/\(model.name)" }

        /// Worst case in dollars for a call of these many tokens.
        /// Held finite (a stored price of `1e308` or `.nan` must neither trap nor make
        /// a reservation that cannot be given back: `inf - inf` is NaN, and NaN passes
        /// every limit).
        public func cost(_ usage: TokenUsage) -> Double {
            let usd = (Double(usage.prompt) * model.pricing.input + Double(usage.completion) * model.pricing.output) / 1_000_000
            return usd.isNaN ? Self.dearest : min(max(usd, 0), Self.dearest)
        }

        /// The most one call may be counted at: far above any budget, far below overflow.
        static let dearest = 1e18
    }

    /// A tool an agent may call through `POST /v1/tools/NAME/invoke`.
    public struct ToolRoute: Sendable, Hashable {
        /// The Tool resource: for an MCP tool, its server.
        public var id: ResourceID
        public var spec: ToolSpec
        /// As agents name it: the Tool's name, or `SERVER/TOOL` for an MCP server's tool.
        public var name: String

        /// Where a command Tool's program and file arguments are (see `CodeOrigin`).
        public var origin: CodeOrigin?

        public init(id: ResourceID, spec: ToolSpec, name: String? = nil, origin: CodeOrigin? = nil) {
            self.id = id
            self.spec = spec
            self.name = name ?? id.name
            self.origin = origin
        }

        /// For an MCP tool: the server's spec (where to call it) and the tool's pin.
        public var mcp: (server: McpServerSpec, pin: McpPin)? {
            guard spec.type == .mcp, let server = spec.mcp, let pin = spec.pinned else { return nil }
            return (server, pin)
        }
    }

    public struct Caller: Sendable {
        public var agent: ResourceID
        /// By `provider/model`, in that order.
        public var routes: [Route]
        /// The agent's own model (`spec.model`): a bare model name is looked up there first.
        public var provider: String
        public var maxTokensPerCall: Int?
        /// The tools its policies allow, by name.
        public var tools: [String: ToolRoute]
        /// Every tool of its namespace, to tell a denied tool from a missing one.
        public var namespaceTools: Set<String>
        /// `spec.runtime.workingDir`: command tools run where the agent does.
        public var workingDir: String?
        /// `spec.runtime`: its command tools run in a sandbox like the agent's.
        public var runtime: AgentSpec.Runtime?
        /// The allowed tools a Policy gates behind a human approval.
        public var approvalTools: Set<String> = []
        /// The digest of the caller's token: which process of the agent calls (a task
        /// it claims is tied to that process).
        public var digest: String? = nil
    }

    private var callers: [String: Caller] = [:]
    /// Every Tool of type mcp (the server's own spec, its pins included), by id.
    public private(set) var mcpServers: [ToolRoute] = []

    public init() {}

    /// `tokens` holds each supervised agent's token digest (see `AgentToken`).
    public init(fleet: Fleet, tokens: [ResourceID: String]) {
        let engine = PolicyEngine(fleet)
        var routesByNamespace: [String: [Route]] = [:]
        for provider in fleet.resources(of: .modelProvider) {
            guard let spec = provider.modelProvider else { continue }
            for model in spec.models {
                routesByNamespace[provider.metadata.namespace, default: []].append(
                    Route(provider: provider.id, spec: spec, model: model))
            }
        }
        var toolsByNamespace: [String: [ToolRoute]] = [:]
        for tool in fleet.resources(of: .tool) {
            guard let spec = tool.tool else { continue }
            if spec.type == .mcp {
                mcpServers.append(ToolRoute(id: tool.id, spec: spec, origin: tool.origin))
                for (name, derived) in spec.mcpTools(server: tool.metadata.name) {
                    toolsByNamespace[tool.metadata.namespace, default: []].append(
                        ToolRoute(id: tool.id, spec: derived, name: name, origin: tool.origin))
                }
            } else {
                toolsByNamespace[tool.metadata.namespace, default: []].append(ToolRoute(id: tool.id, spec: spec, origin: tool.origin))
            }
        }
        for (agent, digest) in tokens {
            guard let resource = fleet[agent], let spec = resource.agent else { continue }
            let permissions = engine.permissions(of: agent)
            let routes = (routesByNamespace[agent.namespace] ?? []).filter { permissions.permits(.model, $0.id) }
            let tools = toolsByNamespace[agent.namespace] ?? []
            callers[digest] = Caller(
                agent: agent, routes: routes.sorted { $0.id < $1.id }, provider: spec.model.value.provider,
                maxTokensPerCall: spec.maxTokensPerCall,
                tools: Dictionary(
                    tools.filter { permissions.permits(.tool, $0.name) }.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }),
                namespaceTools: Set(tools.map(\.name)), workingDir: spec.runtime.workingDir, runtime: spec.runtime,
                approvalTools: Set(tools.filter { !permissions.approvalRules(forTool: $0.name).isEmpty }.map(\.name)), digest: digest)
        }
    }

    /// The agent whose token this is; nil for any other string.
    public func caller(token: String) -> Caller? { callers[AgentToken.digest(token)] }

    /// The agent whose token has this digest (`AgentToken.digest`).
    public func caller(digest: String) -> Caller? { callers[digest] }

    public var agents: [ResourceID] { callers.values.map(\.agent).sorted() }
}

extension CallerTable.Caller {
    /// The route for the model a request names. Fails closed: a model no policy allows
    /// is refused like one that does not exist, but says which it is.
    public func route(_ name: String) throws(GatewayError) -> CallerTable.Route {
        if let ref = ModelRef(name) {
            if let route = routes.first(where: { $0.provider.name == ref.provider && $0.model.name == ref.model }) { return route }
            throw .modelNotAllowed(
                "agent \(agent) may not use the model \"\(name)\" (no policy allows it, or no ModelProvider \(agent.namespace)/\(ref.provider) serves it); it may use: \(allowed)"
            )
        }
        let named = routes.filter { $0.model.name == name }
        if let own = named.first(where: { $0.provider.name == provider }) { return own }
        if named.count == 1 { return named[0] }
        if named.isEmpty {
            throw .modelNotAllowed("agent \(agent) may not use a model named \"\(name)\"; it may use: \(allowed)")
        }
        throw .invalidRequest(
            "the model name \"\(name)\" is served by several providers; say which: \(named.map(\.id).joined(separator: ", "))",
            param: "model")
    }

    /// The route for a request in `api`: as `route(_:)`, and refused (naming what to
    /// use) when the model's provider does not speak that API.
    public func route(_ name: String, for api: ModelAPI) throws(GatewayError) -> CallerTable.Route {
        let route = try route(name)
        guard api.isSpoken(by: route.spec.apiStyle) else {
            let spoken = ModelAPI.spoken(by: route.spec.apiStyle)
            throw GatewayError(
                status: 400, type: "invalid_request_error", code: "api_not_supported",
                message:
                    "model \(route.id) is served by ModelProvider \(route.provider) (apiStyle \(route.spec.apiStyle.rawValue)), which does not speak the \(api.title) API; call it through \(spoken.map { "POST /v1" + $0.path }.joined(separator: ", ")), or use a model of a ModelProvider whose apiStyle is \(api == .messages ? "anthropic" : "openai")",
                param: "model")
        }
        return route
    }

    private var allowed: String { routes.isEmpty ? "no model" : routes.map(\.id).joined(separator: ", ") }

    /// The tool a call names, if the agent's policies allow it now. Fails closed: a tool
    /// no policy allows (or one denies) is refused, and one that is not applied is not found.
    public func tool(_ name: String) throws(GatewayError) -> CallerTable.ToolRoute {
        if let route = tools[name] { return route }
        let allowed = tools.isEmpty ? "no tool" : tools.keys.sorted().joined(separator: ", ")
        guard namespaceTools.contains(name) else {
            throw .toolNotFound(
                "no Tool \(Diagnostic.quoted(name)) is applied in namespace \(Diagnostic.quoted(agent.namespace))"
                    + "\(Suggestion.hint(for: name, among: Array(tools.keys)))")
        }
        throw .toolNotAllowed(
            "agent \(agent) may not use tool \(Diagnostic.quoted(name)) (no policy allows it, or one denies it); it may use: \(allowed)")
    }

    /// How many output tokens the call may produce: the least of the agent's own bound,
    /// the request's and the model's; 4,096 when none says; none for embeddings.
    public func completionBound(_ request: ModelRequest, _ route: CallerTable.Route) -> Int {
        guard request.api.hasOutput else { return 0 }
        let bounds = [request.maxTokens, maxTokensPerCall, route.model.maxOutputTokens].compactMap { $0 }
        if let least = bounds.min() { return least }
        if let window = route.model.contextWindow { return max(1, window - request.promptBound) }
        return 4096
    }
}

/// Agents' credentials for orl's API. Only digests are kept: a stolen state file grants
/// nothing, and the gateway compares digests of what it is shown.
public enum AgentToken {
    /// Whether `given` is `expected`, in time that depends on neither: both are hashed
    /// first and the digests compared whole, so a caller timing the answer learns
    /// nothing of the operator's token.
    public static func matches(_ given: String?, _ expected: String) -> Bool {
        guard let given else { return false }
        let a = Array(SHA256.hash(data: Array(given.utf8)))
        let b = Array(SHA256.hash(data: Array(expected.utf8)))
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }

    /// The token's SHA-256 in lowercase hex: what the gateway keeps and looks callers up
    /// by. On every call's path, so written into one string without a string per byte.
    public static func digest(_ token: String) -> String {
        let hash = SHA256.hash(data: Array(token.utf8))
        return String(unsafeUninitializedCapacity: 64) { buffer in
            var index = 0
            for byte in hash {
                buffer[index] = hexDigits[Int(byte >> 4)]
                buffer[index + 1] = hexDigits[Int(byte & 0x0f)]
                index += 2
            }
            return index
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
