/// A compiled JSON Schema (draft 2020-12): compile once, validate many instances.
///
/// Compilation resolves every `$ref` (against the schema itself, the registry and the
/// embedded 2020-12 meta-schemas), compiles regular expressions and checks keyword
/// values, so validation does no lookups by name and allocates nothing on the success
/// path. Validation reports every violation with the instance's path and source
/// location and a message written for the person who has to fix the manifest.
public struct JSONSchema: Sendable {
    /// What compiling does with a keyword the validator does not implement.
    public enum UnknownKeywordPolicy: Sendable, Hashable {
        /// Treat it as an annotation, as the specification asks of validators in
        /// general (and as the conformance suite expects).
        case ignore
        /// Refuse to compile, so that a schema can never silently rely on a keyword
        /// that is not enforced. Annotation keywords (`title`, `description`,
        /// `default`, `examples`, `deprecated`, `readOnly`, `writeOnly`, `$comment`,
        /// `format`, `contentMediaType`, `contentEncoding`, `contentSchema`) and `x-`
        /// extension keywords are always accepted.
        case reject
    }

    public struct Options: Sendable, Hashable {
        public var unknownKeywords: UnknownKeywordPolicy

        public init(unknownKeywords: UnknownKeywordPolicy = .reject) {
            self.unknownKeywords = unknownKeywords
        }
    }

    /// The base URI of a root schema that has no `$id` and was given none.
    public static let defaultBaseURI = "urn:orl:schema"

    let program: SchemaProgram

    /// Compiles `root`, whose retrieval URI is `baseURI` (its `$id`, if any, takes
    /// precedence for resolving relative references, as the specification says).
    public init(
        _ root: Node, baseURI: String = JSONSchema.defaultBaseURI, registry: SchemaRegistry = SchemaRegistry(),
        options: Options = Options()
    ) throws(SchemaError) {
        program = try SchemaCompiler.compile(root: root, baseURI: baseURI, registry: registry, options: options)
    }

    /// Whether `instance` is valid; the fastest check, building no messages.
    public func isValid(_ instance: Node) -> Bool {
        var evaluator = SchemaEvaluator(program: program, reporting: false)
        return evaluator.validateRoot(instance)
    }

    /// Every violation in `instance`, in document order; empty when it is valid.
    public func validate(_ instance: Node) -> [SchemaViolation] {
        // The quick pass decides; the reporting pass (slower: it builds paths and
        // messages and explores failing alternatives) only runs when there is
        // something to report.
        if isValid(instance) { return [] }
        var evaluator = SchemaEvaluator(program: program, reporting: true)
        _ = evaluator.validateRoot(instance)
        return evaluator.reportedViolations()
    }
}

/// Schema documents that `$ref` may reach, by URI: shared definitions, or the
/// conformance suite's `remotes/` served under `http://localhost:1234/`. Nothing is
/// ever fetched; a reference to a document that is not here is a compile error.
public struct SchemaRegistry: Sendable {
    var documents: [(uri: String, root: Node)] = []

    public init() {}

    /// Adds a document retrievable at `uri`. Resources it embeds (subschemas with an
    /// `$id`) become reachable under their own URIs too.
    public mutating func register(_ document: Node, uri: String) {
        documents.append((uri, document))
    }
}

/// Why a schema could not be compiled.
public struct SchemaError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    /// Where in the schema source the problem is.
    public var location: SourceLocation
    /// The JSON Pointer of the offending keyword within its schema document.
    public var schemaPointer: String

    public init(_ message: String, at location: SourceLocation, schemaPointer: String) {
        self.message = message
        self.location = location
        self.schemaPointer = schemaPointer
    }

    public var description: String { "\(location): \(message) (at \(schemaPointer.isEmpty ? "/" : schemaPointer))" }
}

/// One way in which an instance fails its schema.
public struct SchemaViolation: Sendable, Hashable, CustomStringConvertible {
    /// Where the offending value is: `spec.steps[2].agent`.
    public var path: ValuePath
    /// The offending value's location; for a missing field, the object's; for an
    /// unknown field, its key's.
    public var location: SourceLocation
    /// The schema keyword that failed: `required`, `type`, `additionalProperties`.
    public var keyword: String
    /// The failed keyword's absolute location: the URI of its schema resource and a
    /// JSON Pointer fragment, `https://orl.dev/schemas/agent.json#/properties/spec/required`.
    public var schemaLocation: String
    /// What is wrong, phrased for the person fixing the manifest.
    public var message: String

    public init(path: ValuePath, location: SourceLocation, keyword: String, schemaLocation: String, message: String) {
        self.path = path
        self.location = location
        self.keyword = keyword
        self.schemaLocation = schemaLocation
        self.message = message
    }

    /// `agent.yaml:12:7: spec.model: missing required field "model"`.
    public var description: String {
        path.isRoot ? "\(location): \(message)" : "\(location): \(path): \(message)"
    }
}
