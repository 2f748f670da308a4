import OrlCore
import OrlJSON
import PostgresNIO

/// The reader (and, in a `write`, the writer) handed to a transaction's body: the SQLite
/// store's queries (`OrlStore/Access.swift`) in PostgreSQL's dialect, one round trip each.
final class PostgresAccess: StateWriter {
    private var session: PostgresSession?
    let isWritable: Bool
    /// Resources and events written but not yet sent: an apply puts thousands, and one
    /// statement per row would cost a round trip each. They are sent, many rows per
    /// statement, before any other statement of the transaction runs (so every read sees
    /// them, and numbers are assigned in the order written) and before it commits; sent
    /// without waiting, their answers come with the next statement's (`PostgresSession.send`).
    private var pendingResources: [StoredResource] = []
    private var pendingResourceIndex: [ResourceID: Int] = [:]
    private var pendingEvents: [StoreEvent] = []
    /// Rows of `manifest_indexes` written (nil: deleted) but not yet sent: an apply writes
    /// a head and a few chunks and drops the chunks they replace, a statement each until
    /// now. They are sent together, in two statements, before any statement other than
    /// the manifest index's own reads and the change mark's (which answer from them first)
    /// and before the transaction commits.
    private var pendingIndexes: [String: [UInt8]?] = [:]
    private var pendingIndexOrder: [String] = []
    /// Rows of `manifest_indexes` read in this transaction (nil: none): no other writer
    /// changes them meanwhile (every write holds the store's lock; a read is one snapshot),
    /// so an apply that reads its heads together does not read them again one by one.
    private var readIndexes: [String: [UInt8]?] = [:]

    init(_ session: PostgresSession, writable: Bool) {
        self.session = session
        self.isWritable = writable
    }

    /// Called when the transaction ends: a reader kept past its body must not run
    /// statements outside its transaction, nor on a connection another caller now holds.
    func close() { session = nil }

    /// Whether this transaction wrote a table of the `runs` topic (runs, their steps,
    /// attempts and values, tool approvals) since the topic last moved.
    private var wroteRuns = false

    /// A write to a table of the `runs` topic: the topic moves (and `orl_changes` is
    /// notified) once, when the transaction ends (`countRunChanges`), not at every statement.
    func wroteRunTables() { wroteRuns = true }

    /// Moves the `runs` topic once if this transaction wrote runs, and notifies the
    /// channel (delivered at the commit): sent without waiting, its answer comes with the
    /// commit's. Called at the end of every write transaction, before it commits.
    func countRunChanges() throws(StoreError) {
        guard wroteRuns else { return }
        wroteRuns = false
        try connection(writing: true).send(
            """
            WITH moved AS (UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs' RETURNING topic)
            SELECT pg_notify('\(PostgresChangeSignal.channel)', topic) FROM moved
            """, intent: "count the change of the runs")
    }

    func connection(writing: Bool = false) throws(StoreError) -> PostgresSession {
        let session = try checkedSession(writing: writing)
        try flush()
        return session
    }

    /// The session for a statement that reads neither `manifest_indexes` nor anything a
    /// write to it changes: the manifest index rows kept stay kept.
    private func connectionKeepingIndexes() throws(StoreError) -> PostgresSession {
        let session = try checkedSession(writing: false)
        try flushRows()
        return session
    }

    private func checkedSession(writing: Bool) throws(StoreError) -> PostgresSession {
        guard let session else {
            throw StoreError("the state store was used after its read or write ended; use the reader only inside the body")
        }
        guard isWritable || !writing else {
            throw StoreError("the state store was written inside a read; use write instead")
        }
        return session
    }

    /// Sends what `put` and `append` kept: called before any other statement and before
    /// the transaction commits.
    func flush() throws(StoreError) {
        try flushRows()
        try flushIndexes()
    }

    private func flushRows() throws(StoreError) {
        guard !pendingResources.isEmpty || !pendingEvents.isEmpty, let session else { return }
        let resources = pendingResources
        let events = pendingEvents
        pendingResources = []
        pendingResourceIndex = [:]
        pendingEvents = []
        for start in stride(from: 0, to: resources.count, by: Self.rowsPerStatement) {
            try Self.upsert(resources[start..<min(start + Self.rowsPerStatement, resources.count)], session)
        }
        for start in stride(from: 0, to: events.count, by: Self.rowsPerStatement) {
            try Self.insert(events[start..<min(start + Self.rowsPerStatement, events.count)], session)
        }
    }

