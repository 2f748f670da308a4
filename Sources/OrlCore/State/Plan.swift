import OrlJSON

/// What an apply would do: resources to create, update and prune, and those left alone.
public struct Plan: Sendable {
    public struct Change: Sendable {
        public enum Action: String, Sendable, Hashable {
            case create
            case update
            case prune
        }

        public var action: Action
        public var id: ResourceID
        /// For create and update: what will be stored.
        public var desired: StoredResource?
        /// For update and prune: what is stored now.
        public var current: StoredResource?
        /// For update: field by field.
        public var fields: [FieldChange]
        /// For update: the spec changed, so the generation goes up (labels alone do not).
        public var specChanged: Bool
        /// For update: another source applied it until now; this apply takes it over.
        public var takesOverFrom: String?
    }

    public var source: String
    /// In kind order then namespace and name; prunes in reverse, so what refers to
    /// others goes before what it refers to.
    public var changes: [Change]
    public var unchanged: [ResourceID]

    public var additions: Int { count(.create) }
    public var updates: Int { count(.update) }
    public var prunes: Int { count(.prune) }

    /// By index: passing each change to a closure copied it (its two stored resources'
    /// strings retained and released), at every count of a first apply's 100,000.
    private func count(_ action: Change.Action) -> Int {
        var count = 0
        for index in changes.indices where changes[index].action == action { count += 1 }
        return count
    }
    public var isEmpty: Bool { changes.isEmpty }

    /// `Plan: 2 to add, 1 to change, 0 to prune (7 unchanged).`
    public var summary: String {
        "Plan: \(additions) to add, \(updates) to change, \(prunes) to prune (\(unchanged.count) unchanged)."
    }
}

/// What the user asked of an apply.
public struct ApplyOptions: Sendable {
    /// Who owns what this apply writes: prune removes only what this source applied.
    public var source: String
    public var prune: Bool
    /// Prune even when the desired set is empty (which would otherwise remove everything).
    public var allowEmpty: Bool
    /// Refuse to prune more than this many resources without the user raising it.
    public var maxDeletions: Int
    public var revision: String?
    public var appliedBy: String
    /// Where the code of the Agents and Tools applied comes from (see `CodeOrigin`).
    public var codeRoot: String?
    /// Take over resources another source applied (`--force-conflicts`). Without it a
    /// plan that would is refused: two sources declaring one resource would otherwise
    /// take it from each other on every apply, and prune what the other still declares.
    public var forceConflicts: Bool

    public init(
        source: String, prune: Bool = false, allowEmpty: Bool = false, maxDeletions: Int = 10, revision: String? = nil, appliedBy: String,
        codeRoot: String? = nil, forceConflicts: Bool = false
    ) {
        self.codeRoot = codeRoot
        self.forceConflicts = forceConflicts
        self.source = source
        self.prune = prune
        self.allowEmpty = allowEmpty
        self.maxDeletions = maxDeletions
        self.revision = revision
        self.appliedBy = appliedBy
    }
}

/// Why a plan may not be applied as asked. Nothing is written.
public enum PlanRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// Pruning with nothing desired would delete everything the source owns.
    case emptyDesiredSet(owned: Int)
    case tooManyDeletions(count: Int, limit: Int)
    /// Resources another source applied, which this apply would take over.
    case conflicts([Conflict])

    public struct Conflict: Sendable, Equatable {
        public var id: ResourceID
        /// The source that applied it (`git:fleet`, `files:/srv/manifests`).
        public var owner: String
        /// Where that source's manifest defines it.
        public var file: String
        public var line: Int
    }

    public var description: String {
        switch self {
        case .conflicts(let conflicts):
            let shown = conflicts.prefix(5).map { "\($0.id) is owned by source \($0.owner) (applied from \($0.file):\($0.line))" }
            let more = conflicts.count > 5 ? "; and \(conflicts.count - 5) more" : ""
            let them = conflicts.count == 1 ? "it" : "them"
            return
                "conflict: \(shown.joined(separator: "; "))\(more). Remove \(them) from these manifests, or pass --force-conflicts to take \(them) over"
        case .emptyDesiredSet(let owned):
            return
                "the manifests define no resources, so --prune would delete all \(owned) this source owns; pass --allow-empty if that is what you want"
        case .tooManyDeletions(let count, let limit):
            return
                "the plan prunes \(count) resources, more than --max-deletions \(limit); review the plan and rerun with --max-deletions \(count) if it is right"
        }
    }
}

/// What a plan may take for granted from the last apply of the same source, when the
/// store has not changed since (see `ApplyMemo`).
public struct PlanShortcut: Sendable {
    /// Per desired resource: stored exactly as desired (same hash, owner and code root).
    public var settled: [Bool]
    /// Every resource the source owns; nil to ask the store.
    public var owned: [ResourceID]?

    public init(settled: [Bool], owned: [ResourceID]?) {
        self.settled = settled
        self.owned = owned
    }
}

/// Computes plans. Pure: the actual state comes in through the store's reader, the
/// time through the caller.
public enum Planner {
    public static func plan(desired fleet: Fleet, actual: any AppliedResources, options: ApplyOptions, now: Timestamp) throws(StoreError)
        -> Plan
    {
        try plan(
            desired: fleet.resources.map(DesiredResource.init), resolve: { fleet.resources[$0] }, actual: actual, options: options, now: now
        )
    }

