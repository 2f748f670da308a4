public import OrlCore

/// The nodes' leases, placement and singletons in PostgreSQL (`NodeStore`). Times are the
/// server's (`clock_timestamp()`), so nodes whose clocks disagree agree on lapses.
///
/// A renewal takes no advisory lock: it is one conditional UPDATE, so a long apply holding
/// the state's write lock never makes a node miss its renewal. Placement, releases and
/// singleton claims serialize on a lock of their own (`nodesLock`), so two placers never
/// decide from the same snapshot.
extension PostgresStateStore: NodeStore {
    /// 'orl' in the high bytes, as `PostgresSchema.LockKey`'s.
    static let nodesLock: Int64 = 0x6F72_6C00_0000_0010

    /// One READ COMMITTED transaction, under the nodes' lock when `locked`.
    private func nodeTransaction<T>(locked: Bool, intent: String, _ body: (PostgresSession) throws(StoreError) -> T) throws(StoreError)
        -> T
    {
        try pool.withConnection(intent: intent) { session throws(StoreError) in
            try session.execute("BEGIN ISOLATION LEVEL READ COMMITTED", intent: intent)
            do throws(StoreError) {
                if locked { try session.execute("SELECT pg_advisory_xact_lock($1)", [.int(Self.nodesLock)], intent: intent) }
                let value = try body(session)
                try session.execute("COMMIT", intent: intent)
                return value
            } catch {
                if !session.isBroken { _ = try? session.execute("ROLLBACK", intent: intent) }
                throw error
            }
        }
    }

    public func registerNode(_ name: String, labels: [String: String], duration: Duration) throws(StoreError) -> NodeLease {
        let intent = "register node \(name)"
        return try nodeTransaction(locked: false, intent: intent) { session throws(StoreError) in
            let rows = try session.query(
                """
                WITH now AS (SELECT \(PostgresNodes.now) AS ms)
                INSERT INTO nodes (name, generation, expires_at, renewed_at, registered_at, labels, cordoned)
                SELECT $1, 1, ms + $2, ms, ms, $3, 0 FROM now
                ON CONFLICT (name) DO UPDATE SET generation = nodes.generation + 1, expires_at = excluded.expires_at,
                    renewed_at = excluded.renewed_at, registered_at = excluded.registered_at, labels = excluded.labels
                RETURNING generation, expires_at
                """, [.text(name), .int(duration.wholeMilliseconds), .text(NodeLabels.encode(labels))], intent: intent)
            guard let row = rows.first else { throw StoreError("cannot \(intent): no answer") }
            return NodeLease(node: name, generation: try row.int64(0), expiresAt: Timestamp(milliseconds: try row.int64(1)))
        }
    }

    public func renewNode(_ lease: NodeLease, duration: Duration) throws(StoreError) -> NodeLease {
        let intent = "renew the lease of node \(lease.node)"
        return try nodeTransaction(locked: false, intent: intent) { session throws(StoreError) in
            // One statement: the lease is extended only if it is still this generation's and live.
            let rows = try session.query(
                """
                WITH now AS (SELECT \(PostgresNodes.now) AS ms)
                UPDATE nodes SET expires_at = now.ms + $3, renewed_at = now.ms FROM now
                WHERE name = $1 AND generation = $2 AND expires_at > now.ms
                RETURNING expires_at
                """, [.text(lease.node), .int(lease.generation), .int(duration.wholeMilliseconds)], intent: intent)
            guard let row = rows.first else {
                _ = try PostgresNodes.requireLease(lease, session)
                throw .fenced(lease, why: "the lease could not be renewed")
            }
            return NodeLease(node: lease.node, generation: lease.generation, expiresAt: Timestamp(milliseconds: try row.int64(0)))
        }
    }

    public func expireNode(_ lease: NodeLease) throws(StoreError) {
        let intent = "end the lease of node \(lease.node)"
        _ = try nodeTransaction(locked: false, intent: intent) { session throws(StoreError) in
            try session.execute(
                "UPDATE nodes SET expires_at = least(expires_at, \(PostgresNodes.now)) WHERE name = $1 AND generation = $2",
                [.text(lease.node), .int(lease.generation)], intent: intent)
        }
    }

