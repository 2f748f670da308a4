public import OrlCore
import OrlRuntime
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Loads the manifests of an `apply -f` with the work proportional to what changed: the
/// state keeps what the last apply of the same source read (`StoredManifestIndex`); a file
/// whose stamp (size, times, inode; as git's index does) or else whose content hash
/// matches is not parsed again, and only the namespaces a change touches are checked
/// again (`IncrementalValidation`). When no file changed, the index stands for the whole
/// load, and the plan takes for granted what the last apply left in the store as long as
/// nothing wrote there since (`ApplyMemo`). `full` reads and checks everything.
public struct ManifestIndexLoader: Sendable {
    public var parsing = ManifestParsing()
    /// What `-` reads (see `FileSystemSource.standardInput`).
    public var standardInput: [UInt8]?

    public init(standardInput: [UInt8]? = nil) { self.standardInput = standardInput }

    /// What was loaded, and what to write of the index once the apply succeeds.
    public final class Loaded: @unchecked Sendable {
        public let outcome: IncrementalValidation.Outcome
        public let files: Int
        /// The index to write (without its memo), nil when the load cannot be indexed.
        let next: StoredManifestIndex?
        let previous: StoredManifestIndex?
        /// How the state holds `previous`: what of it the write of `next` can keep.
        let stored: StoredManifestIndex.Stored?
        /// What the caller kept of the report when no file changed (`load(report:)`): then
        /// `outcome.report` has no diagnostics, and this stands for them.
        public let keptReport: [UInt8]?
        let reportForm: String?
        /// Nothing about the files changed: the index needs no write for their sake.
        let filesUnchanged: Bool
        /// The desired set is the previous apply's, entry for entry.
        let sameDesired: Bool
        /// Per desired entry, whether the previous apply desired it as it is (worked out by
        /// position when the files are the previous ones); nil to compare the two sets.
        let settled: [Bool]?
        /// The desired set names the previous apply's resources, in the same order.
        let sameIdentities: Bool
        let full: Bool
        /// The only positions at which `next`'s files may differ from `previous`'s (those
        /// read this time, of the same paths in the same order); nil: any may.
        let dirty: [Int]?
        let inputs: [ManifestInput]
        /// Each input's position by path, made when a resource not read this time is asked for.
        private let positions = Mutex<[String: Int]?>(nil)
        let source: FileSystemSource
        let parsing: ManifestParsing
        /// What to keep of the namespaces checked this time, written with the index
        /// (`ResourceSnapshot`; empty: nothing is kept of it).
        let snapshots: [String: [ResourceSnapshot.Kept]]
        /// Whether the plan took the previous apply's memo for granted.
        private(set) var memoHeld = false

        init(
            outcome: IncrementalValidation.Outcome, next: StoredManifestIndex?, stored: StoredManifestIndex.Stored?, filesUnchanged: Bool,
            sameDesired: Bool, settled: [Bool]? = nil, sameIdentities: Bool = false, full: Bool, dirty: [Int]? = nil,
            inputs: [ManifestInput], source: FileSystemSource,
            parsing: ManifestParsing, snapshots: [String: [ResourceSnapshot.Kept]] = [:], keptReport: [UInt8]? = nil, reportForm: String?
        ) {
            self.keptReport = keptReport
            self.reportForm = reportForm
            self.settled = settled
            self.sameIdentities = sameIdentities || sameDesired
            self.snapshots = snapshots
            self.outcome = outcome
            self.next = next
            self.stored = stored
            previous = stored?.index
            self.filesUnchanged = filesUnchanged
            self.sameDesired = sameDesired
            self.full = full
            self.dirty = dirty
            self.inputs = inputs
            self.source = source
            self.parsing = parsing
            files = inputs.count
        }

