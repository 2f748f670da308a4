import OrlJSON
import OrlYAML
import Testing

@testable import OrlCore

/// An apply keeps each document as the bytes of the state's kept chunks instead of its
/// tree (`Resource.withKeptForms`): what is read of it, and what the state keeps, must be
/// exactly what the tree gave.
@Suite struct KeptFormsTests {
    @Test(arguments: 0..<4)
    func keptFormsReadAndEncodeAsTheTree(seed: Int) throws {
        var g = IncrementalValidationTests.Generator(state: UInt64(seed) &* 104_729)
        var files = IncrementalValidationTests.fleet(&g)
        var serial = 0
        let parser = YAMLParser()
        for _ in 0..<4 {
            IncrementalValidationTests.edit(&files, &g, serial: &serial)
            let trees = files.flatMap {
                ManifestReader().read(parser.parse(IncrementalValidationTests.render($0), file: $0.path)).resources
            }
            let kept = trees.map { $0.withKeptForms() }
            #expect(!trees.isEmpty)
            #expect(kept.allSatisfy { $0.encodedDocument != nil })
            for (tree, bytes) in zip(trees, kept) {
                #expect(tree.encodedDocument == nil)
                #expect(IncrementalValidationTests.positions(bytes.document) == IncrementalValidationTests.positions(tree.document))
                #expect(bytes.canonical.text == tree.canonical.text && bytes.canonical.hash == tree.canonical.hash)
                #expect(bytes.location == tree.location && bytes.nameLocation == tree.nameLocation)
                #expect(bytes.selectorLocation == tree.selectorLocation)
                #expect(bytes.with(origin: nil).encodedDocument == bytes.encodedDocument)
            }
            let wrap = { (resources: [Resource]) in resources.map { ResourceSnapshot.Kept(contentHash: "h", resource: $0) } }
            #expect(ResourceSnapshot.encode(wrap(kept)) == ResourceSnapshot.encode(wrap(trees)))
        }
    }

    /// A document with positions in another file (the MCP lock's pins) keeps its tree and
    /// is left out of the kept chunks, as before; one read without its tree stays so.
    @Test func foreignPositionsAndPlacesKeepTheirForm() throws {
        let yaml = """
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: search}
            spec: {type: http, http: {url: "https://search.example.com"}}
            """
        let read = ManifestReader().read(YAMLParser().parse(yaml, file: "tool.yaml"))
        let tree = try #require(read.resources.first)
        let moved = Resource(
            metadata: tree.metadata, spec: tree.spec, document: YAMLParser().parse(yaml, file: "other.yaml").documents[0].root,
            file: tree.file, documentIndex: tree.documentIndex)
        let kept = moved.withKeptForms()
        #expect(kept.encodedDocument == nil)
        #expect(IncrementalValidationTests.positions(kept.document) == IncrementalValidationTests.positions(moved.document))
        #expect(
            ResourceSnapshot.decode(ResourceSnapshot.encode([ResourceSnapshot.Kept(contentHash: "h", resource: kept)]))?.isEmpty == true)

        var reader = ManifestReader()
        reader.keepsDocuments = false
        let places = try #require(reader.read(YAMLParser().parse(yaml, file: "tool.yaml")).resources.first).withKeptForms()
        #expect(places.encodedDocument == nil && places.document["spec"] == nil)
    }
}
