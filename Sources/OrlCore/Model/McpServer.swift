public import OrlJSON

/// `Tool.spec.mcp`: an MCP server whose tools agents call through orl's `/mcp`. The
/// server is one Tool resource (`type: mcp`); each of its pinned tools is a tool like
/// any other, named `SERVER/TOOL`, which policies allow, deny or gate by approval.
public struct McpServerSpec: Sendable, Hashable, Decodable {
    /// A streamable-HTTP endpoint, or nil for a stdio server (`command`).
    public var url: String?
    public var command: ToolSpec.Command?
    public var headers: [String: String]
    /// Vault secret sent upstream as a bearer token (HTTP) or in the environment
    /// variable `credentialEnv` (stdio, `MCP_CREDENTIAL` by default).
    public var credentialSecret: Located<String>?
    public var credentialEnv: String
    /// How a stdio server is confined: strict (the default) is a sandbox of its own
    /// with no network at all (docs/mcp.md).
    public var isolation: AgentSpec.Isolation
    /// stdio: limits on the server process, as an agent's (`spec.mcp.resources`).
    public var resources: AgentSpec.Resources?
    /// The server's tools orl exposes (names, `*` for all); nil exposes every pinned tool.
    public var tools: [String]?
    /// What `orlctl mcp pin` recorded: the definitions agents may use, and nothing else.
    public var pins: [McpPin]

    enum CodingKeys: String, CodingKey { case url, command, headers, credentialSecret, credentialEnv, isolation, resources, tools, pins }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        url = try c.decodeIfPresent(String.self, forKey: .url)
        command = try c.decodeIfPresent(ToolSpec.Command.self, forKey: .command)
        headers = try c.decodeIfPresent([String: String].self, forKey: .headers) ?? [:]
        credentialSecret = try c.decodeIfPresent(Located<String>.self, forKey: .credentialSecret)
        credentialEnv = try c.decodeIfPresent(String.self, forKey: .credentialEnv) ?? "MCP_CREDENTIAL"
        isolation = try c.decodeIfPresent(AgentSpec.Isolation.self, forKey: .isolation) ?? .strict
        resources = try c.decodeIfPresent(AgentSpec.Resources.self, forKey: .resources)
        tools = try c.decodeIfPresent([String].self, forKey: .tools)
        pins = try c.decodeIfPresent([McpPin].self, forKey: .pins) ?? []
    }

    /// What a strict stdio server gets when its Tool sets no limit: enough for an
    /// interpreter and a few threads, not enough to take the host down.
    public static let defaultMemory = 1 << 30
    public static let defaultPids = 128
    public static let defaultCPU = 1.0
    public static let defaultOpenFiles = 1024

    /// The limits of a stdio server: as set, else (isolation strict) the defaults.
    public var limits: (memory: Int?, pids: Int?, cpu: Double?, openFiles: Int?, cpuSeconds: Int?) {
        let strict = isolation == .strict
        return (
            resources?.memory?.bytes ?? (strict ? Self.defaultMemory : nil), resources?.pids ?? (strict ? Self.defaultPids : nil),
            resources?.cpu ?? (strict ? Self.defaultCPU : nil), resources?.openFiles ?? (strict ? Self.defaultOpenFiles : nil),
            resources?.cpuTime.map { Int($0.duration.components.seconds) }
        )
    }

    /// Whether the filter exposes the server's tool `name`.
    public func exposes(_ name: String) -> Bool {
        guard let tools else { return true }
        return tools.contains { $0 == "*" || $0 == name || ($0.hasSuffix("*") && name.hasPrefix($0.dropLast())) }
    }

    /// The pinned tools the filter exposes, in pin order.
    public var exposed: [McpPin] { pins.filter { exposes($0.name) } }

    public func pin(named name: String) -> McpPin? {
        exposes(name) ? pins.first { $0.name == name } : nil
    }
}

