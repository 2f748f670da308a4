public import OrlCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Loads the manifests of an `apply -f` with the work proportional to what changed: the
/// state keeps what the last apply of the same source read (`ManifestIndex`); a file whose
/// stamp (size, times, inode; as git's index does) or else whose content hash matches is
/// not parsed again, and only the namespaces a change touches are checked again
/// (`IncrementalValidation`). `full` reads and checks everything.
public struct ManifestIndexLoader: Sendable {
    public var parsing = ManifestParsing()
    /// What `-` reads (see `FileSystemSource.standardInput`).
    public var standardInput: [UInt8]?

    public init(standardInput: [UInt8]? = nil) { self.standardInput = standardInput }

    /// What was loaded, and what to write of the index once the apply succeeds.
    public final class Loaded: @unchecked Sendable {
        public let outcome: IncrementalValidation.Outcome
        public let files: Int
        let write: ManifestIndexWrite?
        let dropIndex: Bool
        let inputs: [ManifestInput]
        let positions: [String: Int]
        let source: FileSystemSource
        let parsing: ManifestParsing

        init(
            outcome: IncrementalValidation.Outcome, write: ManifestIndexWrite?, dropIndex: Bool, inputs: [ManifestInput],
            source: FileSystemSource, parsing: ManifestParsing
        ) {
            self.outcome = outcome
            self.write = write
            self.dropIndex = dropIndex
            self.inputs = inputs
            self.source = source
            self.parsing = parsing
            files = inputs.count
            var positions: [String: Int] = [:]
            for (index, input) in inputs.enumerated() { positions[input.path] = index }
            self.positions = positions
        }

        /// The desired resource at `index`: read this time, or read now from its file
        /// (the store no longer holds what the index says was applied). A file that
        /// changed since it was hashed fails the apply, which then writes nothing.
        public func resource(at index: Int) throws(StoreError) -> Resource {
            let entry = outcome.desired[index]
            if let resource = outcome.read[entry.id] { return resource }
            guard let position = positions[entry.file], let record = outcome.index?.files[entry.file] else {
                throw StoreError("\(entry.file) is no longer where it was read; run the apply again")
            }
            let file: ManifestFile
            do { file = try source.read(inputs[position]) } catch { throw StoreError(error.description) }
            guard CanonicalJSON.bytesHash(file.bytes) == record.contentHash,
                let resource = parsing.read(file).resources.first(where: { $0.id == entry.id })
            else {
                throw StoreError("\(entry.file) changed while it was being applied; nothing was applied, run the apply again")
            }
            return resource.withCanonicalForm()
        }

        /// Writes the index of `source` in the apply's transaction; nothing when nothing
        /// about the files changed.
        public func writeIndex(source: String, _ writer: any StateWriter) throws(StoreError) {
            if dropIndex {
                try writer.putManifestIndex(source: source, nil)
            } else if let write, !write.records.isEmpty || !write.stamps.isEmpty || !write.namespaces.isEmpty || write.pathsChanged {
                try writer.putManifestIndex(source: source, write)
            }
        }
    }

