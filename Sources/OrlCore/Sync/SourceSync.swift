/// The decisions of a git source's sync round, and its write: pure, so that the rules
/// (no hot loop on a failing revision, a rewind refused, the last good revision kept)
/// are tested without git or a database. The round itself (ls-remote, fetch, reading
/// the tree) is the OrlManifests adapter's.
public enum SourceSync {
    /// How long a failed revision waits before it is tried again while the head stays
    /// on it: 2 minutes, doubling to an hour. A newer head is tried at once.
    public static let retry = BackoffPolicy(initial: .seconds(120), cap: .seconds(3600), jitter: 0, resetAfter: .seconds(0))

    /// What a round does once it knows the remote's head.
    public enum Step: Sendable, Hashable {
        /// Suspended by `orlctl suspend source/NAME`: nothing is fetched or applied.
        case suspended
        /// The head is the applied revision: nothing else to do.
        case upToDate
        /// The head is a revision that failed; it is tried again at this time, or at
        /// once when the head moves.
        case retryLater(at: Timestamp)
        /// Fetch, read, validate and apply the head.
        case sync
    }

    public static func step(_ record: SourceRecord?, head: String, now: Timestamp) -> Step {
        guard let record else { return .sync }
        if record.isSuspended { return .suspended }
        if head == record.lastApplied { return .upToDate }
        if head == record.lastAttempted, let result = record.result, result.isRevisionFailure, record.failures > 0 {
            let attempted = record.lastAttemptedAt ?? now
            let delay = retry.delay(afterCrashes: record.failures, random: 0)
            let due = Timestamp(milliseconds: attempted.milliseconds + Int64(delay.inSeconds * 1000))
            if now < due { return .retryLater(at: due) }
        }
        return .sync
    }

    /// When the head went back to the applied revision after a failed attempt (the bad
    /// commit was reverted by a force push), the status says so; nil when it already does.
    public static func settled(_ record: SourceRecord, head: String, now: Timestamp) -> SourceRecord? {
        guard record.lastAttempted != head || record.result != .applied else { return nil }
        var next = record
        next.lastAttempted = head
        next.lastAttemptedAt = now
        next.result = .applied
        next.failures = 0
        next.message = "the head is back at the applied revision \(short(head))"
        return next
    }

    /// The message of a refused rewind: the new head does not have the applied revision
    /// in its history (a force push), so applying it may undo commits.
    public static func rewindMessage(head: String, applied: String, known: Bool) -> String {
        let why =
            known
            ? "does not descend from the applied revision \(short(applied))"
            : "cannot be checked against the applied revision \(short(applied)), which is not in the mirror"
        return "the new head \(short(head)) \(why) (a force push?); pass --allow-rewind to apply it"
    }

    /// The record and event after a failed attempt (or, for `.unreachable`, a failure to
    /// learn the head). Nothing of what the source applied changes.
    public static func failed(
        _ record: SourceRecord, revision: String?, result: SourceRecord.Result, reason: String, message: String, now: Timestamp
    ) -> (SourceRecord, StoreEvent) {
        var next = record
        next.result = result
        next.message = message
        if let revision {
            next.failures = revision == record.lastAttempted && (record.result?.isRevisionFailure ?? false) ? record.failures + 1 : 1
            next.lastAttempted = revision
            next.lastAttemptedAt = now
        }
        let at = revision.map { " at \(short($0))" } ?? ""
        let event = StoreEvent(
            time: now, kind: .warning, resource: record.eventSubject, reason: reason, message: "\(result.rawValue)\(at): \(message)")
        return (next, event)
    }

    /// Applies a revision's fleet and records the source's status, in one transaction:
    /// the resources, the history, their events and the source's record land together
    /// or not at all. A refusal by prune's guards is recorded as `.refused` and applies
    /// nothing. `events` (a permitted rewind) are written with it.
    /// With `desired` (the fleet's resources as the index has them, hashes computed once
    /// per parse) and a `shortcut`, the plan compares hashes only where the shortcut
    /// does not settle them; `applied` runs last in the transaction of an apply that
    /// succeeded.
    public static func apply(
        _ fleet: Fleet, revision: String, record: SourceRecord, options: ApplyOptions, events: [StoreEvent] = [],
        to store: any StateStore, now: Timestamp, desired: [DesiredResource]? = nil,
        shortcut: (any StateReader) throws(StoreError) -> PlanShortcut? = { _ throws(StoreError) in nil },
        applied: (any StateWriter) throws(StoreError) -> Void = { _ throws(StoreError) in }
    ) throws(StoreError) -> (Result<ApplyOutcome, PlanRefusal>, SourceRecord) {
        let desired = desired ?? fleet.resources.map(DesiredResource.init)
        return try apply(
            desired: desired,
            resolve: { index throws(StoreError) in
                guard let resource = fleet[desired[index].id] else { throw StoreError("\(desired[index].id) is not in the fleet read") }
                return resource
            }, revision: revision, record: record, options: options, events: events, to: store, now: now, shortcut: shortcut,
            applied: applied)
    }

