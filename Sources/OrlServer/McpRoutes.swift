import Hummingbird
import NIOCore
import OrlCore
import OrlJSON
import Synchronization

/// `/mcp`: one MCP endpoint per agent (streamable HTTP, stateless: no session, every
/// POST answered with JSON; revisions 2025-03-26 to 2025-11-25, and the stateless
/// 2026-07-28 per request). The agent authenticates with its own token; `tools/list`
/// offers the pinned MCP tools its policies allow (only its step's, while it serves a
/// workflow step); `tools/call` is checked again, fails closed, and is forwarded to the
/// tool's server with the server's credential from the vault.
///
/// On the wire a tool is `SERVER__TOOL`: MCP tool names and the function names model
/// APIs accept have no `/`; policies name it `SERVER/TOOL`, and a call may use either.
extension AgentAPI {
    static let mcpSeparator = "__"

    /// The stateless revision: no `initialize`, no session; each request names its
    /// revision in `params._meta` (and the `MCP-Protocol-Version`, `Mcp-Method` and,
    /// for `tools/call`, `Mcp-Name` headers, which must agree with the body).
    static let statelessVersions = ["2026-07-28"]
    static let versionKey = "io.modelcontextprotocol/protocolVersion"
    static let capabilitiesKey = "io.modelcontextprotocol/clientCapabilities"

    func mcp(_ request: Request) async -> Response {
        let headerVersion = request.headers[values: .init("MCP-Protocol-Version")!].first
        if let version = headerVersion, !McpUpstream.protocolVersions.contains(version), !Self.statelessVersions.contains(version) {
            return Self.unsupported(nil, version)
        }
        let caller: CallerTable.Caller
        do {
            caller = try gateway.authenticate(request)
        } catch {
            return Self.rpc(nil, error: -32001, error.message, status: .unauthorized)
        }
        var request = request
        let bytes: [UInt8]
        do {
            bytes = Array(try await request.collectBody(upTo: configuration.maxRequestBytes).readableBytesView)
        } catch {
            return Self.rpc(
                nil, error: -32600, "the request is larger than \(configuration.maxRequestBytes) bytes", status: .contentTooLarge)
        }
        guard let message = try? JSONParser.parse(bytes: bytes, file: "<mcp>"), message.members != nil else {
            return Self.rpc(nil, error: -32700, "the body is not a JSON-RPC message (one JSON object)", status: .badRequest)
        }
        // Notifications and the client's responses need no answer.
        guard let id = message["id"], let method = message["method"]?.string else {
            return Response(status: .accepted)
        }
        let params = message["params"]
        let meta = params?["_meta"]
        if method == "server/discover" || meta?[Self.versionKey] != nil {
            if let refused = Self.checkStateless(id, method: method, params: params, headers: request.headers) { return refused }
            return await mcp(id, method: method, params: params, caller: caller, request: request, stateless: true)
        }
        return await mcp(id, method: method, params: params, caller: caller, request: request, stateless: false)
    }

