public import OrlCore

/// Runs in the same database as the rest of the state (migration 4): a run operation
/// and the events it records commit in one transaction.
extension SQLiteStateStore: RunStore {
    public func readRuns<T>(_ body: (any RunReader) throws(StoreError) -> T) throws(StoreError) -> T {
        try transaction(.deferred, intent: "read the runs", body)
    }

    public func writeRuns<T>(_ body: (any RunWriter) throws(StoreError) -> T) throws(StoreError) -> T {
        guard let own = ownCommits.withLock({ $0 }) else { return try transaction(.immediate, intent: "write the runs", body) }
        // A transaction that wrote runs moves the topic by one, under the write lock: from
        // the generation before it to the one its count returned, no other writer's move
        // between them.
        var moved: Int64?
        let result = try transaction(.immediate, intent: "write the runs") { (access: SQLStateAccess) throws(StoreError) -> T in
            let result = try body(access)
            moved = try access.countRunChanges()
            return result
        }
        if let moved { own.committed(.runs, from: moved - 1, to: moved) }
        return result
    }

    public func writeRunsIfFree<T>(_ body: (any RunWriter) throws(StoreError) -> T) throws(StoreError) -> T? {
        let own = ownCommits.withLock { $0 }
        var moved: Int64?
        let result = try transactionIfFree(intent: "write the runs") { (access: SQLStateAccess) throws(StoreError) -> T in
            let result = try body(access)
            if own != nil { moved = try access.countRunChanges() }
            return result
        }
        if let own, let moved, result != nil { own.committed(.runs, from: moved - 1, to: moved) }
        return result
    }
}

/// Parsed plans, by database and run. A plan never changes once stored, so a cached
/// one is never stale, and parsing a thousand-step plan for every claim would cost
/// more than the claim.
private let planCache = Locked<[String: RunPlan]>([:])
private let planCacheLimit = 256
/// Runs as last read or stored, by the plan cache's key: a run's fields never change but
/// its phase, end and error, which `cachedRun`'s callers take only from a step that
/// shows the run Running. Each completion read the run row again for nothing else.
private let runCache = Locked<[String: RunRecord]>([:])

extension SQLStateAccess {
    /// The key of a run's plan in the cache: plans are by database (a process may open
    /// several) and run.
    fileprivate static func planKey(_ database: Database, _ run: RunID) -> String { planKey(database.path, run) }

    private static func planKey(_ path: String, _ run: RunID) -> String { path + "\u{0}" + run.rawValue }

    fileprivate static func cache(_ plan: RunPlan, at key: String) {
        planCache.withLock { cache in
            if cache.count >= planCacheLimit { cache.removeAll() }
            cache[key] = plan
        }
    }

    fileprivate static func cache(_ run: RunRecord, at key: String) {
        runCache.withLock { cache in
            if cache.count >= planCacheLimit { cache.removeAll() }
            cache[key] = run
        }
    }

    /// The plan the cache holds for `run` of the database at `path`, if any.
    static func cachedPlan(path: String, run: RunID) -> RunPlan? { planCache.withLock { $0[planKey(path, run)] } }

    /// The transaction committed: the plans of the runs it inserted are known as they are
    /// stored (`RunPlan(json: plan.json) == plan`), and the runs it inserted or read as
    /// they are.
    func committed() {
        for (key, run, plan) in toCache {
            if let plan { Self.cache(plan, at: key) }
            Self.cache(run, at: key)
        }
        toCache = []
    }
}

extension SQLStateAccess: RunWriter {
    private static let runColumns =
        "id, namespace, workflow, generation, phase, trigger, cron, slot, input, created_at, created_by, ended_at, error"

    private static func run(_ row: Statement) throws(StoreError) -> RunRecord {
        let id = row.text(0)
        guard let runID = RunID(id), let phase = RunPhase(rawValue: row.text(4)) else {
            throw StoreError("the stored run \(id) is corrupt (id or phase)")
        }
        let trigger: RunTrigger
        if row.text(5) == "schedule", let cron = row.optionalText(6), let slot = row.optionalInt64(7) {
            trigger = .schedule(cron: cron, slot: Timestamp(milliseconds: slot))
        } else {
            trigger = .manual
        }
        return RunRecord(
            id: runID, workflow: ResourceID(kind: ResourceKind.workflow.rawValue, namespace: row.text(1), name: row.text(2)),
            generation: row.int(3), phase: phase, trigger: trigger, input: row.text(8), createdAt: Timestamp(milliseconds: row.int64(9)),
            createdBy: row.text(10), endedAt: row.optionalInt64(11).map(Timestamp.init(milliseconds:)), error: row.optionalText(12))
    }

