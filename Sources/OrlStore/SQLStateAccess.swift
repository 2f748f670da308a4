import OrlCore
import OrlJSON

/// The reader (and, in a `write`, the writer) handed to a transaction's body: the
/// queries, on statements prepared once per connection and reused row after row.
final class SQLStateAccess: StateWriter {
    private var database: Database?
    private let isWritable: Bool

    init(_ database: Database, writable: Bool) {
        self.database = database
        self.isWritable = writable
    }

    /// Called when the transaction ends: a reader kept past its body must not run
    /// statements outside any transaction, nor on a connection another thread now holds.
    func close() { database = nil }

    /// The runs this transaction inserted (with their plans) or read, by the cache's key:
    /// the caches take them once the transaction commits (`committed`), so that the run's
    /// first claim does not parse back the plan its start has just rendered, nor a
    /// completion read the run again. Not before: a run rolled back leaves nothing under
    /// an id a later run could take.
    var toCache: [(key: String, run: RunRecord, plan: RunPlan?)] = []

    /// Whether this transaction wrote a table of the `runs` topic (runs, their steps,
    /// attempts and values, tool approvals) since the topic last moved.
    private var wroteRuns = false

    /// A write to a table of the `runs` topic: the topic moves once, when the transaction
    /// ends (`countRunChanges`). A trigger per row moved it six times in a step's
    /// transaction, each a write of `change_topics` inside the statement.
    func wroteRunTables() { wroteRuns = true }

    /// Moves the `runs` topic once if this transaction wrote runs since it last moved, and
    /// returns the generation it left (nil: nothing to count). Called at the end of every
    /// write transaction (`SQLiteStateStore.transaction`), before its commit.
    func countRunChanges() throws(StoreError) -> Int64? {
        guard wroteRuns else { return nil }
        wroteRuns = false
        let intent = "count the change of the runs"
        return try connection(writing: true).withStatement(
            "UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs' RETURNING generation", intent: intent
        ) { statement throws(StoreError) -> Int64? in
            var generation: Int64?
            // Stepped to the end: the update completes on the step that returns SQLITE_DONE.
            while try statement.step(intent: intent) { generation = statement.int64(0) }
            return generation
        }
    }

    /// Whether this transaction wrote resources or holds (the `resources` topic), or
    /// events (the `events` topic), since the topic last moved.
    private var wroteResources = false
    private var wroteEvents = false

    /// A write of the `resources` and `events` topics' tables by a statement of its own
    /// (an import): each topic moves once, when the transaction ends.
    func wroteResourceAndEventTables() {
        wroteResources = true
        wroteEvents = true
    }

    /// Moves the `resources` and `events` topics, each once, if this transaction wrote
    /// their tables since they last moved: a row trigger moved them at every row, 200,000
    /// writes of `change_topics` in a first apply of 100,000 manifests. Called at the end
    /// of every write transaction (`SQLiteStateStore.transaction`), before its commit.
    func countChanges() throws(StoreError) {
        try countChanges(resources: wroteResources, events: wroteEvents)
    }

    private func countChanges(resources: Bool, events: Bool) throws(StoreError) {
        guard resources || events else { return }
        let topics = [resources ? "resources" : nil, events ? "events" : nil].compactMap { $0 }
        if resources { wroteResources = false }
        if events { wroteEvents = false }
        let intent = "count the change of the \(topics.joined(separator: " and "))"
        let list = topics.map { "'\($0)'" }.joined(separator: ", ")
        // The topics are constants of this code, not input.
        try connection(writing: true).execute(
            "UPDATE change_topics SET generation = generation + 1 WHERE topic IN (\(list))", intent: intent)
    }

    func connection(writing: Bool = false) throws(StoreError) -> Database {
        guard let database else {
            throw StoreError("the state store was used after its read or write ended; use the reader only inside the body")
        }
        guard isWritable || !writing else {
            // A read transaction that writes would need the write lock it did not take,
            // and could fail at once instead of waiting for another writer.
            throw StoreError("the state store was written inside a read; use write instead")
        }
        return database
    }

    // MARK: Reading

    private static let resourceColumns =
        "kind, namespace, name, manifest, spec_hash, generation, resource_version, source, file, line, revision, applied_at, applied_by, code_root"

