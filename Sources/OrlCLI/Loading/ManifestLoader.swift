import ArgumentParser
import OrlCore
import OrlYAML

/// Reads, parses and validates manifests: the adapters (files, YAML) feeding the pure
/// core. Parsing and reading documents run on every core; the checks across
/// documents run once at the end.
struct ManifestLoader: Sendable {
    var parser = YAMLParser()
    var reader = ManifestReader()

    func validate(paths: [String], strict: Bool) async throws(SourceError) -> (report: ValidationReport, files: Int) {
        let source = FileSystemSource(maxFileBytes: parser.limits.maxFileBytes)
        let inputs = try source.inputs(paths)
        var read = ReadManifests()
        for part in await load(inputs, from: source) { read.append(try part.get()) }
        return (ManifestValidation.validate(read, strict: strict), inputs.count)
    }

    /// Reads, parses and reads each file, in parallel, keeping the files' order in the
    /// result so that "first defined here" always means first in path order.
    private func load(_ inputs: [ManifestInput], from source: FileSystemSource) async -> [Result<ReadManifests, SourceError>] {
        let load: @Sendable (ManifestInput) -> Result<ReadManifests, SourceError> = { input in
            Result { () throws(SourceError) in self.load(try source.read(input)) }
        }
        let workers = min(max(1, System.processorCount), max(1, inputs.count / 16))
        if workers == 1 { return inputs.map(load) }
        return await withTaskGroup(of: [(Int, Result<ReadManifests, SourceError>)].self) { group in
            for worker in 0..<workers {
                group.addTask {
                    stride(from: worker, to: inputs.count, by: workers).map { ($0, load(inputs[$0])) }
                }
            }
            var results = [Result<ReadManifests, SourceError>](repeating: .success(ReadManifests()), count: inputs.count)
            for await part in group {
                for (index, loaded) in part { results[index] = loaded }
            }
            return results
        }
    }

    private func load(_ file: ManifestFile) -> ReadManifests {
        if let size = file.oversizedBy {
            let limit = parser.limits.maxFileBytes
            return ReadManifests(diagnostics: [
                .error(
                    .yamlLimit, "file is \(size) bytes, over the \(limit) byte limit for a manifest file; split it into several files",
                    at: .file(file.path))
            ])
        }
        return reader.read(parser.parse(file.bytes, file: file.path))
    }
}

extension ManifestLoader {
    /// Loads manifests for a command that acts on them (apply, delete, explain). The
    /// diagnostics that `stopsOn` selects are printed as `validate` prints them and end
    /// the command with exit 1, saying what was not done; the others are shown on
    /// standard error (text output) and the command goes on.
    func load(paths: [String], output: OutputFormat, stopsOn: (Diagnostic) -> Bool, notDone: String) async throws -> ValidationReport {
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
            throw ExitCode(ExitStatus.findings.rawValue)
        }
        if output == .text, !report.diagnostics.isEmpty {
            OrlctlMain.writeStandardError(DiagnosticRenderer.text(report, files: result.files, color: false))
        }
        return report
    }
}
