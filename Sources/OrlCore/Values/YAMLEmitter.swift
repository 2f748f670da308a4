public import OrlJSON

/// Block-style YAML for `-o yaml` and `describe`: two-space indents, sequences indented
/// under their key (as orl's manifests are written), multi-line strings as literal
/// blocks, and a string quoted only when YAML 1.2's core schema would otherwise read
/// it as something else (`"true"`, `"1.5"`, `"null"`, `""`) or its characters need it
/// (`": "`, a leading `-` or `*`, a trailing space). What it prints parses back, with
/// orl's YAML parser, to the same value.
///
/// Beyond the core schema, YAML 1.1's booleans (`yes`, `no`, `on`, `off`, `y`, `n`) are
/// quoted too, so tools on 1.1 parsers (PyYAML, go-yaml v2) read the same strings.
public enum YAMLEmitter {
    /// The document, ending in a newline. A scalar or empty collection at the top is
    /// printed on one line.
    public static func emit(_ value: JSONValue) -> String {
        var out = ""
        switch value {
        case .object(let members) where !members.isEmpty:
            writeMapping(members, indent: 0, into: &out)
        case .array(let items) where !items.isEmpty:
            writeSequence(items, indent: 0, into: &out)
        default:
            out += inline(value, indent: 0) + "\n"
        }
        return out
    }

    private static func writeMapping(_ members: [(String, JSONValue)], indent: Int, into out: inout String) {
        let pad = String(repeating: " ", count: indent)
        for (key, value) in members {
            out += pad + scalar(key, indent: indent, allowBlock: false) + ":"
            switch value {
            case .object(let nested) where !nested.isEmpty:
                out += "\n"
                writeMapping(nested, indent: indent + 2, into: &out)
            case .array(let items) where !items.isEmpty:
                out += "\n"
                writeSequence(items, indent: indent + 2, into: &out)
            default:
                out += " " + inline(value, indent: indent + 2) + "\n"
            }
        }
    }

    private static func writeSequence(_ items: [JSONValue], indent: Int, into out: inout String) {
        let pad = String(repeating: " ", count: indent)
        for item in items {
            switch item {
            case .object(let nested) where !nested.isEmpty:
                // The first member goes on the dash's line: `- id: research`.
                var block = ""
                writeMapping(nested, indent: indent + 2, into: &block)
                out += pad + "- " + block.dropFirst(indent + 2)
            case .array(let nested) where !nested.isEmpty:
                var block = ""
                writeSequence(nested, indent: indent + 2, into: &block)
                out += pad + "- " + block.dropFirst(indent + 2)
            default:
                out += pad + "- " + inline(item, indent: indent + 2) + "\n"
            }
        }
    }

    /// A scalar or an empty collection; `indent` is where a literal block's lines go.
    private static func inline(_ value: JSONValue, indent: Int) -> String {
        switch value {
        case .null: "null"
        case .bool(let b): b ? "true" : "false"
        case .int(let i): String(i)
        case .double(let d):
            if d.isNaN {
                ".nan"
            } else if d.isInfinite {
                d < 0 ? "-.inf" : ".inf"
            } else {
                String(d)
            }
        case .string(let s): scalar(s, indent: indent, allowBlock: true)
        case .array: "[]"
        case .object: "{}"
        }
    }

    private static func scalar(_ s: String, indent: Int, allowBlock: Bool) -> String {
        if isPlainSafe(s) { return s }
        if allowBlock, let block = literalBlock(s, indent: indent) { return block }
        return doubleQuoted(s)
    }

    // MARK: Plain scalars

    /// Whether `s` can be written without quotes and read back as the same string.
    static func isPlainSafe(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, let last = s.unicodeScalars.last else { return false }
        if resolvesToNonString(s) || yaml11Booleans.contains(s) || s == "<<" { return false }
        if s.hasPrefix("---") || s.hasPrefix("...") { return false }
        // Indicators that cannot start a plain scalar; `-`, `?` and `:` may when a
        // non-space follows (`--root`, `-v`).
        switch first {
        case ",", "[", "]", "{", "}", "#", "&", "*", "!", "|", ">", "'", "\"", "%", "@", "`", " ":
            return false
        case "-", "?", ":":
            let scalars = Array(s.unicodeScalars)
            if scalars.count < 2 || scalars[1] == " " { return false }
        default: break
        }
        if last == " " || last == ":" { return false }
        var previous: Unicode.Scalar = " "
        for c in s.unicodeScalars {
            if !isPrintable(c) { return false }
            if c == "#" && previous == " " { return false }
            if c == " " && previous == ":" { return false }
            previous = c
        }
        return true
    }

