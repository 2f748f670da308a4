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
        String(decoding: bytes(report, files: files, style: TextStyle(enabled: color)), as: UTF8.self)
    }

    /// `text` without color, as bytes: what `apply` prints and keeps beside the index.
    static func plain(_ report: ValidationReport, files: Int) -> [UInt8] {
        bytes(report, files: files, style: TextStyle(enabled: false))
    }

    /// The one rendering of a report, appended to one buffer rather than joined from
    /// strings (an apply prints every warning of the fleet, 3,334 of them in the
    /// benchmark's; interpolating a location or a code went through `String(describing:)`).
    private static func bytes(_ report: ValidationReport, files: Int, style: TextStyle) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(report.diagnostics.count * 160 + 96)
        func start(_ code: String) { if style.enabled { out.append(contentsOf: ("\u{1B}[" + code + "m").utf8) } }
        func end() { if style.enabled { out.append(contentsOf: "\u{1B}[0m".utf8) } }
        func place(_ location: SourceLocation?) {
            guard let location else { return }
            start(TextStyle.boldCode)
            out.append(contentsOf: location.file.utf8)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: String(location.line).utf8)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: String(location.column).utf8)
            out.append(contentsOf: ": ".utf8)
            end()
        }
        for diagnostic in report.diagnostics {
            place(diagnostic.location)
            start(diagnostic.severity == .error ? TextStyle.redCode : TextStyle.magentaCode)
            out.append(contentsOf: (diagnostic.severity == .error ? "error[" : "warning[").utf8)
            out.append(contentsOf: diagnostic.code.rawValue.utf8)
            out.append(UInt8(ascii: "]"))
            end()
            start(TextStyle.boldCode)
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: headline(diagnostic).utf8)
            end()
            out.append(UInt8(ascii: "\n"))
            for note in diagnostic.notes {
                place(note.location)
                start(TextStyle.cyanCode)
                out.append(contentsOf: "note".utf8)
                end()
                out.append(contentsOf: ": ".utf8)
                out.append(contentsOf: note.message.utf8)
                out.append(UInt8(ascii: "\n"))
            }
        }
        out.append(contentsOf: summary(report, files: files, style: style).utf8)
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

    static let boldCode = "1", redCode = "1;31", magentaCode = "1;35", cyanCode = "1;36"

    func bold(_ text: String) -> String { wrap(Self.boldCode, text) }
    func red(_ text: String) -> String { wrap(Self.redCode, text) }
    func yellow(_ text: String) -> String { wrap("1;33", text) }
    func green(_ text: String) -> String { wrap("1;32", text) }
    func magenta(_ text: String) -> String { wrap(Self.magentaCode, text) }
    func cyan(_ text: String) -> String { wrap(Self.cyanCode, text) }
}
