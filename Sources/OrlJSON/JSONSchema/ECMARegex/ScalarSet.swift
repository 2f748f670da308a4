/// A set of code points: a character class, `.`, or a class escape such as `\d`.
///
/// Built once per pattern from ranges; membership is then a bit test for ASCII
/// (nearly every scalar a manifest contains) and a binary search otherwise. The
/// non-ASCII ranges live in one array shared by a program's sets, so a set is plain
/// data and testing it never touches a reference count.
struct ScalarSet: Sendable {
    /// Bit `c` of `asciiLow` (c < 64) or bit `c - 64` of `asciiHigh` says whether ASCII `c` is in the set.
    private let asciiLow: UInt64
    private let asciiHigh: UInt64
    /// The members from U+0080 up, as indices into the shared range storage: sorted,
    /// disjoint, non-adjacent.
    private let nonASCII: Range<Int32>

    /// The set of `ranges`, appending its non-ASCII part to `storage`.
    init(_ ranges: [ClosedRange<UInt32>], storage: inout [ClosedRange<UInt32>]) {
        var low: UInt64 = 0
        var high: UInt64 = 0
        let start = Int32(storage.count)
        for range in Self.normalized(ranges) {
            if range.lowerBound < 0x80 {
                for scalar in range.lowerBound...min(range.upperBound, 0x7F) {
                    if scalar < 64 { low |= 1 << UInt64(scalar) } else { high |= 1 << UInt64(scalar - 64) }
                }
            }
            if range.upperBound >= 0x80 { storage.append(max(range.lowerBound, 0x80)...range.upperBound) }
        }
        asciiLow = low
        asciiHigh = high
        nonASCII = start..<Int32(storage.count)
    }

    @inline(__always)
    func contains(_ scalar: UInt32, storage: UnsafeBufferPointer<ClosedRange<UInt32>>) -> Bool {
        if scalar < 64 { return asciiLow & (1 << UInt64(scalar)) != 0 }
        if scalar < 128 { return asciiHigh & (1 << UInt64(scalar - 64)) != 0 }
        var lower = Int(nonASCII.lowerBound)
        var upper = Int(nonASCII.upperBound)
        while lower < upper {
            let middle = (lower + upper) / 2
            let range = storage[middle]
            if scalar < range.lowerBound {
                upper = middle
            } else if scalar > range.upperBound {
                lower = middle + 1
            } else {
                return true
            }
        }
        return false
    }

    // MARK: Range lists
    //
    // The parser assembles classes as unions of range lists, so that `[^\d_]` and
    // `[\S]` are plain set algebra before one `ScalarSet` is built from the result.

    static let maxScalar: UInt32 = 0x10FFFF

    /// Sorted, with overlapping and adjacent ranges merged.
    static func normalized(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        var merged: [ClosedRange<UInt32>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, range.lowerBound <= last.upperBound &+ 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        return merged
    }

    /// Every code point not in `ranges`.
    static func complement(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        var result: [ClosedRange<UInt32>] = []
        var next: UInt32 = 0
        for range in normalized(ranges) {
            if range.lowerBound > next { result.append(next...(range.lowerBound - 1)) }
            guard range.upperBound < maxScalar else { return result }
            next = range.upperBound + 1
        }
        result.append(next...maxScalar)
        return result
    }

    /// ECMA-262 `\d`: ASCII digits only, unlike Unicode-aware engines.
    static let digit: [ClosedRange<UInt32>] = [0x30...0x39]

    /// ECMA-262 `\w` (without the `i` flag): `[A-Za-z0-9_]`.
    static let word: [ClosedRange<UInt32>] = [0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A]

    /// ECMA-262 `\s`: WhiteSpace (TAB, VT, FF, SP, NBSP, ZWNBSP and category Zs)
    /// plus LineTerminator (LF, CR, LS, PS).
    static let space: [ClosedRange<UInt32>] = [
        0x09...0x0D,  // TAB, LF, VT, FF, CR
        0x20...0x20, 0xA0...0xA0, 0x1680...0x1680, 0x2000...0x200A, 0x2028...0x2029,
        0x202F...0x202F, 0x205F...0x205F, 0x3000...0x3000, 0xFEFF...0xFEFF,
    ]

    /// ECMA-262 LineTerminator, which `.` does not match (without the `s` flag).
    static let lineTerminator: [ClosedRange<UInt32>] = [0x0A...0x0A, 0x0D...0x0D, 0x2028...0x2029]
}