    static let stepColumns =
        "run_id, idx, step, namespace, agent, state, waiting, attempt, ready_at, lease_expires_at, deadline, started_at, ended_at, error, decided_by, reason, claimant"

    private static func step(_ row: Statement) throws(StoreError) -> StepRecord {
        guard let run = RunID(row.text(0)), let state = StepState(rawValue: row.text(5)) else {
            throw StoreError("a stored step of run \(row.text(0)) is corrupt (run id or state)")
        }
        func time(_ column: Int32) -> Timestamp? { row.optionalInt64(column).map(Timestamp.init(milliseconds:)) }
        return StepRecord(
            run: run, index: row.int(1), id: row.text(2),
            agent: row.optionalText(4).map { ResourceID(kind: ResourceKind.agent.rawValue, namespace: row.text(3), name: $0) },
            state: state, waitingFor: row.int(6), attempt: row.int(7), readyAt: time(8), leaseExpiresAt: time(9), deadline: time(10),
            startedAt: time(11), endedAt: time(12), error: row.optionalText(13), decidedBy: row.optionalText(14),
            reason: row.optionalText(15), claimant: row.optionalText(16))
    }

    /// `intent` is only formatted when a statement fails: a claim or a completion runs a
    /// dozen statements, and formatting each one's intent cost more than some of them.
    private func rows<R>(
        _ sql: String, intent: @autoclosure () -> String, bind: (Statement) throws(StoreError) -> Void,
        _ read: (Statement) throws(StoreError) -> R
    ) throws(StoreError) -> [R] {
        try connection().withStatement(sql, intent: intent()) { statement throws(StoreError) in
            try bind(statement)
            var result: [R] = []
            while try statement.step(intent: intent()) { result.append(try read(statement)) }
            return result
        }
    }

    // MARK: Reading

    func run(_ id: RunID) throws(StoreError) -> RunRecord? {
        let run = try rows(Self.runByID, intent: "read run \(id)") { s throws(StoreError) in
            try s.bind(1, id.rawValue)
        } _: { s throws(StoreError) in
            try Self.run(s)
        }.first
        if let run { toCache.append((Self.planKey(try connection(), id), run, nil)) }
        return run
    }

    func cachedRun(_ id: RunID) -> (run: RunRecord, plan: RunPlan)? {
        guard let key = try? Self.planKey(connection(), id), let plan = planCache.withLock({ $0[key] }),
            let run = runCache.withLock({ $0[key] })
        else { return nil }
        return (run, plan)
    }

    // The statements a claim or a completion runs, made once: their text is also the
    // key of the connection's prepared statement.
    private static let runByID = "SELECT \(runColumns) FROM runs WHERE id = ?1"
    private static let stepByIndex = "SELECT \(stepColumns) FROM run_steps WHERE run_id = ?1 AND idx = ?2"
    static let nextClaimableStep = """
        SELECT \(stepColumns) FROM run_steps
        WHERE state = 'Ready' AND namespace = ?1 AND agent = ?2 AND ready_at <= ?3
        ORDER BY ready_at, run_id, idx LIMIT 1
        """
    /// Named: without statistics SQLite takes the primary key for `run_id = ?`, which reads
    /// every step of the run, ended ones included (a whole chain at its end).
    static let anyOpenStep =
        "SELECT EXISTS (SELECT 1 FROM run_steps INDEXED BY run_steps_open WHERE run_id = ?1 AND state IN \(openStates))"
    private static let updateStep = """
        UPDATE run_steps SET agent = ?5, state = ?6, waiting = ?7, attempt = ?8, ready_at = ?9, lease_expires_at = ?10, deadline = ?11,
            started_at = ?12, ended_at = ?13, error = ?14, decided_by = ?15, reason = ?16, claimant = ?17
        WHERE run_id = ?1 AND idx = ?2
        """
    private static let valueByKey =
        "SELECT \(valueColumns) FROM run_values WHERE run_id = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1"
    private static let insertValue = """
        INSERT INTO run_values (\(valueColumns))
        SELECT ?1, ?2, coalesce(max(version), 0) + 1, ?3, ?4, ?5, ?6 FROM run_values WHERE run_id = ?1 AND key = ?2
        RETURNING version
        """
    private static let upsertAttempt = """
        INSERT INTO run_attempts (run_id, step, attempt, namespace, agent, started_at, ended_at, outcome, error)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
        ON CONFLICT (run_id, step, attempt) DO UPDATE SET
            ended_at = excluded.ended_at, outcome = excluded.outcome, error = excluded.error
        """

