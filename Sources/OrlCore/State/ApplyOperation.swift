public import OrlJSON

/// What an apply did (or, in a dry run, would do).
public struct ApplyOutcome: Sendable {
    public var plan: Plan
    /// The history number, when something was written.
    public var applyNumber: Int?
}

public enum ApplyError: Error, Sendable, CustomStringConvertible {
    case store(StoreError)
    case refused(PlanRefusal)

    public var description: String {
        switch self {
        case .store(let e): e.description
        case .refused(let r): r.description
        }
    }
}

/// `orlctl apply`: plans against the actual state and writes the plan, all or nothing.
///
/// The plan is computed inside the store's exclusive write transaction, so two applies
/// at once run one after the other and the second plans against what the first wrote:
/// nothing is lost and nothing interleaves.
public enum ApplyOperation {
    public static func apply(_ fleet: Fleet, to store: any StateStore, options: ApplyOptions, now: Timestamp, dryRun: Bool = false)
        throws(ApplyError) -> ApplyOutcome
    {
        try apply(
            desired: fleet.resources.map(DesiredResource.init), resolve: { fleet.resources[$0] }, to: store, options: options, now: now,
            dryRun: dryRun)
    }

    /// `apply` from hashes (see `Planner.plan(desired:resolve:...)`); `shortcut` says, inside
    /// the transaction, what the plan may take for granted; `also` writes more in the same
    /// transaction when the plan is applied or empty (the manifest index).
    public static func apply(
        desired: [DesiredResource], resolve: (Int) throws(StoreError) -> Resource, to store: any StateStore, options: ApplyOptions,
        now: Timestamp,
        dryRun: Bool = false, shortcut: (any StateReader) throws(StoreError) -> PlanShortcut? = { _ throws(StoreError) in nil },
        also: (any StateWriter, Plan) throws(StoreError) -> Void = { _, _ throws(StoreError) in }, fork: Fork = .inline
    ) throws(ApplyError) -> ApplyOutcome {
        if dryRun {
            let plan: Plan
            do throws(StoreError) {
                plan = try store.read { reader throws(StoreError) in
                    try Planner.plan(
                        desired: desired, resolve: resolve, actual: reader, options: options, now: now, shortcut: try shortcut(reader))
                }
            } catch {
                throw .store(error)
            }
            do throws(PlanRefusal) {
                try Planner.check(plan, desiredCount: desired.count, options: options)
            } catch {
                throw .refused(error)
            }
            return ApplyOutcome(plan: plan, applyNumber: nil)
        }

        let result: Result<ApplyOutcome, PlanRefusal>
        do throws(StoreError) {
            result = try store.write { writer throws(StoreError) in
                let result = try apply(
                    desired: desired, resolve: resolve, in: writer, options: options, now: now, shortcut: try shortcut(writer),
                    fork: fork)
                if case .success(let outcome) = result { try also(writer, outcome.plan) }
                return result
            }
        } catch {
            throw .store(error)
        }
        switch result {
        case .success(let outcome): return outcome
        case .failure(let refusal): throw .refused(refusal)
        }
    }

    /// The write half of `apply`, inside a transaction the caller holds, for callers that
    /// write more in the same transaction (a git source records its status with the
    /// apply, so that the two never disagree). A refusal writes nothing.
    public static func apply(_ fleet: Fleet, in writer: any StateWriter, options: ApplyOptions, now: Timestamp) throws(StoreError)
        -> Result<ApplyOutcome, PlanRefusal>
    {
        try apply(
            desired: fleet.resources.map(DesiredResource.init), resolve: { fleet.resources[$0] }, in: writer, options: options, now: now)
    }