    public func nodeSnapshot() throws(StoreError) -> NodeSnapshot {
        try pool.withConnection(intent: "read the nodes") { session throws(StoreError) in
            try session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", intent: "read the nodes")
            do throws(StoreError) {
                let snapshot = try PostgresNodes.snapshot(session)
                try session.execute("COMMIT", intent: "read the nodes")
                return snapshot
            } catch {
                if !session.isBroken { _ = try? session.execute("ROLLBACK", intent: "read the nodes") }
                throw error
            }
        }
    }

    @discardableResult
    public func place(by lease: NodeLease, _ decide: (NodeSnapshot) -> [ResourceID: AgentAssignment?]) throws(StoreError)
        -> NodeSnapshot
    {
        try nodeTransaction(locked: true, intent: "place agents") { session throws(StoreError) in
            _ = try PostgresNodes.requireLease(lease, session)
            var snapshot = try PostgresNodes.snapshot(session)
            for (agent, assignment) in decide(snapshot).sorted(by: { $0.key < $1.key }) {
                let intent = "place agent \(agent.namespace)/\(agent.name)"
                let key: [PostgresValue] = [.text(agent.kind), .text(agent.namespace), .text(agent.name)]
                if var assignment {
                    try session.execute(
                        """
                        INSERT INTO agent_assignments
                            (kind, namespace, name, node, generation, replacing_node, replacing_generation, released, assigned_at)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                        ON CONFLICT (kind, namespace, name) DO UPDATE SET node = excluded.node, generation = excluded.generation,
                            replacing_node = excluded.replacing_node, replacing_generation = excluded.replacing_generation,
                            released = excluded.released, assigned_at = excluded.assigned_at
                        """,
                        key + [
                            .text(assignment.assignment.node), .int(assignment.assignment.generation), .text(assignment.replacing?.node),
                            .int(assignment.replacing?.generation), .int(assignment.released ? 1 : 0), .int(snapshot.now.milliseconds),
                        ], intent: intent)
                    assignment.assignedAt = snapshot.now
                    snapshot.assignments[agent] = assignment
                } else {
                    try session.execute(
                        "DELETE FROM agent_assignments WHERE kind = $1 AND namespace = $2 AND name = $3", key, intent: intent)
                    snapshot.assignments[agent] = nil
                }
            }
            return snapshot
        }
    }

    public func release(_ agents: [ResourceID], by lease: NodeLease) throws(StoreError) {
        guard !agents.isEmpty else { return }
        try nodeTransaction(locked: true, intent: "release agents of node \(lease.node)") { session throws(StoreError) in
            _ = try PostgresNodes.requireLease(lease, session)
            for agent in agents {
                try session.execute(
                    """
                    UPDATE agent_assignments SET released = 1
                    WHERE kind = $1 AND namespace = $2 AND name = $3 AND replacing_node = $4 AND node <> $4
                    """, [.text(agent.kind), .text(agent.namespace), .text(agent.name), .text(lease.node)],
                    intent: "release agent \(agent.namespace)/\(agent.name)")
            }
        }
    }

    public func setCordoned(_ node: String, _ cordoned: Bool) throws(StoreError) -> Bool {
        let intent = "cordon node \(node)"
        return try nodeTransaction(locked: false, intent: intent) { session throws(StoreError) in
            try session.execute("UPDATE nodes SET cordoned = $2 WHERE name = $1", [.text(node), .int(cordoned ? 1 : 0)], intent: intent)
                == 1
        }
    }

