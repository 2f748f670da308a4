#if canImport(Glibc)
    import Glibc
#endif

/// A located value: the parsed form of a YAML or JSON document in which every value
/// (and every mapping key) remembers where it came from.
///
/// Parsers (YAML, JSON) produce it; everything downstream (schema validation,
/// decoding into resources, analysis) reads it, so every diagnostic can point at a
/// file, line and column.
public struct Node: Sendable {
    /// Not `indirect`: arrays and members already live on the heap, and a box per
    /// value was one more allocation per node. Only the rare, wide number is boxed, so
    /// that a value stays as small as a string.
    public enum Value: Sendable {
        case null
        case bool(Bool)
        indirect case number(Number)
        case string(String)
        case array([Node])
        case object([Member])
    }

    /// One entry of a mapping, in source order. Keys are strings: the manifest formats
    /// only use scalar keys and parsers reject the rest.
    public struct Member: Sendable {
        public var key: String
        public var keyLocation: SourceLocation
        public var value: Node

        public init(key: String, keyLocation: SourceLocation, value: Node) {
            self.key = key
            self.keyLocation = keyLocation
            self.value = value
        }
    }

    public var value: Value
    public var location: SourceLocation

    public init(_ value: Value, at location: SourceLocation) {
        self.value = value
        self.location = location
    }
}

extension Node {
    /// The member's value for `key` (the first one: parsers report duplicates).
    public subscript(key: String) -> Node? {
        guard case .object(let members) = value else { return nil }
        for member in members where member.key == key { return member.value }
        return nil
    }

    /// The member itself, for the location of its key.
    public func member(_ key: String) -> Member? {
        guard case .object(let members) = value else { return nil }
        for member in members where member.key == key { return member }
        return nil
    }

    public var members: [Member]? {
        if case .object(let m) = value { return m }
        return nil
    }

    public var elements: [Node]? {
        if case .array(let a) = value { return a }
        return nil
    }

    public var string: String? {
        if case .string(let s) = value { return s }
        return nil
    }

    public var bool: Bool? {
        if case .bool(let b) = value { return b }
        return nil
    }

    public var number: Number? {
        if case .number(let n) = value { return n }
        return nil
    }

    public var isNull: Bool {
        if case .null = value { return true }
        return false
    }

    /// The JSON type name, as JSON Schema and error messages use it.
    public var typeName: String {
        switch value {
        case .null: "null"
        case .bool: "boolean"
        case .number(let n): n.isInteger ? "integer" : "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

extension Node: Equatable {
    /// JSON equality (what `const`, `enum` and `uniqueItems` mean): locations and
    /// member order do not matter; `1` equals `1.0`; strings are equal when their
    /// code points are (not merely canonically equivalent, as Swift's `==` has it).
    public static func == (lhs: Node, rhs: Node) -> Bool {
        lhs.value == rhs.value
    }
}

extension Node.Value: Equatable {
    public static func == (lhs: Node.Value, rhs: Node.Value) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.number(let a), .number(let b)): return a == b
        case (.string(let a), .string(let b)): return a.hasSameCodePoints(as: b)
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            guard a.count == b.count else { return false }
            for member in a {
                guard let other = b.first(where: { $0.key.hasSameCodePoints(as: member.key) }), other.value == member.value
                else {
                    return false
                }
            }
            return true
        default: return false
        }
    }
}

extension String {
    /// Code-point equality, as JSON compares strings. Swift's `==` treats canonically
    /// equivalent strings (precomposed `é` and `e` + combining accent) as equal.
    func hasSameCodePoints(as other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        // Native strings are contiguous UTF-8: compare the buffers directly, which is
        // much faster than iterating the views (schema validation calls this a lot).
        let contiguous = utf8.withContiguousStorageIfAvailable { mine in
            other.utf8.withContiguousStorageIfAvailable { theirs in
                // memcmp, not `elementsEqual`, which compares byte by byte.
                mine.isEmpty || memcmp(mine.baseAddress!, theirs.baseAddress!, mine.count) == 0
            }
        }
        return (contiguous ?? nil) ?? utf8.elementsEqual(other.utf8)
    }
}
