public import OrlJSON

/// One decoded manifest document: a resource of the desired state.
public struct Resource: Sendable {
    /// Indirect: the kinds differ a lot in size, and inline every resource's storage
    /// took the largest (784 bytes at 10,000 manifests: 8 MB of `validate`'s peak).
    public indirect enum Spec: Sendable {
        case modelProvider(ModelProviderSpec)
        case tool(ToolSpec)
        case agent(AgentSpec)
        case policy(PolicySpec)
        case budget(BudgetSpec)
        case workflow(WorkflowSpec)
        case alert(AlertSpec)

        public var kind: ResourceKind {
            switch self {
            case .modelProvider: .modelProvider
            case .tool: .tool
            case .agent: .agent
            case .policy: .policy
            case .budget: .budget
            case .workflow: .workflow
            case .alert: .alert
            }
        }
    }

    /// A resource is read once and then only passed around (into fleets, plans, the
    /// store), so its fields live in one immutable box: a copy is a single retain,
    /// not one per field, and value semantics hold because nothing mutates it.
    private final class Storage: Sendable {
        let metadata: ObjectMeta
        let spec: Spec
        let document: Node
        /// Set instead of a whole `document` (see `Places`).
        let places: Places?
        /// The whole document as the state's kept chunks write it (`ByteWriter.node`), set
        /// with `places` instead of the tree (`withKeptForms`).
        let encoded: [UInt8]?
        let file: String
        let documentIndex: Int
        /// What apply adds, boxed: `validate` has neither, and inline they took 90 bytes
        /// of every resource.
        let applied: Applied?

        init(
            metadata: ObjectMeta, spec: Spec, document: Node, places: Places? = nil, encoded: [UInt8]? = nil, file: String,
            documentIndex: Int, canonical: CanonicalJSON.Manifest?, origin: CodeOrigin? = nil
        ) {
            self.metadata = metadata
            self.spec = spec
            self.document = document
            self.places = places
            self.encoded = encoded
            self.file = file
            self.documentIndex = documentIndex
            self.applied = canonical == nil && origin == nil ? nil : Applied(canonical: canonical, origin: origin)
        }

        var canonical: CanonicalJSON.Manifest? { applied?.canonical }
        var origin: CodeOrigin? { applied?.origin }
    }

    private final class Applied: Sendable {
        /// Kept when the resource is (`withCanonicalForm`).
        let canonical: CanonicalJSON.Manifest?
        let origin: CodeOrigin?

        init(canonical: CanonicalJSON.Manifest?, origin: CodeOrigin?) {
            self.canonical = canonical
            self.origin = origin
        }
    }

    /// What the checks across resources read of a document beyond its decoded form,
    /// kept when the tree is not (`validate`, `withKeptForms`): where `metadata.name` and
    /// `spec.appliesTo.selector` are written. Held inline, where a skeleton of the
    /// document took two or three arrays of members per resource (3 MB of `validate`'s
    /// heap at 10,000 manifests).
    struct Places: Sendable {
        var name: SourceLocation?
        var selector: SourceLocation?

        init(of root: Node) {
            name = root["metadata"]?["name"]?.location
            selector = root["spec"]?["appliesTo"]?["selector"]?.location
        }
    }

    private let storage: Storage

    public var metadata: ObjectMeta { storage.metadata }
    public var spec: Spec { storage.spec }
    /// The document as written: apply hashes and diffs it, so what is stored is exactly
    /// what the user wrote, not the model's reading of it. Read without documents
    /// (`ManifestReader.keepsDocuments`), a null where the document starts. Kept as bytes
    /// (`withKeptForms`), decoded again at each call: the plan's field diff of an update
    /// and the MCP lock's pins read it, seldom.
    public var document: Node {
        guard let encoded = storage.encoded else { return storage.document }
        let file = file
        return encoded.withUnsafeBufferPointer { buffer in
            var reader = ByteReader(buffer)
            do throws(ByteReader.Malformed) {
                return try reader.node(at: .file(file), depth: 0)
            } catch {
                preconditionFailure("a resource's own encoding of \(file) #\(documentIndex) does not decode")
            }
        }
    }
    /// The document's bytes as `ResourceSnapshot.encode` writes them, when kept so.
    var encodedDocument: [UInt8]? { storage.encoded }
    public var file: String { storage.file }
    /// Position of the document in its file (0-based).
    public var documentIndex: Int { storage.documentIndex }
    /// Where an applied Agent's or Tool's code comes from (set when read from the store).
    public var origin: CodeOrigin? { storage.origin }

