public import OrlJSON

/// `mcp.lock.json`: the tool definitions `orlctl mcp pin` read from each MCP server,
/// kept next to the manifests and versioned with them. Reading manifests puts each
/// server's pins into its Tool (`spec.mcp.pins`), so validation, the audit, `explain`
/// and `review` stay offline and deterministic, `apply` stores the pins with the Tool
/// (a changed pin is a changed Tool in the plan), and the controller serves and checks
/// exactly what was applied.
///
/// ```json
/// {"lockVersion": 1, "servers": [{"namespace": "default", "name": "github", "tools": [
///   {"name": "create_issue", "description": "...", "inputSchema": {...}, "annotations": {...}, "hash": "sha256:..."}]}]}
/// ```
public enum McpLock {
    public static let fileName = "mcp.lock.json"
    public static let version = 1

    public static func isLockFile(_ path: String) -> Bool {
        path == fileName || path.hasSuffix("/" + fileName)
    }

    /// The lock file's text for these servers' live tool lists: keys sorted, one tool
    /// per server in name order, so pinning twice against the same servers writes the
    /// same bytes and a diff shows only what changed.
    public static func render(_ servers: [(id: ResourceID, tools: [Node])]) -> String {
        let entries: [JSONValue] = servers.sorted { $0.id < $1.id }.map { server in
            let tools = server.tools.map { tool -> (String, JSONValue) in
                let definition = McpPin.definition(of: tool)
                var members: [(String, JSONValue)] = []
                if case .object(let given) = JSONValue(definition) { members = given }
                members.append(("hash", .string(McpPin.hash(of: tool))))
                return (tool["name"]?.string ?? "", .object(members.sorted { $0.0 < $1.0 }))
            }
            return .object([
                ("name", .string(server.id.name)), ("namespace", .string(server.id.namespace)),
                ("tools", .array(tools.sorted { $0.0 < $1.0 }.map(\.1))),
            ])
        }
        return JSONValue.object([("lockVersion", .int(version)), ("servers", .array(entries))]).rendered() + "\n"
    }

    /// Puts each MCP server's pins from the lock files into its Tool, and reports lock
    /// entries that cannot be trusted and servers without pins.
    public static func attach(_ read: ReadManifests, reader: ManifestReader = ManifestReader()) -> ReadManifests {
        var entries: [ResourceID: Node] = [:]
        var diagnostics: [Diagnostic] = []
        for lock in read.mcpLocks { diagnostics += parse(lock, into: &entries) }
        var result = read
        result.diagnostics += diagnostics
        for (index, resource) in read.resources.enumerated() {
            guard let spec = resource.tool, spec.type == .mcp, spec.mcp != nil else { continue }
            guard let tools = entries[resource.id] else {
                if spec.mcp?.pins.isEmpty ?? true {
                    result.diagnostics.append(
                        .warning(
                            .mcpUnpinned,
                            "MCP server \(resource.id) has no pinned tools, so agents can call none of them; pin them with orlctl mcp pin -f DIR",
                            at: resource.nameLocation, resource: resource.id, path: ValuePath([.key("metadata"), .key("name")])))
                }
                continue
            }
            let document = withPins(resource.document, tools)
            let violations = reader.schemas.schema(for: .tool).validate(document)
            guard violations.isEmpty else {
                result.diagnostics += violations.map {
                    .error(
                        .mcpPinInvalid, "the pins of \(resource.id) in \(fileName): \($0.message)", at: $0.location, resource: resource.id)
                }
                continue
            }
            do {
                let decoded = try NodeDecoder.decode(ToolSpec.self, from: document["spec"]!, at: ValuePath([.key("spec")]))
                result.resources[index] = Resource(
                    metadata: resource.metadata, spec: .tool(decoded), document: document, file: resource.file,
                    documentIndex: resource.documentIndex)
            } catch {
                result.diagnostics.append(.error(.mcpPinInvalid, error.message, at: error.location, resource: resource.id))
            }
        }
        return result
    }

    /// Reads one lock file's entries, checking every hash against its definition.
    private static func parse(_ lock: Node, into entries: inout [ResourceID: Node]) -> [Diagnostic] {
        guard lock.members != nil, lock["lockVersion"]?.number?.integer == version, let servers = lock["servers"]?.elements else {
            return [
                .error(
                    .mcpPinInvalid,
                    "\(fileName) must be an object with \"lockVersion\": \(version) and a \"servers\" array, as orlctl mcp pin writes it",
                    at: lock.location)
            ]
        }
        var diagnostics: [Diagnostic] = []
        for server in servers {
            guard let name = server["name"]?.string, let tools = server["tools"], tools.elements != nil else {
                diagnostics.append(
                    .error(.mcpPinInvalid, "a server of \(fileName) needs a \"name\" and a \"tools\" array", at: server.location))
                continue
            }
            let id = ResourceID(
                kind: ResourceKind.tool.rawValue, namespace: server["namespace"]?.string ?? ResourceID.defaultNamespace, name: name)
            var valid = true
            for tool in tools.elements ?? [] {
                let stated = tool["hash"]?.string
                let actual = McpPin.hash(of: tool)
                guard stated != actual else { continue }
                valid = false
                diagnostics.append(
                    .error(
                        .mcpPinInvalid,
                        "the pinned definition of \(name)/\(tool["name"]?.string ?? "?") does not match its hash (\(stated ?? "none") ≠ \(actual)); pin again with orlctl mcp pin rather than editing \(fileName)",
                        at: tool["hash"]?.location ?? tool.location, resource: id))
            }
            if entries[id] != nil {
                diagnostics.append(.error(.mcpPinInvalid, "\(id) is pinned more than once", at: server.location, resource: id))
                valid = false
            }
            if valid { entries[id] = tools }
        }
        return diagnostics
    }

    /// The Tool's document with `spec.mcp.pins` set to `tools`.
    private static func withPins(_ document: Node, _ tools: Node) -> Node {
        func replacing(_ node: Node, _ key: String, _ value: Node) -> Node {
            var members = node.members ?? []
            if let i = members.firstIndex(where: { $0.key == key }) {
                members[i].value = value
            } else {
                members.append(Node.Member(key: key, keyLocation: value.location, value: value))
            }
            return Node(.object(members), at: node.location)
        }
        guard let spec = document["spec"], let mcp = spec["mcp"] else { return document }
        return replacing(document, "spec", replacing(spec, "mcp", replacing(mcp, "pins", tools)))
    }
}
