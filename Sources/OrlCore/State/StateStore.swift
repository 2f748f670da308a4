/// Milliseconds since the Unix epoch, UTC. The core reads no clock: callers pass the
/// time in, so plans and tests are deterministic.
public struct Timestamp: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var milliseconds: Int64

    public init(milliseconds: Int64) { self.milliseconds = milliseconds }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.milliseconds < rhs.milliseconds }

    /// RFC 3339 in UTC, `2026-11-21T16:45:03.120Z`, computed without Foundation.
    public var description: String {
        let date = civilDate
        let ms = Int(milliseconds - date.midnight.milliseconds)
        func pad(_ n: Int, _ width: Int) -> String {
            let s = String(n)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(date.year, 4))-\(pad(date.month, 2))-\(pad(date.day, 2))T\(pad(ms / 3_600_000, 2)):"
            + "\(pad(ms / 60000 % 60, 2)):\(pad(ms / 1000 % 60, 2)).\(pad(ms % 1000, 3))Z"
    }
}

/// A resource as the store holds it: the manifest that was applied, and bookkeeping.
public struct StoredResource: Sendable, Hashable {
    public var id: ResourceID
    /// The whole manifest as applied, in canonical JSON (sorted keys, no insignificant
    /// space), so that two applies of the same content compare equal byte for byte.
    public var manifest: String {
        didSet { knownManifestHash = nil }
    }
    /// `manifestHash` as the canonical form that made `manifest` took it (on the parsing
    /// cores): a first apply of 100,000 manifests hashed each again on its writing
    /// thread. Not part of the resource's value: it is `manifest`'s hash or nil.
    private var knownManifestHash: String?
    /// SHA-256 of `manifest`, in hex (`CanonicalJSON.textHash`): what the store keeps
    /// beside it for the plan's first comparison.
    public var manifestHash: String { knownManifestHash ?? CanonicalJSON.textHash(manifest) }
    /// SHA-256 of the canonical `spec`, hex: what "the spec changed" means.
    public var specHash: String
    /// Bumped only when the spec changes (Kubernetes' metadata.generation).
    public var generation: Int
    /// Bumped on every write of the resource, spec or not.
    public var resourceVersion: Int
    /// The apply source that owns the resource (see `ApplySource`).
    public var source: String
    /// Where the manifest came from: file, line, and a revision (a git commit) when known.
    public var file: String
    public var line: Int
    public var revision: String?
    public var appliedAt: Timestamp
    public var appliedBy: String
    /// For Agents and Tools: the directory relative paths of their runtime resolve against
    /// (see `CodeOrigin`); nil when the apply named none.
    public var codeRoot: String?

    public init(
        id: ResourceID, manifest: String, specHash: String, generation: Int, resourceVersion: Int, source: String, file: String,
        line: Int, revision: String?, appliedAt: Timestamp, appliedBy: String, codeRoot: String? = nil, manifestHash: String? = nil
    ) {
        self.codeRoot = codeRoot
        self.id = id
        self.manifest = manifest
        self.knownManifestHash = manifestHash
        self.specHash = specHash
        self.generation = generation
        self.resourceVersion = resourceVersion
        self.source = source
        self.file = file
        self.line = line
        self.revision = revision
        self.appliedAt = appliedAt
        self.appliedBy = appliedBy
    }

    public static func == (a: StoredResource, b: StoredResource) -> Bool {
        a.id == b.id && a.manifest == b.manifest && a.specHash == b.specHash && a.generation == b.generation
            && a.resourceVersion == b.resourceVersion && a.source == b.source && a.file == b.file && a.line == b.line
            && a.revision == b.revision && a.appliedAt == b.appliedAt && a.appliedBy == b.appliedBy && a.codeRoot == b.codeRoot
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        hasher.combine(manifest)
        hasher.combine(specHash)
        hasher.combine(generation)
        hasher.combine(resourceVersion)
        hasher.combine(source)
        hasher.combine(file)
        hasher.combine(line)
        hasher.combine(revision)
        hasher.combine(appliedAt)
        hasher.combine(appliedBy)
        hasher.combine(codeRoot)
    }
}

/// One apply, as the append-only history keeps it.
public struct ApplyRecord: Sendable, Hashable {
    public var number: Int
    public var source: String
    public var revision: String?
    public var appliedAt: Timestamp
    public var appliedBy: String
    /// `Plan: 2 to add, 1 to change, 0 to prune (7 unchanged).`
    public var summary: String
    /// The plan as JSON, for `orlctl history -o json` and audits.
    public var plan: String
    public var result: String

    public init(
        number: Int, source: String, revision: String?, appliedAt: Timestamp, appliedBy: String, summary: String, plan: String,
        result: String
    ) {
        self.number = number
        self.source = source
        self.revision = revision
        self.appliedAt = appliedAt
        self.appliedBy = appliedBy
        self.summary = summary
        self.plan = plan
        self.result = result
    }
}

