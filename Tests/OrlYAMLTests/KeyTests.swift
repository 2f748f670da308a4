import OrlCore
import OrlJSON
import OrlYAML
import Testing

@Suite struct KeyTests {
    @Test func eachDuplicateIsReportedAtItsOwnPositionWithTheFirstAsNote() throws {
        let parsed = parse(
            """
            kind: Agent
            spec:
              model: opus
              tools: [git]
              model: sonnet
                # comment
              model: haiku
            """)
        #expect(parsed.diagnostics.count == 2)
        for (diagnostic, location) in zip(parsed.diagnostics, [at(5, 3), at(7, 3)]) {
            #expect(diagnostic.code == .yamlDuplicateKey)
            #expect(diagnostic.severity == .error)
            #expect(diagnostic.location == location)
            #expect(diagnostic.message == #"duplicate key "model"; only the first one is used, remove this one"#)
            #expect(diagnostic.notes == [Diagnostic.Note(#""model" is first defined here"#, at: at(3, 3))])
        }
        // The first value wins and the document is kept for later checks.
        let doc = try #require(parsed.documents.first)
        #expect(doc.root[path: "spec", "model"]?.string == "opus")
        #expect(doc.root["spec"]?.members?.map(\.key) == ["model", "tools"])
    }

    @Test func duplicatesAreFoundInLargeMappingsAndFlowStyle() {
        let keys = (0..<40).map { "k\($0): \($0)" }.joined(separator: "\n")
        let parsed = parse(keys + "\nk31: again\nflow: {a: 1, b: 2, a: 3}\n")
        #expect(parsed.diagnostics.map(\.location) == [at(41, 1), at(42, 20)])
        #expect(parsed.diagnostics.map { $0.notes.first?.location } == [at(32, 1), at(42, 8)])
        #expect(parsed.documents.first?.root["k31"]?.number == Number(integer: 31))
    }

    @Test func quotingDoesNotMakeAKeyDifferent() {
        let parsed = parse("name: a\n\"name\": b\n")
        #expect(parsed.diagnostics.map(\.code) == [.yamlDuplicateKey])
    }

    @Test func collectionsCannotBeKeys() {
        let parsed = parse(
            """
            ? [a, b]
            : 1
            {x: 1}: 2
            ok: 3
            """)
        #expect(parsed.documents.isEmpty)
        #expect(parsed.diagnostics.map(\.code) == [.yamlUnsupported, .yamlUnsupported])
        #expect(parsed.diagnostics.map(\.location) == [at(1, 3), at(3, 1)])
        #expect(parsed.diagnostics.first?.message == "a sequence cannot be a mapping key; keys in manifests are strings")
        #expect(parsed.diagnostics.last?.message == "a mapping cannot be a mapping key; keys in manifests are strings")
    }

    @Test func aScalarAliasCanBeAKey() throws {
        let doc = try #require(root("a: &k name\nb:\n  *k : value\n"))
        #expect(doc[path: "b", "name"]?.string == "value")
        #expect(doc["b"]?.member("name")?.keyLocation == at(3, 3))
    }

    @Test func anAliasToAnUnknownAnchorIsAnError() {
        let parsed = parse("a: 1\nb: *nowhere\n")
        #expect(parsed.documents.isEmpty)
        #expect(parsed.diagnostics.count == 1)
        #expect(parsed.diagnostics.first?.code == .yamlSyntax)
        #expect(parsed.diagnostics.first?.location == at(2, 4))
        #expect(
            parsed.diagnostics.first?.message
                == "alias *nowhere refers to no anchor; define &nowhere on a value earlier in the same document"
        )
    }

    @Test func anAnchorIsNotVisibleInsideItself() {
        let parsed = parse("a: &loop [1, *loop]\n")
        #expect(parsed.diagnostics.map(\.code) == [.yamlSyntax])
    }
}

