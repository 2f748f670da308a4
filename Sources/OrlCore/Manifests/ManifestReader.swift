public import OrlJSON

/// What reading documents produced.
public struct ReadManifests: Sendable {
    public var resources: [Resource] = []
    /// Resources whose documents name them but could not be read (they break their
    /// schema). Their errors are reported once; references to them are not reported
    /// again as missing.
    public var unreadable: [ResourceID] = []
    /// Files or documents that failed so early (YAML, no kind or name, over the size
    /// limit) that which resources they define is unknown: any namespace may be missing
    /// a Policy or Budget.
    public var unidentified = 0
    public var diagnostics: [Diagnostic] = []
    /// Parsed `mcp.lock.json` files: see `McpLock`.
    public var mcpLocks: [Node] = []

    public init(resources: [Resource] = [], unreadable: [ResourceID] = [], diagnostics: [Diagnostic] = [], mcpLocks: [Node] = []) {
        self.resources = resources
        self.unreadable = unreadable
        self.diagnostics = diagnostics
        self.mcpLocks = mcpLocks
    }

    public mutating func append(_ other: ReadManifests) {
        resources += other.resources
        unreadable += other.unreadable
        unidentified += other.unidentified
        diagnostics += other.diagnostics
        mcpLocks += other.mcpLocks
    }
}

/// Turns one parsed document into a resource: checks its apiVersion and kind, validates
/// it against its kind's schema, and decodes it.
///
/// Reading a document needs nothing but the document, so callers may read many in
/// parallel; what needs the whole set (duplicates, references, DAGs) comes after, in
/// `ManifestValidation`.
public struct ManifestReader: Sendable {
    private let given: ManifestSchemas?
    /// The bundled schemas are compiled on first use, not when a reader is made: an
    /// apply with nothing changed reads no document and should not pay for them.
    public var schemas: ManifestSchemas { given ?? .bundled }

    public init(schemas: ManifestSchemas) {
        given = schemas
    }

    public init() {
        given = nil
    }

    /// Whether each resource keeps its whole document, as apply needs (it hashes,
    /// stores and diffs it). `validate` needs only where things are, and sets it off:
    /// the documents were most of its memory (52 of 88 MB at 10,000 manifests). Off,
    /// the decoded annotations are not kept either: no check reads them (what shows
    /// them reads the stored document), and, unique to each resource, they were a
    /// tenth of `validate`'s heap.
    public var keepsDocuments = true

    /// Whether the hot kinds are read straight from their nodes (`DirectDecoding`) before
    /// `Decodable` is asked; off only to hold the two paths to each other in tests.
    public var decodesDirectly = true

    /// Reads every document of a parsed file, keeping what the parser reported.
    public func read(_ source: ParsedSource) -> ReadManifests {
        var read = ReadManifests(diagnostics: source.diagnostics)
        if source.diagnostics.contains(where: { $0.severity == .error }) { read.unidentified += 1 }
        for document in source.documents {
            read.append(self.read(document))
        }
        return read
    }

    public func read(_ document: SourceDocument) -> ReadManifests {
        let (resource, diagnostics) = readResource(document)
        var read = ReadManifests(diagnostics: diagnostics)
        if let resource {
            read.resources.append(resource)
        } else if let kind = document.root["kind"]?.string.flatMap(ResourceKind.init(rawValue:)),
            let id = Self.identity(of: document.root), document.root["apiVersion"]?.string == ResourceKind.apiVersion
        {
            read.unreadable.append(ResourceID(kind: kind.rawValue, namespace: id.namespace, name: id.name))
        } else if diagnostics.contains(where: { $0.severity == .error }) {
            read.unidentified += 1
        }
        return read
    }

    private func readResource(_ document: SourceDocument) -> (resource: Resource?, diagnostics: [Diagnostic]) {
        let root = document.root
        guard root.members != nil else {
            return (
                nil,
                [
                    .error(
                        .resourceInvalid, "expected a resource (a mapping with apiVersion, kind, metadata and spec), got \(root.typeName)",
                        at: root.location)
                ]
            )
        }
        let id = Self.identity(of: root)

        guard let apiVersionNode = root["apiVersion"] else {
            return (
                nil,
                [
                    .error(
                        .resourceInvalid, "missing required field \"apiVersion\" (orl resources use \"\(ResourceKind.apiVersion)\")",
                        at: root.location, resource: id)
                ]
            )
        }
        guard apiVersionNode.string == ResourceKind.apiVersion else {
            let written = apiVersionNode.string.map { "\"\($0)\"" } ?? apiVersionNode.typeName
            return (
                nil,
                [
                    .error(
                        .resourceUnknownAPIVersion, "unknown apiVersion \(written); this orlctl reads \"\(ResourceKind.apiVersion)\"",
                        at: apiVersionNode.location, resource: id, path: ValuePath([.key("apiVersion")]))
                ]
            )
        }
        guard let kindNode = root["kind"] else {
            return (
                nil,
                [.error(.resourceInvalid, "missing required field \"kind\" (one of \(Self.kindList))", at: root.location, resource: id)]
            )
        }
        guard let kindName = kindNode.string, let kind = ResourceKind(rawValue: kindName) else {
            let written = kindNode.string ?? kindNode.typeName
            let hint = Suggestion.hint(for: written, among: ResourceKind.allCases.map(\.rawValue))
            return (
                nil,
                [
                    .error(
                        .resourceUnknownKind, "unknown kind \"\(written)\"\(hint); \(ResourceKind.apiVersion) has \(Self.kindList)",
                        at: kindNode.location, resource: id, path: ValuePath([.key("kind")]))
                ]
            )
        }

        let violations = schemas.schema(for: kind).validate(root)
        guard violations.isEmpty else {
            let id = id.map { ResourceID(kind: kind.rawValue, namespace: $0.namespace, name: $0.name) }
            return (nil, violations.map { .error(.schemaInvalid, $0.message, at: $0.location, resource: id, path: $0.path) })
        }

        // What is stored, listed and loaded at every controller pass is bounded, aliases
        // counted in full: a resource of 290 MB once made every pass take 1.8 GB.
        let size = root.textBytes(upTo: Resource.maxTextBytes)
        guard size <= Resource.maxTextBytes else {
            return (
                nil,
                [
                    .error(
                        .resourceInvalid,
                        "this resource holds more than \(Resource.maxTextBytes) bytes of text (aliases counted in full), the most a resource may hold; keep large content (prompts, data) out of manifests or split the resource",
                        at: root.location, resource: id)
                ]
            )
        }

        do {
            let resource = try Self.decode(
                root, kind: kind, file: document.file, documentIndex: document.index, compact: !keepsDocuments, direct: decodesDirectly)
            return (resource, [])
        } catch {
            // The schema accepted what the model cannot read: a defect in orl, reported
            // where it happened rather than hidden.
            return (
                nil,
                [
                    .error(
                        .resourceInvalid, "\(error.message) (the schema accepted it; please report this)", at: error.location, resource: id,
                        path: error.path)
                ]
            )
        }
    }

