import OrlJSON
import Testing

struct JSONParserTests {
    func parse(_ text: String) throws(JSONSyntaxError) -> Node {
        try JSONParser.parse(text, file: "f.json")
    }

    func failure(_ text: String) -> JSONSyntaxError? {
        do {
            _ = try parse(text)
            return nil
        } catch {
            return error
        }
    }

    @Test func locatesEveryValueAndKey() throws {
        let root = try parse("{\"a\": [1, \"x\"],\n  \"b\": true}")
        #expect(root.location == SourceLocation(file: "f.json", line: 1, column: 1))
        let a = try #require(root.member("a"))
        #expect(a.keyLocation == SourceLocation(file: "f.json", line: 1, column: 2))
        #expect(a.value.location.column == 7)
        #expect(a.value.elements?.map(\.location.column) == [8, 11])
        let b = try #require(root.member("b"))
        #expect(b.keyLocation == SourceLocation(file: "f.json", line: 2, column: 3))
        #expect(b.value.location == SourceLocation(file: "f.json", line: 2, column: 8))
    }

    @Test func columnsCountCodePointsNotBytes() throws {
        let root = try parse("{\"é😀\": 1, \"b\": 2}")
        #expect(root["é😀"]?.location.column == 8)
        #expect(root.member("b")?.keyLocation.column == 11)
    }

    @Test func decodesEscapesIncludingSurrogatePairs() throws {
        let node = try parse(#""\u00e9\ud83d\ude00\n\t\"\\\/\u0041""#)
        #expect(node.string == "é😀\n\t\"\\/A")
    }

    /// An escape sends a string down the slow path, which copies the runs between
    /// escapes whole: multi-byte text before, between and after escapes survives, and the
    /// columns after it still count code points.
    @Test func escapedStringsKeepTheirTextAndColumns() throws {
        let root = try parse(#"{"k": "né \"x\" 😀 \u00e9 ü\tend", "b": 1}"#)
        #expect(root["k"]?.string == "né \"x\" 😀 é ü\tend")
        #expect(root.member("b")?.keyLocation.column == 35)
        #expect(failure("\"a\\n\u{01}\"") != nil)
        #expect(failure(#""a\"b"#)?.message.contains("unterminated") == true)
    }

    @Test func rejectsUnpairedSurrogates() {
        #expect(failure(#""\ud83d""#)?.message == "unpaired UTF-16 surrogate \\uD83D in string")
        #expect(failure(#""\ude00x""#)?.location.column == 2)
        #expect(failure(#""\ud83d\u0041""#) != nil)
    }

    @Test func readsNumbersExactly() throws {
        let numbers = try #require(parse("[42, -7, 1.5, 1e2, 1.0, 12345678901234567890, -0.0]").elements?.map { $0.number! })
        #expect(numbers[0].integer == 42)
        #expect(numbers[1].integer == -7)
        #expect(numbers[2].integer == nil && numbers[2].double == 1.5)
        #expect(numbers[3].integer == 100 && numbers[3].text == "1e2")
        #expect(numbers[4].isInteger && numbers[4].text == "1.0")
        #expect(numbers[5].integer == nil && numbers[5].text == "12345678901234567890")
        #expect(numbers[5].double == 12345678901234567890.0)
        #expect(numbers[6].text == "-0.0")
    }

    @Test func rejectsDuplicateKeysNamingBothPlaces() {
        let error = failure("{\"a\": 1,\n \"a\": 2}")
        #expect(error?.message == "duplicate key \"a\" (first defined at f.json:1:2)")
        #expect(error?.location == SourceLocation(file: "f.json", line: 2, column: 2))
        #expect(error?.relatedLocation == SourceLocation(file: "f.json", line: 1, column: 2))
    }

    @Test func rejectsDuplicateKeysInLargeObjects() {
        let members = (0..<40).map { "\"k\($0)\": \($0)" }.joined(separator: ", ")
        #expect(failure("{\(members), \"k3\": 0}")?.message.hasPrefix("duplicate key \"k3\"") == true)
        #expect(failure("{\(members), \"k40\": 0}") == nil)
    }

    @Test(arguments: [
        ("", "empty document: expected a JSON value", 1),
        ("[1,]", "unexpected ']': expected a JSON value", 4),
        ("{\"a\" 1}", "unexpected '1': expected ':' after key \"a\"", 6),
        ("{a: 1}", "unexpected 'a': expected a string key", 2),
        ("01", "invalid number: leading zeros are not allowed", 2),
        ("1.", "invalid number: expected a digit after '.'", 3),
        ("-", "invalid number: expected a digit after '-'", 2),
        ("tru", "invalid literal: expected 'true'", 1),
        ("nulls", "invalid literal: expected 'null'", 1),
        ("\"abc", "unterminated string", 5),
        ("\"a\tb\"", "control character U+0009 must be escaped in a string", 3),
        ("\"\\x\"", "invalid escape sequence '\\x' in string", 3),
        ("[1] 2", "unexpected '2' after the JSON value", 5),
        ("// comment\n1", "unexpected '/': expected a JSON value", 1),
        ("NaN", "unexpected 'N': expected a JSON value", 1),
    ])
    func reportsSyntaxErrors(text: String, message: String, column: Int) {
        let error = failure(text)
        #expect(error?.message == message)
        #expect(error?.location.column == column)
    }

    @Test func reportsLineOfErrors() {
        #expect(failure("{\n  \"a\": [\n    1,\n  }")?.location == SourceLocation(file: "f.json", line: 4, column: 3))
    }

    @Test func limitsNesting() {
        let deep = String(repeating: "[", count: JSONParser.maximumDepth + 1)
        #expect(failure(deep)?.message == "nesting deeper than \(JSONParser.maximumDepth) levels")
    }

    @Test func rejectsInvalidUTF8Bytes() {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(bytes: [0x22, 0xFF, 0x22], file: "f.json") }
        #expect(throws: Never.self) { try JSONParser.parse(bytes: Array("\"é\"".utf8), file: "f.json") }
    }
}

@Suite struct JSONValueCompactTests {
    @Test func compactRenderingIsOneLineInOrderAndParses() throws {
        let value = JSONValue.object([
            ("time", .string("2026-11-21T17:55:31.205Z")),
            ("pid", .int(42)),
            ("message", .string("a \"quoted\"\nline")),
            ("items", .array([.bool(true), .null, .double(1.5), .object([])])),
        ])
        let text = value.compactRendered()
        #expect(text == #"{"time":"2026-11-21T17:55:31.205Z","pid":42,"message":"a \"quoted\"\nline","items":[true,null,1.5,{}]}"#)
        #expect(!text.contains("\n"))
        _ = try JSONParser.parse(text, file: "<test>")
    }

    @Test func stringsAreEscapedOnlyWhereJSONNeedsIt() throws {
        let cases: [(String, String)] = [
            ("plain name-1", #""plain name-1""#),
            ("é and 😀 and e\u{301}", "\"é and 😀 and e\u{301}\""),
            (#"a"b\c"#, #""a\"b\\c""#),
            ("tab\there\nnew\r\u{1}\u{1f}", #""tab\there\nnew\r\u0001\u001f""#),
            ("", "\"\""),
        ]
        for (value, expected) in cases {
            #expect(JSONValue.string(value).compactRendered() == expected)
            #expect(JSONValue.string(value).rendered() == expected + "\n")
            #expect(try JSONParser.parse(expected, file: "<test>").string == value)
        }
    }
}