    private static let rowsPerStatement = 5000

    /// The manifest index rows kept: the upserts in one statement (each blob as hex text,
    /// which `unnest` takes as arrays of text), the deletions in another.
    private func flushIndexes() throws(StoreError) {
        guard !pendingIndexOrder.isEmpty, let session else { return }
        let order = pendingIndexOrder
        let rows = pendingIndexes
        pendingIndexOrder = []
        pendingIndexes = [:]
        var sources: [String] = []
        var blobs: [String] = []
        var dropped: [String] = []
        for source in order {
            if let data = rows[source]! {
                sources.append(source)
                blobs.append(Self.hex(data))
            } else {
                dropped.append(source)
            }
        }
        if !dropped.isEmpty {
            try session.send(
                "DELETE FROM manifest_indexes WHERE source = ANY($1)", [.texts(dropped)],
                intent: "drop \(dropped.count) parts of a manifest index")
        }
        if !sources.isEmpty {
            try session.send(
                """
                INSERT INTO manifest_indexes (source, data) SELECT source, decode(data, 'hex') FROM unnest($1::text[], $2::text[])
                    AS m(source, data)
                ON CONFLICT (source) DO UPDATE SET data = excluded.data
                """, [.texts(sources), .texts(blobs)], intent: "write \(sources.count) parts of a manifest index")
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            for (i, byte) in bytes.enumerated() {
                out[2 * i] = digits[Int(byte >> 4)]
                out[2 * i + 1] = digits[Int(byte & 0x0f)]
            }
            return bytes.count * 2
        }
    }

    private static func upsert(_ resources: ArraySlice<StoredResource>, _ session: PostgresSession) throws(StoreError) {
        func texts(_ value: (StoredResource) -> String) -> PostgresValue { .texts(resources.map(value)) }
        func ints(_ value: (StoredResource) -> Int64) -> PostgresValue { .ints(resources.map(value)) }
        let binds: [PostgresValue] = [
            texts(\.id.kind), texts(\.id.namespace), texts(\.id.name), texts(\.manifest), texts(\.specHash), ints { Int64($0.generation) },
            ints { Int64($0.resourceVersion) }, texts(\.source), texts(\.file), ints { Int64($0.line) }, texts { $0.revision ?? "" },
            .bools(resources.map { $0.revision == nil }), ints(\.appliedAt.milliseconds), texts(\.appliedBy), texts { $0.codeRoot ?? "" },
            .bools(resources.map { $0.codeRoot == nil }), texts(\.manifestHash),
        ]
        try session.send(
            """
            INSERT INTO resources (\(resourceColumns), manifest_hash)
            SELECT kind, namespace, name, manifest, spec_hash, generation, resource_version, source, file, line,
                CASE WHEN revision_null THEN NULL ELSE revision END, applied_at, applied_by,
                CASE WHEN code_root_null THEN NULL ELSE code_root END, manifest_hash
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[],
                $9::text[], $10::bigint[], $11::text[], $12::bool[], $13::bigint[], $14::text[], $15::text[], $16::bool[], $17::text[])
                AS r(kind, namespace, name, manifest, spec_hash, generation, resource_version, source, file, line, revision,
                    revision_null, applied_at, applied_by, code_root, code_root_null, manifest_hash)
            ON CONFLICT (kind, namespace, name) DO UPDATE SET
                manifest = excluded.manifest, manifest_hash = excluded.manifest_hash, spec_hash = excluded.spec_hash,
                generation = excluded.generation,
                resource_version = excluded.resource_version, source = excluded.source, file = excluded.file,
                line = excluded.line, revision = excluded.revision, applied_at = excluded.applied_at,
                applied_by = excluded.applied_by, code_root = excluded.code_root
            """, binds,
            intent: resources.count == 1 ? "store \(label(resources.first!.id))" : "store \(resources.count) resources")
    }

