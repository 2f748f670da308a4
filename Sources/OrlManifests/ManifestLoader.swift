public import OrlCore

#if canImport(Glibc)
    /// glibc's `malloc_trim` (`malloc.h`, which the Glibc module leaves out).
    @_silgen_name("malloc_trim") private func malloc_trim(_ pad: Int) -> Int32
#endif

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
        #if canImport(Glibc)
            // What the reading threads freed (file bytes, parse trees) stays in their
            // malloc arenas, which the checks across files, on another thread, do not
            // reuse: handed back now, it is not counted again in the peak.
            _ = malloc_trim(0)
        #endif
        return (ManifestValidation.validate(read, strict: strict), count)
    }
}
