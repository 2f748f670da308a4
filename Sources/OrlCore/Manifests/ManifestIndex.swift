public import OrlJSON

/// What reading one manifest file gave, small enough to keep in the state for every file
/// of a source: the resources' identities and content hashes (not their documents), and
/// the file's own diagnostics. A file whose content hash is unchanged at the next apply
/// is not parsed again: this record stands for it.
public struct ManifestFileRecord: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var id: ResourceID
        /// SHA-256 of the canonical manifest, what the store keeps beside it.
        public var manifestHash: String
        public var line: Int
        /// An Agent or a command Tool: its code root comes from the apply (`CodeOrigin`).
        public var hasCode: Bool
    }

    public var path: String
    /// SHA-256 of the file's bytes (a git source: the blob id).
    public var contentHash: String
    public var entries: [Entry]
    public var unreadable: [ResourceID]
    public var unidentified: Int
    /// The file's own problems (YAML, schemas), before `--strict`.
    public var diagnostics: [Diagnostic]
    /// An `mcp.lock.json` or an MCP Tool: pins are matched across files, so a source that
    /// has either is always checked in full.
    public var spansFiles: Bool

    public init(path: String, contentHash: String, read: ReadManifests) {
        self.path = path
        self.contentHash = contentHash
        entries = read.resources.map { Entry($0) }
        unreadable = read.unreadable
        unidentified = read.unidentified
        diagnostics = read.diagnostics
        spansFiles = !read.mcpLocks.isEmpty || read.resources.contains { $0.tool?.type == .mcp }
    }

    init(
        path: String, contentHash: String, entries: [Entry], unreadable: [ResourceID], unidentified: Int, diagnostics: [Diagnostic],
        spansFiles: Bool
    ) {
        self.path = path
        self.contentHash = contentHash
        self.entries = entries
        self.unreadable = unreadable
        self.unidentified = unidentified
        self.diagnostics = diagnostics
        self.spansFiles = spansFiles
    }

    /// Whether the file defines something in one of `namespaces` (without making a set
    /// of its own: asked of every file at each change).
    public func definesSomething(in namespaces: Set<String>) -> Bool {
        entries.contains { namespaces.contains($0.id.namespace) } || unreadable.contains { namespaces.contains($0.namespace) }
    }

    /// The namespaces this file defines something in: what a change to it can affect.
    public var namespaces: Set<String> {
        Set(entries.map(\.id.namespace)).union(unreadable.map(\.namespace))
    }
}

extension ManifestFileRecord.Entry {
    init(_ resource: Resource) {
        id = resource.id
        manifestHash = CanonicalJSON.textHash(resource.canonical.text)
        line = resource.location.line
        hasCode = CodeOrigin.hasCode(resource)
    }
}

/// What the last apply of a source read: a record per file and the diagnostics of the
/// checks across resources, per namespace (every reference, DAG and audit check stays
/// inside one namespace, so a change re-checks only the namespaces it touches).
public struct ManifestIndex: Sendable, Equatable {
    public var files: [String: ManifestFileRecord]
    public var namespaces: [String: [Diagnostic]]

    public init(files: [String: ManifestFileRecord] = [:], namespaces: [String: [Diagnostic]] = [:]) {
        self.files = files
        self.namespaces = namespaces
    }
}

/// A resource to apply as the plan first sees it: who it is, the hash of its canonical
/// manifest and where it is. The document is looked at only when the hash differs from
/// what is stored.
public struct DesiredResource: Sendable, Equatable {
    public var id: ResourceID
    public var manifestHash: String
    public var file: String
    public var line: Int
    public var hasCode: Bool

    public init(_ resource: Resource) {
        let entry = ManifestFileRecord.Entry(resource)
        self.init(entry, file: resource.file)
    }

    init(_ entry: ManifestFileRecord.Entry, file: String) {
        id = entry.id
        manifestHash = entry.manifestHash
        self.file = file
        line = entry.line
        hasCode = entry.hasCode
    }

    /// Kind order, then namespace and name: the order of `Fleet.resources`.
    static func fleetOrder(_ a: DesiredResource, _ b: DesiredResource) -> Bool {
        let ka = ResourceKind(rawValue: a.id.kind)!
        let kb = ResourceKind(rawValue: b.id.kind)!
        return (ka, a.id.namespace, a.id.name) < (kb, b.id.namespace, b.id.name)
    }
}

/// Validation that costs what changed: files whose content hash matches the index are
/// taken from it; changed files are read, and the checks across resources re-run only
/// for the namespaces a changed, added or removed file defines something in. The result
/// is the same as `ManifestValidation.validate` over every file (a property test holds it
/// to that); whatever the index cannot stand for (unnamed documents, MCP pins, a check
/// reporting outside a resource) makes it read everything.
public enum IncrementalValidation {
    public struct Outcome: Sendable {
        /// The report's `fleet` holds only the resources read this time; `desired` has all.
        public var report: ValidationReport
        /// Every resource, in `Fleet` order, duplicates dropped (the first kept).
        public var desired: [DesiredResource]
        /// The resources read this time, by identity, for the plan to look at.
        public var read: [ResourceID: Resource]
        /// The index after this run, or nil when it cannot stand for the files (then none
        /// is kept and the next run reads everything); nil too from `unchanged`, whose
        /// index is the one it was given.
        public var index: ManifestIndex?
        /// Paths of the files parsed this time.
        public var parsed: [String]
        /// Whether everything was read and checked.
        public var full: Bool
        /// The resources of each namespace checked this time (every one, when `full`),
        /// in the order they were checked, for `ResourceSnapshot` to keep; empty when
        /// there is no index.
        public var checked: [String: [ResourceSnapshot.Kept]] = [:]
    }

