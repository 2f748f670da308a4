import Testing

@testable import OrlJSON

/// `SchemaIndex` indexes a document when a reference reaches it, and must find what
/// indexing every document in order (root, registered documents, meta-schemas) finds:
/// the first document that defines a resource wins, the last anchor of a name wins, and a
/// meta-schema a registered document stands in for is not added.
struct SchemaIndexTests {
    static func node(_ text: String) throws -> Node { try JSONParser.parse(text, file: "schema.json") }

    static func schema(_ root: String, _ documents: [(uri: String, text: String)]) throws -> JSONSchema {
        var registry = SchemaRegistry()
        for document in documents { registry.register(try node(document.text), uri: document.uri) }
        return try JSONSchema(node(root), baseURI: "https://example.com/root.json", registry: registry)
    }

    @Test func aKindsSchemaIndexesTheDocumentsItReaches() throws {
        var index = SchemaIndex()
        index.add(try Self.node(#"{"$ref": "b.json#/$defs/x"}"#), uri: "https://example.com/root.json")
        index.add(try Self.node(#"{"$defs": {"x": {"type": "integer"}}}"#), uri: "https://example.com/a.json")
        index.add(try Self.node(#"{"$defs": {"x": {"type": "string"}}}"#), uri: "https://example.com/b.json")
        index.add(try Self.node(#"{"$defs": {"x": {"type": "null"}}}"#), uri: "https://example.com/c.json")
        for meta in MetaSchemas.documents { index.add(meta.root, unlessDefined: meta.uri) }
        let root = SchemaPosition(document: 0, pointer: "")
        _ = index.scope(at: root, of: index.documents[0])
        #expect(index.indexedCount == 1)
        let target = index.resolve("b.json#/$defs/x", against: URIReference("https://example.com/root.json"))
        #expect(target == SchemaPosition(document: 2, pointer: "/$defs/x"))
        // The root and b.json; not a.json, c.json nor any meta-schema.
        #expect(index.indexedCount == 2)
        #expect(index.resolve("https://json-schema.org/draft/2020-12/schema", against: URIReference("")) != nil)
        #expect(index.indexedCount == 3)
    }

    @Test func anEmbeddedResourceBeforeADocumentOfTheSameURIWins() throws {
        // a.json embeds b.json (a string) before the document b.json (an integer).
        let schema = try Self.schema(
            #"{"$ref": "b.json"}"#,
            [
                (uri: "https://example.com/a.json", text: #"{"$defs": {"b": {"$id": "b.json", "type": "string"}}}"#),
                (uri: "https://example.com/b.json", text: #"{"type": "integer"}"#),
            ])
        #expect(schema.isValid(try Self.node(#""text""#)))
        #expect(!schema.isValid(try Self.node("1")))
    }

    @Test func theLastAnchorOfANameWins() throws {
        // a.json embeds c.json with the anchor "v" (a string); the document c.json, after
        // it, has the same anchor (an integer), which replaces it. The resource itself is
        // a.json's (first), whose pointer /$defs/n is a null.
        let schema = try Self.schema(
            #"{"properties": {"byAnchor": {"$ref": "c.json#v"}, "byPointer": {"$ref": "c.json#/$defs/n"}}}"#,
            [
                (
                    uri: "https://example.com/a.json",
                    text: #"{"$defs": {"c": {"$id": "c.json", "$defs": {"v": {"$anchor": "v", "type": "string"}, "n": {"type": "null"}}}}}"#
                ),
                (
                    uri: "https://example.com/c.json",
                    text: #"{"$defs": {"v": {"$anchor": "v", "type": "integer"}, "n": {"type": "boolean"}}}"#
                ),
            ])
        #expect(schema.isValid(try Self.node(#"{"byAnchor": 1, "byPointer": null}"#)))
        #expect(!schema.isValid(try Self.node(#"{"byAnchor": "s"}"#)))
        #expect(!schema.isValid(try Self.node(#"{"byPointer": true}"#)))
    }

    @Test func aRegisteredDocumentStandsInForAMetaSchema() throws {
        // Registered at the 2020-12 meta-schema's URI: a reference to it reaches this one.
        let schema = try Self.schema(
            #"{"$ref": "https://json-schema.org/draft/2020-12/schema"}"#,
            [(uri: "https://json-schema.org/draft/2020-12/schema", text: #"{"type": "integer"}"#)])
        #expect(schema.isValid(try Self.node("3")))
        #expect(!schema.isValid(try Self.node("{}")))
    }

    @Test func aLaterDocumentsDynamicAnchorsOfAnEarlierResourceCount() throws {
        // c.json's dynamic anchor "t" is declared again by a.json's embedded c.json (after
        // the document c.json): both are the resource's, the later one replacing the
        // earlier, as when every document is indexed in order.
        let root = #"{"$ref": "c.json"}"#
        let documents: [(uri: String, text: String)] = [
            (
                uri: "https://example.com/c.json",
                text: ##"{"$dynamicAnchor": "t", "$ref": "#/$defs/u", "$defs": {"u": {"$dynamicRef": "#t"}}}"##
            ),
            (uri: "https://example.com/a.json", text: #"{"$defs": {"c": {"$id": "c.json", "$dynamicAnchor": "t", "type": "string"}}}"#),
        ]
        // It compiles: the dynamic reference lands on the anchor.
        _ = try Self.schema(root, documents)
        var all = SchemaIndex()
        all.add(try Self.node(root), uri: "https://example.com/root.json")
        for document in documents { all.add(try Self.node(document.text), uri: document.uri) }
        let anchors = all.dynamicAnchors(of: "https://example.com/c.json")
        #expect(anchors == ["t": SchemaPosition(document: 2, pointer: "/$defs/c")])
        // c.json first; a.json is not plain, so the root before it is indexed first.
        #expect(all.indexedCount == 3)
    }
}