    /// The resource a document that passed its kind's schema decodes to. Also how a kept
    /// document (`ResourceSnapshot`, already checked when its file was read) becomes a
    /// resource again without its file being parsed or checked a second time.
    /// With `compact`, the resource keeps only where its document's parts are (see
    /// `ManifestReader.keepsDocuments`).
    static func decode(
        _ root: Node, kind: ResourceKind, file: String, documentIndex: Int, compact: Bool = false, direct: Bool = true
    ) throws(NodeDecodingError) -> Resource {
        guard let metadataNode = root["metadata"], let specNode = root["spec"] else {
            throw NodeDecodingError(message: "expected metadata and spec", location: root.location, path: ValuePath([]))
        }
        var metadata: ObjectMeta
        let spec: Resource.Spec
        if direct, let decoded = directlyDecoded(metadata: metadataNode, spec: specNode, kind: kind, annotations: !compact) {
            (metadata, spec) = decoded
        } else {
            (metadata, spec) = try genericallyDecoded(metadata: metadataNode, spec: specNode, kind: kind)
        }
        if compact { metadata.annotations = [:] }
        // MCP pins are matched against the whole document (`McpLock`).
        var isMcp: Bool { if case .tool(let tool) = spec { tool.type == .mcp } else { false } }
        if compact && !isMcp {
            return Resource(metadata: metadata, spec: spec, placesOf: root, file: file, documentIndex: documentIndex)
        }
        return Resource(metadata: metadata, spec: spec, document: root, file: file, documentIndex: documentIndex)
    }

    /// Through `Decodable`: what decides when the direct read gives up, and whose errors are reported.
    static func genericallyDecoded(metadata metadataNode: Node, spec specNode: Node, kind: ResourceKind) throws(NodeDecodingError) -> (
        ObjectMeta, Resource.Spec
    ) {
        let metadata = try NodeDecoder.decode(ObjectMeta.self, from: metadataNode, at: ValuePath([.key("metadata")]))
        let specPath = ValuePath([.key("spec")])
        let spec: Resource.Spec =
            switch kind {
            case .modelProvider: .modelProvider(try NodeDecoder.decode(ModelProviderSpec.self, from: specNode, at: specPath))
            case .tool: .tool(try NodeDecoder.decode(ToolSpec.self, from: specNode, at: specPath))
            case .agent: .agent(try NodeDecoder.decode(AgentSpec.self, from: specNode, at: specPath))
            case .policy: .policy(try NodeDecoder.decode(PolicySpec.self, from: specNode, at: specPath))
            case .budget: .budget(try NodeDecoder.decode(BudgetSpec.self, from: specNode, at: specPath))
            case .workflow: .workflow(try NodeDecoder.decode(WorkflowSpec.self, from: specNode, at: specPath))
            case .alert: .alert(try NodeDecoder.decode(AlertSpec.self, from: specNode, at: specPath))
            }
        return (metadata, spec)
    }

    private static let kindList = ResourceKind.allCases.map(\.rawValue).joined(separator: ", ")

    /// `Kind/name` when the document says enough to name it, for diagnostics that
    /// come before the document is known to be valid.
    private static func identity(of root: Node) -> ResourceID? {
        guard let kind = root["kind"]?.string, let name = root["metadata"]?["name"]?.string else { return nil }
        return ResourceID(kind: kind, namespace: root["metadata"]?["namespace"]?.string ?? ResourceID.defaultNamespace, name: name)
    }
}

extension Resource {
    /// The most text (keys and scalars, aliases counted in full) one resource may hold.
    public static let maxTextBytes = 1 << 20
}

extension Node {
    /// The bytes of text in the node (keys and scalars, each alias in full), counted
    /// until they pass `limit`: the walk stops there, so an alias bomb costs no more.
    func textBytes(upTo limit: Int) -> Int {
        var total = 0
        var pending: [Node] = [self]
        while let node = pending.popLast(), total <= limit {
            switch node.value {
            case .null, .bool: total += 4
            case .number(let number): total += number.text.utf8.count
            case .string(let string): total += string.utf8.count
            case .array(let elements): pending += elements
            case .object(let members):
                for member in members {
                    total += member.key.utf8.count
                    pending.append(member.value)
                }
            }
        }
        return total
    }
}
