import OrlCore
import OrlJSON
import OrlYAML

let parser = YAMLParser()

func parse(_ text: String, limits: YAMLParser.Limits = YAMLParser.Limits()) -> ParsedSource {
    YAMLParser(limits: limits).parse(text, file: "m.yaml")
}

/// The root of the only document, when the text parses without diagnostics.
func root(_ text: String) -> Node? {
    let parsed = parse(text)
    guard parsed.diagnostics.isEmpty, parsed.documents.count == 1 else { return nil }
    return parsed.documents[0].root
}

func at(_ line: Int, _ column: Int) -> SourceLocation {
    SourceLocation(file: "m.yaml", line: line, column: column)
}

extension Node {
    /// Follows a path of keys (strings) and indexes (ints).
    subscript(path path: Any...) -> Node? {
        var node: Node? = self
        for step in path {
            switch step {
            case let key as String: node = node?[key]
            case let index as Int: node = node?.elements.flatMap { index < $0.count ? $0[index] : nil }
            default: return nil
            }
        }
        return node
    }
}
