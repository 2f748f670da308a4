import CYAML
import OrlCore
import OrlJSON

/// Builds located documents from the libyaml event stream of one file.
///
/// libyaml's document API hands over finished mappings, in which a duplicate key has
/// already lost its position and an alias has already been copied out. Reading events
/// instead keeps every key's own location and lets duplicates, anchors, merge keys and
/// the limits be handled while the nodes are built, in one pass.
///
/// A document with an error is dropped, but the builder keeps reading it to report
/// every problem in it; duplicate keys are the exception (the first value is kept, so
/// later checks still run on the document). A limit stops the reading of the file.
struct DocumentBuilder {
    private(set) var documents: [SourceDocument] = []
    private(set) var diagnostics: [Diagnostic] = []

    private let file: String
    /// The file's first position; every node's location is made from it.
    private let origin: SourceLocation
    private let limits: YAMLParser.Limits

    /// Set when a limit is hit: the caller must stop feeding events. Going on is what
    /// the limits prevent: libyaml's own scanner slows down quadratically with flow
    /// nesting, and a file holding an alias bomb is not worth reading further.
    private(set) var isStopped = false

    private enum State {
        /// No error so far: the document is kept when it ends.
        case reading
        /// An error was reported: the document is still read for more diagnostics, then dropped.
        case invalid
    }

    private var state = State.reading
    private var documentIndex = -1
    /// The collections being built, outermost first; its length is the nesting depth.
    private var stack: [Frame] = []
    /// The children of all open collections, each frame owning the tail from its
    /// `start`. Collecting them here and copying each collection out once, at its
    /// exact size, saves the repeated growth of one array per collection.
    private var elements: [Node] = []
    private var members: [Node.Member] = []
    private var root: Node?
    /// Whether the document holds nothing (a trailing `---`, only comments).
    private var rootIsEmpty = false
    /// Anchors are scoped to their document.
    private var anchors: [String: Anchor] = [:]
    /// Nodes that aliases have added to the file so far, counting each alias as a full
    /// copy of its anchor: what anyone walking the documents would visit.
    private var aliasExpansion = 0
    /// Bytes of text (keys and scalars) the file has expanded to so far, aliases
    /// counted in full.
    private var expandedBytes = 0

    init(file: String, limits: YAMLParser.Limits) {
        self.file = file
        self.origin = .file(file)
        self.limits = limits
    }

