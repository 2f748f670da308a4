import OrlCore
import OrlJSON
import OrlYAML
import Testing

@Suite struct DocumentTests {
    @Test func eachDocumentOfAStreamIsSeparateWithItsIndex() {
        let parsed = parse(
            """
            kind: Agent
            ---
            kind: Workflow
            ---
            - 1
            """)
        #expect(parsed.diagnostics.isEmpty)
        #expect(parsed.documents.map(\.index) == [0, 1, 2])
        #expect(parsed.documents.map(\.file) == ["m.yaml", "m.yaml", "m.yaml"])
        #expect(parsed.documents[1].root["kind"]?.string == "Workflow")
        #expect(parsed.documents[1].root.member("kind")?.keyLocation == at(3, 1))
        #expect(parsed.documents[2].root.location == at(5, 1))
    }

    @Test func emptyDocumentsAreSkippedButCounted() {
        let parsed = parse(
            """
            # leading comment
            ---
            a: 1
            ---
            # only a comment
            ---
            b: 2
            ---
            """)
        #expect(parsed.diagnostics.isEmpty)
        #expect(parsed.documents.map(\.index) == [0, 2])
        #expect(parsed.documents.map { $0.root.members?.first?.key } == ["a", "b"])
    }

    @Test(arguments: ["", "# nothing here\n", "---\n", "---\n...\n", "\n\n"])
    func filesWithoutContentHaveNoDocumentsAndNoErrors(text: String) {
        let parsed = parse(text)
        #expect(parsed.documents.isEmpty)
        #expect(parsed.diagnostics.isEmpty)
    }

    @Test func anExplicitNullDocumentIsKept() {
        #expect(root("null\n")?.isNull == true)
    }

    @Test func anchorsDoNotCrossDocuments() {
        let parsed = parse("a: &x 1\n---\nb: *x\n")
        #expect(parsed.documents.count == 1)
        #expect(parsed.diagnostics.map(\.code) == [.yamlSyntax])
        #expect(parsed.diagnostics.first?.location == at(3, 4))
    }
}
