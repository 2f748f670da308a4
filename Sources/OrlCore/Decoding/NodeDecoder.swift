public import OrlJSON
import Synchronization

/// Decodes `Decodable` model types from a located `Node` tree.
///
/// Manifests are checked against their kind's JSON Schema before they are decoded,
/// so a decoding failure means the schema and the model disagree; it is still
/// reported as a located diagnostic, never a crash.
public enum NodeDecoder {
    public static func decode<T: Decodable>(_ type: T.Type, from node: Node, at path: ValuePath = .root) throws(NodeDecodingError) -> T {
        do {
            return try T(from: NodeDecoding(node: node, path: path))
        } catch let error as NodeDecodingError {
            throw error
        } catch {
            throw NodeDecodingError(message: "\(error)", location: node.location, path: path)
        }
    }
}

/// Why a node could not be decoded, and where.
public struct NodeDecodingError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var location: SourceLocation
    public var path: ValuePath

    public var description: String { "\(location): \(path): \(message)" }
}

/// Lets `Located` read the position of the value being decoded.
protocol LocatingDecoder: Decoder {
    var node: Node { get }
}

struct NodeKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

struct NodeDecoding: LocatingDecoder {
    let node: Node
    /// The path of the parent, plus this node's key or index: most decoded values are
    /// scalars whose full path is only needed for an error, so it is built lazily.
    private let parentPath: ValuePath
    private let last: ValuePath.Component?

    init(node: Node, path: ValuePath) {
        self.node = node
        self.parentPath = path
        self.last = nil
    }

    init(node: Node, parent: ValuePath, _ component: ValuePath.Component) {
        self.node = node
        self.parentPath = parent
        self.last = component
    }

    var path: ValuePath {
        guard let last else { return parentPath }
        return ValuePath(parentPath.components + [last])
    }

    var codingPath: [any CodingKey] {
        path.components.map { component in
            switch component {
            case .key(let k): NodeKey(stringValue: k)
            case .index(let i): NodeKey(intValue: i)
            case .element(let key, let value): NodeKey(stringValue: "[\(key)=\(value)]")
            }
        }
    }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func mismatch(_ expected: String) -> NodeDecodingError {
        NodeDecodingError(message: "expected \(expected), got \(node.typeName)", location: node.location, path: path)
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard let members = node.members else { throw mismatch("object") }
        return KeyedDecodingContainer(KeyedNodeContainer<Key>(decoder: self, members: members))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard let elements = node.elements else { throw mismatch("array") }
        return UnkeyedNodeContainer(decoder: self, elements: elements)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { self }
}

extension NodeDecoding: SingleValueDecodingContainer {
    func decodeNil() -> Bool { node.isNull }

    func decode(_ type: Bool.Type) throws -> Bool {
        guard let b = node.bool else { throw mismatch("boolean") }
        return b
    }

    func decode(_ type: String.Type) throws -> String {
        guard let s = node.string else { throw mismatch("string") }
        return s
    }

    func decode(_ type: Double.Type) throws -> Double {
        guard let n = node.number else { throw mismatch("number") }
        return n.double
    }

    func decode(_ type: Float.Type) throws -> Float { Float(try decode(Double.self)) }

    func decode(_ type: Int.Type) throws -> Int {
        guard let i = node.number?.integer else { throw mismatch("integer") }
        return i
    }

    func decode(_ type: Int8.Type) throws -> Int8 { try decodeInteger() }
    func decode(_ type: Int16.Type) throws -> Int16 { try decodeInteger() }
    func decode(_ type: Int32.Type) throws -> Int32 { try decodeInteger() }
    func decode(_ type: Int64.Type) throws -> Int64 { try decodeInteger() }
    func decode(_ type: UInt.Type) throws -> UInt { try decodeInteger() }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decodeInteger() }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decodeInteger() }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decodeInteger() }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decodeInteger() }

    private func decodeInteger<I: FixedWidthInteger>() throws -> I {
        let i = try decode(Int.self)
        guard let exact = I(exactly: i) else {
            throw NodeDecodingError(message: "\(i) is out of range", location: node.location, path: path)
        }
        return exact
    }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        // Labels, annotations and headers are string maps on nearly every resource;
        // the generic Dictionary path decodes each entry through a keyed container.
        if T.self == [String: String].self { return unsafeBitCast(try decodeStringMap(), to: T.self) }
        // The other common leaves and lists, read directly: through `T(from:)` each
        // goes by an existential decoder, which this struct is too large to hold
        // inline, so every value cost an allocation (and a conformance lookup).
        if T.self == String.self { return unsafeBitCast(try decode(String.self), to: T.self) }
        if T.self == Located<String>.self { return unsafeBitCast(Located(try decode(String.self), at: node.location), to: T.self) }
        if T.self == [String].self { return unsafeBitCast(try decodeList { try $0.decode(String.self) }, to: T.self) }
        if T.self == [Located<String>].self {
            return unsafeBitCast(try decodeList { Located(try $0.decode(String.self), at: $0.node.location) }, to: T.self)
        }
        return try T(from: self)
    }

    private func decodeList<Element>(_ element: (NodeDecoding) throws -> Element) throws -> [Element] {
        guard let elements = node.elements else { throw mismatch("array") }
        let path = self.path
        var list: [Element] = []
        list.reserveCapacity(elements.count)
        for (index, node) in elements.enumerated() {
            list.append(try element(NodeDecoding(node: node, parent: path, .index(index))))
        }
        return list
    }

    private func decodeStringMap() throws -> [String: String] {
        guard let members = node.members else { throw mismatch("object") }
        if members.isEmpty { return [:] }
        for member in members where member.value.string == nil {
            throw NodeDecoding(node: member.value, parent: path, .key(member.key)).mismatch("string")
        }
        return StringMaps.shared(members)
    }
}

