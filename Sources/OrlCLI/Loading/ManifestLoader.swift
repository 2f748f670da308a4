import OrlCore
import OrlYAML

/// Reads, parses and validates manifests: the adapters (files, YAML) feeding the pure
/// core. Parsing and reading documents run on every core; the checks across
/// documents run once at the end.
struct ManifestLoader {
    var parser = YAMLParser()
    var reader = ManifestReader()

    func validate(paths: [String], strict: Bool) async throws(SourceError) -> (report: ValidationReport, files: Int) {
        let files = try FileSystemSource(maxFileBytes: parser.limits.maxFileBytes).read(paths)
        var read = ReadManifests()
        for part in await load(files) { read.append(part) }
        return (ManifestValidation.validate(read, strict: strict), files.count)
    }

    /// Parses and reads each file, in parallel, keeping the files' order in the result so
    /// that "first defined here" always means first in path order.
    private func load(_ files: [ManifestFile]) async -> [ReadManifests] {
        let workers = min(max(1, System.processorCount), max(1, files.count / 16))
        if workers == 1 { return files.map(load) }
        return await withTaskGroup(of: [(Int, ReadManifests)].self) { group in
            for worker in 0..<workers {
                group.addTask {
                    stride(from: worker, to: files.count, by: workers).map { ($0, load(files[$0])) }
                }
            }
            var results = [ReadManifests](repeating: ReadManifests(), count: files.count)
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
