public import OrlCore
import PostgresNIO
import Synchronization

/// Runs in the same database as the rest of the state: a run operation and the events it
/// records commit in one transaction, under the same write lock as every other write (so
/// two claimers, on any machine, never hand out one task twice).
extension PostgresStateStore: RunStore {
    public func readRuns<T>(_ body: (any RunReader) throws(StoreError) -> T) throws(StoreError) -> T {
        try transaction(writable: false, intent: "read the runs", body)
    }

    public func writeRuns<T>(_ body: (any RunWriter) throws(StoreError) -> T) throws(StoreError) -> T {
        try transaction(writable: true, intent: "write the runs", body)
    }
}

/// Parsed plans, by database and run: a plan never changes once stored.
private let planCache = Mutex<[String: RunPlan]>([:])
private let planCacheLimit = 256

/// The SQLite store's run queries (`OrlStore/RunAccess.swift`) in PostgreSQL's dialect.
extension PostgresAccess: RunWriter {
    private static let runColumns =
        "id, namespace, workflow, generation, phase, trigger, cron, slot, input, created_at, created_by, ended_at, error"

    private static func run(_ row: PostgresRandomAccessRow) throws(StoreError) -> RunRecord {
        let id = try row.text(0)
        guard let runID = RunID(id), let phase = RunPhase(rawValue: try row.text(4)) else {
            throw StoreError("the stored run \(id) is corrupt (id or phase)")
        }
        let trigger: RunTrigger
        if try row.text(5) == "schedule", let cron = try row.optionalText(6), let slot = try row.optionalInt64(7) {
            trigger = .schedule(cron: cron, slot: Timestamp(milliseconds: slot))
        } else {
            trigger = .manual
        }
        return RunRecord(
            id: runID, workflow: ResourceID(kind: ResourceKind.workflow.rawValue, namespace: try row.text(1), name: try row.text(2)),
            generation: try row.int(3), phase: phase, trigger: trigger, input: try row.text(8),
            createdAt: Timestamp(milliseconds: try row.int64(9)), createdBy: try row.text(10),
            endedAt: try row.optionalInt64(11).map(Timestamp.init(milliseconds:)), error: try row.optionalText(12))
    }

    private static let stepColumns =
        "run_id, idx, step, namespace, agent, state, waiting, attempt, ready_at, lease_expires_at, deadline, started_at, ended_at, error, decided_by, reason, claimant"

    private static func step(_ row: PostgresRandomAccessRow) throws(StoreError) -> StepRecord {
        let runText = try row.text(0)
        guard let run = RunID(runText), let state = StepState(rawValue: try row.text(5)) else {
            throw StoreError("a stored step of run \(runText) is corrupt (run id or state)")
        }
        func time(_ column: Int) throws(StoreError) -> Timestamp? { try row.optionalInt64(column).map(Timestamp.init(milliseconds:)) }
        let namespace = try row.text(3)
        return StepRecord(
            run: run, index: try row.int(1), id: try row.text(2),
            agent: try row.optionalText(4).map { ResourceID(kind: ResourceKind.agent.rawValue, namespace: namespace, name: $0) },
            state: state, waitingFor: try row.int(6), attempt: try row.int(7), readyAt: try time(8), leaseExpiresAt: try time(9),
            deadline: try time(10), startedAt: try time(11), endedAt: try time(12), error: try row.optionalText(13),
            decidedBy: try row.optionalText(14), reason: try row.optionalText(15), claimant: try row.optionalText(16))
    }

    private func steps(_ sql: String, _ binds: [PostgresValue], intent: String) throws(StoreError) -> [StepRecord] {
        var steps: [StepRecord] = []
        for row in try connection().query(sql, binds, intent: intent) { steps.append(try Self.step(row)) }
        return steps
    }

    // MARK: Reading

    func run(_ id: RunID) throws(StoreError) -> RunRecord? {
        let found = try connection().query(
            "SELECT \(Self.runColumns) FROM runs WHERE id = $1", [.text(id.rawValue)], intent: "read run \(id)")
        return try found.first.map { row throws(StoreError) in try Self.run(row) }
    }

    func runs(namespace: String?, workflow: String?, limit: Int) throws(StoreError) -> [RunRecord] {
        var binds: [PostgresValue] = [.int(max(limit, 0))]
        var conditions: [String] = []
        if let namespace {
            binds.append(.text(namespace))
            conditions.append("namespace = $\(binds.count)")
        }
        if let workflow {
            binds.append(.text(workflow))
            conditions.append("workflow = $\(binds.count)")
        }
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        var runs: [RunRecord] = []
        for row in try connection().query(
            "SELECT \(Self.runColumns) FROM runs \(filter) ORDER BY id DESC LIMIT $1", binds, intent: "list runs")
        {
            runs.append(try Self.run(row))
        }
        return runs
    }