    /// Listing order: kinds in `ResourceKind` order (what others refer to first), kinds
    /// this binary does not know after them by name, then namespace and name. Computed
    /// from `ResourceKind.allCases`, so the order has one definition and the schema no
    /// rank to migrate when a kind is added.
    private static let listingOrder: String = {
        let ranks = ResourceKind.allCases.enumerated().map { rank, kind in
            "WHEN '\(kind.rawValue.replacing("'", with: "''"))' THEN \(rank)"
        }
        return "ORDER BY CASE kind \(ranks.joined(separator: " ")) ELSE \(ranks.count) END, kind, namespace, name"
    }()

    private static func resource(_ row: Statement) -> StoredResource {
        StoredResource(
            id: ResourceID(kind: row.text(0), namespace: row.text(1), name: row.text(2)),
            manifest: row.text(3),
            specHash: row.text(4),
            generation: row.int(5),
            resourceVersion: row.int(6),
            source: row.text(7),
            file: row.text(8),
            line: row.int(9),
            revision: row.optionalText(10),
            appliedAt: Timestamp(milliseconds: row.int64(11)),
            appliedBy: row.text(12),
            codeRoot: row.optionalText(13)
        )
    }

    func resource(_ id: ResourceID) throws(StoreError) -> StoredResource? {
        let intent = "read \(label(id))"
        return try connection().withStatement(
            "SELECT \(Self.resourceColumns) FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3", intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, id)
            return try statement.step(intent: intent) ? Self.resource(statement) : nil
        }
    }

    func resources(kind: ResourceKind?, namespace: String?) throws(StoreError) -> [StoredResource] {
        var conditions: [String] = []
        if kind != nil { conditions.append("kind = ?1") }
        if namespace != nil { conditions.append("namespace = ?2") }
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let intent = "list resources"
        return try connection().withStatement(
            "SELECT \(Self.resourceColumns) FROM resources \(filter) \(Self.listingOrder)", intent: intent
        ) { statement throws(StoreError) in
            if let kind { try statement.bind(1, kind.rawValue) }
            if let namespace { try statement.bind(2, namespace) }
            var resources: [StoredResource] = []
            while try statement.step(intent: intent) { resources.append(Self.resource(statement)) }
            return resources
        }
    }

    func fingerprint(source: String) throws(StoreError) -> String {
        let intent = "read the fingerprint of \(source)"
        return try connection().withStatement(
            "SELECT count(*), coalesce(sum(resource_version), 0), coalesce(max(applied_at), 0) FROM resources WHERE source = ?1",
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, source)
            guard try statement.step(intent: intent) else { return "" }
            return "\(statement.int64(0)):\(statement.int64(1)):\(statement.int64(2))"
        }
    }

    func digests() throws(StoreError) -> [ResourceID: StoredDigest] {
        let intent = "read the resources' hashes"
        return try connection().withStatement(
            "SELECT kind, namespace, name, manifest_hash, source, code_root, CASE WHEN manifest_hash IS NULL THEN manifest END FROM resources",
            intent: intent
        ) { statement throws(StoreError) in
            var digests: [ResourceID: StoredDigest] = [:]
            while try statement.step(intent: intent) {
                digests[ResourceID(kind: statement.text(0), namespace: statement.text(1), name: statement.text(2))] = StoredDigest(
                    manifestHash: statement.optionalText(3) ?? CanonicalJSON.textHash(statement.text(6)), source: statement.text(4),
                    codeRoot: statement.optionalText(5))
            }
            return digests
        }
    }

    func manifestIndex(source: String) throws(StoreError) -> [UInt8]? {
        let intent = "read the manifest index of \(source)"
        return try connection().withStatement("SELECT data FROM manifest_indexes WHERE source = ?1", intent: intent) {
            statement throws(StoreError) -> [UInt8]? in
            try statement.bind(1, source)
            return try statement.step(intent: intent) ? statement.blob(0) : nil
        }
    }

    /// One statement for every row, each blob decoded where SQLite holds it (no copy).
    func withManifestIndexes(sources: [String], _ body: (Int, UnsafeBufferPointer<UInt8>?) -> Bool) throws(StoreError) {
        let intent = "read a manifest index"
        try connection().withStatement("SELECT data FROM manifest_indexes WHERE source = ?1", intent: intent) {
            statement throws(StoreError) in
            for (i, source) in sources.enumerated() {
                if i > 0 { statement.reset() }
                try statement.bind(1, source)
                let more = try statement.step(intent: intent) ? statement.withBlob(0) { body(i, $0) } : body(i, nil)
                guard more else { return }
            }
        }
    }

    /// The generation of the `resources` topic, moved by every transaction that writes
    /// resources or holds: one row, where the fingerprint would read every resource of the
    /// source.
    func changeMark(source: String) throws(StoreError) -> String {
        // A mark read inside a write (what an apply keeps beside its index) must show the
        // resources it wrote: the topic moves now, not at the commit.
        if isWritable, wroteResources { try countChanges(resources: true, events: false) }
        let intent = "read the resources' change mark"
        return try connection().withStatement("SELECT generation FROM change_topics WHERE topic = 'resources'", intent: intent) {
            statement throws(StoreError) in
            guard try statement.step(intent: intent) else { return "f:" + (try fingerprint(source: source)) }
            return "g:\(statement.int64(0))"
        }
    }

    func inventory(source: String) throws(StoreError) -> [ResourceID] {
        let intent = "read the inventory of \(source)"
        return try connection().withStatement(
            "SELECT kind, namespace, name FROM resources WHERE source = ?1 \(Self.listingOrder)", intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, source)
            var ids: [ResourceID] = []
            while try statement.step(intent: intent) {
                ids.append(ResourceID(kind: statement.text(0), namespace: statement.text(1), name: statement.text(2)))
            }
            return ids
        }
    }

    func history(limit: Int) throws(StoreError) -> [ApplyRecord] {
        let intent = "read the apply history"
        return try connection().withStatement(
            """
            SELECT number, source, revision, applied_at, applied_by, summary, plan, result
            FROM applies ORDER BY number DESC LIMIT ?1
            """,
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, max(limit, 0))
            var records: [ApplyRecord] = []
            while try statement.step(intent: intent) {
                records.append(
                    ApplyRecord(
                        number: statement.int(0),
                        source: statement.text(1),
                        revision: statement.optionalText(2),
                        appliedAt: Timestamp(milliseconds: statement.int64(3)),
                        appliedBy: statement.text(4),
                        summary: statement.text(5),
                        plan: statement.text(6),
                        result: statement.text(7)
                    ))
            }
            return records
        }
    }

    func events(for resource: ResourceID?, limit: Int) throws(StoreError) -> [StoreEvent] {
        let filter =
            resource == nil ? "" : "WHERE resource_kind = ?2 AND resource_namespace = ?3 AND resource_name = ?4"
        let intent = resource.map { "read the events of \(label($0))" } ?? "read the events"
        return try connection().withStatement(
            """
            SELECT number, time, kind, resource_kind, resource_namespace, resource_name, reason, message
            FROM events \(filter) ORDER BY number DESC LIMIT ?1
            """,
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, max(limit, 0))
            if let resource {
                try statement.bind(2, resource.kind)
                try statement.bind(3, resource.namespace)
                try statement.bind(4, resource.name)
            }
            var events: [StoreEvent] = []
            while try statement.step(intent: intent) {
                guard let kind = StoreEvent.Kind(rawValue: statement.text(2)) else {
                    throw StoreError("event \(statement.int(0)) has an unknown kind \(statement.text(2))")
                }
                var subject: ResourceID?
                if let kind = statement.optionalText(3) {
                    subject = ResourceID(kind: kind, namespace: statement.text(4), name: statement.text(5))
                }
                events.append(
                    StoreEvent(
                        number: statement.int(0),
                        time: Timestamp(milliseconds: statement.int64(1)),
                        kind: kind,
                        resource: subject,
                        reason: statement.text(6),
                        message: statement.text(7)
                    ))
            }
            return events
        }
    }

    /// The `status` row: conditions as a JSON array (times in milliseconds), and
    /// `observed_generation` 0 for "none observed" (generations start at 1).
    func status(for resource: ResourceID) throws(StoreError) -> ResourceStatus? {
        let intent = "read the status of \(label(resource))"
        return try connection().withStatement(
            "SELECT conditions, observed_generation, updated_at FROM status WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            intent: intent
        ) { statement throws(StoreError) -> ResourceStatus? in
            try statement.bind(1, resource)
            guard try statement.step(intent: intent) else { return nil }
            let observed = statement.int(1)
            return ResourceStatus(
                conditions: try Self.conditions(statement.text(0), of: resource),
                observedGeneration: observed > 0 ? observed : nil,
                updatedAt: Timestamp(milliseconds: statement.int64(2)))
        }
    }

    private static func conditions(_ json: String, of resource: ResourceID) throws(StoreError) -> [ResourceStatus.Condition] {
        guard let conditions = ResourceStatus.conditions(stored: json) else {
            throw StoreError("the stored status of \(label(resource)) is not a JSON array of conditions")
        }
        return conditions
    }

    // MARK: Writing

    /// Inserts or replaces the resource, every column as given: generations and
    /// versions are the caller's to compute. An upsert, not `INSERT OR REPLACE`, which
    /// would delete the row first and so cascade to its status.
    private static let putSQL = SQL(
        """
        INSERT INTO resources (\(resourceColumns), manifest_hash)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
        ON CONFLICT (kind, namespace, name) DO UPDATE SET
            manifest = excluded.manifest, manifest_hash = excluded.manifest_hash, spec_hash = excluded.spec_hash,
            generation = excluded.generation,
            resource_version = excluded.resource_version, source = excluded.source, file = excluded.file,
            line = excluded.line, revision = excluded.revision, applied_at = excluded.applied_at,
            applied_by = excluded.applied_by, code_root = excluded.code_root
        """)

    func put(_ resource: StoredResource) throws(StoreError) {
        // Made only for an error: a first apply puts every resource.
        func intent() -> String { "store \(label(resource.id))" }
        try connection(writing: true).withStatement(Self.putSQL, intent: intent()) { statement throws(StoreError) in
            try statement.bind(1, resource.id)
            try statement.bind(4, resource.manifest)
            try statement.bind(5, resource.specHash)
            try statement.bind(6, resource.generation)
            try statement.bind(7, resource.resourceVersion)
            try statement.bind(8, resource.source)
            try statement.bind(9, resource.file)
            try statement.bind(10, resource.line)
            try statement.bind(11, resource.revision)
            try statement.bind(12, resource.appliedAt.milliseconds)
            try statement.bind(13, resource.appliedBy)
            try statement.bind(14, resource.codeRoot)
            try statement.bind(15, resource.manifestHash)
            try statement.run(intent: intent())
        }
        wroteResources = true
    }

    func putManifestIndex(source: String, _ data: [UInt8]?) throws(StoreError) {
        let database = try connection(writing: true)
        let intent = "write the manifest index of \(source)"
        guard let data else {
            try database.withStatement("DELETE FROM manifest_indexes WHERE source = ?1", intent: intent) { statement throws(StoreError) in
                try statement.bind(1, source)
                try statement.run(intent: intent)
            }
            return
        }
        try database.withStatement(
            "INSERT INTO manifest_indexes (source, data) VALUES (?1, ?2) ON CONFLICT (source) DO UPDATE SET data = excluded.data",
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, source)
            try statement.bind(2, blob: data)
            try statement.run(intent: intent)
        }
    }

    func delete(_ id: ResourceID) throws(StoreError) {
        if try deleteRow(from: "resources", id, intent: "delete \(label(id))") { wroteResources = true }
    }

    /// Appends the apply; its `number` is ignored: the store numbers applies, never
    /// reusing a number.
    func record(_ apply: ApplyRecord) throws(StoreError) -> Int {
        let intent = "record the apply of \(apply.source)"
        let database = try connection(writing: true)
        try database.withStatement(
            """
            INSERT INTO applies (source, revision, applied_at, applied_by, summary, plan, result)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
            """,
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, apply.source)
            try statement.bind(2, apply.revision)
            try statement.bind(3, apply.appliedAt.milliseconds)
            try statement.bind(4, apply.appliedBy)
            try statement.bind(5, apply.summary)
            try statement.bind(6, apply.plan)
            try statement.bind(7, apply.result)
            try statement.run(intent: intent)
        }
        return Int(database.lastInsertedRowID)
    }

    private static let appendSQL = SQL(
        """
        INSERT INTO events (time, kind, resource_kind, resource_namespace, resource_name, reason, message)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
        """)

    /// Appends the event; its `number` is ignored, as for applies.
    func append(_ event: StoreEvent) throws(StoreError) {
        func intent() -> String { "record the event \(event.reason)" }
        try connection(writing: true).withStatement(Self.appendSQL, intent: intent()) { statement throws(StoreError) in
            try statement.bind(1, event.time.milliseconds)
            try statement.bind(2, event.kind.rawValue)
            try statement.bind(3, event.resource?.kind)
            try statement.bind(4, event.resource?.namespace)
            try statement.bind(5, event.resource?.name)
            try statement.bind(6, event.reason)
            try statement.bind(7, event.message)
            try statement.run(intent: intent())
        }
        wroteEvents = true
    }

    /// Replaces the resource's status row. `phase` keeps kstatus' summary of the
    /// conditions against their own generation, for people reading the database.
    func putStatus(_ status: ResourceStatus, for resource: ResourceID) throws(StoreError) {
        let intent = "store the status of \(label(resource))"
        try connection(writing: true).withStatement(
            """
            INSERT INTO status (kind, namespace, name, phase, conditions, observed_generation, updated_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
            ON CONFLICT (kind, namespace, name) DO UPDATE SET
                phase = excluded.phase, conditions = excluded.conditions,
                observed_generation = excluded.observed_generation, updated_at = excluded.updated_at
            """,
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, resource)
            try statement.bind(4, status.summary(generation: status.observedGeneration ?? 1))
            try statement.bind(5, status.storedConditions)
            try statement.bind(6, status.observedGeneration ?? 0)
            try statement.bind(7, status.updatedAt.milliseconds)
            do throws(StoreError) {
                try statement.run(intent: intent)
            } catch {
                guard try self.resource(resource) == nil else { throw error }
                throw StoreError("cannot store the status of \(label(resource)): it is not in the state")
            }
        }
    }
}

