import Dispatch
import Foundation
public import OrlCore
public import OrlGit
import OrlRuntime

/// What a git source syncs and how: the flags of `orlctl sync` and `orlctl watch`.
public struct GitSourceConfiguration: Sendable {
    public var name: String
    public var url: String
    public var ref: String?
    public var path: String?
    public var prune: Bool
    public var allowRewind: Bool
    public var maxDeletions: Int
    public var allowEmpty: Bool
    /// The credentials, asked for at each round, so that a token rotated in the vault
    /// is used from the next round on.
    public var auth: @Sendable () -> GitAuth
    /// Who applies, as the history records it.
    public var appliedBy: String
    /// The bare mirror the source is fetched into: `<state>/git/<name>.git`.
    public var mirror: String
    /// Where the trees of applied commits are written for Agents and Tools to run code
    /// from (`<state>/code/<name>`, see `CodeTrees`); nil: none is, and their relative
    /// paths resolve as without a source.
    public var codeTrees: CodeTrees?
    /// Take over resources another source applied (`--force-conflicts`).
    public var forceConflicts: Bool
    /// Read and check every file and compare every stored hash, as if nothing had been
    /// synced before (`--full`); the index is written for the rounds after.
    public var full: Bool
    /// The process makes one round and ends (`sync --once`): nothing is worked out for a
    /// round after it (the fingerprint an up-to-date round compares the state with).
    public var singleRound: Bool

    public init(
        name: String, url: String, ref: String?, path: String?, prune: Bool, allowRewind: Bool, maxDeletions: Int, allowEmpty: Bool,
        auth: @escaping @Sendable () -> GitAuth, appliedBy: String, mirror: String, codeTrees: CodeTrees? = nil,
        forceConflicts: Bool = false, full: Bool = false, singleRound: Bool = false
    ) {
        self.full = full
        self.singleRound = singleRound
        self.codeTrees = codeTrees
        self.forceConflicts = forceConflicts
        self.name = name
        self.url = url
        self.ref = ref
        self.path = path
        self.prune = prune
        self.allowRewind = allowRewind
        self.maxDeletions = maxDeletions
        self.allowEmpty = allowEmpty
        self.auth = auth
        self.appliedBy = appliedBy
        self.mirror = mirror
    }
}

/// What one round did.
public struct SyncReport: Sendable {
    public enum Outcome: Sendable {
        /// Suspended: the remote was not even asked.
        case suspended
        /// The head is the applied revision.
        case upToDate
        /// The head is a revision that failed; it waits until then (or a new head).
        case waiting(until: Timestamp)
        /// Applied (the plan may be empty: the revision changed nothing).
        case applied(ApplyOutcome)
        /// The manifests have errors; nothing was applied.
        case invalid(ValidationReport, files: Int)
        /// A rewind or a prune guard refused it; nothing was applied.
        case refused(String)
        /// Git or the store failed; nothing was applied.
        case failed(String)
        /// The remote could not be asked for its head.
        case unreachable(String)
    }

    public var source: String
    /// The remote's head, when it was learnt.
    public var head: GitObjectID?
    /// The revision applied before this round.
    public var previous: String?
    public var outcome: Outcome
    /// The source's record after the round (nil when the store could not be read).
    public var record: SourceRecord?
    /// The round failed as the one before did (the remote is still unreachable): no new
    /// event was recorded, and a watcher logs nothing.
    public var repeated = false
    /// The remote answered again after being unreachable: what was recorded.
    public var recovered: String?
    /// Manifest files read and, of those, parsed anew (the rest came from the cache).
    public var files = 0
    public var parsed = 0
    /// The head had not moved: what was applied is what changed out of band, put back.
    public var drift = false

    /// Whether the round changed the state.
    public var changed: Bool {
        if case .applied(let outcome) = outcome { return !outcome.plan.isEmpty }
        return false
    }

    /// The round failed (what `--once` exits 1 or 2 for, and what the watcher reports).
    public var failed: Bool {
        switch outcome {
        case .invalid, .refused, .failed, .unreachable: true
        case .suspended, .upToDate, .waiting, .applied: false
        }
    }
}

