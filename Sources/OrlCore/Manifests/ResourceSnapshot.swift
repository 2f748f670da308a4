public import OrlJSON

/// The resources of one namespace as an apply read them, kept in the state beside the
/// manifest index: each document in a compact binary form with every position it had,
/// and the content hash of its file. When a change touches the namespace, its checks
/// across resources (references, DAGs, the audit) run over these and the changed files
/// alone: the namespace's unchanged files are neither parsed nor checked against their
/// schemas again. A kept document stands only for a file with the same path and content
/// hash; anything else is read from its file (`IncrementalValidation.validate`).
public enum ResourceSnapshot {
    /// One kept resource and the content hash of the file it was read from.
    public struct Kept: Sendable {
        public var contentHash: String
        public var resource: Resource

        public init(contentHash: String, resource: Resource) {
            self.contentHash = contentHash
            self.resource = resource
        }
    }

    /// Where the state keeps the snapshot of `namespace` for `source`: beside the source's
    /// index, under a name no source has (sources are names users and URLs give, which
    /// hold no control characters).
    public static func key(source: String, namespace: String) -> String {
        source + "\u{1}kept\u{1}" + namespace
    }

    /// Versioned with the reader: a document is decoded again without its schema check,
    /// which holds only for what this version of the schemas accepted.
    static let magic: [UInt8] = Array("orl-kept-2\n".utf8)
    /// Deeper than any manifest the YAML reader accepts; a deeper one is not ours.
    static let maxDepth = 1_000

    // MARK: - Chunks

    /// A namespace's snapshot is a head naming chunks, each the kept resources of a run of
    /// files (as `encode` writes them) under a key of its own: the hash of what the chunk
    /// was read from (paths, content hashes, documents), so that a change writes the chunk
    /// of its file and the head, not the namespace's every document.
    static let headMagic: [UInt8] = Array("orl-kept-head-1\n".utf8)

    public static func chunkKey(source: String, namespace: String, hash: String) -> String {
        key(source: source, namespace: namespace) + "\u{1}" + hash
    }

    /// The resources in runs of whole files: a run ends after a file whose path hashes to
    /// 0 modulo 16 (about 16 files a run), so an added or removed file moves only its own.
    static func runs(_ resources: [Kept]) -> [ArraySlice<Kept>] {
        var runs: [ArraySlice<Kept>] = []
        var start = 0
        for i in resources.indices {
            let file = resources[i].resource.file
            let last = i + 1 == resources.count || resources[i + 1].resource.file != file
            if last && (StoredManifestIndex.pathHash(file) % 16 == 0 || i + 1 == resources.count) {
                runs.append(resources[start..<i + 1])
                start = i + 1
            }
        }
        return runs
    }

    /// What a run's encoded form follows from: its files' paths and content hashes and
    /// which documents of them it holds, with the format's version.
    static func identity(_ run: ArraySlice<Kept>) -> String {
        var out = ByteWriter()
        out.bytes += magic
        for entry in run {
            out.string(entry.resource.file)
            out.string(entry.contentHash)
            out.int(entry.resource.documentIndex)
            out.string(entry.resource.kind.rawValue)
        }
        return CanonicalJSON.bytesHash(out.bytes)
    }

