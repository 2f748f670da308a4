public import OrlJSON

/// A file's metadata as git's index keeps it: what changes when its content may have.
public struct FileStamp: Sendable, Equatable {
    public var size: Int64
    /// Modification and change times, in nanoseconds since the epoch.
    public var mtime: Int64
    public var ctime: Int64
    public var inode: Int64
    public var device: Int64

    public init(size: Int64, mtime: Int64, ctime: Int64, inode: Int64, device: Int64) {
        self.size = size
        self.mtime = mtime
        self.ctime = ctime
        self.inode = inode
        self.device = device
    }

    /// A stamp taken at `recordedAt` vouches for the file when the file's stamp is the
    /// same now and its last change was well before the stamp was taken: a write in the
    /// same clock tick as the read could otherwise leave the times unchanged (git's
    /// "racy" entries), so such a file is read and hashed again.
    public func vouches(for now: FileStamp, recordedAt: Int64) -> Bool {
        // File times lag the clock by a kernel tick; on a file system that keeps whole
        // seconds, by up to a second.
        let second: Int64 = 1_000_000_000
        let margin: Int64 = mtime % second == 0 && ctime % second == 0 ? 2 * second : 100_000_000
        return self == now && ctime < recordedAt - margin && mtime < recordedAt - margin
    }
}

/// What the plan may take for granted from the last apply of a source: when the stored
/// resources have not changed since (the store's change mark is the same), each one the
/// source applied still has the hash that apply gave it, so an unchanged desired
/// resource need not be compared with the store at all.
public struct ApplyMemo: Sendable, Equatable {
    /// `StateReader.resourcesMark(source:)` right after that apply wrote.
    public var mark: String
    public var codeRoot: String?
    /// The source owned exactly the resources that apply desired (nothing left to prune).
    public var ownsExactly: Bool

    public init(mark: String, codeRoot: String?, ownsExactly: Bool) {
        self.mark = mark
        self.codeRoot = codeRoot
        self.ownsExactly = ownsExactly
    }
}

/// The manifest index of a source as the state keeps it: one compact blob, read in one
/// query and decoded without a JSON parser. Files are in the order the apply read them
/// (the walk's order), so the next apply compares its walk with them in one pass.
public struct StoredManifestIndex: Sendable, Equatable {
    public struct File: Sendable, Equatable {
        public var record: ManifestFileRecord
        public var stamp: FileStamp?
        /// When the stamp was taken (nanoseconds since the epoch).
        public var stampedAt: Int64

        public init(record: ManifestFileRecord, stamp: FileStamp?, stampedAt: Int64) {
            self.record = record
            self.stamp = stamp
            self.stampedAt = stampedAt
        }

        public var path: String { record.path }
    }

    public var files: [File]
    public var namespaces: [String: [Diagnostic]]
    /// The desired resources in `Fleet` order, as (file, entry) positions.
    public var desired: [Position]
    public var memo: ApplyMemo?

    public struct Position: Sendable, Equatable {
        public var file: Int32
        public var entry: Int32

        public init(file: Int32, entry: Int32) {
            self.file = file
            self.entry = entry
        }
    }

    public init(files: [File], namespaces: [String: [Diagnostic]], desired: [Position], memo: ApplyMemo?) {
        self.files = files
        self.namespaces = namespaces
        self.desired = desired
        self.memo = memo
    }

    /// The index as `IncrementalValidation` takes it.
    public var index: ManifestIndex {
        var files: [String: ManifestFileRecord] = [:]
        files.reserveCapacity(self.files.count)
        for file in self.files where files[file.path] == nil { files[file.path] = file.record }
        return ManifestIndex(files: files, namespaces: namespaces)
    }

    /// The desired resources, in `Fleet` order.
    public func desiredResources() -> [DesiredResource] {
        // Not `let file = files[i]`: binding a file copies its record (every string and
        // array retained and released), for each of 10,000 resources.
        desired.map { position in
            let file = Int(position.file)
            return DesiredResource(files[file].record.entries[Int(position.entry)], file: files[file].record.path)
        }
    }

    /// Whether `desired` is this index's desired set, entry for entry (without making it).
    public func desires(_ desired: [DesiredResource]) -> Bool {
        guard self.desired.count == desired.count else { return false }
        for (position, entry) in zip(self.desired, desired) {
            let file = files[Int(position.file)]
            guard file.path == entry.file, DesiredResource(file.record.entries[Int(position.entry)], file: file.path) == entry else {
                return false
            }
        }
        return true
    }

