extension ECMARegex {
    /// A parsed pattern. Groups are gone: JSON Schema only asks whether a pattern
    /// matches, so captures are never observed and `(x)` is just `x`.
    indirect enum Node {
        case scalar(UInt32)
        case set([ClosedRange<UInt32>])
        case assertion(Assertion)
        case concatenation([Node])
        case alternation([Node])
        /// `max == nil` is unbounded. `greedy` only orders the search: whether a
        /// match exists does not depend on it.
        case repetition(Node, min: Int, max: Int?, greedy: Bool)
    }

    enum Assertion {
        /// `^` and `$` without the `m` flag: the start and end of the input only.
        case start, end
        case wordBoundary, notWordBoundary
    }

    /// A recursive-descent parser for ECMA-262 `Pattern[+UnicodeMode]` (see `ECMARegex`
    /// for the dialect). It throws `.unsupported` for valid syntax the matcher does
    /// not implement, before or after finding other errors: callers must treat
    /// `.unsupported` as "ask another engine", which then reports any errors itself.
    struct Parser {
        private let scalars: [Unicode.Scalar]
        private var index = 0

        init(_ pattern: String) {
            scalars = Array(pattern.unicodeScalars)
        }

        mutating func parse() throws(CompileError) -> Node {
            let node = try disjunction()
            if index < scalars.count {
                // `disjunction` stops only at the end or at a `)` it did not open.
                throw invalid("unmatched ')'")
            }
            return node
        }

        // MARK: Structure

        private mutating func disjunction() throws(CompileError) -> Node {
            var alternatives = [try alternative()]
            while eat("|") { alternatives.append(try alternative()) }
            return alternatives.count == 1 ? alternatives[0] : .alternation(alternatives)
        }

        private mutating func alternative() throws(CompileError) -> Node {
            var terms: [Node] = []
            while let next = peek, next != "|", next != ")" {
                terms.append(try term())
            }
            return terms.count == 1 ? terms[0] : .concatenation(terms)
        }

        private mutating func term() throws(CompileError) -> Node {
            let start = index
            if let assertion = try assertion() {
                if isQuantifierStart { throw invalid("nothing to repeat", at: index) }
                return .assertion(assertion)
            }
            let atom = try atom()
            guard let (min, max) = try quantifier() else { return atom }
            if let max, min > max { throw invalid("numbers out of order in {} quantifier", at: start) }
            return .repetition(atom, min: min, max: max, greedy: !eat("?"))
        }

        private mutating func assertion() throws(CompileError) -> Assertion? {
            if eat("^") { return .start }
            if eat("$") { return .end }
            if peek == "\\", let escaped = peek(at: 1), escaped == "b" || escaped == "B" {
                index += 2
                return escaped == "b" ? .wordBoundary : .notWordBoundary
            }
            if peek == "(", peek(at: 1) == "?", let kind = peek(at: 2), kind == "=" || kind == "!" || kind == "<" {
                // `(?<name>` is a named group rather than lookbehind, but both are unsupported.
                throw .unsupported("lookaround and named groups")
            }
            return nil
        }

        private var isQuantifierStart: Bool {
            peek == "*" || peek == "+" || peek == "?" || peek == "{"
        }

        /// `(min, max)` of a quantifier at the cursor, if there is one.
        private mutating func quantifier() throws(CompileError) -> (Int, Int?)? {
            if eat("*") { return (0, nil) }
            if eat("+") { return (1, nil) }
            if eat("?") { return (0, 1) }
            let start = index
            guard eat("{") else { return nil }
            guard let min = number() else { throw invalid("incomplete quantifier; write '\\{' for a literal '{'", at: start) }
            var max: Int? = min
            if eat(",") { max = number() }
            guard eat("}") else { throw invalid("incomplete quantifier; write '\\{' for a literal '{'", at: start) }
            return (min, max)
        }

        /// Decimal digits, saturating: `{0,99999999999}` is as good as unbounded.
        private mutating func number() -> Int? {
            var value: Int?
            while let digit = peek, ("0"..."9").contains(digit) {
                value = min((value ?? 0) * 10 + Int(digit.value - 0x30), Int(Int32.max))
                index += 1
            }
            return value
        }

