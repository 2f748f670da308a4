/// Left-aligned columns separated by two spaces, as `kubectl get` and `describe` print
/// them. Several tables can share widths (compute them over all their rows) so that
/// sections of one report line up.
enum TextTable {
    static func widths(_ rows: [[String]]) -> [Int] {
        var widths: [Int] = []
        for row in rows {
            for (i, cell) in row.enumerated() {
                if i == widths.count { widths.append(0) }
                widths[i] = max(widths[i], cell.count)
            }
        }
        return widths
    }

    /// One line per row, each ending in a newline, with no trailing spaces: the last
    /// non-empty cell of a row is not padded.
    static func render(_ rows: [[String]], widths: [Int]? = nil, indent: Int = 0) -> String {
        let widths = widths ?? self.widths(rows)
        var out = ""
        for row in rows {
            var line = String(repeating: " ", count: indent)
            let last = row.lastIndex { !$0.isEmpty } ?? -1
            for (i, cell) in row.enumerated() where i <= last {
                line += i < last ? cell.padding(toLength: widths[i] + 2) : cell
            }
            out += line + "\n"
        }
        return out
    }
}

extension String {
    /// The string with spaces added up to `length` characters: how columns line up.
    func padding(toLength length: Int) -> String {
        count >= length ? self : self + String(repeating: " ", count: length - count)
    }
}