    func runs(namespace: String?, workflow: String?, limit: Int) throws(StoreError) -> [RunRecord] {
        var conditions: [String] = []
        if namespace != nil { conditions.append("namespace = ?2") }
        if workflow != nil { conditions.append("workflow = ?3") }
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        return try rows("SELECT \(Self.runColumns) FROM runs \(filter) ORDER BY id DESC LIMIT ?1", intent: "list runs") {
            s throws(StoreError) in
            try s.bind(1, max(limit, 0))
            if let namespace { try s.bind(2, namespace) }
            if let workflow { try s.bind(3, workflow) }
        } _: { s throws(StoreError) in
            try Self.run(s)
        }
    }

    func plan(of run: RunID) throws(StoreError) -> RunPlan {
        let key = Self.planKey(try connection(), run)
        if let cached = planCache.withLock({ $0[key] }) { return cached }
        let text = try rows("SELECT plan FROM runs WHERE id = ?1", intent: "read the plan of run \(run)") { s throws(StoreError) in
            try s.bind(1, run.rawValue)
        } _: { s throws(StoreError) in
            s.text(0)
        }
        guard let text = text.first else { throw StoreError("run \(run) is not in the state") }
        let plan = try RunPlan(json: text)
        Self.cache(plan, at: key)
        return plan
    }

    func step(of run: RunID, index: Int) throws(StoreError) -> StepRecord? {
        try rows(Self.stepByIndex, intent: "read a step of run \(run)") {
            s throws(StoreError) in
            try s.bind(1, run.rawValue)
            try s.bind(2, index)
        } _: { s throws(StoreError) in
            try Self.step(s)
        }.first
    }

    func steps(of run: RunID) throws(StoreError) -> [StepRecord] {
        try rows("SELECT \(Self.stepColumns) FROM run_steps WHERE run_id = ?1 ORDER BY idx", intent: "read the steps of run \(run)") {
            s throws(StoreError) in
            try s.bind(1, run.rawValue)
        } _: { s throws(StoreError) in
            try Self.step(s)
        }
    }

    static let openStates = "('Pending', 'Ready', 'Running', 'WaitingApproval')"

    func openStepCount(of run: RunID) throws(StoreError) -> Int {
        try rows(
            "SELECT count(*) FROM run_steps INDEXED BY run_steps_open WHERE run_id = ?1 AND state IN \(Self.openStates)",
            intent: "count the open steps of run \(run)"
        ) { s throws(StoreError) in
            try s.bind(1, run.rawValue)
        } _: { s throws(StoreError) in
            s.int(0)
        }.first ?? 0
    }

    /// Stops at the first open step: counting them all made each completion of a long
    /// chain read every step still pending after it.
    func hasOpenSteps(of run: RunID) throws(StoreError) -> Bool {
        try rows(Self.anyOpenStep, intent: "look for an open step of run \(run)") { s throws(StoreError) in
            try s.bind(1, run.rawValue)
        } _: { s throws(StoreError) in
            s.int(0) != 0
        }.first ?? false
    }

    func nextClaimable(agent: ResourceID, at now: Timestamp) throws(StoreError) -> StepRecord? {
        try rows(Self.nextClaimableStep, intent: "find the next task of \(agent)") { s throws(StoreError) in
            try s.bind(1, agent.namespace)
            try s.bind(2, agent.name)
            try s.bind(3, now.milliseconds)
        } _: { s throws(StoreError) in
            try Self.step(s)
        }.first
    }

