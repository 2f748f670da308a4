public import OrlCore

/// Reads, parses and validates manifests from files: the file system feeding the
/// pipeline's reading half (`ManifestParsing`, on every core) and the core's checks
/// across documents.
public struct ManifestLoader: Sendable {
    public var parsing = ManifestParsing()
    /// What `-` reads (see `FileSystemSource.standardInput`).
    public var standardInput: [UInt8]?

    public init(standardInput: [UInt8]? = nil) { self.standardInput = standardInput }

    public func validate(paths: [String], strict: Bool) async throws(SourceError) -> (report: ValidationReport, files: Int) {
        let source = FileSystemSource(maxFileBytes: parsing.maxFileBytes, standardInput: standardInput)
        let parsing = self.parsing
        var read = ReadManifests()
        let count: Int
        do {
            // The files' parts and the list of paths end here, before the checks across
            // them take their memory.
            let inputs = try source.inputs(paths)
            count = inputs.count
            let parts = ManifestParsing.parallelMap(inputs.count) { index in
                Result { () throws(SourceError) in parsing.read(try source.read(inputs[index])) }
            }
            for part in parts { read.append(try part.get()) }
        }
        return (ManifestValidation.validate(read, strict: strict), count)
    }
}