    public init(metadata: ObjectMeta, spec: Spec, document: Node, file: String, documentIndex: Int) {
        storage = Storage(metadata: metadata, spec: spec, document: document, file: file, documentIndex: documentIndex, canonical: nil)
    }

    /// A resource that keeps, of its document, only where it starts and its `Places`:
    /// `document` is then a null at the document's start.
    init(metadata: ObjectMeta, spec: Spec, placesOf root: Node, file: String, documentIndex: Int) {
        storage = Storage(
            metadata: metadata, spec: spec, document: Node(.null, at: root.location), places: Places(of: root), file: file,
            documentIndex: documentIndex, canonical: nil)
    }

    private init(_ storage: Storage) { self.storage = storage }

    /// The document's canonical form, what apply stores and compares.
    public var canonical: CanonicalJSON.Manifest { storage.canonical ?? CanonicalJSON.manifest(document) }

    /// The same resource with its canonical form computed now and kept, for readers
    /// that keep resources from one apply to the next (a git source's parse cache), so
    /// that each plan does not encode every unchanged resource again. One-shot commands
    /// skip it: `validate` never needs the form.
    public func withCanonicalForm() -> Resource {
        guard storage.canonical == nil else { return self }
        return Resource(
            Storage(
                metadata: metadata, spec: spec, document: storage.document, places: storage.places, encoded: storage.encoded,
                file: file, documentIndex: documentIndex, canonical: CanonicalJSON.manifest(document), origin: origin))
    }

    /// The same resource with its canonical form kept (`withCanonicalForm`) and its
    /// document kept as the bytes the state's kept chunks hold, the tree freed: an apply
    /// reads the tree again only to diff an update or pin an MCP server, and the tree took
    /// about a third of a first apply's heap (37 MB at 10,000 manifests), the bytes a
    /// fraction. A document whose positions name another file keeps its tree, as
    /// `ResourceSnapshot.encode` leaves it out; so does one read without its tree.
    public func withKeptForms() -> Resource {
        guard storage.places == nil, storage.encoded == nil else { return withCanonicalForm() }
        let root = storage.document
        guard ResourceSnapshot.sameFile(root, file) else { return withCanonicalForm() }
        var writer = ByteWriter()
        writer.bytes.reserveCapacity(1_024)
        writer.node(root)
        // Exactly as long as it is: the writer's growth would leave up to half unused.
        let count = writer.bytes.count
        let encoded = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            _ = buffer.initialize(from: writer.bytes)
            initialized = count
        }
        return Resource(
            Storage(
                metadata: metadata, spec: spec, document: Node(.null, at: root.location), places: Places(of: root),
                encoded: encoded, file: file, documentIndex: documentIndex,
                canonical: storage.canonical ?? CanonicalJSON.manifest(root), origin: origin))
    }

    /// The same resource, its code coming from `origin`.
    public func with(origin: CodeOrigin?) -> Resource {
        Resource(
            Storage(
                metadata: metadata, spec: spec, document: storage.document, places: storage.places, encoded: storage.encoded,
                file: file, documentIndex: documentIndex, canonical: storage.canonical, origin: origin))
    }

    public var kind: ResourceKind { spec.kind }
    public var id: ResourceID { ResourceID(kind: kind.rawValue, namespace: metadata.namespace, name: metadata.name) }
    /// Where the resource starts: the document's first line.
    public var location: SourceLocation { storage.document.location }
    /// Where `metadata.name` is written, the best place to point at the resource as a whole.
    public var nameLocation: SourceLocation {
        (storage.places.map { $0.name } ?? document["metadata"]?["name"]?.location) ?? document.location
    }
    /// Where `spec.appliesTo.selector` is written, if it is.
    public var selectorLocation: SourceLocation? {
        if let places = storage.places { return places.selector }
        return document["spec"]?["appliesTo"]?["selector"]?.location
    }

    public var agent: AgentSpec? { if case .agent(let s) = spec { s } else { nil } }
    public var tool: ToolSpec? { if case .tool(let s) = spec { s } else { nil } }
    public var modelProvider: ModelProviderSpec? { if case .modelProvider(let s) = spec { s } else { nil } }
    public var policy: PolicySpec? { if case .policy(let s) = spec { s } else { nil } }
    public var budget: BudgetSpec? { if case .budget(let s) = spec { s } else { nil } }
    public var workflow: WorkflowSpec? { if case .workflow(let s) = spec { s } else { nil } }
    public var alert: AlertSpec? { if case .alert(let s) = spec { s } else { nil } }
}
