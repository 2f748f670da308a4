/// A subschema's place: which document, and the JSON Pointer from that document's root.
struct SchemaPosition: Hashable {
    var document: Int
    var pointer: String
}

/// What is in effect at a subschema: the base URI of its resource (for resolving
/// references), where that resource starts, and the dialect (`$schema`) it is written in.
struct SchemaScope {
    var base: URIReference
    var resourcePointer: String
    var dialect: String?
}

/// Every identifier the known documents define, found before compiling: references
/// may point forwards, backwards, into other documents, or at an embedded resource
/// by an `$id` that differs from the document's own URI.
struct SchemaIndex {
    private(set) var documents: [Node] = []
    /// Absolute URI (no fragment) → the resource's root.
    private(set) var resources: [String: SchemaPosition] = [:]
    /// `uri#name` → the subschema with that `$anchor` or `$dynamicAnchor`.
    private var anchors: [String: SchemaPosition] = [:]
    /// Resource URI → `$dynamicAnchor` name → subschema.
    private(set) var dynamicAnchors: [String: [String: SchemaPosition]] = [:]
    /// The scope of every subschema reachable through schema keywords.
    private var scopes: [SchemaPosition: SchemaScope] = [:]

    func contains(uri: String) -> Bool { resources[uri] != nil }

    mutating func add(_ root: Node, uri: String) {
        let retrieval = URIReference(uri).withoutFragment
        let position = SchemaPosition(document: documents.count, pointer: "")
        documents.append(root)
        if resources[retrieval.string] == nil { resources[retrieval.string] = position }
        walk(root, at: position, inherited: SchemaScope(base: retrieval, resourcePointer: "", dialect: nil))
    }

    private mutating func walk(_ node: Node, at position: SchemaPosition, inherited: SchemaScope) {
        var scope = inherited
        guard case .object(let members) = node.value else {
            scopes[position] = scope
            return
        }
        scope.apply(node, at: position.pointer)
        if node["$id"]?.string != nil, resources[scope.base.string] == nil {
            resources[scope.base.string] = position
        }
        scopes[position] = scope
        if let anchor = node["$anchor"]?.string {
            anchors[scope.base.string + "#" + anchor] = position
        }
        if let anchor = node["$dynamicAnchor"]?.string {
            anchors[scope.base.string + "#" + anchor] = position
            dynamicAnchors[scope.base.string, default: [:]][anchor] = position
        }
        for member in members {
            guard let shape = Keywords.subschemaShape[member.key] else { continue }
            let pointer = position.pointer + "/" + member.key.jsonPointerEscaped
            switch (shape, member.value.value) {
            case (.schema, _):
                walk(member.value, at: SchemaPosition(document: position.document, pointer: pointer), inherited: scope)
            case (.schemaArray, .array(let elements)):
                for (index, element) in elements.enumerated() {
                    let child = SchemaPosition(document: position.document, pointer: pointer + "/" + String(index))
                    walk(element, at: child, inherited: scope)
                }
            case (.schemaMap, .object(let entries)):
                for entry in entries {
                    let child = SchemaPosition(
                        document: position.document, pointer: pointer + "/" + entry.key.jsonPointerEscaped)
                    walk(entry.value, at: child, inherited: scope)
                }
            default:
                continue  // a malformed keyword value: the compiler reports it if it is used
            }
        }
    }

    /// The position a reference denotes, resolved against `base`: a resource URI with
    /// an optional JSON Pointer fragment, or a plain-name fragment naming an anchor.
    func resolve(_ reference: String, against base: URIReference) -> SchemaPosition? {
        let absolute = URIReference(reference).resolved(against: base)
        let resource = absolute.withoutFragment.string
        let fragment = (absolute.fragment ?? "").percentDecoded
        if fragment.isEmpty || fragment.hasPrefix("/") {
            guard let root = resources[resource] else { return nil }
            let target = SchemaPosition(document: root.document, pointer: root.pointer + fragment)
            return node(at: target) == nil ? nil : target
        }
        return anchors[resource + "#" + fragment]
    }

    /// The node a position denotes, following RFC 6901.
    func node(at position: SchemaPosition) -> Node? {
        var node = documents[position.document]
        guard !position.pointer.isEmpty else { return node }
        for token in position.pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            let key = String(token).replacingAll("~1", with: "/").replacingAll("~0", with: "~")
            switch node.value {
            case .object:
                guard let child = node[key] else { return nil }
                node = child
            case .array(let elements):
                guard let index = Int(key), elements.indices.contains(index) else { return nil }
                node = elements[index]
            default:
                return nil
            }
        }
        return node
    }

    /// The scope at `position`. Positions reached through schema keywords were
    /// recorded by the walk; a reference may also point elsewhere (into an unknown
    /// keyword, say), and such a position inherits the scope of its nearest recorded
    /// ancestor, plus its own `$id`/`$schema`.
    func scope(at position: SchemaPosition, of node: Node) -> SchemaScope {
        if let scope = scopes[position] { return scope }
        var ancestor = position.pointer
        var scope = SchemaScope(base: URIReference(""), resourcePointer: "", dialect: nil)
        while let slash = ancestor.lastIndex(of: "/") {
            ancestor = String(ancestor[..<slash])
            if let found = scopes[SchemaPosition(document: position.document, pointer: ancestor)] {
                scope = found
                break
            }
        }
        scope.apply(node, at: position.pointer)
        return scope
    }
}

extension SchemaScope {
    /// A subschema with `$id` starts a new resource; `$schema` changes the dialect.
    mutating func apply(_ node: Node, at pointer: String) {
        if let id = node["$id"]?.string {
            base = URIReference(id).resolved(against: base).withoutFragment
            resourcePointer = pointer
        }
        if let dialect = node["$schema"]?.string {
            self.dialect = URIReference(dialect).withoutFragment.string
        }
    }
}

extension String {
    /// RFC 6901 escaping of one reference token.
    var jsonPointerEscaped: String {
        replacingAll("~", with: "~0").replacingAll("/", with: "~1")
    }
}
