public import OrlJSON

/// The compiled schema of every kind, from the schemas built into the binary.
public struct ManifestSchemas: Sendable {
    /// Schemas refer to each other by relative file name (`common.schema.json#/$defs/name`),
    /// which editors resolve against the files' own location; orl resolves them against
    /// this base.
    public static let baseURI = "https://schemas.orl.dev/v1/"

    private let byKind: [ResourceKind: JSONSchema]
    /// `common.schema.json#/$defs/name`: what names a resource, or a vault secret.
    private let name: JSONSchema

    public func schema(for kind: ResourceKind) -> JSONSchema { byKind[kind]! }

    /// Whether `text` is a name manifests accept (a DNS-1123 label).
    public func isName(_ text: String) -> Bool { name.isValid(Node(.string(text), at: .file("<name>"))) }

    /// Compiled once per process. The bundled schemas are checked by the tests, so a
    /// failure here is a build defect, not a user error.
    public static let bundled: ManifestSchemas = {
        do {
            return try ManifestSchemas(files: BundledSchemas.files)
        } catch {
            preconditionFailure("the schemas built into orlctl do not compile: \(error)")
        }
    }()

    /// Compiles schema files given as (file name, JSON text). Every kind needs its
    /// `<kind>.schema.json`; the other files are shared definitions.
    public init(files: [(name: String, text: String)]) throws(ManifestSchemaError) {
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
        var byKind: [ResourceKind: JSONSchema] = [:]
        for kind in ResourceKind.allCases {
            guard let root = roots[kind.schemaFile] else {
                throw ManifestSchemaError(message: "no schema file \(kind.schemaFile) for kind \(kind.rawValue)")
            }
            do {
                byKind[kind] = try JSONSchema(root, baseURI: ManifestSchemas.baseURI + kind.schemaFile, registry: registry)
            } catch {
                throw ManifestSchemaError(message: error.description)
            }
        }
        self.byKind = byKind
        do {
            let reference = Node(
                .object([
                    Node.Member(
                        key: "$ref", keyLocation: .file("<name>"),
                        value: Node(.string("common.schema.json#/$defs/name"), at: .file("<name>")))
                ]),
                at: .file("<name>"))
            name = try JSONSchema(reference, baseURI: ManifestSchemas.baseURI + "name", registry: registry)
        } catch {
            throw ManifestSchemaError(message: error.description)
        }
    }
}

public struct ManifestSchemaError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