/// Syncs one git source into the state, a round at a time: ask the remote for the ref's
/// commit (ls-remote); when it did not move, nothing else. Otherwise fetch it into the
/// bare mirror, read the manifests from the commit's tree, and run the same all-or-nothing
/// validate → audit → plan → apply (→ prune, with the same guards) as `orlctl apply`, with
/// the source's own inventory, recording the source's status with the apply.
///
/// As `apply` does, a round costs what the commit changed: blobs already read are not
/// parsed again, only the namespaces changed files touch are checked again, and the plan
/// takes for granted what the last apply left while the store's change mark holds. The
/// index that makes this possible (`StoredManifestIndex`, with `ResourceSnapshot`s of the
/// namespaces checked) is written with every apply, so that the first round of a new
/// process (`sync --once`, a restarted watch) reads only what changed since as well.
///
/// The repository and the parse cache are confined to a serial queue of their own:
/// libgit2 objects are not for two threads, and fetches block on the network, off the
/// cooperative pool.
public final class GitSourceSync: @unchecked Sendable {
    public let configuration: GitSourceConfiguration
    private let store: any StateStore
    private let clock: @Sendable () -> Timestamp
    private let queue: DispatchQueue
    // Touched only on `queue`.
    private var repository: GitRepository?
    private let manifests = GitManifests()
    /// The source's index as the state holds it, read at the first round and kept as each
    /// apply writes it: the files read and, in its memo, what the last apply left in the
    /// store, for the next plan to take for granted while the store's change mark is the
    /// one taken in that apply's transaction (`ApplyMemo`).
    private var held: StoredManifestIndex.Stored?
    private var heldRead = false
    /// The first round's read of `held`, started before git is asked for the head.
    private var heldReading: WorkerPool.Pending<StoredManifestIndex.Stored?>?
    /// The applied revision's manifests and code, kept so that an up-to-date round can put
    /// back drift without validating the revision again.
    private var applied: (commit: String, loaded: GitManifests.Loaded, codeRoot: String?)?
    /// The source's `fingerprint` when the state last matched `applied`: while it holds,
    /// an up-to-date round has no drift to look for.
    private var matched: String?

    public init(configuration: GitSourceConfiguration, store: any StateStore, clock: @escaping @Sendable () -> Timestamp) {
        self.configuration = configuration
        self.store = store
        self.clock = clock
        queue = DispatchQueue(label: "orl.sync.\(configuration.name)")
    }

    /// What the rounds keep for the next one (the index, the applied revision's manifests,
    /// the parse cache, the repository), for a process that ends after its round
    /// (`sync --once`) to keep unfreed to the end: freed as this sync goes, their ten
    /// thousand records cost 5–10% of such a process. The sync keeps them too.
    public func keptForTheNextRound() -> any Sendable {
        queue.sync { Retained(parts: (held, applied, manifests, repository)) }
    }

    private struct Retained: @unchecked Sendable {
        let parts: Any
    }