    private func mcp(
        _ id: Node, method: String, params: Node?, caller: CallerTable.Caller, request: Request, stateless: Bool
    ) async -> Response {
        let instructions = "Tools of the MCP servers orl fronts for agent \(caller.agent.name), as its policies allow."
        let capabilities = JSONValue.object([("tools", .object([("listChanged", .bool(false))]))])
        switch (method, stateless) {
        case ("initialize", false):
            let asked = params?["protocolVersion"]?.string ?? McpUpstream.protocolVersion
            let version = McpUpstream.protocolVersions.contains(asked) ? asked : McpUpstream.protocolVersion
            return Self.rpc(
                id,
                result: .object([
                    ("protocolVersion", .string(version)), ("capabilities", capabilities),
                    ("serverInfo", .object([("name", .string("orl")), ("version", .string("1"))])), ("instructions", .string(instructions)),
                ]))
        case ("server/discover", true):
            return Self.rpc(
                id,
                result: .object([
                    ("supportedVersions", .array((Self.statelessVersions + McpUpstream.protocolVersions).map(JSONValue.string))),
                    ("capabilities", capabilities), ("instructions", .string(instructions)),
                    // What it lists depends on who asks: private, never cached.
                    ("ttlMs", .int(0)), ("cacheScope", .string("private")),
                    (
                        "_meta",
                        .object([("io.modelcontextprotocol/serverInfo", .object([("name", .string("orl")), ("version", .string("1"))]))])
                    ),
                ]), stateless: true)
        case ("ping", false):
            return Self.rpc(id, result: .object([]))
        case ("tools/list", _):
            return await listTools(id, caller: caller, request: request, stateless: stateless)
        case ("tools/call", _):
            return await callTool(id, params: params, caller: caller, request: request, stateless: stateless)
        default:
            return Self.rpc(
                id, error: -32601,
                "method \(Diagnostic.quoted(method)) is not served by orl's /mcp\(stateless ? " in the stateless revision" : "")",
                status: stateless ? .notFound : .ok)
        }
    }

    /// The stateless revision's checks of a request, in the order the revision gives
    /// them; nil when it passes.
    static func checkStateless(_ id: Node, method: String, params: Node?, headers: HTTPFields) -> Response? {
        guard let meta = params?["_meta"], meta.members != nil, let version = meta[versionKey], meta[capabilitiesKey] != nil else {
            return rpc(
                id, error: -32602, "params._meta must carry \(versionKey) and \(capabilitiesKey) (protocol revision 2026-07-28)",
                status: .badRequest)
        }
        let header = headers[values: .init("MCP-Protocol-Version")!].first
        guard let asked = version.string, header == asked else {
            return rpc(
                id, error: -32020, "the MCP-Protocol-Version header does not match params._meta's protocol version", status: .badRequest)
        }
        guard headers[values: .init("Mcp-Method")!].first == method else {
            return rpc(id, error: -32020, "the Mcp-Method header does not match the request's method", status: .badRequest)
        }
        if method == "tools/call", let name = params?["name"]?.string, headers[values: .init("Mcp-Name")!].first != name {
            return rpc(id, error: -32020, "the Mcp-Name header does not match the tool's name", status: .badRequest)
        }
        guard statelessVersions.contains(asked) else { return unsupported(id, asked) }
        return nil
    }

    static func unsupported(_ id: Node?, _ version: String) -> Response {
        let supported = statelessVersions + McpUpstream.protocolVersions
        let body = JSONValue.object([
            ("jsonrpc", .string("2.0")), ("id", id.map(JSONValue.init) ?? .null),
            (
                "error",
                .object([
                    ("code", .int(-32022)),
                    ("message", .string("unsupported MCP protocol version \(version); orl speaks \(supported.joined(separator: ", "))")),
                    ("data", .object([("supported", .array(supported.map(JSONValue.string))), ("requested", .string(version))])),
                ])
            ),
        ])
        return Gateway.json(.badRequest, body.compactRendered())
    }

    // MARK: tools/list

    private func listTools(_ id: Node, caller: CallerTable.Caller, request: Request, stateless: Bool) async -> Response {
        var routes = caller.tools.values.filter { $0.mcp != nil }
        let agent = caller.agent
        if gateway.holdsTasks(agent, now: gateway.clock()) {
            let run = request.headers[values: Gateway.runHeader].first
            let step = request.headers[values: Gateway.stepHeader].first
            do {
                let scope = try await perform(reading: true) { () throws(RunError) in
                    try self.reads.stepTools(agent: agent, run: run, step: step)
                }
                routes = routes.filter { scope.tools.contains($0.name) }
            } catch {
                return Self.rpc(id, error: -32003, error.message)
            }
        }
        let tools = routes.sorted { $0.name < $1.name }.compactMap { route -> JSONValue? in
            guard let pin = route.mcp?.pin, case .object(var members) = pin.definition else { return nil }
            members[0] = ("name", .string(Self.wireName(route.name)))
            return .object(members)
        }
        let cache: [(String, JSONValue?)] = stateless ? [("ttlMs", .int(0)), ("cacheScope", .string("private"))] : []
        return Self.rpc(id, result: .object([("tools", .array(tools))] + cache), stateless: stateless)
    }

