import Foundation
import OrlFuzz
import Testing

/// The fuzz targets on the corpus kept in `FuzzCorpus/` (seeds, and every input a
/// fuzzer found), then on seeded mutations of it: a bounded, deterministic fuzz pass
/// in every test run. `scripts/fuzz` runs libFuzzer on the same targets for longer.
/// Every input must return (no trap) within a second.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("FuzzCorpus")

    static func inputs(_ target: String) throws -> [[UInt8]] {
        let directory = corpus.appendingPathComponent(target)
        return try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted().map {
            Array(try Data(contentsOf: directory.appendingPathComponent($0)))
        }
    }

    @Test(arguments: ["yaml", "schema", "api"])
    func theCorpusAndItsMutationsRunWithinBounds(target: String) throws {
        let run = try #require(FuzzTargets.all.first { $0.name == target }?.run)
        let seeds = try Self.inputs(target)
        #expect(!seeds.isEmpty)
        var generator = Mutator(seed: 0x5eed + UInt64(target.utf8.count))
        var slowest = Duration.zero
        let mutations = ProcessInfo.processInfo.environment["ORL_FUZZ_MUTATIONS"].flatMap(Int.init) ?? 300
        for input in seeds + (0..<mutations).map({ _ in generator.mutate(seeds) }) {
            let started = ContinuousClock.now
            run(input)
            slowest = max(slowest, ContinuousClock.now - started)
        }
        #expect(slowest < .seconds(1), "the slowest input took \(slowest)")
    }
}

/// libFuzzer's simplest mutations, seeded: flip, insert, erase, duplicate, splice.
struct Mutator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next(_ bound: Int) -> Int {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return bound <= 0 ? 0 : Int((state >> 33) % UInt64(bound))
    }

    static let interesting: [[UInt8]] = [
        "*", "&a ", "*a", "<<: ", "\\u002d", "\\ud800", "9223372036854775808", "1e309", "-", "[", "{", "\"", "\0", "\n  ", ": ", "---\n",
        ".nan", "!!binary ", "\u{FEFF}",
    ].map { Array($0.utf8) }

    mutating func mutate(_ seeds: [[UInt8]]) -> [UInt8] {
        var bytes = seeds[next(seeds.count)]
        for _ in 0...next(4) {
            let at = next(bytes.count + 1)
            switch next(6) {
            case 0 where !bytes.isEmpty: bytes[min(at, bytes.count - 1)] ^= UInt8(1 << next(8))
            case 1: bytes.insert(contentsOf: Self.interesting[next(Self.interesting.count)], at: at)
            case 2 where !bytes.isEmpty: bytes.removeSubrange(at..<min(bytes.count, at + 1 + next(16)))
            case 3:
                let start = next(bytes.count + 1)
                bytes.insert(contentsOf: bytes[start..<min(bytes.count, start + next(64))], at: at)
            case 4:
                let other = seeds[next(seeds.count)]
                let start = next(other.count + 1)
                bytes.insert(contentsOf: other[start..<min(other.count, start + next(128))], at: at)
            default: bytes.insert(UInt8(truncatingIfNeeded: next(256)), at: at)
            }
        }
        return bytes
    }
}
