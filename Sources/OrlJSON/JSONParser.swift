/// A problem that stops a JSON document from being read, at the byte where it was found.
public struct JSONSyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public var location: SourceLocation
    /// A second place the message refers to: the first occurrence of a duplicate key.
    public var relatedLocation: SourceLocation?

    public init(_ message: String, at location: SourceLocation, related: SourceLocation? = nil) {
        self.message = message
        self.location = location
        self.relatedLocation = related
    }

    public var description: String { "\(location): \(message)" }
}

/// A strict RFC 8259 JSON parser producing located `Node` trees.
///
/// It is used for JSON Schema documents, which must be unambiguous, so it accepts
/// nothing beyond the RFC (no comments, trailing commas, NaN, or lone surrogates) and
/// rejects duplicate keys, naming both occurrences. Lines and columns are 1-based;
/// columns count Unicode scalars, as editors do.
public enum JSONParser {
    /// Nesting deeper than this is rejected rather than risking the stack.
    public static let maximumDepth = 512

    public static func parse(_ text: String, file: String) throws(JSONSyntaxError) -> Node {
        var text = text
        // A native Swift string is valid UTF-8 and (after this call) contiguous.
        return try text.withUTF8 { bytes in Reader.parse(bytes, file: file) }.get()
    }

    /// Parses raw bytes, which must be valid UTF-8.
    public static func parse(bytes: [UInt8], file: String) throws(JSONSyntaxError) -> Node {
        if let offset = firstInvalidUTF8Offset(bytes) {
            let location = bytes.withUnsafeBufferPointer { buffer in
                Reader(bytes: buffer, file: file).location(ofOffset: offset)
            }
            throw JSONSyntaxError("invalid UTF-8 byte sequence", at: location)
        }
        return try bytes.withUnsafeBufferPointer { buffer in Reader.parse(buffer, file: file) }.get()
    }

    /// Parses raw bytes as `parse(bytes:file:)` does (it throws where that throws), but
    /// of a document that is an object keeps only the top-level members named in `keeping`:
    /// the others are checked as strictly and skipped, not built. For a large document of
    /// which a few members are read, such as a model's answer read for its usage.
    public static func parse(bytes: [UInt8], file: String, keeping: Set<String>) throws(JSONSyntaxError) -> Node {
        if let offset = firstInvalidUTF8Offset(bytes) {
            let location = bytes.withUnsafeBufferPointer { buffer in
                Reader(bytes: buffer, file: file).location(ofOffset: offset)
            }
            throw JSONSyntaxError("invalid UTF-8 byte sequence", at: location)
        }
        return try bytes.withUnsafeBufferPointer { buffer in Reader.parse(buffer, file: file, keeping: keeping) }.get()
    }

    /// The byte offset of the first byte that starts no valid UTF-8 sequence, nil when
    /// every byte is valid. ASCII, most of any JSON, is skipped a word at a time; each
    /// other scalar is decoded from its first byte, as a byte-by-byte pass would decode it.
    static func firstInvalidUTF8Offset(_ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBufferPointer { buffer -> Int? in
            guard let base = buffer.baseAddress else { return nil }
            let count = buffer.count
            let raw = UnsafeRawPointer(base)
            var offset = 0
            while true {
                while offset + 8 <= count, raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                    offset += 8
                }
                while offset < count, buffer[offset] < 0x80 { offset += 1 }
                guard offset < count else { return nil }
                var iterator = buffer[offset...].makeIterator()
                var parser = Unicode.UTF8.ForwardParser()
                switch parser.parseScalar(from: &iterator) {
                case .valid(let scalar): offset += scalar.count
                case .error: return offset
                case .emptyInput: return nil
                }
            }
        }
    }
}

extension JSONParser {
    /// A cursor over the UTF-8 bytes. Locations are derived from the byte offset, the
    /// offset of the current line's start, and the number of UTF-8 continuation bytes
    /// seen on the current line (only strings may hold non-ASCII, and strings cannot
    /// span lines, so string scanning keeps that count exact in O(1) per byte).
    fileprivate struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        let file: String
        let origin: SourceLocation
        var offset = 0
        var line = 1
        var lineStart = 0
        var lineContinuationBytes = 0
        var depth = 0

        init(bytes: UnsafeBufferPointer<UInt8>, file: String) {
            self.bytes = bytes
            self.file = file
            self.origin = .file(file)
        }