    private static let yaml11Booleans: Set<String> = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
    ]

    /// Printable in a plain or literal scalar: no control characters (tab included),
    /// no DEL, C1 controls, line or paragraph separators, or byte order mark.
    private static func isPrintable(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0..<0x20, 0x7F, 0x80...0x9F, 0x2028, 0x2029, 0xFEFF: false
        default: true
        }
    }

    /// Whether a plain `s` would resolve, by the YAML 1.2 core schema, to null, a
    /// boolean or a number.
    static func resolvesToNonString(_ s: String) -> Bool {
        switch s {
        case "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE": return true
        default: break
        }
        var body = Substring(s)
        let signed = body.first == "-" || body.first == "+"
        if signed { body = body.dropFirst() }
        if [".inf", ".Inf", ".INF"].contains(body) { return true }
        if !signed, [".nan", ".NaN", ".NAN"].contains(body) { return true }
        let bytes = Array(body.utf8)
        let isDigit = { (b: UInt8) in b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
        // 0o17 and 0x1F (unsigned only).
        if !signed, bytes.count > 2, bytes[0] == UInt8(ascii: "0") {
            if bytes[1] == UInt8(ascii: "o") { return bytes[2...].allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") } }
            if bytes[1] == UInt8(ascii: "x") { return bytes[2...].allSatisfy { isDigit($0) || "abcdefABCDEF".utf8.contains($0) } }
        }
        // [0-9]+, or (\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
        var i = 0
        var mantissa = 0
        while i < bytes.count, isDigit(bytes[i]) {
            i += 1
            mantissa += 1
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            while i < bytes.count, isDigit(bytes[i]) {
                i += 1
                mantissa += 1
            }
        }
        guard mantissa > 0 else { return false }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "-") || bytes[i] == UInt8(ascii: "+") { i += 1 }
            var exponent = 0
            while i < bytes.count, isDigit(bytes[i]) {
                i += 1
                exponent += 1
            }
            guard exponent > 0 else { return false }
        }
        return i == bytes.count
    }

    // MARK: Quoted and block scalars

    /// `|`, `|-` or `|+` with the lines at `indent`, for multi-line text a literal block
    /// can hold exactly; nil otherwise.
    private static func literalBlock(_ s: String, indent: Int) -> String? {
        guard s.contains("\n"), let first = s.unicodeScalars.first, first != " ", first != "\t", first != "\n" else { return nil }
        for c in s.unicodeScalars where c != "\n" && c != "\t" && !isPrintable(c) { return nil }
        var lines = s.split(separator: "\n", omittingEmptySubsequences: false)
        // A line of only spaces or tabs would be read as (part of) the indentation.
        for line in lines where !line.isEmpty && line.allSatisfy({ $0 == " " || $0 == "\t" }) { return nil }
        var trailingNewlines = 0
        while lines.count > 1, lines.last == "" {
            lines.removeLast()
            trailingNewlines += 1
        }
        let chomping = trailingNewlines == 0 ? "-" : trailingNewlines == 1 ? "" : "+"
        let pad = String(repeating: " ", count: indent)
        var out = "|" + chomping
        for line in lines { out += line.isEmpty ? "\n" : "\n" + pad + line }
        // Keep (+) needs the extra newlines themselves; the caller ends the last line.
        if trailingNewlines > 1 { out += String(repeating: "\n", count: trailingNewlines - 1) }
        return out
    }

    static func doubleQuoted(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case let c where !isPrintable(c):
                let hex = String(c.value, radix: 16, uppercase: true)
                if c.value <= 0xFF {
                    out += "\\x" + String(repeating: "0", count: 2 - hex.count) + hex
                } else {
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                }
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }
}

extension JSONValue {
    /// The value of a parsed document, members in their order, numbers as integers
    /// when they are integers.
    public init(_ node: Node) {
        switch node.value {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .number(let n): self = n.integer.map { .int($0) } ?? .double(n.double)
        case .string(let s): self = .string(s)
        case .array(let items): self = .array(items.map(JSONValue.init))
        case .object(let members): self = .object(members.map { ($0.key, JSONValue($0.value)) })
        }
    }
}