@Suite struct MergeKeyTests {
    @Test func mergesOneMappingWithExplicitKeysWinning() throws {
        let doc = try #require(
            root(
                """
                defaults: &defaults
                  model: sonnet
                  timeout: 30
                agent:
                  timeout: 60
                  <<: *defaults
                  name: reviewer
                """))
        let agent = try #require(doc["agent"])
        #expect(agent.members?.map(\.key) == ["timeout", "model", "name"])
        #expect(agent["timeout"]?.number == Number(integer: 60))
        #expect(agent["model"]?.string == "sonnet")
        // Merged values keep the location where they are written.
        #expect(agent["model"]?.location == at(2, 10))
        #expect(agent.member("model")?.keyLocation == at(2, 3))
    }

    @Test func anExplicitKeyAfterTheMergeAlsoWins() throws {
        let doc = try #require(root("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n"))
        #expect(doc[path: "m", "x"]?.number == Number(integer: 1))
        #expect(doc[path: "m", "y"]?.number == Number(integer: 3))
        #expect(doc["m"]?.members?.map(\.key) == ["x", "y"])
    }

    @Test func mergesAListWithEarlierMappingsWinning() throws {
        let doc = try #require(
            root(
                """
                a: &a {x: a, y: a}
                b: &b {y: b, z: b}
                m:
                  <<: [*a, *b, {w: inline}]
                  x: own
                """))
        let m = try #require(doc["m"])
        #expect(m["x"]?.string == "own")
        #expect(m["y"]?.string == "a")
        #expect(m["z"]?.string == "b")
        #expect(m["w"]?.string == "inline")
        #expect(m.members?.count == 4)
    }

    @Test func mergesNest() throws {
        let doc = try #require(root("a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: *b}\n"))
        #expect(doc[path: "c", "x"]?.number == Number(integer: 1))
        #expect(doc[path: "c", "y"]?.number == Number(integer: 2))
    }

    @Test func aQuotedMergeKeyIsAnOrdinaryKey() throws {
        let doc = try #require(root("a: &a {x: 1}\nm:\n  \"<<\": *a\n"))
        #expect(doc["m"]?.members?.map(\.key) == ["<<"])
    }

    @Test func theMergeValueMustBeMappings() {
        let parsed = parse("a: &a [1]\nm:\n  <<: *a\nn:\n  <<: [{x: 1}, 2]\no:\n  <<: text\n")
        #expect(parsed.documents.isEmpty)
        #expect(parsed.diagnostics.map(\.location) == [at(3, 7), at(5, 16), at(7, 7)])
        #expect(
            parsed.diagnostics.first?.message
                == #"the value of the merge key "<<" must be a mapping or a list of mappings, such as <<: *defaults or <<: [*a, *b]"#
        )
    }

    @Test func aSecondMergeKeyIsADuplicate() {
        let parsed = parse("a: &a {x: 1}\nb: &b {y: 1}\nm:\n  <<: *a\n  <<: *b\n")
        #expect(parsed.diagnostics.map(\.code) == [.yamlDuplicateKey])
        #expect(parsed.diagnostics.first?.location == at(5, 3))
        #expect(parsed.documents.first?.root["m"]?.members?.map(\.key) == ["x"])
    }
}

@Suite struct AliasEdgeTests {
    @Test func anAliasToASequenceCannotBeMerged() {
        let parsed = parse("list: &l [{x: 1}]\nm:\n  <<: *l\n")
        #expect(parsed.diagnostics.map(\.location) == [at(3, 7)])
    }

    @Test func anUnknownAliasAsMergeValueIsReportedOnce() {
        let parsed = parse("m:\n  <<: *missing\n  x: 1\n")
        #expect(parsed.diagnostics.count == 1)
        #expect(parsed.diagnostics.first?.message.hasPrefix("alias *missing refers to no anchor") == true)
    }

    @Test func anAliasToAMappingCannotBeAKey() {
        let parsed = parse("a: &m {x: 1}\nb:\n  *m : 2\n")
        #expect(parsed.diagnostics.map(\.code) == [.yamlUnsupported])
        #expect(parsed.diagnostics.first?.location == at(3, 3))
    }

    @Test func errorsInOneDocumentDoNotAffectTheNext() {
        let parsed = parse("a: !!int x\nb: !Ref y\n---\nc: 1\n")
        #expect(parsed.documents.map(\.index) == [1])
        #expect(parsed.diagnostics.count == 2)
    }
}
