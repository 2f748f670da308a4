/// A run's name: 13 characters of lowercase Crockford base32, 9 for the milliseconds
/// since the epoch when it was created and 4 random (`01jd3k5x2a7qf`). Short enough to
/// type, unique in practice (a million to one within the same millisecond, and the
/// store refuses a duplicate), and sorted by creation time when sorted as text, which
/// is what listings and the store's index rely on.
public struct RunID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let rawValue: String

    static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
    static let length = 13

    /// Validates a run's name as typed (case-insensitive; Crockford's `i`, `l` and `o`
    /// are read as `1`, `1` and `0`).
    public init?(_ text: String) {
        guard text.utf8.count == Self.length else { return nil }
        var normalized: [UInt8] = []
        normalized.reserveCapacity(Self.length)
        // Byte by byte: every character of a name is ASCII, and `lowercased()` (Unicode's
        // case mapping, a new string) was most of a stream step's parse of its task. It
        // also turned a non-ASCII letter into an ASCII one (the Kelvin sign into `k`),
        // which made a name of the wrong length; such a byte is refused here.
        for byte in text.utf8 {
            let lower = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
            let mapped: UInt8 =
                switch lower {
                case UInt8(ascii: "i"), UInt8(ascii: "l"): UInt8(ascii: "1")
                case UInt8(ascii: "o"): UInt8(ascii: "0")
                default: lower
                }
            guard Self.alphabet.contains(mapped) else { return nil }
            normalized.append(mapped)
        }
        rawValue = String(decoding: normalized, as: UTF8.self)
    }

    /// The run created at `time`, with 20 bits of `random`.
    public init(time: Timestamp, random: UInt32) {
        var bytes = [UInt8](repeating: 0, count: Self.length)
        var t = UInt64(max(0, time.milliseconds))
        for i in stride(from: 8, through: 0, by: -1) {
            bytes[i] = Self.alphabet[Int(t & 31)]
            t >>= 5
        }
        var r = random
        for i in stride(from: 12, through: 9, by: -1) {
            bytes[i] = Self.alphabet[Int(r & 31)]
            r >>= 5
        }
        rawValue = String(decoding: bytes, as: UTF8.self)
    }

    /// When the run was created, to the millisecond.
    public var time: Timestamp {
        var t: Int64 = 0
        for byte in rawValue.utf8.prefix(9) { t = t << 5 | Int64(Self.alphabet.firstIndex(of: byte) ?? 0) }
        return Timestamp(milliseconds: t)
    }

    public var description: String { rawValue }
    public static func < (lhs: RunID, rhs: RunID) -> Bool { lhs.rawValue < rhs.rawValue }
}