    static func wireName(_ name: String) -> String { name.replacing("/", with: mcpSeparator, maxReplacements: 1) }

    static func orlName(_ wire: String) -> String {
        guard !wire.contains("/"), let range = wire.firstRange(of: mcpSeparator) else { return wire }
        return String(wire[..<range.lowerBound]) + "/" + String(wire[range.upperBound...])
    }

    // MARK: tools/call

    private func callTool(_ id: Node, params: Node?, caller: CallerTable.Caller, request: Request, stateless: Bool) async -> Response {
        let started = ContinuousClock.now
        let agent = caller.agent
        guard let wire = params?["name"]?.string else {
            return Self.rpc(id, error: -32602, "tools/call needs params.name, the tool's name as tools/list gives it")
        }
        let name = Self.orlName(wire)
        let arguments = params?["arguments"].map(JSONValue.init) ?? .object([])
        let route: CallerTable.ToolRoute
        do throws(GatewayError) {
            route = try caller.tool(name)
        } catch {
            mcpRefused(name, agent, error.message)
            return Self.rpc(id, error: error.code == "tool_not_found" ? -32602 : -32003, error.message)
        }
        guard let (server, pin) = route.mcp else {
            return Self.rpc(id, error: -32602, "\(Diagnostic.quoted(name)) is not an MCP tool; call it with POST /v1/tools/\(name)/invoke")
        }
        // The task it serves, if any: then the step must list the tool.
        var task: String?
        if gateway.holdsTasks(agent, now: gateway.clock()) {
            let run = request.headers[values: Gateway.runHeader].first
            let step = request.headers[values: Gateway.stepHeader].first
            do {
                task = try await perform(reading: true) { () throws(RunError) in
                    try self.reads.toolGrant(name, agent: agent, run: run, step: step)
                }
                .task.description
            } catch {
                mcpRefused(name, agent, error.message)
                return Self.rpc(id, error: -32003, error.message)
            }
        } else if caller.approvalTools.contains(name) {
            // Outside a workflow no approval gate stands before the call: this very call
            // waits for a person's decision, and is refused without one.
            switch await approval(of: name, arguments: arguments, agent: agent) {
            case .approved(let approval): task = "\(approval.reference) approved by \(approval.decidedBy ?? "?")"
            case .refused(let message):
                mcpRefused(name, agent, message)
                return Self.rpc(id, error: -32003, message)
            }
        }
        var credential: String?
        if let secret = server.credentialSecret?.value {
            guard let value = self.secret(SecretID(namespace: route.id.namespace, name: secret)) else {
                return Self.toolError(
                    id, "the credential of MCP server \(route.id.name) (secret \(Diagnostic.quoted(secret))) is not in the vault")
            }
            credential = value
        }
        guard
            let endpoint = McpUpstream.Endpoint.server(
                route.id, spec: route.spec, origin: route.origin, credential: credential, stateDirectory: configuration.stateDirectory)
        else {
            return Self.toolError(id, stateless: stateless, "MCP server \(route.id.name) has neither a url nor a command")
        }
        let result: Node
        do throws(McpUpstream.Failure) {
            // The rug pull: a definition that changed since it was pinned is not called.
            let listing = try await mcp.listing(endpoint, maxAge: configuration.mcpDefinitionMaxAge)
            notePins(route.id, server, seen: listing, endpoint: endpoint)
            let live = listing.hashes
            guard live[pin.name] == pin.hash else {
                let what = live[pin.name] == nil ? "no longer lists it" : "changed its definition since it was pinned"
                let message =
                    "tool \(Diagnostic.quoted(name)) is refused: MCP server \(route.id.name) \(what); review the change and pin again with orlctl mcp pin"
                mcpRefused(name, agent, message)
                return Self.rpc(id, error: -32003, message)
            }
            result = try await mcp.callTool(endpoint, name: pin.name, arguments: arguments)
        } catch {
            recordCall(name, agent, task, started, outcome: "failed: \(error.message)", bytes: 0)
            return Self.toolError(id, stateless: stateless, error.message)
        }
        var answer = JSONValue(result)
        if stateless, case .object(var members) = answer, !members.contains(where: { $0.0 == "resultType" }) {
            members.append(("resultType", .string("complete")))
            answer = .object(members)
        }
        var text = JSONValue.object([("jsonrpc", .string("2.0")), ("id", JSONValue(id)), ("result", answer)]).compactRendered()
        if let credential, !credential.isEmpty { text = text.replacing(credential, with: "(sensitive)") }
        recordCall(name, agent, task, started, outcome: result["isError"]?.bool == true ? "tool error" : "ok", bytes: text.utf8.count)
        return Gateway.json(.ok, text)
    }