        private mutating func atom() throws(CompileError) -> Node {
            let start = index
            guard let scalar = next() else { throw invalid("unexpected end of pattern") }
            switch scalar {
            case ".":
                return .set(ScalarSet.complement(ScalarSet.lineTerminator))
            case "(":
                if eat("?") {
                    guard eat(":") else { throw .unsupported("group modifiers") }
                }
                let inner = try disjunction()
                guard eat(")") else { throw invalid("missing ')'", at: start) }
                return inner
            case "[":
                return .set(try characterClass(start: start))
            case "\\":
                return try atomEscape()
            case "*", "+", "?":
                throw invalid("nothing to repeat", at: start)
            case "{", "}", "]":
                // Unicode mode has no Annex B fallback to a literal.
                throw invalid("lone '\(scalar)'; escape it as '\\\(scalar)'", at: start)
            default:
                return .scalar(scalar.value)
            }
        }

        // MARK: Escapes

        /// After a `\` outside a class (`\b` and `\B` are assertions, handled before).
        private mutating func atomEscape() throws(CompileError) -> Node {
            let start = index - 1
            guard let scalar = peek else { throw invalid("'\\' at end of pattern", at: start) }
            switch scalar {
            case "1"..."9", "k":
                throw .unsupported("backreferences")
            default:
                if let set = try classEscape() { return .set(set) }
                return .scalar(try characterEscape(start: start))
            }
        }

        /// `\d \D \w \W \s \S` at the cursor (after the `\`), as ranges.
        private mutating func classEscape() throws(CompileError) -> [ClosedRange<UInt32>]? {
            let set: [ClosedRange<UInt32>]
            switch peek {
            case "d": set = ScalarSet.digit
            case "D": set = ScalarSet.complement(ScalarSet.digit)
            case "w": set = ScalarSet.word
            case "W": set = ScalarSet.complement(ScalarSet.word)
            case "s": set = ScalarSet.space
            case "S": set = ScalarSet.complement(ScalarSet.space)
            case "p", "P": throw .unsupported("Unicode property escapes")
            default: return nil
            }
            index += 1
            return set
        }

        /// A `CharacterEscape` at the cursor (after the `\` at `start`): one code point.
        private mutating func characterEscape(start: Int) throws(CompileError) -> UInt32 {
            guard let scalar = next() else { throw invalid("'\\' at end of pattern", at: start) }
            switch scalar {
            case "t": return 0x09
            case "n": return 0x0A
            case "v": return 0x0B
            case "f": return 0x0C
            case "r": return 0x0D
            case "0":
                if let digit = peek, ("0"..."9").contains(digit) {
                    throw invalid("octal escapes are not allowed in Unicode mode", at: start)
                }
                return 0
            case "c":
                guard let letter = next(), ("a"..."z").contains(letter) || ("A"..."Z").contains(letter) else {
                    throw invalid("'\\c' must be followed by an ASCII letter", at: start)
                }
                return letter.value % 32
            case "x":
                guard let value = hexDigits(count: 2) else { throw invalid("'\\x' needs two hex digits", at: start) }
                return value
            case "u":
                return try unicodeEscape(start: start)
            default:
                // Unicode mode allows only syntax characters and `/` here. Any ASCII
                // punctuation is accepted, as without the `u` flag: `\-` or `\:` are common
                // in schemas and cannot mean anything else. Letters and digits stay errors,
                // because engines disagree on what `\a` or `\z` mean.
                guard
                    ("!"..."/").contains(scalar) || (":"..."@").contains(scalar) || ("["..."`").contains(scalar)
                        || ("{"..."~").contains(scalar)
                else { throw invalid("unknown escape '\\\(scalar)'", at: start) }
                return scalar.value
            }
        }