// MARK: Supervision

extension SQLStateAccess {
    private static let supervisionColumns =
        "kind, namespace, name, pid, start_time, launch_hash, token_digest, started_at, restarts, crashes, last_exit, exited_at, node, node_generation"

    private static func supervision(_ row: Statement) throws(StoreError) -> SupervisionRecord {
        let agent = ResourceID(kind: row.text(0), namespace: row.text(1), name: row.text(2))
        var process: ProcessIdentity?
        if let pid = row.optionalInt64(3), let startTime = row.optionalInt64(4) {
            guard let pid = Int32(exactly: pid), startTime >= 0 else {
                throw StoreError("the stored supervision of \(label(agent)) has an invalid process identity")
            }
            process = ProcessIdentity(pid: pid, startTime: UInt64(startTime))
        }
        var lastExit: ProcessExit?
        if let exit = row.optionalText(10) {
            guard let parsed = ProcessExit(stored: exit) else {
                throw StoreError("the stored supervision of \(label(agent)) has an invalid last exit \(exit)")
            }
            lastExit = parsed
        }
        return SupervisionRecord(
            agent: agent, process: process, launchHash: row.optionalText(5), tokenDigest: row.optionalText(6),
            startedAt: row.optionalInt64(7).map(Timestamp.init(milliseconds:)), restarts: row.int(8), crashes: row.int(9),
            lastExit: lastExit, exitedAt: row.optionalInt64(11).map(Timestamp.init(milliseconds:)),
            node: row.optionalText(12).map { Assignment(node: $0, generation: row.optionalInt64(13) ?? 0) })
    }

