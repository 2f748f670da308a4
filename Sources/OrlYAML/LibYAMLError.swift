import CYAML
import OrlCore
import OrlJSON

/// A libyaml failure turned into a diagnostic that says where and what to do.
///
/// libyaml reports a problem (`did not find expected key`) at a problem mark, often
/// with a context (`while parsing a block mapping`) at an earlier mark. The message
/// keeps libyaml's wording, which users can search for, adds a hint for the common
/// causes, and points a note at the context.
struct LibYAMLError {
    let diagnostic: Diagnostic
    /// The input is not UTF-8 text: nothing of the file should be used.
    let rejectsWholeFile: Bool

    init(_ parser: yaml_parser_t, input: UnsafeBufferPointer<UInt8>, file: String) {
        let problem = parser.problem.map { String(cString: $0) } ?? "unknown error"
        switch parser.error {
        case YAML_READER_ERROR:
            diagnostic = Self.encodingDiagnostic(
                problem: problem, value: Int(parser.problem_value), input: input,
                at: Self.location(ofByte: parser.problem_offset, in: input, file: file)
            )
            rejectsWholeFile = true
        case YAML_SCANNER_ERROR, YAML_PARSER_ERROR:
            diagnostic = Self.syntaxDiagnostic(
                problem: problem, problemMark: parser.problem_mark,
                context: parser.context.map { String(cString: $0) }, contextMark: parser.context_mark,
                input: input, file: file
            )
            rejectsWholeFile = false
        default:
            diagnostic = .error(.yamlLimit, "ran out of memory while reading the file", at: .file(file))
            rejectsWholeFile = false
        }
    }

    // MARK: - Syntax

    private static func syntaxDiagnostic(
        problem: String, problemMark: yaml_mark_t, context: String?, contextMark: yaml_mark_t,
        input: UnsafeBufferPointer<UInt8>, file: String
    ) -> Diagnostic {
        // A key without its colon is noticed only where scanning gave up, usually the
        // next line; the key itself is what the user has to fix.
        if problem == "could not find expected ':'" {
            return .error(
                .yamlSyntax, "this key is not followed by \":\"; " + missingColonHint,
                at: location(contextMark, file: file)
            )
        }
        var message = problem
        if let context { message += " " + context }
        let line = sourceLine(Int(problemMark.line), in: input)
        if let hint = hint(problem: problem, line: line, column: Int(problemMark.column)) {
            message += "; " + hint
        }
        var notes: [Diagnostic.Note] = []
        if let context, contextMark.line != problemMark.line || contextMark.column != problemMark.column {
            notes.append(Diagnostic.Note(contextNote(context), at: location(contextMark, file: file)))
        }
        return .error(.yamlSyntax, message, at: location(problemMark, file: file), notes: notes)
    }

    private static let missingColonHint =
        "add the colon, or if this line continues a value, quote the value or use | or >"

    /// What usually causes the problem, for the problems users hit most.
    private static func hint(problem: String, line: [Unicode.Scalar], column: Int) -> String? {
        let tabHint = "YAML does not allow tabs for indentation: indent with spaces"
        if line.prefix(while: { $0 == " " || $0 == "\t" }).contains("\t") { return tabHint }
        switch problem {
        case "mapping values are not allowed in this context":
            return "a plain value cannot contain \": \": quote the value, or check the indentation"
        case "did not find expected key":
            return "check the indentation: the keys of one mapping must start in the same column"
        case "found character that cannot start any token":
            guard column < line.count else { return nil }
            switch line[column] {
            case "\t": return tabHint
            case "@", "`": return "a value that starts with \"\(line[column])\" must be quoted"
            default: return nil
            }
        default:
            return nil
        }
    }

    /// `while parsing a block mapping` becomes `the block mapping starts here`.
    private static func contextNote(_ context: String) -> String {
        var subject = Substring(context)
        for prefix in ["while parsing ", "while scanning "] where subject.hasPrefix(prefix) {
            subject = subject.dropFirst(prefix.count)
        }
        for article in ["a ", "an "] where subject.hasPrefix(article) {
            subject = subject.dropFirst(article.count)
        }
        guard subject.count < context.count else { return context }
        // libyaml's "simple key" is an ordinary `key:`.
        return "the \(subject == "simple key" ? "key" : subject) starts here"
    }

    // MARK: - Encoding

    private static func encodingDiagnostic(
        problem: String, value: Int, input: UnsafeBufferPointer<UInt8>, at location: SourceLocation
    ) -> Diagnostic {
        if input.count >= 2, (input[0] == 0xFF && input[1] == 0xFE) || (input[0] == 0xFE && input[1] == 0xFF) {
            return .error(.fileUnreadable, "file is encoded as UTF-16; save it as UTF-8", at: .file(location.file))
        }
        guard problem == "control characters are not allowed" else {
            let byte = value >= 0 ? " 0x" + hex(value, digits: 2) : ""
            return .error(.fileUnreadable, "file is not valid UTF-8 (\(problem)\(byte)); save it as UTF-8", at: location)
        }
        if value == 0 {
            return .error(
                .fileUnreadable, "file contains a NUL byte, so it is not text; manifests must be UTF-8 text",
                at: location
            )
        }
        let escape = value < 0x100 ? "\\x" + hex(value, digits: 2) : "\\u" + hex(value, digits: 4)
        return .error(
            .yamlSyntax,
            "control character U+\(hex(value, digits: 4)) is not allowed in YAML; remove it, "
                + "or write it as the escape \"\(escape)\" inside a double-quoted string",
            at: location
        )
    }

    private static func hex(_ value: Int, digits: Int) -> String {
        let text = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    // MARK: - Positions

    private static func location(_ mark: yaml_mark_t, file: String) -> SourceLocation {
        SourceLocation(file: file, line: Int(mark.line) + 1, column: Int(mark.column) + 1)
    }

    /// The location of a byte, counted like libyaml counts marks: a line break is LF,
    /// CR LF or a lone CR, and columns count characters, not bytes.
    private static func location(ofByte offset: Int, in input: UnsafeBufferPointer<UInt8>, file: String) -> SourceLocation {
        var line = 1
        var column = 1
        var index = 0
        let end = min(offset, input.count)
        while index < end {
            let byte = input[index]
            if byte == 0x0A || (byte == 0x0D && (index + 1 == input.count || input[index + 1] != 0x0A)) {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80, byte != 0x0D {
                // Not a UTF-8 continuation byte: a new character.
                column += 1
            }
            index += 1
        }
        return SourceLocation(file: file, line: line, column: column)
    }

    /// The characters of a 0-based line, for looking at what libyaml choked on.
    private static func sourceLine(_ line: Int, in input: UnsafeBufferPointer<UInt8>) -> [Unicode.Scalar] {
        var start = 0
        var remaining = line
        while remaining > 0, let newline = input[start...].firstIndex(of: 0x0A) {
            start = newline + 1
            remaining -= 1
        }
        guard remaining == 0 else { return [] }
        let end = input[start...].firstIndex(of: 0x0A) ?? input.count
        return Array(String(decoding: UnsafeBufferPointer(rebasing: input[start..<end]), as: UTF8.self).unicodeScalars)
    }
}