    private static func insert(_ events: ArraySlice<StoreEvent>, _ session: PostgresSession) throws(StoreError) {
        let binds: [PostgresValue] = [
            .ints(events.map(\.time.milliseconds)), .texts(events.map(\.kind.rawValue)), .texts(events.map { $0.resource?.kind ?? "" }),
            .texts(events.map { $0.resource?.namespace ?? "" }), .texts(events.map { $0.resource?.name ?? "" }),
            .bools(events.map { $0.resource == nil }), .texts(events.map(\.reason)), .texts(events.map(\.message)),
        ]
        // WITH ORDINALITY and ORDER BY: numbers are assigned in the order the events were written.
        try session.send(
            """
            INSERT INTO events (time, kind, resource_kind, resource_namespace, resource_name, reason, message)
            SELECT time, kind, CASE WHEN subject_null THEN NULL ELSE resource_kind END,
                CASE WHEN subject_null THEN NULL ELSE resource_namespace END, CASE WHEN subject_null THEN NULL ELSE resource_name END,
                reason, message
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::text[])
                WITH ORDINALITY AS e(time, kind, resource_kind, resource_namespace, resource_name, subject_null, reason, message, position)
            ORDER BY position
            """, binds, intent: events.count == 1 ? "record the event \(events.first!.reason)" : "record \(events.count) events")
    }

    private func rows(_ sql: String, _ binds: [PostgresValue] = [], intent: String) throws(StoreError) -> [PostgresRandomAccessRow] {
        try connection().query(sql, binds, intent: intent)
    }

    @discardableResult
    private func change(_ sql: String, _ binds: [PostgresValue] = [], intent: String) throws(StoreError) -> Int {
        try connection(writing: true).execute(sql, binds, intent: intent)
    }

    private static func key(_ id: ResourceID) -> [PostgresValue] { [.text(id.kind), .text(id.namespace), .text(id.name)] }

    // MARK: Reading

    private static let resourceColumns =
        "kind, namespace, name, manifest, spec_hash, generation, resource_version, source, file, line, revision, applied_at, applied_by, code_root"

    /// The SQLite store's listing order (kinds in `ResourceKind` order, unknown kinds after
    /// them by name, then namespace and name); the columns collate as "C", so the same.
    private static let listingOrder: String = {
        let ranks = ResourceKind.allCases.enumerated().map { rank, kind in
            "WHEN '\(kind.rawValue.replacing("'", with: "''"))' THEN \(rank)"
        }
        return "ORDER BY CASE kind \(ranks.joined(separator: " ")) ELSE \(ranks.count) END, kind, namespace, name"
    }()

    private static func resource(_ row: PostgresRandomAccessRow) throws(StoreError) -> StoredResource {
        StoredResource(
            id: ResourceID(kind: try row.text(0), namespace: try row.text(1), name: try row.text(2)),
            manifest: try row.text(3),
            specHash: try row.text(4),
            generation: try row.int(5),
            resourceVersion: try row.int(6),
            source: try row.text(7),
            file: try row.text(8),
            line: try row.int(9),
            revision: try row.optionalText(10),
            appliedAt: Timestamp(milliseconds: try row.int64(11)),
            appliedBy: try row.text(12),
            codeRoot: try row.optionalText(13)
        )
    }

    func resource(_ id: ResourceID) throws(StoreError) -> StoredResource? {
        let found = try rows(
            "SELECT \(Self.resourceColumns) FROM resources WHERE kind = $1 AND namespace = $2 AND name = $3", Self.key(id),
            intent: "read \(label(id))")
        return try found.first.map { row throws(StoreError) in try Self.resource(row) }
    }

    func resources(kind: ResourceKind?, namespace: String?) throws(StoreError) -> [StoredResource] {
        var conditions: [String] = []
        var binds: [PostgresValue] = []
        if let kind {
            binds.append(.text(kind.rawValue))
            conditions.append("kind = $\(binds.count)")
        }
        if let namespace {
            binds.append(.text(namespace))
            conditions.append("namespace = $\(binds.count)")
        }
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        var resources: [StoredResource] = []
        for row in try rows("SELECT \(Self.resourceColumns) FROM resources \(filter) \(Self.listingOrder)", binds, intent: "list resources")
        {
            resources.append(try Self.resource(row))
        }
        return resources
    }

    func fingerprint(source: String) throws(StoreError) -> String {
        let found = try rows(
            """
            SELECT count(*)::bigint, coalesce(sum(resource_version), 0)::bigint, coalesce(max(applied_at), 0)::bigint
            FROM resources WHERE source = $1
            """, [.text(source)], intent: "read the fingerprint of \(source)")
        guard let row = found.first else { return "" }
        return "\(try row.int64(0)):\(try row.int64(1)):\(try row.int64(2))"
    }