    func supervision(for agent: ResourceID) throws(StoreError) -> SupervisionRecord? {
        let intent = "read the supervision of \(label(agent))"
        return try connection().withStatement(
            "SELECT \(Self.supervisionColumns) FROM supervision WHERE kind = ?1 AND namespace = ?2 AND name = ?3", intent: intent
        ) { statement throws(StoreError) -> SupervisionRecord? in
            try statement.bind(1, agent)
            return try statement.step(intent: intent) ? try Self.supervision(statement) : nil
        }
    }

    func allSupervision() throws(StoreError) -> [SupervisionRecord] {
        let intent = "read the supervision records"
        return try connection().withStatement(
            "SELECT \(Self.supervisionColumns) FROM supervision ORDER BY namespace, name, kind", intent: intent
        ) { statement throws(StoreError) in
            var records: [SupervisionRecord] = []
            while try statement.step(intent: intent) { records.append(try Self.supervision(statement)) }
            return records
        }
    }

    func putSupervision(_ record: SupervisionRecord) throws(StoreError) {
        let intent = "store the supervision of \(label(record.agent))"
        // A record made on a node's behalf lands only while that node holds the lease.
        if let node = record.node {
            _ = try SQLNodes.requireLease(
                NodeLease(node: node.node, generation: node.generation, expiresAt: Timestamp(milliseconds: 0)), connection(writing: true))
        }
        try connection(writing: true).withStatement(
            """
            INSERT INTO supervision (\(Self.supervisionColumns))
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
            ON CONFLICT (kind, namespace, name) DO UPDATE SET
                pid = excluded.pid, start_time = excluded.start_time, launch_hash = excluded.launch_hash,
                token_digest = excluded.token_digest, started_at = excluded.started_at, restarts = excluded.restarts,
                crashes = excluded.crashes, last_exit = excluded.last_exit, exited_at = excluded.exited_at,
                node = excluded.node, node_generation = excluded.node_generation
            """,
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(13, record.node?.node)
            try statement.bind(14, record.node?.generation)
            try statement.bind(1, record.agent)
            try statement.bind(4, record.process.map { Int64($0.pid) })
            try statement.bind(5, record.process.map { Int64(clamping: $0.startTime) })
            try statement.bind(6, record.launchHash)
            try statement.bind(7, record.tokenDigest)
            try statement.bind(8, record.startedAt?.milliseconds)
            try statement.bind(9, record.restarts)
            try statement.bind(10, record.crashes)
            try statement.bind(11, record.lastExit?.stored)
            try statement.bind(12, record.exitedAt?.milliseconds)
            try statement.run(intent: intent)
        }
    }

