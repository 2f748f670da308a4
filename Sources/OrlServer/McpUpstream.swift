public import AsyncHTTPClient
import NIOCore
import NIOHTTP1
public import OrlCore
public import OrlJSON
import Synchronization

/// orl as an MCP client of the servers behind `/mcp` (streamable HTTP): one session per
/// server, opened on first use (`initialize`, then `notifications/initialized`) and
/// opened again when the server forgets it (404). The protocol is a handful of JSON-RPC
/// messages, so it is spoken here directly rather than through an SDK whose Linux HTTP
/// transport buffers and whose newest revision is what this code negotiates anyway.
///
/// It also keeps each server's live tool definitions for `refresh`, so a call checks
/// the live definition against its pin without asking the server every time.
public final class McpUpstream: Sendable {
    public static let protocolVersion = "2025-11-25"
    /// What orl accepts from a server or an agent, newest first.
    public static let protocolVersions = ["2025-11-25", "2025-06-18", "2025-03-26"]

    public struct Endpoint: Sendable, Hashable {
        public var server: ResourceID
        public var url: String
        public var headers: [String: String]
        public var credential: String?
        public var timeout: Duration
        /// A stdio server: the program orl runs and speaks to on its standard input and
        /// output (`url` then only names it in messages).
        public var stdio: StdioInvocation?

        public init(server: ResourceID, url: String, headers: [String: String], credential: String?, timeout: Duration) {
            self.server = server
            self.url = url
            self.headers = headers
            self.credential = credential
            self.timeout = timeout
        }

        public init(server: ResourceID, stdio: StdioInvocation, credential: String?, timeout: Duration) {
            self.init(server: server, url: "stdio:" + stdio.command, headers: [:], credential: credential, timeout: timeout)
            self.stdio = stdio
        }
    }

    public struct Failure: Error, Sendable {
        public var message: String
        public init(_ message: String) { self.message = message }
    }

    struct Session: Sendable {
        var id: String?
        var version: String
    }

    struct Live: Sendable {
        var hashes: [String: String]
        /// Each tool's definition as listed, by name: what `drift` compares with the pins.
        var tools: [String: Node]
        var at: ContinuousClock.Instant
    }

    private let client: HTTPClient
    private let sessions = Mutex<[Endpoint: Session]>([:])
    private let live = Mutex<[Endpoint: Live]>([:])
    private let ids = Atomic<Int>(0)
    let maxResponseBytes: Int

    /// Runs the stdio servers; nil: they are unavailable (calls to them fail with why).
    public let stdio: McpStdioServers?

    public init(client: HTTPClient? = nil, maxResponseBytes: Int = 16 << 20, stdio: McpStdioServers? = nil) {
        self.client = client ?? Gateway.sharedClient
        self.maxResponseBytes = maxResponseBytes
        self.stdio = stdio
    }

    // MARK: Calls

    /// The server's tools as it lists them now (every page).
    public func listTools(_ endpoint: Endpoint) async throws(Failure) -> [Node] {
        var tools: [Node] = []
        var cursor: String?
        repeat {
            let params: JSONValue = .object([("cursor", cursor.map(JSONValue.string))])
            let result = try await request(endpoint, method: "tools/list", params: params)
            tools += result["tools"]?.elements ?? []
            cursor = result["nextCursor"]?.string
        } while cursor != nil && tools.count < 100_000
        var byName: [String: Node] = [:]
        for tool in tools { if let name = tool["name"]?.string { byName[name] = tool } }
        live.withLock { $0[endpoint] = Live(hashes: Self.hashes(tools), tools: byName, at: .now) }
        return tools
    }

    /// `tools/call`: the server's result, as it gave it.
    public func callTool(_ endpoint: Endpoint, name: String, arguments: JSONValue) async throws(Failure) -> Node {
        try await request(endpoint, method: "tools/call", params: .object([("name", .string(name)), ("arguments", arguments)]))
    }

    /// The live hash of each tool, from a listing at most `maxAge` old (listing again
    /// when it is older).
    public func liveHashes(_ endpoint: Endpoint, maxAge: Duration) async throws(Failure) -> [String: String] {
        if let known = live.withLock({ $0[endpoint] }), ContinuousClock.now - known.at < maxAge { return known.hashes }
        return Self.hashes(try await listTools(endpoint))
    }

    /// The live listing (hashes and definitions), at most `maxAge` old.
    func listing(_ endpoint: Endpoint, maxAge: Duration) async throws(Failure) -> Live {
        if let known = live.withLock({ $0[endpoint] }), ContinuousClock.now - known.at < maxAge { return known }
        let tools = try await listTools(endpoint)
        return live.withLock { $0[endpoint] } ?? Live(hashes: Self.hashes(tools), tools: [:], at: .now)
    }

    static func hashes(_ tools: [Node]) -> [String: String] {
        var hashes: [String: String] = [:]
        for tool in tools {
            if let name = tool["name"]?.string { hashes[name] = McpPin.hash(of: tool) }
        }
        return hashes
    }

    // MARK: JSON-RPC over streamable HTTP

    func request(_ endpoint: Endpoint, method: String, params: JSONValue) async throws(Failure) -> Node {
        if endpoint.stdio != nil {
            guard let stdio else {
                throw Failure("MCP server \(endpoint.server.name) is a stdio server, and nothing here can run it")
            }
            return try await stdio.request(endpoint, method: method, params: params)
        }
        do {
            return try await send(endpoint, try await session(endpoint), method: method, params: params)
        } catch  where error.message == Self.expired {
            // The server restarted or dropped the session: open a new one, once.
            sessions.withLock { $0[endpoint] = nil }
            return try await send(endpoint, try await session(endpoint), method: method, params: params)
        }
    }

