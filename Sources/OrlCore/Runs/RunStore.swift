/// Reading runs, inside one transaction. Kept apart from `StateReader` so that the run
/// engine (`RunOperations`) depends on what it uses only; the SQLite store implements
/// both on the same database, so a run operation and the events it records commit
/// together.
public protocol RunReader {
    func resource(_ id: ResourceID) throws(StoreError) -> StoredResource?
    func resources(kind: ResourceKind?, namespace: String?) throws(StoreError) -> [StoredResource]
    /// The newest events first; for one subject (a run's is `RunRecord.eventSubject`) when given.
    func events(for resource: ResourceID?, limit: Int) throws(StoreError) -> [StoreEvent]

    func run(_ id: RunID) throws(StoreError) -> RunRecord?
    /// The run and its plan as this process last read or stored them, without asking the
    /// store; nil when it has not kept them. A run's fields never change but its phase,
    /// end and error: a caller takes those only from a step of the run that shows it
    /// Running (a run ends with no step open), and reads the run otherwise.
    func cachedRun(_ id: RunID) -> (run: RunRecord, plan: RunPlan)?
    /// Newest first; nil filters mean any.
    func runs(namespace: String?, workflow: String?, limit: Int) throws(StoreError) -> [RunRecord]
    /// The plan the run was created with.
    func plan(of run: RunID) throws(StoreError) -> RunPlan
    func step(of run: RunID, index: Int) throws(StoreError) -> StepRecord?
    /// Every step, in workflow order.
    func steps(of run: RunID) throws(StoreError) -> [StepRecord]
    /// How many steps of the run are not in a terminal state.
    func openStepCount(of run: RunID) throws(StoreError) -> Int
    /// Whether any step of the run is not in a terminal state (asked at every step's end).
    func hasOpenSteps(of run: RunID) throws(StoreError) -> Bool
    /// The Ready step of `agent` that became claimable first (at or before `now`), in
    /// any Running run.
    func nextClaimable(agent: ResourceID, at now: Timestamp) throws(StoreError) -> StepRecord?
    /// The Running steps of `agent` (of every agent when nil): the tasks in flight.
    func runningSteps(agent: ResourceID?) throws(StoreError) -> [StepRecord]
    /// Running steps whose lease or deadline has passed, and approvals past their
    /// deadline, oldest first.
    func dueSteps(at now: Timestamp, limit: Int) throws(StoreError) -> [StepRecord]
    /// The earliest lease expiry or deadline of any open step: when the next sweep is due.
    func nextDue() throws(StoreError) -> Timestamp?
    /// Steps waiting for approval, oldest first; in one namespace when given.
    func pendingApprovals(namespace: String?) throws(StoreError) -> [StepRecord]
    /// The latest version of a blackboard value.
    func value(of run: RunID, key: String) throws(StoreError) -> BlackboardValue?
    /// Every version of every value of the run, by key then version.
    func values(of run: RunID) throws(StoreError) -> [BlackboardValue]
    /// The run's attempts, by step index then attempt, as `AttemptRecord.reported` makes
    /// them of the stored rows and the steps.
    func attempts(of run: RunID) throws(StoreError) -> [AttemptRecord]
    func cronSlot(workflow: ResourceID, cron: String) throws(StoreError) -> CronSlotRecord?
    /// What the model gateway's ledger records against the run, by step.
    func spend(of run: RunID) throws(StoreError) -> [String: Charge]
    /// A resource's status as the controller last wrote it (an agent's process phase).
    func status(for resource: ResourceID) throws(StoreError) -> ResourceStatus?
}

extension RunReader {
    public func cachedRun(_ id: RunID) -> (run: RunRecord, plan: RunPlan)? { nil }
    public func hasOpenSteps(of run: RunID) throws(StoreError) -> Bool { try openStepCount(of: run) > 0 }
}

/// Writing runs, inside one exclusive transaction.
public protocol RunWriter: RunReader {
    func append(_ event: StoreEvent) throws(StoreError)
    /// Stores a new run with its plan and steps. A run id already used is an error.
    func insert(_ run: RunRecord, plan: RunPlan, steps: [StepRecord]) throws(StoreError)
    func update(_ run: RunRecord) throws(StoreError)
    func update(_ step: StepRecord) throws(StoreError)
    /// Appends a version of the value (its `version` is ignored); returns the version.
    @discardableResult func put(_ value: BlackboardValue) throws(StoreError) -> Int
    /// Stores the attempt; for one already stored (same run, step and attempt), its end,
    /// outcome and error (when it started stays as first stored). The run operations
    /// store no row the step row can tell (`AttemptRecord.reported`).
    func put(_ attempt: AttemptRecord) throws(StoreError)
    func put(_ slot: CronSlotRecord) throws(StoreError)
}

/// The port for runs: the same transaction rules as `StateStore` (one writer at a time
/// across processes; a write lands entirely or not at all), which is what makes a
/// claim safe when several agents (or controllers' API servers) race for one task.
public protocol RunStore: Sendable {
    func readRuns<T>(_ body: (any RunReader) throws(StoreError) -> T) throws(StoreError) -> T
    func writeRuns<T>(_ body: (any RunWriter) throws(StoreError) -> T) throws(StoreError) -> T
    /// `writeRuns` if it needs no wait for a lock, for a caller that must not block (an
    /// event loop): nil, with nothing written, when it would. What its commit would
    /// have done that may block is left to `finishWrites`. The body may run again in
    /// `writeRuns` after nil, so it may have no effect but through the writer.
    func writeRunsIfFree<T>(_ body: (any RunWriter) throws(StoreError) -> T) throws(StoreError) -> T?
    /// Whether a `writeRunsIfFree` left work for `finishWrites`.
    var hasUnfinishedWrites: Bool { get }
    /// Does what `writeRunsIfFree` left (SQLite: a checkpoint). Blocks.
    func finishWrites()
}

/// A store that cannot tell whether a write would wait (a server's store, a network
/// away) never writes without waiting.
extension RunStore {
    public func writeRunsIfFree<T>(_ body: (any RunWriter) throws(StoreError) -> T) throws(StoreError) -> T? { nil }
    public var hasUnfinishedWrites: Bool { false }
    public func finishWrites() {}
}