    /// Per entry of `desired`: whether this index desired the same resource with the same
    /// hash and code. Both are in `Fleet` order, so one pass over the two answers it; an
    /// entry out of that order is answered false (the plan then asks the store).
    public func settled(_ desired: [DesiredResource]) -> [Bool] {
        func rank(_ id: ResourceID) -> ResourceKind? { ResourceKind(rawValue: id.kind) }
        func precedes(_ a: ResourceID, _ b: ResourceID) -> Bool {
            guard let ka = rank(a), let kb = rank(b) else { return false }
            return (ka, a.namespace, a.name) < (kb, b.namespace, b.name)
        }
        var settled = [Bool](repeating: false, count: desired.count)
        var i = 0
        for (k, entry) in desired.enumerated() {
            while i < self.desired.count {
                let position = self.desired[i]
                let old = files[Int(position.file)].record.entries[Int(position.entry)]
                if old.id == entry.id {
                    settled[k] = old.manifestHash == entry.manifestHash && old.hasCode == entry.hasCode
                    i += 1
                    break
                }
                guard precedes(old.id, entry.id) else { break }
                i += 1
            }
        }
        return settled
    }

    /// Positions of `desired` (as `IncrementalValidation` gives them) among `files`; nil
    /// when one is not there.
    public static func positions(of desired: [DesiredResource], in files: [File]) -> [Position]? {
        var byPath: [String: Int] = [:]
        byPath.reserveCapacity(files.count)
        for (i, file) in files.enumerated() where byPath[file.path] == nil { byPath[file.path] = i }
        var positions: [Position] = []
        positions.reserveCapacity(desired.count)
        for entry in desired {
            guard let f = byPath[entry.file], let e = files[f].record.entries.firstIndex(where: { $0.id == entry.id }) else { return nil }
            positions.append(Position(file: Int32(f), entry: Int32(e)))
        }
        return positions
    }

    // MARK: - The stored form

    /// The head of an index: the memo, its chunks, where each namespace's diagnostics are
    /// and the desired positions. The files are in chunks of their own (`Chunk`) and each
    /// namespace's diagnostics in a blob of its own, both under the hash of their bytes, so
    /// that an apply that changes a file writes the head, that file's chunk and its
    /// namespaces' diagnostics, not every file's record and every namespace's findings.
    static let magic: [UInt8] = Array("orl-index-5\n".utf8)
    static let chunkMagic: [UInt8] = Array("orl-files-1\n".utf8)
    static let diagnosticsMagic: [UInt8] = Array("orl-diagnostics-1\n".utf8)

    /// A run of consecutive files stored under a key of its own: the hash of its bytes
    /// (content-addressed, so a chunk that is written is never rewritten).
    public struct Chunk: Sendable, Equatable {
        public var hash: String
        public var count: Int
    }

    /// An index as the state holds it: the index, and the chunks its files were read from.
    public struct Stored: Sendable {
        public var index: StoredManifestIndex
        public var chunks: [Chunk]
        /// The hash of each namespace's diagnostics.
        public var diagnostics: [String: String] = [:]
        /// What the caller kept of the report this index records, in the form it asked for
        /// (`read(source:_:report:)`); nil when none is kept.
        public var report: [UInt8]?
        /// The form `report` is in.
        var reportForm: String?
        /// The name of the kept report the head points to (whatever its form).
        var reportName: String?
        /// The namespaces' diagnostics as stored, not decoded yet: read with a kept report,
        /// `index.namespaces` is empty until `decodingDiagnostics()`.
        var undecoded: [String: [UInt8]] = [:]

        public init(index: StoredManifestIndex, chunks: [Chunk], diagnostics: [String: String] = [:], report: [UInt8]? = nil) {
            self.index = index
            self.chunks = chunks
            self.diagnostics = diagnostics
            self.report = report
        }

        /// Whether `index.namespaces` is left out (see `undecoded`).
        public var diagnosticsPending: Bool { !undecoded.isEmpty }

        /// The index with its namespaces' diagnostics; nil when one of them does not decode.
        public func decodingDiagnostics() -> Stored? {
            guard diagnosticsPending else { return self }
            var stored = self
            for (name, blob) in undecoded {
                guard let found = StoredManifestIndex.decodeDiagnostics(blob) else { return nil }
                stored.index.namespaces[name] = found
            }
            stored.undecoded = [:]
            return stored
        }
    }

