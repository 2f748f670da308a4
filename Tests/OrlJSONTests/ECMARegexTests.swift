import Testing

@testable import OrlJSON

/// The ECMA-262 matcher behind `pattern` and `patternProperties`.
struct ECMARegexTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var pattern: String
        var input: String
        var matches: Bool
        var testDescription: String { "/\(pattern)/ on \(input.debugDescription) → \(matches)" }
    }

    static func table(_ rows: [(String, String, Bool)]) -> [Case] {
        rows.map { Case(pattern: $0.0, input: $0.1, matches: $0.2) }
    }

    static let constructs = table([
        // Literals, and search anywhere unless anchored.
        ("abc", "abc", true), ("abc", "xxabcxx", true), ("abc", "ab", false), ("", "", true), ("", "x", true),
        ("é", "café", true), ("🐲", "a🐲b", true), ("a🐲*b", "a🐲🐲b", true), ("🐲{2}", "🐲", false),
        // Escapes.
        (#"\."#, ".", true), (#"\."#, "a", false), (#"\/"#, "/", true), (#"\-"#, "-", true), (#"\\"#, "\\", true),
        (#"\t\n\r\f\v"#, "\t\n\r\u{0C}\u{0B}", true), (#"\0"#, "\0", true), (#"\x41"#, "A", true),
        (#"\u00e9"#, "é", true), (#"\u{1F432}"#, "🐲", true), (#"\uD83D\uDC32"#, "🐲", true),
        (#"\uD83D"#, "🐲", false), (#"\cJ"#, "\n", true), (#"\cj"#, "\n", true),
        (#"\*\+\?\(\)\[\]\{\}\|\^\$"#, "*+?()[]{}|^$", true), (##"\:\#\""##, ":#\"", true),
        // Dot: any code point but a line terminator.
        ("^.$", "a", true), ("^.$", "é", true), ("^.$", "🐲", true), ("^.$", "\n", false), ("^.$", "\r", false),
        ("^.$", "\u{2028}", false), ("^.$", "\u{2029}", false), ("^.$", "\u{85}", true), ("^.$", "", false),
        // Character classes.
        ("^[abc]+$", "cab", true), ("^[abc]+$", "cad", false), ("^[a-z0-9]+$", "k8s", true),
        ("^[^a-z]$", "A", true), ("^[^a-z]$", "q", false), ("^[^a-z]$", "\n", true), ("^[^a-z]$", "é", true),
        ("^[-a]+$", "a-a", true), ("^[a-]+$", "-a", true), ("^[a\\-z]+$", "-", true), ("^[a\\-z]+$", "b", false),
        ("^[a-z-0]+$", "-0x", true), ("^[\\d_]+$", "4_2", true), ("^[\\D]$", "x", true), ("^[\\D]$", "4", false),
        ("^[\\s\\w]+$", "a b", true), ("^[^\\s]+$", "a\u{A0}b", false), ("^[\\b]$", "\u{08}", true),
        ("^[\\x41-\\x43]+$", "ABC", true), ("^[\\u{1F400}-\\u{1F4FF}]$", "🐲", true), ("^[é-ë]$", "ê", true),
        ("^[]$", "a", false), ("^[^]$", "\n", true), ("^[.]$", "a", false), ("^[[]$", "[", true),
        // Class escapes, with ECMA-262's ASCII-only \d and \w.
        (#"^\d+$"#, "0123456789", true), (#"^\d$"#, "٣", false), (#"^\d$"#, "\u{07C0}", false),
        (#"^\D$"#, "٣", true), (#"^\w+$"#, "Az09_", true), (#"^\w$"#, "é", false), (#"^\W$"#, "é", true),
        (#"^\s+$"#, " \t\n\r\u{0B}\u{0C}\u{A0}\u{FEFF}\u{2003}\u{3000}\u{1680}\u{2028}\u{2029}", true),
        (#"^\s$"#, "\u{85}", false), (#"^\s$"#, "\u{200B}", false), (#"^\S$"#, "\u{85}", true),
        // Word boundaries by ASCII \w.
        (#"\bcat\b"#, "a cat.", true), (#"\bcat\b"#, "concat", false), (#"\Bcat"#, "concat", true),
        (#"\bcat"#, "écat", true), (#"^\b$"#, "", false), (#"^\B$"#, "", true), (#"a\b"#, "a", true),
        // Groups and alternation.
        ("^(ab)+$", "abab", true), ("^(?:ab)+$", "aba", false), ("^(a|bc|)$", "", true), ("^(a|bc)$", "bc", true),
        ("^a|b$", "ax", true), ("^a|b$", "xb", true), ("^a|b$", "xbx", false), ("^(?:a|b)c$", "bc", true),
        // Quantifiers, greedy and lazy.
        ("^a?$", "", true), ("^a?$", "aa", false), ("^a*$", "aaaa", true), ("^a+$", "", false),
        ("^a{3}$", "aaa", true), ("^a{3}$", "aa", false), ("^a{2,}$", "aaaaa", true), ("^a{2,}$", "a", false),
        ("^a{2,3}$", "aaa", true), ("^a{2,3}$", "aaaa", false), ("^a{0}$", "", true), ("^(ab){1,2}c$", "ababc", true),
        ("^a??b$", "ab", true), ("^a*?b$", "aaab", true), ("^a+?$", "aa", true), ("^a{1,2}?b$", "aab", true),
        ("^(a|ab)(c|bcd)(d*)$", "abcd", true), ("^[0-9]+(ms|s|m|h|d)$", "15ms", true),
        // Anchors: ^ and $ only at the ends of the input, $ not before a final newline.
        ("^abc$", "abc\n", false), ("^abc$", "\nabc", false), ("abc$", "abc", true), ("a^b", "a^b", false),
        ("^$", "", true), ("^$", "\n", false), ("(^a|b)c", "xbc", true), ("x$|^y", "yz", true),
        // The patterns orl's own schemas use.
        ("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "payments-worker-blue", true),
        ("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "worker-", false), ("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "a", true),
        ("^([0-9]+(ms|s|m|h|d))+$", "1h30m15s", true), ("^([0-9]+(ms|s|m|h|d))+$", "1h30", false),
        (#"^https?://[^\s]+$"#, "https://api.openai.com/v1", true), (#"^https?://[^\s]+$"#, "https://a b", false),
        (#"^https?://[^\s]+$"#, "https://a\u{3000}b", false),
    ])

    @Test(arguments: constructs)
    func matches(_ row: Case) throws {
        let regex = try ECMARegex(row.pattern)
        #expect(regex.matches(row.input, strategy: .backtracking) == row.matches, "backtracking")
        #expect(regex.matches(row.input, strategy: .pikeVM) == row.matches, "Pike VM")
    }

    @Test(arguments: [
        ("(", "missing ')' at offset 0"), (")", "unmatched ')' at offset 0"), ("a)", "unmatched ')' at offset 1"),
        ("[a", "missing ']' at offset 0"), ("*a", "nothing to repeat at offset 0"), ("a**", "nothing to repeat at offset 2"),
        ("^*", "nothing to repeat at offset 1"), (#"\b+"#, "nothing to repeat at offset 2"),
        ("a{2,1}", "numbers out of order in {} quantifier at offset 0"),
        ("a{", "incomplete quantifier; write '\\{' for a literal '{' at offset 1"),
        ("a{x}", "incomplete quantifier; write '\\{' for a literal '{' at offset 1"),
        ("{", "lone '{'; escape it as '\\{' at offset 0"), ("}", "lone '}'; escape it as '\\}' at offset 0"),
        ("]", "lone ']'; escape it as '\\]' at offset 0"), ("[z-a]", "range out of order in character class at offset 1"),
        (#"[\d-z]"#, "a class escape cannot bound a range at offset 1"), (#"\a"#, "unknown escape '\\a' at offset 0"),
        (#"\z"#, "unknown escape '\\z' at offset 0"), ("\\", "'\\' at end of pattern at offset 0"),
        (#"\x4"#, "'\\x' needs two hex digits at offset 0"), (#"\u12"#, "'\\u' needs four hex digits at offset 0"),
        (#"\u{110000}"#, "'\\u{…}' beyond U+10FFFF at offset 0"), (#"\u{}"#, "malformed '\\u{…}' escape at offset 0"),
        (#"\c1"#, "'\\c' must be followed by an ASCII letter at offset 0"),
        (#"\01"#, "octal escapes are not allowed in Unicode mode at offset 0"),
        (#"[\B]"#, "'\\B' is not allowed in a character class at offset 1"),
    ])
    func rejectsInvalidPatterns(pattern: String, message: String) {
        #expect {
            _ = try ECMARegex(pattern)
        } throws: { error in
            guard case .invalid(let syntax) = error as? ECMARegex.CompileError else { return false }
            return syntax.description == message
        }
    }

    /// Valid ECMA-262 the matcher leaves to Swift `Regex`.
    @Test(arguments: [
        "(?=a)", "(?!a)", "(?<=a)b", "(?<!a)b", "(?<name>a)", #"(a)\1"#, #"\k<name>"#, #"\p{Letter}"#, #"[\P{L}]"#,
        "(?i:a)", "a{0,100000}",
    ])
    func leavesUnsupportedSyntaxToSwiftRegex(pattern: String) throws {
        #expect {
            _ = try ECMARegex(pattern)
        } throws: { error in
            guard case .unsupported = error as? ECMARegex.CompileError else { return false }
            return true
        }
    }

    @Test func schemaPatternsUseTheECMAMatcher() throws {
        #expect(try Pattern(#"^\d$"#).matches("٣") == false)
        #expect(try Pattern("^abc$").matches("abc\n") == false)
        #expect(try Pattern(#"\p{Nd}"#).matches("٣"))
        #expect(try Pattern("a(?=b)").matches("ab"))
        #expect(throws: ECMARegex.SyntaxError.self) { try Pattern(#"\a"#) }
    }

    /// Catastrophic backtracking for a naive backtracker; linear here.
    @Test(arguments: [
        (#"(a*)*b"#, "a"), (#"(a+)+b"#, "a"), (#"(a|a)*b"#, "a"), (#"(a|aa)+b"#, "a"), (#"^(\w+\s?)*$"#, "ab "),
        (#"(x+x+)+y"#, "x"), (#"^(.*a){12}$"#, "a"), (#"^(a?){40}a{40}$"#, "a"),
    ])
    func pathologicalPatternsFinishFast(pattern: String, unit: String) throws {
        let regex = try ECMARegex(pattern)
        let input = String(repeating: unit, count: 2_000) + "!"
        let clock = ContinuousClock()
        for strategy in [ECMARegex.Strategy.backtracking, .pikeVM] {
            let elapsed = clock.measure { #expect(!regex.matches(input, strategy: strategy)) }
            #expect(elapsed < .seconds(2), "\(strategy): \(elapsed)")
        }
    }

    @Test func longInputsUseThePikeVM() throws {
        let regex = try ECMARegex(#"^[a-z]+(-[a-z]+)*$"#)
        let long = Array(repeating: "segment", count: 5_000).joined(separator: "-")
        #expect(regex.matches(long))
        #expect(!regex.matches(long + "-"))
    }

    /// On ASCII inputs, where ECMA-262 and Swift `Regex` agree for these patterns
    /// (no `$` before a newline, and no `\b`: Swift sees a word boundary between a
    /// letter and a digit), both strategies must give Swift's answers.
    @Test func agreesWithSwiftRegexOnASCII() throws {
        let patterns = [
            "a", "ab|cd", "^a*b", "a+b?c*", "^(ab|a)(bc|c)?$", "(a|b)*abb", "^[a-c]{2,3}$", "[^ab]+", "a.c",
            #"\d+\.\d*"#, #"^\w+$"#, #"^(a?){3}a{3}$"#, #"(?:a|b|)+c"#, "^x{0,2}y{1,}$",
            "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "^([0-9]+(ms|s|m|h|d))+$", #"^\s*\S+(\s+\S+){2}\s*$"#,
            "(a*?)(b+?)c", #"[\s\d]a"#, "c$", "^$",
        ]
        let alphabet: [Character] = ["a", "b", "c", "x", "y", "0", "1", "-", " ", ".", "m", "s", "\t"]
        var generator = SplitMix64(seed: 2020_12)
        for pattern in patterns {
            let ecma = try ECMARegex(pattern)
            let swift = try Regex(pattern).matchingSemantics(.unicodeScalar)
            for _ in 0..<300 {
                let length = Int(generator.next() % 9)
                let input = String((0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
                let expected = (try swift.firstMatch(in: input)) != nil
                #expect(ecma.matches(input, strategy: .backtracking) == expected, "/\(pattern)/ on \(input.debugDescription)")
                #expect(ecma.matches(input, strategy: .pikeVM) == expected, "/\(pattern)/ on \(input.debugDescription)")
            }
        }
    }
}

/// A small deterministic generator, so the differential test is reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
