/// Where a value sits inside a document: `spec.steps[2].agent`.
///
/// Diagnostics carry it so that a user (and a machine reading `-o json`) can find the
/// field without counting lines; JSON Schema uses the JSON Pointer rendering.
public struct ValuePath: Sendable, Hashable, CustomStringConvertible {
    public enum Component: Sendable, Hashable {
        case key(String)
        case index(Int)
        /// The element of a keyed list whose `key` is `value`: `steps[id=draft]`. Diffs
        /// name list elements by key, so inserting one does not renumber the others.
        case element(key: String, value: String)
    }

    public var components: [Component]

    public init(_ components: [Component] = []) {
        self.components = components
    }

    public static let root = ValuePath()

    public func appending(_ key: String) -> ValuePath {
        ValuePath(components + [.key(key)])
    }

    public func appending(_ index: Int) -> ValuePath {
        ValuePath(components + [.index(index)])
    }

    public var isRoot: Bool { components.isEmpty }

    /// `spec.steps[2].agent`; keys that are not plain identifiers are quoted:
    /// `metadata.labels["app.kubernetes.io/name"]`.
    public var description: String {
        var out = ""
        for component in components {
            switch component {
            case .index(let i):
                out += "[\(i)]"
            case .element(let key, let value):
                out += "[\(key)=\(value)]"
            case .key(let k):
                if ValuePath.isPlainKey(k) {
                    if !out.isEmpty { out += "." }
                    out += k
                } else {
                    out += "[\"" + k.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"") + "\"]"
                }
            }
        }
        return out
    }

    /// RFC 6901 JSON Pointer: `/spec/steps/2/agent`.
    public var jsonPointer: String {
        var out = ""
        for component in components {
            out += "/"
            switch component {
            case .index(let i): out += String(i)
            case .element(let key, let value): out += "[\(key)=\(value)]".replacingAll("~", with: "~0").replacingAll("/", with: "~1")
            case .key(let k): out += k.replacingAll("~", with: "~0").replacingAll("/", with: "~1")
            }
        }
        return out
    }

    private static func isPlainKey(_ key: String) -> Bool {
        guard let first = key.utf8.first, !(first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9")) else {
            return false
        }
        return key.utf8.allSatisfy { c in
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
                || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
        }
    }
}

extension String {
    /// Foundation-free replacement, so the core needs no Foundation for string work.
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard contains(target) else { return self }
        return split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