        /// The desired resource at `index`: read this time, or read now from its file
        /// (the store no longer holds what the index says was applied). A file that
        /// changed since it was hashed fails the apply, which then writes nothing.
        public func resource(at index: Int) throws(StoreError) -> Resource {
            let entry = outcome.desired[index]
            if let resource = outcome.read[entry.id] { return resource }
            let position = positions.withLock { positions in
                if positions == nil {
                    var made: [String: Int] = [:]
                    for (index, input) in inputs.enumerated() where made[input.path] == nil { made[input.path] = index }
                    positions = made
                }
                return positions![entry.file]
            }
            guard let position, let next, position < next.files.count, next.files[position].path == entry.file
            else {
                throw StoreError("\(entry.file) is no longer where it was read; run the apply again")
            }
            let file: ManifestFile
            do { file = try source.read(inputs[position]) } catch { throw StoreError(error.description) }
            guard CanonicalJSON.bytesHash(file.bytes) == next.files[position].record.contentHash,
                let resource = parsing.read(file).resources.first(where: { $0.id == entry.id })
            else {
                throw StoreError("\(entry.file) changed while it was being applied; nothing was applied, run the apply again")
            }
            return resource.withCanonicalForm()
        }

        /// What the plan may take for granted, asked inside the apply's transaction: when
        /// the store's change mark is the one the last apply of this source recorded, every
        /// resource it desired is stored as it desired it.
        public func shortcut(_ reader: any StateReader, source: String, codeRoot: String?) throws(StoreError) -> PlanShortcut? {
            memoHeld = false
            guard !full, let previous, let memo = previous.memo, memo.codeRoot == codeRoot,
                try reader.changeMark(source: source) == memo.mark
            else { return nil }
            memoHeld = true
            let desired = outcome.desired
            let owned =
                memo.ownsExactly ? previous.desired.map { previous.files[Int($0.file)].record.entries[Int($0.entry)].id } : nil
            if sameDesired { return PlanShortcut(settled: [Bool](repeating: true, count: desired.count), owned: owned) }
            return PlanShortcut(settled: settled ?? previous.settled(desired), owned: owned)
        }

        /// Writes the index of `source` in the apply's transaction, with what the next apply
        /// may take for granted; nothing when neither changed. `report` is what the caller
        /// makes of `outcome.report` in the form it loaded with (`load(report:)`), kept
        /// beside the index unless the state holds it already; asked for only then.
        public func writeIndex(
            source: String, codeRoot: String?, prune: Bool, plan: Plan, report: () -> [UInt8]? = { nil }, _ writer: any StateWriter
        ) throws(StoreError) {
            guard var next else {
                if stored != nil { try StoredManifestIndex.drop(source: source, writer) }
                return
            }
            // The state's head is the one read (unless an apply of the source came in
            // between, whose report then stands for other chunks and is not replaced).
            func keepReport() throws(StoreError) {
                guard let reportForm, let stored, stored.report == nil, keptReport == nil, let payload = report() else { return }
                try StoredManifestIndex.putReport(payload, form: reportForm, source: source, of: stored, writer)
            }
            if !snapshots.isEmpty {
                // The heads written below, read in one query (a round trip each otherwise, on
                // a database server); the writes read them again from what the store holds.
                _ = try writer.manifestIndexes(
                    sources: [source] + snapshots.keys.sorted().map { ResourceSnapshot.key(source: source, namespace: $0) })
            }
            for namespace in snapshots.keys.sorted() {
                // The chunks made on every core: the transaction's thread waits for them (a
                // first apply copies in every document it read, each encoded on the parse
                // threads by `withKeptForms`; a document kept as a tree is encoded here).
                try ResourceSnapshot.write(snapshots[namespace]!, source: source, namespace: namespace, writer) { runs in
                    ManifestParsing.parallelMap(runs.count, minimumPerWorker: 8) { ResourceSnapshot.encode(Array(runs[$0])) }
                }
            }
            if filesUnchanged, memoHeld, plan.isEmpty { return try keepReport() }
            // After a prune the source owns exactly what it desires; otherwise it still does
            // if it did and kept desiring everything it did.
            var ownsExactly = prune
            if !ownsExactly, memoHeld, let memo = previous?.memo, memo.ownsExactly {
                if sameIdentities {
                    ownsExactly = true
                } else {
                    let now = Set(outcome.desired.map(\.id))
                    ownsExactly = previous!.desiredResources().allSatisfy { now.contains($0.id) }
                }
            }
            next.memo = ApplyMemo(mark: try writer.changeMark(source: source), codeRoot: codeRoot, ownsExactly: ownsExactly)
            if next == previous { return try keepReport() }
            var held = stored
            if let pending = stored, pending.diagnosticsPending {
                // Read with its report kept, so its namespaces' findings were not decoded:
                // they are written again as they were.
                guard let decoded = pending.decodingDiagnostics() else { return try StoredManifestIndex.drop(source: source, writer) }
                held = decoded
                if filesUnchanged { next.namespaces = decoded.index.namespaces }
            }
            // A kept report stays where it is (only the memo changed); a report rendered
            // this time is kept with the index, where the one kept is unless its bytes differ.
            var kept = StoredManifestIndex.KeptReport.keep
            if keptReport == nil, let reportForm, let payload = report() { kept = .rendered(form: reportForm, payload: payload) }
            try next.write(source: source, previous: held, dirty: dirty, report: kept, writer)
        }
    }

