/// A compiled ECMA-262 regular expression, for JSON Schema's `pattern` and
/// `patternProperties`: pure Swift, immutable, and fast on the short strings
/// manifests hold.
///
/// ## Dialect
/// ECMA-262 `Pattern` with the `u` flag, which is what JSON Schema's test suite
/// expects: patterns match by code point, and `\u{…}` and surrogate pairs written as
/// `\uD83D\uDC32` denote one code point. `\d`, `\w`, `\b` are ASCII-only and `\s` is
/// ECMA's WhiteSpace + LineTerminator set; `.` matches anything but a line terminator;
/// `^` and `$` match only at the start and end of the input (no flags exist in JSON
/// Schema). One leniency: any ASCII punctuation may be escaped to mean itself (`\-`,
/// `\:`), as without the `u` flag. Other Unicode-mode errors are errors: a lone `{`,
/// `}` or `]`, unknown letter escapes like `\a`, a class escape bounding a range.
///
/// Valid syntax outside that subset (lookaround, backreferences, named groups,
/// `\p{…}` property escapes, `(?i:…)` modifiers) and repetitions too large to expand
/// make `init` throw `.unsupported`, and the caller uses another engine.
///
/// ## Matching
/// The pattern is parsed (`Parser`) into a tree, compiled (`Program`) into a flat
/// instruction array, and run over the string's UTF-8 bytes, decoding code points as
/// it goes, with scratch space from temporary (stack, when small) allocations rather
/// than arrays. `matches` is an unanchored search, as `RegExp.prototype.test`.
///
/// JSON Schema only asks *whether* a pattern matches, never for captures, so a
/// thread's state is just (instruction, position). That makes backtracking safe to
/// memoize: the matcher records each (split, position) pair it explores and never
/// explores it twice, so `(a*)*b` against a long run of `a`s takes time proportional
/// to program × input rather than exponential time (RE2's "bounded backtracker").
/// The memo and backtrack stack grow with program × input, so past `backtrackLimit`
/// pairs the matcher switches to a Pike VM (a breadth-first NFA simulation), which is
/// slower per step but needs memory proportional to the program alone.
struct ECMARegex: Sendable {
    enum CompileError: Error {
        /// The pattern is not valid ECMA-262 (Unicode mode, with the leniency above).
        case invalid(SyntaxError)
        /// Valid syntax this matcher does not implement; the payload names the feature.
        case unsupported(String)
    }

    struct SyntaxError: Error, CustomStringConvertible {
        var message: String
        /// Code points from the start of the pattern.
        var offset: Int

        var description: String { "\(message) at offset \(offset)" }
    }

    private let program: Program

    /// Above this many (split, position) pairs, `matches` uses the Pike VM: the
    /// backtracker's memo and stack take up to 1 bit and 16 bytes per pair.
    static let backtrackLimit = 16_384

    init(_ pattern: String) throws(CompileError) {
        var parser = Parser(pattern)
        program = try Program(parser.parse())
    }

    /// How `matches` searches; both strategies give the same answers, and tests check so.
    enum Strategy {
        /// Backtracking for short inputs, the Pike VM past `backtrackLimit`.
        case automatic
        case backtracking
        case pikeVM
    }

    func matches(_ string: String, strategy: Strategy = .automatic) -> Bool {
        let search = { (input: UnsafeBufferPointer<UInt8>) in self.search(input, strategy) }
        if let result = string.utf8.withContiguousStorageIfAvailable(search) { return result }
        var contiguous = string
        contiguous.makeContiguousUTF8()
        return contiguous.utf8.withContiguousStorageIfAvailable(search)!
    }

    private func search(_ input: UnsafeBufferPointer<UInt8>, _ strategy: Strategy) -> Bool {
        program.instructions.withUnsafeBufferPointer { instructions in
            program.sets.withUnsafeBufferPointer { sets in
                program.ranges.withUnsafeBufferPointer { ranges in
                    let machine = Machine(instructions: instructions, sets: sets, ranges: ranges, input: input)
                    let backtracks =
                        switch strategy {
                        case .automatic: program.splitCount * (input.count + 1) <= Self.backtrackLimit
                        case .backtracking: true
                        case .pikeVM: false
                        }
                    if backtracks {
                        return machine.backtrack(anchored: program.anchoredAtStart, splitCount: program.splitCount)
                    }
                    return machine.simulate(anchored: program.anchoredAtStart)
                }
            }
        }
    }
}

