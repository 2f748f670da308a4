/// Why a `-l` selector could not be read.
public struct SelectorSyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension LabelSelector {
    /// Parses kubectl's selector syntax: comma-separated requirements, all of which must
    /// hold: `k=v` (or `k==v`), `k!=v` (true when `k` is absent), `k in (a,b)`,
    /// `k notin (a)`, `k` (exists) and `!k` (does not exist). An empty text selects
    /// everything.
    public init(parsing text: String) throws(SelectorSyntaxError) {
        var requirements: [Requirement] = []
        for part in try Self.split(text) {
            requirements.append(try Self.requirement(part, in: text))
        }
        self.init(matchExpressions: requirements)
    }

    /// Splits at the commas that are not inside `( )`.
    private static func split(_ text: String) throws(SelectorSyntaxError) -> [Substring] {
        var parts: [Substring] = []
        var depth = 0
        var start = text.startIndex
        for i in text.indices {
            switch text[i] {
            case "(":
                depth += 1
                if depth > 1 { throw SelectorSyntaxError("unexpected \"(\" in selector \(Diagnostic.quoted(text))") }
            case ")":
                depth -= 1
                if depth < 0 { throw SelectorSyntaxError("unexpected \")\" in selector \(Diagnostic.quoted(text))") }
            case "," where depth == 0:
                parts.append(text[start..<i])
                start = text.index(after: i)
            default: break
            }
        }
        guard depth == 0 else { throw SelectorSyntaxError("missing \")\" in selector \(Diagnostic.quoted(text))") }
        parts.append(text[start...])
        if parts.count == 1 && parts[0].allSatisfy(\.isWhitespace) { return [] }
        return parts
    }

    private static func requirement(_ raw: Substring, in text: String) throws(SelectorSyntaxError) -> Requirement {
        let part = raw.trimmingWhitespace()
        let usage =
            "expected k=v, k!=v, k in (a,b), k notin (a,b), k or !k in selector \(Diagnostic.quoted(text)); got \(Diagnostic.quoted(String(part)))"
        guard !part.isEmpty else { throw SelectorSyntaxError(usage) }
        if part.hasPrefix("!") {
            let key = try checkedKey(part.dropFirst().trimmingWhitespace(), usage: usage)
            return Requirement(key: key, operator: .doesNotExist)
        }
        if let range = part.firstRange(of: "!=") {
            let key = try checkedKey(part[..<range.lowerBound].trimmingWhitespace(), usage: usage)
            let value = try checkedValue(part[range.upperBound...].trimmingWhitespace(), usage: usage)
            return Requirement(key: key, operator: .notIn, values: [value])
        }
        if let range = part.firstRange(of: "==") ?? part.firstRange(of: "=") {
            let key = try checkedKey(part[..<range.lowerBound].trimmingWhitespace(), usage: usage)
            let value = try checkedValue(part[range.upperBound...].trimmingWhitespace(), usage: usage)
            return Requirement(key: key, operator: .in, values: [value])
        }
        // `k in (a, b)` / `k notin (a)`: the key, a word, a parenthesised list.
        if let open = part.firstIndex(of: "(") {
            guard part.hasSuffix(")") else { throw SelectorSyntaxError(usage) }
            let words = part[..<open].split(whereSeparator: \.isWhitespace)
            guard words.count == 2 else { throw SelectorSyntaxError(usage) }
            let key = try checkedKey(words[0], usage: usage)
            let op: Requirement.Operator
            switch words[1] {
            case "in": op = .in
            case "notin": op = .notIn
            default: throw SelectorSyntaxError("unknown operator \(Diagnostic.quoted(String(words[1]))) (use in or notin); \(usage)")
            }
            let list = part[part.index(after: open)..<part.index(before: part.endIndex)]
            var values: [String] = []
            for value in list.split(separator: ",", omittingEmptySubsequences: false) {
                values.append(try checkedValue(value.trimmingWhitespace(), usage: usage))
            }
            guard !(values.count == 1 && values[0].isEmpty) else {
                throw SelectorSyntaxError("\(words[1]) needs at least one value in selector \(Diagnostic.quoted(text))")
            }
            return Requirement(key: key, operator: op, values: values)
        }
        return Requirement(key: try checkedKey(part, usage: usage), operator: .exists)
    }

    /// Label keys: an optional DNS-style prefix and `/`, then a name of letters, digits,
    /// `-`, `_` and `.`.
    private static func checkedKey(_ key: Substring, usage: String) throws(SelectorSyntaxError) -> String {
        guard !key.isEmpty, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_./".contains($0)) }) else {
            throw SelectorSyntaxError(usage)
        }
        return String(key)
    }

    private static func checkedValue(_ value: Substring, usage: String) throws(SelectorSyntaxError) -> String {
        guard value.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw SelectorSyntaxError(usage)
        }
        return String(value)
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> Substring {
        var s = self
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return s
    }
}