        var here: SourceLocation {
            origin.at(line: line, column: offset - lineStart - lineContinuationBytes + 1)
        }

        /// The location of an arbitrary offset, computed by rescanning; only for errors.
        func location(ofOffset target: Int) -> SourceLocation {
            var line = 1
            var column = 1
            var index = 0
            while index < target && index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\n") {
                    line += 1
                    column = 1
                } else if byte & 0xC0 != 0x80 {
                    column += 1
                }
                index += 1
            }
            return SourceLocation(file: file, line: line, column: column)
        }

        /// A `Result` rather than a typed throw, because `withUTF8` only rethrows untyped errors.
        static func parse(_ bytes: UnsafeBufferPointer<UInt8>, file: String) -> Result<Node, JSONSyntaxError> {
            var reader = Reader(bytes: bytes, file: file)
            do {
                return .success(try reader.parseDocument())
            } catch {
                return .failure(error)
            }
        }

        static func parse(_ bytes: UnsafeBufferPointer<UInt8>, file: String, keeping: Set<String>) -> Result<Node, JSONSyntaxError> {
            var reader = Reader(bytes: bytes, file: file)
            do {
                return .success(try reader.parseDocument(keeping: keeping))
            } catch {
                return .failure(error)
            }
        }

        func error(_ message: String) -> JSONSyntaxError {
            JSONSyntaxError(message, at: here)
        }

        mutating func parseDocument() throws(JSONSyntaxError) -> Node {
            skipWhitespace()
            guard offset < bytes.count else { throw error("empty document: expected a JSON value") }
            let value = try parseValue()
            skipWhitespace()
            guard offset == bytes.count else {
                throw error("unexpected \(describeCurrent()) after the JSON value")
            }
            return value
        }

        mutating func parseDocument(keeping: Set<String>) throws(JSONSyntaxError) -> Node {
            skipWhitespace()
            guard offset < bytes.count else { throw error("empty document: expected a JSON value") }
            let value = bytes[offset] == UInt8(ascii: "{") ? try parseObject(at: here, keeping: keeping) : try parseValue()
            skipWhitespace()
            guard offset == bytes.count else {
                throw error("unexpected \(describeCurrent()) after the JSON value")
            }
            return value
        }

        mutating func skipWhitespace() {
            while offset < bytes.count {
                switch bytes[offset] {
                case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                    offset += 1
                case UInt8(ascii: "\n"):
                    offset += 1
                    line += 1
                    lineStart = offset
                    lineContinuationBytes = 0
                default:
                    return
                }
            }
        }

        /// How the byte at the cursor reads in a message: `'}'`, `U+00E9`, `end of input`.
        func describeCurrent() -> String {
            guard offset < bytes.count else { return "end of input" }
            let byte = bytes[offset]
            if byte >= 0x21 && byte < 0x7F { return "'\(Character(Unicode.Scalar(byte)))'" }
            if byte < 0x80 { return "character U+" + hex(UInt32(byte)) }
            var iterator = bytes[offset...].makeIterator()
            var parser = Unicode.UTF8.ForwardParser()
            if case .valid(let encoded) = parser.parseScalar(from: &iterator) {
                return "character U+" + hex(Unicode.UTF8.decode(encoded).value)
            }
            return "byte 0x" + hex(UInt32(byte))
        }

        func hex(_ value: UInt32) -> String {
            let digits = String(value, radix: 16, uppercase: true)
            return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
        }

        mutating func parseValue() throws(JSONSyntaxError) -> Node {
            let location = here
            switch bytes[offset] {
            case UInt8(ascii: "{"): return try parseObject(at: location)
            case UInt8(ascii: "["): return try parseArray(at: location)
            case UInt8(ascii: "\""): return Node(.string(try parseString()), at: location)
            case UInt8(ascii: "t"):
                try expectLiteral("true")
                return Node(.bool(true), at: location)
            case UInt8(ascii: "f"):
                try expectLiteral("false")
                return Node(.bool(false), at: location)
            case UInt8(ascii: "n"):
                try expectLiteral("null")
                return Node(.null, at: location)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return Node(.number(try parseNumber()), at: location)
            default:
                throw error("unexpected \(describeCurrent()): expected a JSON value")
            }
        }

        mutating func expectLiteral(_ literal: StaticString) throws(JSONSyntaxError) {
            let start = offset
            let utf8 = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
            for expected in utf8 {
                guard offset < bytes.count, bytes[offset] == expected else {
                    offset = start
                    throw error("invalid literal: expected '\(literal)'")
                }
                offset += 1
            }
            // `trueish` must not read as `true` followed by garbage in a confusing way.
            if offset < bytes.count, isIdentifierByte(bytes[offset]) {
                offset = start
                throw error("invalid literal: expected '\(literal)'")
            }
        }

        func isIdentifierByte(_ byte: UInt8) -> Bool {
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_")
        }

        mutating func enter() throws(JSONSyntaxError) {
            depth += 1
            if depth > JSONParser.maximumDepth {
                throw error("nesting deeper than \(JSONParser.maximumDepth) levels")
            }
        }

        mutating func parseObject(at location: SourceLocation, keeping: Set<String>? = nil) throws(JSONSyntaxError) -> Node {
            try enter()
            offset += 1  // {
            var members: [Node.Member] = []
            var skipped = false
            // Small objects check duplicates by scanning; large ones by index.
            var index: [String: Int]? = nil
            skipWhitespace()
            if offset < bytes.count, bytes[offset] == UInt8(ascii: "}") {
                offset += 1
                depth -= 1
                return Node(.object(members), at: location)
            }
            while true {
                guard offset < bytes.count, bytes[offset] == UInt8(ascii: "\"") else {
                    throw error("unexpected \(describeCurrent()): expected a string key")
                }
                let keyLocation = here
                let key = try parseString()
                if index == nil, members.count >= 16 {
                    var seen: [String: Int] = [:]
                    for (position, member) in members.enumerated() { seen[member.key] = position }
                    index = seen
                }
                let previous = index.map { $0[key] } ?? members.firstIndex { $0.key == key }
                if let previous {
                    let first = members[previous].keyLocation
                    throw JSONSyntaxError(
                        "duplicate key \"\(key)\" (first defined at \(first))", at: keyLocation, related: first)
                }
                skipWhitespace()
                guard offset < bytes.count, bytes[offset] == UInt8(ascii: ":") else {
                    throw error("unexpected \(describeCurrent()): expected ':' after key \"\(key)\"")
                }
                offset += 1
                skipWhitespace()
                guard offset < bytes.count else { throw error("unexpected end of input: expected a value for key \"\(key)\"") }
                let value: Node
                if let keeping, !keeping.contains(key) {
                    // Checked, not built; the member stays until the end, for duplicates.
                    let start = here
                    try skipValue()
                    value = Node(.null, at: start)
                    skipped = true
                } else {
                    value = try parseValue()
                }
                index?[key] = members.count
                members.append(Node.Member(key: key, keyLocation: keyLocation, value: value))
                skipWhitespace()
                guard offset < bytes.count else { throw error("unexpected end of input: expected ',' or '}'") }
                if bytes[offset] == UInt8(ascii: ",") {
                    offset += 1
                    skipWhitespace()
                    continue
                }
                if bytes[offset] == UInt8(ascii: "}") {
                    offset += 1
                    depth -= 1
                    if skipped, let keeping { members.removeAll { !keeping.contains($0.key) } }
                    return Node(.object(members), at: location)
                }
                throw error("unexpected \(describeCurrent()): expected ',' or '}'")
            }
        }

        /// Checks a value as `parseValue` would read it (the same errors), building nothing.
        mutating func skipValue() throws(JSONSyntaxError) {
            switch bytes[offset] {
            // An object's keys are still read and checked for duplicates; no value is built.
            case UInt8(ascii: "{"): _ = try parseObject(at: here, keeping: [])
            case UInt8(ascii: "["): _ = try parseArray(at: here, building: false)
            case UInt8(ascii: "\""): try skipString()
            case UInt8(ascii: "t"): try expectLiteral("true")
            case UInt8(ascii: "f"): try expectLiteral("false")
            case UInt8(ascii: "n"): try expectLiteral("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try scanNumber()
            default: throw error("unexpected \(describeCurrent()): expected a JSON value")
            }
        }

        /// A string without escapes is only scanned; one with escapes is read by
        /// `parseString`, which checks them.
        mutating func skipString() throws(JSONSyntaxError) {
            let quote = offset
            let continuationBytes = lineContinuationBytes
            offset += 1
            while offset < bytes.count {
                let byte = bytes[offset]
                if byte == UInt8(ascii: "\"") {
                    offset += 1
                    return
                }
                if byte == UInt8(ascii: "\\") {
                    offset = quote
                    lineContinuationBytes = continuationBytes
                    _ = try parseString()
                    return
                }
                if byte < 0x20 { throw controlCharacterError(byte) }
                if byte & 0xC0 == 0x80 { lineContinuationBytes += 1 }
                offset += 1
            }
            throw error("unterminated string")
        }

        /// `building` false: the elements are checked as they would be read, and left out.
        mutating func parseArray(at location: SourceLocation, building: Bool = true) throws(JSONSyntaxError) -> Node {
            try enter()
            offset += 1  // [
            var elements: [Node] = []
            skipWhitespace()
            if offset < bytes.count, bytes[offset] == UInt8(ascii: "]") {
                offset += 1
                depth -= 1
                return Node(.array(elements), at: location)
            }
            while true {
                guard offset < bytes.count else { throw error("unexpected end of input: expected a value") }
                if building { elements.append(try parseValue()) } else { try skipValue() }
                skipWhitespace()
                guard offset < bytes.count else { throw error("unexpected end of input: expected ',' or ']'") }
                if bytes[offset] == UInt8(ascii: ",") {
                    offset += 1
                    skipWhitespace()
                    continue
                }
                if bytes[offset] == UInt8(ascii: "]") {
                    offset += 1
                    depth -= 1
                    return Node(.array(elements), at: location)
                }
                throw error("unexpected \(describeCurrent()): expected ',' or ']'")
            }
        }

        /// Parses a string starting at its opening quote. Strings without escapes (the
        /// common case) are copied in one step.
        mutating func parseString() throws(JSONSyntaxError) -> String {
            offset += 1  // opening quote
            let start = offset
            while offset < bytes.count {
                let byte = bytes[offset]
                if byte == UInt8(ascii: "\"") {
                    let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self)
                    offset += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 { throw controlCharacterError(byte) }
                if byte & 0xC0 == 0x80 { lineContinuationBytes += 1 }
                offset += 1
            }
            guard offset < bytes.count else { throw error("unterminated string") }
            // Slow path: an escape sequence. Bytes are gathered and decoded once (appending
            // scalar by scalar to a String costs several times more).
            var utf8: [UInt8] = []
            utf8.reserveCapacity(offset - start + 16)
            utf8.append(contentsOf: bytes[start..<offset])
            var pendingHigh: (value: UInt32, location: SourceLocation)? = nil
            while offset < bytes.count {
                let byte = bytes[offset]
                if byte == UInt8(ascii: "\"") {
                    if let high = pendingHigh { throw loneSurrogate(high.value, at: high.location) }
                    offset += 1
                    return String(decoding: utf8, as: UTF8.self)
                }
                if byte == UInt8(ascii: "\\") {
                    let escapeLocation = here
                    offset += 1
                    guard offset < bytes.count else { throw error("unterminated string") }
                    let escape = bytes[offset]
                    offset += 1
                    if escape == UInt8(ascii: "u") {
                        let unit = try parseHex4()
                        if let high = pendingHigh {
                            pendingHigh = nil
                            guard (0xDC00...0xDFFF).contains(unit) else { throw loneSurrogate(high.value, at: high.location) }
                            let combined = 0x10000 + ((high.value - 0xD800) << 10) + (unit - 0xDC00)
                            UTF8.encode(Unicode.Scalar(combined)!) { utf8.append($0) }
                        } else if (0xD800...0xDBFF).contains(unit) {
                            pendingHigh = (unit, escapeLocation)
                        } else if (0xDC00...0xDFFF).contains(unit) {
                            throw loneSurrogate(unit, at: escapeLocation)
                        } else {
                            UTF8.encode(Unicode.Scalar(unit)!) { utf8.append($0) }
                        }
                        continue
                    }
                    if let high = pendingHigh { throw loneSurrogate(high.value, at: high.location) }
                    let decoded: UInt8
                    switch escape {
                    case UInt8(ascii: "\""): decoded = UInt8(ascii: "\"")
                    case UInt8(ascii: "\\"): decoded = UInt8(ascii: "\\")
                    case UInt8(ascii: "/"): decoded = UInt8(ascii: "/")
                    case UInt8(ascii: "b"): decoded = 0x08
                    case UInt8(ascii: "f"): decoded = 0x0C
                    case UInt8(ascii: "n"): decoded = 0x0A
                    case UInt8(ascii: "r"): decoded = 0x0D
                    case UInt8(ascii: "t"): decoded = 0x09
                    default:
                        offset -= 1
                        throw error("invalid escape sequence '\\\(describeCurrent().trimmingQuotes)' in string")
                    }
                    utf8.append(decoded)
                    continue
                }
                if let high = pendingHigh { throw loneSurrogate(high.value, at: high.location) }
                if byte < 0x20 { throw controlCharacterError(byte) }
                // Copy the run of (already valid) UTF-8 up to the next quote, escape or
                // control character.
                let run = offset
                while offset < bytes.count {
                    let b = bytes[offset]
                    if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b < 0x20 { break }
                    if b & 0xC0 == 0x80 { lineContinuationBytes += 1 }
                    offset += 1
                }
                utf8.append(contentsOf: bytes[run..<offset])
            }
            throw error("unterminated string")
        }

        func controlCharacterError(_ byte: UInt8) -> JSONSyntaxError {
            byte == UInt8(ascii: "\n")
                ? error("unterminated string (line break inside a string; use \\n)")
                : error("control character U+\(hex(UInt32(byte))) must be escaped in a string")
        }

        func loneSurrogate(_ unit: UInt32, at location: SourceLocation) -> JSONSyntaxError {
            JSONSyntaxError("unpaired UTF-16 surrogate \\u\(hex(unit)) in string", at: location)
        }

        mutating func parseHex4() throws(JSONSyntaxError) -> UInt32 {
            var value: UInt32 = 0
            for _ in 0..<4 {
                guard offset < bytes.count else { throw error("unterminated \\u escape") }
                let byte = bytes[offset]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw error("invalid \\u escape: expected 4 hexadecimal digits")
                }
                value = value << 4 | UInt32(digit)
                offset += 1
            }
            return value
        }

        /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: integers that fit `Int` are
        /// exact; everything else is a `Double` that keeps its source text.
        mutating func parseNumber() throws(JSONSyntaxError) -> Number {
            let start = offset
            let isPlainInteger = try scanNumber()
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self)
            if isPlainInteger, let integer = Int(text) {
                return Number(integer: integer)
            }
            // The grammar above guarantees `Double` can read it; huge values become ±inf.
            return Number(double: Double(text) ?? .nan, text: text)
        }

        /// Reads past a number (the grammar of `parseNumber`); whether it has neither a
        /// fraction nor an exponent.
        mutating func scanNumber() throws(JSONSyntaxError) -> Bool {
            var isPlainInteger = true
            if bytes[offset] == UInt8(ascii: "-") { offset += 1 }
            guard offset < bytes.count, isDigit(bytes[offset]) else {
                throw error("invalid number: expected a digit after '-'")
            }
            if bytes[offset] == UInt8(ascii: "0") {
                offset += 1
                if offset < bytes.count, isDigit(bytes[offset]) {
                    throw error("invalid number: leading zeros are not allowed")
                }
            } else {
                skipDigits()
            }
            if offset < bytes.count, bytes[offset] == UInt8(ascii: ".") {
                isPlainInteger = false
                offset += 1
                guard offset < bytes.count, isDigit(bytes[offset]) else {
                    throw error("invalid number: expected a digit after '.'")
                }
                skipDigits()
            }
            if offset < bytes.count, bytes[offset] == UInt8(ascii: "e") || bytes[offset] == UInt8(ascii: "E") {
                isPlainInteger = false
                offset += 1
                if offset < bytes.count, bytes[offset] == UInt8(ascii: "+") || bytes[offset] == UInt8(ascii: "-") {
                    offset += 1
                }
                guard offset < bytes.count, isDigit(bytes[offset]) else {
                    throw error("invalid number: expected a digit in the exponent")
                }
                skipDigits()
            }
            return isPlainInteger
        }

        func isDigit(_ byte: UInt8) -> Bool {
            byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
        }

        mutating func skipDigits() {
            while offset < bytes.count, isDigit(bytes[offset]) { offset += 1 }
        }
    }
}

extension String {
    /// `'x'` → `x`, for quoting a described character differently.
    fileprivate var trimmingQuotes: String {
        hasPrefix("'") && hasSuffix("'") && count >= 2 ? String(dropFirst().dropLast()) : self
    }
}