    public func load(paths: [String], source name: String, store: any StateStore, full: Bool, strict: Bool = false) throws -> Loaded {
        let source = FileSystemSource(maxFileBytes: parsing.maxFileBytes, standardInput: standardInput)
        let inputs = try source.inputs(paths)
        let stored = try store.read { reader throws(StoreError) in try reader.manifestIndex(source: name) }
        let previous = stored?.index
        let now = Self.realTimeNanoseconds()

        // Stamp, then (unless the stamp vouches for the record) read and hash, on every core.
        struct Probe: Sendable {
            var hash: String
            var stamp: String?
            var file: ManifestFile?
            var stampChanged: Bool
        }
        let parts = ManifestParsing.parallelMap(inputs.count) { index -> Result<Probe, SourceError> in
            let input = inputs[index]
            let stamp: String?
            switch input {
            case .read: stamp = nil
            case .file(let path): stamp = Self.stamp(path)
            }
            if !full, let stamp, let record = previous?.files[input.path], let old = stored?.stamps[input.path],
                Self.vouches(old: old, new: stamp)
            {
                return .success(Probe(hash: record.contentHash, stamp: old, file: nil, stampChanged: false))
            }
            do throws(SourceError) {
                let file = try source.read(input)
                let hash = file.oversizedBy.map { "oversized:\($0)" } ?? CanonicalJSON.bytesHash(file.bytes)
                return .success(Probe(hash: hash, stamp: stamp.map { "\($0)@\(now)" }, file: file, stampChanged: stamp != nil))
            } catch {
                return .failure(error)
            }
        }
        var probes: [Probe] = []
        probes.reserveCapacity(parts.count)
        for part in parts { probes.append(try part.get()) }

        let parsing = self.parsing
        let failure = Mutex<SourceError?>(nil)
        let outcome = IncrementalValidation.validate(
            files: zip(inputs, probes).map { (path: $0.path, contentHash: $1.hash) }, previous: full ? nil : previous, strict: strict
        ) { positions in
            let probes = probes
            return ManifestParsing.parallelMap(positions.count) { i in
                let position = positions[i]
                var file = probes[position].file
                if file == nil {
                    do throws(SourceError) { file = try source.read(inputs[position]) } catch {
                        failure.withLock { $0 = $0 ?? error }
                        return ReadManifests()
                    }
                }
                var read = parsing.read(file!)
                read.resources = read.resources.map { $0.withCanonicalForm() }
                return read
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }

        guard let index = outcome.index else {
            return Loaded(outcome: outcome, write: nil, dropIndex: stored != nil, inputs: inputs, source: source, parsing: parsing)
        }
        var stamps: [String: String] = [:]
        for (input, probe) in zip(inputs, probes) where probe.stampChanged { stamps[input.path] = probe.stamp }
        let records = outcome.parsed.compactMap { path in index.files[path] }.filter { previous?.files[$0.path] != $0 }
        var namespaces: [String: [Diagnostic]] = [:]
        var keys = Set(index.namespaces.keys)
        if let previous { keys.formUnion(previous.namespaces.keys) }
        for namespace in keys where index.namespaces[namespace] != previous?.namespaces[namespace] {
            namespaces[namespace] = index.namespaces[namespace] ?? []
        }
        var write = ManifestIndexWrite(records: records, stamps: stamps, paths: Set(index.files.keys), namespaces: namespaces)
        write.pathsChanged = previous.map { Set($0.files.keys) != write.paths } ?? true
        return Loaded(outcome: outcome, write: write, dropIndex: false, inputs: inputs, source: source, parsing: parsing)
    }

    /// Size, modification and change times in nanoseconds, inode and device: what
    /// changes when a file's content may have.
    static func stamp(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        let mtime = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
        let ctime = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
        return "\(info.st_size):\(mtime):\(ctime):\(info.st_ino):\(info.st_dev)"
    }

    /// The stored stamp vouches for the file when the file's stamp is the same and its
    /// last change was well before the stamp was taken: a write in the same clock tick
    /// as the read could otherwise leave the times unchanged (git's "racy" entries).
    static func vouches(old: String, new: String) -> Bool {
        // On bytes: this runs for every file of every apply.
        let oldBytes = old.utf8
        let newBytes = new.utf8
        guard oldBytes.count > newBytes.count + 1, oldBytes.starts(with: newBytes) else { return false }
        let rest = oldBytes.dropFirst(newBytes.count)
        guard rest.first == UInt8(ascii: "@"), let recorded = Int64(Substring(rest.dropFirst())) else { return false }
        let fields = newBytes.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        guard fields.count == 5, let ctime = Int64(Substring(fields[2])), let mtime = Int64(Substring(fields[1])) else { return false }
        let margin: Int64 = 100_000_000
        return ctime < recorded - margin && mtime < recorded - margin
    }

    static func realTimeNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}

extension ManifestInput {
    /// The name diagnostics use for it.
    public var path: String {
        switch self {
        case .file(let path): path
        case .read(let file): file.path
        }
    }
}