    /// Where the state keeps a chunk of `source`'s index: beside the head, under a name no
    /// source has (sources hold no control characters).
    public static func chunkKey(source: String, hash: String) -> String { source + "\u{1}files\u{1}" + hash }

    /// The files' chunks: a chunk ends after a file whose path hashes to 0 modulo 64, so
    /// that adding or removing a file moves the boundaries of its own chunk only (about
    /// 64 files a chunk), or at 256 files.
    static func chunkRanges(_ files: [File]) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = 0
        for (i, file) in files.enumerated() {
            if pathHash(file.record.path) % 64 == 0 || i + 1 - start == 256 {
                ranges.append(start..<i + 1)
                start = i + 1
            }
        }
        if start < files.count { ranges.append(start..<files.count) }
        return ranges
    }

    /// The chunks of `previous` as ranges, when `files` have its paths in its order (a
    /// re-apply that edited files): `chunkRanges` would give them again, hashing every path.
    /// With `dirty` (see `write`), only the paths at those positions are compared: the
    /// others are `previous`'s files as they are.
    static func ranges(of previous: Stored, for files: [File], dirty: [Int]? = nil) -> [Range<Int>]? {
        guard previous.index.files.count == files.count, previous.chunks.allSatisfy({ $0.count > 0 }),
            previous.chunks.reduce(0, { $0 + $1.count }) == files.count
        else { return nil }
        // Byte for byte: the bounds follow the paths' bytes, and `==` equates two spellings
        // of one name that hash apart.
        func sameBytes(_ a: String, _ b: String) -> Bool {
            var (a, b) = (a, b)
            return a.withUTF8 { x in b.withUTF8 { y in x.count == y.count && x.elementsEqual(y) } }
        }
        let same = previous.index.files.withUnsafeBufferPointer { old in
            files.withUnsafeBufferPointer { new in
                if let dirty {
                    return dirty.allSatisfy { new.indices.contains($0) && sameBytes(old[$0].record.path, new[$0].record.path) }
                }
                return new.indices.allSatisfy { sameBytes(old[$0].record.path, new[$0].record.path) }
            }
        }
        guard same else { return nil }
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(previous.chunks.count)
        var start = 0
        for chunk in previous.chunks {
            ranges.append(start..<start + chunk.count)
            start += chunk.count
        }
        return ranges
    }

    /// FNV-1a of a path's bytes: where chunks end, the same in every process.
    static func pathHash(_ path: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        var path = path
        path.withUTF8 { bytes in
            for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        }
        return hash
    }

    /// The index of `source` as the state holds it; nil when there is none, or it is not
    /// one this version wrote (then everything is read again). With a `report` form, what
    /// the caller kept of the index's report in that form (`putReport`) is read in the same
    /// query, and when there is one the namespaces' diagnostics are left undecoded (see
    /// `Stored.decodingDiagnostics`): printing the kept report needs none of them.
    public static func read(source: String, _ reader: any StateReader, report form: String? = nil) throws(StoreError) -> Stored? {
        guard let bytes = try reader.manifestIndex(source: source) else { return nil }
        guard let head = decodeHead(bytes) else { return nil }
        let (partial, chunks, diagnostics) = (head.index, head.chunks, head.diagnostics)
        let names = diagnostics.keys.sorted()
        // The kept report first: with one, the namespaces' findings need no decoding.
        let reportKeys = form == nil ? [] : head.report.map { [reportKey(source: source, name: $0)] } ?? []
        let keys = reportKeys + (chunks.map(\.hash) + names.map { diagnostics[$0]! }).map { chunkKey(source: source, hash: $0) }
        var report: [UInt8]?
        var namespaces: [String: [Diagnostic]] = [:]
        var undecoded: [String: [UInt8]] = [:]
        var files: [File] = []
        files.reserveCapacity(chunks.reduce(0) { $0 + $1.count })
        var whole = true
        // Each row decoded as it is read (the store's copy is good only until the next).
        try reader.withManifestIndexes(sources: keys) { position, blob in
            var i = position - reportKeys.count
            if i < 0 {
                report = form.flatMap { form in blob.flatMap { decodeReport($0, form: form) } }
                return true
            }
            guard let blob else {
                whole = false
                return false
            }
            if i < chunks.count {
                whole = decodeChunk(blob, count: chunks[i].count, into: &files)
                return whole
            }
            i -= chunks.count
            if report != nil {
                undecoded[names[i]] = Array(blob)
                return true
            }
            namespaces[names[i]] = decodeDiagnostics(blob)
            whole = namespaces[names[i]] != nil
            return whole
        }
        guard whole else { return nil }
        for position in partial.desired {
            guard Int(position.file) < files.count, Int(position.entry) < files[Int(position.file)].record.entries.count else {
                return nil
            }
        }
        var index = partial
        index.files = files
        index.namespaces = namespaces
        var stored = Stored(index: index, chunks: chunks, diagnostics: diagnostics, report: report)
        stored.undecoded = undecoded
        stored.reportName = head.report
        stored.reportForm = report == nil ? nil : form
        return stored
    }

    // MARK: - The kept report

    static let reportMagic: [UInt8] = Array("orl-report-1\n".utf8)

    /// What a caller made of the report an index records (`IncrementalValidation.recorded`:
    /// every file's diagnostics, then every namespace's, the resource count, and the number
    /// of files) is kept beside the index, under a name the head points to. The report is a
    /// function of the chunks (in order) and of the namespaces' diagnostics blobs, all
    /// stored under the hash of their bytes, so a new report is named from those hashes.
    /// A head points to a report only when it was written with it (`write(report:)`), or
    /// when its chunks and findings are those of the head it replaced (`.keep`), so that
    /// an index whose files or findings differ finds no kept report, never a stale one; a
    /// change that leaves the report's bytes as they were (a value edited) points to the
    /// one kept, not a copy of it.
    public static func reportName(chunks: [Chunk], diagnostics: [String: String]) -> String {
        var out = ByteWriter()
        out.bytes += reportMagic
        out.chunks(chunks, diagnostics: diagnostics)
        return CanonicalJSON.bytesHash(out.bytes)
    }

    /// Where the state keeps the report named `name` (`reportName`).
    public static func reportKey(source: String, name: String) -> String { source + "\u{1}report\u{1}" + name }

    /// What a write of an index does with the kept report.
    public enum KeptReport: Sendable {
        /// The report of the head it replaces stays, if that head has the same chunks and
        /// findings; otherwise none is kept.
        case keep
        /// The caller's report of this very index, in `form`: kept, under the name the
        /// head it replaces points to when that one holds these bytes already.
        case rendered(form: String, payload: [UInt8])
    }

    static func reportRow(_ payload: [UInt8], form: String) -> [UInt8] {
        var out = ByteWriter()
        out.bytes.reserveCapacity(reportMagic.count + form.utf8.count + payload.count + 8)
        out.bytes += reportMagic
        out.string(form)
        out.bytes += payload
        return out.bytes
    }

    /// Keeps `payload`, what the caller made of the report of `stored` in its `form` (the
    /// rendering and its version: another form is never taken for it), beside the index,
    /// replacing what was kept in another form; the head is written again to point to it.
    /// Nothing when the state's head stands for other files or findings than `stored`
    /// (an apply of the source came in between): its report is its own. The caller makes
    /// it from this very report: the one its load worked out for the files `stored`
    /// stands for.
    public static func putReport(_ payload: [UInt8], form: String, source: String, of stored: Stored, _ writer: any StateWriter)
        throws(StoreError)
    {
        guard let current = try writer.manifestIndex(source: source).flatMap(decodeHead), current.chunks == stored.chunks,
            current.diagnostics == stored.diagnostics
        else { return }
        let name = reportName(chunks: stored.chunks, diagnostics: stored.diagnostics)
        try writer.putManifestIndex(source: reportKey(source: source, name: name), reportRow(payload, form: form))
        guard current.report != name else { return }
        try writer.putManifestIndex(source: source, current.index.head(current.chunks, diagnostics: current.diagnostics, report: name))
        if let old = current.report { try writer.putManifestIndex(source: reportKey(source: source, name: old), nil) }
    }

    static func decodeReport(_ buffer: UnsafeBufferPointer<UInt8>, form: String) -> [UInt8]? {
        guard buffer.count >= reportMagic.count, buffer.prefix(reportMagic.count).elementsEqual(reportMagic) else { return nil }
        var reader = ByteReader(buffer)
        reader.offset = reportMagic.count
        guard let kept = try? reader.string(), kept == form else { return nil }
        return Array(buffer[reader.offset...])
    }

    /// Writes this index as `source`'s: the head, and of its chunks those the state does
    /// not hold already (a chunk whose files are those `previous` read is not encoded
    /// again); the chunks the state's head named and this one does not are dropped. The
    /// state's head is read again here, inside the write, so that an apply of the same
    /// source in between leaves neither a chunk missing nor one behind.
    /// Returns the index as the state now holds it (the next write's `previous`).
    /// - Parameters:
    ///   - dirty: when given, the only positions at which `files` may differ from
    ///     `previous`'s (the caller changed those of a copy of them and no other): the
    ///     chunks without one are `previous`'s, known without comparing their files.
    ///   - report: what becomes of the kept report (see `KeptReport`).
    @discardableResult
    public func write(
        source: String, previous: Stored?, dirty: [Int]? = nil, report: KeptReport = .keep, _ writer: any StateWriter
    ) throws(StoreError) -> Stored {
        let current = try writer.manifestIndex(source: source).flatMap(Self.decodeHead)
        let stored = Set((current?.chunks ?? []).map(\.hash)).union((current?.diagnostics ?? [:]).values)
        var known: [String: (chunk: Chunk, start: Int)] = [:]
        if let previous {
            var start = 0
            for chunk in previous.chunks {
                if stored.contains(chunk.hash) { known[previous.index.files[start].path] = (chunk, start) }
                start += chunk.count
            }
        }
        var chunks: [Chunk] = []
        var written = Set<String>()
        let ranges = previous.flatMap { Self.ranges(of: $0, for: files, dirty: dirty) }
        // Whether each range holds a position the caller changed (with `dirty` only).
        var touched = [Bool](repeating: dirty == nil, count: ranges?.count ?? 0)
        if let dirty, let ranges, !ranges.isEmpty {
            for position in dirty {
                var (low, high) = (0, ranges.count - 1)
                while low < high {
                    let middle = (low + high) / 2
                    if ranges[middle].upperBound <= position { low = middle + 1 } else { high = middle }
                }
                touched[low] = true
            }
        }
        for (k, range) in (ranges ?? Self.chunkRanges(files)).enumerated() {
            if let previous, let old = known[files[range.lowerBound].path], old.chunk.count == range.count,
                (ranges != nil && !touched[k] && old.start == range.lowerBound)
                    || Self.equal(previous.index.files, from: old.start, files, range)
            {
                chunks.append(old.chunk)
                continue
            }
            var out = ByteWriter()
            out.bytes += Self.chunkMagic
            out.int(range.count)
            for file in files[range] { out.file(file) }
            let hash = CanonicalJSON.bytesHash(out.bytes)
            if !stored.contains(hash), written.insert(hash).inserted {
                try writer.putManifestIndex(source: Self.chunkKey(source: source, hash: hash), out.bytes)
            }
            chunks.append(Chunk(hash: hash, count: range.count))
        }
        var diagnostics: [String: String] = [:]
        for namespace in namespaces.keys.sorted() {
            let found = namespaces[namespace]!
            if let previous, let hash = previous.diagnostics[namespace], stored.contains(hash),
                previous.index.namespaces[namespace] == found
            {
                diagnostics[namespace] = hash
                continue
            }
            var out = ByteWriter()
            out.bytes += Self.diagnosticsMagic
            out.diagnostics(found)
            let hash = CanonicalJSON.bytesHash(out.bytes)
            if !stored.contains(hash), written.insert(hash).inserted {
                try writer.putManifestIndex(source: Self.chunkKey(source: source, hash: hash), out.bytes)
            }
            diagnostics[namespace] = hash
        }
        var name: String?
        var kept: (payload: [UInt8], form: String)?
        switch report {
        case .keep:
            if let current, current.chunks == chunks, current.diagnostics == diagnostics { name = current.report }
        case .rendered(let form, let payload):
            kept = (payload, form)
            // The bytes the replaced head points to, as the load read them: no copy.
            if let current, let held = current.report, let previous, previous.reportName == held, previous.reportForm == form,
                previous.report == payload
            {
                name = held
            } else {
                name = Self.reportName(chunks: chunks, diagnostics: diagnostics)
                try writer.putManifestIndex(source: Self.reportKey(source: source, name: name!), Self.reportRow(payload, form: form))
            }
        }
        try writer.putManifestIndex(source: source, head(chunks, diagnostics: diagnostics, report: name))
        let used = Set(chunks.map(\.hash)).union(diagnostics.values)
        for hash in stored where !used.contains(hash) {
            try writer.putManifestIndex(source: Self.chunkKey(source: source, hash: hash), nil)
        }
        if let replaced = current?.report, replaced != name {
            try writer.putManifestIndex(source: Self.reportKey(source: source, name: replaced), nil)
        }
        var result = Stored(index: self, chunks: chunks, diagnostics: diagnostics, report: kept?.payload)
        result.reportForm = kept?.form
        result.reportName = name
        return result
    }

    /// Whether `a` from `start` holds the files of `b` in `range`, compared in place (an
    /// `elementsEqual` copies every file it looks at, and a write looks at all of them).
    static func equal(_ a: [File], from start: Int, _ b: [File], _ range: Range<Int>) -> Bool {
        guard start >= 0, start + range.count <= a.count, range.lowerBound >= 0, range.upperBound <= b.count else { return false }
        return a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                for k in 0..<range.count where a[start + k] != b[range.lowerBound + k] { return false }
                return true
            }
        }
    }

    /// Drops the index of `source` and its chunks.
    public static func drop(source: String, _ writer: any StateWriter) throws(StoreError) {
        let current = try writer.manifestIndex(source: source).flatMap(decodeHead)
        try writer.putManifestIndex(source: source, nil)
        if let name = current?.report { try writer.putManifestIndex(source: reportKey(source: source, name: name), nil) }
        for hash in Set((current?.chunks ?? []).map(\.hash)).union((current?.diagnostics ?? [:]).values) {
            try writer.putManifestIndex(source: chunkKey(source: source, hash: hash), nil)
        }
    }

    func head(_ chunks: [Chunk], diagnostics: [String: String], report: String?) -> [UInt8] {
        var out = ByteWriter()
        out.bytes.reserveCapacity(desired.count * 4 + chunks.count * 72 + 256)
        out.bytes += Self.magic
        if let memo {
            out.byte(1)
            out.string(memo.mark)
            out.optionalString(memo.codeRoot)
            out.byte(memo.ownsExactly ? 1 : 0)
        } else {
            out.byte(0)
        }
        out.chunks(chunks, diagnostics: diagnostics)
        out.int(desired.count)
        for position in desired {
            out.int(Int(position.file))
            out.int(Int(position.entry))
        }
        out.optionalString(report)
        return out.bytes
    }

    static func decodeDiagnostics(_ bytes: [UInt8]) -> [Diagnostic]? {
        bytes.withUnsafeBufferPointer { decodeDiagnostics($0) }
    }

    static func decodeDiagnostics(_ buffer: UnsafeBufferPointer<UInt8>) -> [Diagnostic]? {
        var reader = ByteReader(buffer)
        guard buffer.count >= diagnosticsMagic.count, buffer.prefix(diagnosticsMagic.count).elementsEqual(diagnosticsMagic) else {
            return nil
        }
        reader.offset = diagnosticsMagic.count
        guard let found = try? reader.diagnostics(), reader.offset == buffer.count else { return nil }
        return found
    }

    /// A head as stored: the index without its files and diagnostics, its chunks, the hash
    /// of each namespace's diagnostics, and the name of its kept report.
    struct Head {
        var index: StoredManifestIndex
        var chunks: [Chunk]
        var diagnostics: [String: String]
        var report: String?
    }

    static func decodeHead(_ bytes: [UInt8]) -> Head? {
        bytes.withUnsafeBufferPointer { buffer in
            var reader = ByteReader(buffer)
            return try? reader.head()
        }
    }

    /// Appends a chunk's `count` files to `files` (decoded in place: no array of its own
    /// to copy from, 10,000 records a load); false when it is not such a chunk.
    static func decodeChunk(_ buffer: UnsafeBufferPointer<UInt8>, count: Int, into files: inout [File]) -> Bool {
        var reader = ByteReader(buffer)
        return (try? reader.chunk(count: count, into: &files)) != nil
    }
}