    private func session(_ endpoint: Endpoint) async throws(Failure) -> Session {
        if let known = sessions.withLock({ $0[endpoint] }) { return known }
        let initialize = JSONValue.object([
            ("protocolVersion", .string(Self.protocolVersion)), ("capabilities", .object([])),
            ("clientInfo", .object([("name", .string("orl")), ("version", .string("1"))])),
        ])
        let (result, headers) = try await post(
            endpoint, session: nil, version: nil, message: message(method: "initialize", params: initialize, id: nextID()))
        guard let result else { throw Failure("MCP server \(endpoint.server.name) did not answer initialize") }
        let version = result["protocolVersion"]?.string ?? Self.protocolVersion
        guard Self.protocolVersions.contains(version) else {
            throw Failure(
                "MCP server \(endpoint.server.name) speaks protocol \(version); orl speaks \(Self.protocolVersions.joined(separator: ", "))"
            )
        }
        let session = Session(id: headers.first(name: "mcp-session-id"), version: version)
        _ = try await post(
            endpoint, session: session.id, version: version,
            message: JSONValue.object([("jsonrpc", .string("2.0")), ("method", .string("notifications/initialized"))]))
        sessions.withLock { $0[endpoint] = session }
        return session
    }

    private func send(_ endpoint: Endpoint, _ session: Session, method: String, params: JSONValue) async throws(Failure) -> Node {
        let (result, _) = try await post(
            endpoint, session: session.id, version: session.version, message: message(method: method, params: params, id: nextID()),
            sessionExpires: session.id != nil)
        guard let result else { throw Failure("MCP server \(endpoint.server.name) did not answer \(method)") }
        return result
    }

    private func nextID() -> Int { ids.wrappingAdd(1, ordering: .relaxed).newValue }

    private func message(method: String, params: JSONValue, id: Int) -> JSONValue {
        .object([("jsonrpc", .string("2.0")), ("id", .int(id)), ("method", .string(method)), ("params", params)])
    }

    /// One POST: the result of the request it carries (nil for a notification), read
    /// from a JSON body or from the event stream the server answers with.
    private func post(
        _ endpoint: Endpoint, session: String?, version: String?, message: JSONValue, sessionExpires: Bool = false
    ) async throws(Failure) -> (Node?, HTTPHeaders) {
        var upstream = HTTPClientRequest(url: endpoint.url)
        upstream.method = .POST
        for (header, value) in endpoint.headers.sorted(by: { $0.key < $1.key }) { upstream.headers.add(name: header, value: value) }
        upstream.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        upstream.headers.replaceOrAdd(name: "Accept", value: "application/json, text/event-stream")
        if let credential = endpoint.credential { upstream.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(credential)") }
        if let session { upstream.headers.replaceOrAdd(name: "Mcp-Session-Id", value: session) }
        if let version { upstream.headers.replaceOrAdd(name: "MCP-Protocol-Version", value: version) }
        upstream.body = .bytes(ByteBuffer(string: message.compactRendered()))
        let (seconds, attoseconds) = endpoint.timeout.components
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await client.execute(upstream, timeout: .milliseconds(seconds * 1000 + attoseconds / 1_000_000_000_000_000))
            body = try await response.body.collect(upTo: maxResponseBytes)
        } catch {
            throw Failure(masked("MCP server \(endpoint.server.name) (\(endpoint.url)): \(error)", endpoint.credential))
        }
        let status = Int(response.status.code)
        let text = String(decoding: body.readableBytesView, as: UTF8.self)
        if status == 404 && sessionExpires { throw Failure(Self.expired) }
        guard (200..<300).contains(status) else {
            throw Failure(masked("MCP server \(endpoint.server.name) answered \(status): \(String(text.prefix(300)))", endpoint.credential))
        }
        guard case .object(let members) = message, members.contains(where: { $0.0 == "id" }) else { return (nil, response.headers) }
        let contentType = response.headers.first(name: "content-type") ?? ""
        let messages: [Node]
        do {
            messages =
                contentType.hasPrefix("text/event-stream")
                ? try Self.events(text).map { try JSONParser.parse($0, file: "<mcp>") } : [try JSONParser.parse(text, file: "<mcp>")]
        } catch {
            throw Failure("MCP server \(endpoint.server.name) answered with what is not JSON-RPC: \(String(text.prefix(200)))")
        }
        for reply in messages where reply["id"] != nil && (reply["result"] != nil || reply["error"] != nil) {
            if let error = reply["error"] {
                let code = error["code"]?.number?.integer.map { " \($0)" } ?? ""
                throw Failure(
                    masked(
                        "MCP server \(endpoint.server.name) refused\(code): \(error["message"]?.string ?? "no message")",
                        endpoint.credential))
            }
            return (reply["result"], response.headers)
        }
        throw Failure("MCP server \(endpoint.server.name) sent no response to the request: \(String(text.prefix(200)))")
    }

    static let expired = "session expired"

    /// The `data` of each event of a `text/event-stream` body.
    static func events(_ text: String) -> [String] {
        var events: [String] = []
        var data: [Substring] = []
        // "\r\n" is one Character in Swift: split on each kind of line end.
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            if line.isEmpty {
                if !data.isEmpty { events.append(data.joined(separator: "\n")) }
                data = []
            } else if line.hasPrefix("data:") {
                let value = line.dropFirst(5)
                data.append(value.hasPrefix(" ") ? value.dropFirst() : value)
            }
        }
        if !data.isEmpty { events.append(data.joined(separator: "\n")) }
        return events
    }

    private func masked(_ text: String, _ credential: String?) -> String {
        guard let credential, !credential.isEmpty else { return text }
        return text.replacing(credential, with: "(sensitive)")
    }
}
