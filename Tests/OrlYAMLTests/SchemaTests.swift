import OrlCore
import OrlJSON
import OrlYAML
import Testing

/// The YAML 1.2 core schema, not YAML 1.1: only JSON-like literals are special.
@Suite struct SchemaTests {
    static let table: [(String, Node.Value)] = [
        // Null.
        ("~", .null), ("null", .null), ("Null", .null), ("NULL", .null), ("", .null),
        ("nULL", .string("nULL")), ("nil", .string("nil")),
        // Booleans: only true and false, in three spellings.
        ("true", .bool(true)), ("True", .bool(true)), ("TRUE", .bool(true)),
        ("false", .bool(false)), ("False", .bool(false)), ("FALSE", .bool(false)),
        ("yes", .string("yes")), ("no", .string("no")), ("on", .string("on")), ("off", .string("off")),
        ("y", .string("y")), ("NO", .string("NO")), ("tRUE", .string("tRUE")),
        // Integers.
        ("0", .number(Number(integer: 0))), ("42", .number(Number(integer: 42))),
        ("-17", .number(Number(integer: -17))), ("+5", .number(Number(integer: 5))),
        ("012", .number(Number(integer: 12))), ("0o17", .number(Number(integer: 15))),
        ("0x1F", .number(Number(integer: 31))), ("0xff", .number(Number(integer: 255))),
        ("-9223372036854775808", .number(Number(integer: Int.min))),
        ("0o", .string("0o")), ("0x", .string("0x")), ("0o8", .string("0o8")), ("-0x1", .string("-0x1")),
        ("0b101", .string("0b101")), ("1_000", .string("1_000")),
        // Floats.
        ("1.5", .number(Number(double: 1.5))), ("-0.25", .number(Number(double: -0.25))),
        (".5", .number(Number(double: 0.5))), ("1.", .number(Number(double: 1))),
        ("1e3", .number(Number(double: 1000))), ("2.5E-1", .number(Number(double: 0.25))),
        (".inf", .number(Number(double: .infinity))), ("-.Inf", .number(Number(double: -.infinity))),
        ("+.INF", .number(Number(double: .infinity))),
        ("1e", .string("1e")), (".", .string(".")), ("-x", .string("-x")), ("1.2.3", .string("1.2.3")),
        ("inf", .string("inf")), ("-.nan", .string("-.nan")), ("1,5", .string("1,5")),
        // Strings that merely start like something else.
        ("1.10-alpine", .string("1.10-alpine")), ("~/work", .string("~/work")),
        ("nullable", .string("nullable")), ("2024-01-01", .string("2024-01-01")),
        ("claude-sonnet", .string("claude-sonnet")),
    ]

    @Test(arguments: table)
    func plainScalarsResolveByTheCoreSchema(text: String, expected: Node.Value) {
        let value = root("v: \(text)\n")?["v"]?.value
        #expect(value == expected, "\(text)")
    }

    @Test(arguments: [".nan", ".NaN", ".NAN"])
    func notANumber(text: String) throws {
        let number = try #require(root("v: \(text)")?["v"]?.number)
        #expect(number.double.isNaN)
        #expect(number.text == text)
    }

    @Test func quotedScalarsAreAlwaysStrings() throws {
        let doc = try #require(root("a: \"true\"\nb: '42'\nc: \"null\"\nd: ''\n"))
        #expect(doc["a"]?.string == "true")
        #expect(doc["b"]?.string == "42")
        #expect(doc["c"]?.string == "null")
        #expect(doc["d"]?.string == "")
        #expect(root("a: |\n  12\n")?["a"]?.string == "12\n")
    }

    @Test func numbersKeepTheirLiteral() throws {
        let doc = try #require(root("a: 1.50\nb: 99999999999999999999\nc: 0x1FFFFFFFFFFFFFFFF\n"))
        #expect(doc["a"]?.number?.text == "1.50")
        let big = try #require(doc["b"]?.number)
        #expect(big.integer == nil)
        #expect(big.text == "99999999999999999999")
        #expect(big.double == 1e20)
        #expect(doc["c"]?.number?.text == "0x1FFFFFFFFFFFFFFFF")
        #expect(doc["c"]?.number?.double == 36893488147419103231.0)
    }

    @Test func keysAreTheirText() throws {
        let doc = try #require(root("1: a\ntrue: b\n~: c\n\"q\": d\n0x10: e\n"))
        #expect(doc.members?.map(\.key) == ["1", "true", "~", "q", "0x10"])
    }

    @Test func standardTagsDecide() throws {
        let doc = try #require(
            root(
                """
                a: !!str 123
                b: !!int "42"
                c: !!float 1
                d: !!bool "true"
                e: !!null ""
                f: !!str
                g: ! 12
                h: !!map {x: 1}
                i: !!seq [1]
                !!str k: v
                """))
        #expect(doc["a"]?.string == "123")
        #expect(doc["b"]?.number == Number(integer: 42))
        #expect(doc["c"]?.number?.double == 1)
        #expect(doc["d"]?.bool == true)
        #expect(doc["e"]?.isNull == true)
        #expect(doc["f"]?.string == "")
        #expect(doc["g"]?.string == "12")
        #expect(doc[path: "h", "x"]?.number == Number(integer: 1))
        #expect(doc["i"]?.elements?.count == 1)
        #expect(doc["k"]?.string == "v")
    }

    @Test func aStandardTagOnAValueThatDoesNotFitIsAnError() {
        let parsed = parse("a: 1\nb: !!int twelve\nc: !!bool yes\nd: !!str [1]\n")
        #expect(parsed.documents.isEmpty)
        #expect(parsed.diagnostics.map(\.code) == [.yamlSyntax, .yamlSyntax, .yamlSyntax])
        #expect(parsed.diagnostics.map(\.location) == [at(2, 4), at(3, 4), at(4, 4)])
        #expect(parsed.diagnostics.first?.message == #"!!int value "twelve" is not an integer; remove the tag or correct the value"#)
        #expect(parsed.diagnostics.last?.message == "tag !!str cannot be used on a sequence; remove the tag")
    }

    @Test func otherTagsAreUnsupported() {
        let parsed = parse("a: !Ref other\nb: !!binary aGk=\nc: !custom {x: 1}\nd: ok\n")
        #expect(parsed.documents.isEmpty)
        #expect(parsed.diagnostics.map(\.code) == [.yamlUnsupported, .yamlUnsupported, .yamlUnsupported])
        #expect(parsed.diagnostics.map(\.location) == [at(1, 4), at(2, 4), at(3, 4)])
        #expect(
            parsed.diagnostics.first?.message
                == "tag !Ref is not supported; manifests may use only the standard tags "
                + "!!str, !!int, !!float, !!bool, !!null, !!map and !!seq: remove the tag"
        )
        #expect(parsed.diagnostics[1].message.hasPrefix("tag !!binary is not supported"))
    }
}