        /// `\uHHHH` (pairing a lead and trail surrogate into one code point) or `\u{H…}`.
        private mutating func unicodeEscape(start: Int) throws(CompileError) -> UInt32 {
            if eat("{") {
                var value: UInt32 = 0
                var digits = 0
                while let scalar = peek, let digit = hexValue(scalar) {
                    value = value * 16 + UInt32(digit)
                    guard value <= ScalarSet.maxScalar else { throw invalid("'\\u{…}' beyond U+10FFFF", at: start) }
                    digits += 1
                    index += 1
                }
                guard digits > 0, eat("}") else { throw invalid("malformed '\\u{…}' escape", at: start) }
                return value
            }
            guard let value = hexDigits(count: 4) else { throw invalid("'\\u' needs four hex digits", at: start) }
            if (0xD800...0xDBFF).contains(value), peek == "\\", peek(at: 1) == "u" {
                let resume = index
                index += 2
                if let trail = hexDigits(count: 4), (0xDC00...0xDFFF).contains(trail) {
                    return 0x10000 + (value - 0xD800) << 10 + (trail - 0xDC00)
                }
                index = resume
            }
            // A lone surrogate is valid syntax; it matches nothing, since Swift strings hold none.
            return value
        }

        private mutating func hexDigits(count: Int) -> UInt32? {
            var value: UInt32 = 0
            for offset in 0..<count {
                guard let scalar = peek(at: offset), let digit = hexValue(scalar) else { return nil }
                value = value * 16 + UInt32(digit)
            }
            index += count
            return value
        }

        private func hexValue(_ scalar: Unicode.Scalar) -> Int? {
            switch scalar {
            case "0"..."9": Int(scalar.value - 0x30)
            case "a"..."f": Int(scalar.value - 0x61 + 10)
            case "A"..."F": Int(scalar.value - 0x41 + 10)
            default: nil
            }
        }

        // MARK: Character classes

        /// The ranges of `[...]`, after the `[` at `start`, already complemented for `[^...]`.
        private mutating func characterClass(start: Int) throws(CompileError) -> [ClosedRange<UInt32>] {
            let negated = eat("^")
            var ranges: [ClosedRange<UInt32>] = []
            while !eat("]") {
                guard peek != nil else { throw invalid("missing ']'", at: start) }
                let atomStart = index
                let first = try classAtom()
                guard peek == "-", let after = peek(at: 1), after != "]" else {
                    ranges += first
                    continue
                }
                index += 1
                let second = try classAtom()
                guard first.count == 1, first[0].count == 1, second.count == 1, second[0].count == 1 else {
                    throw invalid("a class escape cannot bound a range", at: atomStart)
                }
                guard first[0].lowerBound <= second[0].lowerBound else {
                    throw invalid("range out of order in character class", at: atomStart)
                }
                ranges.append(first[0].lowerBound...second[0].lowerBound)
            }
            return negated ? ScalarSet.complement(ranges) : ranges
        }

        /// One class member: a code point (as a one-scalar range) or a class escape.
        private mutating func classAtom() throws(CompileError) -> [ClosedRange<UInt32>] {
            let start = index
            guard let scalar = next() else { throw invalid("missing ']'", at: start) }
            guard scalar == "\\" else { return [scalar.value...scalar.value] }
            if let set = try classEscape() { return set }
            switch peek {
            case "b":
                index += 1
                return [0x08...0x08]  // backspace, inside a class
            case let escaped? where escaped == "B" || escaped == "k" || ("1"..."9").contains(escaped):
                throw invalid("'\\\(escaped)' is not allowed in a character class", at: start)
            default:
                let value = try characterEscape(start: start)
                return [value...value]
            }
        }

        // MARK: Cursor

        private var peek: Unicode.Scalar? { index < scalars.count ? scalars[index] : nil }

        private func peek(at offset: Int) -> Unicode.Scalar? {
            index + offset < scalars.count ? scalars[index + offset] : nil
        }

        private mutating func next() -> Unicode.Scalar? {
            guard let scalar = peek else { return nil }
            index += 1
            return scalar
        }

        private mutating func eat(_ scalar: Unicode.Scalar) -> Bool {
            guard peek == scalar else { return false }
            index += 1
            return true
        }

        private func invalid(_ message: String) -> CompileError {
            invalid(message, at: index)
        }

        private func invalid(_ message: String, at offset: Int) -> CompileError {
            .invalid(SyntaxError(message: message, offset: offset))
        }
    }
}
