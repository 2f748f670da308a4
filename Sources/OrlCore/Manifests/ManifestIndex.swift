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
        manifestHash = resource.canonical.hash
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

    /// What an index records of its fleet's report: every file's diagnostics, then every
    /// namespace's (in name order), and how many resources its files define.
    static func recorded(_ index: StoredManifestIndex) -> (diagnostics: [Diagnostic], count: Int) {
        var diagnostics: [Diagnostic] = []
        var count = 0
        // Through the buffer: a `for file in` loop copies each file (every record's strings
        // and arrays retained and released), 10,000 of them at each apply.
        index.files.withUnsafeBufferPointer { files in
            for i in files.indices {
                diagnostics += files[i].record.diagnostics
                count += files[i].record.entries.count + files[i].record.unreadable.count
            }
        }
        for namespace in index.namespaces.keys.sorted() { diagnostics += index.namespaces[namespace]! }
        return (diagnostics, count)
    }

    /// The outcome when no file changed since `stored` was written: the index stands for
    /// everything, nothing is read and nothing is checked again. Without `diagnostics`
    /// (the caller kept what it makes of them: `StoredManifestIndex.putReport`), the
    /// report's diagnostics are left out and only its resource count is worked out.
    public static func unchanged(_ stored: StoredManifestIndex, strict: Bool, diagnostics withDiagnostics: Bool = true) -> Outcome {
        let report: ValidationReport
        if withDiagnostics {
            let (diagnostics, count) = recorded(stored)
            report = ValidationReport(
                fleet: Fleet([]), resourceCount: count, diagnostics: ManifestValidation.strictened(diagnostics, strict).sortedForReport())
        } else {
            report = ValidationReport(
                fleet: Fleet([]), resourceCount: stored.files.reduce(0) { $0 + $1.record.entries.count + $1.record.unreadable.count },
                diagnostics: [])
        }
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
        kept: (Set<String>) -> [ResourceSnapshot.Kept] = { _ in [] }, fork: Fork = .inline,
        read: ([Int]) -> [ReadManifests]
    ) -> Outcome {
        guard let previous else { return full(files: files, strict: strict, fork: fork, read: read) }
        let paths = Set(files.map(\.path))
        let changed = files.indices.filter { previous.files[files[$0].path]?.contentHash != files[$0].contentHash }
        let removed = previous.files.values.filter { !paths.contains($0.path) }
        var records = files.map { previous.files[$0.path] }
        var fresh: [Int: ReadManifests] = [:]
        var namespaces = previous.namespaces
        var affected = Set<String>()
        var checked: [String: [ResourceSnapshot.Kept]] = [:]
        if !changed.isEmpty || !removed.isEmpty {
            for (index, part) in zip(changed, read(changed)) {
                let record = ManifestFileRecord(path: files[index].path, contentHash: files[index].contentHash, read: part)
                if record.spansFiles || record.unidentified > 0 { return full(files: files, strict: strict, fork: fork, read: read) }
                affected.formUnion(record.namespaces)
                if let old = records[index] { affected.formUnion(old.namespaces) }
                records[index] = record
                fresh[index] = part
            }
            for old in removed { affected.formUnion(old.namespaces) }
            let current = records
            guard
                let found = recheck(
                    affected, files: files, record: { current[$0]! }, fresh: &fresh, kept: kept, read: read)
            else { return full(files: files, strict: strict, fork: fork, read: read) }
            for namespace in affected { namespaces[namespace] = found.namespaces[namespace] }
            checked = found.checked
        }
        let all = records.map { $0! }
        var diagnostics = all.flatMap(\.diagnostics)
        for namespace in namespaces.keys.sorted() { diagnostics += namespaces[namespace]! }
        let desired = desiredOrder(all)
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

    /// What `validate(aligned:...)` gives: the outcome, the index after it, and how its
    /// desired set compares with the previous one, all worked out by position.
    public struct Aligned: Sendable {
        /// `index` is nil here: the index after this run is `next`.
        public var outcome: Outcome
        /// The previous index with the changed files' records and the affected namespaces'
        /// diagnostics; stamps and memo as they were.
        public var next: StoredManifestIndex
        /// The desired set is the previous one, entry for entry.
        public var sameDesired: Bool
        /// The desired set names the same resources as the previous one, in the same order.
        public var sameIdentities: Bool
        /// Per entry of `outcome.desired`: the previous index desired it with the same hash
        /// and code (what `StoredManifestIndex.settled` answers, without comparing names).
        public var settled: [Bool]
    }

    /// `validate` for the common re-apply: the files are `previous`'s, the same paths in
    /// the same order, and those at `changed` (in order) have new content. Everything is
    /// done by position: no dictionary of the fleet by path or identity is made, and when
    /// the changed files define the same resources as before (values edited) the desired
    /// order is the previous one, not sorted again. Only the changed files'
    /// namespaces are checked again, as `validate` does. Nil when the change is not of
    /// that kind (an MCP pin, an unnamed document, a diagnostic outside a resource): the
    /// caller then takes `validate`.
    public static func validate(
        aligned files: [(path: String, contentHash: String)], changed: [Int], previous: StoredManifestIndex, strict: Bool,
        kept: (Set<String>) -> [ResourceSnapshot.Kept] = { _ in [] },
        read: ([Int]) -> [ReadManifests]
    ) -> Aligned? {
        guard files.count == previous.files.count else { return nil }
        var next = previous
        next.memo = nil
        var fresh: [Int: ReadManifests] = [:]
        var affected = Set<String>()
        var sameIdentities = true
        var isChanged = [Bool](repeating: false, count: files.count)
        for (index, part) in zip(changed, read(changed)) {
            guard files[index].path == previous.files[index].path else { return nil }
            let record = ManifestFileRecord(path: files[index].path, contentHash: files[index].contentHash, read: part)
            if record.spansFiles || record.unidentified > 0 { return nil }
            let old = previous.files[index].record
            affected.formUnion(record.namespaces)
            affected.formUnion(old.namespaces)
            if !record.entries.elementsEqual(old.entries, by: { $0.id == $1.id }) { sameIdentities = false }
            next.files[index].record = record
            fresh[index] = part
            isChanged[index] = true
        }
        var checked: [String: [ResourceSnapshot.Kept]] = [:]
        if !changed.isEmpty {
            let records = next.files
            guard
                let found = recheck(
                    affected, files: files, record: { records[$0].record }, fresh: &fresh, kept: kept, read: read)
            else { return nil }
            for namespace in affected { next.namespaces[namespace] = found.namespaces[namespace] }
            checked = found.checked
        }
        // The same resources in the same files: the previous positions stand, and so does
        // which definition of a duplicate is kept.
        if !sameIdentities {
            guard let positions = StoredManifestIndex.positions(of: desiredOrder(next.files.map(\.record)), in: next.files) else {
                return nil
            }
            next.desired = positions
        }
        let desired = next.desiredResources()
        var settled = [Bool](repeating: true, count: desired.count)
        var resources: [ResourceID: Resource] = [:]
        var sameDesired = sameIdentities
        if sameIdentities {
            for (k, position) in next.desired.enumerated() where isChanged[Int(position.file)] {
                let old = previous.files[Int(position.file)].record.entries[Int(position.entry)]
                let new = next.files[Int(position.file)].record.entries[Int(position.entry)]
                settled[k] = old.manifestHash == new.manifestHash && old.hasCode == new.hasCode
                if old != new { sameDesired = false }
            }
        } else {
            settled = previous.settled(desired)
            sameDesired = previous.desires(desired)
        }
        // A resource read this time stands for its entry only if it is the one kept (a
        // duplicate's first definition may be in a file that was not read).
        var wanted = [Int: Set<Int>]()
        for position in next.desired where fresh[Int(position.file)] != nil {
            wanted[Int(position.file), default: []].insert(Int(position.entry))
        }
        for (file, entries) in wanted {
            let part = fresh[file]!
            for entry in entries where entry < part.resources.count { resources[part.resources[entry].id] = part.resources[entry] }
        }
        let (diagnostics, count) = recorded(next)
        let report = ValidationReport(
            fleet: Fleet(Array(resources.values)), resourceCount: count,
            diagnostics: ManifestValidation.strictened(diagnostics, strict).sortedForReport())
        let outcome = Outcome(
            report: report, desired: desired, read: resources, index: nil, parsed: fresh.keys.sorted().map { files[$0].path }, full: false,
            checked: checked)
        return Aligned(outcome: outcome, next: next, sameDesired: sameDesired, sameIdentities: sameIdentities, settled: settled)
    }

    /// Every resource of `records` (files in path order), duplicates dropped (the first
    /// kept), in `Fleet` order.
    static func desiredOrder(_ records: [ManifestFileRecord]) -> [DesiredResource] {
        var desired: [DesiredResource] = []
        var seen = Set<ResourceID>()
        for record in records {
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
        return order.map { desired[$0] }
    }

    /// The checks across resources again for the `affected` namespaces, over the files
    /// read this time (`fresh`, by position) and the unchanged files that define something
    /// there: from what was kept of them when all of it is there, else read (and added to
    /// `fresh`), so that the checks see the whole namespace. Gives each affected
    /// namespace's diagnostics and the resources checked; nil when a diagnostic cannot be
    /// filed under a namespace (then everything is read).
    static func recheck(
        _ affected: Set<String>, files: [(path: String, contentHash: String)], record: (Int) -> ManifestFileRecord,
        fresh: inout [Int: ReadManifests], kept: (Set<String>) -> [ResourceSnapshot.Kept], read: ([Int]) -> [ReadManifests]
    ) -> (namespaces: [String: [Diagnostic]], checked: [String: [ResourceSnapshot.Kept]])? {
        let known = fresh
        let others = files.indices.filter { known[$0] == nil && record($0).definesSomething(in: affected) }
        let fromKept = others.isEmpty ? [:] : keptResources(others, files: files, record: record, affected: affected, kept: kept)
        let toRead = others.filter { fromKept[$0] == nil }
        for (index, part) in zip(toRead, read(toRead)) { fresh[index] = part }
        var subset = ReadManifests()
        var checked: [String: [ResourceSnapshot.Kept]] = [:]
        for index in (Array(fresh.keys) + Array(fromKept.keys)).sorted() {
            let resources: [Resource]
            if let part = fresh[index] {
                resources = part.resources.filter { affected.contains($0.metadata.namespace) }
                subset.unreadable += part.unreadable.filter { affected.contains($0.namespace) }
            } else {
                resources = fromKept[index]!
                subset.unreadable += record(index).unreadable.filter { affected.contains($0.namespace) }
            }
            subset.resources += resources
            for resource in resources {
                checked[resource.metadata.namespace, default: []].append(
                    ResourceSnapshot.Kept(contentHash: files[index].contentHash, resource: resource))
            }
        }
        for namespace in affected where checked[namespace] == nil { checked[namespace] = [] }
        guard let grouped = byNamespace(ManifestValidation.crossChecks(subset).diagnostics) else { return nil }
        return (grouped, checked)
    }

    /// The resources of the unchanged files at `positions` in the `affected` namespaces,
    /// from what was kept of them: a file's entry only when every resource its record
    /// names there is kept for its path and content hash, in its order.
    static func keptResources(
        _ positions: [Int], files: [(path: String, contentHash: String)], record: (Int) -> ManifestFileRecord, affected: Set<String>,
        kept: (Set<String>) -> [ResourceSnapshot.Kept]
    ) -> [Int: [Resource]] {
        var byFile: [String: [ResourceSnapshot.Kept]] = [:]
        for entry in kept(affected) { byFile[entry.resource.file, default: []].append(entry) }
        guard !byFile.isEmpty else { return [:] }
        var out: [Int: [Resource]] = [:]
        for position in positions {
            guard let candidates = byFile[files[position].path] else { continue }
            let record = record(position)
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
    static func full(
        files: [(path: String, contentHash: String)], strict: Bool, fork: Fork = .inline, read: ([Int]) -> [ReadManifests]
    ) -> Outcome {
        let parts = read(Array(files.indices))
        var all = ReadManifests()
        for part in parts { all.append(part) }
        let records = zip(files, parts).map { ManifestFileRecord(path: $0.path, contentHash: $0.contentHash, read: $1) }
        let checked = ManifestValidation.crossChecks(all, fork: fork)
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