    func plan(of run: RunID) throws(StoreError) -> RunPlan {
        let session = try connection()
        let key = session.url.description + "\u{0}" + run.rawValue
        if let cached = planCache.withLock({ $0[key] }) { return cached }
        let found = try session.query("SELECT plan FROM runs WHERE id = $1", [.text(run.rawValue)], intent: "read the plan of run \(run)")
        guard let row = found.first else { throw StoreError("run \(run) is not in the state") }
        let plan = try RunPlan(json: try row.text(0))
        planCache.withLock { cache in
            if cache.count >= planCacheLimit { cache.removeAll() }
            cache[key] = plan
        }
        return plan
    }

    func step(of run: RunID, index: Int) throws(StoreError) -> StepRecord? {
        try steps(
            "SELECT \(Self.stepColumns) FROM run_steps WHERE run_id = $1 AND idx = $2", [.text(run.rawValue), .int(index)],
            intent: "read a step of run \(run)"
        ).first
    }

    func steps(of run: RunID) throws(StoreError) -> [StepRecord] {
        try steps(
            "SELECT \(Self.stepColumns) FROM run_steps WHERE run_id = $1 ORDER BY idx", [.text(run.rawValue)],
            intent: "read the steps of run \(run)")
    }

    private static let openStates = "('Pending', 'Ready', 'Running', 'WaitingApproval')"

    func openStepCount(of run: RunID) throws(StoreError) -> Int {
        let found = try connection().query(
            "SELECT count(*)::bigint FROM run_steps WHERE run_id = $1 AND state IN \(Self.openStates)", [.text(run.rawValue)],
            intent: "count the open steps of run \(run)")
        return try found.first?.int(0) ?? 0
    }

    /// The oldest Ready step of the agent. Inside a write, the row is locked (`FOR UPDATE
    /// SKIP LOCKED`): the claim that follows updates it, and a claimer that does not hold
    /// the write lock (none today) would pass over it rather than wait.
    func nextClaimable(agent: ResourceID, at now: Timestamp) throws(StoreError) -> StepRecord? {
        try steps(
            """
            SELECT \(Self.stepColumns) FROM run_steps
            WHERE state = 'Ready' AND namespace = $1 AND agent = $2 AND ready_at <= $3
            ORDER BY ready_at, run_id, idx LIMIT 1\(isWritable ? " FOR UPDATE SKIP LOCKED" : "")
            """, [.text(agent.namespace), .text(agent.name), .int(now.milliseconds)], intent: "find the next task of \(agent)"
        ).first
    }

    func runningSteps(agent: ResourceID?) throws(StoreError) -> [StepRecord] {
        try steps(
            """
            SELECT \(Self.stepColumns) FROM run_steps
            WHERE state = 'Running'\(agent == nil ? "" : " AND namespace = $1 AND agent = $2") ORDER BY run_id, idx
            """, agent.map { [.text($0.namespace), .text($0.name)] } ?? [], intent: "find the tasks in flight")
    }

    /// When a step is due, as the index `run_steps_due` has it (the same expression, or
    /// the planner does not use it): a Running step at the earlier of its lease and its
    /// deadline (`LEAST` passes over a NULL), a gate waiting for approval at its deadline.
    static let due = "CASE WHEN state = 'Running' THEN LEAST(lease_expires_at, deadline) ELSE deadline END"

    func dueSteps(at now: Timestamp, limit: Int) throws(StoreError) -> [StepRecord] {
        try steps(
            """
            SELECT \(Self.stepColumns) FROM run_steps WHERE state IN ('Running', 'WaitingApproval') AND (\(Self.due)) <= $1
            ORDER BY run_id, idx LIMIT $2
            """, [.int(now.milliseconds), .int(max(limit, 0))], intent: "find overdue steps")
    }

    func nextDue() throws(StoreError) -> Timestamp? {
        let found = try connection().query(
            """
            SELECT min(\(Self.due))::bigint FROM run_steps WHERE state IN ('Running', 'WaitingApproval')
            """, intent: "find the next deadline")
        return try found.first?.optionalInt64(0).map(Timestamp.init(milliseconds:))
    }

    func pendingApprovals(namespace: String?) throws(StoreError) -> [StepRecord] {
        try steps(
            """
            SELECT \(Self.stepColumns) FROM run_steps WHERE state = 'WaitingApproval' \(namespace == nil ? "" : "AND namespace = $1")
            ORDER BY started_at, run_id, idx
            """, namespace.map { [.text($0)] } ?? [], intent: "list pending approvals")
    }

