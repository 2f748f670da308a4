import ArgumentParser
import OrlCore
import OrlManifests

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
        try Self.check(result.report, files: result.files, output: output, stopsOn: stopsOn, notDone: notDone, exit: exit)
        return result.report
    }

    /// Prints the diagnostics of loaded manifests; those `stopsOn` selects end the command.
    /// Gives what it wrote on standard error (`DiagnosticRenderer.plain`), nil when nothing.
    @discardableResult
    static func check(
        _ report: ValidationReport, files: Int, output: OutputFormat, stopsOn: (Diagnostic) -> Bool, notDone: String, exit: ExitStatus
    ) throws -> [UInt8]? {
        let result = (report: report, files: files)
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
        guard output == .text, !report.diagnostics.isEmpty else { return nil }
        let text = DiagnosticRenderer.plain(report, files: result.files)
        OrlctlMain.writeStandardError(String(decoding: text, as: UTF8.self))
        return text
    }
}