    /// The generation the statement triggers bump at every write to `resources` (as on
    /// SQLite): one row, where a checksum would read every resource of the source.
    func changeMark(source: String) throws(StoreError) -> String {
        let found = try connectionKeepingIndexes().query(
            "SELECT generation FROM change_topics WHERE topic = 'resources'", [], intent: "read the resources' change mark")
        guard let row = found.first else { return "f:" + (try fingerprint(source: source)) }
        return "g:\(try row.int64(0))"
    }

    func digests() throws(StoreError) -> [ResourceID: StoredDigest] {
        var digests: [ResourceID: StoredDigest] = [:]
        for row in try rows(
            "SELECT kind, namespace, name, manifest_hash, source, code_root FROM resources", intent: "read the resources' hashes")
        {
            digests[ResourceID(kind: try row.text(0), namespace: try row.text(1), name: try row.text(2))] = StoredDigest(
                manifestHash: try row.text(3), source: try row.text(4), codeRoot: try row.optionalText(5))
        }
        return digests
    }

    func manifestIndex(source: String) throws(StoreError) -> [UInt8]? {
        if let kept = pendingIndexes[source] { return kept }
        if let read = readIndexes[source] { return read }
        let found = try connectionKeepingIndexes().query(
            "SELECT data FROM manifest_indexes WHERE source = $1", [.text(source)], intent: "read the manifest index of \(source)")
        let data = try found.first.map { row throws(StoreError) in try row.bytes(0) }
        readIndexes.updateValue(data, forKey: source)
        return data
    }

    func manifestIndexes(sources: [String]) throws(StoreError) -> [[UInt8]?] {
        let asked = sources.filter { pendingIndexes[$0] == nil && readIndexes[$0] == nil }
        guard asked.count > 1 else {
            return try sources.map { source throws(StoreError) in try manifestIndex(source: source) }
        }
        var found: [String: [UInt8]] = [:]
        for row in try connectionKeepingIndexes().query(
            "SELECT source, data FROM manifest_indexes WHERE source = ANY($1)", [.texts(asked)],
            intent: "read \(asked.count) parts of a manifest index")
        {
            found[try row.text(0)] = try row.bytes(1)
        }
        for source in asked { readIndexes.updateValue(found[source], forKey: source) }
        return sources.map { source in
            if let kept = pendingIndexes[source] { return kept }
            return readIndexes[source] ?? nil
        }
    }

    func inventory(source: String) throws(StoreError) -> [ResourceID] {
        var ids: [ResourceID] = []
        for row in try rows(
            "SELECT kind, namespace, name FROM resources WHERE source = $1 \(Self.listingOrder)", [.text(source)],
            intent: "read the inventory of \(source)")
        {
            ids.append(ResourceID(kind: try row.text(0), namespace: try row.text(1), name: try row.text(2)))
        }
        return ids
    }

    func history(limit: Int) throws(StoreError) -> [ApplyRecord] {
        var records: [ApplyRecord] = []
        for row in try rows(
            """
            SELECT number, source, revision, applied_at, applied_by, summary, plan, result
            FROM applies ORDER BY number DESC LIMIT $1
            """, [.int(max(limit, 0))], intent: "read the apply history")
        {
            records.append(
                ApplyRecord(
                    number: try row.int(0), source: try row.text(1), revision: try row.optionalText(2),
                    appliedAt: Timestamp(milliseconds: try row.int64(3)), appliedBy: try row.text(4), summary: try row.text(5),
                    plan: try row.text(6), result: try row.text(7)))
        }
        return records
    }

    func events(for resource: ResourceID?, limit: Int) throws(StoreError) -> [StoreEvent] {
        var binds: [PostgresValue] = [.int(max(limit, 0))]
        var filter = ""
        if let resource {
            binds += Self.key(resource)
            filter = "WHERE resource_kind = $2 AND resource_namespace = $3 AND resource_name = $4"
        }
        var events: [StoreEvent] = []
        for row in try rows(
            """
            SELECT number, time, kind, resource_kind, resource_namespace, resource_name, reason, message
            FROM events \(filter) ORDER BY number DESC LIMIT $1
            """, binds, intent: resource.map { "read the events of \(label($0))" } ?? "read the events")
        {
            let kindText = try row.text(2)
            guard let kind = StoreEvent.Kind(rawValue: kindText) else {
                throw StoreError("event \(try row.int(0)) has an unknown kind \(kindText)")
            }
            var subject: ResourceID?
            if let kind = try row.optionalText(3) {
                subject = ResourceID(kind: kind, namespace: try row.text(4), name: try row.text(5))
            }
            events.append(
                StoreEvent(
                    number: try row.int(0), time: Timestamp(milliseconds: try row.int64(1)), kind: kind, resource: subject,
                    reason: try row.text(6), message: try row.text(7)))
        }
        return events
    }

