import Synchronization

/// The compiled form of a schema and everything it references: a flat table of
/// subschemas that refer to each other by index, so `$ref` cycles are plain integers
/// and evaluation never looks anything up by URI.
struct SchemaProgram: Sendable {
    var schemas: [CompiledSchema]
    var resources: [CompiledResource]
    var root: Int
}

/// A schema resource (a document root or a subschema with `$id`): the unit of the
/// dynamic scope that `$dynamicRef` searches.
struct CompiledResource: Sendable {
    var uri: String
    /// `$dynamicAnchor` name → compiled subschema.
    var dynamicAnchors: [String: Int]
}

struct CompiledSchema: Sendable {
    enum Body: Sendable {
        /// A boolean schema, or an object schema with no assertions (`{}` is `true`).
        case always(Bool)
        case keywords([Keyword])
    }

    var body: Body
    var resource: Int
    /// The absolute location of this subschema, `uri#/json/pointer`, for reports.
    var location: String
    /// Whether the schema has `unevaluatedProperties`/`unevaluatedItems` and so needs
    /// the annotations of its in-place applicators.
    var usesAnnotations: Bool

    static let placeholder = CompiledSchema(body: .always(true), resource: 0, location: "", usesAnnotations: false)
}

/// One assertion or applicator, with its operands decoded and checked. Related
/// keywords are fused where the specification makes them interdependent
/// (`properties` + `patternProperties` + `additionalProperties`, `prefixItems` +
/// `items`, `contains` + `minContains` + `maxContains`), so one pass over the
/// instance evaluates them together.
///
/// Indirect: evaluation copies the keyword it applies, and a copy of this many-payload
/// enum went through its value witness, retaining every operand (a twentieth of
/// `validate`); boxed, a copy is one retain.
indirect enum Keyword: Sendable {
    case type(JSONTypes)
    case constant(Node)
    case enumeration(Enumeration)
    /// `exact` is the divisor as a decimal, when its literal can be read as one.
    case multipleOf(Number, exact: ExactDecimal?)
    case minimum(Number)
    case exclusiveMinimum(Number)
    case maximum(Number)
    case exclusiveMaximum(Number)
    case minLength(Int)
    case maxLength(Int)
    case pattern(Pattern)
    case minItems(Int)
    case maxItems(Int)
    case uniqueItems
    case minProperties(Int)
    case maxProperties(Int)
    case required([String])
    case dependentRequired([(property: String, required: [String])])
    case items(prefix: [Int], rest: Int?)
    case contains(Int, min: Int, max: Int?)
    case properties(PropertyRules)
    case dependentSchemas([(property: String, schema: Int)])
    case propertyNames(Int)
    case allOf([Int])
    case anyOf([Int])
    case oneOf([Int])
    case not(Int)
    case conditional(if: Int, then: Int?, else: Int?)
    case ref(Int, reference: String)
    /// `anchor` is set when the reference is dynamic (its static target carries a
    /// matching `$dynamicAnchor`); otherwise it behaves exactly like `$ref`.
    case dynamicRef(Int, anchor: String?, reference: String)
    case unevaluatedItems(Int)
    case unevaluatedProperties(Int)
}

/// The JSON types a `type` keyword allows.
struct JSONTypes: OptionSet, Sendable {
    let rawValue: UInt8
    static let null = JSONTypes(rawValue: 1 << 0)
    static let boolean = JSONTypes(rawValue: 1 << 1)
    static let integer = JSONTypes(rawValue: 1 << 2)
    static let number = JSONTypes(rawValue: 1 << 3)
    static let string = JSONTypes(rawValue: 1 << 4)
    static let array = JSONTypes(rawValue: 1 << 5)
    static let object = JSONTypes(rawValue: 1 << 6)

    static let names: [(String, JSONTypes)] = [
        ("null", .null), ("boolean", .boolean), ("integer", .integer), ("number", .number), ("string", .string),
        ("array", .array), ("object", .object),
    ]

    func admits(_ node: Node) -> Bool {
        switch node.value {
        case .null: contains(.null)
        case .bool: contains(.boolean)
        case .number(let n): contains(.number) || (contains(.integer) && n.isWhole)
        case .string: contains(.string)
        case .array: contains(.array)
        case .object: contains(.object)
        }
    }

