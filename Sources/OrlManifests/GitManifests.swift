public import OrlCore
public import OrlGit
import OrlRuntime

/// Manifests read straight from a commit's tree (no checkout): the git tree feeding the
/// same reading half of the pipeline as a directory does, with the same incremental
/// validation as `apply` (`IncrementalValidation`): a file whose blob is the one the last
/// read (or the index the state keeps) saw is not parsed again, and only the namespaces
/// changed files touch are checked again. Parsed files are kept by path and blob for the
/// next read. Not for use from two threads at once (it holds the repository's results).
public final class GitManifests {
    private struct Parsed {
        var blob: GitObjectID
        var read: ReadManifests
    }

    public let parsing: ManifestParsing
    private var cache: [String: Parsed] = [:]
    /// Whether `cache` holds every file `index` stands for: then a namespace's unchanged
    /// files are taken from it, otherwise from what the state kept of them.
    private var cacheComplete = false
    /// What the last read checked, so that the next checks only the namespaces its
    /// changed files touch: in the state's form (files in tree order), which a commit
    /// keeping the same paths is checked against by position, and, when the last read
    /// made it, by path (`IncrementalValidation.validate(files:...)` takes that form).
    private var last: StoredManifestIndex?
    private var index: ManifestIndex?
    /// Files parsed by the last `read`, for figures: the others came from the cache.
    public private(set) var lastParsed = 0

    public init(parsing: ManifestParsing = ManifestParsing()) {
        self.parsing = parsing
    }

    /// What `load` read of a commit.
    public struct Loaded: Sendable {
        public let commit: GitObjectID
        /// The manifest files, in byte order of their paths.
        public let files: [GitTreeFile]
        /// The report's `fleet` holds only the resources read this time (`resolve` gives
        /// any desired one); its diagnostics and count are the whole set's.
        public let outcome: IncrementalValidation.Outcome
        /// The index of what was read, the files in tree order, without a memo; nil when
        /// it cannot stand for them (MCP pins, unnamed documents).
        public let next: StoredManifestIndex?
        /// When the files were checked by position against the index given as `stored`:
        /// per entry of `desired`, whether that index desired it with the same hash and
        /// code (its `settled(desired)`), and whether it desired the same resources in the
        /// same order. Nil otherwise.
        public let againstStored: (settled: [Bool], sameIdentities: Bool)?

        public var report: ValidationReport { outcome.report }
        public var desired: [DesiredResource] { outcome.desired }

        /// The blob of the file at `path` in this commit.
        public func blob(of path: String) -> GitObjectID? {
            var low = 0
            var high = files.count
            while low < high {
                let middle = (low + high) / 2
                if files[middle].path == path { return files[middle].blob }
                if GitRepository.precedes(files[middle].path, path) { low = middle + 1 } else { high = middle }
            }
            return nil
        }
    }

