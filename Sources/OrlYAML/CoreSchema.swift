import OrlCore
import OrlJSON

/// Scalar resolution by the YAML 1.2 core schema, plus the standard `!!` tags.
///
/// YAML 1.1, which many tools still follow, reads `yes`, `on`, `no` and `off` as
/// booleans and `012` as octal, so the country code `NO` silently becomes false.
/// Manifests follow YAML 1.2 instead, where only `true`/`false`, `null`/`~`/empty and
/// JSON-like numbers (plus `0o`/`0x` integers and `.inf`/`.nan`) are special; every
/// other plain scalar is a string.
///
/// Resolution works on the scalar's UTF-8 bytes straight from libyaml, so a plain
/// string costs one first-byte check before it becomes a `String`.
enum CoreSchema {
    /// The value of an untagged plain scalar.
    static func resolvePlain(_ text: UnsafeBufferPointer<UInt8>) -> Node.Value {
        guard let first = text.first else { return .null }
        switch first {
        case UInt8(ascii: "~"), UInt8(ascii: "n"), UInt8(ascii: "N"):
            if isNull(text) { return .null }
        case UInt8(ascii: "t"), UInt8(ascii: "T"), UInt8(ascii: "f"), UInt8(ascii: "F"):
            if let bool = bool(text) { return .bool(bool) }
        case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."), UInt8(ascii: "0")...UInt8(ascii: "9"):
            if let number = number(text) { return .number(number) }
        default:
            break
        }
        return .string(string(text))
    }

    /// What a scalar with an explicit tag means, or why it cannot have that tag.
    enum TaggedResult {
        case value(Node.Value)
        /// A standard tag whose value does not fit it, like `!!int abc`.
        case mismatch(String)
        /// A tag orl does not interpret, like `!Ref` or `!!binary`.
        case unsupported
    }

    /// The value of a scalar carrying `tag` (libyaml hands over the resolved tag:
    /// `tag:yaml.org,2002:int` for `!!int`). The tag decides, whatever the style.
    static func resolveTagged(_ text: UnsafeBufferPointer<UInt8>, tag: String) -> TaggedResult {
        guard tag.hasPrefix(standardTagPrefix) else {
            // `!` alone is the non-specific tag: the YAML spec makes such a scalar a string.
            return tag == "!" ? .value(.string(string(text))) : .unsupported
        }
        let shown = displayTag(tag)
        switch tag.dropFirst(standardTagPrefix.count) {
        case "str":
            return .value(.string(string(text)))
        case "int":
            if let integer = integer(text) { return .value(.number(integer)) }
            return .mismatch("\(shown) value \(Diagnostic.quoted(string(text))) is not an integer")
        case "float":
            // Integers are floats too; like JSON, the value model does not tell 1 from 1.0.
            if let number = number(text) { return .value(.number(number)) }
            return .mismatch("\(shown) value \(Diagnostic.quoted(string(text))) is not a number")
        case "bool":
            if let bool = bool(text) { return .value(.bool(bool)) }
            return .mismatch("\(shown) value \(Diagnostic.quoted(string(text))) is not true or false")
        case "null":
            if text.isEmpty || isNull(text) { return .value(.null) }
            return .mismatch("\(shown) value \(Diagnostic.quoted(string(text))) is not null")
        case "map", "seq":
            return .mismatch("tag \(shown) cannot be used on a scalar")
        default:
            return .unsupported
        }
    }

    static let standardTagPrefix = "tag:yaml.org,2002:"

    /// Whether `tag` is one of the standard tags orl interprets (on scalars or collections).
    static func isStandardTag(_ tag: String) -> Bool {
        guard tag.hasPrefix(standardTagPrefix) else { return false }
        switch tag.dropFirst(standardTagPrefix.count) {
        case "str", "int", "float", "bool", "null", "map", "seq": return true
        default: return false
        }
    }

    /// A tag the way the user wrote it: `!!int` rather than `tag:yaml.org,2002:int`.
    static func displayTag(_ tag: String) -> String {
        tag.hasPrefix(standardTagPrefix) ? "!!" + tag.dropFirst(standardTagPrefix.count) : tag
    }

    static func string(_ text: UnsafeBufferPointer<UInt8>) -> String {
        String(decoding: text, as: UTF8.self)
    }

    // MARK: - Core schema grammar

    private static func isNull(_ t: UnsafeBufferPointer<UInt8>) -> Bool {
        matches(t, "~") || matches(t, "null") || matches(t, "Null") || matches(t, "NULL")
    }