    func status(for resource: ResourceID) throws(StoreError) -> ResourceStatus? {
        let found = try rows(
            "SELECT conditions, observed_generation, updated_at FROM status WHERE kind = $1 AND namespace = $2 AND name = $3",
            Self.key(resource), intent: "read the status of \(label(resource))")
        guard let row = found.first else { return nil }
        let observed = try row.int(1)
        return ResourceStatus(
            conditions: try Self.conditions(try row.text(0), of: resource), observedGeneration: observed > 0 ? observed : nil,
            updatedAt: Timestamp(milliseconds: try row.int64(2)))
    }

    private static func conditions(_ json: String, of resource: ResourceID) throws(StoreError) -> [ResourceStatus.Condition] {
        guard let conditions = ResourceStatus.conditions(stored: json) else {
            throw StoreError("the stored status of \(label(resource)) is not a JSON array of conditions")
        }
        return conditions
    }

    // MARK: Writing

    func put(_ resource: StoredResource) throws(StoreError) {
        _ = try checkedSession(writing: true)
        // Two puts of one resource in a transaction: the last wins, as it would row by row
        // (one statement cannot upsert the same row twice).
        if let index = pendingResourceIndex[resource.id] {
            pendingResources[index] = resource
        } else {
            pendingResourceIndex[resource.id] = pendingResources.count
            pendingResources.append(resource)
        }
    }

    func putManifestIndex(source: String, _ data: [UInt8]?) throws(StoreError) {
        _ = try checkedSession(writing: true)
        if pendingIndexes.updateValue(data, forKey: source) == nil { pendingIndexOrder.append(source) }
    }

    func delete(_ id: ResourceID) throws(StoreError) {
        try deleteRow(from: "resources", id, intent: "delete \(label(id))")
    }

    func record(_ apply: ApplyRecord) throws(StoreError) -> Int {
        let intent = "record the apply of \(apply.source)"
        let inserted = try connection(writing: true).query(
            """
            INSERT INTO applies (source, revision, applied_at, applied_by, summary, plan, result)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING number
            """,
            [
                .text(apply.source), .text(apply.revision), .int(apply.appliedAt.milliseconds), .text(apply.appliedBy),
                .text(apply.summary), .text(apply.plan), .text(apply.result),
            ], intent: intent)
        guard let row = inserted.first else { throw StoreError("cannot \(intent): the database returned no number") }
        return try row.int(0)
    }

    func append(_ event: StoreEvent) throws(StoreError) {
        _ = try checkedSession(writing: true)
        pendingEvents.append(event)
    }

    /// Replaces the resource's status row, when the resource exists: a failed statement
    /// would abort the whole transaction in PostgreSQL, so the check is in the statement.
    func putStatus(_ status: ResourceStatus, for resource: ResourceID) throws(StoreError) {
        let stored = try change(
            """
            INSERT INTO status (kind, namespace, name, phase, conditions, observed_generation, updated_at)
            SELECT $1, $2, $3, $4, $5, $6, $7
            WHERE EXISTS (SELECT 1 FROM resources WHERE kind = $1 AND namespace = $2 AND name = $3)
            ON CONFLICT (kind, namespace, name) DO UPDATE SET
                phase = excluded.phase, conditions = excluded.conditions,
                observed_generation = excluded.observed_generation, updated_at = excluded.updated_at
            """,
            Self.key(resource) + [
                .text(status.summary(generation: status.observedGeneration ?? 1)), .text(status.storedConditions),
                .int(status.observedGeneration ?? 0), .int(status.updatedAt.milliseconds),
            ], intent: "store the status of \(label(resource))")
        guard stored > 0 else { throw StoreError("cannot store the status of \(label(resource)): it is not in the state") }
    }

    fileprivate func deleteRow(from table: String, _ id: ResourceID, intent: String) throws(StoreError) {
        try change("DELETE FROM \(table) WHERE kind = $1 AND namespace = $2 AND name = $3", Self.key(id), intent: intent)
    }
}

// MARK: Supervision

