import Foundation
public import OrlCore

/// How `validate` (and later commands that validate first) print diagnostics.
enum DiagnosticRenderer {
    /// Compiler style, one line per diagnostic, `note:` lines after it, then a summary:
    ///
    ///     manifests/wf.yaml:14:9: error[dag.cycle]: dependency cycle: a → b → a
    ///     manifests/wf.yaml:20:9: note: "b" depends on "a"
    static func text(_ report: ValidationReport, files: Int, color: Bool) -> String {
        let style = TextStyle(enabled: color)
        var out = ""
        for diagnostic in report.diagnostics {
            let place = diagnostic.location.map { "\($0): " } ?? ""
            let severity =
                diagnostic.severity == .error ? style.red("error[\(diagnostic.code)]") : style.magenta("warning[\(diagnostic.code)]")
            // Schema messages speak of a field's value; the field's path makes them stand alone.
            let subject = diagnostic.code == .schemaInvalid ? diagnostic.path.flatMap { $0.isRoot ? nil : "\($0): " } ?? "" : ""
            out += style.bold(place) + severity + style.bold(": " + subject + diagnostic.message) + "\n"
            for note in diagnostic.notes {
                out += style.bold(note.location.map { "\($0): " } ?? "") + style.cyan("note") + ": " + note.message + "\n"
            }
        }
        out += summary(report, files: files, style: style) + "\n"
        return out
    }

    private static func summary(_ report: ValidationReport, files: Int, style: TextStyle) -> String {
        let scope = "\(plural(report.resourceCount, "resource")) in \(plural(files, "file"))"
        let errors = report.errorCount
        let warnings = report.warningCount
        if errors == 0 && warnings == 0 { return style.green("valid: ") + scope }
        var parts: [String] = []
        if errors > 0 { parts.append(style.red(plural(errors, "error"))) }
        if warnings > 0 { parts.append(style.magenta(plural(warnings, "warning"))) }
        return (errors == 0 ? style.green("valid: ") : style.red("invalid: ")) + parts.joined(separator: ", ") + " in " + scope
    }

    static func plural(_ count: Int, _ noun: String) -> String {
        "\(count) \(noun)\(count == 1 ? "" : "s")"
    }

    /// The `-o json` contract (documented in docs/cli.md); later commands embed the
    /// same diagnostic objects.
    struct JSONReport: Encodable {
        var valid: Bool
        var resources: Int
        var files: Int
        var errors: Int
        var warnings: Int
        var diagnostics: [JSONDiagnostic]
    }

    struct JSONDiagnostic: Encodable {
        struct Note: Encodable {
            var message: String
            var file: String?
            var line: Int?
            var column: Int?
        }

        var severity: String
        var code: String
        var message: String
        var file: String?
        var line: Int?
        var column: Int?
        var resource: String?
        var namespace: String?
        var path: String?
        var notes: [Note]

        init(_ d: Diagnostic) {
            severity = d.severity.rawValue
            code = d.code.rawValue
            message = d.message
            file = d.location?.file
            line = d.location?.line
            column = d.location?.column
            resource = d.resource?.description
            namespace = d.resource?.namespace
            path = d.path.flatMap { $0.isRoot ? nil : $0.description }
            notes = d.notes.map { Note(message: $0.message, file: $0.location?.file, line: $0.location?.line, column: $0.location?.column) }
        }
    }

    static func json(_ report: ValidationReport, files: Int) -> String {
        let value = JSONReport(
            valid: report.isValid, resources: report.resourceCount, files: files, errors: report.errorCount,
            warnings: report.warningCount, diagnostics: report.diagnostics.map(JSONDiagnostic.init))
        return JSONOutput.encode(value)
    }
}

enum JSONOutput {
    static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding plain structs of strings and numbers cannot fail.
        let data = try! encoder.encode(value)
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

/// ANSI styling for terminals; plain text otherwise (and when NO_COLOR is set).
struct TextStyle {
    var enabled: Bool

    static func forStandardOutput() -> TextStyle {
        TextStyle(enabled: System.isTerminal(1) && System.environment("NO_COLOR") == nil && System.environment("TERM") != "dumb")
    }

    private func wrap(_ code: String, _ text: String) -> String {
        enabled && !text.isEmpty ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    func bold(_ text: String) -> String { wrap("1", text) }
    func red(_ text: String) -> String { wrap("1;31", text) }
    func green(_ text: String) -> String { wrap("1;32", text) }
    func magenta(_ text: String) -> String { wrap("1;35", text) }
    func cyan(_ text: String) -> String { wrap("1;36", text) }
}