    /// Writes `resources` as what the state keeps of `namespace` for `source` (nothing
    /// when empty): the chunks the state does not hold yet, the head, and drops the chunks
    /// the state's head named and this one does not. `encode` makes the chunks to write
    /// (`encode(_:)` of each run, in order): a caller may spread them over its cores, as
    /// a first apply's writer thread would otherwise encode every document alone.
    public static func write(
        _ resources: [Kept], source: String, namespace: String, _ writer: any StateWriter,
        encode encodeRuns: ([ArraySlice<Kept>]) -> [[UInt8]] = { $0.map { encode(Array($0)) } }
    ) throws(StoreError) {
        let headKey = key(source: source, namespace: namespace)
        let current = try writer.manifestIndex(source: headKey).flatMap(decodeHead) ?? []
        let stored = Set(current)
        var hashes: [String] = []
        var written = Set<String>()
        var missing: [(hash: String, run: ArraySlice<Kept>)] = []
        for run in runs(resources) {
            let hash = identity(run)
            hashes.append(hash)
            if !stored.contains(hash), written.insert(hash).inserted { missing.append((hash, run)) }
        }
        for (chunk, bytes) in zip(missing, encodeRuns(missing.map(\.run))) {
            try writer.putManifestIndex(source: chunkKey(source: source, namespace: namespace, hash: chunk.hash), bytes)
        }
        if hashes.isEmpty {
            try writer.putManifestIndex(source: headKey, nil)
        } else {
            var head = ByteWriter()
            head.bytes += headMagic
            head.int(hashes.count)
            for hash in hashes { head.string(hash) }
            try writer.putManifestIndex(source: headKey, head.bytes)
        }
        let used = Set(hashes)
        for hash in stored where !used.contains(hash) {
            try writer.putManifestIndex(source: chunkKey(source: source, namespace: namespace, hash: hash), nil)
        }
    }

    /// The keys of the chunks a head names, in order; nil when the bytes are not a head.
    public static func decodeHead(_ bytes: [UInt8]) -> [String]? {
        bytes.withUnsafeBufferPointer { buffer -> [String]? in
            guard buffer.count >= headMagic.count, buffer.prefix(headMagic.count).elementsEqual(headMagic) else { return nil }
            var reader = ByteReader(buffer)
            reader.offset = headMagic.count
            do throws(ByteReader.Malformed) {
                let count = try reader.count()
                var hashes: [String] = []
                hashes.reserveCapacity(count)
                for _ in 0..<count { hashes.append(try reader.string()) }
                guard reader.offset == buffer.count else { return nil }
                return hashes
            } catch {
                return nil
            }
        }
    }

    public static func encode(_ resources: [Kept]) -> [UInt8] {
        // A document whose positions name another file (none the readers make) is left
        // out: its file is then read again rather than misplaced.
        let kept = resources.filter { $0.resource.encodedDocument != nil || sameFile($0.resource.document, $0.resource.file) }
        var body = ByteWriter()
        body.bytes.reserveCapacity(kept.count * 1_024)
        var offsets: [Int] = []
        offsets.reserveCapacity(kept.count)
        for entry in kept {
            offsets.append(body.bytes.count)
            body.string(entry.resource.file)
            body.string(entry.contentHash)
            body.int(entry.resource.documentIndex)
            body.string(entry.resource.kind.rawValue)
            if let encoded = entry.resource.encodedDocument { body.bytes += encoded } else { body.node(entry.resource.document) }
        }
        // Where each resource starts, so that parts of a snapshot decode on several cores.
        var out = ByteWriter()
        out.bytes.reserveCapacity(magic.count + 8 * (offsets.count + 1) + body.bytes.count)
        out.bytes += magic
        out.int64(Int64(offsets.count))
        for offset in offsets { out.int64(Int64(offset)) }
        out.bytes += body.bytes
        return out.bytes
    }

    /// The kept resources, nil when the bytes are not a snapshot this version wrote. A
    /// document that no longer decodes is left out (its file is read instead).
    public static func decode(_ bytes: [UInt8]) -> [Kept]? { decode(bytes, part: 0, of: 1) }