    private static let valueColumns = "run_id, key, version, value, written_at, step, attempt"

    private static func value(_ row: PostgresRandomAccessRow) throws(StoreError) -> BlackboardValue {
        let runText = try row.text(0)
        guard let run = RunID(runText) else { throw StoreError("a stored blackboard value has a corrupt run id \(runText)") }
        return BlackboardValue(
            run: run, key: try row.text(1), version: try row.int(2), value: try row.text(3),
            writtenAt: Timestamp(milliseconds: try row.int64(4)), step: try row.optionalText(5),
            attempt: try row.optionalInt64(6).map(Int.init))
    }

    func value(of run: RunID, key: String) throws(StoreError) -> BlackboardValue? {
        let found = try connection().query(
            "SELECT \(Self.valueColumns) FROM run_values WHERE run_id = $1 AND key = $2 ORDER BY version DESC LIMIT 1",
            [.text(run.rawValue), .text(key)], intent: "read \(key) of run \(run)")
        return try found.first.map { row throws(StoreError) in try Self.value(row) }
    }

    func values(of run: RunID) throws(StoreError) -> [BlackboardValue] {
        var values: [BlackboardValue] = []
        for row in try connection().query(
            "SELECT \(Self.valueColumns) FROM run_values WHERE run_id = $1 ORDER BY key, version", [.text(run.rawValue)],
            intent: "read the blackboard of run \(run)")
        {
            values.append(try Self.value(row))
        }
        return values
    }

    func attempts(of run: RunID) throws(StoreError) -> [AttemptRecord] {
        var attempts: [AttemptRecord] = []
        for row in try connection().query(
            """
            SELECT run_id, step, attempt, namespace, agent, started_at, ended_at, outcome, error
            FROM run_attempts WHERE run_id = $1
            """, [.text(run.rawValue)], intent: "read the attempts of run \(run)")
        {
            let runText = try row.text(0)
            guard let id = RunID(runText), let outcome = AttemptRecord.Outcome(rawValue: try row.text(7)) else {
                throw StoreError("a stored attempt of run \(runText) is corrupt")
            }
            attempts.append(
                AttemptRecord(
                    run: id, step: try row.text(1), attempt: try row.int(2),
                    agent: ResourceID(kind: ResourceKind.agent.rawValue, namespace: try row.text(3), name: try row.text(4)),
                    startedAt: Timestamp(milliseconds: try row.int64(5)),
                    endedAt: try row.optionalInt64(6).map(Timestamp.init(milliseconds:)), outcome: outcome, error: try row.optionalText(8)))
        }
        return AttemptRecord.reported(stored: attempts, steps: try steps(of: run))
    }

    func cronSlot(workflow: ResourceID, cron: String) throws(StoreError) -> CronSlotRecord? {
        let found = try connection().query(
            "SELECT slot, run_id FROM cron_slots WHERE namespace = $1 AND workflow = $2 AND cron = $3",
            [.text(workflow.namespace), .text(workflow.name), .text(cron)], intent: "read the last cron slot of \(workflow)")
        guard let row = found.first else { return nil }
        return CronSlotRecord(
            workflow: workflow, cron: cron, slot: Timestamp(milliseconds: try row.int64(0)),
            run: try row.optionalText(1).flatMap(RunID.init))
    }

    func spend(of run: RunID) throws(StoreError) -> [String: Charge] {
        var spend: [String: Charge] = [:]
        for row in try connection().query(
            """
            SELECT step, coalesce(sum(usd), 0)::float8, coalesce(sum(prompt_tokens + completion_tokens), 0)::float8 FROM ledger
            WHERE run = $1 AND step IS NOT NULL GROUP BY step
            """, [.text(run.rawValue)], intent: "sum the spend of run \(run)")
        {
            spend[try row.text(0)] = Charge(usd: try row.double(1), tokens: Int(clamping: Int64(try row.double(2))))
        }
        return spend
    }

    // MARK: Writing

    /// A write; of a table of the `runs` topic unless `counted` is false (the cron slots,
    /// which no one waits on).
    private func write(_ sql: String, _ binds: [PostgresValue], counted: Bool = true, intent: String) throws(StoreError) {
        if counted { wroteRunTables() }
        try connection(writing: true).execute(sql, binds, intent: intent)
    }

