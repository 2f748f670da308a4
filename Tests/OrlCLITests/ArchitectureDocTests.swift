import Foundation
import Testing

/// docs/architecture.md draws the modules' dependencies; Package.swift declares them.
/// The drawing must show exactly the declared edges between the package's own targets.
@Suite struct ArchitectureDocTests {
    /// `target -> dependency` for the package's own (quoted-name) dependencies.
    static func declaredEdges() throws -> Set<String> {
        let manifest = try String(contentsOf: Orlctl.packageRoot.appendingPathComponent("Package.swift"), encoding: .utf8)
        var edges = Set<String>()
        var targets = Set<String>()
        for match in manifest.matches(of: /\.(?:target|executableTarget|systemLibrary)\(\s*name:\s*"([^"]+)"/) {
            targets.insert(String(match.output.1))
        }
        for match in manifest.matches(of: /\.(?:target|executableTarget)\(\s*name:\s*"([^"]+)",\s*dependencies:\s*\[/) {
            let name = String(match.output.1)
            // The dependency list runs to its closing bracket.
            var depth = 1
            var index = match.range.upperBound
            var list = ""
            while depth > 0, index < manifest.endIndex {
                let character = manifest[index]
                if character == "[" { depth += 1 }
                if character == "]" { depth -= 1 }
                if depth > 0 { list.append(character) }
                index = manifest.index(after: index)
            }
            // Products of other packages are `.product(name: ...)`; drop them first.
            let own = list.replacing(/\.product\([^)]*\)/, with: "")
            for dependency in own.matches(of: /"([^"]+)"/) where targets.contains(String(dependency.output.1)) {
                edges.insert("\(name) -> \(dependency.output.1)")
            }
        }
        return edges
    }

    /// The edges of the mermaid `flowchart` in the page: `A --> B & C`.
    static func drawnEdges(targets: Set<String>) throws -> Set<String> {
        let page = try String(contentsOf: Orlctl.packageRoot.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        var edges = Set<String>()
        // A node may be drawn as `id["label"]` when its name is no mermaid id (orl-bench).
        for match in page.matches(of: /^\s*(\w+)(?:\["([^"]+)"\])?\s*-->\s*(.+)$/.anchorsMatchLineEndings()) {
            let from = String(match.output.2 ?? match.output.1)
            for target in match.output.3.split(separator: "&") {
                let name = target.trimmingCharacters(in: .whitespaces).prefix { $0.isLetter || $0.isNumber }
                if targets.contains(String(name)) { edges.insert("\(from) -> \(name)") }
            }
        }
        return edges
    }

    @Test func theDiagramShowsTheDeclaredDependencies() throws {
        let declared = try Self.declaredEdges()
        #expect(declared.contains("OrlCLI -> OrlCore") && declared.contains("OrlManifests -> OrlGit"), "\(declared)")
        let targets = Set(declared.flatMap { $0.components(separatedBy: " -> ") })
        let drawn = try Self.drawnEdges(targets: targets)
        // The page may leave out an edge to the core that every module has; not one it does not.
        #expect(drawn.subtracting(declared).isEmpty, "drawn but not declared: \(drawn.subtracting(declared).sorted())")
        #expect(declared.subtracting(drawn).isEmpty, "declared but not drawn: \(declared.subtracting(drawn).sorted())")
    }
}
