import ArgumentParser
import Foundation
import OrlCore
import OrlJSON
import OrlServer

/// `orlctl generate-docs` (hidden; `scripts/gen-docs` runs it): the references that
/// must never be written by hand, generated from what the product really is: the
/// schemas, the commands' own definitions, the diagnostic catalog, the HTTP route
/// catalog. `--check` fails when a committed file differs, which a test runs.
struct GenerateDocs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-docs",
        abstract: "Regenerate the generated references in docs/ (and man pages and completions).",
        shouldDisplay: false
    )

    @Option(help: "The repository root.")
    var root = "."

    @Flag(help: "Write nothing; exit 1 listing the files that are stale.")
    var check = false

    @Option(help: "Also write a man page per command into this directory.")
    var man: String?

    @Option(help: "Also write bash, zsh and fish completion scripts into this directory.")
    var completions: String?

    @Flag(help: "Only write the man pages and completions (for installing), not the references.")
    var noReferences = false

    /// Every generated file under the root, with its content.
    static func files(root: URL) throws -> [(path: String, text: String)] {
        let schemas = root.appendingPathComponent("schemas")
        let names = try FileManager.default.contentsOfDirectory(atPath: schemas.path).filter { $0.hasSuffix(".json") }.sorted()
        let schemaFiles = try names.map { ($0, try String(contentsOf: schemas.appendingPathComponent($0), encoding: .utf8)) }
        let diagnostics = try String(contentsOf: root.appendingPathComponent("docs/diagnostics.md"), encoding: .utf8)
        return [
            ("docs/reference/manifests.md", try ManifestReference.render(files: schemaFiles)),
            ("docs/reference/cli.md", CommandReference.markdown(try CommandInfo.tree())),
            ("docs/reference/openapi.json", APICatalog.openAPI(version: Orlctl.version).rendered()),
            ("docs/diagnostics.md", diagnosticsTable(in: diagnostics)),
        ]
    }

    static func words(_ text: String) -> [Substring] { text.split(whereSeparator: \.isWhitespace) }

    /// Commands (below `command`) whose configuration leaves out `commandName`. Every
    /// start of orlctl names all its commands; argument-parser derives a missing name from
    /// the type's name by reflection, a search through every protocol conformance of the
    /// binary per command that was a tenth of a re-apply's CPU.
    static func unnamedCommands(below command: any ParsableCommand.Type = Orlctl.self) -> [String] {
        command.configuration.subcommands.flatMap { sub in
            (sub.configuration.commandName == nil ? ["\(sub)"] : []) + unnamedCommands(below: sub)
        }
    }

    /// docs/diagnostics.md with its table rows replaced by the catalog's.
    static func diagnosticsTable(in text: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let rows = lines.indices.filter { lines[$0].hasPrefix("| `") }
        guard let first = rows.first, let last = rows.last else { return text }
        lines.replaceSubrange(first...last, with: DiagnosticCode.catalog.map(\.markdownRow))
        return lines.joined(separator: "\n")
    }

    func run() async throws {
        if let man {
            let directory = URL(fileURLWithPath: man)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for page in CommandReference.manPages(try CommandInfo.tree(), version: Orlctl.version) {
                try page.text.write(to: directory.appendingPathComponent(page.name), atomically: true, encoding: .utf8)
            }
        }
        if let completions {
            let directory = URL(fileURLWithPath: completions)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for (shell, name) in [(CompletionShell.bash, "orlctl.bash"), (.zsh, "_orlctl"), (.fish, "orlctl.fish")] {
                try Orlctl.completionScript(for: shell).write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
            }
        }
        guard !noReferences else { return }
        let rootURL = URL(fileURLWithPath: root)
        let generated: [(path: String, text: String)]
        do {
            generated = try Self.files(root: rootURL)
        } catch {
            throw CommandFailure(message: "cannot generate the references from \(root): \(error)")
        }
        var stale: [String] = []
        for file in generated {
            let url = rootURL.appendingPathComponent(file.path)
            let current = try? String(contentsOf: url, encoding: .utf8)
            if current == file.text { continue }
            // The check compares words, not layout: a newer argument-parser that wraps help
            // differently (CI resolves the newest release) is no reason to fail a build.
            if check, let current, Self.words(current) == Self.words(file.text) { continue }
            stale.append(file.path)
            if !check {
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try file.text.write(to: url, atomically: true, encoding: .utf8)
            }
        }
        if check {
            let unnamed = Self.unnamedCommands()
            guard unnamed.isEmpty else {
                writeStandardOutput(unnamed.map { "no commandName: \($0)\n" }.joined() + "name each command in its configuration\n")
                throw ExitCode(ExitStatus.findings.rawValue)
            }
            guard stale.isEmpty else {
                writeStandardOutput(stale.map { "stale: \($0)\n" }.joined() + "run scripts/gen-docs to regenerate\n")
                throw ExitCode(ExitStatus.findings.rawValue)
            }
            writeStandardOutput("up to date: \(generated.count) generated files\n")
        } else {
            writeStandardOutput(generated.map { "\(stale.contains($0.path) ? "wrote" : "unchanged") \($0.path)\n" }.joined())
        }
    }
}