    enum Decision {
        case approved(ToolApproval)
        case refused(String)
    }

    /// Records the call as waiting for approval and waits, woken by each change of
    /// the store, until `orlctl approve`/`deny` decides it or its deadline passes
    /// (then it is refused, and recorded as Expired).
    private func approval(of tool: String, arguments: JSONValue, agent: ResourceID) async -> Decision {
        guard let approvals else {
            return .refused(
                "tool \(Diagnostic.quoted(tool)) needs a human approval (a Policy's requireApproval), which this controller cannot ask for; call it from a workflow step behind an approval gate"
            )
        }
        var random = SystemRandomNumberGenerator()
        let now = gateway.clock()
        let timeout = configuration.mcpApprovalTimeout
        let text = arguments.compactRendered()
        let request = ToolApproval(
            id: ToolApproval.newID(using: &random), agent: agent, tool: tool,
            arguments: text.utf8.count > ToolApproval.argumentLimit ? String(text.prefix(ToolApproval.argumentLimit)) + "…" : text,
            requestedAt: now, expiresAt: now.adding(timeout))
        let id = request.id
        do {
            try await perform { () throws(RunError) in
                do throws(StoreError) { try approvals.request(request) } catch { throw RunError(error) }
            }
        } catch {
            return .refused("tool \(Diagnostic.quoted(tool)) needs a human approval, which could not be recorded: \(error.message)")
        }
        gateway.log(
            ControllerEvent(
                time: now, reason: .toolCall, resource: agent,
                message: "mcp tool \(Diagnostic.quoted(tool)) waits for approval: orlctl approve \(request.reference) (or deny)"))
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        func verdict(_ approval: ToolApproval?) -> Decision? {
            guard let approval else { return .refused("\(request.reference) vanished from the state") }
            let by = approval.decidedBy.map { " by \($0)" } ?? ""
            let why = approval.reason.map { ": \($0)" } ?? ""
            switch approval.state {
            case .pending: return nil
            case .approved: return .approved(approval)
            case .denied: return .refused("\(approval.reference) (tool \(Diagnostic.quoted(tool))) was denied\(by)\(why)")
            case .expired:
                return .refused(
                    "\(approval.reference) (tool \(Diagnostic.quoted(tool))) was refused: no one approved it within \(timeout.compactDescription)"
                )
            }
        }
        while true {
            let seen = waiters.version(of: agent)
            let current = try? await perform { () throws(RunError) in
                do throws(StoreError) { return try approvals.toolApproval(id) } catch { throw RunError(error) }
            }
            if let decided = verdict(current ?? request) { return decided }
            let left = deadline - clock.now
            if left <= .zero || Task.isCancelled {
                // Fail closed: Expired, unless a decision landed in the meantime.
                let after = try? await perform { () throws(RunError) in
                    do throws(StoreError) {
                        _ = try approvals.updateToolApproval(id) {
                            $0.deciding(.expired, by: "orl", reason: nil, now: self.gateway.clock())
                        }
                        return try approvals.toolApproval(id)
                    } catch {
                        throw RunError(error)
                    }
                }
                if let after, let decided = verdict(after) { return decided }
                return .refused(
                    "\(request.reference) (tool \(Diagnostic.quoted(tool))) was refused: no decision within \(timeout.compactDescription)")
            }
            // Woken when another process (orlctl approve) writes the store.
            await waiters.wait(agent, since: seen, for: min(left, .seconds(1)))
        }
    }