    func insert(_ run: RunRecord, plan: RunPlan, steps: [StepRecord]) throws(StoreError) {
        var cron: String?
        var slot: Int64?
        if case .schedule(let expression, let at) = run.trigger {
            cron = expression
            slot = at.milliseconds
        }
        try write(
            "INSERT INTO runs (\(Self.runColumns), plan) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            [
                .text(run.id.rawValue), .text(run.workflow.namespace), .text(run.workflow.name), .int(run.generation),
                .text(run.phase.rawValue), .text(run.trigger.name), .text(cron), .int(slot), .text(run.input),
                .int(run.createdAt.milliseconds), .text(run.createdBy), .int(run.endedAt?.milliseconds), .text(run.error),
                .text(plan.json),
            ], intent: "store run \(run.id)")
        for step in steps {
            try write(
                """
                INSERT INTO run_steps (\(Self.stepColumns))
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                """,
                [
                    .text(run.id.rawValue), .int(step.index), .text(step.id), .text(step.agent?.namespace ?? run.workflow.namespace),
                    .text(step.agent?.name),
                ] + Self.state(of: step), intent: "store step \(step.id) of run \(run.id)")
        }
    }

    /// Parameters 6 to 17 of a step row: everything that changes.
    private static func state(of step: StepRecord) -> [PostgresValue] {
        [
            .text(step.state.rawValue), .int(step.waitingFor), .int(step.attempt), .int(step.readyAt?.milliseconds),
            .int(step.leaseExpiresAt?.milliseconds), .int(step.deadline?.milliseconds), .int(step.startedAt?.milliseconds),
            .int(step.endedAt?.milliseconds), .text(step.error), .text(step.decidedBy), .text(step.reason), .text(step.claimant),
        ]
    }

    func update(_ run: RunRecord) throws(StoreError) {
        try write(
            "UPDATE runs SET phase = $2, ended_at = $3, error = $4 WHERE id = $1",
            [.text(run.id.rawValue), .text(run.phase.rawValue), .int(run.endedAt?.milliseconds), .text(run.error)],
            intent: "update run \(run.id)")
    }

    func update(_ step: StepRecord) throws(StoreError) {
        try write(
            """
            UPDATE run_steps SET agent = $3, state = $4, waiting = $5, attempt = $6, ready_at = $7, lease_expires_at = $8, deadline = $9,
                started_at = $10, ended_at = $11, error = $12, decided_by = $13, reason = $14, claimant = $15
            WHERE run_id = $1 AND idx = $2
            """,
            // A delegated sub-task gets its agent when its planner names one.
            [.text(step.run.rawValue), .int(step.index), .text(step.agent?.name)] + Self.state(of: step),
            intent: "update step \(step.id) of run \(step.run)")
    }

    func put(_ value: BlackboardValue) throws(StoreError) -> Int {
        wroteRunTables()
        let inserted = try connection(writing: true).query(
            """
            INSERT INTO run_values (\(Self.valueColumns))
            SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5::text, $6::bigint FROM run_values WHERE run_id = $1 AND key = $2
            RETURNING version
            """,
            [
                .text(value.run.rawValue), .text(value.key), .text(value.value), .int(value.writtenAt.milliseconds), .text(value.step),
                .int(value.attempt.map(Int64.init)),
            ], intent: "write \(value.key) of run \(value.run)")
        return try inserted.first?.int(0) ?? 1
    }

    func put(_ attempt: AttemptRecord) throws(StoreError) {
        try write(
            """
            INSERT INTO run_attempts (run_id, step, attempt, namespace, agent, started_at, ended_at, outcome, error)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (run_id, step, attempt) DO UPDATE SET
                ended_at = excluded.ended_at, outcome = excluded.outcome, error = excluded.error
            """,
            [
                .text(attempt.run.rawValue), .text(attempt.step), .int(attempt.attempt), .text(attempt.agent.namespace),
                .text(attempt.agent.name), .int(attempt.startedAt.milliseconds), .int(attempt.endedAt?.milliseconds),
                .text(attempt.outcome.rawValue), .text(attempt.error),
            ], intent: "record attempt \(attempt.attempt) of step \(attempt.step) of run \(attempt.run)")
    }

    func put(_ slot: CronSlotRecord) throws(StoreError) {
        try write(
            """
            INSERT INTO cron_slots (namespace, workflow, cron, slot, run_id) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (namespace, workflow, cron) DO UPDATE SET slot = excluded.slot, run_id = excluded.run_id
            """,
            [
                .text(slot.workflow.namespace), .text(slot.workflow.name), .text(slot.cron), .int(slot.slot.milliseconds),
                .text(slot.run?.rawValue),
            ],
            counted: false, intent: "record the cron slot of \(slot.workflow)")
    }
}