    /// `string`, `string or null`, `integer, string or null`.
    var description: String {
        let listed = Self.names.filter { contains($0.1) && !($0.1 == .integer && contains(.number)) }.map(\.0)
        guard listed.count > 1 else { return listed.first ?? "nothing" }
        return listed.dropLast().joined(separator: ", ") + " or " + listed.last!
    }
}

extension Number {
    /// Mathematically an integer (JSON Schema's `integer`), even when too large for `Int`.
    var isWhole: Bool {
        integer != nil || (double.isFinite && double == double.rounded())
    }

    /// Numeric order, exact when both sides are `Int`.
    static func compare(_ a: Number, _ b: Number) -> Int {
        if let x = a.integer, let y = b.integer { return x < y ? -1 : x == y ? 0 : 1 }
        return a.double < b.double ? -1 : a.double == b.double ? 0 : 1
    }
}

/// `enum` values, with a hashed fast path for the common all-strings case. (Swift's
/// string hashing is canonical-equivalence based, so a hit is confirmed by code points.)
struct Enumeration: Sendable {
    var values: [Node]
    var strings: Set<String>?

    init(_ values: [Node]) {
        self.values = values
        let strings = values.compactMap(\.string)
        self.strings = strings.count == values.count ? Set(strings) : nil
    }

    func contains(_ node: Node) -> Bool {
        if let strings {
            guard case .string(let s) = node.value, strings.contains(s) else { return false }
            return values.contains { $0.string?.hasSameCodePoints(as: s) == true }
        }
        return values.contains(node)
    }
}

/// `properties`, `patternProperties` and `additionalProperties` of one schema:
/// `additionalProperties` applies to exactly the members the other two do not match.
struct PropertyRules: Sendable {
    var properties: [String: Int]
    var patterns: [(pattern: Pattern, schema: Int)]
    var additional: Int?
}

/// A compiled `pattern` / `patternProperties` regular expression: an `ECMARegex`,
/// or Swift `Regex` for the constructs `ECMARegex` leaves out (see there).
///
/// `Regex` is not declared `Sendable`, but a compiled regex is immutable: its lazily
/// lowered program is published with an atomic compare-and-swap inside the standard
/// library, and the compiler forces that lowering up front anyway (see `init`).
struct Pattern: @unchecked Sendable {
    let source: String
    private let engine: Engine
    /// Label keys and values, names and URLs repeat across a fleet: each short string's
    /// answer is kept (a label key's backtracking match was a twentieth of `validate`).
    private let memo = PatternMemo()

    private enum Engine {
        case ecma(ECMARegex)
        /// Best effort: Swift's syntax and semantics differ from ECMA-262's in places
        /// (its `\d` and `\w` match non-ASCII digits and letters, `$` matches before a
        /// final newline), but only patterns using the constructs above get here.
        case swift(Regex<AnyRegexOutput>)
    }

    init(_ source: String) throws {
        self.source = source
        do {
            engine = .ecma(try ECMARegex(source))
        } catch .invalid(let error) {
            throw error
        } catch .unsupported {
            // ECMA-262 (with the `u` flag) matches by code point, so the regex does too,
            // rather than Swift's default of grapheme clusters.
            engine = .swift(try Regex(source).matchingSemantics(.unicodeScalar))
            _ = matches("")
        }
    }

    /// Unanchored search, as ECMA-262 `RegExp.prototype.test`.
    func matches(_ string: String) -> Bool {
        guard string.utf8.count <= PatternMemo.maxLength else { return search(string) }
        let key = PatternMemo.Key(string)
        if let known = memo.answer(key) { return known }
        let answer = search(string)
        memo.remember(key, answer)
        return answer
    }

    private func search(_ string: String) -> Bool {
        switch engine {
        case .ecma(let regex): regex.matches(string)
        case .swift(let regex): (try? regex.firstMatch(in: string)) != nil
        }
    }
}

/// A pattern's answers for short strings, shared by the threads that read files, up to
/// `capacity` strings (then it answers what it knows and stops learning).
final class PatternMemo: Sendable {
    static let maxLength = 128
    /// What repeats (label keys and values, the names references use) shows up early
    /// and is far fewer than this; the rest (each resource's own name) fills the table
    /// and is never asked again. At 4,096 the tables were 1.3 MB of `validate`'s peak.
    static let capacity = 1024

