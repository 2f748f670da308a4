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

    /// Strings are escaped as they were a scalar at a time, byte for byte: the runs between
    /// escapes are copied whole, non-ASCII and combining marks next to an escape included.
    @Test func stringsAreEscapedExactlyBetweenTheRunsCopiedWhole() throws {
        let cases: [(String, String)] = [
            ("", "\"\""),
            ("plain", "\"plain\""),
            ("\"", "\"\\\"\""),
            ("\\end", "\"\\\\end\""),
            ("\r\n\t\u{0}\u{1f}\u{7f}", "\"\\r\\n\\t\\u0000\\u001f\u{7f}\""),
            ("café \"é\u{301}\" 日本\n🙂\\", "\"café \\\"é\u{301}\\\" 日本\\n🙂\\\\\""),
            ("\"\u{301}x\u{8}", "\"\\\"\u{301}x\\u0008\""),
        ]
        for (string, rendered) in cases {
            #expect(Array(JSONValue.string(string).compactRendered().utf8) == Array(rendered.utf8))
            #expect(try Array((JSONParser.parse(rendered, file: "<test>").string ?? "").utf8) == Array(string.utf8))
        }
    }

    /// A string with nothing to escape is quoted whole; the rest are escaped only where JSON needs it.
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

/// `parse(bytes:file:keeping:)` skips the members it does not keep: it must still accept
/// and refuse exactly what `parse(bytes:file:)` does, with the same error, and give the
/// kept members as that parse does.
@Suite struct JSONKeepingParseTests {
    static let kept: Set<String> = ["usage", "response", "message"]

    /// The whole parse's outcome, with the members not kept dropped from a top-level object.
    static func expected(_ bytes: [UInt8]) -> Result<Node, JSONSyntaxError> {
        do {
            var root = try JSONParser.parse(bytes: bytes, file: "b.json")
            if case .object(let members) = root.value { root.value = .object(members.filter { kept.contains($0.key) }) }
            return .success(root)
        } catch {
            return .failure(error)
        }
    }

    static func keeping(_ bytes: [UInt8]) -> Result<Node, JSONSyntaxError> {
        do {
            return .success(try JSONParser.parse(bytes: bytes, file: "b.json", keeping: kept))
        } catch {
            return .failure(error)
        }
    }

    static let documents = [
        #"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"there\" \u00e9\ud83d\ude00\n"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#,
        #"{"type":"message","message":{"usage":{"input_tokens":3,"cache_read_input_tokens":2,"output_tokens":1e2}},"content":[{"type":"text","text":"é😀"}],"stop":false,"n":-0.5E-3}"#,
        #"{"response":{"id":"r","usage":{"input_tokens":1,"output_tokens":2}},"a":{"b":{"c":[[],{},[{"d":"x"}]]}},"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17}}"#,
        "[{\"usage\": 1}, 2, \"three\"]",
        "  {\n  \"usage\" : { \"prompt_tokens\" : 1 } ,\n  \"other\" : [ true , false , null ]\n}\n",
    ]

    @Test(arguments: documents) func wholeDocumentsReadAsTheWholeParseReadsThem(document: String) {
        #expect(Self.keeping(Array(document.utf8)) == Self.expected(Array(document.utf8)))
    }

    @Test(arguments: [
        #"{"a":{"x":1,"x":2},"usage":{}}"#,  // a duplicate inside a skipped member
        #"{"a":1,"usage":{},"a":2}"#,  // a skipped member's key twice at the top
        #"{"a":{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"k3":0}}"#,
        #"{"a":"\x"}"#, #"{"a":"\ud800"}"#, #"{"a":"\ud800\u0041"}"#, #"{"a":"\u12G4"}"#, "{\"a\":\"tab\there\"}",
        #"{"a":01}"#, #"{"a":1.}"#, #"{"a":-}"#, #"{"a":1e}"#, #"{"a":tru}"#, #"{"a":nulls}"#, #"{"a":[1,]}"#, #"{"a":{"b" 1}}"#,
        #"{"a":"unterminated}"#, #"{"a":[1,2"#, #"{"a":1} x"#, "{\"a\":\"é\",\"a\":1}",
    ])
    func refusesWhatTheWholeParseRefusesWithItsError(document: String) {
        let expected = Self.expected(Array(document.utf8))
        #expect(throws: JSONSyntaxError.self) { try expected.get() }
        #expect(Self.keeping(Array(document.utf8)) == expected)
    }

    @Test func limitsNestingInsideASkippedMember() {
        let deep =
            "{\"a\":" + String(repeating: "[", count: JSONParser.maximumDepth) + String(repeating: "]", count: JSONParser.maximumDepth)
            + "}"
        let expected = Self.expected(Array(deep.utf8))
        #expect(throws: JSONSyntaxError.self) { try expected.get() }
        #expect(Self.keeping(Array(deep.utf8)) == expected)
        let fits =
            "{\"a\":" + String(repeating: "[", count: JSONParser.maximumDepth - 1)
            + String(repeating: "]", count: JSONParser.maximumDepth - 1) + "}"
        #expect(Self.keeping(Array(fits.utf8)) == Self.expected(Array(fits.utf8)))
        #expect(throws: Never.self) { try Self.keeping(Array(fits.utf8)).get() }
    }

    /// Seeded random edits of the documents (bytes dropped, inserted, replaced), most of
    /// which break them somewhere in a skipped member: every outcome is the whole parse's.
    @Test func editedDocumentsReadAsTheWholeParseReadsThem() {
        var random = SplitMix64(seed: 0x6f72_6c25)
        let alphabet = Array(#"{}[]",:\ 0123456789eE.-+tfnulrsaxu"#.utf8) + [0x0A, 0x09, 0x01, 0xC3, 0xA9, 0xFF]
        var refused = 0
        for round in 0..<3_000 {
            var bytes = Array(Self.documents[round % Self.documents.count].utf8)
            for _ in 0..<(1 + Int(random.next() % 3)) {
                let at = Int(random.next() % UInt64(bytes.count))
                switch random.next() % 3 {
                case 0: bytes.remove(at: at)
                case 1: bytes.insert(alphabet[Int(random.next() % UInt64(alphabet.count))], at: at)
                default: bytes[at] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                }
                if bytes.isEmpty { bytes = [0x20] }
            }
            let expected = Self.expected(bytes)
            if case .failure = expected { refused += 1 }
            #expect(Self.keeping(bytes) == expected, "\(String(decoding: bytes, as: UTF8.self))")
        }
        // Both kinds of outcome were exercised.
        #expect(refused > 1_000 && refused < 2_990)
    }
}