    func deleteSupervision(for agent: ResourceID) throws(StoreError) {
        try deleteRow(from: "supervision", agent, intent: "forget the supervision of \(label(agent))")
    }
}

// MARK: Holds

extension SQLStateAccess {
    func holds() throws(StoreError) -> [UserHold] {
        let intent = "read the suspended agents"
        return try connection().withStatement(
            "SELECT kind, namespace, name, held_at, held_by FROM holds ORDER BY namespace, name, kind", intent: intent
        ) { statement throws(StoreError) in
            var holds: [UserHold] = []
            while try statement.step(intent: intent) {
                holds.append(
                    UserHold(
                        agent: ResourceID(kind: statement.text(0), namespace: statement.text(1), name: statement.text(2)),
                        at: Timestamp(milliseconds: statement.int64(3)), by: statement.text(4)))
            }
            return holds
        }
    }

    func putHold(_ hold: UserHold) throws(StoreError) {
        let intent = "suspend \(label(hold.agent))"
        try connection(writing: true).withStatement(
            """
            INSERT INTO holds (kind, namespace, name, held_at, held_by) VALUES (?1, ?2, ?3, ?4, ?5)
            ON CONFLICT (kind, namespace, name) DO UPDATE SET held_at = excluded.held_at, held_by = excluded.held_by
            """,
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, hold.agent)
            try statement.bind(4, hold.at.milliseconds)
            try statement.bind(5, hold.by)
            try statement.run(intent: intent)
        }
        wroteResources = true
    }

    func deleteHold(for agent: ResourceID) throws(StoreError) {
        if try deleteRow(from: "holds", agent, intent: "resume \(label(agent))") { wroteResources = true }
    }

    /// Deletes the row keyed by a resource from `table`; a missing row is not an error.
    /// Whether a row was deleted: deleting none moves no change topic.
    @discardableResult
    fileprivate func deleteRow(from table: String, _ id: ResourceID, intent: String) throws(StoreError) -> Bool {
        let database = try connection(writing: true)
        return try database.withStatement(
            "DELETE FROM \(table) WHERE kind = ?1 AND namespace = ?2 AND name = ?3", intent: intent
        ) { statement throws(StoreError) -> Bool in
            try statement.bind(1, id)
            try statement.run(intent: intent)
            return database.changes > 0
        }
    }
}