    public func claimSingleton(_ role: String, by lease: NodeLease) throws(StoreError) -> Bool {
        let intent = "claim \(role) for node \(lease.node)"
        return try nodeTransaction(locked: true, intent: intent) { session throws(StoreError) in
            let now = try PostgresNodes.requireLease(lease, session)
            let snapshot = try PostgresNodes.snapshot(session)
            if let holder = snapshot.holder(of: role) {
                return holder == lease.node && snapshot.singletons[role]?.generation == lease.generation
            }
            try session.execute(
                """
                INSERT INTO singletons (role, node, generation, since) VALUES ($1, $2, $3, $4)
                ON CONFLICT (role) DO UPDATE SET node = excluded.node, generation = excluded.generation, since = excluded.since
                """, [.text(role), .text(lease.node), .int(lease.generation), .int(now)], intent: intent)
            return true
        }
    }
}

extension PostgresAccess {
    func requireLease(_ lease: NodeLease) throws(StoreError) {
        _ = try PostgresNodes.requireLease(lease, try connection(writing: true))
    }
}

/// The SQL the node calls share.
enum PostgresNodes {
    /// Milliseconds since the epoch by the server's clock, now (not at the transaction's start).
    static let now = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

    /// The server's now, once the lease is found current and live; else a fenced error. The
    /// row is read FOR SHARE, so a registration that would supersede it waits for this
    /// transaction to end.
    static func requireLease(_ lease: NodeLease, _ session: PostgresSession) throws(StoreError) -> Int64 {
        let rows = try session.query(
            "SELECT generation, expires_at, \(now) FROM nodes WHERE name = $1 FOR SHARE", [.text(lease.node)],
            intent: "check the lease of node \(lease.node)")
        guard let row = rows.first else { throw .fenced(lease, why: "the node is not registered") }
        let (generation, expires, now) = (try row.int64(0), try row.int64(1), try row.int64(2))
        guard generation == lease.generation else { throw .fenced(lease, why: "it registered again (generation \(generation))") }
        guard now < expires else { throw .fenced(lease, why: "the lease lapsed at \(Timestamp(milliseconds: expires))") }
        return now
    }

    static func snapshot(_ session: PostgresSession) throws(StoreError) -> NodeSnapshot {
        let head = try session.query("SELECT \(now)", intent: "read the database's time")
        let now = try head.first?.int64(0) ?? 0
        var nodes: [NodeRecord] = []
        for row in try session.query(
            "SELECT name, generation, expires_at, renewed_at, registered_at, labels, cordoned FROM nodes ORDER BY name",
            intent: "read the nodes")
        {
            let lease = NodeLease(node: try row.text(0), generation: try row.int64(1), expiresAt: Timestamp(milliseconds: try row.int64(2)))
            nodes.append(
                NodeRecord(
                    view: NodeView(lease: lease, labels: NodeLabels.decode(try row.text(5)), cordoned: try row.int64(6) != 0),
                    registeredAt: Timestamp(milliseconds: try row.int64(4)), renewedAt: Timestamp(milliseconds: try row.int64(3))))
        }
        var assignments: [ResourceID: AgentAssignment] = [:]
        for row in try session.query(
            """
            SELECT kind, namespace, name, node, generation, replacing_node, replacing_generation, released, assigned_at
            FROM agent_assignments
            """, intent: "read the agents' placement")
        {
            let agent = ResourceID(kind: try row.text(0), namespace: try row.text(1), name: try row.text(2))
            var replacing: Assignment?
            if let node = try row.optionalText(5), let generation = try row.optionalInt64(6) {
                replacing = Assignment(node: node, generation: generation)
            }
            assignments[agent] = AgentAssignment(
                agent: agent, assignment: Assignment(node: try row.text(3), generation: try row.int64(4)), replacing: replacing,
                released: try row.int64(7) != 0, assignedAt: Timestamp(milliseconds: try row.int64(8)))
        }
        var singletons: [String: Assignment] = [:]
        for row in try session.query("SELECT role, node, generation FROM singletons", intent: "read the singletons") {
            singletons[try row.text(0)] = Assignment(node: try row.text(1), generation: try row.int64(2))
        }
        return NodeSnapshot(now: Timestamp(milliseconds: now), nodes: nodes, assignments: assignments, singletons: singletons)
    }
}