extension ByteWriter {
    /// An index's chunks and its namespaces' findings, as the head holds them and as the
    /// kept report's key is derived from them.
    mutating func chunks(_ chunks: [StoredManifestIndex.Chunk], diagnostics: [String: String]) {
        int(chunks.count)
        for chunk in chunks {
            string(chunk.hash)
            int(chunk.count)
        }
        int(diagnostics.count)
        for namespace in diagnostics.keys.sorted() {
            string(namespace)
            string(diagnostics[namespace]!)
        }
    }
}

struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    /// LEB128: most numbers here (lengths, counts, lines) fit in one or two bytes.
    mutating func int(_ value: Int) {
        var rest = UInt64(bitPattern: Int64(value))
        while rest >= 0x80 {
            bytes.append(UInt8(rest & 0x7f) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    mutating func int64(_ value: Int64) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            int(utf8.count)
            bytes.append(contentsOf: utf8)
        }
    }

    mutating func optionalString(_ value: String?) {
        if let value {
            byte(1)
            string(value)
        } else {
            byte(0)
        }
    }

    mutating func id(_ id: ResourceID) {
        string(id.kind)
        string(id.namespace)
        string(id.name)
    }

    mutating func file(_ file: StoredManifestIndex.File) {
        let record = file.record
        string(record.path)
        string(record.contentHash)
        if let stamp = file.stamp {
            byte(1)
            for value in [stamp.size, stamp.mtime, stamp.ctime, stamp.inode, stamp.device, file.stampedAt] { int64(value) }
        } else {
            byte(0)
        }
        int(record.entries.count)
        for entry in record.entries {
            id(entry.id)
            string(entry.manifestHash)
            int(entry.line)
            byte(entry.hasCode ? 1 : 0)
        }
        int(record.unreadable.count)
        for id in record.unreadable { self.id(id) }
        int(record.unidentified)
        byte(record.spansFiles ? 1 : 0)
        diagnostics(record.diagnostics)
    }

    mutating func location(_ location: SourceLocation?) {
        guard let location else { return byte(0) }
        byte(1)
        string(location.file)
        int(location.line)
        int(location.column)
    }

    mutating func diagnostics(_ diagnostics: [Diagnostic]) {
        int(diagnostics.count)
        for d in diagnostics {
            string(d.severity.rawValue)
            string(d.code.rawValue)
            string(d.message)
            location(d.location)
            if let resource = d.resource {
                byte(1)
                id(resource)
            } else {
                byte(0)
            }
            if let path = d.path {
                byte(1)
                int(path.components.count)
                for component in path.components {
                    switch component {
                    case .key(let key):
                        byte(0)
                        string(key)
                    case .index(let index):
                        byte(1)
                        int(index)
                    case .element(let key, let value):
                        byte(2)
                        string(key)
                        string(value)
                    }
                }
            } else {
                byte(0)
            }
            int(d.notes.count)
            for note in d.notes {
                string(note.message)
                location(note.location)
            }
        }
    }
}