    /// Runs a round. With `retryFailed`, a revision that failed is tried again at once
    /// (`sync --once`, run on purpose) rather than after its backoff (`watch`).
    public func round(retryFailed: Bool) async -> SyncReport {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.roundOnQueue(retryFailed: retryFailed)) }
        }
    }

    private func roundOnQueue(retryFailed: Bool) -> SyncReport {
        let c = configuration
        let now = clock()
        let stored: SourceRecord?
        do {
            stored = try store.read { reader throws(StoreError) in try reader.source(named: c.name) }
        } catch {
            return SyncReport(source: c.name, outcome: .failed(error.description))
        }
        var record = stored ?? SourceRecord(name: c.name, url: c.url)
        record.url = c.url
        record.ref = c.ref
        record.path = c.path
        var report = SyncReport(source: c.name, previous: record.lastApplied, outcome: .upToDate, record: stored)
        if record.isSuspended {
            report.outcome = .suspended
            return report
        }
        // A first round needs the index the state keeps once the commit is here: it is
        // read and decoded on another core while git is asked for the head and fetches it.
        if !heldRead, !c.full {
            heldRead = true
            let (store, source) = (self.store, record.applySource)
            heldReading = WorkerPool.shared.start {
                try? store.read { reader throws(StoreError) in try StoredManifestIndex.read(source: source, reader) }
            }
        }

        let repository: GitRepository
        let remote: GitRemoteRef
        let auth = c.auth()
        do throws(GitError) {
            if let open = self.repository {
                repository = open
            } else {
                repository = try GitRepository.mirror(at: c.mirror)
                self.repository = repository
            }
            remote = try repository.remoteRef(url: c.url, ref: c.ref, auth: auth)
        } catch {
            return unreachable(&report, record, error.description, now: now)
        }
        if let (next, event) = SourceSync.reachable(record, now: now) {
            do {
                try store.write { writer throws(StoreError) in
                    try writer.putSource(next)
                    try writer.append(event)
                }
                record = next
                report.record = next
                report.recovered = next.message
            } catch {
                return SyncReport(source: c.name, outcome: .failed(error.description))
            }
        }
        var head = remote.commit
        report.head = head

        switch SourceSync.step(stored == nil ? nil : record, head: head.hex, now: now) {
        case .suspended:
            report.outcome = .suspended
            return report
        case .upToDate:
            if let settled = SourceSync.settled(record, head: head.hex, now: now) {
                try? store.write { writer throws(StoreError) in try writer.putSource(settled) }
                report.record = settled
            }
            correctDrift(&report, record: report.record ?? record, head: head, repository: repository, now: now)
            return report
        case .retryLater(let at):
            if !retryFailed {
                report.outcome = .waiting(until: at)
                return report
            }
        case .sync:
            break
        }

        do {
            if !repository.hasCommit(head) {
                head = try repository.fetch(url: c.url, ref: remote.name, auth: auth)
                report.head = head
            }
        } catch {
            return fail(&report, record, revision: head.hex, .failed, reason: "SyncFailed", error.description, now: now)
        }

        var events: [StoreEvent] = []
        if let applied = record.lastApplied, applied != head.hex {
            let ancestor = GitObjectID(hex: applied)
            let known = ancestor.map(repository.hasCommit) ?? false
            var descends = false
            if known, let ancestor {
                do {
                    descends = try repository.isDescendant(head, of: ancestor)
                } catch {
                    return fail(&report, record, revision: head.hex, .failed, reason: "SyncFailed", error.description, now: now)
                }
            }
            if !descends {
                let message = SourceSync.rewindMessage(head: head.hex, applied: applied, known: known)
                guard c.allowRewind else {
                    return fail(&report, record, revision: head.hex, .refused, reason: "RewindRefused", message, now: now)
                }
                events.append(
                    StoreEvent(
                        time: now, kind: .warning, resource: record.eventSubject, reason: "Rewound",
                        message: "applying \(head.short), which does not descend from \(SourceSync.short(applied)) (--allow-rewind)"))
            }
        }

        let loaded: GitManifests.Loaded
        do {
            loaded = try load(repository, commit: head, source: record.applySource)
        } catch {
            return fail(&report, record, revision: head.hex, .failed, reason: "SyncFailed", error.description, now: now)
        }
        report.files = loaded.files.count
        report.parsed = manifests.lastParsed
        guard loaded.report.isValid else {
            let errors = loaded.report.diagnostics.filter { $0.severity == .error }
            let first = errors.first.map { d in "; first: " + (d.location.map { "\($0): " } ?? "") + d.headline } ?? ""
            let message = "the manifests have \(errors.count) error\(errors.count == 1 ? "" : "s")\(first)"
            var failed = fail(&report, record, revision: head.hex, .invalid, reason: "InvalidManifests", message, now: now)
            failed.outcome = .invalid(loaded.report, files: loaded.files.count)
            return failed
        }

        // The code of the revision, written before the apply that switches agents to it; a
        // revision that fails validation never gets here, and one refused leaves a tree
        // no resource names, collected at the next apply.
        var codeRoot: String?
        if let trees = c.codeTrees {
            do {
                codeRoot = try trees.materialise(head, manifestsUnder: c.path, from: repository)
            } catch {
                return fail(&report, record, revision: head.hex, .failed, reason: "SyncFailed", error.description, now: now)
            }
        }
        let options = ApplyOptions(
            source: record.applySource, prune: c.prune, allowEmpty: c.allowEmpty, maxDeletions: c.maxDeletions, revision: head.hex,
            appliedBy: c.appliedBy, codeRoot: codeRoot, forceConflicts: c.forceConflicts)
        do {
            let desired = loaded.desired
            let previous = c.full ? nil : held
            var memoHeld = false
            var written: StoredManifestIndex.Stored??
            let manifests = self.manifests
            let (result, next) = try SourceSync.apply(
                desired: desired,
                resolve: { index throws(StoreError) in
                    do throws(GitError) {
                        return try manifests.resource(at: index, of: loaded, in: repository)
                    } catch {
                        throw StoreError(error.description)
                    }
                }, revision: head.hex, record: record, options: options, events: events, to: store, now: now,
                shortcut: { reader throws(StoreError) in
                    guard let previous, let memo = previous.index.memo, try reader.changeMark(source: options.source) == memo.mark
                    else { return nil }
                    memoHeld = true
                    // A first round's load checked the files against this very index, by
                    // position: what it found stands, and the index's desired set is not
                    // made again (10,000 entries) when it names the same resources.
                    let against = loaded.againstStored
                    var settled = against?.settled ?? previous.index.settled(desired)
                    // A resource with code is stored with the code root of its revision.
                    if memo.codeRoot != options.codeRoot {
                        for (i, entry) in desired.enumerated() where entry.hasCode { settled[i] = false }
                    }
                    guard memo.ownsExactly else { return PlanShortcut(settled: settled, owned: nil) }
                    let owned = against?.sameIdentities == true ? desired.map(\.id) : previous.index.desiredResources().map(\.id)
                    return PlanShortcut(settled: settled, owned: owned)
                },
                applied: { writer throws(StoreError) in
                    written = try Self.writeIndex(
                        loaded, previous: previous, memoHeld: memoHeld, options: options, source: options.source, writer)
                })
            if let written { held = written }
            report.record = next
            switch result {
            case .success(let outcome):
                report.outcome = .applied(outcome)
                applied = (head.hex, loaded, codeRoot)
                // A scan of every resource the source owns, for the next round to compare.
                if !c.singleRound {
                    matched = try? store.read { reader throws(StoreError) in try reader.fingerprint(source: record.applySource) }
                }
                if let codeRoot { c.codeTrees?.collect(current: codeRoot) }
            case .failure(let refusal): report.outcome = .refused(refusal.description)
            }
        } catch {
            return fail(&report, record, revision: head.hex, .failed, reason: "SyncFailed", error.description, now: now)
        }
        return report
    }

    /// The manifests of `commit`, read against what the last round read or, at the first,
    /// the index the state keeps (`--full`: everything read and checked).
    private func load(_ repository: GitRepository, commit: GitObjectID, source: String) throws(GitError) -> GitManifests.Loaded {
        let c = configuration
        // Started by the first round (none with `--full`).
        if let reading = heldReading {
            held = reading.wait()
            heldReading = nil
        }
        let store = self.store
        return try manifests.load(
            repository, commit: commit, under: c.path, stored: c.full ? nil : held?.index,
            kept: { namespaces in ManifestIndexLoader.kept(namespaces, source: source, store: store) }, full: c.full)
    }

    /// Writes the index of what `loaded` read, in the transaction of the apply that
    /// applied it, with what the next plan may take for granted and what is kept of the
    /// namespaces checked; returns it as the state now holds it (nil: it holds none).
    static func writeIndex(
        _ loaded: GitManifests.Loaded, previous: StoredManifestIndex.Stored?, memoHeld: Bool, options: ApplyOptions, source: String,
        _ writer: any StateWriter
    ) throws(StoreError) -> StoredManifestIndex.Stored? {
        guard var next = loaded.next else {
            // What cannot be indexed (MCP pins, unnamed documents) is read whole next time.
            try StoredManifestIndex.drop(source: source, writer)
            return nil
        }
        // After a prune the source owns exactly what it desires; otherwise it still does
        // if it did and kept desiring everything it did.
        var ownsExactly = options.prune
        if !ownsExactly, memoHeld, let previous, let memo = previous.index.memo, memo.ownsExactly {
            let now = Set(loaded.desired.map(\.id))
            ownsExactly = previous.index.desiredResources().allSatisfy { now.contains($0.id) }
        }
        next.memo = ApplyMemo(mark: try writer.changeMark(source: source), codeRoot: options.codeRoot, ownsExactly: ownsExactly)
        for namespace in loaded.outcome.checked.keys.sorted() {
            try ResourceSnapshot.write(loaded.outcome.checked[namespace]!, source: source, namespace: namespace, writer)
        }
        // The memo first: it differs after any apply that wrote, and is cheap to compare.
        if let previous, previous.index.memo == next.memo, previous.index == next { return previous }
        return try next.write(source: source, previous: previous, writer)
    }

    /// Records that the remote could not be reached: the first round of an outage with
    /// an event, the next ones in the record alone.
    private func unreachable(_ report: inout SyncReport, _ record: SourceRecord, _ message: String, now: Timestamp) -> SyncReport {
        let (next, event) = SourceSync.unreachable(record, message: message, now: now)
        var message = message
        do {
            try store.write { writer throws(StoreError) in
                try writer.putSource(next)
                if let event { try writer.append(event) }
            }
            report.record = next
        } catch {
            message += " (and its status could not be stored: \(error.description))"
        }
        report.repeated = event == nil
        report.outcome = .unreachable(message)
        return report
    }

    /// Level-triggered, as Flux is: while the head does not move, what the applied revision
    /// declares is applied again when the state no longer matches it (a resource of this
    /// source changed or deleted out of band, its code tree removed), with a DriftCorrected
    /// event. The plan is made on a read first, so an undrifted round writes nothing.
    private func correctDrift(
        _ report: inout SyncReport, record: SourceRecord, head: GitObjectID, repository: GitRepository, now: Timestamp
    ) {
        let c = configuration
        let fingerprint = try? store.read { reader throws(StoreError) in try reader.fingerprint(source: record.applySource) }
        if let fingerprint, fingerprint == matched, applied?.commit == head.hex,
            applied?.codeRoot.map({ FileManager.default.fileExists(atPath: $0) }) ?? true
        {
            return
        }
        defer {
            matched = try? store.read { reader throws(StoreError) in try reader.fingerprint(source: record.applySource) }
        }
        if applied?.commit != head.hex {
            guard let loaded = try? load(repository, commit: head, source: record.applySource), loaded.report.isValid else { return }
            applied = (head.hex, loaded, nil)
        }
        guard var current = applied else { return }
        if let trees = c.codeTrees, current.codeRoot.map({ !FileManager.default.fileExists(atPath: $0) }) ?? true {
            guard let root = try? trees.materialise(head, manifestsUnder: c.path, from: repository) else { return }
            current.codeRoot = root
            applied = current
        }
        // Puts back, never prunes: pruning follows a new head, so adding --prune to a
        // source's sync waits for one, as it always has.
        let options = ApplyOptions(
            source: record.applySource, prune: false, allowEmpty: c.allowEmpty, maxDeletions: c.maxDeletions, revision: head.hex,
            appliedBy: c.appliedBy, codeRoot: current.codeRoot, forceConflicts: c.forceConflicts)
        let manifests = self.manifests
        let loaded = current.loaded
        let resolve = { (index: Int) throws(StoreError) -> Resource in
            do throws(GitError) {
                return try manifests.resource(at: index, of: loaded, in: repository)
            } catch {
                throw StoreError(error.description)
            }
        }
        guard
            let preview = try? ApplyOperation.apply(
                desired: loaded.desired, resolve: resolve, to: store, options: options, now: now, dryRun: true),
            !preview.plan.isEmpty
        else { return }
        do {
            let changed = preview.plan.changes.map { "\($0.id)" }.joined(separator: ", ")
            let event = StoreEvent(
                time: now, kind: .warning, resource: record.eventSubject, reason: "DriftCorrected",
                message: "put back what changed out of band since \(head.short) was applied: \(changed)")
            let outcome: ApplyOutcome? = try store.write { writer throws(StoreError) in
                guard
                    case .success(let outcome) = try ApplyOperation.apply(
                        desired: loaded.desired, resolve: resolve, in: writer, options: options, now: now),
                    !outcome.plan.isEmpty
                else { return nil }
                try writer.append(event)
                return outcome
            }
            if let outcome {
                report.outcome = .applied(outcome)
                report.drift = true
            }
        } catch {
            return
        }
    }

    /// Records a failed round (when the store can be written) and says why.
    private func fail(
        _ report: inout SyncReport, _ record: SourceRecord, revision: String?, _ result: SourceRecord.Result, reason: String,
        _ message: String, now: Timestamp
    ) -> SyncReport {
        let (next, event) = SourceSync.failed(record, revision: revision, result: result, reason: reason, message: message, now: now)
        var message = message
        do {
            try store.write { writer throws(StoreError) in
                try writer.putSource(next)
                try writer.append(event)
            }
            report.record = next
        } catch {
            message += " (and its status could not be stored: \(error.description))"
        }
        switch result {
        case .unreachable: report.outcome = .unreachable(message)
        case .refused: report.outcome = .refused(message)
        default: report.outcome = .failed(message)
        }
        return report
    }
}
