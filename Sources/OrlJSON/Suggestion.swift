/// "Did you mean …?" for misspelt names, fields and enum values.
public enum Suggestion {
    /// The candidate closest to `word`, if close enough to be a plausible typo: within
    /// one edit for short words, two for medium, three for long ones (a transposition
    /// counts as one edit, so `modle` suggests `model`). Ties go to the candidate that
    /// sorts first, so the suggestion never depends on the candidates' order.
    ///
    /// Bounded: past `maxCandidates` candidates there is no suggestion, and words or
    /// candidates longer than `maxLength` are not compared. A file of 200,000 unknown
    /// keys, each looked up among the others, once took a quarter of an hour.
    public static func closest(to word: String, among candidates: some Sequence<String>) -> String? {
        guard word.utf8.count <= maxLength else { return nil }
        let target = Array(word.lowercased().unicodeScalars)
        let limit = target.count <= 3 ? 1 : target.count <= 8 ? 2 : 3
        var best: (candidate: String, distance: Int)?
        var seen = 0
        for candidate in candidates where candidate != word {
            seen += 1
            if seen > maxCandidates { return nil }
            guard abs(candidate.utf8.count - word.utf8.count) <= 4 * limit + 8 else { continue }
            // Lengths first, before lowercasing and copying: a namespace's every name is
            // looked through for each name a policy misses. Lowercasing never shortens a
            // name, and leaves an ASCII one as long as it was.
            let scalars = candidate.unicodeScalars.count
            if scalars > target.count + limit || (scalars == candidate.utf8.count && scalars < target.count - limit) { continue }
            let d = distance(target, Array(candidate.lowercased().unicodeScalars), limit: limit)
            guard d <= limit else { continue }
            if best == nil || d < best!.distance || (d == best!.distance && candidate < best!.candidate) {
                best = (candidate, d)
            }
        }
        return best?.candidate
    }

    /// The most candidates a suggestion looks through.
    public static let maxCandidates = 1000
    /// The longest word (in bytes) a suggestion is made for.
    public static let maxLength = 256

    /// ` (did you mean "X"?)`, or nothing.
    public static func hint(for word: String, among candidates: some Sequence<String>) -> String {
        closest(to: word, among: candidates).map { " (did you mean \"\($0)\"?)" } ?? ""
    }

    /// Damerau-Levenshtein (optimal string alignment), abandoned once past `limit`.
    static func distance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar], limit: Int) -> Int {
        if abs(a.count - b.count) > limit { return limit + 1 }
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previousPrevious = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            var rowMinimum = current[0]
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                var value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    value = min(value, previousPrevious[j - 2] + 1)
                }
                current[j] = value
                rowMinimum = min(rowMinimum, value)
            }
            if rowMinimum > limit { return limit + 1 }
            (previousPrevious, previous, current) = (previous, current, previousPrevious)
        }
        return previous[b.count]
    }
}