    private func recordCall(
        _ tool: String, _ agent: ResourceID, _ task: String?, _ started: ContinuousClock.Instant, outcome: String, bytes: Int
    ) {
        let elapsed = ContinuousClock.now - started
        let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
        if let metrics = gateway.telemetry.metrics {
            let kind = outcome == "ok" ? "ok" : outcome == "tool error" ? "tool_error" : "tool_failed"
            metrics.record { r in
                r.add(Metrics.toolCalls, [agent.namespace, agent.name, tool, kind])
                r.observe(Metrics.toolDuration, [agent.namespace, tool], Metrics.seconds(elapsed))
            }
        }
        gateway.log(
            ControllerEvent(
                time: gateway.clock(), reason: .toolCall, resource: agent,
                message:
                    "mcp tool \(Diagnostic.quoted(tool))\(task.map { " for \($0)" } ?? ""): \(outcome) in \(micros / 1000).\(threeDigits(micros % 1000))ms, \(bytes) bytes"
            ))
    }

    private func mcpRefused(_ tool: String, _ agent: ResourceID, _ message: String) {
        gateway.telemetry.metrics?.add(Metrics.refusals, [agent.namespace, agent.name, "mcp_tool_refused"])
        gateway.note(
            ControllerEvent(
                time: gateway.clock(), reason: .toolRefused, resource: agent, message: "mcp tool \(Diagnostic.quoted(tool)): \(message)"))
    }

    // MARK: JSON-RPC

    /// `stateless`: the result says it is complete (`resultType`), as that revision requires.
    static func rpc(_ id: Node?, result: JSONValue, stateless: Bool = false) -> Response {
        var result = result
        if stateless, case .object(let members) = result { result = .object([("resultType", .string("complete"))] + members) }
        return Gateway.json(
            .ok,
            JSONValue.object([("jsonrpc", .string("2.0")), ("id", id.map(JSONValue.init) ?? .null), ("result", result)]).compactRendered())
    }

    static func rpc(_ id: Node?, error code: Int, _ message: String, status: HTTPResponse.Status = .ok) -> Response {
        let body = JSONValue.object([
            ("jsonrpc", .string("2.0")), ("id", id.map(JSONValue.init) ?? .null),
            ("error", .object([("code", .int(code)), ("message", .string(message))])),
        ])
        return Gateway.json(status, body.compactRendered())
    }

    /// A failure of the tool itself, told to the model as MCP tool errors are.
    static func toolError(_ id: Node, stateless: Bool = false, _ message: String) -> Response {
        rpc(
            id,
            result: .object([
                ("content", .array([.object([("type", .string("text")), ("text", .string(message))])])), ("isError", .bool(true)),
            ]), stateless: stateless)
    }
}

/// Three digits, zero-padded.
private func threeDigits(_ value: Int64) -> String {
    let digits = value.description
    return String(repeating: "0", count: max(0, 3 - digits.count)) + digits
}

extension Gateway {
    /// Whether the agent holds any task now (as the agents' API saw them claimed).
    func holdsTasks(_ agent: ResourceID, now: Timestamp) -> Bool {
        state.withLock { !$0.tasks.tasks(of: agent, at: now).isEmpty }
    }
}