    private static func bool(_ t: UnsafeBufferPointer<UInt8>) -> Bool? {
        if matches(t, "true") || matches(t, "True") || matches(t, "TRUE") { return true }
        if matches(t, "false") || matches(t, "False") || matches(t, "FALSE") { return false }
        return nil
    }

    /// An integer or a float: `[-+]?[0-9]+`, `0o17`, `0x1F`, `1.5e3`, `.inf`, `.nan`.
    private static func number(_ t: UnsafeBufferPointer<UInt8>) -> Number? {
        if let integer = integer(t) { return integer }
        return float(t)
    }

    /// `[-+]?[0-9]+`, `0o[0-7]+` or `0x[0-9a-fA-F]+`. Integers beyond `Int` become
    /// doubles that keep their literal, so nothing is silently truncated.
    private static func integer(_ t: UnsafeBufferPointer<UInt8>) -> Number? {
        guard !t.isEmpty else { return nil }
        if t.count > 2, t[0] == UInt8(ascii: "0") {
            if t[1] == UInt8(ascii: "o") { return radixInteger(t, radix: 8) }
            if t[1] == UInt8(ascii: "x") { return radixInteger(t, radix: 16) }
        }
        var index = 0
        let negative = t[0] == UInt8(ascii: "-")
        if negative || t[0] == UInt8(ascii: "+") { index = 1 }
        guard index < t.count else { return nil }
        var value = 0
        var overflow = false
        while index < t.count {
            let digit = Int(t[index]) &- Int(UInt8(ascii: "0"))
            guard digit >= 0, digit <= 9 else { return nil }
            if !overflow {
                // Accumulate negatively so that Int.min itself still fits.
                let (shifted, o1) = value.multipliedReportingOverflow(by: 10)
                let (next, o2) = shifted.subtractingReportingOverflow(digit)
                overflow = o1 || o2
                value = next
            }
            index += 1
        }
        let text = string(t)
        if overflow { return Double(text).map { Number(double: $0, text: text) } }
        if negative { return Number(integer: value) }
        guard value != Int.min else { return Number(double: -Double(value), text: text) }
        return Number(integer: -value)
    }

    private static func radixInteger(_ t: UnsafeBufferPointer<UInt8>, radix: Int) -> Number? {
        var value = 0
        var approximate = 0.0
        var overflow = false
        for byte in t[2...] {
            guard let digit = digitValue(byte), digit < radix else { return nil }
            approximate = approximate * Double(radix) + Double(digit)
            if !overflow {
                let (shifted, o1) = value.multipliedReportingOverflow(by: radix)
                let (next, o2) = shifted.addingReportingOverflow(digit)
                overflow = o1 || o2
                value = next
            }
        }
        return overflow ? Number(double: approximate, text: string(t)) : Number(integer: value)
    }

    private static func digitValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A")) + 10
        default: nil
        }
    }

    /// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, `[-+]?.inf` and `.nan`
    /// in their three spellings each.
    private static func float(_ t: UnsafeBufferPointer<UInt8>) -> Number? {
        var index = 0
        if t.first == UInt8(ascii: "-") || t.first == UInt8(ascii: "+") { index = 1 }
        let body = UnsafeBufferPointer(rebasing: t[index...])
        if matches(body, ".inf") || matches(body, ".Inf") || matches(body, ".INF") {
            return Number(double: t[0] == UInt8(ascii: "-") ? -.infinity : .infinity, text: string(t))
        }
        if index == 0, matches(body, ".nan") || matches(body, ".NaN") || matches(body, ".NAN") {
            return Number(double: .nan, text: string(t))
        }
        var mantissaDigits = 0
        func skipDigits() -> Int {
            let start = index
            while index < t.count, t[index] >= UInt8(ascii: "0"), t[index] <= UInt8(ascii: "9") { index += 1 }
            return index - start
        }
        mantissaDigits += skipDigits()
        if index < t.count, t[index] == UInt8(ascii: ".") {
            index += 1
            mantissaDigits += skipDigits()
        }
        guard mantissaDigits > 0 else { return nil }
        if index < t.count, t[index] == UInt8(ascii: "e") || t[index] == UInt8(ascii: "E") {
            index += 1
            if index < t.count, t[index] == UInt8(ascii: "-") || t[index] == UInt8(ascii: "+") { index += 1 }
            guard skipDigits() > 0 else { return nil }
        }
        guard index == t.count else { return nil }
        let text = string(t)
        return Double(text).map { Number(double: $0, text: text) }
    }

    private static func matches(_ t: UnsafeBufferPointer<UInt8>, _ literal: StaticString) -> Bool {
        guard t.count == literal.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        return t.elementsEqual(expected)
    }
}