    /// - Parameter form: the form in which the caller keeps what it makes of a report
    ///   (`Loaded.writeIndex(report:)`), so that a load with no file changed gives it
    ///   (`Loaded.keptReport`) in place of the report's diagnostics; nil keeps nothing.
    public func load(
        paths: [String], source name: String, store: (any StateStore)?, full: Bool, strict: Bool = false, report form: String? = nil
    ) throws -> Loaded {
        HugePages.adviseThisThreadsHeap()
        let form = strict ? nil : form
        let source = FileSystemSource(maxFileBytes: parsing.maxFileBytes, standardInput: standardInput)
        // Taken before any file is looked at: a file changed after this is never vouched for
        // by a stamp taken now (see `FileStamp.vouches`).
        let now = Self.realTimeNanoseconds()
        // The index is read on another thread while the files are walked: neither needs the
        // other, and each is a good part of a re-apply with nothing changed. No store yet (a
        // first apply, which creates it only for valid manifests): nothing held.
        let reading = store.map { store in
            WorkerPool.shared.start { () -> Result<StoredManifestIndex.Stored?, StoreError> in
                Result { () throws(StoreError) in
                    try store.read { reader throws(StoreError) in
                        try StoredManifestIndex.read(source: name, reader, report: full ? nil : form)
                    }
                }
            }
        }
        let inputs: [ManifestInput]
        let stamps: [FileStamp?]
        do throws(SourceError) {
            (inputs, stamps) = try source.stampedInputs(paths)
        } catch {
            // Nothing outlives the load.
            _ = reading?.wait()
            throw error
        }
        var held = try reading?.wait().get()
        var stored = held?.index

        // The common cases: the same files in the same order (by position, no dictionary of
        // the fleet), none changed since, or a few edited.
        var aligned = !full && stored != nil && stored!.files.count == inputs.count
        var vouched = [Bool](repeating: false, count: aligned ? inputs.count : 0)
        if aligned, let stored {
            // Through the buffer: `zip(inputs, stored.files)` copies every file's record.
            aligned = stored.files.withUnsafeBufferPointer { files in
                for i in files.indices {
                    guard inputs[i].path == files[i].record.path else { return false }
                    if let stamp = stamps[i], let oldStamp = files[i].stamp {
                        vouched[i] = oldStamp.vouches(for: stamp, recordedAt: files[i].stampedAt)
                    }
                }
                return true
            }
        }
        if aligned, let stored, !vouched.contains(false) {
            let kept = held?.report
            let outcome = IncrementalValidation.unchanged(stored, strict: strict, diagnostics: kept == nil)
            return Loaded(
                outcome: outcome, next: stored, stored: held, filesUnchanged: true, sameDesired: true, full: false, inputs: inputs,
                source: source, parsing: parsing, keptReport: kept, reportForm: form)
        }
        // The namespaces' findings (left undecoded beside a kept report) are decoded on
        // another thread while the changed files are read and parsed; only their files
        // are looked at until then.
        let decoding = held.flatMap { pending in
            pending.diagnosticsPending ? WorkerPool.shared.start { pending.decodingDiagnostics() } : nil
        }

        // Unless the stamp vouches for the record, read and hash, on every core.
        struct Probe: Sendable {
            var hash: String
            var file: ManifestFile?
            /// The stamp to keep and when it was taken.
            var stamp: FileStamp?
            var stampedAt: Int64
        }
        @Sendable func probe(_ input: ManifestInput, _ stamp: FileStamp?) -> Result<Probe, SourceError> {
            do throws(SourceError) {
                let file = try source.read(input)
                let hash = file.oversizedBy.map { "oversized:\($0)" } ?? CanonicalJSON.bytesHash(file.bytes)
                return .success(Probe(hash: hash, file: file, stamp: stamp, stampedAt: now))
            } catch {
                return .failure(error)
            }
        }
        var probes: [Probe] = []
        probes.reserveCapacity(inputs.count)
        if aligned, let stored {
            let unvouched = vouched.indices.filter { !vouched[$0] }
            let read = ManifestParsing.parallelMap(unvouched.count, minimumPerWorker: 4) {
                probe(inputs[unvouched[$0]], stamps[unvouched[$0]])
            }
            // Through the buffer: a `for old in` loop copies every file's record.
            stored.files.withUnsafeBufferPointer { files in
                for i in files.indices {
                    probes.append(Probe(hash: files[i].record.contentHash, file: nil, stamp: files[i].stamp, stampedAt: files[i].stampedAt))
                }
            }
            for (position, part) in zip(unvouched, read) { probes[position] = try part.get() }
        } else {
            var previousFiles: [String: StoredManifestIndex.File] = [:]
            if !full, let stored {
                previousFiles.reserveCapacity(stored.files.count)
                for file in stored.files where previousFiles[file.path] == nil { previousFiles[file.path] = file }
            }
            let oldFiles = previousFiles
            let parts = ManifestParsing.parallelMap(inputs.count) { index -> Result<Probe, SourceError> in
                let input = inputs[index]
                let stamp = stamps[index]
                if let stamp, let old = oldFiles[input.path], let oldStamp = old.stamp,
                    oldStamp.vouches(for: stamp, recordedAt: old.stampedAt)
                {
                    return .success(Probe(hash: old.record.contentHash, file: nil, stamp: oldStamp, stampedAt: old.stampedAt))
                }
                return probe(input, stamp)
            }
            for part in parts { probes.append(try part.get()) }
        }

        let parsing = self.parsing
        let failure = Mutex<SourceError?>(nil)
        let parsed: ([Int]) -> [ReadManifests] = { positions in
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
                read.resources = read.resources.map { $0.withKeptForms() }
                return read
            }
        }
        // Edited files, the common change: parsed here, while another thread decodes the
        // findings and reads what was kept of the namespaces they defined something in
        // (those the checks across resources see again, unless the edit moved a resource
        // to another namespace).
        var changed: [Int] = []
        var early: [ReadManifests]?
        var prefetched: (namespaces: Set<String>, kept: WorkerPool.Pending<[ResourceSnapshot.Kept]>, taken: Bool)?
        // Nothing outlives the load.
        defer { if let prefetched, !prefetched.taken { _ = prefetched.kept.wait() } }
        if aligned, let stored {
            changed = stored.files.withUnsafeBufferPointer { files in
                probes.indices.filter { !vouched[$0] && probes[$0].hash != files[$0].record.contentHash }
            }
            if let store, !changed.isEmpty {
                var namespaces = Set<String>()
                for i in changed { namespaces.formUnion(stored.files[i].record.namespaces) }
                let wanted = namespaces
                prefetched = (wanted, WorkerPool.shared.start { Self.kept(wanted, source: name, store: store) }, false)
            }
            early = parsed(changed)
        }
        if let decoding {
            held = decoding.wait()
            stored = held?.index
            if held == nil { aligned = false }
        }
        let hashed = inputs.indices.map { (path: inputs[$0].path, contentHash: probes[$0].hash) }
        if aligned, let stored {
            if var result = IncrementalValidation.validate(
                aligned: hashed, changed: changed, previous: stored, strict: strict,
                kept: { namespaces in
                    if let wanted = prefetched, !wanted.taken, wanted.namespaces == namespaces {
                        prefetched!.taken = true
                        return wanted.kept.wait()
                    }
                    return store.map { Self.kept(namespaces, source: name, store: $0) } ?? []
                },
                read: { positions in
                    if let done = early, positions == changed {
                        early = nil
                        return done
                    }
                    return parsed(positions)
                })
            {
                if let error = failure.withLock({ $0 }) { throw error }
                var next = result.next
                // The only other reference to its files: dropped, so that restamping them
                // below does not copy all 10,000 of them again.
                result.next.files = []
                for (i, probe) in probes.enumerated() where !vouched[i] {
                    next.files[i].stamp = probe.stamp
                    next.files[i].stampedAt = probe.stamp == nil ? 0 : probe.stampedAt
                }
                return Loaded(
                    outcome: result.outcome, next: next, stored: held, filesUnchanged: false, sameDesired: result.sameDesired,
                    settled: result.settled, sameIdentities: result.sameIdentities, full: false,
                    dirty: vouched.indices.filter { !vouched[$0] }, inputs: inputs, source: source,
                    parsing: parsing, snapshots: result.outcome.checked, reportForm: form)
            }
            if let error = failure.withLock({ $0 }) { throw error }
        }
        let outcome = IncrementalValidation.validate(
            files: hashed, previous: full ? nil : stored?.index, strict: strict,
            kept: { namespaces in store.map { Self.kept(namespaces, source: name, store: $0) } ?? [] }, fork: .beside, read: parsed)
        if let error = failure.withLock({ $0 }) { throw error }

