public import OrlCore
public import OrlGit

/// Manifests read straight from a commit's tree (no checkout): the git tree feeding the
/// same reading half of the pipeline as a directory does. Parsed files are kept by path
/// and blob id, so a file whose blob did not change is not parsed again in the next
/// round. Not for use from two threads at once (it holds the repository's results).
public final class GitManifests {
    private struct Parsed {
        var blob: GitObjectID
        var read: ReadManifests
    }

    public let parsing: ManifestParsing
    private var cache: [String: Parsed] = [:]
    /// What the last read checked, so that the next checks only the namespaces its
    /// changed files touch (`IncrementalValidation`).
    private var index: ManifestIndex?
    /// Files parsed by the last `read`, for figures: the others came from the cache.
    public private(set) var lastParsed = 0
    /// The desired resources of the last `read`, in `Fleet` order, with the hashes
    /// computed when their files were parsed.
    public private(set) var lastDesired: [DesiredResource] = []

    public init(parsing: ManifestParsing = ManifestParsing()) {
        self.parsing = parsing
    }

    /// The manifests of `commit` under `directory`, validated as a set, and how many
    /// files they are. The cache keeps only this tree's files afterwards, so it never
    /// holds more than one revision.
    /// With `missingIsEmpty`, a directory the commit lacks is an empty fleet.
    public func read(_ repository: GitRepository, commit: GitObjectID, under directory: String?, missingIsEmpty: Bool = false)
        throws(GitError) -> (report: ValidationReport, files: Int)
    {
        let files = try repository.files(
            of: commit, under: directory, extensions: ManifestParsing.extensions, missingIsEmpty: missingIsEmpty)
        var parts = [ReadManifests?](repeating: nil, count: files.count)
        var missing: [(index: Int, file: ManifestFile)] = []
        for (index, file) in files.enumerated() {
            if let hit = cache[file.path], hit.blob == file.blob {
                parts[index] = hit.read
                continue
            }
            // Blobs are read here, one at a time: the repository is not for two threads.
            let (bytes, oversized) = try repository.blob(file.blob, maxBytes: parsing.maxFileBytes)
            missing.append((index, ManifestFile(path: file.path, bytes: bytes, oversizedBy: oversized)))
        }
        let parsing = self.parsing
        let toParse = missing.map(\.file)
        // Parsed files stay in the cache for the next rounds, so each resource's
        // canonical form is computed once here, on every core, not in every plan.
        let parsed = ManifestParsing.parallelMap(toParse.count) { index in
            var read = parsing.read(toParse[index])
            read.resources = read.resources.map { $0.withCanonicalForm() }
            return read
        }
        for (slot, read) in zip(missing, parsed) { parts[slot.index] = read }
        var next: [String: Parsed] = [:]
        next.reserveCapacity(files.count)
        var read = ReadManifests()
        for (file, part) in zip(files, parts) {
            next[file.path] = Parsed(blob: file.blob, read: part!)
            read.append(part!)
        }
        cache = next
        lastParsed = missing.count
        let outcome = IncrementalValidation.validate(
            files: files.map { (path: $0.path, contentHash: $0.blob.hex) }, previous: index, strict: false
        ) { positions in positions.map { parts[$0]! } }
        index = outcome.index
        lastDesired = outcome.desired
        if outcome.full { return (outcome.report, files.count) }
        // Every file's resources are at hand (parsed now or kept): the fleet to apply is
        // assembled from them; only the checks were limited to what changed.
        var report = outcome.report
        report.fleet = Fleet.assemble(read.resources, unreadable: read.unreadable, unidentified: read.unidentified).0
        return (report, files.count)
    }
}