extension PostgresAccess {
    private static let supervisionColumns =
        "kind, namespace, name, pid, start_time, launch_hash, token_digest, started_at, restarts, crashes, last_exit, exited_at, node, node_generation"

    private static func supervision(_ row: PostgresRandomAccessRow) throws(StoreError) -> SupervisionRecord {
        let agent = ResourceID(kind: try row.text(0), namespace: try row.text(1), name: try row.text(2))
        var process: ProcessIdentity?
        if let pid = try row.optionalInt64(3), let startTime = try row.optionalInt64(4) {
            guard let pid = Int32(exactly: pid), startTime >= 0 else {
                throw StoreError("the stored supervision of \(label(agent)) has an invalid process identity")
            }
            process = ProcessIdentity(pid: pid, startTime: UInt64(startTime))
        }
        var lastExit: ProcessExit?
        if let exit = try row.optionalText(10) {
            guard let parsed = ProcessExit(stored: exit) else {
                throw StoreError("the stored supervision of \(label(agent)) has an invalid last exit \(exit)")
            }
            lastExit = parsed
        }
        return SupervisionRecord(
            agent: agent, process: process, launchHash: try row.optionalText(5), tokenDigest: try row.optionalText(6),
            startedAt: try row.optionalInt64(7).map(Timestamp.init(milliseconds:)), restarts: try row.int(8), crashes: try row.int(9),
            lastExit: lastExit, exitedAt: try row.optionalInt64(11).map(Timestamp.init(milliseconds:)),
            node: try row.optionalText(12).map { node throws(StoreError) in
                Assignment(node: node, generation: try row.optionalInt64(13) ?? 0)
            })
    }

    func supervision(for agent: ResourceID) throws(StoreError) -> SupervisionRecord? {
        let found = try rows(
            "SELECT \(Self.supervisionColumns) FROM supervision WHERE kind = $1 AND namespace = $2 AND name = $3", Self.key(agent),
            intent: "read the supervision of \(label(agent))")
        return try found.first.map { row throws(StoreError) in try Self.supervision(row) }
    }

    func allSupervision() throws(StoreError) -> [SupervisionRecord] {
        var records: [SupervisionRecord] = []
        for row in try rows(
            "SELECT \(Self.supervisionColumns) FROM supervision ORDER BY namespace, name, kind", intent: "read the supervision records")
        {
            records.append(try Self.supervision(row))
        }
        return records
    }

    func putSupervision(_ record: SupervisionRecord) throws(StoreError) {
        // A record made on a node's behalf lands only while that node holds the lease.
        if let node = record.node {
            try requireLease(NodeLease(node: node.node, generation: node.generation, expiresAt: Timestamp(milliseconds: 0)))
        }
        try change(
            """
            INSERT INTO supervision (\(Self.supervisionColumns))
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            ON CONFLICT (kind, namespace, name) DO UPDATE SET
                pid = excluded.pid, start_time = excluded.start_time, launch_hash = excluded.launch_hash,
                token_digest = excluded.token_digest, started_at = excluded.started_at, restarts = excluded.restarts,
                crashes = excluded.crashes, last_exit = excluded.last_exit, exited_at = excluded.exited_at,
                node = excluded.node, node_generation = excluded.node_generation
            """,
            Self.key(record.agent) + [
                .int(record.process.map { Int64($0.pid) }), .int(record.process.map { Int64(clamping: $0.startTime) }),
                .text(record.launchHash), .text(record.tokenDigest), .int(record.startedAt?.milliseconds), .int(record.restarts),
                .int(record.crashes), .text(record.lastExit?.stored), .int(record.exitedAt?.milliseconds),
                .text(record.node?.node), .int(record.node?.generation),
            ], intent: "store the supervision of \(label(record.agent))")
    }

    func deleteSupervision(for agent: ResourceID) throws(StoreError) {
        try deleteRow(from: "supervision", agent, intent: "forget the supervision of \(label(agent))")
    }
}

// MARK: Holds

extension PostgresAccess {
    func holds() throws(StoreError) -> [UserHold] {
        var holds: [UserHold] = []
        for row in try rows(
            "SELECT kind, namespace, name, held_at, held_by FROM holds ORDER BY namespace, name, kind", intent: "read the suspended agents")
        {
            holds.append(
                UserHold(
                    agent: ResourceID(kind: try row.text(0), namespace: try row.text(1), name: try row.text(2)),
                    at: Timestamp(milliseconds: try row.int64(3)), by: try row.text(4)))
        }
        return holds
    }