/// Something that happened to a resource, for `orlctl events` and `describe`.
public struct StoreEvent: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case normal = "Normal"
        case warning = "Warning"
    }

    public var number: Int
    public var time: Timestamp
    public var kind: Kind
    public var resource: ResourceID?
    /// A CamelCase word, as in Kubernetes: `Created`, `Updated`, `Pruned`, `Deleted`.
    public var reason: String
    public var message: String

    public init(number: Int = 0, time: Timestamp, kind: Kind, resource: ResourceID?, reason: String, message: String) {
        self.number = number
        self.time = time
        self.kind = kind
        self.resource = resource
        self.reason = reason
        self.message = message
    }
}

/// Why the store could not do what was asked. Messages say what to do; the database
/// engine's result code stays with them, so that callers decide on it rather than on
/// the wording.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// The engine's extended result code (SQLite's: 5 busy, 11 corrupt, 13 full, 517
    /// busy snapshot...) when the failure came from the database; nil for what the
    /// store found itself (a corrupt row, a run that is not there).
    public var resultCode: Int32?
    /// Whether another process held the database locked past the busy timeout: the
    /// one failure worth retrying (a corrupt file or a full disk stays so).
    public var isBusy: Bool
    /// Refused because the node it was made for no longer holds the lease it named
    /// (`NodeStore`): that node must stop its agents, not retry.
    public var isFenced = false

    public init(_ message: String, resultCode: Int32? = nil, isBusy: Bool = false) {
        self.message = message
        self.resultCode = resultCode
        self.isBusy = isBusy
    }

    public var description: String { message }
}

/// What a plan reads of the actual state: the resources, and what each source owns.
/// The store provides it, and so does a fleet standing in for the state (a review
/// plans one revision against another).
public protocol AppliedResources {
    /// Resources in kind order, then namespace and name; nil means any.
    func resources(kind: ResourceKind?, namespace: String?) throws(StoreError) -> [StoredResource]
    /// What a source owns: the resources it applied and has not pruned.
    func inventory(source: String) throws(StoreError) -> [ResourceID]
    /// What the plan compares first, for every resource: far less to read than manifests.
    func digests() throws(StoreError) -> [ResourceID: StoredDigest]
    func resource(_ id: ResourceID) throws(StoreError) -> StoredResource?
}

/// A stored resource as the plan first compares it: its manifest's hash, its owner and
/// its code root.
public struct StoredDigest: Sendable, Equatable {
    /// SHA-256 of the canonical manifest, in hex.
    public var manifestHash: String
    public var source: String
    public var codeRoot: String?

    public init(manifestHash: String, source: String, codeRoot: String?) {
        self.manifestHash = manifestHash
        self.source = source
        self.codeRoot = codeRoot
    }
}

extension AppliedResources {
    public func digests() throws(StoreError) -> [ResourceID: StoredDigest] {
        var digests: [ResourceID: StoredDigest] = [:]
        for resource in try resources(kind: nil, namespace: nil) {
            digests[resource.id] = StoredDigest(
                manifestHash: resource.manifestHash, source: resource.source, codeRoot: resource.codeRoot)
        }
        return digests
    }

    public func resource(_ id: ResourceID) throws(StoreError) -> StoredResource? {
        try resources(kind: ResourceKind(rawValue: id.kind), namespace: id.namespace).first { $0.id == id }
    }
}

/// Reading the actual state.
public protocol StateReader: AppliedResources {
    func resource(_ id: ResourceID) throws(StoreError) -> StoredResource?
    /// Changes whenever a resource the source owns is written or deleted: how many it
    /// owns, the sum of their versions, the last time one was applied. Cheap, so that a
    /// git source's up-to-date round can tell there is no drift without planning.
    func fingerprint(source: String) throws(StoreError) -> String
    /// The newest applies first.
    func history(limit: Int) throws(StoreError) -> [ApplyRecord]
    /// The newest events first; for one resource when given.
    func events(for resource: ResourceID?, limit: Int) throws(StoreError) -> [StoreEvent]
    /// What a controller last stored about the resource; nil when nothing has been
    /// (use `ResourceStatus.effective` for what to show then).
    func status(for resource: ResourceID) throws(StoreError) -> ResourceStatus?
    /// What the controller keeps about the agent's process; nil when nothing.
    func supervision(for agent: ResourceID) throws(StoreError) -> SupervisionRecord?
    /// Every supervision record, in namespace and name order.
    func allSupervision() throws(StoreError) -> [SupervisionRecord]
    /// Agents suspended by `orlctl suspend`, in namespace and name order.
    func holds() throws(StoreError) -> [UserHold]
    /// Model calls, the newest first.
    func ledger(_ query: LedgerQuery) throws(StoreError) -> [LedgerEntry]
    /// What each agent's calls cost from `since` on: budgets' spend at start-up.
    func spend(since: Timestamp) throws(StoreError) -> [ResourceID: Charge]
    /// The vault's sealed secrets, in namespace and name order; one namespace's when given.
    func secrets(namespace: String?) throws(StoreError) -> [SealedSecret]
    /// The git sources `orlctl sync` and `watch` have synced, in name order.
    func sources() throws(StoreError) -> [SourceRecord]
    func source(named name: String) throws(StoreError) -> SourceRecord?
    /// What the last apply of `source` read, as it wrote it (`StoredManifestIndex`, an
    /// opaque blob to the store); nil when none is kept.
    func manifestIndex(source: String) throws(StoreError) -> [UInt8]?
    /// `manifestIndex(source:)` of each, in order: the chunks of an index in one round
    /// trip where the store is a server. The default asks one by one.
    func manifestIndexes(sources: [String]) throws(StoreError) -> [[UInt8]?]
    /// `manifestIndexes(sources:)`, each handed to `body` with its position in `sources`
    /// as it is read, valid only during the call, until `body` answers false: an index of
    /// 10,000 files is decoded without a copy of all its chunks at once. The default reads
    /// them all first.
    func withManifestIndexes(sources: [String], _ body: (Int, UnsafeBufferPointer<UInt8>?) -> Bool) throws(StoreError)
    /// Changes whenever what the source's resources are changes (one written, taken over
    /// or deleted; a store may move it for any write): what an apply keeps (`ApplyMemo`)
    /// to know, at the next, that the resources it wrote are still as it left them. The
    /// default is `fingerprint(source:)`.
    func changeMark(source: String) throws(StoreError) -> String
}

