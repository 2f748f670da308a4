import ArgumentParser
import OrlCore
import OrlManifests

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text
    case json
}

/// `validate` also speaks SARIF, for code-scanning dashboards.
enum ValidateOutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text
    case json
    case sarif
}

/// `orlctl validate`: offline checks of manifests, no state touched.
struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        // Read only when the command is parsed as a root (`OrlctlMain.parse`): it is `orlctl`'s,
        // so no completion script is looked for. Under `orlctl` the root's name is used.
        _superCommandName: "orlctl",
        abstract: "Check manifests: YAML, schemas, references and workflow DAGs.",
        discussion: """
            Reports every problem in one run, sorted by file and line. Exit 0 when there is no \
            error (warnings allowed), 1 when there is one, 2 when the input cannot be read.
            """
    )

    @Option(
        name: [.short, .customLong("filename")],
        help: ArgumentHelp("A manifest file or directory, or - for standard input. Repeatable.", valueName: "path"))
    var files: [String] = []

    @Option(name: [.short, .long], help: "Output format: text, json, or sarif (SARIF 2.1.0, for GitHub code scanning).")
    var output: ValidateOutputFormat = .text

    @Flag(help: "Treat warnings as errors.")
    var strict = false

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give the manifests to check with -f PATH (a file, a directory or -)") }
    }

    func run() async throws {
        var loader = ManifestLoader(standardInput: CommandContext.current.standardInputBytes)
        loader.parsing.reader.keepsDocuments = false
        let result: (report: ValidationReport, files: Int)
        do {
            result = try await loader.validate(paths: files, strict: strict)
        } catch {
            throw CommandFailure(message: error.description)
        }
        switch output {
        case .text:
            writeStandardOutput(DiagnosticRenderer.text(result.report, files: result.files, color: TextStyle.forStandardOutput().enabled))
        case .json: writeStandardOutput(DiagnosticRenderer.json(result.report, files: result.files))
        case .sarif: writeStandardOutput(SARIFRenderer.render(result.report))
        }
        let valid = result.report.isValid
        keepUntilExit(result.report)
        if !valid { throw ExitCode(ExitStatus.findings.rawValue) }
    }
}