    func putHold(_ hold: UserHold) throws(StoreError) {
        let held = try change(
            """
            INSERT INTO holds (kind, namespace, name, held_at, held_by) SELECT $1, $2, $3, $4, $5
            WHERE EXISTS (SELECT 1 FROM resources WHERE kind = $1 AND namespace = $2 AND name = $3)
            ON CONFLICT (kind, namespace, name) DO UPDATE SET held_at = excluded.held_at, held_by = excluded.held_by
            """, Self.key(hold.agent) + [.int(hold.at.milliseconds), .text(hold.by)], intent: "suspend \(label(hold.agent))")
        guard held > 0 else { throw StoreError("cannot suspend \(label(hold.agent)): it is not in the state") }
    }

    func deleteHold(for agent: ResourceID) throws(StoreError) {
        try deleteRow(from: "holds", agent, intent: "resume \(label(agent))")
    }
}

// MARK: Ledger

extension PostgresAccess {
    private static let ledgerColumns =
        "number, time, kind, namespace, name, model, prompt_tokens, completion_tokens, usd, latency_ms, request_id, outcome, run, step"

    func append(_ entries: [LedgerEntry]) throws(StoreError) {
        for entry in entries {
            try change(
                """
                INSERT INTO ledger (time, kind, namespace, name, model, prompt_tokens, completion_tokens, usd, latency_ms,
                    request_id, outcome, run, step)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                """,
                [
                    .int(entry.time.milliseconds), .text(entry.agent.kind), .text(entry.agent.namespace), .text(entry.agent.name),
                    .text(entry.model), .int(entry.usage.prompt), .int(entry.usage.completion), .double(entry.usd),
                    .int(entry.latencyMilliseconds), .text(entry.requestID), .text(entry.outcome), .text(entry.run), .text(entry.step),
                ], intent: "record model calls in the ledger")
        }
    }

    func ledger(_ query: LedgerQuery) throws(StoreError) -> [LedgerEntry] {
        var binds: [PostgresValue] = [.int(query.since?.milliseconds ?? Int64.min), .int(query.limit)]
        var sql = "SELECT \(Self.ledgerColumns) FROM ledger WHERE time >= $1"
        if let agent = query.agent {
            binds += [.text(agent.namespace), .text(agent.name)]
            sql += " AND namespace = $3 AND name = $4"
        }
        sql += " ORDER BY number DESC LIMIT $2"
        var entries: [LedgerEntry] = []
        for row in try rows(sql, binds, intent: "read the ledger") {
            entries.append(
                LedgerEntry(
                    number: try row.int(0), time: Timestamp(milliseconds: try row.int64(1)),
                    agent: ResourceID(kind: try row.text(2), namespace: try row.text(3), name: try row.text(4)),
                    model: try row.text(5), usage: TokenUsage(prompt: try row.int(6), completion: try row.int(7)),
                    usd: try row.double(8), latencyMilliseconds: try row.int(9), requestID: try row.text(10),
                    outcome: try row.text(11), run: try row.optionalText(12), step: try row.optionalText(13)))
        }
        return entries
    }

    func spend(since: Timestamp) throws(StoreError) -> [ResourceID: Charge] {
        var spend: [ResourceID: Charge] = [:]
        for row in try rows(
            """
            SELECT kind, namespace, name, coalesce(sum(usd), 0)::float8, coalesce(sum(prompt_tokens + completion_tokens), 0)::float8
            FROM ledger WHERE time >= $1 GROUP BY kind, namespace, name
            """, [.int(since.milliseconds)], intent: "sum the ledger")
        {
            spend[ResourceID(kind: try row.text(0), namespace: try row.text(1), name: try row.text(2))] = Charge(
                usd: try row.double(3), tokens: Int(clamping: Int64(try row.double(4))))
        }
        return spend
    }
}

// MARK: Secrets

extension PostgresAccess {
    func secrets(namespace: String?) throws(StoreError) -> [SealedSecret] {
        let filter = namespace == nil ? "" : "WHERE namespace = $1"
        var secrets: [SealedSecret] = []
        for row in try rows(
            "SELECT namespace, name, box, key_check, size, updated_at, updated_by FROM secrets \(filter) ORDER BY namespace, name",
            namespace.map { [.text($0)] } ?? [], intent: "read the vault's secrets")
        {
            secrets.append(
                SealedSecret(
                    id: SecretID(namespace: try row.text(0), name: try row.text(1)), box: try row.bytes(2), keyCheck: try row.text(3),
                    size: try row.int(4), updatedAt: Timestamp(milliseconds: try row.int64(5)), updatedBy: try row.text(6)))
        }
        return secrets
    }

