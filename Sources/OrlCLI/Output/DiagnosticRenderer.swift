import COrlBuildInfo
import OrlCore
import OrlJSON

/// How `validate` (and later commands that validate first) print diagnostics.
enum DiagnosticRenderer {
    /// Compiler style, one line per diagnostic, `note:` lines after it, then a summary:
    ///
    ///     manifests/wf.yaml:14:9: error[dag.cycle]: dependency cycle: a → b → a
    ///     manifests/wf.yaml:20:9: note: "b" depends on "a"
    static func text(_ report: ValidationReport, files: Int, color: Bool) -> String {
        guard color else { return String(decoding: plain(report, files: files), as: UTF8.self) }
        let style = TextStyle(enabled: color)
        var out = ""
        // Strings joined, not interpolated: interpolating a location or a code goes
        // through `String(describing:)`'s dynamic casts, a tenth of a no-change apply
        // that prints thousands of warnings.
        for diagnostic in report.diagnostics {
            let place = diagnostic.location.map { $0.description + ": " } ?? ""
            let code = diagnostic.code.rawValue
            let severity = diagnostic.severity == .error ? style.red("error[" + code + "]") : style.magenta("warning[" + code + "]")
            out += style.bold(place) + severity + style.bold(": " + headline(diagnostic)) + "\n"
            for note in diagnostic.notes {
                out += style.bold(note.location.map { $0.description + ": " } ?? "") + style.cyan("note") + ": " + note.message + "\n"
            }
        }
        out += summary(report, files: files, style: style) + "\n"
        return out
    }

    /// `text` without color, appended to one buffer instead of joined from strings (an
    /// apply prints every warning of the fleet, 3,334 of them in the benchmark's).
    static func plain(_ report: ValidationReport, files: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(report.diagnostics.count * 160 + 96)
        func place(_ location: SourceLocation?) {
            guard let location else { return }
            out.append(contentsOf: location.file.utf8)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: String(location.line).utf8)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: String(location.column).utf8)
            out.append(contentsOf: ": ".utf8)
        }
        for diagnostic in report.diagnostics {
            place(diagnostic.location)
            out.append(contentsOf: (diagnostic.severity == .error ? "error[" : "warning[").utf8)
            out.append(contentsOf: diagnostic.code.rawValue.utf8)
            out.append(contentsOf: "]: ".utf8)
            out.append(contentsOf: headline(diagnostic).utf8)
            out.append(UInt8(ascii: "\n"))
            for note in diagnostic.notes {
                place(note.location)
                out.append(contentsOf: "note: ".utf8)
                out.append(contentsOf: note.message.utf8)
                out.append(UInt8(ascii: "\n"))
            }
        }
        out.append(contentsOf: summary(report, files: files, style: TextStyle(enabled: false)).utf8)
        out.append(UInt8(ascii: "\n"))
        return out
    }

    /// The form in which `apply` keeps its warnings beside the manifest index (what
    /// `ManifestSourceOptions.plan` writes on standard error), so that an apply with no
    /// file changed prints them as they are. A build from another commit renders in a form
    /// of its own and does not take them. A build whose commit does not say what it renders
    /// (uncommitted changes, or made without git) keeps nothing and takes nothing: its output
    /// is always its own.
    static let keptForm: String? =
        orl_build_dirty() != 0 || Version.commit == "unknown" ? nil : "diagnostics-text-1 orlctl " + Orlctl.version + " " + Version.commit

    /// What `apply` prints on standard error for a report without errors, in `keptForm`;
    /// nil for a report with errors (never kept: such an apply writes nothing).
    static func kept(_ report: ValidationReport, files: Int) -> [UInt8]? {
        guard !report.diagnostics.hasErrors else { return nil }
        return report.diagnostics.isEmpty ? [] : plain(report, files: files)
    }

    /// The message as it stands alone on a line: schema messages speak of a field's
    /// value, so the field's path goes in front of them.
    static func headline(_ diagnostic: Diagnostic) -> String { diagnostic.headline }

    private static func summary(_ report: ValidationReport, files: Int, style: TextStyle) -> String {
        let scope = "\(plural(report.resourceCount, "resource")) in \(plural(files, "file"))"
        let errors = report.errorCount
        let warnings = report.warningCount
        if errors == 0 && warnings == 0 { return style.green("valid: ") + scope }
        var parts: [String] = []
        if errors > 0 { parts.append(style.red(plural(errors, "error"))) }
        if warnings > 0 { parts.append(style.magenta(plural(warnings, "warning"))) }
        return (errors == 0 ? style.green("valid: ") : style.red("invalid: ")) + parts.joined(separator: ", ") + "; " + scope
    }

    static func plural(_ count: Int, _ noun: String) -> String {
        "\(count) \(noun)\(count == 1 ? "" : "s")"
    }

    /// The `-o json` contract (docs/diagnostics.md); later commands embed the same
    /// diagnostic objects.
    static func json(_ report: ValidationReport, files: Int) -> String {
        JSONValue.object([
            ("valid", .bool(report.isValid)),
            ("resources", .int(report.resourceCount)),
            ("files", .int(files)),
            ("errors", .int(report.errorCount)),
            ("warnings", .int(report.warningCount)),
            ("diagnostics", .array(report.diagnostics.map(json))),
        ]).rendered()
    }

    static func json(_ d: Diagnostic) -> JSONValue {
        .object([
            ("severity", .string(d.severity.rawValue)),
            ("code", .string(d.code.rawValue)),
            ("message", .string(d.message)),
            ("file", d.location.map { .string($0.file) }),
            ("line", d.location.map { .int($0.line) }),
            ("column", d.location.map { .int($0.column) }),
            ("resource", d.resource.map { .string($0.description) }),
            ("namespace", d.resource.map { .string($0.namespace) }),
            ("path", d.path.flatMap { $0.isRoot ? nil : .string($0.description) }),
            (
                "notes",
                .array(
                    d.notes.map { note in
                        .object([
                            ("message", .string(note.message)),
                            ("file", note.location.map { .string($0.file) }),
                            ("line", note.location.map { .int($0.line) }),
                            ("column", note.location.map { .int($0.column) }),
                        ])
                    })
            ),
        ])
    }
}

/// ANSI styling for terminals; plain text otherwise (and when NO_COLOR is set).
struct TextStyle {
    var enabled: Bool

    static func forStandardOutput() -> TextStyle {
        TextStyle(enabled: System.standardOutputIsTerminal && System.environment("NO_COLOR") == nil && System.environment("TERM") != "dumb")
    }

    private func wrap(_ code: String, _ text: String) -> String {
        enabled && !text.isEmpty ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    func bold(_ text: String) -> String { wrap("1", text) }
    func red(_ text: String) -> String { wrap("1;31", text) }
    func yellow(_ text: String) -> String { wrap("1;33", text) }
    func green(_ text: String) -> String { wrap("1;32", text) }
    func magenta(_ text: String) -> String { wrap("1;35", text) }
    func cyan(_ text: String) -> String { wrap("1;36", text) }
}
