import OrlCore
import OrlJSON
import OrlYAML
import Testing

@Suite struct LocationTests {
    @Test func blockMappingKeysAndValuesKeepTheirPositions() throws {
        let doc = try #require(
            root(
                """
                apiVersion: orl.dev/v1
                kind: Agent
                metadata:
                  name: reviewer
                  labels:
                    team: core
                spec:
                  tools:
                    - git
                    - name: shell
                      timeout: 30
                """))
        #expect(doc.location == at(1, 1))
        #expect(doc.member("kind")?.keyLocation == at(2, 1))
        #expect(doc["kind"]?.location == at(2, 7))
        #expect(doc[path: "metadata"]?.location == at(4, 3))
        #expect(doc[path: "metadata"]?.member("name")?.keyLocation == at(4, 3))
        #expect(doc[path: "metadata", "name"]?.location == at(4, 9))
        #expect(doc[path: "metadata", "labels", "team"]?.location == at(6, 11))
        #expect(doc[path: "spec", "tools"]?.location == at(9, 5))
        #expect(doc[path: "spec", "tools", 0]?.location == at(9, 7))
        #expect(doc[path: "spec", "tools", 1]?.location == at(10, 7))
        #expect(doc[path: "spec", "tools", 1]?.member("timeout")?.keyLocation == at(11, 7))
        #expect(doc[path: "spec", "tools", 1, "timeout"]?.location == at(11, 16))
        #expect(doc[path: "spec", "tools", 1, "timeout"]?.number == Number(integer: 30))
    }

    @Test func flowStyleElementsHaveTheirOwnColumns() throws {
        let doc = try #require(
            root(
                """
                env: {a: 1, "b": [x, 'y', {c: true}]}
                """))
        #expect(doc["env"]?.location == at(1, 6))
        #expect(doc["env"]?.member("a")?.keyLocation == at(1, 7))
        #expect(doc[path: "env", "a"]?.location == at(1, 10))
        #expect(doc["env"]?.member("b")?.keyLocation == at(1, 13))
        #expect(doc[path: "env", "b"]?.location == at(1, 18))
        #expect(doc[path: "env", "b", 1]?.location == at(1, 22))
        #expect(doc[path: "env", "b", 1]?.string == "y")
        #expect(doc[path: "env", "b", 2]?.member("c")?.keyLocation == at(1, 28))
        #expect(doc[path: "env", "b", 2, "c"]?.location == at(1, 31))
    }

    @Test func multiLineScalarsStartWhereTheyAreWritten() throws {
        let doc = try #require(
            root(
                """
                prompt: |
                  Review the change.
                  Be brief.
                summary: a plain scalar
                  folded over two lines
                after: x
                """))
        #expect(doc["prompt"]?.location == at(1, 9))
        #expect(doc["prompt"]?.string == "Review the change.\nBe brief.\n")
        #expect(doc["summary"]?.location == at(4, 10))
        #expect(doc["summary"]?.string == "a plain scalar folded over two lines")
        #expect(doc.member("after")?.keyLocation == at(6, 1))
    }

    @Test func columnsCountCharactersAndCRLFEndsLines() throws {
        let doc = try #require(root("name: héllo\r\nnext: \"ü\"\r\nlast: z\r\n"))
        #expect(doc["name"]?.string == "héllo")
        #expect(doc.member("next")?.keyLocation == at(2, 1))
        #expect(doc["next"]?.location == at(2, 7))
        #expect(doc.member("last")?.keyLocation == at(3, 1))
    }

    @Test func anAliasIsLocatedWhereItIsUsedAndItsContentWhereItIsWritten() throws {
        let doc = try #require(
            root(
                """
                base: &base
                  image: alpine
                copy: *base
                """))
        #expect(doc["copy"]?.location == at(3, 7))
        #expect(doc[path: "copy", "image"]?.location == at(2, 10))
        #expect(doc[path: "copy", "image"]?.string == "alpine")
    }

    @Test func bytesAndStringsParseAlike() {
        let text = "a: [1, 2]\n---\nb: c\n"
        let fromBytes = parser.parse(Array(text.utf8), file: "m.yaml")
        let fromString = parser.parse(text, file: "m.yaml")
        #expect(fromBytes.documents.map(\.root) == fromString.documents.map(\.root))
        #expect(fromBytes.documents.map(\.root.location) == fromString.documents.map(\.root.location))
        #expect(fromBytes.documents.count == 2)
    }

    @Test func parsesConcurrently() async {
        let texts = (0..<16).map { "index: \($0)\nlist: [\($0), \($0 + 1)]\n" }
        let results = await withTaskGroup(of: (Int, Int?).self) { group in
            for (i, text) in texts.enumerated() {
                group.addTask { (i, parser.parse(text, file: "f\(i)").documents.first?.root["index"]?.number?.integer) }
            }
            var out: [Int: Int?] = [:]
            for await (i, value) in group { out[i] = value }
            return out
        }
        for i in 0..<16 { #expect(results[i] == .some(i)) }
    }
}
