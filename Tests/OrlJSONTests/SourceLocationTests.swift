import OrlJSON
import Testing

/// Locations intern their file name (so that copying one costs no reference counting):
/// they must still behave exactly as (file, line, column) values.
@Suite struct SourceLocationTests {
    @Test func equalityHashingAndOrderFollowFileLineColumn() {
        let a = SourceLocation(file: "a.yaml", line: 3, column: 7)
        #expect(a == SourceLocation(file: "a" + ".yaml", line: 3, column: 7))
        #expect(a.hashValue == SourceLocation(file: String("xa.yaml".dropFirst()), line: 3, column: 7).hashValue)
        #expect(a != SourceLocation(file: "b.yaml", line: 3, column: 7))
        #expect(a != a.at(line: 3, column: 8))
        #expect(a.at(line: 9, column: 1) == SourceLocation(file: "a.yaml", line: 9, column: 1))
        // Files order by name before lines: b.yaml:1 comes after a.yaml:100.
        let sorted = [
            SourceLocation(file: "b.yaml", line: 1, column: 1), a.at(line: 100, column: 1), a, a.at(line: 3, column: 2),
        ].sorted()
        #expect(sorted.map(\.description) == ["a.yaml:3:2", "a.yaml:3:7", "a.yaml:100:1", "b.yaml:1:1"])
        #expect(Set([a, a.at(line: 3, column: 7), SourceLocation(file: "a.yaml", line: 3, column: 7)]).count == 1)
    }

    @Test func fileNamesAreKeptExactlyAsWritten() {
        // Precomposed é and e + combining accent are two different file names on disk.
        let composed = SourceLocation(file: "caf\u{E9}.yaml", line: 1, column: 1)
        let decomposed = SourceLocation(file: "cafe\u{301}.yaml", line: 1, column: 1)
        #expect(composed != decomposed)
        #expect(Array(composed.file.unicodeScalars) == Array("caf\u{E9}.yaml".unicodeScalars))
        #expect(Array(decomposed.file.unicodeScalars) == Array("cafe\u{301}.yaml".unicodeScalars))
    }

    @Test func mutatingFieldsKeepsTheOthers() {
        var location = SourceLocation.file("<stdin>")
        location.line = 12
        location.column = 4
        #expect(location.description == "<stdin>:12:4")
        location.file = "other.json"
        #expect(location == SourceLocation(file: "other.json", line: 12, column: 4))
    }
}