    mutating func handle(_ event: borrowing yaml_event_t) {
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            beginDocument()
        case YAML_DOCUMENT_END_EVENT:
            endDocument()
        case YAML_SCALAR_EVENT:
            scalar(event)
        case YAML_ALIAS_EVENT:
            alias(event)
        case YAML_SEQUENCE_START_EVENT:
            let data = event.data.sequence_start
            beginCollection(isMapping: false, anchor: data.anchor, tag: data.tag, at: location(event.start_mark))
        case YAML_MAPPING_START_EVENT:
            let data = event.data.mapping_start
            beginCollection(isMapping: true, anchor: data.anchor, tag: data.tag, at: location(event.start_mark))
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            endCollection()
        default:
            // Stream start and end carry nothing for us.
            return
        }
    }

    // MARK: - Documents

    private mutating func beginDocument() {
        documentIndex += 1
        state = .reading
        root = nil
        rootIsEmpty = false
        clearCollections()
        anchors.removeAll(keepingCapacity: true)
    }

    private mutating func endDocument() {
        guard state == .reading, let root, !rootIsEmpty else { return }
        documents.append(SourceDocument(file: file, index: documentIndex, root: root))
    }

    // MARK: - Nodes

    private mutating func scalar(_ event: borrowing yaml_event_t) {
        let data = event.data.scalar
        let text = UnsafeBufferPointer(start: data.value, count: data.length)
        let at = location(event.start_mark)
        let tag = data.tag.map { String(cString: $0) }
        let isPlain = data.style == YAML_PLAIN_SCALAR_STYLE
        let anchor = data.anchor.map { String(cString: $0) }
        guard expand(by: data.length, at: at) else { return }

        if isAwaitingKey {
            // Keys are read as their text: `1:` and `true:` are the keys "1" and "true". The
            // value is only needed to check a tag, or for an anchor that an alias may reuse.
            if tag != nil || anchor != nil {
                guard let value = resolve(text, tag: tag, isPlain: isPlain, at: at) else {
                    skipNode(at: at)
                    return
                }
                if let anchor {
                    anchors[anchor] = Anchor(node: Node(value, at: at), size: 1, bytes: data.length, scalarText: CoreSchema.string(text))
                }
            }
            let key = CoreSchema.string(text)
            stack[stack.count - 1].bytes += data.length
            acceptKey(key, at: at, isMerge: isPlain && tag == nil && key == "<<")
            return
        }

        if stack.isEmpty, isPlain, text.isEmpty, tag == nil, anchor == nil {
            rootIsEmpty = true
        }
        guard let value = resolve(text, tag: tag, isPlain: isPlain, at: at) else {
            skipNode(at: at)
            return
        }
        let node = Node(value, at: at)
        if let anchor {
            anchors[anchor] = Anchor(node: node, size: 1, bytes: data.length, scalarText: CoreSchema.string(text))
        }
        attach(node, size: 1, bytes: data.length)
    }

    /// The scalar's value, or nil after reporting why its tag does not apply.
    private mutating func resolve(
        _ text: UnsafeBufferPointer<UInt8>, tag: String?, isPlain: Bool, at location: SourceLocation
    ) -> Node.Value? {
        guard let tag else {
            return isPlain ? CoreSchema.resolvePlain(text) : .string(CoreSchema.string(text))
        }
        switch CoreSchema.resolveTagged(text, tag: tag) {
        case .value(let value):
            return value
        case .mismatch(let message):
            fail(.yamlSyntax, message + "; remove the tag or correct the value", at: location)
        case .unsupported:
            fail(.yamlUnsupported, Self.unsupportedTagMessage(tag), at: location)
        }
        return nil
    }

    private mutating func alias(_ event: borrowing yaml_event_t) {
        let name = String(cString: event.data.alias.anchor)
        let at = location(event.start_mark)
        guard let anchor = anchors[name] else {
            fail(
                .yamlSyntax,
                "alias *\(name) refers to no anchor; define &\(name) on a value earlier in the same document",
                at: at
            )
            skipNode(at: at)
            return
        }
        aliasExpansion += anchor.size
        guard aliasExpansion <= limits.maxAliasExpansion else {
            stop(
                "alias *\(name) expands the file beyond \(limits.maxAliasExpansion) nodes, the limit for aliases "
                    + "(each alias counts as a full copy of its anchor), so this document and the rest of the file "
                    + "are not read; this looks like an alias bomb: use fewer or smaller aliases",
                at: at
            )
            return
        }
        guard expand(by: anchor.bytes, at: at, alias: name) else { return }
        if isAwaitingKey {
            guard let key = anchor.scalarText else {
                rejectNonScalarKey(anchor.node, at: at)
                return
            }
            stack[stack.count - 1].bytes += anchor.bytes
            acceptKey(key, at: at, isMerge: false)
            return
        }
        // The alias stands where it is used; the values inside keep the locations of
        // the anchored definition, which is where they are written.
        var node = anchor.node
        node.location = at
        attach(node, size: anchor.size, bytes: anchor.bytes, isAlias: true)
    }

    /// Counts `bytes` more of expanded text; false (and the file stops) past the limit.
    private mutating func expand(by bytes: Int, at location: SourceLocation, alias: String? = nil) -> Bool {
        expandedBytes += bytes
        guard expandedBytes > limits.maxExpandedBytes else { return true }
        let what = alias.map { "alias *\($0) expands" } ?? "this value brings"
        stop(
            "\(what) the file beyond \(limits.maxExpandedBytes) bytes of text, the limit for manifests (each alias counts "
                + "as a full copy of its anchor), so this document and the rest of the file are not read; "
                + (alias == nil ? "split the file" : "this looks like an alias bomb: use fewer or smaller aliases"),
            at: location
        )
        return false
    }

    private mutating func beginCollection(
        isMapping: Bool, anchor: UnsafeMutablePointer<yaml_char_t>?, tag: UnsafeMutablePointer<yaml_char_t>?,
        at location: SourceLocation
    ) {
        guard stack.count < limits.maxDepth else {
            stop(
                "nesting deeper than \(limits.maxDepth) levels, the limit for manifests, so this document and "
                    + "the rest of the file are not read; flatten the structure (nesting this deep is usually "
                    + "generated by mistake)",
                at: location
            )
            return
        }
        if let tag {
            let tag = String(cString: tag)
            let expected = CoreSchema.standardTagPrefix + (isMapping ? "map" : "seq")
            if tag != expected, tag != "!" {
                if CoreSchema.isStandardTag(tag) {
                    fail(
                        .yamlSyntax,
                        "tag \(CoreSchema.displayTag(tag)) cannot be used on a \(isMapping ? "mapping" : "sequence"); "
                            + "remove the tag",
                        at: location
                    )
                } else {
                    fail(.yamlUnsupported, Self.unsupportedTagMessage(tag), at: location)
                }
            }
        }
        stack.append(
            Frame(
                isMapping: isMapping, location: location, anchor: anchor.map { String(cString: $0) },
                start: isMapping ? members.count : elements.count
            )
        )
    }

    private mutating func endCollection() {
        let frame = stack.removeLast()
        let value: Node.Value
        if frame.isMapping {
            value = .object(frame.resolve(members.removeTail(from: frame.start)))
        } else {
            value = .array(elements.removeTail(from: frame.start))
        }
        let node = Node(value, at: frame.location)
        if let anchor = frame.anchor {
            anchors[anchor] = Anchor(node: node, size: frame.size, bytes: frame.bytes, scalarText: nil)
        }
        attach(node, size: frame.size, bytes: frame.bytes)
    }

    // MARK: - Attaching nodes to their parent

    /// Whether the next node is the key of a mapping entry.
    private var isAwaitingKey: Bool {
        guard let top = stack.indices.last else { return false }
        return stack[top].isMapping && stack[top].pendingKey == nil
    }

    private mutating func acceptKey(_ key: String, at location: SourceLocation, isMerge: Bool) {
        let top = stack.count - 1
        // Written without closures: capturing `self` here would copy the whole builder per key.
        var firstLocation: SourceLocation?
        if isMerge {
            firstLocation = stack[top].merge?.keyLocation
        } else if let index = indexOfMember(key, inFrame: top) {
            firstLocation = members[index].keyLocation
        }
        if let firstLocation {
            report(
                .error(
                    .yamlDuplicateKey, "duplicate key \(Diagnostic.quoted(key)); only the first one is used, remove this one",
                    at: location, notes: [Diagnostic.Note("\(Diagnostic.quoted(key)) is first defined here", at: firstLocation)]
                )
            )
            stack[top].pendingKey = PendingKey(role: .discard, location: location)
        } else if isMerge {
            stack[top].merge = Merge(keyLocation: location, position: members.count - stack[top].start)
            stack[top].pendingKey = PendingKey(role: .merge, location: location)
        } else {
            stack[top].pendingKey = PendingKey(role: .member(key), location: location)
        }
    }

    /// Adds a finished node (with its expanded size) to the enclosing collection.
    private mutating func attach(_ node: Node, size: Int, bytes: Int, isAlias: Bool = false) {
        guard !stack.isEmpty else {
            root = node
            return
        }
        let top = stack.count - 1
        stack[top].size += size
        stack[top].bytes += bytes
        guard stack[top].isMapping else {
            elements.append(node)
            return
        }
        guard let pending = stack[top].pendingKey.take() else {
            rejectNonScalarKey(node, at: node.location)
            return
        }
        switch pending.role {
        case .member(let key):
            appendMember(Node.Member(key: key, keyLocation: pending.location, value: node), to: top)
        case .merge:
            mergeSources(of: node, isAlias: isAlias).map { stack[top].merge?.sources = $0 }
        case .discard:
            break
        }
    }

    /// Leaves out a node that could not be built (its document is dropped anyway) so
    /// that reading goes on to report further problems, without follow-on errors.
    private mutating func skipNode(at location: SourceLocation) {
        guard let top = stack.indices.last, stack[top].isMapping else { return }
        if stack[top].pendingKey == nil {
            // A bad key: its value goes too.
            stack[top].pendingKey = PendingKey(role: .discard, location: location)
        } else {
            // A bad value: the entry is complete, the next node is a key again.
            stack[top].pendingKey = nil
        }
    }

    private mutating func rejectNonScalarKey(_ node: Node, at location: SourceLocation) {
        fail(
            .yamlUnsupported,
            "a \(node.elements != nil ? "sequence" : "mapping") cannot be a mapping key; "
                + "keys in manifests are strings",
            at: location
        )
        stack[stack.count - 1].pendingKey = PendingKey(role: .discard, location: location)
    }

    /// The mappings a merge key `<<` brings in, earliest first: `<<: *a` or `<<: [*a, *b]`.
    /// As in go-yaml, an alias must name a mapping; only a list written in place is a list.
    private mutating func mergeSources(of node: Node, isAlias: Bool) -> [[Node.Member]]? {
        switch node.value {
        case .object(let members):
            return [members]
        case .array(let elements) where !isAlias:
            var sources: [[Node.Member]] = []
            for element in elements {
                guard let members = element.members else {
                    reportInvalidMerge(at: element.location)
                    return nil
                }
                sources.append(members)
            }
            return sources
        default:
            reportInvalidMerge(at: node.location)
            return nil
        }
    }

    private mutating func reportInvalidMerge(at location: SourceLocation) {
        fail(
            .yamlSyntax,
            "the value of the merge key \"<<\" must be a mapping or a list of mappings, "
                + "such as <<: *defaults or <<: [*a, *b]",
            at: location
        )
    }

    // MARK: - Errors

    private mutating func fail(_ code: DiagnosticCode, _ message: String, at location: SourceLocation) {
        report(.error(code, message, at: location))
        if state == .reading { state = .invalid }
    }

    /// Records a problem, stopping at the file's quota: a generated file can repeat one
    /// mistake a hundred thousand times, and the diagnostics would then outweigh the file.
    private mutating func report(_ diagnostic: Diagnostic) {
        diagnostics.append(diagnostic)
        if diagnostics.count == limits.maxDiagnostics {
            stop(
                "\(limits.maxDiagnostics) problems found, so the rest of the file is not read; "
                    + "fix these first (a generator may be repeating one mistake)",
                at: diagnostic.location ?? .file(file)
            )
        }
    }

    private mutating func stop(_ message: String, at location: SourceLocation) {
        diagnostics.append(.error(.yamlLimit, message, at: location))
        isStopped = true
    }

    private mutating func clearCollections() {
        stack.removeAll(keepingCapacity: true)
        elements.removeAll(keepingCapacity: true)
        members.removeAll(keepingCapacity: true)
    }

    // MARK: - Mapping keys

    /// Mappings with at least this many members look keys up in a dictionary rather
    /// than by scanning, so huge mappings do not cost quadratic time.
    private static let keyIndexThreshold = 16

    /// The position in `members` of the member named `key` of the frame at `top`.
    private func indexOfMember(_ key: String, inFrame top: Int) -> Int? {
        if stack[top].keyIndex != nil { return stack[top].keyIndex?[key] }
        var index = stack[top].start
        while index < members.count {
            if members[index].key == key { return index }
            index += 1
        }
        return nil
    }

    private mutating func appendMember(_ member: Node.Member, to top: Int) {
        if stack[top].keyIndex != nil {
            stack[top].keyIndex?[member.key] = members.count
        }
        members.append(member)
        if stack[top].keyIndex == nil, members.count - stack[top].start == Self.keyIndexThreshold {
            let start = stack[top].start
            stack[top].keyIndex = Dictionary(uniqueKeysWithValues: (start..<members.count).map { (members[$0].key, $0) })
        }
    }

    private static func unsupportedTagMessage(_ tag: String) -> String {
        "tag \(CoreSchema.displayTag(tag)) is not supported; manifests may use only the standard tags "
            + "!!str, !!int, !!float, !!bool, !!null, !!map and !!seq: remove the tag"
    }

    private func location(_ mark: yaml_mark_t) -> SourceLocation {
        // libyaml counts lines and columns (in characters) from 0.
        origin.at(line: Int(mark.line) + 1, column: Int(mark.column) + 1)
    }
}