    /// When a step is due, as the index `run_steps_due` has it (the same expression, or
    /// SQLite does not use it): a Running step at the earlier of its lease and its
    /// deadline, a gate waiting for approval at its deadline.
    static let due = """
        CASE WHEN state = 'Running' THEN min(coalesce(lease_expires_at, deadline), coalesce(deadline, lease_expires_at))
        ELSE deadline END
        """
    /// The Running steps are the only ones in `run_steps_due` of that state: the first
    /// term names the index's own condition, so that it may be used.
    static func runningStepsSQL(ofOneAgent: Bool) -> String {
        """
        SELECT \(stepColumns) FROM run_steps INDEXED BY run_steps_due
        WHERE state IN ('Running', 'WaitingApproval') AND state = 'Running'\(ofOneAgent ? " AND namespace = ?1 AND agent = ?2" : "")
        ORDER BY run_id, idx
        """
    }
    /// Named, as the planner without statistics would scan the table.
    static let dueStepsSQL = """
        SELECT \(stepColumns) FROM run_steps INDEXED BY run_steps_due WHERE state IN ('Running', 'WaitingApproval') AND (\(due)) <= ?1
        ORDER BY run_id, idx LIMIT ?2
        """
    static let nextDueSQL = "SELECT min(\(due)) FROM run_steps WHERE state IN ('Running', 'WaitingApproval')"

    func runningSteps(agent: ResourceID?) throws(StoreError) -> [StepRecord] {
        try rows(Self.runningStepsSQL(ofOneAgent: agent != nil), intent: "find the tasks in flight") { s throws(StoreError) in
            if let agent {
                try s.bind(1, agent.namespace)
                try s.bind(2, agent.name)
            }
        } _: { s throws(StoreError) in
            try Self.step(s)
        }
    }

    func dueSteps(at now: Timestamp, limit: Int) throws(StoreError) -> [StepRecord] {
        try rows(Self.dueStepsSQL, intent: "find overdue steps") { s throws(StoreError) in
            try s.bind(1, now.milliseconds)
            try s.bind(2, max(limit, 0))
        } _: { s throws(StoreError) in
            try Self.step(s)
        }
    }

    func nextDue() throws(StoreError) -> Timestamp? {
        try rows(Self.nextDueSQL, intent: "find the next deadline") { _ throws(StoreError) in
        } _: { s throws(StoreError) in
            s.optionalInt64(0)
        }.first?.map(Timestamp.init(milliseconds:))
    }

    func pendingApprovals(namespace: String?) throws(StoreError) -> [StepRecord] {
        try rows(
            """
            SELECT \(Self.stepColumns) FROM run_steps WHERE state = 'WaitingApproval' \(namespace == nil ? "" : "AND namespace = ?1")
            ORDER BY started_at, run_id, idx
            """, intent: "list pending approvals"
        ) { s throws(StoreError) in
            if let namespace { try s.bind(1, namespace) }
        } _: { s throws(StoreError) in
            try Self.step(s)
        }
    }

    private static let valueColumns = "run_id, key, version, value, written_at, step, attempt"

    private static func value(_ row: Statement) throws(StoreError) -> BlackboardValue {
        guard let run = RunID(row.text(0)) else { throw StoreError("a stored blackboard value has a corrupt run id \(row.text(0))") }
        return BlackboardValue(
            run: run, key: row.text(1), version: row.int(2), value: row.text(3), writtenAt: Timestamp(milliseconds: row.int64(4)),
            step: row.optionalText(5), attempt: row.optionalInt64(6).map(Int.init))
    }

    func value(of run: RunID, key: String) throws(StoreError) -> BlackboardValue? {
        try rows(Self.valueByKey, intent: "read \(key) of run \(run)") { s throws(StoreError) in
            try s.bind(1, run.rawValue)
            try s.bind(2, key)
        } _: { s throws(StoreError) in
            try Self.value(s)
        }.first
    }

    func values(of run: RunID) throws(StoreError) -> [BlackboardValue] {
        try rows(
            "SELECT \(Self.valueColumns) FROM run_values WHERE run_id = ?1 ORDER BY key, version",
            intent: "read the blackboard of run \(run)"
        ) { s throws(StoreError) in
            try s.bind(1, run.rawValue)
        } _: { s throws(StoreError) in
            try Self.value(s)
        }
    }