        var next: StoredManifestIndex?
        if let index = outcome.index {
            var files: [StoredManifestIndex.File] = []
            files.reserveCapacity(inputs.count)
            for (input, probe) in zip(inputs, probes) {
                guard let record = index.files[input.path] else { continue }
                files.append(
                    StoredManifestIndex.File(record: record, stamp: probe.stamp, stampedAt: probe.stamp == nil ? 0 : probe.stampedAt))
            }
            if files.count == inputs.count, let positions = StoredManifestIndex.positions(of: outcome.desired, in: files) {
                next = StoredManifestIndex(files: files, namespaces: index.namespaces, desired: positions, memo: nil)
            }
        }
        let sameDesired = stored.map { !full && $0.desires(outcome.desired) } ?? false
        let snapshots = next == nil ? [:] : outcome.checked
        return Loaded(
            outcome: outcome, next: next, stored: held, filesUnchanged: false, sameDesired: sameDesired, full: full, inputs: inputs,
            source: source, parsing: parsing, snapshots: snapshots, reportForm: form)
    }

    /// What the state kept of these namespaces' resources; nothing of a namespace whose
    /// snapshot cannot be read (its files are then read instead).
    static func kept(_ namespaces: Set<String>, source: String, store: any StateStore) -> [ResourceSnapshot.Kept] {
        let names = namespaces.sorted()
        guard
            let blobs = try? store.read({ reader throws(StoreError) -> [[UInt8]?] in
                let heads = try reader.manifestIndexes(sources: names.map { ResourceSnapshot.key(source: source, namespace: $0) })
                var keys: [String] = []
                for (namespace, head) in zip(names, heads) {
                    // A namespace whose head cannot be read keeps nothing: its files are read.
                    guard let hashes = head.flatMap(ResourceSnapshot.decodeHead) else { continue }
                    keys += hashes.map { ResourceSnapshot.chunkKey(source: source, namespace: namespace, hash: $0) }
                }
                return try reader.manifestIndexes(sources: keys)
            })
        else { return [] }
        // Each chunk on a core of its own; a chunk that does not decode stands for nothing
        // (its files are read instead).
        let decoded = ManifestParsing.parallelMap(blobs.count, minimumPerWorker: 1) { i in blobs[i].flatMap(ResourceSnapshot.decode) }
        var kept: [ResourceSnapshot.Kept] = []
        for piece in decoded { kept += piece ?? [] }
        return kept
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
