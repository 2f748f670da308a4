import OrlCore
import OrlJSON
import OrlYAML
import Testing

@Suite struct SyntaxErrorTests {
    @Test func aSyntaxErrorKeepsEarlierDocumentsAndDropsTheRest() {
        let parsed = parse(
            """
            kind: First
            ---
            kind: Second
            ---
            kind: Broken
            command: echo a: b
            ---
            kind: Lost
            """)
        #expect(parsed.documents.map { $0.root["kind"]?.string } == ["First", "Second"])
        #expect(parsed.diagnostics.count == 1)
        let diagnostic = parsed.diagnostics.first
        #expect(diagnostic?.code == .yamlSyntax)
        #expect(diagnostic?.location == at(6, 16))
        #expect(
            diagnostic?.message
                == #"mapping values are not allowed in this context; a plain value cannot contain ": ": quote the value, or check the indentation"#
        )
    }

    @Test func theContextIsANote() {
        let parsed = parse(
            """
            spec:
              model: opus
             tools: []
            """)
        #expect(parsed.documents.isEmpty)
        let diagnostic = parsed.diagnostics.first
        #expect(diagnostic?.location == at(3, 2))
        #expect(
            diagnostic?.message
                == "did not find expected key while parsing a block mapping; check the indentation: "
                + "the keys of one mapping must start in the same column"
        )
        #expect(diagnostic?.notes == [Diagnostic.Note("the block mapping starts here", at: at(1, 1))])
    }

    @Test func tabIndentationGetsAHint() throws {
        let parsed = parse("spec:\n\tmodel: opus\n")
        #expect(parsed.diagnostics.count == 1)
        let diagnostic = try #require(parsed.diagnostics.first)
        #expect(diagnostic.location == at(2, 1))
        #expect(diagnostic.message.hasSuffix("; YAML does not allow tabs for indentation: indent with spaces"))
    }

    @Test func unclosedFlowAndQuotes() {
        let flow = parse("a: [1, 2\nb: 3\n")
        #expect(flow.diagnostics.map(\.code) == [.yamlSyntax])
        #expect(flow.diagnostics.first?.notes.first?.location == at(1, 4))
        let quote = parse("a: \"open\nb: 3\n")
        #expect(quote.diagnostics.map(\.code) == [.yamlSyntax])
        #expect(quote.diagnostics.first?.message.hasPrefix("found unexpected end of stream while scanning a quoted scalar") == true)
        #expect(quote.diagnostics.first?.notes == [Diagnostic.Note("the quoted scalar starts here", at: at(1, 4))])
    }

    @Test func reservedIndicatorsGetAHint() {
        let parsed = parse("user: @me\n")
        #expect(parsed.diagnostics.first?.location == at(1, 7))
        #expect(parsed.diagnostics.first?.message.hasSuffix(#"a value that starts with "@" must be quoted"#) == true)
    }
}

@Suite struct EncodingTests {
    @Test func invalidUTF8RejectsTheWholeFile() {
        var bytes = Array("a: 1\n---\nb: ok\nc: x".utf8)
        bytes.append(0xFF)
        bytes += Array("\n".utf8)
        let parsed = parser.parse(bytes, file: "m.yaml")
        #expect(parsed.documents.isEmpty)
        #expect(
            parsed.diagnostics == [
                .error(
                    .fileUnreadable, "file is not valid UTF-8 (invalid leading UTF-8 octet 0xFF); save it as UTF-8",
                    at: at(4, 5)
                )
            ]
        )
    }

    @Test func aTruncatedCharacterIsInvalid() {
        let parsed = parser.parse(Array("a: é".utf8).dropLast(), file: "m.yaml")
        #expect(parsed.diagnostics.map(\.code) == [.fileUnreadable])
        #expect(parsed.diagnostics.first?.location == at(1, 4))
    }

    @Test func aNULByteMeansNotText() {
        let parsed = parser.parse(Array("a: 1\nb: \u{0}\n".utf8), file: "m.yaml")
        #expect(parsed.documents.isEmpty)
        #expect(
            parsed.diagnostics == [
                .error(.fileUnreadable, "file contains a NUL byte, so it is not text; manifests must be UTF-8 text", at: at(2, 4))
            ]
        )
    }

    @Test func otherControlCharactersAreSyntaxErrors() {
        let parsed = parse("a: b\u{7}\n")
        #expect(
            parsed.diagnostics == [
                .error(
                    .yamlSyntax,
                    #"control character U+0007 is not allowed in YAML; remove it, or write it as the escape "\x07" inside a double-quoted string"#,
                    at: at(1, 5)
                )
            ]
        )
    }

    @Test func utf16IsNamed() {
        let parsed = parser.parse([0xFF, 0xFE] + Array("a".utf8).flatMap { [$0, 0] }, file: "m.yaml")
        #expect(parsed.diagnostics.map(\.message) == ["file is encoded as UTF-16; save it as UTF-8"])
    }

    @Test func aUTF8ByteOrderMarkIsFine() {
        let parsed = parser.parse([0xEF, 0xBB, 0xBF] + Array("a: 1\n".utf8), file: "m.yaml")
        #expect(parsed.diagnostics.isEmpty)
        #expect(parsed.documents.first?.root.member("a")?.keyLocation == at(1, 1))
    }
}

@Suite struct MissingColonTests {
    @Test func aKeyWithoutItsColonIsReportedAtTheKey() {
        let parsed = parse("a: 1\nb\nc: 2\n")
        #expect(
            parsed.diagnostics == [
                .error(
                    .yamlSyntax,
                    #"this key is not followed by ":"; add the colon, or if this line continues a value, quote the value or use | or >"#,
                    at: at(2, 1)
                )
            ]
        )
    }
}