// MARK: - Building blocks

/// A collection under construction.
private struct Frame {
    let isMapping: Bool
    let location: SourceLocation
    let anchor: String?
    /// Where the collection's children begin in the builder's `elements` or `members`.
    let start: Int
    /// The node's expanded size: itself plus its children, aliases counted in full.
    var size = 1
    /// The bytes of text (keys and scalars) in it, aliases counted in full.
    var bytes = 0
    /// The key read last, waiting for its value; nil when a key comes next.
    var pendingKey: PendingKey?
    /// Positions of the members in the builder's `members`, once the mapping is large.
    var keyIndex: [String: Int]?
    var merge: Merge?

    init(isMapping: Bool, location: SourceLocation, anchor: String?, start: Int) {
        self.isMapping = isMapping
        self.location = location
        self.anchor = anchor
        self.start = start
    }

    /// The explicit members with merged ones inserted where `<<` stood. Explicit keys
    /// win over merged ones, and an earlier merged mapping wins over a later one, as
    /// in go-yaml and therefore kubectl.
    func resolve(_ members: [Node.Member]) -> [Node.Member] {
        guard let merge, !merge.sources.isEmpty else { return members }
        var taken = Set(members.lazy.map(\.key))
        var inherited: [Node.Member] = []
        for source in merge.sources {
            for member in source where taken.insert(member.key).inserted {
                inherited.append(member)
            }
        }
        var result = members
        result.insert(contentsOf: inherited, at: merge.position)
        return result
    }
}

private struct PendingKey {
    enum Role {
        case member(String)
        case merge
        /// The key is a duplicate or invalid: its value is read and thrown away.
        case discard
    }

    var role: Role
    var location: SourceLocation
}

private struct Merge {
    var keyLocation: SourceLocation
    /// Where among the explicit members the merged ones go.
    var position: Int
    var sources: [[Node.Member]] = []
}

extension Array {
    /// Removes the elements from `start` on and returns them in order. They are moved,
    /// not copied: copying a slice would retain and then release every reference in
    /// every node, which costs more than building the node.
    fileprivate mutating func removeTail(from start: Int) -> [Element] {
        let count = self.count - start
        return [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
            for offset in stride(from: count - 1, through: 0, by: -1) {
                (buffer.baseAddress! + offset).initialize(to: removeLast())
            }
            initialized = count
        }
    }
}

private struct Anchor {
    var node: Node
    var size: Int
    var bytes: Int
    /// The text of a scalar anchor, so that an alias can serve as a mapping key.
    var scalarText: String?
}