    func attempts(of run: RunID) throws(StoreError) -> [AttemptRecord] {
        let stored = try rows(
            """
            SELECT run_id, step, attempt, namespace, agent, started_at, ended_at, outcome, error
            FROM run_attempts WHERE run_id = ?1
            """, intent: "read the attempts of run \(run)"
        ) { s throws(StoreError) in
            try s.bind(1, run.rawValue)
        } _: { s throws(StoreError) in
            guard let id = RunID(s.text(0)), let outcome = AttemptRecord.Outcome(rawValue: s.text(7)) else {
                throw StoreError("a stored attempt of run \(s.text(0)) is corrupt")
            }
            return AttemptRecord(
                run: id, step: s.text(1), attempt: s.int(2),
                agent: ResourceID(kind: ResourceKind.agent.rawValue, namespace: s.text(3), name: s.text(4)),
                startedAt: Timestamp(milliseconds: s.int64(5)), endedAt: s.optionalInt64(6).map(Timestamp.init(milliseconds:)),
                outcome: outcome, error: s.optionalText(8))
        }
        return AttemptRecord.reported(stored: stored, steps: try steps(of: run))
    }

    func cronSlot(workflow: ResourceID, cron: String) throws(StoreError) -> CronSlotRecord? {
        try rows(
            "SELECT slot, run_id FROM cron_slots WHERE namespace = ?1 AND workflow = ?2 AND cron = ?3",
            intent: "read the last cron slot of \(workflow)"
        ) { s throws(StoreError) in
            try s.bind(1, workflow.namespace)
            try s.bind(2, workflow.name)
            try s.bind(3, cron)
        } _: { s throws(StoreError) in
            CronSlotRecord(
                workflow: workflow, cron: cron, slot: Timestamp(milliseconds: s.int64(0)), run: s.optionalText(1).flatMap(RunID.init))
        }.first
    }

    func spend(of run: RunID) throws(StoreError) -> [String: Charge] {
        var spend: [String: Charge] = [:]
        for (step, charge) in try rows(
            """
            SELECT step, total(usd), total(prompt_tokens + completion_tokens) FROM ledger
            WHERE run = ?1 AND step IS NOT NULL GROUP BY step
            """, intent: "sum the spend of run \(run)",
            bind: { s throws(StoreError) in try s.bind(1, run.rawValue) },
            { s throws(StoreError) in (s.text(0), Charge(usd: s.double(1), tokens: Int(clamping: s.double(2)))) })
        {
            spend[step] = charge
        }
        return spend
    }

    // MARK: Writing

    /// Runs a write; of a table of the `runs` topic unless `counted` is false (the cron
    /// slots, which no one waits on).
    private func run(
        _ sql: String, counted: Bool = true, intent: @autoclosure () -> String, bind: (Statement) throws(StoreError) -> Void
    ) throws(StoreError) {
        if counted { wroteRunTables() }
        try connection(writing: true).withStatement(sql, intent: intent()) { statement throws(StoreError) in
            try bind(statement)
            try statement.run(intent: intent())
        }
    }

    func insert(_ run: RunRecord, plan: RunPlan, steps: [StepRecord]) throws(StoreError) {
        let intent = "store run \(run.id)"
        try self.run(
            "INSERT INTO runs (\(Self.runColumns), plan) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            intent: intent
        ) { s throws(StoreError) in
            try s.bind(1, run.id.rawValue)
            try s.bind(2, run.workflow.namespace)
            try s.bind(3, run.workflow.name)
            try s.bind(4, run.generation)
            try s.bind(5, run.phase.rawValue)
            try s.bind(6, run.trigger.name)
            if case .schedule(let cron, let slot) = run.trigger {
                try s.bind(7, cron)
                try s.bind(8, slot.milliseconds)
            }
            try s.bind(9, run.input)
            try s.bind(10, run.createdAt.milliseconds)
            try s.bind(11, run.createdBy)
            try s.bind(12, run.endedAt?.milliseconds)
            try s.bind(13, run.error)
            try s.bind(14, plan.json)
        }
        toCache.append((Self.planKey(try connection(), run.id), run, plan))
        for step in steps {
            try self.run(
                """
                INSERT INTO run_steps (\(Self.stepColumns))
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                """, intent: "store step \(step.id) of run \(run.id)"
            ) { s throws(StoreError) in
                try s.bind(1, run.id.rawValue)
                try s.bind(2, step.index)
                try s.bind(3, step.id)
                try s.bind(4, step.agent?.namespace ?? run.workflow.namespace)
                try s.bind(5, step.agent?.name)
                try Self.bindState(of: step, to: s)
            }
        }
    }

