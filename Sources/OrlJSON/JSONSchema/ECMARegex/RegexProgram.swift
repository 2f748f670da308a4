extension ECMARegex {
    /// One step of the matcher. Operands are `Int32` so an instruction stays small.
    enum Instruction: Sendable {
        /// Consume this code point.
        case scalar(UInt32)
        /// Consume a code point in `Program.sets[index]`.
        case set(Int32)
        case assert(Assertion)
        /// Try `preferred`, and on failure `alternative`, at the same position. `slot`
        /// numbers the splits densely: the matcher remembers which (slot, position)
        /// pairs it has already explored.
        case split(preferred: Int32, alternative: Int32, slot: Int32)
        case jump(Int32)
        case match
    }

    /// A pattern compiled for the matcher: a flat instruction array starting at 0.
    struct Program: Sendable {
        var instructions: [Instruction] = []
        var sets: [ScalarSet] = []
        /// The non-ASCII ranges of all `sets`.
        var ranges: [ClosedRange<UInt32>] = []
        var splitCount = 0
        /// Whether every match must start at position 0 (the pattern begins with `^`),
        /// so a search need not try other starting positions.
        var anchoredAtStart = false

        /// Counted repetition is compiled by copying its body, so `(a{1000}){1000}`
        /// would be a million instructions; such patterns go to the fallback engine.
        static let maxInstructions = 20_000

        init(_ node: Node) throws(CompileError) {
            anchoredAtStart = Self.isAnchoredAtStart(node)
            try emit(node)
            append(.match)
        }

        private static func isAnchoredAtStart(_ node: Node) -> Bool {
            switch node {
            case .assertion(.start): true
            case .concatenation(let nodes): nodes.first.map(isAnchoredAtStart) ?? false
            case .alternation(let nodes): nodes.allSatisfy(isAnchoredAtStart)
            case .repetition(let body, let min, _, _): min > 0 && isAnchoredAtStart(body)
            default: false
            }
        }

        private var next: Int32 { Int32(instructions.count) }

        private mutating func append(_ instruction: Instruction) {
            instructions.append(instruction)
        }

        /// A split whose targets are patched later (`instructions[at] = ...`).
        private mutating func split(_ preferred: Int32, _ alternative: Int32) -> Instruction {
            defer { splitCount += 1 }
            return .split(preferred: preferred, alternative: alternative, slot: Int32(splitCount))
        }

        private mutating func emit(_ node: Node) throws(CompileError) {
            guard instructions.count < Self.maxInstructions else {
                throw .unsupported("patterns longer than \(Self.maxInstructions) instructions once repetitions are expanded")
            }
            switch node {
            case .scalar(let value):
                append(.scalar(value))
            case .set(let ranges):
                append(.set(Int32(sets.count)))
                sets.append(ScalarSet(ranges, storage: &self.ranges))
            case .assertion(let assertion):
                append(.assert(assertion))
            case .concatenation(let nodes):
                for node in nodes { try emit(node) }
            case .alternation(let nodes):
                // split L1, next; L1: a; jump end; next: split L2, ...; last alternative; end:
                var jumps: [Int] = []
                for node in nodes.dropLast() {
                    let fork = instructions.count
                    append(.match)  // placeholder
                    try emit(node)
                    jumps.append(instructions.count)
                    append(.match)  // placeholder
                    instructions[fork] = split(Int32(fork + 1), next)
                }
                try emit(nodes[nodes.count - 1])
                for jump in jumps { instructions[jump] = .jump(next) }
            case .repetition(let body, let min, let max, let greedy):
                try emitRepetition(body, min: min, max: max, greedy: greedy)
            }
        }

        private mutating func emitRepetition(_ body: Node, min: Int, max: Int?, greedy: Bool) throws(CompileError) {
            // Checked up front as well as in `emit`: copies of an empty body add no instructions.
            guard Swift.max(min, max ?? 0) <= Self.maxInstructions else {
                throw .unsupported("repetition counts above \(Self.maxInstructions)")
            }
            guard let max else {
                if min == 0 {
                    // loop: split body, end; body; jump loop; end:
                    let loop = instructions.count
                    append(.match)  // placeholder
                    try emit(body)
                    append(.jump(Int32(loop)))
                    instructions[loop] = greedy ? split(Int32(loop + 1), next) : split(next, Int32(loop + 1))
                } else {
                    // x{n,} is x{n-1} then x+: body; split body, end
                    for _ in 0..<(min - 1) { try emit(body) }
                    let loop = next
                    try emit(body)
                    append(greedy ? split(loop, next + 1) : split(next + 1, loop))
                }
                return
            }
            for _ in 0..<min { try emit(body) }
            guard max > min else { return }
            // x{n,m}: n copies, then m-n optional copies that each may skip to the end.
            var forks: [Int] = []
            for _ in min..<max {
                forks.append(instructions.count)
                append(.match)  // placeholder
                try emit(body)
            }
            for fork in forks {
                instructions[fork] = greedy ? split(Int32(fork + 1), next) : split(next, Int32(fork + 1))
            }
        }
    }
}