/// Writing, inside one exclusive transaction.
public protocol StateWriter: StateReader {
    func put(_ resource: StoredResource) throws(StoreError)
    func delete(_ id: ResourceID) throws(StoreError)
    /// Appends to the history; returns the apply's number.
    func record(_ apply: ApplyRecord) throws(StoreError) -> Int
    func append(_ event: StoreEvent) throws(StoreError)
    /// Stores the resource's status, replacing the previous one. The resource must
    /// exist; deleting it deletes its status.
    func putStatus(_ status: ResourceStatus, for resource: ResourceID) throws(StoreError)
    /// Stores the record, replacing the agent's previous one. The agent need not be
    /// applied: a removed agent's process is supervised until it is stopped.
    func putSupervision(_ record: SupervisionRecord) throws(StoreError)
    /// Forgets the agent's record; forgetting one that is not there does nothing.
    func deleteSupervision(for agent: ResourceID) throws(StoreError)
    /// Refuses the transaction (a fenced `StoreError`) unless `lease` is its node's current,
    /// live lease by the database's clock: how a node stamps every write it makes.
    func requireLease(_ lease: NodeLease) throws(StoreError)
    /// Suspends the agent until `deleteHold`, whatever its manifest says. The agent must
    /// exist; deleting it deletes the hold. Replaces an earlier hold.
    func putHold(_ hold: UserHold) throws(StoreError)
    /// Resumes the agent; resuming one that is not held does nothing.
    func deleteHold(for agent: ResourceID) throws(StoreError)
    /// Records model calls; their numbers are assigned in order.
    func append(_ entries: [LedgerEntry]) throws(StoreError)
    /// Stores the sealed secret, replacing the one of the same name.
    func putSecret(_ secret: SealedSecret) throws(StoreError)
    /// Forgets the secret; forgetting one that is not there does nothing.
    func deleteSecret(_ id: SecretID) throws(StoreError)
    /// Stores the source's record, replacing the previous one of that name.
    func putSource(_ source: SourceRecord) throws(StoreError)
    /// Replaces the index of a source (`StoredManifestIndex.encoded()`); nil drops it.
    func putManifestIndex(source: String, _ data: [UInt8]?) throws(StoreError)
}

/// The port for the actual state. One writer at a time, across processes: `write` runs
/// its body in a transaction that no other writer can interleave with, that sees
/// everything committed before it began, and that lands entirely or not at all.
public protocol StateStore: Sendable {
    func read<T>(_ body: (any StateReader) throws(StoreError) -> T) throws(StoreError) -> T
    func write<T>(_ body: (any StateWriter) throws(StoreError) -> T) throws(StoreError) -> T
}

extension StateReader {
    public func manifestIndexes(sources: [String]) throws(StoreError) -> [[UInt8]?] {
        var out: [[UInt8]?] = []
        out.reserveCapacity(sources.count)
        for source in sources { out.append(try manifestIndex(source: source)) }
        return out
    }

    public func withManifestIndexes(sources: [String], _ body: (Int, UnsafeBufferPointer<UInt8>?) -> Bool) throws(StoreError) {
        for (i, blob) in try manifestIndexes(sources: sources).enumerated() {
            guard blob.map({ $0.withUnsafeBufferPointer { body(i, $0) } }) ?? body(i, nil) else { return }
        }
    }

    public func changeMark(source: String) throws(StoreError) -> String { "f:" + (try fingerprint(source: source)) }

    public func fingerprint(source: String) throws(StoreError) -> String {
        let owned = try resources(kind: nil, namespace: nil).filter { $0.source == source }
        return "\(owned.count):\(owned.reduce(0) { $0 + $1.resourceVersion }):\(owned.map(\.appliedAt.milliseconds).max() ?? 0)"
    }
}