/// One tool's definition as pinned: what agents are shown, and the hash the live
/// definition must still have for orl to forward a call to it.
public struct McpPin: Sendable, Hashable, Decodable {
    public struct Annotations: Sendable, Hashable, Decodable {
        public var title: String?
        public var readOnlyHint: Bool?
        public var destructiveHint: Bool?
        public var idempotentHint: Bool?
        public var openWorldHint: Bool?
    }

    public var name: String
    public var title: String?
    public var description: String?
    /// Canonical JSON of the input schema (and of the output schema and annotations as
    /// given), so pins compare and hash the same however the lock file is formatted.
    public var inputSchema: String
    public var outputSchema: String?
    public var annotations: Annotations?
    public var annotationsJSON: String?
    /// `sha256:` + the hash of the definition's canonical JSON (`McpPin.hash(of:)`).
    public var hash: String

    enum CodingKeys: String, CodingKey { case name, title, description, inputSchema, outputSchema, annotations, hash }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        title = try c.decodeIfPresent(String.self, forKey: .title)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        inputSchema = try c.decode(CanonicalNode.self, forKey: .inputSchema).text
        outputSchema = try c.decodeIfPresent(CanonicalNode.self, forKey: .outputSchema)?.text
        annotations = try c.decodeIfPresent(Annotations.self, forKey: .annotations)
        annotationsJSON = try c.decodeIfPresent(CanonicalNode.self, forKey: .annotations)?.text
        hash = try c.decode(String.self, forKey: .hash)
    }

    /// The members of a tool definition (from `tools/list` or a lock file) that the
    /// hash covers: what a model is shown and what the call accepts. `_meta`, icons and
    /// the like are left out; a change to any covered member is a new definition.
    public static let definitionKeys = ["name", "title", "description", "inputSchema", "outputSchema", "annotations"]

    /// The definition as pinned and as served to agents: the covered members only.
    public static func definition(of tool: Node) -> Node {
        guard let members = tool.members else { return tool }
        return Node(.object(members.filter { definitionKeys.contains($0.key) }), at: tool.location)
    }

    /// `sha256:HEX` of the definition's canonical JSON.
    public static func hash(of tool: Node) -> String { "sha256:" + CanonicalJSON.hash(definition(of: tool)) }

    /// The pinned definition as JSON, as `tools/list` serves it.
    public var definition: JSONValue {
        func parsed(_ text: String?) -> JSONValue? {
            guard let text, let node = try? JSONParser.parse(text, file: "<pin>") else { return nil }
            return JSONValue(node)
        }
        return .object([
            ("name", .string(name)), ("title", title.map(JSONValue.string)), ("description", description.map(JSONValue.string)),
            ("inputSchema", parsed(inputSchema) ?? .object([("type", .string("object"))])), ("outputSchema", parsed(outputSchema)),
            ("annotations", parsed(annotationsJSON)),
        ])
    }

    /// Capabilities the MCP annotations imply, with the protocol's defaults for what
    /// is not said (not read-only, destructive, open world): a server that says nothing
    /// is taken at its worst, so the audit fails closed.
    public var impliedCapabilities: [ToolSpec.Capability] {
        let readOnly = annotations?.readOnlyHint ?? false
        var capabilities: [ToolSpec.Capability] = []
        if annotations?.openWorldHint ?? true { capabilities.append(.egress) }
        if !readOnly, annotations?.destructiveHint ?? true { capabilities.append(.irreversible) }
        return capabilities
    }
}

/// A JSON value kept as its canonical text.
struct CanonicalNode: Decodable {
    var text: String

    init(from decoder: any Decoder) throws {
        guard let locating = decoder as? any LocatingDecoder else {
            throw DecodingError.typeMismatch(
                CanonicalNode.self, .init(codingPath: decoder.codingPath, debugDescription: "decodes only from a located Node tree"))
        }
        text = CanonicalJSON.encode(locating.node)
    }
}