    /// The manifests of `commit` under `directory`, validated as a set, the checks limited
    /// to what changed since the last load (or since `stored`, the index the state keeps,
    /// on a first load); `kept` gives what the state kept of some namespaces' resources
    /// (`ResourceSnapshot`), asked only when the files parsed before are not all at hand.
    /// With `full`, everything is read and checked. With `missingIsEmpty`, a directory
    /// the commit lacks is an empty fleet.
    public func load(
        _ repository: GitRepository, commit: GitObjectID, under directory: String?, missingIsEmpty: Bool = false,
        stored: StoredManifestIndex? = nil, kept: @escaping @Sendable (Set<String>) -> [ResourceSnapshot.Kept] = { _ in [] },
        full: Bool = false
    ) throws(GitError) -> Loaded {
        let files = try repository.files(
            of: commit, under: directory, extensions: ManifestParsing.extensions, missingIsEmpty: missingIsEmpty)
        var complete = cacheComplete
        var previousStored = full ? nil : last
        var previousIndex = full || last == nil ? nil : index
        var alignedWithStored = false
        if previousStored == nil, !full, let stored {
            previousStored = stored
            alignedWithStored = true
            previousIndex = nil
            complete = false
        }
        let parsing = self.parsing
        var failure: GitError?
        var parsedNow: [Int: ReadManifests] = [:]
        let hashed = files.map { (path: $0.path, contentHash: $0.blob.hex) }
        let read: ([Int]) -> [ReadManifests] = { positions in
            var parts = [ReadManifests?](repeating: nil, count: positions.count)
            var missing: [(slot: Int, file: ManifestFile)] = []
            for (slot, position) in positions.enumerated() {
                let file = files[position]
                if let again = parsedNow[position] {
                    parts[slot] = again
                    continue
                }
                if let hit = self.cache[file.path], hit.blob == file.blob {
                    parts[slot] = hit.read
                    continue
                }
                // Blobs are read here, one at a time: the repository is not for two threads.
                do throws(GitError) {
                    let (bytes, oversized) = try repository.blob(file.blob, maxBytes: parsing.maxFileBytes)
                    missing.append((slot, ManifestFile(path: file.path, bytes: bytes, oversizedBy: oversized)))
                } catch {
                    failure = failure ?? error
                    parts[slot] = ReadManifests()
                }
            }
            // Parsed files stay in the cache for the next loads, so each resource's
            // canonical form is computed once here, on every core, not in every plan.
            let toParse = missing.map(\.file)
            let parsed = ManifestParsing.parallelMap(toParse.count) { index in
                var read = parsing.read(toParse[index])
                read.resources = read.resources.map { $0.withCanonicalForm() }
                return read
            }
            for (slot, read) in zip(missing, parsed) {
                parts[slot.slot] = read
                parsedNow[positions[slot.slot]] = read
            }
            return parts.map { $0! }
        }
        // What the state kept of the namespaces the changed files defined something in,
        // read and decoded on another core while they are parsed (a first load: nothing
        // parsed before is at hand); taken when those are the namespaces the checks ask
        // for, as when values are edited.
        var early: (namespaces: Set<String>, kept: WorkerPool.Pending<[ResourceSnapshot.Kept]>)?
        let keptNow: (Set<String>) -> [ResourceSnapshot.Kept] = { namespaces in
            if complete { return [] }
            if let started = early {
                early = nil
                let found = started.kept.wait()
                if started.namespaces == namespaces { return found }
            }
            return kept(namespaces)
        }
        // The common commit keeps every path where it was (files edited, none added,
        // removed or renamed): checked by position against the last index, which then
        // stands for the next one as it is, without a dictionary of the fleet by path or
        // the desired positions found again.
        var aligned: IncrementalValidation.Aligned?
        if let previousStored, previousStored.files.count == files.count,
            // By index, not zipped: binding a stored file copies its record (every string
            // and array retained and released), 10,000 times a round.
            files.indices.allSatisfy({ files[$0].path == previousStored.files[$0].record.path })
        {
            let changed = hashed.indices.filter { hashed[$0].contentHash != previousStored.files[$0].record.contentHash }
            if !complete, !changed.isEmpty {
                var namespaces = Set<String>()
                for index in changed { namespaces.formUnion(previousStored.files[index].record.namespaces) }
                if !namespaces.isEmpty { early = (namespaces, WorkerPool.shared.start { [namespaces] in kept(namespaces) }) }
            }
            aligned = IncrementalValidation.validate(
                aligned: hashed, changed: changed, previous: previousStored, strict: false, kept: keptNow, read: read)
        }
        let outcome: IncrementalValidation.Outcome
        let nextIndex: StoredManifestIndex?
        if let aligned {
            outcome = aligned.outcome
            nextIndex = aligned.next
        } else {
            outcome = IncrementalValidation.validate(
                files: hashed, previous: previousIndex ?? previousStored?.index, strict: false, kept: keptNow, read: read)
            nextIndex = outcome.index.flatMap { Self.stored($0, files: files, desired: outcome.desired) }
        }
        // Not asked for (the checks needed no kept resource): dropped if no thread has taken
        // it, else it ends before the state is written.
        early?.kept.cancel()
        if let failure { throw failure }
        if outcome.full || previousStored == nil {
            // Everything was read: the cache is this tree's files.
            var next: [String: Parsed] = [:]
            next.reserveCapacity(files.count)
            for (position, read) in parsedNow { next[files[position].path] = Parsed(blob: files[position].blob, read: read) }
            for file in files where next[file.path] == nil {
                if let hit = self.cache[file.path], hit.blob == file.blob { next[file.path] = hit }
            }
            self.cache = next
            cacheComplete = next.count == files.count
        } else {
            for (position, read) in parsedNow { self.cache[files[position].path] = Parsed(blob: files[position].blob, read: read) }
            // Files unchanged were in the cache if all were; the others were parsed now.
            cacheComplete = complete
            // Files no tree has any more go once they are a fair share of what is kept.
            if self.cache.count > files.count + files.count / 4 + 64 {
                var current = Set<String>()
                current.reserveCapacity(files.count)
                for file in files { current.insert(file.path) }
                self.cache = self.cache.filter { current.contains($0.key) }
            }
        }
        lastParsed = parsedNow.count
        index = aligned == nil ? outcome.index : nil
        last = nextIndex
        if nextIndex == nil {
            index = nil
            cacheComplete = false
        }
        let againstStored = aligned.flatMap { alignedWithStored ? ($0.settled, $0.sameIdentities) : nil }
        return Loaded(commit: commit, files: files, outcome: outcome, next: nextIndex, againstStored: againstStored)
    }

