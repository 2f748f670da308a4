public import OrlCore
import OrlYAML

/// Reads, parses and validates manifests: the adapters (files, YAML) feeding the pure
/// core. Parsing and reading documents run on every core; the checks across
/// documents run once at the end.
struct ManifestLoader {
    var parser = YAMLParser()
    var reader = ManifestReader()

    func validate(paths: [String], strict: Bool) async throws(SourceError) -> (report: ValidationReport, files: Int) {
        let files = try FileSystemSource(maxFileBytes: parser.limits.maxFileBytes).read(paths)
        let loaded = await load(files)
        var resources: [Resource] = []
        var diagnostics: [Diagnostic] = []
        for part in loaded {
            resources += part.resources
            diagnostics += part.diagnostics
        }
        return (ManifestValidation.validate(resources: resources, diagnostics: diagnostics, strict: strict), files.count)
    }

    private struct Loaded: Sendable {
        var resources: [Resource] = []
        var diagnostics: [Diagnostic] = []
    }

    /// Parses and reads each file, in parallel, keeping the files' order in the result so
    /// that "first defined here" always means first in path order.
    private func load(_ files: [ManifestFile]) async -> [Loaded] {
        let workers = min(max(1, System.processorCount), max(1, files.count / 16))
        if workers == 1 { return files.map(load) }
        return await withTaskGroup(of: [(Int, Loaded)].self) { group in
            for worker in 0..<workers {
                group.addTask {
                    stride(from: worker, to: files.count, by: workers).map { ($0, load(files[$0])) }
                }
            }
            var results = [Loaded](repeating: Loaded(), count: files.count)
            for await part in group {
                for (index, loaded) in part { results[index] = loaded }
            }
            return results
        }
    }

    private func load(_ file: ManifestFile) -> Loaded {
        if let size = file.oversizedBy {
            let limit = parser.limits.maxFileBytes
            return Loaded(diagnostics: [
                .error(
                    .yamlLimit, "file is \(size) bytes, over the \(limit) byte limit for a manifest file; split it into several files",
                    at: .file(file.path))
            ])
        }
        let (resources, diagnostics) = reader.read(parser.parse(file.bytes, file: file.path))
        return Loaded(resources: resources, diagnostics: diagnostics)
    }
}
