import Foundation
import OrlCore
import OrlJSON
import Testing

/// The catalog is the one description of every code; these tests keep the code list,
/// the catalog and docs/diagnostics.md from drifting apart.
@Suite struct DiagnosticCatalogTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Codes are static constants, which Swift cannot enumerate, so read them from the
    /// source that declares them: a code added there without a catalog entry fails here.
    static func declaredCodes() throws -> [String] {
        let source = try String(
            contentsOf: root.appendingPathComponent("Sources/OrlCore/Diagnostics/DiagnosticCode.swift"), encoding: .utf8)
        return source.matches(of: /DiagnosticCode\("([^"]+)"\)/).map { String($0.output.1) }
    }

    @Test func everyDeclaredCodeHasExactlyOneEntry() throws {
        let declared = try Self.declaredCodes()
        #expect(declared.count > 20)
        let catalogued = DiagnosticCode.catalog.map(\.code.rawValue)
        #expect(Set(catalogued).count == catalogued.count, "a code is catalogued twice")
        #expect(Set(declared) == Set(catalogued))
        #expect(Set(DiagnosticCode.catalog.map(\.name)).count == catalogued.count, "two codes share a rule name")
        for info in DiagnosticCode.catalog {
            #expect(!info.severities.isEmpty && !info.title.isEmpty && !info.summary.isEmpty && !info.help.isEmpty, "\(info.code)")
            #expect(info.name.allSatisfy { $0.isLetter || $0.isNumber } && info.name.first?.isUppercase == true, "\(info.name)")
        }
        #expect(DiagnosticCode.dagCycle.info.name == "DagCycle")
        #expect(DiagnosticCode.yamlDuplicateKey.info.name == "YamlDuplicateKey")
    }

    /// The table row docs/diagnostics.md must have for a code.
    static func row(_ info: DiagnosticInfo) -> String { info.markdownRow }

    /// docs/diagnostics.md lists every code, in catalog order, with the catalog's words.
    /// `ORL_UPDATE_GOLDEN=1` rewrites the table from the catalog.
    @Test func docsMirrorTheCatalog() throws {
        let url = Self.root.appendingPathComponent("docs/diagnostics.md")
        let text = try String(contentsOf: url, encoding: .utf8)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let rows = lines.indices.filter { lines[$0].hasPrefix("| `") }
        let expected = DiagnosticCode.catalog.map(Self.row)
        if ProcessInfo.processInfo.environment["ORL_UPDATE_GOLDEN"] == "1", let first = rows.first, let last = rows.last {
            lines.replaceSubrange(first...last, with: expected)
            try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
            return
        }
        let documented = rows.map { lines[$0] }
        for row in expected where !documented.contains(row) {
            Issue.record("docs/diagnostics.md lacks or differs from this row (ORL_UPDATE_GOLDEN=1 to rewrite):\n\(row)")
        }
        #expect(documented == expected)
    }
}
