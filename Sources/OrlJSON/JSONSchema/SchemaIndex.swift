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

/// Every identifier the known documents define: references may point forwards,
/// backwards, into other documents, or at an embedded resource by an `$id` that differs
/// from the document's own URI.
///
/// Documents are indexed as references reach them, not all up front: a manifest kind's
/// schema reaches two of the nine bundled documents and none of the meta-schemas'
/// vocabularies, and indexing every subschema of every document was most of compiling
/// it. What is indexed is what indexing them all in order gives: a document is indexed
/// out of order only when every document before it that is not indexed yet is "plain"
/// (no subschema with an `$id` but its root, naming its own URI: it defines its own
/// resource and nothing else) under another URI than its own, so neither can change what
/// the other defines; otherwise those before it are indexed first, in order.
struct SchemaIndex {
    private(set) var documents: [Node] = []
    /// Absolute URI (no fragment) → the resource's root.
    private var resources: [String: SchemaPosition] = [:]
    /// `uri#name` → the subschema with that `$anchor` or `$dynamicAnchor`.
    private var anchors: [String: SchemaPosition] = [:]
    /// Resource URI → `$dynamicAnchor` name → subschema.
    private var dynamicAnchors: [String: [String: SchemaPosition]] = [:]
    /// The scope of every subschema reachable through schema keywords.
    private var scopes: [SchemaPosition: SchemaScope] = [:]
    /// Each document's place in the order, and whether it is indexed yet.
    private var entries: [Entry] = []

    private struct Entry {
        /// Where it is retrieved from (no fragment): the resource its root starts.
        var retrieval: URIReference
        /// Added only if no document before it defines this URI (compared as given): an
        /// embedded meta-schema a registered document may stand in for.
        var unlessDefined: String?
        /// nil until asked: whether the document defines its own resource only.
        var plain: Bool?
        var state: State
        enum State { case pending, indexed, skipped }
    }

    /// `root`, retrievable at `uri`, after the documents added before it.
    mutating func add(_ root: Node, uri: String) {
        documents.append(root)
        entries.append(Entry(retrieval: URIReference(uri).withoutFragment, unlessDefined: nil, plain: nil, state: .pending))
    }

    /// `root` at `uri`, unless a document added before it defines `uri`.
    mutating func add(_ root: Node, unlessDefined uri: String) {
        documents.append(root)
        entries.append(Entry(retrieval: URIReference(uri).withoutFragment, unlessDefined: uri, plain: nil, state: .pending))
    }

    /// Indexes document `index` as indexing every document in order would have.
    private mutating func index(_ index: Int) {
        guard entries[index].state == .pending else { return }
        let before = (0..<index).filter { entries[$0].state == .pending }
        var clash = false
        if !before.isEmpty {
            let plain = isPlain(index)
            let own = entries[index].retrieval.string
            for other in before {
                // Either may define what the other does, or decide whether the other is
                // added at all.
                let theirs = entries[other].retrieval.string
                if !plain || !isPlain(other) || theirs == own || entries[other].unlessDefined == own
                    || entries[index].unlessDefined == theirs
                {
                    clash = true
                    break
                }
            }
        }
        if clash {
            for other in before { self.index(other) }
        }
        if let uri = entries[index].unlessDefined, resources[uri] != nil {
            entries[index].state = .skipped
            return
        }
        entries[index].state = .indexed
        let retrieval = entries[index].retrieval
        let position = SchemaPosition(document: index, pointer: "")
        if resources[retrieval.string] == nil { resources[retrieval.string] = position }
        walk(documents[index], at: position, inherited: SchemaScope(base: retrieval, resourcePointer: "", dialect: nil))
    }

    /// Whether document `index` defines its own resource and nothing else: no subschema
    /// of it (what the walk visits) has an `$id` but its root, naming its own URI.
    private mutating func isPlain(_ index: Int) -> Bool {
        if let plain = entries[index].plain { return plain }
        let root = documents[index]
        let own = entries[index].retrieval
        var plain = true
        if let id = root["$id"]?.string {
            plain = URIReference(id).resolved(against: own).withoutFragment.string == own.string
        }
        if plain { plain = !Self.subschemasHoldID(root) }
        entries[index].plain = plain
        return plain
    }

    /// Whether a subschema below `node`, reached as the walk reaches them, has an `$id`.
    private static func subschemasHoldID(_ node: Node) -> Bool {
        guard case .object(let members) = node.value else { return false }
        func holds(_ subschema: Node) -> Bool { subschema["$id"]?.string != nil || subschemasHoldID(subschema) }
        for member in members {
            guard let shape = Keywords.subschemaShape[member.key] else { continue }
            switch (shape, member.value.value) {
            case (.schema, _): if holds(member.value) { return true }
            case (.schemaArray, .array(let elements)): if elements.contains(where: holds) { return true }
            case (.schemaMap, .object(let entries)): if entries.contains(where: { holds($0.value) }) { return true }
            default: continue
            }
        }
        return false
    }

    /// The documents not indexed yet that may define something under `uri`: any that is
    /// not plain, and a plain one retrieved from `uri`.
    private mutating func mayDefine(_ uri: String) -> [Int] {
        var found: [Int] = []
        for index in entries.indices where entries[index].state == .pending {
            if !isPlain(index) || entries[index].retrieval.string == uri { found.append(index) }
        }
        return found
    }

    /// How many documents are indexed so far.
    var indexedCount: Int { entries.count { $0.state == .indexed } }

    private mutating func indexAll() {
        for index in entries.indices { self.index(index) }
    }

    /// The root of the resource `uri`, from the first document that defines it.
    private mutating func resourceRoot(_ uri: String) -> SchemaPosition? {
        while resources[uri] == nil, let next = mayDefine(uri).first { index(next) }
        return resources[uri]
    }

    /// The `$dynamicAnchor`s of the resource `uri`, from every document.
    mutating func dynamicAnchors(of uri: String) -> [String: SchemaPosition] {
        for next in mayDefine(uri) { index(next) }
        return dynamicAnchors[uri] ?? [:]
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
    mutating func resolve(_ reference: String, against base: URIReference) -> SchemaPosition? {
        let absolute = URIReference(reference).resolved(against: base)
        let resource = absolute.withoutFragment.string
        let fragment = (absolute.fragment ?? "").percentDecoded
        if fragment.isEmpty || fragment.hasPrefix("/") {
            guard let root = resourceRoot(resource) else { return nil }
            let target = SchemaPosition(document: root.document, pointer: root.pointer + fragment)
            return node(at: target) == nil ? nil : target
        }
        // A later document's anchor of the same name replaces an earlier one's.
        indexAll()
        return anchors[resource + "#" + fragment]
    }

    /// The node a position denotes, following RFC 6901.
    func node(at position: SchemaPosition) -> Node? {
        var node = documents[position.document]
        guard !position.pointer.isEmpty else { return node }
        for token in position.pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            var key = String(token)
            if token.utf8.contains(UInt8(ascii: "~")) { key = key.replacingAll("~1", with: "/").replacingAll("~0", with: "~") }
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
    mutating func scope(at position: SchemaPosition, of node: Node) -> SchemaScope {
        index(position.document)
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
        // Nearly every key holds neither character, and `contains` on a String searches by
        // Character: the index of a schema's documents escaped every key it walked that way.
        guard utf8.contains(where: { $0 == UInt8(ascii: "~") || $0 == UInt8(ascii: "/") }) else { return self }
        return replacingAll("~", with: "~0").replacingAll("/", with: "~1")
    }
}