    /// The `part`th of `parts` slices of the kept resources (in order), so that callers
    /// can decode a snapshot on several cores; nil as `decode(_:)`.
    public static func decode(_ bytes: [UInt8], part: Int, of parts: Int) -> [Kept]? {
        bytes.withUnsafeBufferPointer { buffer -> [Kept]? in
            var reader = ByteReader(buffer)
            guard parts > 0, part >= 0, part < parts, buffer.count >= magic.count, buffer.prefix(magic.count).elementsEqual(magic)
            else { return nil }
            reader.offset = magic.count
            do throws(ByteReader.Malformed) {
                let count = Int(try reader.int64())
                guard count >= 0, count <= (buffer.count - reader.offset) / 8 else { return nil }
                var offsets: [Int] = []
                offsets.reserveCapacity(count)
                for _ in 0..<count { offsets.append(Int(try reader.int64())) }
                let bodyStart = reader.offset
                let bodyCount = buffer.count - bodyStart
                // Offsets rise from 0 within the body: each resource ends where the next starts.
                for (i, offset) in offsets.enumerated() {
                    guard offset >= 0, offset < bodyCount, i == 0 ? offset == 0 : offset > offsets[i - 1] else { return nil }
                }
                let lower = count * part / parts
                let upper = count * (part + 1) / parts
                var out: [Kept] = []
                out.reserveCapacity(upper - lower)
                for i in lower..<upper {
                    reader.offset = bodyStart + offsets[i]
                    let file = try reader.string()
                    let contentHash = try reader.string()
                    let documentIndex = try reader.int()
                    guard let kind = ResourceKind(rawValue: try reader.string()) else { throw ByteReader.Malformed() }
                    let document = try reader.node(at: .file(file), depth: 0)
                    guard reader.offset == bodyStart + (i + 1 < count ? offsets[i + 1] : bodyCount) else { return nil }
                    if let resource = try? ManifestReader.decode(document, kind: kind, file: file, documentIndex: documentIndex) {
                        out.append(Kept(contentHash: contentHash, resource: resource))
                    }
                }
                if count == 0 && bodyCount != 0 { return nil }
                return out
            } catch {
                return nil
            }
        }
    }

    static func sameFile(_ node: Node, _ file: String) -> Bool {
        guard node.location.file == file else { return false }
        switch node.value {
        case .array(let elements): return elements.allSatisfy { sameFile($0, file) }
        case .object(let members): return members.allSatisfy { $0.keyLocation.file == file && sameFile($0.value, file) }
        default: return true
        }
    }
}

extension ByteWriter {
    /// A node and its positions (line and column; the file is the resource's).
    mutating func node(_ node: Node) {
        switch node.value {
        case .null: byte(0)
        case .bool(let value): byte(value ? 2 : 1)
        case .number(let number):
            // The two ways a number is made (`Number(integer:)` and
            // `Number(double:text:)`), so that the same one is made again.
            if let integer = number.integer, number.text == String(integer), number.double == Double(integer) {
                byte(3)
                int(integer)
            } else {
                byte(4)
                int64(Int64(bitPattern: number.double.bitPattern))
                string(number.text)
            }
        case .string(let value):
            byte(5)
            string(value)
        case .array(let elements):
            byte(6)
            int(elements.count)
            for element in elements { self.node(element) }
        case .object(let members):
            byte(7)
            int(members.count)
            for member in members {
                string(member.key)
                int(member.keyLocation.line)
                int(member.keyLocation.column)
                self.node(member.value)
            }
        }
        int(node.location.line)
        int(node.location.column)
    }
}

extension ByteReader {
    mutating func node(at origin: SourceLocation, depth: Int) throws(Malformed) -> Node {
        guard depth < ResourceSnapshot.maxDepth else { throw Malformed() }
        let value: Node.Value
        switch try byte() {
        case 0: value = .null
        case 1: value = .bool(false)
        case 2: value = .bool(true)
        case 3: value = .number(Number(integer: try int()))
        case 4:
            let bits = UInt64(bitPattern: try int64())
            value = .number(Number(double: Double(bitPattern: bits), text: try string()))
        case 5: value = .string(try string())
        case 6:
            let n = try count()
            var elements: [Node] = []
            elements.reserveCapacity(n)
            for _ in 0..<n { elements.append(try node(at: origin, depth: depth + 1)) }
            value = .array(elements)
        case 7:
            let n = try count()
            var members: [Node.Member] = []
            members.reserveCapacity(n)
            for _ in 0..<n {
                let key = try string()
                let keyLocation = origin.at(line: try int(), column: try int())
                members.append(Node.Member(key: key, keyLocation: keyLocation, value: try node(at: origin, depth: depth + 1)))
            }
            value = .object(members)
        default: throw Malformed()
        }
        return Node(value, at: origin.at(line: try int(), column: try int()))
    }
}