extension ECMARegex {
    /// The two matching strategies over one input. `input` is valid UTF-8 (it comes
    /// from a `String`), so decoding does not validate.
    private struct Machine {
        let instructions: UnsafeBufferPointer<Instruction>
        let sets: UnsafeBufferPointer<ScalarSet>
        let ranges: UnsafeBufferPointer<ClosedRange<UInt32>>
        let input: UnsafeBufferPointer<UInt8>

        // MARK: Memoized backtracking

        func backtrack(anchored: Bool, splitCount: Int) -> Bool {
            let pairs = splitCount * (input.count + 1)
            return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: (pairs + 63) / 64) { visited in
                visited.initialize(repeating: 0)
                // Each pair is pushed at most once, so `pairs` bounds the stack.
                return withUnsafeTemporaryAllocation(of: (pc: Int32, position: Int).self, capacity: pairs) { stack in
                    var start = 0
                    while true {
                        // The memo carries over between starting positions: a pair that
                        // failed from one start fails from any.
                        if backtrack(from: start, visited: visited, stack: stack) { return true }
                        guard !anchored, start < input.count else { return false }
                        start = nextBoundary(after: start)
                    }
                }
            }
        }

        private func backtrack(
            from start: Int, visited: UnsafeMutableBufferPointer<UInt64>,
            stack: UnsafeMutableBufferPointer<(pc: Int32, position: Int)>
        ) -> Bool {
            var pc = 0
            var position = start
            var depth = 0
            while true {
                switch instructions[pc] {
                case .scalar(let expected):
                    if position < input.count {
                        let (scalar, width) = decode(at: position)
                        if scalar == expected {
                            pc += 1
                            position += width
                            continue
                        }
                    }
                case .set(let index):
                    if position < input.count {
                        let (scalar, width) = decode(at: position)
                        if sets[Int(index)].contains(scalar, storage: ranges) {
                            pc += 1
                            position += width
                            continue
                        }
                    }
                case .assert(let assertion):
                    if holds(assertion, at: position) {
                        pc += 1
                        continue
                    }
                case .split(let preferred, let alternative, let slot):
                    let pair = Int(slot) * (input.count + 1) + position
                    let bit: UInt64 = 1 << UInt64(pair & 63)
                    if visited[pair >> 6] & bit == 0 {
                        visited[pair >> 6] |= bit
                        stack[depth] = (alternative, position)
                        depth += 1
                        pc = Int(preferred)
                        continue
                    }
                case .jump(let target):
                    pc = Int(target)
                    continue
                case .match:
                    return true
                }
                // This thread failed: resume the most recent untried alternative.
                guard depth > 0 else { return false }
                depth -= 1
                pc = Int(stack[depth].pc)
                position = stack[depth].position
            }
        }

        // MARK: Pike VM

        /// Advances every thread in lockstep, one code point at a time. A thread is
        /// just an instruction index, kept once per list; `added[pc]` stamps the
        /// position whose list already holds `pc`.
        func simulate(anchored: Bool) -> Bool {
            let count = instructions.count
            // Two thread lists, the closure stack (each pc pushes at most its two
            // successors, plus the root), and the stamps.
            return withUnsafeTemporaryAllocation(of: Int.self, capacity: 5 * count + 1) { buffer in
                var current = UnsafeMutableBufferPointer(rebasing: buffer[0..<count])
                var next = UnsafeMutableBufferPointer(rebasing: buffer[count..<(2 * count)])
                let closure = UnsafeMutableBufferPointer(rebasing: buffer[(2 * count)..<(4 * count + 1)])
                let added = UnsafeMutableBufferPointer(rebasing: buffer[(4 * count + 1)...])
                added.initialize(repeating: -1)
                var threads = 0
                var position = 0
                while true {
                    if !anchored || position == 0 {
                        if addThread(0, at: position, to: current, &threads, closure: closure, added: added) {
                            return true
                        }
                    }
                    guard threads > 0 || !anchored, position < input.count else { return false }
                    let (scalar, width) = decode(at: position)
                    var nextThreads = 0
                    for index in 0..<threads {
                        let pc = current[index]
                        guard consumes(pc, scalar) else { continue }
                        if addThread(pc + 1, at: position + width, to: next, &nextThreads, closure: closure, added: added) {
                            return true
                        }
                    }
                    swap(&current, &next)
                    threads = nextThreads
                    position += width
                }
            }
        }

