internal import Crypto

/// One text per value: sorted keys, no insignificant space, numbers in their shortest
/// form (`0.60` and `0.6` are one number). What the store keeps and what "changed"
/// means, so reformatting YAML never shows up as a change.
public enum CanonicalJSON {
    public static func encode(_ node: Node) -> String {
        var out = ""
        write(node, to: &out)
        return out
    }

    /// SHA-256 of the canonical form, in hex.
    public static func hash(_ node: Node) -> String {
        SHA256.hash(data: Array(encode(node).utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    private static func write(_ node: Node, to out: inout String) {
        switch node.value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n):
            if let i = n.integer {
                out += String(i)
            } else if n.double.isFinite {
                out += String(n.double)
            } else {
                // JSON has no infinities; YAML's .inf and .nan are kept as strings.
                write(Node(.string(n.text), at: node.location), to: &out)
            }
        case .string(let s): quote(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                write(item, to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            // Byte order of UTF-8, like every canonical JSON scheme.
            for (i, member) in members.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }).enumerated() {
                if i > 0 { out += "," }
                quote(member.key, into: &out)
                out += ":"
                write(member.value, to: &out)
            }
            out += "}"
        }
    }

    private static func quote(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20:
                let hex = String(c.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}