struct ByteReader {
    struct Malformed: Error {}

    let buffer: UnsafeBufferPointer<UInt8>
    var offset = 0

    init(_ buffer: UnsafeBufferPointer<UInt8>) { self.buffer = buffer }

    mutating func byte() throws(Malformed) -> UInt8 {
        guard offset < buffer.count else { throw Malformed() }
        defer { offset += 1 }
        return buffer[offset]
    }

    mutating func bool() throws(Malformed) -> Bool {
        switch try byte() {
        case 0: false
        case 1: true
        default: throw Malformed()
        }
    }

    mutating func int() throws(Malformed) -> Int {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try byte()
            guard shift < 64 else { throw Malformed() }
            value |= UInt64(b & 0x7f) << shift
            if b < 0x80 { return Int(Int64(bitPattern: value)) }
            shift += 7
        }
    }

    mutating func count() throws(Malformed) -> Int {
        let n = try int()
        guard n >= 0, n <= buffer.count - offset else { throw Malformed() }
        return n
    }

    mutating func int64() throws(Malformed) -> Int64 {
        guard buffer.count - offset >= 8 else { throw Malformed() }
        var value: UInt64 = 0
        for i in 0..<8 { value |= UInt64(buffer[offset + i]) << (8 * UInt64(i)) }
        offset += 8
        return Int64(bitPattern: value)
    }

    mutating func string() throws(Malformed) -> String {
        let n = try count()
        defer { offset += n }
        return String(decoding: UnsafeBufferPointer(rebasing: buffer[offset..<offset + n]), as: UTF8.self)
    }

    mutating func optionalString() throws(Malformed) -> String? {
        try bool() ? try string() : nil
    }

    mutating func id() throws(Malformed) -> ResourceID {
        ResourceID(kind: try string(), namespace: try string(), name: try string())
    }

    mutating func location() throws(Malformed) -> SourceLocation? {
        guard try bool() else { return nil }
        return SourceLocation(file: try string(), line: try int(), column: try int())
    }

    mutating func diagnostics() throws(Malformed) -> [Diagnostic] {
        let n = try count()
        var out: [Diagnostic] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            guard let severity = Diagnostic.Severity(rawValue: try string()) else { throw Malformed() }
            let code = DiagnosticCode(rawValue: try string())
            var d = Diagnostic(severity, code, try string(), at: try location())
            if try bool() { d.resource = try id() }
            if try bool() {
                let m = try count()
                var components: [ValuePath.Component] = []
                components.reserveCapacity(m)
                for _ in 0..<m {
                    switch try byte() {
                    case 0: components.append(.key(try string()))
                    case 1: components.append(.index(try int()))
                    case 2: components.append(.element(key: try string(), value: try string()))
                    default: throw Malformed()
                    }
                }
                d.path = ValuePath(components)
            }
            let notes = try count()
            for _ in 0..<notes {
                var note = Diagnostic.Note(try string())
                note.location = try location()
                d.notes.append(note)
            }
            out.append(d)
        }
        return out
    }

    mutating func head() throws(Malformed) -> StoredManifestIndex.Head {
        let magic = StoredManifestIndex.magic
        guard buffer.count >= magic.count, buffer.prefix(magic.count).elementsEqual(magic) else { throw Malformed() }
        offset = magic.count
        var memo: ApplyMemo?
        if try bool() {
            memo = ApplyMemo(mark: try string(), codeRoot: try optionalString(), ownsExactly: try bool())
        }
        let chunkCount = try count()
        var chunks: [StoredManifestIndex.Chunk] = []
        chunks.reserveCapacity(chunkCount)
        for _ in 0..<chunkCount {
            let hash = try string()
            let files = try int()
            guard files > 0 else { throw Malformed() }
            chunks.append(StoredManifestIndex.Chunk(hash: hash, count: files))
        }
        let namespaceCount = try count()
        var namespaces: [String: String] = [:]
        for _ in 0..<namespaceCount {
            let name = try string()
            namespaces[name] = try string()
        }
        let desiredCount = try count()
        var desired: [StoredManifestIndex.Position] = []
        desired.reserveCapacity(desiredCount)
        for _ in 0..<desiredCount {
            let file = try int()
            let entry = try int()
            guard file >= 0, file <= Int32.max, entry >= 0, entry <= Int32.max else { throw Malformed() }
            desired.append(StoredManifestIndex.Position(file: Int32(file), entry: Int32(entry)))
        }
        let report = try optionalString()
        guard offset == buffer.count else { throw Malformed() }
        return StoredManifestIndex.Head(
            index: StoredManifestIndex(files: [], namespaces: [:], desired: desired, memo: memo), chunks: chunks, diagnostics: namespaces,
            report: report)
    }

    mutating func chunk(count expected: Int, into files: inout [StoredManifestIndex.File]) throws(Malformed) {
        let magic = StoredManifestIndex.chunkMagic
        guard buffer.count >= magic.count, buffer.prefix(magic.count).elementsEqual(magic) else { throw Malformed() }
        offset = magic.count
        let fileCount = try count()
        guard fileCount == expected else { throw Malformed() }
        for _ in 0..<fileCount { files.append(try file()) }
        guard offset == buffer.count else { throw Malformed() }
    }

    mutating func file() throws(Malformed) -> StoredManifestIndex.File {
        let path = try string()
        let contentHash = try string()
        var stamp: FileStamp?
        var stampedAt: Int64 = 0
        if try bool() {
            stamp = FileStamp(size: try int64(), mtime: try int64(), ctime: try int64(), inode: try int64(), device: try int64())
            stampedAt = try int64()
        }
        let entryCount = try count()
        var entries: [ManifestFileRecord.Entry] = []
        entries.reserveCapacity(entryCount)
        for _ in 0..<entryCount {
            entries.append(ManifestFileRecord.Entry(id: try id(), manifestHash: try string(), line: try int(), hasCode: try bool()))
        }
        let unreadableCount = try count()
        var unreadable: [ResourceID] = []
        for _ in 0..<unreadableCount { unreadable.append(try id()) }
        let unidentified = try int()
        let spansFiles = try bool()
        let diagnostics = try diagnostics()
        return StoredManifestIndex.File(
            record: ManifestFileRecord(
                path: path, contentHash: contentHash, entries: entries, unreadable: unreadable, unidentified: unidentified,
                diagnostics: diagnostics, spansFiles: spansFiles),
            stamp: stamp, stampedAt: stampedAt)
    }
}