    func putSecret(_ secret: SealedSecret) throws(StoreError) {
        try change(
            """
            INSERT INTO secrets (namespace, name, box, key_check, size, updated_at, updated_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (namespace, name) DO UPDATE SET
                box = excluded.box, key_check = excluded.key_check, size = excluded.size,
                updated_at = excluded.updated_at, updated_by = excluded.updated_by
            """,
            [
                .text(secret.id.namespace), .text(secret.id.name), .bytes(secret.box), .text(secret.keyCheck), .int(secret.size),
                .int(secret.updatedAt.milliseconds), .text(secret.updatedBy),
            ], intent: "store \(secret.id)")
    }

    func deleteSecret(_ id: SecretID) throws(StoreError) {
        try change("DELETE FROM secrets WHERE namespace = $1 AND name = $2", [.text(id.namespace), .text(id.name)], intent: "delete \(id)")
    }
}

// MARK: Sources

extension PostgresAccess {
    private static let sourceColumns =
        "name, url, ref, path, suspended_at, suspended_by, last_applied, last_applied_at, last_attempted, last_attempted_at, result, message, failures"

    private static func source(_ row: PostgresRandomAccessRow) throws(StoreError) -> SourceRecord {
        var result: SourceRecord.Result?
        if let text = try row.optionalText(10) {
            guard let parsed = SourceRecord.Result(rawValue: text) else {
                throw StoreError("the stored source \(try row.text(0)) has an unknown result \(text)")
            }
            result = parsed
        }
        return SourceRecord(
            name: try row.text(0), url: try row.text(1), ref: try row.optionalText(2), path: try row.optionalText(3),
            suspendedAt: try row.optionalInt64(4).map(Timestamp.init(milliseconds:)), suspendedBy: try row.optionalText(5),
            lastApplied: try row.optionalText(6), lastAppliedAt: try row.optionalInt64(7).map(Timestamp.init(milliseconds:)),
            lastAttempted: try row.optionalText(8), lastAttemptedAt: try row.optionalInt64(9).map(Timestamp.init(milliseconds:)),
            result: result, message: try row.text(11), failures: try row.int(12))
    }

    func sources() throws(StoreError) -> [SourceRecord] {
        var sources: [SourceRecord] = []
        for row in try rows("SELECT \(Self.sourceColumns) FROM sources ORDER BY name", intent: "read the sources") {
            sources.append(try Self.source(row))
        }
        return sources
    }

    func source(named name: String) throws(StoreError) -> SourceRecord? {
        let found = try rows("SELECT \(Self.sourceColumns) FROM sources WHERE name = $1", [.text(name)], intent: "read the source \(name)")
        return try found.first.map { row throws(StoreError) in try Self.source(row) }
    }

    func putSource(_ source: SourceRecord) throws(StoreError) {
        try change(
            """
            INSERT INTO sources (\(Self.sourceColumns))
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT (name) DO UPDATE SET
                url = excluded.url, ref = excluded.ref, path = excluded.path, suspended_at = excluded.suspended_at,
                suspended_by = excluded.suspended_by, last_applied = excluded.last_applied,
                last_applied_at = excluded.last_applied_at, last_attempted = excluded.last_attempted,
                last_attempted_at = excluded.last_attempted_at, result = excluded.result, message = excluded.message,
                failures = excluded.failures
            """,
            [
                .text(source.name), .text(source.url), .text(source.ref), .text(source.path), .int(source.suspendedAt?.milliseconds),
                .text(source.suspendedBy), .text(source.lastApplied), .int(source.lastAppliedAt?.milliseconds),
                .text(source.lastAttempted), .int(source.lastAttemptedAt?.milliseconds), .text(source.result?.rawValue),
                .text(source.message), .int(source.failures),
            ], intent: "store the source \(source.name)")
    }
}

/// `Agent/writer`, with its namespace when not the default one.
private func label(_ id: ResourceID) -> String {
    id.namespace == ResourceID.defaultNamespace ? id.description : "\(id.description) in namespace \(id.namespace)"
}
