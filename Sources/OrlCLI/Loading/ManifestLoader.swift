import ArgumentParser
import OrlCore
import OrlSync

/// Reads, parses and validates manifests from files: the file system feeding the
/// pipeline's reading half (`ManifestParsing`, on every core) and the core's checks
/// across documents.
struct ManifestLoader: Sendable {
    var parsing = ManifestParsing()

    func validate(paths: [String], strict: Bool) async throws(SourceError) -> (report: ValidationReport, files: Int) {
        let source = FileSystemSource(maxFileBytes: parsing.maxFileBytes)
        let inputs = try source.inputs(paths)
        let parsing = self.parsing
        let parts = ManifestParsing.parallelMap(inputs.count) { index in
            Result { () throws(SourceError) in parsing.read(try source.read(inputs[index])) }
        }
        var read = ReadManifests()
        for part in parts { read.append(try part.get()) }
        return (ManifestValidation.validate(read, strict: strict), inputs.count)
    }
}

extension ManifestLoader {
    /// Loads manifests for a command that acts on them (apply, delete, explain). The
    /// diagnostics that `stopsOn` selects are printed as `validate` prints them and end
    /// the command with `exit` (1 for apply and delete, whose 1 means "not done"; 2 for
    /// diff and explain, whose 1 means "changes" or "no"), saying what was not done; the
    /// others are shown on standard error (text output) and the command goes on.
    func load(
        paths: [String], output: OutputFormat, stopsOn: (Diagnostic) -> Bool, notDone: String, exit: ExitStatus = .findings
    ) async throws -> ValidationReport {
        let result: (report: ValidationReport, files: Int)
        do {
            result = try await validate(paths: paths, strict: false)
        } catch {
            throw CommandFailure(message: error.description)
        }
        let report = result.report
        keepUntilExit(report)
        if report.diagnostics.contains(where: stopsOn) {
            switch output {
            case .text:
                writeStandardOutput(DiagnosticRenderer.text(report, files: result.files, color: TextStyle.forStandardOutput().enabled))
                OrlctlMain.writeStandardError("orlctl: \(notDone): fix the errors above first\n")
            case .json:
                writeStandardOutput(DiagnosticRenderer.json(report, files: result.files))
            }
            throw ExitCode(exit.rawValue)
        }
        if output == .text, !report.diagnostics.isEmpty {
            OrlctlMain.writeStandardError(DiagnosticRenderer.text(report, files: result.files, color: false))
        }
        return report
    }
}