        /// Adds `pc` and everything reachable from it without consuming input to
        /// `list`; true if that reaches `.match`.
        private func addThread(
            _ pc: Int, at position: Int, to list: UnsafeMutableBufferPointer<Int>, _ count: inout Int,
            closure: UnsafeMutableBufferPointer<Int>, added: UnsafeMutableBufferPointer<Int>
        ) -> Bool {
            closure[0] = pc
            var depth = 1
            while depth > 0 {
                depth -= 1
                let pc = closure[depth]
                guard added[pc] != position else { continue }
                added[pc] = position
                switch instructions[pc] {
                case .scalar, .set:
                    list[count] = pc
                    count += 1
                case .assert(let assertion):
                    if holds(assertion, at: position) {
                        closure[depth] = pc + 1
                        depth += 1
                    }
                case .split(let preferred, let alternative, _):
                    closure[depth] = Int(alternative)
                    closure[depth + 1] = Int(preferred)
                    depth += 2
                case .jump(let target):
                    closure[depth] = Int(target)
                    depth += 1
                case .match:
                    return true
                }
            }
            return false
        }

        // MARK: Shared steps

        @inline(__always)
        private func consumes(_ pc: Int, _ scalar: UInt32) -> Bool {
            switch instructions[pc] {
            case .scalar(let expected): scalar == expected
            case .set(let index): sets[Int(index)].contains(scalar, storage: ranges)
            default: false
            }
        }

        private func holds(_ assertion: Assertion, at position: Int) -> Bool {
            switch assertion {
            case .start: position == 0
            case .end: position == input.count
            case .wordBoundary: isWord(before: position) != isWord(at: position)
            case .notWordBoundary: isWord(before: position) == isWord(at: position)
            }
        }

        // Word characters are ASCII, and every byte of a multi-byte UTF-8 sequence is
        // ≥ 0x80, so the single byte on either side of `position` decides.
        private func isWord(before position: Int) -> Bool {
            position > 0 && Self.isWordByte(input[position - 1])
        }

        private func isWord(at position: Int) -> Bool {
            position < input.count && Self.isWordByte(input[position])
        }

        private static func isWordByte(_ byte: UInt8) -> Bool {
            let lowercased = byte | 0x20
            return (0x61...0x7A).contains(lowercased) || (0x30...0x39).contains(byte) || byte == 0x5F
        }

        /// The code point starting at `position` and its length in bytes.
        @inline(__always)
        private func decode(at position: Int) -> (UInt32, Int) {
            let lead = UInt32(input[position])
            if lead < 0x80 { return (lead, 1) }
            @inline(__always) func continuation(_ offset: Int) -> UInt32 { UInt32(input[position + offset] & 0x3F) }
            if lead < 0xE0 { return ((lead & 0x1F) << 6 | continuation(1), 2) }
            if lead < 0xF0 { return ((lead & 0x0F) << 12 | continuation(1) << 6 | continuation(2), 3) }
            return ((lead & 0x07) << 18 | continuation(1) << 12 | continuation(2) << 6 | continuation(3), 4)
        }

        private func nextBoundary(after position: Int) -> Int {
            var next = position + 1
            while next < input.count, input[next] & 0xC0 == 0x80 { next += 1 }
            return next
        }
    }
}