// MARK: Ledger

extension SQLStateAccess {
    private static let ledgerColumns =
        "number, time, kind, namespace, name, model, prompt_tokens, completion_tokens, usd, latency_ms, request_id, outcome, run, step"

    func append(_ entries: [LedgerEntry]) throws(StoreError) {
        let intent = "record model calls in the ledger"
        try connection(writing: true).withStatement(
            """
            INSERT INTO ledger (time, kind, namespace, name, model, prompt_tokens, completion_tokens, usd, latency_ms,
                request_id, outcome, run, step)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
            """,
            intent: intent
        ) { statement throws(StoreError) in
            for entry in entries {
                statement.reset()
                try statement.bind(1, entry.time.milliseconds)
                try statement.bind(2, entry.agent.kind)
                try statement.bind(3, entry.agent.namespace)
                try statement.bind(4, entry.agent.name)
                try statement.bind(5, entry.model)
                try statement.bind(6, entry.usage.prompt)
                try statement.bind(7, entry.usage.completion)
                try statement.bind(8, entry.usd)
                try statement.bind(9, entry.latencyMilliseconds)
                try statement.bind(10, entry.requestID)
                try statement.bind(11, entry.outcome)
                try statement.bind(12, entry.run)
                try statement.bind(13, entry.step)
                try statement.run(intent: intent)
            }
        }
    }