    /// The outcome when no file changed since `stored` was written: the index stands for
    /// everything, nothing is read and nothing is checked again.
    public static func unchanged(_ stored: StoredManifestIndex, strict: Bool) -> Outcome {
        var diagnostics: [Diagnostic] = []
        var count = 0
        for file in stored.files {
            diagnostics += file.record.diagnostics
            count += file.record.entries.count + file.record.unreadable.count
        }
        for namespace in stored.namespaces.keys.sorted() { diagnostics += stored.namespaces[namespace]! }
        let report = ValidationReport(
            fleet: Fleet([]), resourceCount: count, diagnostics: ManifestValidation.strictened(diagnostics, strict).sortedForReport())
        return Outcome(report: report, desired: stored.desiredResources(), read: [:], index: nil, parsed: [], full: false, checked: [:])
    }

    /// - Parameters:
    ///   - files: the files in path order with their content hashes.
    ///   - kept: what was kept of these namespaces' resources (`ResourceSnapshot`): an
    ///     unchanged file whose kept resources are all there is not read again for the
    ///     checks of its namespace.
    ///   - read: parses the files at these positions (on every core, as the caller sees
    ///     fit), in the order asked; resources with their canonical form computed.
    public static func validate(
        files: [(path: String, contentHash: String)], previous: ManifestIndex?, strict: Bool,
        kept: (Set<String>) -> [ResourceSnapshot.Kept] = { _ in [] },
        read: ([Int]) -> [ReadManifests]
    ) -> Outcome {
        guard let previous else { return full(files: files, strict: strict, read: read) }
        let paths = Set(files.map(\.path))
        let changed = files.indices.filter { previous.files[files[$0].path]?.contentHash != files[$0].contentHash }
        let removed = previous.files.values.filter { !paths.contains($0.path) }
        var records = files.map { previous.files[$0.path] }
        var fresh: [Int: ReadManifests] = [:]
        var namespaces = previous.namespaces
        var affected = Set<String>()
        var checked: [String: [ResourceSnapshot.Kept]] = [:]
        var hashes: [String: String] = [:]
        if !changed.isEmpty || !removed.isEmpty {
            hashes.reserveCapacity(files.count)
            for file in files where hashes[file.path] == nil { hashes[file.path] = file.contentHash }
        }
        if !changed.isEmpty || !removed.isEmpty {
            for (index, part) in zip(changed, read(changed)) {
                let record = ManifestFileRecord(path: files[index].path, contentHash: files[index].contentHash, read: part)
                if record.spansFiles || record.unidentified > 0 { return full(files: files, strict: strict, read: read) }
                affected.formUnion(record.namespaces)
                if let old = records[index] { affected.formUnion(old.namespaces) }
                records[index] = record
                fresh[index] = part
            }
            for old in removed { affected.formUnion(old.namespaces) }
            // Unchanged files that define something in an affected namespace: taken from
            // what was kept of them when all of it is there, else read again, so that the
            // checks see the whole namespace.
            let others = files.indices.filter { fresh[$0] == nil && records[$0]!.definesSomething(in: affected) }
            let fromKept = others.isEmpty ? [:] : keptResources(others, files: files, records: records, affected: affected, kept: kept)
            let toRead = others.filter { fromKept[$0] == nil }
            for (index, part) in zip(toRead, read(toRead)) { fresh[index] = part }
            var subset = ReadManifests()
            for index in files.indices {
                if let part = fresh[index] {
                    subset.resources += part.resources.filter { affected.contains($0.metadata.namespace) }
                    subset.unreadable += part.unreadable.filter { affected.contains($0.namespace) }
                } else if let resources = fromKept[index] {
                    subset.resources += resources
                    subset.unreadable += records[index]!.unreadable.filter { affected.contains($0.namespace) }
                }
            }
            for resource in subset.resources {
                checked[resource.metadata.namespace, default: []].append(
                    ResourceSnapshot.Kept(contentHash: hashes[resource.file] ?? "", resource: resource))
            }
            for namespace in affected where checked[namespace] == nil { checked[namespace] = [] }
            guard let grouped = byNamespace(ManifestValidation.crossChecks(subset).diagnostics) else {
                return full(files: files, strict: strict, read: read)
            }
            for namespace in affected { namespaces[namespace] = grouped[namespace] }
        }
        let all = records.map { $0! }
        var diagnostics = all.flatMap(\.diagnostics)
        for namespace in namespaces.keys.sorted() { diagnostics += namespaces[namespace]! }
        var desired: [DesiredResource] = []
        var seen = Set<ResourceID>()
        for record in all {
            for entry in record.entries where seen.insert(entry.id).inserted { desired.append(DesiredResource(entry, file: record.path)) }
        }
        // The kind's rank once per resource, not once per comparison; indices sorted, so
        // that the (large) values are moved once. A stable sort, as `sort` is.
        let ranks = desired.map { ResourceKind(rawValue: $0.id.kind)! }
        let order = desired.indices.sorted { a, b in
            let (x, y) = (desired[a].id, desired[b].id)
            if ranks[a] != ranks[b] { return ranks[a] < ranks[b] }
            if x.namespace != y.namespace { return x.namespace < y.namespace }
            return x.name < y.name
        }
        desired = order.map { desired[$0] }
        // A resource read this time stands for its entry only if it is the one kept (a
        // duplicate's first definition may be in a file that was not read).
        var keptIn: [ResourceID: String] = [:]
        for entry in desired { keptIn[entry.id] = entry.file }
        var resources: [ResourceID: Resource] = [:]
        for index in fresh.keys.sorted() {
            for resource in fresh[index]!.resources where resources[resource.id] == nil && keptIn[resource.id] == resource.file {
                resources[resource.id] = resource
            }
        }
        let report = ValidationReport(
            fleet: Fleet(Array(resources.values)),
            resourceCount: all.reduce(0) { $0 + $1.entries.count + $1.unreadable.count },
            diagnostics: ManifestValidation.strictened(diagnostics, strict).sortedForReport())
        return Outcome(
            report: report, desired: desired, read: resources,
            index: ManifestIndex(files: Dictionary(all.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a }), namespaces: namespaces),
            parsed: fresh.keys.sorted().map { files[$0].path }, full: false, checked: checked)
    }

    /// The resources of the unchanged files at `positions` in the `affected` namespaces,
    /// from what was kept of them: a file's entry only when every resource its record
    /// names there is kept for its path and content hash, in its order.
    static func keptResources(
        _ positions: [Int], files: [(path: String, contentHash: String)], records: [ManifestFileRecord?], affected: Set<String>,
        kept: (Set<String>) -> [ResourceSnapshot.Kept]
    ) -> [Int: [Resource]] {
        var byFile: [String: [ResourceSnapshot.Kept]] = [:]
        for entry in kept(affected) { byFile[entry.resource.file, default: []].append(entry) }
        guard !byFile.isEmpty else { return [:] }
        var out: [Int: [Resource]] = [:]
        for position in positions {
            guard let candidates = byFile[files[position].path], let record = records[position] else { continue }
            let wanted = record.entries.filter { affected.contains($0.id.namespace) }.map(\.id)
            let resources = candidates.filter {
                $0.contentHash == files[position].contentHash && affected.contains($0.resource.metadata.namespace)
            }
            .map(\.resource).sorted { $0.documentIndex < $1.documentIndex }
            guard resources.map(\.id) == wanted, Set(resources.map(\.documentIndex)).count == resources.count else { continue }
            out[position] = resources
        }
        return out
    }

    /// Everything read and checked, as `validate` does, and the index made from it.
    static func full(files: [(path: String, contentHash: String)], strict: Bool, read: ([Int]) -> [ReadManifests]) -> Outcome {
        let parts = read(Array(files.indices))
        var all = ReadManifests()
        for part in parts { all.append(part) }
        let records = zip(files, parts).map { ManifestFileRecord(path: $0.path, contentHash: $0.contentHash, read: $1) }
        let checked = ManifestValidation.crossChecks(all)
        let report = ValidationReport(
            fleet: checked.fleet, resourceCount: all.resources.count + all.unreadable.count,
            diagnostics: ManifestValidation.strictened(all.diagnostics + checked.diagnostics, strict).sortedForReport())
        var index: ManifestIndex?
        if !records.contains(where: { $0.spansFiles || $0.unidentified > 0 }), let grouped = byNamespace(checked.diagnostics) {
            index = ManifestIndex(files: Dictionary(records.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a }), namespaces: grouped)
        }
        var read: [ResourceID: Resource] = [:]
        for resource in checked.fleet.resources { read[resource.id] = resource }
        var kept: [String: [ResourceSnapshot.Kept]] = [:]
        if index != nil {
            for (file, part) in zip(files, parts) {
                for resource in part.resources {
                    kept[resource.metadata.namespace, default: []].append(
                        ResourceSnapshot.Kept(contentHash: file.contentHash, resource: resource))
                }
            }
        }
        return Outcome(
            report: report, desired: checked.fleet.resources.map(DesiredResource.init), read: read, index: index, parsed: files.map(\.path),
            full: true, checked: kept)
    }

    /// Diagnostics by the namespace of their resource, in their order; nil when one has
    /// no resource (it could not be filed under a namespace).
    static func byNamespace(_ diagnostics: [Diagnostic]) -> [String: [Diagnostic]]? {
        var grouped: [String: [Diagnostic]] = [:]
        for diagnostic in diagnostics {
            guard let resource = diagnostic.resource else { return nil }
            grouped[resource.namespace, default: []].append(diagnostic)
        }
        return grouped
    }
}
