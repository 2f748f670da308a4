/// The wording of violations. Kept apart from the evaluator so that the phrasing can
/// be reviewed (and tested) in one place; nothing here runs unless a violation is
/// being reported.
enum ViolationMessages {
    /// `string "three"`, `integer 3`, `boolean true`, `null`, `object`, `array`.
    static func describe(_ node: Node) -> String {
        switch node.value {
        case .null: "null"
        case .bool(let b): "boolean \(b)"
        case .number(let n): "\(n.isWhole ? "integer" : "number") \(n.text)"
        case .string(let s): "string \(quoted(s))"
        case .array: "array"
        case .object: "object"
        }
    }

    /// A value as it appears inside a message: strings quoted and shortened, small
    /// scalars verbatim, containers by type.
    static func render(_ node: Node) -> String {
        switch node.value {
        case .null: "null"
        case .bool(let b): String(b)
        case .number(let n): n.text
        case .string(let s): quoted(s)
        case .array: "an array"
        case .object: "an object"
        }
    }

    /// How an allowed value is listed: `enum` lists show strings bare, as users
    /// write them in YAML (`Always, OnFailure, Never`).
    static func listed(_ node: Node) -> String {
        if case .string(let s) = node.value { return s.isEmpty ? "\"\"" : s }
        return render(node)
    }

    static func quoted(_ string: String) -> String {
        let limit = 60
        let shown = string.unicodeScalars.count > limit ? String(String.UnicodeScalarView(string.unicodeScalars.prefix(limit))) + "…" : string
        return "\"" + shown.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"").replacingAll("\n", with: "\\n") + "\""
    }

    static func plural(_ count: Int, _ noun: String) -> String {
        "\(count) \(noun)\(count == 1 ? "" : "s")"
    }

    /// `"Allways" is not one of: Always, OnFailure, Never (did you mean "Always"?)`.
    static func notOneOf(_ node: Node, _ allowed: [Node]) -> String {
        let shown = allowed.count <= 12 ? allowed.map(listed).joined(separator: ", ") : "\(allowed.count) allowed values"
        var message = "\(render(node)) is not one of: \(shown)"
        if case .string(let string) = node.value,
            let suggestion = Suggestions.closest(to: string, among: allowed.compactMap(\.string))
        {
            message += " (did you mean \"\(suggestion)\"?)"
        }
        return message
    }

    static func mustEqual(_ node: Node, _ constant: Node) -> String {
        switch constant.value {
        case .array, .object: "must equal the value the schema requires"
        default: "must be \(render(constant)), got \(render(node))"
        }
    }

    static func unknownField(_ key: String, candidates: some Sequence<String>) -> String {
        var message = "unknown field \(quoted(key))"
        if let suggestion = Suggestions.closest(to: key, among: candidates) {
            message += " (did you mean \"\(suggestion)\"?)"
        }
        return message
    }
}

/// "Did you mean" suggestions by edit distance.
enum Suggestions {
    /// The candidate closest to `word`, if close enough to be a plausible typo: within
    /// one edit for short words, two for medium, three for long ones (a transposition
    /// counts as one edit, so `modle` suggests `model`).
    static func closest(to word: String, among candidates: some Sequence<String>) -> String? {
        let target = Array(word.lowercased().unicodeScalars)
        let threshold = target.count <= 3 ? 1 : target.count <= 8 ? 2 : 3
        var best: (candidate: String, distance: Int)?
        for candidate in candidates where candidate != word {
            let distance = editDistance(target, Array(candidate.lowercased().unicodeScalars), limit: threshold)
            guard distance <= threshold else { continue }
            if best == nil || distance < best!.distance || (distance == best!.distance && candidate < best!.candidate) {
                best = (candidate, distance)
            }
        }
        return best?.candidate
    }

    /// Optimal string alignment distance (Levenshtein plus adjacent transpositions);
    /// gives up early, returning `limit + 1`, once every alignment exceeds `limit`.
    static func editDistance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar], limit: Int) -> Int {
        if abs(a.count - b.count) > limit { return limit + 1 }
        if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
        var previousPrevious = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            var rowMinimum = i
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