    /// `index` as the state keeps it: its records in the order of `files`.
    static func stored(_ index: ManifestIndex, files: [GitTreeFile], desired: [DesiredResource]) -> StoredManifestIndex? {
        var records: [StoredManifestIndex.File] = []
        records.reserveCapacity(files.count)
        for file in files {
            guard let record = index.files[file.path] else { return nil }
            records.append(StoredManifestIndex.File(record: record, stamp: nil, stampedAt: 0))
        }
        guard let positions = StoredManifestIndex.positions(of: desired, in: records) else { return nil }
        return StoredManifestIndex(files: records, namespaces: index.namespaces, desired: positions, memo: nil)
    }

    /// The desired resource at `position` of `loaded`: read by the load, kept from an
    /// earlier one, or read now from its blob.
    public func resource(at position: Int, of loaded: Loaded, in repository: GitRepository) throws(GitError) -> Resource {
        let entry = loaded.desired[position]
        if let resource = loaded.outcome.read[entry.id] { return resource }
        guard let blob = loaded.blob(of: entry.file) else {
            throw GitError("\(entry.file) is not in commit \(loaded.commit.short)")
        }
        if let hit = cache[entry.file], hit.blob == blob, let resource = hit.read.resources.first(where: { $0.id == entry.id }) {
            return resource
        }
        let (bytes, oversized) = try repository.blob(blob, maxBytes: parsing.maxFileBytes)
        let read = parsing.read(ManifestFile(path: entry.file, bytes: bytes, oversizedBy: oversized))
        guard let resource = read.resources.first(where: { $0.id == entry.id }) else {
            throw GitError("\(entry.file) in commit \(loaded.commit.short) does not define \(entry.id) any more")
        }
        return resource.withCanonicalForm()
    }

    /// The manifests of `commit` under `directory`, validated as a set, the fleet whole,
    /// and how many files they are.
    public func read(_ repository: GitRepository, commit: GitObjectID, under directory: String?, missingIsEmpty: Bool = false)
        throws(GitError) -> (report: ValidationReport, files: Int)
    {
        let loaded = try load(repository, commit: commit, under: directory, missingIsEmpty: missingIsEmpty)
        if loaded.outcome.full { return (loaded.report, loaded.files.count) }
        // Every file's resources are at hand (parsed now or kept): the fleet is assembled
        // from them; only the checks were limited to what changed.
        var read = ReadManifests()
        for file in loaded.files {
            if let hit = cache[file.path], hit.blob == file.blob {
                read.append(hit.read)
                continue
            }
            let (bytes, oversized) = try repository.blob(file.blob, maxBytes: parsing.maxFileBytes)
            var part = parsing.read(ManifestFile(path: file.path, bytes: bytes, oversizedBy: oversized))
            part.resources = part.resources.map { $0.withCanonicalForm() }
            cache[file.path] = Parsed(blob: file.blob, read: part)
            read.append(part)
        }
        var report = loaded.report
        report.fleet = Fleet.assemble(read.resources, unreadable: read.unreadable, unidentified: read.unidentified).0
        return (report, loaded.files.count)
    }
}