extension ToolSpec {
    /// The tool `SERVER/NAME` of an MCP server: the pin's definition, with the server's
    /// capabilities, data classes, risk and timeout, and those its annotations imply.
    public func mcpTool(_ name: String) -> ToolSpec? {
        guard type == .mcp, let pin = mcp?.pin(named: name) else { return nil }
        var tool = self
        tool.description = pin.description
        var capabilities = self.capabilities
        for implied in pin.impliedCapabilities where !capabilities.contains(implied) { capabilities.append(implied) }
        tool.capabilities = capabilities
        tool.pinned = pin
        return tool
    }

    /// The server's exposed tools by their full name `SERVER/NAME`.
    public func mcpTools(server: String) -> [(name: String, spec: ToolSpec)] {
        guard type == .mcp, let mcp else { return [] }
        return mcp.exposed.compactMap { pin in mcpTool(pin.name).map { ("\(server)/\(pin.name)", $0) } }
    }
}

extension Fleet {
    /// The tool an agent, step or policy names: a Tool resource, or `SERVER/TOOL`, a
    /// pinned tool of an MCP server.
    public func tool(_ name: String, namespace: String) -> ToolSpec? {
        if let spec = resource(.tool, name, namespace: namespace)?.tool { return spec }
        guard let slash = name.firstIndex(of: "/") else { return nil }
        let server = resource(.tool, String(name[..<slash]), namespace: namespace)?.tool
        return server?.mcpTool(String(name[name.index(after: slash)...]))
    }

    /// Whether `name` names a tool the manifests define (see `declares`): an MCP tool
    /// of a server that could not be read counts, so it is not reported again.
    public func declaresTool(_ name: String, namespace: String) -> Bool {
        if declares(.tool, name, namespace: namespace) { return true }
        guard let slash = name.firstIndex(of: "/") else { return false }
        let server = String(name[..<slash])
        if unreadable.contains(ResourceID(kind: ResourceKind.tool.rawValue, namespace: namespace, name: server)) { return true }
        return tool(name, namespace: namespace) != nil
    }
}

/// How a server's live tool definitions stand against its pins: what the Tool's
/// `PinMatches` condition reports.
public struct McpPinDrift: Sendable, Hashable {
    public var tool: String
    /// The definition's members that differ (`description`, `inputSchema`,
    /// `annotations` …); empty when the tool is no longer listed at all.
    public var changed: [String]
    public var pinnedHash: String
    /// nil: the server no longer lists the tool.
    public var liveHash: String?

    /// `create_issue: description changed (pinned sha256:0123456789ab…, live sha256:…)`.
    public var summary: String {
        guard let liveHash else { return "\(tool): no longer listed by the server (pinned \(Self.short(pinnedHash)))" }
        let what = changed.isEmpty ? "its definition" : changed.joined(separator: ", ")
        return "\(tool): \(what) changed (pinned \(Self.short(pinnedHash)), live \(Self.short(liveHash)))"
    }

    static func short(_ hash: String) -> String { hash.count > 19 ? String(hash.prefix(19)) + "…" : hash }
}

extension McpServerSpec {
    /// The exposed pins whose live definition (`live`, by tool name, as `tools/list`
    /// gives it) is missing or hashes differently, in pin order.
    public func drift(live: [String: Node]) -> [McpPinDrift] {
        exposed.compactMap { pin in
            guard let tool = live[pin.name] else {
                return McpPinDrift(tool: pin.name, changed: [], pinnedHash: pin.hash, liveHash: nil)
            }
            let hash = McpPin.hash(of: tool)
            guard hash != pin.hash else { return nil }
            return McpPinDrift(tool: pin.name, changed: pin.changes(in: tool), pinnedHash: pin.hash, liveHash: hash)
        }
    }
}

extension McpPin {
    /// The members of `definitionKeys` whose live value differs from the pinned one.
    public func changes(in live: Node) -> [String] {
        guard let pinned = try? JSONParser.parse(definition.compactRendered(), file: "<pin>") else { return [] }
        return Self.definitionKeys.filter { key in
            pinned[key].map(CanonicalJSON.encode) != live[key].map(CanonicalJSON.encode)
        }
    }
}