    func ledger(_ query: LedgerQuery) throws(StoreError) -> [LedgerEntry] {
        let intent = "read the ledger"
        var sql = "SELECT \(Self.ledgerColumns) FROM ledger WHERE time >= ?1"
        if query.agent != nil { sql += " AND namespace = ?2 AND name = ?3" }
        sql += " ORDER BY number DESC LIMIT ?4"
        return try connection().withStatement(sql, intent: intent) { statement throws(StoreError) in
            try statement.bind(1, query.since?.milliseconds ?? Int64.min)
            if let agent = query.agent {
                try statement.bind(2, agent.namespace)
                try statement.bind(3, agent.name)
            }
            try statement.bind(4, query.limit)
            var entries: [LedgerEntry] = []
            while try statement.step(intent: intent) {
                entries.append(
                    LedgerEntry(
                        number: statement.int(0), time: Timestamp(milliseconds: statement.int64(1)),
                        agent: ResourceID(kind: statement.text(2), namespace: statement.text(3), name: statement.text(4)),
                        model: statement.text(5), usage: TokenUsage(prompt: statement.int(6), completion: statement.int(7)),
                        usd: statement.double(8), latencyMilliseconds: statement.int(9), requestID: statement.text(10),
                        outcome: statement.text(11), run: statement.optionalText(12), step: statement.optionalText(13)))
            }
            return entries
        }
    }

    func spend(since: Timestamp) throws(StoreError) -> [ResourceID: Charge] {
        let intent = "sum the ledger"
        return try connection().withStatement(
            """
            SELECT kind, namespace, name, total(usd), total(prompt_tokens + completion_tokens)
            FROM ledger WHERE time >= ?1 GROUP BY kind, namespace, name
            """, intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, since.milliseconds)
            var spend: [ResourceID: Charge] = [:]
            while try statement.step(intent: intent) {
                spend[ResourceID(kind: statement.text(0), namespace: statement.text(1), name: statement.text(2))] = Charge(
                    usd: statement.double(3), tokens: Int(clamping: statement.double(4)))
            }
            return spend
        }
    }
}

// MARK: Secrets

extension SQLStateAccess {
    func secrets(namespace: String?) throws(StoreError) -> [SealedSecret] {
        let intent = "read the vault's secrets"
        let filter = namespace == nil ? "" : "WHERE namespace = ?1"
        return try connection().withStatement(
            "SELECT namespace, name, box, key_check, size, updated_at, updated_by FROM secrets \(filter) ORDER BY namespace, name",
            intent: intent
        ) { statement throws(StoreError) in
            if let namespace { try statement.bind(1, namespace) }
            var secrets: [SealedSecret] = []
            while try statement.step(intent: intent) {
                secrets.append(
                    SealedSecret(
                        id: SecretID(namespace: statement.text(0), name: statement.text(1)), box: statement.blob(2),
                        keyCheck: statement.text(3), size: statement.int(4), updatedAt: Timestamp(milliseconds: statement.int64(5)),
                        updatedBy: statement.text(6)))
            }
            return secrets
        }
    }

