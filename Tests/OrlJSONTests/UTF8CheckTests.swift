import Testing

@testable import OrlJSON

/// The UTF-8 check ahead of every parse skips ASCII a word at a time: it must find the
/// same first bad byte as decoding every scalar from the start does.
struct UTF8CheckTests {
    /// The check as it was: every scalar decoded in turn.
    static func reference(_ bytes: [UInt8]) -> Int? {
        var iterator = bytes.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let scalar): offset += scalar.count
            case .error: return offset
            case .emptyInput: return nil
            }
        }
    }

    @Test func findsTheSameFirstBadByteAsAScalarByScalarPass() {
        // Pieces that straddle the 8-byte words at every alignment: ASCII runs, valid
        // two- to four-byte scalars, and each kind of bad sequence (a lone continuation,
        // a truncated lead, an overlong form, a surrogate, past U+10FFFF, 0xFF).
        let pieces: [[UInt8]] = [
            Array("a".utf8), Array("{\"k\": 12}".utf8), Array("0123456789abcdef".utf8), Array("é".utf8), Array("€".utf8),
            Array("😀".utf8), [0x80], [0xC3], [0xE2, 0x82], [0xF0, 0x9F, 0x98], [0xC0, 0xAF], [0xED, 0xA0, 0x80],
            [0xF4, 0x90, 0x80, 0x80], [0xFF],
        ]
        var generator = SplitMix64(seed: 0x5EED)
        var bad = 0
        for _ in 0..<4000 {
            var bytes: [UInt8] = []
            for _ in 0..<Int(generator.next() % 8) { bytes += pieces[Int(generator.next() % UInt64(pieces.count))] }
            let expected = Self.reference(bytes)
            if expected != nil { bad += 1 }
            #expect(JSONParser.firstInvalidUTF8Offset(bytes) == expected, "\(bytes)")
        }
        // Both kinds were tried.
        #expect(bad > 1000 && bad < 3900)
        #expect(JSONParser.firstInvalidUTF8Offset([]) == nil)
        #expect(JSONParser.firstInvalidUTF8Offset(Array("0123456789abcdef0123456".utf8) + [0x80]) == 23)
    }

    @Test func anErrorNamesTheBadByteAfterLongASCII() {
        let bytes = Array("{\"message\": \"0123456789abcdefghij".utf8) + [0xE2, 0x82] + Array("\"}".utf8)
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(bytes: bytes, file: "f.json") }
        do {
            _ = try JSONParser.parse(bytes: bytes, file: "f.json", keeping: ["usage"])
            Issue.record("parsed")
        } catch {
            #expect(error.location == SourceLocation(file: "f.json", line: 1, column: 34))
        }
    }
}