    /// The plan from hashes: each desired resource's manifest hash is compared with the
    /// stored one first; only a resource that differs is looked at (`resolve` gives the
    /// resource at a position of `desired`) and its stored manifest read. With a
    /// `shortcut`, the resources it settles are unchanged without a look at the store,
    /// the others are read one by one, and what the source owns is taken from it.
    public static func plan(
        desired: [DesiredResource], resolve: (Int) throws(StoreError) -> Resource, actual: any AppliedResources, options: ApplyOptions,
        now: Timestamp, shortcut: PlanShortcut? = nil
    ) throws(StoreError) -> Plan {
        var changes: [Plan.Change] = []
        var unchanged: [ResourceID] = []
        unchanged.reserveCapacity(desired.count)
        // One read of every digest beats a query per resource when fleets are large.
        let stored = shortcut == nil ? try actual.digests() : nil
        for (index, entry) in desired.enumerated() {
            let id = entry.id
            if let shortcut, shortcut.settled[index] {
                unchanged.append(id)
                continue
            }
            let codeRoot = entry.hasCode ? options.codeRoot : nil
            var current: StoredResource?
            let digest: StoredDigest?
            if let stored {
                digest = stored[id]
            } else {
                current = try actual.resource(id)
                digest = current.map {
                    StoredDigest(manifestHash: CanonicalJSON.textHash($0.manifest), source: $0.source, codeRoot: $0.codeRoot)
                }
            }
            if let digest, digest.manifestHash == entry.manifestHash, digest.source == options.source, digest.codeRoot == codeRoot {
                unchanged.append(id)
                continue
            }
            let resource = try resolve(index)
            let canonical = resource.canonical
            let manifest = canonical.text
            if stored != nil, digest != nil { current = try actual.resource(id) }
            if let current, current.manifest == manifest, current.source == options.source, current.codeRoot == codeRoot {
                unchanged.append(id)
                continue
            }
            let specHash = canonical.specHash
            var next = StoredResource(
                id: id, manifest: manifest, specHash: specHash, generation: 1, resourceVersion: 1, source: options.source,
                file: resource.file, line: resource.location.line, revision: options.revision, appliedAt: now, appliedBy: options.appliedBy,
                codeRoot: codeRoot, manifestHash: canonical.hash)
            guard let current else {
                changes.append(
                    Plan.Change(action: .create, id: id, desired: next, current: nil, fields: [], specChanged: true, takesOverFrom: nil))
                continue
            }
            let takesOver = current.source == options.source ? nil : current.source
            let specChanged = current.specHash != specHash
            next.generation = current.generation + (specChanged ? 1 : 0)
            next.resourceVersion = current.resourceVersion + 1
            let fields =
                (try? JSONParser.parse(current.manifest, file: "<store>")).map { FieldDiff.changes(from: $0, to: resource.document) } ?? []
            changes.append(
                Plan.Change(
                    action: .update, id: id, desired: next, current: current, fields: fields, specChanged: specChanged,
                    takesOverFrom: takesOver))
        }
        // What the source owns is what it desires, in the same order (the shortcut's
        // owned set is in `Fleet` order, as `desired` is): nothing to prune, found without
        // hashing every identity.
        let ownsDesired =
            options.prune
            && (shortcut?.owned.map { owned in owned.count == desired.count && zip(owned, desired).allSatisfy { $0 == $1.id } } ?? false)
        if options.prune, !ownsDesired {
            let desiredIDs = Set(desired.map(\.id))
            var owned = shortcut?.owned ?? []
            if shortcut?.owned == nil { owned = try actual.inventory(source: options.source) }
            let gone = owned.filter { !desiredIDs.contains($0) }
            var prunes: [Plan.Change] = []
            for id in gone {
                prunes.append(
                    Plan.Change(
                        action: .prune, id: id, desired: nil, current: try actual.resource(id), fields: [], specChanged: false,
                        takesOverFrom: nil))
            }
            changes += prunes.sorted { order($1.id, $0.id) }
        }
        return Plan(source: options.source, changes: changes, unchanged: unchanged)
    }

    /// Refuses plans that would delete more than the user meant.
    public static func check(_ plan: Plan, desiredCount: Int, options: ApplyOptions) throws(PlanRefusal) {
        if !options.forceConflicts {
            let conflicts = plan.changes.compactMap { change -> PlanRefusal.Conflict? in
                guard let owner = change.takesOverFrom, let current = change.current else { return nil }
                return PlanRefusal.Conflict(id: change.id, owner: owner, file: current.file, line: current.line)
            }
            if !conflicts.isEmpty { throw .conflicts(conflicts) }
        }
        guard plan.prunes > 0 else { return }
        if desiredCount == 0 && !options.allowEmpty { throw .emptyDesiredSet(owned: plan.prunes) }
        if plan.prunes > options.maxDeletions { throw .tooManyDeletions(count: plan.prunes, limit: options.maxDeletions) }
    }

    /// Kind order, then namespace and name.
    static func order(_ a: ResourceID, _ b: ResourceID) -> Bool {
        let (ka, kb) = (ResourceKind(rawValue: a.kind), ResourceKind(rawValue: b.kind))
        if ka != kb, let ka, let kb { return ka < kb }
        return a < b
    }
}