    /// Parameters 6 to 17 of a step row: everything that changes.
    private static func bindState(of step: StepRecord, to s: Statement) throws(StoreError) {
        try s.bind(6, step.state.rawValue)
        try s.bind(7, step.waitingFor)
        try s.bind(8, step.attempt)
        try s.bind(9, step.readyAt?.milliseconds)
        try s.bind(10, step.leaseExpiresAt?.milliseconds)
        try s.bind(11, step.deadline?.milliseconds)
        try s.bind(12, step.startedAt?.milliseconds)
        try s.bind(13, step.endedAt?.milliseconds)
        try s.bind(14, step.error)
        try s.bind(15, step.decidedBy)
        try s.bind(16, step.reason)
        try s.bind(17, step.claimant)
    }

    func update(_ run: RunRecord) throws(StoreError) {
        try self.run("UPDATE runs SET phase = ?2, ended_at = ?3, error = ?4 WHERE id = ?1", intent: "update run \(run.id)") {
            s throws(StoreError) in
            try s.bind(1, run.id.rawValue)
            try s.bind(2, run.phase.rawValue)
            try s.bind(3, run.endedAt?.milliseconds)
            try s.bind(4, run.error)
        }
        toCache.append((Self.planKey(try connection(), run.id), run, nil))
    }

    func update(_ step: StepRecord) throws(StoreError) {
        try run(Self.updateStep, intent: "update step \(step.id) of run \(step.run)") { s throws(StoreError) in
            try s.bind(1, step.run.rawValue)
            try s.bind(2, step.index)
            // A delegated sub-task gets its agent when its planner names one.
            try s.bind(5, step.agent?.name)
            try Self.bindState(of: step, to: s)
        }
    }

    func put(_ value: BlackboardValue) throws(StoreError) -> Int {
        // The version comes back from the insert (RETURNING): reading the value back for
        // it copied the whole output once more.
        wroteRunTables()
        let version = try connection(writing: true).withStatement(Self.insertValue, intent: "write \(value.key) of run \(value.run)") {
            s throws(StoreError) -> Int in
            try s.bind(1, value.run.rawValue)
            try s.bind(2, value.key)
            try s.bind(3, value.value)
            try s.bind(4, value.writtenAt.milliseconds)
            try s.bind(5, value.step)
            try s.bind(6, value.attempt.map(Int64.init))
            var version = 1
            // Stepped to the end: the insert completes on the step that returns SQLITE_DONE.
            while try s.step(intent: "write \(value.key) of run \(value.run)") { version = s.int(0) }
            return version
        }
        return version
    }

    func put(_ attempt: AttemptRecord) throws(StoreError) {
        try run(Self.upsertAttempt, intent: "record attempt \(attempt.attempt) of step \(attempt.step) of run \(attempt.run)") {
            s throws(StoreError) in
            try s.bind(1, attempt.run.rawValue)
            try s.bind(2, attempt.step)
            try s.bind(3, attempt.attempt)
            try s.bind(4, attempt.agent.namespace)
            try s.bind(5, attempt.agent.name)
            try s.bind(6, attempt.startedAt.milliseconds)
            try s.bind(7, attempt.endedAt?.milliseconds)
            try s.bind(8, attempt.outcome.rawValue)
            try s.bind(9, attempt.error)
        }
    }

    func put(_ slot: CronSlotRecord) throws(StoreError) {
        try run(
            """
            INSERT INTO cron_slots (namespace, workflow, cron, slot, run_id) VALUES (?1, ?2, ?3, ?4, ?5)
            ON CONFLICT (namespace, workflow, cron) DO UPDATE SET slot = excluded.slot, run_id = excluded.run_id
            """, counted: false, intent: "record the cron slot of \(slot.workflow)"
        ) { s throws(StoreError) in
            try s.bind(1, slot.workflow.namespace)
            try s.bind(2, slot.workflow.name)
            try s.bind(3, slot.cron)
            try s.bind(4, slot.slot.milliseconds)
            try s.bind(5, slot.run?.rawValue)
        }
    }
}