/// Labels (and selectors' `matchLabels`) repeat across a fleet: every resource of a team
/// carries the same few. A map read with exactly the members of one read before is that
/// map, shared, with its strings: one dictionary and one copy of each key and value where
/// there were thousands (the labels and annotations dictionaries were a sixth of
/// `validate`'s heap at 10,000 manifests). Maps are shared only when their keys and values
/// are the same code points, and the table stops growing at `limit` maps (a fleet of
/// unique maps pays a little time and no more memory).
enum StringMaps {
    private static let limit = 1 << 16
    private static let table = Mutex<[Int: [String: String]]>([:])

    /// The map of `members` (every value a string, checked by the caller).
    static func shared(_ members: [Node.Member]) -> [String: String] {
        let key = hash(members)
        if let known = table.withLock({ $0[key] }), holds(known, exactly: members) { return known }
        var map = [String: String](minimumCapacity: members.count)
        for member in members { map[member.key] = member.value.string! }
        table.withLock { table in
            if table.count < limit { table[key] = map }
        }
        return map
    }

    /// Independent of the members' order, so that a map has one hash however it is written.
    private static func hash(_ members: [Node.Member]) -> Int {
        var sum = members.count
        for member in members {
            var hasher = Hasher()
            combine(member.key, into: &hasher)
            hasher.combine(0xFF as UInt8)
            combine(member.value.string!, into: &hasher)
            sum &+= hasher.finalize()
        }
        return sum
    }

    private static func combine(_ string: String, into hasher: inout Hasher) {
        var string = string
        string.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Whether `map` is what `members` make: the same number of entries, each member's key
    /// and value among them with the same code points.
    private static func holds(_ map: [String: String], exactly members: [Node.Member]) -> Bool {
        guard map.count == members.count else { return false }
        for member in members {
            guard let index = map.index(forKey: member.key) else { return false }
            let (key, value) = map[index]
            guard sameCodePoints(key, member.key), sameCodePoints(value, member.value.string!) else { return false }
        }
        return true
    }

    private static func sameCodePoints(_ a: String, _ b: String) -> Bool {
        var (a, b) = (a, b)
        return a.withUTF8 { x in b.withUTF8 { y in x.elementsEqual(y) } }
    }
}

struct KeyedNodeContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: NodeDecoding
    let members: [Node.Member]
    /// Built once for all the fields of this object.
    let path: ValuePath

    init(decoder: NodeDecoding, members: [Node.Member]) {
        self.decoder = decoder
        self.members = members
        self.path = decoder.path
    }

    var codingPath: [any CodingKey] { decoder.codingPath }
    var allKeys: [Key] { members.compactMap { Key(stringValue: $0.key) } }

    func contains(_ key: Key) -> Bool { member(key) != nil }

    private func member(_ key: Key) -> Node.Member? {
        let name = key.stringValue
        for m in members where m.key == name { return m }
        return nil
    }

    private func child(_ key: Key) throws -> NodeDecoding {
        guard let m = member(key) else {
            throw NodeDecodingError(
                message: "missing required field \"\(key.stringValue)\"", location: decoder.node.location, path: path)
        }
        return NodeDecoding(node: m.value, parent: path, .key(key.stringValue))
    }

    func decodeNil(forKey key: Key) throws -> Bool { member(key)?.value.isNull ?? true }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try child(key).decode(type) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try child(key).decode(type) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try child(key).decode(type) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try child(key).decode(type) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try child(key).decode(type) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try child(key).decode(type) }

    // The protocol's default decodeIfPresent looks the key up three times (contains,
    // decodeNil, decode); optional fields are most fields, so look once.
    private func present(_ key: Key) -> NodeDecoding? {
        guard let m = member(key), !m.value.isNull else { return nil }
        return NodeDecoding(node: m.value, parent: path, .key(key.stringValue))
    }

    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? { try present(key)?.decode(type) }
    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? { try present(key)?.decode(type) }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? { try present(key)?.decode(type) }
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? { try present(key)?.decode(type) }
    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? { try present(key)?.decode(type) }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
        -> KeyedDecodingContainer<NestedKey>
    {
        try child(key).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try child(key).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { decoder }
    func superDecoder(forKey key: Key) throws -> any Decoder { try child(key) }
}

struct UnkeyedNodeContainer: UnkeyedDecodingContainer {
    let decoder: NodeDecoding
    let elements: [Node]
    let path: ValuePath
    var currentIndex = 0

    init(decoder: NodeDecoding, elements: [Node]) {
        self.decoder = decoder
        self.elements = elements
        self.path = decoder.path
    }

    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    private mutating func next() throws -> NodeDecoding {
        guard !isAtEnd else {
            throw NodeDecodingError(message: "unexpected end of array", location: decoder.node.location, path: path)
        }
        defer { currentIndex += 1 }
        return NodeDecoding(node: elements[currentIndex], parent: path, .index(currentIndex))
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, elements[currentIndex].isNull else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try next().decode(type) }
    mutating func decode(_ type: String.Type) throws -> String { try next().decode(type) }
    mutating func decode(_ type: Double.Type) throws -> Double { try next().decode(type) }
    mutating func decode(_ type: Int.Type) throws -> Int { try next().decode(type) }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next().decode(type) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next().container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
    mutating func superDecoder() throws -> any Decoder { try next() }
}
