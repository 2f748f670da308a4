import Foundation
import OrlJSON
import Testing

@testable import OrlCore

/// schemas/ is the single source of truth; the copy built into the binary must match it.
@Suite struct BundledSchemasTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func bundledCopyMatchesSchemasDirectory() throws {
        let directory = Self.root.appendingPathComponent("schemas")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".json") }.sorted()
        #expect(BundledSchemas.files.map(\.name) == names, "run scripts/embed-schemas")
        for (name, text) in BundledSchemas.files {
            let onDisk = try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
            // The generator indents, and the multi-line literal strips the indentation
            // and the final newline.
            #expect(text + "\n" == onDisk, "\(name) is stale: run scripts/embed-schemas")
        }
    }

    @Test(arguments: ResourceKind.allCases)
    func everyKindsSchemaRequiresTheEnvelope(_ kind: ResourceKind) throws {
        let empty = try JSONParser.parse("{}", file: "empty.json")
        let messages = ManifestSchemas.bundled.schema(for: kind).validate(empty).map(\.message)
        for field in ["apiVersion", "kind", "metadata", "spec"] {
            #expect(messages.contains { $0.contains("\"\(field)\"") }, "\(kind): \(messages)")
        }
    }
}
