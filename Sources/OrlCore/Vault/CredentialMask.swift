public import OrlJSON

/// Hides credentials in what upstreams (tools, model providers) send back before an
/// agent sees it. An upstream that echoes its credential may write it plainly or
/// JSON-escaped (`\/`, `\u002d`, any character as `\uXXXX`, hex in either case,
/// surrogate pairs): the agent's JSON parser decodes every form back to the secret, so
/// each is found, in the raw text and through the escapes, and replaced whole.
public struct CredentialMask: Sendable {
    public static let replacement = "(sensitive)"

    private let secrets: [[UInt8]]

    /// Empty secrets are ignored.
    public init(_ secrets: [String]) {
        self.secrets = secrets.filter { !$0.isEmpty }.map { Array($0.utf8) }
    }

    public var isEmpty: Bool { secrets.isEmpty }

    /// The most raw bytes a secret can take once escaped: `\uXXXX` per byte at worst.
    public var longestEscaped: Int { (secrets.map(\.count).max() ?? 0) * 6 }

    /// The raw byte ranges of `bytes` that spell a secret, plainly or through JSON
    /// string escapes, in order and merged where they overlap.
    public func matches(in bytes: [UInt8]) -> [Range<Int>] {
        guard !secrets.isEmpty else { return [] }
        // The text with its escapes decoded, each decoded byte knowing the raw bytes
        // it came from.
        var decoded: [UInt8] = []
        var origin: [Range<Int>] = []
        decoded.reserveCapacity(bytes.count)
        origin.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 1 < bytes.count {
                if let (scalar, length) = Self.escape(bytes, at: i) {
                    for byte in String(Character(scalar)).utf8 {
                        decoded.append(byte)
                        origin.append(i..<(i + length))
                    }
                    i += length
                    continue
                }
            }
            decoded.append(bytes[i])
            origin.append(i..<(i + 1))
            i += 1
        }
        var found: [Range<Int>] = []
        for secret in secrets {
            for match in Self.occurrences(of: secret, in: bytes) { found.append(match) }
            for match in Self.occurrences(of: secret, in: decoded) {
                found.append(origin[match.lowerBound].lowerBound..<origin[match.upperBound - 1].upperBound)
            }
        }
        found.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<Int>] = []
        for range in found {
            if let last = merged.last, range.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        return merged
    }

    public func mask(_ bytes: [UInt8]) -> [UInt8] {
        let ranges = matches(in: bytes)
        guard !ranges.isEmpty else { return bytes }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var at = 0
        for range in ranges {
            out += bytes[at..<range.lowerBound]
            out += Self.replacement.utf8
            at = range.upperBound
        }
        out += bytes[at...]
        return out
    }

    public func mask(_ text: String) -> String {
        guard !secrets.isEmpty else { return text }
        return String(decoding: mask(Array(text.utf8)), as: UTF8.self)
    }

    /// Every string of a decoded value, keys included, masked: what an upstream's
    /// JSON says once parsed, whatever escapes it used.
    public func mask(_ value: JSONValue) -> JSONValue {
        guard !secrets.isEmpty else { return value }
        switch value {
        case .string(let s): return .string(mask(s))
        case .array(let items): return .array(items.map(mask))
        case .object(let members): return .object(members.map { (mask($0.0), mask($0.1)) })
        case .null, .bool, .int, .double: return value
        }
    }

    /// Splits a stream as it arrives: `feed` returns what can be sent (masked), keeping
    /// back the tail a secret could still be completing; `finish` returns the rest.
    public struct Stream: Sendable {
        let mask: CredentialMask
        var pending: [UInt8] = []

        public init(_ mask: CredentialMask) { self.mask = mask }

        public mutating func feed(_ bytes: some Sequence<UInt8>) -> [UInt8] {
            pending += bytes
            guard !mask.isEmpty else {
                defer { pending.removeAll() }
                return pending
            }
            let ranges = mask.matches(in: pending)
            // A match that ends past `cut` may still grow; one that starts before it
            // is complete (no escaped secret is longer than the window).
            var cut = max(0, pending.count - mask.longestEscaped - 12)
            for range in ranges where range.lowerBound < cut && range.upperBound > cut { cut = range.lowerBound }
            let ready = Array(pending[..<cut])
            pending.removeFirst(cut)
            return mask.mask(ready)
        }

        public mutating func finish() -> [UInt8] {
            defer { pending.removeAll() }
            return mask.mask(pending)
        }
    }

    // MARK: Helpers

    /// The escape at `i` (a backslash): its scalar and raw length, or nil if it is not
    /// one JSON decodes (then it stands for itself).
    private static func escape(_ bytes: [UInt8], at i: Int) -> (Unicode.Scalar, Int)? {
        let next = bytes[i + 1]
        switch next {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): return (Unicode.Scalar(next), 2)
        case UInt8(ascii: "b"): return ("\u{08}", 2)
        case UInt8(ascii: "f"): return ("\u{0C}", 2)
        case UInt8(ascii: "n"): return ("\n", 2)
        case UInt8(ascii: "r"): return ("\r", 2)
        case UInt8(ascii: "t"): return ("\t", 2)
        case UInt8(ascii: "u"):
            guard let unit = hex4(bytes, at: i + 2) else { return nil }
            if (0xD800..<0xDC00).contains(unit), i + 11 < bytes.count, bytes[i + 6] == UInt8(ascii: "\\"),
                bytes[i + 7] == UInt8(ascii: "u"), let low = hex4(bytes, at: i + 8), (0xDC00..<0xE000).contains(low)
            {
                let value = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                return Unicode.Scalar(value).map { ($0, 12) }
            }
            return Unicode.Scalar(unit).map { ($0, 6) }
        default: return nil
        }
    }

    private static func hex4(_ bytes: [UInt8], at start: Int) -> UInt32? {
        guard start + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for byte in bytes[start..<(start + 4)] {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    /// Where `needle` occurs in `haystack` (Knuth-Morris-Pratt: linear whatever the text).
    private static func occurrences(of needle: [UInt8], in haystack: [UInt8]) -> [Range<Int>] {
        guard !needle.isEmpty, haystack.count >= needle.count else { return [] }
        var failure = [Int](repeating: 0, count: needle.count)
        var k = 0
        for i in 1..<max(1, needle.count) where needle.count > 1 {
            while k > 0 && needle[i] != needle[k] { k = failure[k - 1] }
            if needle[i] == needle[k] { k += 1 }
            failure[i] = k
        }
        var found: [Range<Int>] = []
        k = 0
        for (i, byte) in haystack.enumerated() {
            while k > 0 && byte != needle[k] { k = failure[k - 1] }
            if byte == needle[k] { k += 1 }
            if k == needle.count {
                found.append((i + 1 - needle.count)..<(i + 1))
                k = failure[k - 1]
            }
        }
        return found
    }
}