    /// `apply` from the desired resources (the index's, hashes computed once per parse):
    /// `resolve` gives the resource at a position of `desired` when the plan looks at it.
    public static func apply(
        desired: [DesiredResource], resolve: (Int) throws(StoreError) -> Resource, revision: String, record: SourceRecord,
        options: ApplyOptions, events: [StoreEvent] = [], to store: any StateStore, now: Timestamp,
        shortcut: (any StateReader) throws(StoreError) -> PlanShortcut? = { _ throws(StoreError) in nil },
        applied: (any StateWriter) throws(StoreError) -> Void = { _ throws(StoreError) in }
    ) throws(StoreError) -> (Result<ApplyOutcome, PlanRefusal>, SourceRecord) {
        try store.write { writer throws(StoreError) in
            let result = try ApplyOperation.apply(
                desired: desired, resolve: resolve, in: writer, options: options, now: now, shortcut: try shortcut(writer))
            var next = record
            switch result {
            case .success(let outcome):
                let plan = outcome.plan
                next.lastApplied = revision
                next.lastAppliedAt = now
                next.lastAttempted = revision
                next.lastAttemptedAt = now
                next.result = .applied
                next.failures = 0
                next.message = plan.isEmpty ? "no changes" : plan.summary
                for event in events { try writer.append(event) }
                if !plan.isEmpty {
                    let number = outcome.applyNumber.map { " as #\($0)" } ?? ""
                    try writer.append(
                        StoreEvent(
                            time: now, kind: .normal, resource: record.eventSubject, reason: "Synced",
                            message: "applied \(short(revision))\(number): \(plan.summary)"))
                }
            case .failure(let refusal):
                let (failed, event) = self.failed(
                    record, revision: revision, result: .refused, reason: "SyncRefused", message: refusal.description, now: now)
                next = failed
                try writer.append(event)
            }
            try writer.putSource(next)
            if case .success = result { try applied(writer) }
            return (result, next)
        }
    }

    // MARK: An unreachable remote

    /// The record after a round that could not reach the remote, and the event to
    /// record: only when the source was reachable before. A remote that stays down is
    /// one state, not one Warning per round. `failures` counts the rounds in a row.
    public static func unreachable(_ record: SourceRecord, message: String, now: Timestamp) -> (SourceRecord, StoreEvent?) {
        var next = record
        let already = record.result == .unreachable
        next.result = .unreachable
        next.message = message
        next.failures = already ? record.failures + 1 : 1
        guard !already else { return (next, nil) }
        return (
            next,
            StoreEvent(time: now, kind: .warning, resource: record.eventSubject, reason: "Unreachable", message: "Unreachable: \(message)")
        )
    }

    /// The record and event once a remote that was unreachable answers again; nil when
    /// it was not unreachable.
    public static func reachable(_ record: SourceRecord, now: Timestamp) -> (SourceRecord, StoreEvent)? {
        guard record.result == .unreachable else { return nil }
        var next = record
        let rounds = record.failures == 1 ? "1 round" : "\(record.failures) rounds"
        // What the last attempt came to before the outage is not kept; a revision that
        // had failed is simply tried again.
        next.result = record.lastAttempted == record.lastApplied ? .applied : .failed
        next.failures = 0
        next.message = "the remote is reachable again (it was not for \(rounds))"
        return (
            next, StoreEvent(time: now, kind: .normal, resource: record.eventSubject, reason: "Reachable", message: next.message)
        )
    }

    /// How long a watcher waits before asking an unreachable remote again: its interval,
    /// doubling with each round in a row that failed, up to 5 minutes (or the interval,
    /// when that is longer). A webhook delivery still syncs at once.
    public static func unreachableDelay(failures: Int, interval: Duration) -> Duration {
        let cap = max(interval, .seconds(300))
        let exponent = max(0, min(failures - 1, 20))
        let delay = interval * (1 << exponent)
        return min(delay, cap)
    }

    /// A commit as people read it: its first 7 digits.
    public static func short(_ revision: String) -> String { String(revision.prefix(7)) }
}
