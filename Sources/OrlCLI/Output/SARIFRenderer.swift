import OrlCore
import OrlJSON
import OrlManifests

/// `validate -o sarif`: the report as SARIF 2.1.0, the format GitHub code scanning (and
/// most CI dashboards) ingest, so manifest problems show up as alerts on the lines that
/// cause them.
enum SARIFRenderer {
    static let schema = "https://json.schemastore.org/sarif-2.1.0.json"
    static let informationURI = "https://orl.dev"
    /// The name under which results carry their own fingerprint (see `fingerprint`).
    static let fingerprintName = "orlDiagnostic/v1"

    /// With `baseline` (a diagnostic's fingerprint → `new` or `unchanged`), results say
    /// whether the change under review brought them (SARIF's `baselineState`).
    /// A result that is not a diagnostic: what `review` reports as an escalation.
    struct Extra {
        var rule: DiagnosticInfo
        var message: String
        var location: SourceLocation?
        var fingerprint: String
    }

    /// `extra` results come after the diagnostics, under rules of their own, marked new.
    static func render(_ report: ValidationReport, baseline: [String: String]? = nil, extra: [Extra] = []) -> String {
        // Every known code is a rule, not only the ones that occur, so a rule's index
        // (which results point at) is the same in every run.
        var rules = DiagnosticCode.catalog
        var ruleIndex = Dictionary(uniqueKeysWithValues: rules.enumerated().map { ($1.code, $0) })
        for diagnostic in report.diagnostics where ruleIndex[diagnostic.code] == nil {
            ruleIndex[diagnostic.code] = rules.count
            rules.append(diagnostic.code.info)
        }
        for item in extra where ruleIndex[item.rule.code] == nil {
            ruleIndex[item.rule.code] = rules.count
            rules.append(item.rule)
        }
        let extraResults = extra.map { item -> JSONValue in
            .object([
                ("ruleId", .string(item.rule.code.rawValue)),
                ("ruleIndex", .int(ruleIndex[item.rule.code]!)),
                ("level", .string("warning")),
                ("message", .object([("text", .string(item.message))])),
                ("locations", item.location.flatMap(physicalLocation).map { .array([.object([("physicalLocation", $0)])]) }),
                ("partialFingerprints", .object([(fingerprintName, .string(item.fingerprint))])),
                ("baselineState", .string("new")),
            ])
        }
        let run = JSONValue.object([
            (
                "tool",
                .object([
                    (
                        "driver",
                        .object([
                            ("name", .string("orlctl")),
                            ("informationUri", .string(informationURI)),
                            ("semanticVersion", .string(Orlctl.version)),
                            ("rules", .array(rules.map(rule))),
                        ])
                    )
                ])
            ),
            // orl counts columns in Unicode code points, as libyaml does; SARIF's
            // default is UTF-16 code units, which differs for astral characters.
            ("columnKind", .string("unicodeCodePoints")),
            (
                "results",
                .array(
                    report.diagnostics.map { result($0, ruleIndex: ruleIndex[$0.code]!, baselineState: baseline?[$0.fingerprint]) }
                        + extraResults)
            ),
        ])
        return JSONValue.object([
            ("$schema", .string(schema)),
            ("version", .string("2.1.0")),
            ("runs", .array([run])),
        ]).rendered()
    }

    private static func rule(_ info: DiagnosticInfo) -> JSONValue {
        // Code scanning shows `help` as the rule's documentation, so it says both what
        // the problem is and what to do, as the docs table does.
        let help = info.summary + "\n\n" + info.help
        return .object([
            ("id", .string(info.code.rawValue)),
            ("name", .string(info.name)),
            ("shortDescription", .object([("text", .string(info.title))])),
            ("fullDescription", .object([("text", .string(DiagnosticInfo.plainText(info.summary)))])),
            ("help", .object([("text", .string(DiagnosticInfo.plainText(help))), ("markdown", .string(help))])),
            ("defaultConfiguration", .object([("level", .string(level(info.severities.first ?? .error)))])),
        ])
    }

    private static func result(_ d: Diagnostic, ruleIndex: Int, baselineState: String?) -> JSONValue {
        // Viewers show the message, not related locations, so notes are folded into it
        // (with their place) as well as listed as related locations.
        var text = DiagnosticRenderer.headline(d)
        for note in d.notes {
            text += "\nnote: " + note.message + (note.location.map { " (\($0))" } ?? "")
        }
        let related = d.notes.compactMap { note in note.location.flatMap(physicalLocation).map { (note, $0) } }
        return .object([
            ("ruleId", .string(d.code.rawValue)),
            ("ruleIndex", .int(ruleIndex)),
            ("level", .string(level(d.severity))),
            ("message", .object([("text", .string(text))])),
            ("locations", d.location.flatMap(physicalLocation).map { .array([.object([("physicalLocation", $0)])]) }),
            (
                "relatedLocations",
                related.isEmpty
                    ? nil
                    : .array(
                        related.enumerated().map { i, item in
                            .object([
                                ("id", .int(i + 1)),
                                ("physicalLocation", item.1),
                                ("message", .object([("text", .string(item.0.message))])),
                            ])
                        })
            ),
            ("partialFingerprints", .object([(fingerprintName, .string(d.fingerprint))])),
            ("baselineState", baselineState.map { .string($0) }),
        ])
    }

    private static func level(_ severity: Diagnostic.Severity) -> String {
        switch severity {
        case .error: "error"
        case .warning: "warning"
        }
    }

    /// Nil for standard input, which has no place in a repository.
    private static func physicalLocation(_ location: SourceLocation) -> JSONValue? {
        guard let artifact = artifactLocation(location.file) else { return nil }
        return .object([
            ("artifactLocation", artifact),
            ("region", .object([("startLine", .int(location.line)), ("startColumn", .int(location.column))])),
        ])
    }

    /// Relative paths (as users pass them to `-f`, from the repository root in CI)
    /// become URIs relative to `%SRCROOT%`, which code scanning resolves against the
    /// checkout; absolute paths become `file:` URIs.
    static func artifactLocation(_ path: String) -> JSONValue? {
        if path == FileSystemSource.standardInputName { return nil }
        if path.hasPrefix("/") {
            return .object([("uri", .string("file://" + percentEncoded(path)))])
        }
        var relative = Substring(path)
        while relative.hasPrefix("./") { relative = relative.dropFirst(2).drop(while: { $0 == "/" }) }
        return .object([("uri", .string(percentEncoded(String(relative)))), ("uriBaseId", .string("%SRCROOT%"))])
    }

    /// Percent-encodes everything but unreserved characters, sub-delimiters, `@` and
    /// `/` (RFC 3986 path characters). `:` is encoded too: in a relative reference's
    /// first segment it would read as a scheme.
    static func percentEncoded(_ path: String) -> String {
        var out = ""
        for byte in path.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case _ where "-._~!$&'()*+,;=@/".utf8.contains(byte):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" : "") + hex
            }
        }
        return out
    }
}
