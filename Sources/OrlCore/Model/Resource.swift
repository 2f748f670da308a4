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
        let file: String
        let documentIndex: Int
        /// Kept when the resource is (`withCanonicalForm`).
        let canonical: CanonicalJSON.Manifest?
        let origin: CodeOrigin?

        init(
            metadata: ObjectMeta, spec: Spec, document: Node, file: String, documentIndex: Int, canonical: CanonicalJSON.Manifest?,
            origin: CodeOrigin? = nil
        ) {
            self.origin = origin
            self.metadata = metadata
            self.spec = spec
            self.document = document
            self.file = file
            self.documentIndex = documentIndex
            self.canonical = canonical
        }
    }

    private let storage: Storage

    public var metadata: ObjectMeta { storage.metadata }
    public var spec: Spec { storage.spec }
    /// The document as written: apply hashes and diffs it, so what is stored is exactly
    /// what the user wrote, not the model's reading of it.
    public var document: Node { storage.document }
    public var file: String { storage.file }
    /// Position of the document in its file (0-based).
    public var documentIndex: Int { storage.documentIndex }
    /// Where an applied Agent's or Tool's code comes from (set when read from the store).
    public var origin: CodeOrigin? { storage.origin }

    public init(metadata: ObjectMeta, spec: Spec, document: Node, file: String, documentIndex: Int) {
        storage = Storage(metadata: metadata, spec: spec, document: document, file: file, documentIndex: documentIndex, canonical: nil)
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
                metadata: metadata, spec: spec, document: document, file: file, documentIndex: documentIndex,
                canonical: CanonicalJSON.manifest(document), origin: origin))
    }

    /// What the checks across resources read of a document beyond its decoded form:
    /// where it starts, where `metadata.name` is and where a selector is written
    /// (`spec.appliesTo.selector`), each at its place, and nothing else: `spec` only on
    /// the way to a selector (a member less on most resources).
    static func skeleton(of root: Node) -> Node {
        func only(_ node: Node?, _ key: String, _ inner: (Node) -> Node) -> [Node.Member] {
            guard let member = node?.member(key) else { return [] }
            return [Node.Member(key: key, keyLocation: member.keyLocation, value: inner(member.value))]
        }
        func leaf(_ node: Node) -> Node { Node(.null, at: node.location) }
        func object(_ node: Node, _ members: [Node.Member]) -> Node { Node(.object(members), at: node.location) }
        let metadata = only(root, "metadata") { object($0, only($0, "name") { $0 }) }
        guard root["spec"]?["appliesTo"]?["selector"] != nil else { return object(root, metadata) }
        let spec = only(root, "spec") { spec in
            object(spec, only(spec, "appliesTo") { appliesTo in object(appliesTo, only(appliesTo, "selector", leaf)) })
        }
        return object(root, metadata + spec)
    }

    /// The same resource, its code coming from `origin`.
    public func with(origin: CodeOrigin?) -> Resource {
        Resource(
            Storage(
                metadata: metadata, spec: spec, document: document, file: file, documentIndex: documentIndex,
                canonical: storage.canonical, origin: origin))
    }

    public var kind: ResourceKind { spec.kind }
    public var id: ResourceID { ResourceID(kind: kind.rawValue, namespace: metadata.namespace, name: metadata.name) }
    /// Where the resource starts: the document's first line.
    public var location: SourceLocation { document.location }
    /// Where `metadata.name` is written, the best place to point at the resource as a whole.
    public var nameLocation: SourceLocation { document["metadata"]?["name"]?.location ?? document.location }

    public var agent: AgentSpec? { if case .agent(let s) = spec { s } else { nil } }
    public var tool: ToolSpec? { if case .tool(let s) = spec { s } else { nil } }
    public var modelProvider: ModelProviderSpec? { if case .modelProvider(let s) = spec { s } else { nil } }
    public var policy: PolicySpec? { if case .policy(let s) = spec { s } else { nil } }
    public var budget: BudgetSpec? { if case .budget(let s) = spec { s } else { nil } }
    public var workflow: WorkflowSpec? { if case .workflow(let s) = spec { s } else { nil } }
    public var alert: AlertSpec? { if case .alert(let s) = spec { s } else { nil } }
}
