public import OrlJSON
import Synchronization

/// The compiled schema of every kind, from the schemas built into the binary.
public struct ManifestSchemas: Sendable {
    /// Schemas refer to each other by relative file name (`common.schema.json#/$defs/name`),
    /// which editors resolve against the files' own location; orl resolves them against
    /// this base.
    public static let baseURI = "https://schemas.orl.dev/v1/"

    /// Each kind's schema, compiled when first asked for: an apply that parses one
    /// Budget compiles the Budget schema, not all seven.
    private final class Compiled: Sendable {
        let registry: SchemaRegistry
        let roots: [String: Node]
        let byKind: Mutex<[ResourceKind: JSONSchema]>
        let name: Mutex<JSONSchema?>

        init(registry: SchemaRegistry, roots: [String: Node]) {
            self.registry = registry
            self.roots = roots
            byKind = Mutex([:])
            name = Mutex(nil)
        }

        func schema(for kind: ResourceKind) throws(ManifestSchemaError) -> JSONSchema {
            if let schema = byKind.withLock({ $0[kind] }) { return schema }
            guard let root = roots[kind.schemaFile] else {
                throw ManifestSchemaError(message: "no schema file \(kind.schemaFile) for kind \(kind.rawValue)")
            }
            let schema: JSONSchema
            do {
                schema = try JSONSchema(root, baseURI: ManifestSchemas.baseURI + kind.schemaFile, registry: registry)
            } catch {
                throw ManifestSchemaError(message: error.description)
            }
            byKind.withLock { $0[kind] = schema }
            return schema
        }

        func nameSchema() throws(ManifestSchemaError) -> JSONSchema {
            if let schema = name.withLock({ $0 }) { return schema }
            let reference = Node(
                .object([
                    Node.Member(
                        key: "$ref", keyLocation: .file("<name>"),
                        value: Node(.string("common.schema.json#/$defs/name"), at: .file("<name>")))
                ]),
                at: .file("<name>"))
            let schema: JSONSchema
            do {
                schema = try JSONSchema(reference, baseURI: ManifestSchemas.baseURI + "name", registry: registry)
            } catch {
                throw ManifestSchemaError(message: error.description)
            }
            name.withLock { $0 = schema }
            return schema
        }
    }

    private let compiled: Compiled

    public func schema(for kind: ResourceKind) -> JSONSchema {
        do {
            return try compiled.schema(for: kind)
        } catch {
            // `init(files:)` compiled every kind once, or the schemas are the bundled ones,
            // which the tests compile.
            preconditionFailure("the \(kind.rawValue) schema does not compile: \(error)")
        }
    }

    /// Whether `text` is a name manifests accept (a DNS-1123 label).
    public func isName(_ text: String) -> Bool {
        do {
            return try compiled.nameSchema().isValid(Node(.string(text), at: .file("<name>")))
        } catch {
            preconditionFailure("the name schema does not compile: \(error)")
        }
    }

    /// Compiled once per process, each kind on first use. The bundled schemas are checked
    /// by the tests, so a failure here is a build defect, not a user error.
    public static let bundled: ManifestSchemas = {
        do {
            return try ManifestSchemas(files: BundledSchemas.files, compileNow: false)
        } catch {
            preconditionFailure("the schemas built into orlctl do not compile: \(error)")
        }
    }()

    /// Compiles schema files given as (file name, JSON text). Every kind needs its
    /// `<kind>.schema.json`; the other files are shared definitions.
    public init(files: [(name: String, text: String)]) throws(ManifestSchemaError) {
        try self.init(files: files, compileNow: true)
    }

    private init(files: [(name: String, text: String)], compileNow: Bool) throws(ManifestSchemaError) {
        var registry = SchemaRegistry()
        var roots: [String: Node] = [:]
        for (name, text) in files {
            let root: Node
            do {
                root = try JSONParser.parse(text, file: "schemas/\(name)")
            } catch {
                throw ManifestSchemaError(message: error.description)
            }
            roots[name] = root
            registry.register(root, uri: ManifestSchemas.baseURI + name)
        }
        for kind in ResourceKind.allCases where roots[kind.schemaFile] == nil {
            throw ManifestSchemaError(message: "no schema file \(kind.schemaFile) for kind \(kind.rawValue)")
        }
        compiled = Compiled(registry: registry, roots: roots)
        guard compileNow else { return }
        for kind in ResourceKind.allCases { _ = try compiled.schema(for: kind) }
        _ = try compiled.nameSchema()
    }
}

public struct ManifestSchemaError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
