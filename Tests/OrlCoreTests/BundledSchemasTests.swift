import Foundation
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

    @Test func everyKindHasACompiledSchema() {
        let schemas = ManifestSchemas.bundled
        for kind in ResourceKind.allCases {
            _ = schemas.schema(for: kind)
        }
    }
}