    func putSecret(_ secret: SealedSecret) throws(StoreError) {
        let intent = "store \(secret.id)"
        try connection(writing: true).withStatement(
            """
            INSERT INTO secrets (namespace, name, box, key_check, size, updated_at, updated_by)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
            ON CONFLICT (namespace, name) DO UPDATE SET
                box = excluded.box, key_check = excluded.key_check, size = excluded.size,
                updated_at = excluded.updated_at, updated_by = excluded.updated_by
            """,
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, secret.id.namespace)
            try statement.bind(2, secret.id.name)
            try statement.bind(3, blob: secret.box)
            try statement.bind(4, secret.keyCheck)
            try statement.bind(5, secret.size)
            try statement.bind(6, secret.updatedAt.milliseconds)
            try statement.bind(7, secret.updatedBy)
            try statement.run(intent: intent)
        }
    }

    func deleteSecret(_ id: SecretID) throws(StoreError) {
        let intent = "delete \(id)"
        try connection(writing: true).withStatement("DELETE FROM secrets WHERE namespace = ?1 AND name = ?2", intent: intent) {
            statement throws(StoreError) in
            try statement.bind(1, id.namespace)
            try statement.bind(2, id.name)
            try statement.run(intent: intent)
        }
    }
}

// MARK: Sources

extension SQLStateAccess {
    private static let sourceColumns =
        "name, url, ref, path, suspended_at, suspended_by, last_applied, last_applied_at, last_attempted, last_attempted_at, result, message, failures"

    private static func source(_ row: Statement) throws(StoreError) -> SourceRecord {
        var result: SourceRecord.Result?
        if let text = row.optionalText(10) {
            guard let parsed = SourceRecord.Result(rawValue: text) else {
                throw StoreError("the stored source \(row.text(0)) has an unknown result \(text)")
            }
            result = parsed
        }
        return SourceRecord(
            name: row.text(0), url: row.text(1), ref: row.optionalText(2), path: row.optionalText(3),
            suspendedAt: row.optionalInt64(4).map(Timestamp.init(milliseconds:)), suspendedBy: row.optionalText(5),
            lastApplied: row.optionalText(6), lastAppliedAt: row.optionalInt64(7).map(Timestamp.init(milliseconds:)),
            lastAttempted: row.optionalText(8), lastAttemptedAt: row.optionalInt64(9).map(Timestamp.init(milliseconds:)),
            result: result, message: row.text(11), failures: row.int(12))
    }

    func sources() throws(StoreError) -> [SourceRecord] {
        let intent = "read the sources"
        return try connection().withStatement("SELECT \(Self.sourceColumns) FROM sources ORDER BY name", intent: intent) {
            statement throws(StoreError) in
            var sources: [SourceRecord] = []
            while try statement.step(intent: intent) { sources.append(try Self.source(statement)) }
            return sources
        }
    }

    func source(named name: String) throws(StoreError) -> SourceRecord? {
        let intent = "read the source \(name)"
        return try connection().withStatement("SELECT \(Self.sourceColumns) FROM sources WHERE name = ?1", intent: intent) {
            statement throws(StoreError) -> SourceRecord? in
            try statement.bind(1, name)
            return try statement.step(intent: intent) ? try Self.source(statement) : nil
        }
    }

    func putSource(_ source: SourceRecord) throws(StoreError) {
        let intent = "store the source \(source.name)"
        try connection(writing: true).withStatement(
            """
            INSERT INTO sources (\(Self.sourceColumns))
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
            ON CONFLICT (name) DO UPDATE SET
                url = excluded.url, ref = excluded.ref, path = excluded.path, suspended_at = excluded.suspended_at,
                suspended_by = excluded.suspended_by, last_applied = excluded.last_applied,
                last_applied_at = excluded.last_applied_at, last_attempted = excluded.last_attempted,
                last_attempted_at = excluded.last_attempted_at, result = excluded.result, message = excluded.message,
                failures = excluded.failures
            """,
            intent: intent
        ) { statement throws(StoreError) in
            try statement.bind(1, source.name)
            try statement.bind(2, source.url)
            try statement.bind(3, source.ref)
            try statement.bind(4, source.path)
            try statement.bind(5, source.suspendedAt?.milliseconds)
            try statement.bind(6, source.suspendedBy)
            try statement.bind(7, source.lastApplied)
            try statement.bind(8, source.lastAppliedAt?.milliseconds)
            try statement.bind(9, source.lastAttempted)
            try statement.bind(10, source.lastAttemptedAt?.milliseconds)
            try statement.bind(11, source.result?.rawValue)
            try statement.bind(12, source.message)
            try statement.bind(13, source.failures)
            try statement.run(intent: intent)
        }
    }
}

/// `Agent/writer`, with its namespace when not the default one.
private func label(_ id: ResourceID) -> String {
    id.namespace == ResourceID.defaultNamespace ? id.description : "\(id.description) in namespace \(id.namespace)"
}