    public static func apply(
        desired: [DesiredResource], resolve: (Int) throws(StoreError) -> Resource, in writer: any StateWriter, options: ApplyOptions,
        now: Timestamp, shortcut: PlanShortcut? = nil, fork: Fork = .inline
    ) throws(StoreError) -> Result<ApplyOutcome, PlanRefusal> {
        let plan = try Planner.plan(desired: desired, resolve: resolve, actual: writer, options: options, now: now, shortcut: shortcut)
        do throws(PlanRefusal) {
            try Planner.check(plan, desiredCount: desired.count, options: options)
        } catch {
            return .failure(error)
        }
        // Re-applying the same set writes nothing, not even history.
        guard !plan.isEmpty else { return .success(ApplyOutcome(plan: plan, applyNumber: nil)) }
        // The history's copy of the plan (a first apply's is the size of its manifests)
        // is rendered beside the writes, which stay on the transaction's thread.
        let (history, _) = try fork.both(
            { PlanJSON.render(plan).rendered() },
            { () throws(StoreError) in
                for change in plan.changes {
                    switch change.action {
                    case .create, .update:
                        try writer.put(change.desired!)
                    case .prune:
                        try writer.delete(change.id)
                    }
                    try writer.append(event(for: change, plan: plan, at: now))
                }
            })
        let number = try writer.record(
            ApplyRecord(
                number: 0, source: options.source, revision: options.revision, appliedAt: now, appliedBy: options.appliedBy,
                summary: plan.summary, plan: history, result: "applied"))
        return .success(ApplyOutcome(plan: plan, applyNumber: number))
    }

    private static func event(for change: Plan.Change, plan: Plan, at time: Timestamp) -> StoreEvent {
        let from = change.desired.map { " from \($0.file):\($0.line)" } ?? ""
        switch change.action {
        case .create:
            return StoreEvent(
                time: time, kind: .normal, resource: change.id, reason: "Created", message: "applied\(from) by source \(plan.source)")
        case .update:
            let generation = change.desired.map { " (generation \($0.generation))" } ?? ""
            var what = change.specChanged ? "spec changed\(generation)" : "labels or annotations changed"
            if !change.specChanged, let current = change.current, let desired = change.desired, current.manifest == desired.manifest,
                current.codeRoot != desired.codeRoot
            {
                what = "code now from " + (desired.revision.map { "revision \(String($0.prefix(7)))" } ?? desired.codeRoot ?? "nowhere")
            }
            let takeover = change.takesOverFrom.map { "; taken over from source \($0)" } ?? ""
            return StoreEvent(time: time, kind: .normal, resource: change.id, reason: "Updated", message: "\(what)\(from)\(takeover)")
        case .prune:
            return StoreEvent(
                time: time, kind: .normal, resource: change.id, reason: "Pruned",
                message: "no longer in the manifests of source \(plan.source)")
        }
    }
}

/// The plan as JSON: what `-o json` prints and what the history keeps.
public enum PlanJSON {
    public static func render(_ plan: Plan) -> JSONValue {
        .object([
            ("source", .string(plan.source)),
            ("summary", .string(plan.summary)),
            ("add", .int(plan.additions)),
            ("change", .int(plan.updates)),
            ("prune", .int(plan.prunes)),
            ("unchanged", .int(plan.unchanged.count)),
            ("changes", .array(plan.changes.map(change))),
        ])
    }

    static func change(_ change: Plan.Change) -> JSONValue {
        .object([
            ("action", .string(change.action.rawValue)),
            ("kind", .string(change.id.kind)),
            ("namespace", .string(change.id.namespace)),
            ("name", .string(change.id.name)),
            ("file", (change.desired ?? change.current).map { .string($0.file) }),
            ("line", (change.desired ?? change.current).map { .int($0.line) }),
            ("generation", change.desired.map { .int($0.generation) }),
            ("takesOverFrom", change.takesOverFrom.map { .string($0) }),
            (
                "fields",
                change.action == .update
                    ? .array(
                        change.fields.map { field in
                            .object([
                                ("change", .string(field.kind.rawValue)),
                                ("path", .string(field.path.description)),
                                ("before", field.before.map { .string($0) }),
                                ("after", field.after.map { .string($0) }),
                            ])
                        }) : nil
            ),
        ])
    }
}