    /// A string compared by its code points, as patterns match them (Swift's `==` would
    /// equate canonically equivalent spellings, which a pattern may tell apart).
    struct Key: Hashable, Sendable {
        let string: String

        init(_ string: String) { self.string = string }

        static func == (lhs: Key, rhs: Key) -> Bool { lhs.string.hasSameCodePoints(as: rhs.string) }

        func hash(into hasher: inout Hasher) {
            var string = string
            string.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        }
    }

    private let table = Mutex<[Key: Bool]>([:])

    func answer(_ key: Key) -> Bool? { table.withLock { $0[key] } }

    func remember(_ key: Key, _ answer: Bool) {
        table.withLock { table in
            if table.count < Self.capacity { table[key] = answer }
        }
    }
}

/// A decimal literal as an exact integer significand and power of ten, for
/// `multipleOf`: `0.01` is `1 × 10⁻²`, which binary floating point cannot represent.
struct ExactDecimal: Sendable {
    var significand: Int
    var exponent: Int

    /// Reads a JSON-style number literal; `nil` for other spellings (YAML's `0x10`,
    /// `.inf`) or when the digits do not fit in `Int`.
    init?(_ text: String) {
        var significand = 0
        var exponent = 0
        var negative = false
        var sawDigit = false
        var inFraction = false
        var utf8 = Substring(text).utf8[...]
        if utf8.first == UInt8(ascii: "-") {
            negative = true
            utf8 = utf8.dropFirst()
        } else if utf8.first == UInt8(ascii: "+") {
            utf8 = utf8.dropFirst()
        }
        while let byte = utf8.first, byte != UInt8(ascii: "e"), byte != UInt8(ascii: "E") {
            utf8 = utf8.dropFirst()
            if byte == UInt8(ascii: "."), !inFraction {
                inFraction = true
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            sawDigit = true
            let (times10, overflow1) = significand.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            significand = sum
            if inFraction { exponent -= 1 }
        }
        guard sawDigit else { return nil }
        if !utf8.isEmpty {
            guard let power = Int(String(decoding: utf8.dropFirst(), as: UTF8.self)), abs(power) < 10_000 else { return nil }
            exponent += power
        }
        self.significand = negative ? -significand : significand
        self.exponent = exponent
    }

    /// Whether `self` is an integer multiple of `divisor`, or `nil` when the scaled
    /// integers overflow (the caller then falls back to floating point).
    func isMultiple(of divisor: ExactDecimal) -> Bool? {
        guard divisor.significand != 0 else { return nil }
        let common = min(exponent, divisor.exponent)
        guard let a = Self.scale(significand, by: exponent - common),
            let b = Self.scale(divisor.significand, by: divisor.exponent - common)
        else { return nil }
        return a % b == 0
    }

    private static func scale(_ value: Int, by power: Int) -> Int? {
        var result = value
        for _ in 0..<power {
            let (next, overflow) = result.multipliedReportingOverflow(by: 10)
            if overflow { return nil }
            result = next
        }
        return result
    }
}

/// A set of member or element indices of one instance: what `unevaluatedProperties`
/// and `unevaluatedItems` consult. `all` records "every index" without enumerating.
struct Marks {
    var all = false
    private var words: [UInt64] = []

    mutating func insert(_ index: Int) {
        if all { return }
        let word = index >> 6
        if word >= words.count { words.append(contentsOf: repeatElement(0, count: word - words.count + 1)) }
        words[word] |= 1 << UInt64(index & 63)
    }

    func contains(_ index: Int) -> Bool {
        if all { return true }
        let word = index >> 6
        return word < words.count && words[word] & (1 << UInt64(index & 63)) != 0
    }

    mutating func formUnion(_ other: Marks) {
        if all { return }
        if other.all {
            all = true
            words = []
            return
        }
        if other.words.count > words.count {
            words.append(contentsOf: repeatElement(0, count: other.words.count - words.count))
        }
        for (index, word) in other.words.enumerated() { words[index] |= word }
    }
}

/// What in-place applicators evaluated successfully, for the unevaluated keywords.
struct Annotations {
    var properties = Marks()
    var items = Marks()

    mutating func formUnion(_ other: Annotations) {
        properties.formUnion(other.properties)
        items.formUnion(other.items)
    }
}
