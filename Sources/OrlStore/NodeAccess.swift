public import OrlCore

/// The nodes' leases, placement and singletons in SQLite (`NodeStore`). SQLite has no
/// server: "the database's clock" is SQLite's `now`, read by whichever process runs the
/// transaction, which for a SQLite state is always a process of the same host.
extension SQLiteStateStore: NodeStore {
    public func registerNode(_ name: String, labels: [String: String], duration: Duration) throws(StoreError) -> NodeLease {
        try transaction(.immediate, intent: "register node \(name)") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            let now = try SQLNodes.now(database)
            let expires = now + duration.wholeMilliseconds
            let intent = "register node \(name)"
            let generation = try database.withStatement(
                """
                INSERT INTO nodes (name, generation, expires_at, renewed_at, registered_at, labels, cordoned)
                VALUES (?1, 1, ?2, ?3, ?3, ?4, 0)
                ON CONFLICT (name) DO UPDATE SET generation = nodes.generation + 1, expires_at = excluded.expires_at,
                    renewed_at = excluded.renewed_at, registered_at = excluded.registered_at, labels = excluded.labels
                RETURNING generation
                """, intent: intent
            ) { statement throws(StoreError) -> Int64 in
                try statement.bind(1, name)
                try statement.bind(2, expires)
                try statement.bind(3, now)
                try statement.bind(4, NodeLabels.encode(labels))
                guard try statement.step(intent: intent) else { throw StoreError("registering node \(name) returned nothing") }
                return statement.int64(0)
            }
            return NodeLease(node: name, generation: generation, expiresAt: Timestamp(milliseconds: expires))
        }
    }

    public func renewNode(_ lease: NodeLease, duration: Duration) throws(StoreError) -> NodeLease {
        try transaction(.immediate, intent: "renew the lease of node \(lease.node)") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            let now = try SQLNodes.requireLease(lease, database)
            let expires = now + duration.wholeMilliseconds
            let intent = "renew the lease of node \(lease.node)"
            try database.withStatement("UPDATE nodes SET expires_at = ?2, renewed_at = ?3 WHERE name = ?1", intent: intent) {
                statement throws(StoreError) in
                try statement.bind(1, lease.node)
                try statement.bind(2, expires)
                try statement.bind(3, now)
                try statement.run(intent: intent)
            }
            return NodeLease(node: lease.node, generation: lease.generation, expiresAt: Timestamp(milliseconds: expires))
        }
    }

    public func expireNode(_ lease: NodeLease) throws(StoreError) {
        try transaction(.immediate, intent: "end the lease of node \(lease.node)") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            let now = try SQLNodes.now(database)
            let intent = "end the lease of node \(lease.node)"
            try database.withStatement(
                "UPDATE nodes SET expires_at = min(expires_at, ?3) WHERE name = ?1 AND generation = ?2", intent: intent
            ) { statement throws(StoreError) in
                try statement.bind(1, lease.node)
                try statement.bind(2, lease.generation)
                try statement.bind(3, now)
                try statement.run(intent: intent)
            }
        }
    }

    public func nodeSnapshot() throws(StoreError) -> NodeSnapshot {
        try transaction(.deferred, intent: "read the nodes") { access throws(StoreError) in
            try SQLNodes.snapshot(try access.connection())
        }
    }

    @discardableResult
    public func place(by lease: NodeLease, _ decide: (NodeSnapshot) -> [ResourceID: AgentAssignment?]) throws(StoreError)
        -> NodeSnapshot
    {
        try transaction(.immediate, intent: "place agents") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            _ = try SQLNodes.requireLease(lease, database)
            var snapshot = try SQLNodes.snapshot(database)
            let changes = decide(snapshot)
            for (agent, assignment) in changes.sorted(by: { $0.key < $1.key }) {
                let intent = "place agent \(agent.namespace)/\(agent.name)"
                if let assignment {
                    try database.withStatement(
                        """
                        INSERT OR REPLACE INTO agent_assignments
                            (kind, namespace, name, node, generation, replacing_node, replacing_generation, released, assigned_at)
                        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                        """, intent: intent
                    ) { statement throws(StoreError) in
                        try statement.bind(1, agent)
                        try statement.bind(4, assignment.assignment.node)
                        try statement.bind(5, assignment.assignment.generation)
                        try statement.bind(6, assignment.replacing?.node)
                        try statement.bind(7, assignment.replacing?.generation)
                        try statement.bind(8, assignment.released ? 1 : 0)
                        try statement.bind(9, snapshot.now.milliseconds)
                        try statement.run(intent: intent)
                    }
                    var stored = assignment
                    stored.assignedAt = snapshot.now
                    snapshot.assignments[agent] = stored
                } else {
                    try database.withStatement(
                        "DELETE FROM agent_assignments WHERE kind = ?1 AND namespace = ?2 AND name = ?3", intent: intent
                    ) { statement throws(StoreError) in
                        try statement.bind(1, agent)
                        try statement.run(intent: intent)
                    }
                    snapshot.assignments[agent] = nil
                }
            }
            return snapshot
        }
    }

    public func release(_ agents: [ResourceID], by lease: NodeLease) throws(StoreError) {
        guard !agents.isEmpty else { return }
        try transaction(.immediate, intent: "release agents of node \(lease.node)") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            _ = try SQLNodes.requireLease(lease, database)
            for agent in agents {
                let intent = "release agent \(agent.namespace)/\(agent.name)"
                try database.withStatement(
                    """
                    UPDATE agent_assignments SET released = 1
                    WHERE kind = ?1 AND namespace = ?2 AND name = ?3 AND replacing_node = ?4 AND node <> ?4
                    """, intent: intent
                ) { statement throws(StoreError) in
                    try statement.bind(1, agent)
                    try statement.bind(4, lease.node)
                    try statement.run(intent: intent)
                }
            }
        }
    }

    public func setCordoned(_ node: String, _ cordoned: Bool) throws(StoreError) -> Bool {
        try transaction(.immediate, intent: "cordon node \(node)") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            let intent = "cordon node \(node)"
            try database.withStatement("UPDATE nodes SET cordoned = ?2 WHERE name = ?1", intent: intent) { statement throws(StoreError) in
                try statement.bind(1, node)
                try statement.bind(2, cordoned ? 1 : 0)
                try statement.run(intent: intent)
            }
            return try database.scalar("SELECT changes()", intent: intent) == 1
        }
    }

    public func claimSingleton(_ role: String, by lease: NodeLease) throws(StoreError) -> Bool {
        try transaction(.immediate, intent: "claim \(role) for node \(lease.node)") { access throws(StoreError) in
            let database = try access.connection(writing: true)
            let now = try SQLNodes.requireLease(lease, database)
            let snapshot = try SQLNodes.snapshot(database)
            if let holder = snapshot.holder(of: role) {
                return holder == lease.node && snapshot.singletons[role]?.generation == lease.generation
            }
            let intent = "claim \(role) for node \(lease.node)"
            try database.withStatement(
                "INSERT OR REPLACE INTO singletons (role, node, generation, since) VALUES (?1, ?2, ?3, ?4)", intent: intent
            ) {
                statement throws(StoreError) in
                try statement.bind(1, role)
                try statement.bind(2, lease.node)
                try statement.bind(3, lease.generation)
                try statement.bind(4, now)
                try statement.run(intent: intent)
            }
            return true
        }
    }
}

extension SQLStateAccess {
    func requireLease(_ lease: NodeLease) throws(StoreError) {
        _ = try SQLNodes.requireLease(lease, try connection(writing: true))
    }
}

/// The SQL the node calls share.
enum SQLNodes {
    /// Milliseconds since the epoch by SQLite's clock.
    static func now(_ database: Database) throws(StoreError) -> Int64 {
        try database.scalar("SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)", intent: "read the database's time") ?? 0
    }

    /// The database's now, once the lease is found current and live; else a fenced error.
    static func requireLease(_ lease: NodeLease, _ database: Database) throws(StoreError) -> Int64 {
        let now = try Self.now(database)
        let intent = "check the lease of node \(lease.node)"
        let stored = try database.withStatement("SELECT generation, expires_at FROM nodes WHERE name = ?1", intent: intent) {
            statement throws(StoreError) -> (Int64, Int64)? in
            try statement.bind(1, lease.node)
            return try statement.step(intent: intent) ? (statement.int64(0), statement.int64(1)) : nil
        }
        guard let (generation, expires) = stored else { throw .fenced(lease, why: "the node is not registered") }
        guard generation == lease.generation else { throw .fenced(lease, why: "it registered again (generation \(generation))") }
        guard now < expires else { throw .fenced(lease, why: "the lease lapsed at \(Timestamp(milliseconds: expires))") }
        return now
    }

    static func snapshot(_ database: Database) throws(StoreError) -> NodeSnapshot {
        let now = try Self.now(database)
        var intent = "read the nodes"
        let nodes = try database.withStatement(
            "SELECT name, generation, expires_at, renewed_at, registered_at, labels, cordoned FROM nodes ORDER BY name", intent: intent
        ) { statement throws(StoreError) in
            var nodes: [NodeRecord] = []
            while try statement.step(intent: intent) {
                let lease = NodeLease(
                    node: statement.text(0), generation: statement.int64(1), expiresAt: Timestamp(milliseconds: statement.int64(2)))
                nodes.append(
                    NodeRecord(
                        view: NodeView(lease: lease, labels: NodeLabels.decode(statement.text(5)), cordoned: statement.int(6) != 0),
                        registeredAt: Timestamp(milliseconds: statement.int64(4)), renewedAt: Timestamp(milliseconds: statement.int64(3))))
            }
            return nodes
        }
        intent = "read the agents' placement"
        let assignments = try database.withStatement(
            """
            SELECT kind, namespace, name, node, generation, replacing_node, replacing_generation, released, assigned_at
            FROM agent_assignments
            """, intent: intent
        ) { statement throws(StoreError) in
            var assignments: [ResourceID: AgentAssignment] = [:]
            while try statement.step(intent: intent) {
                let agent = ResourceID(kind: statement.text(0), namespace: statement.text(1), name: statement.text(2))
                var replacing: Assignment?
                if let node = statement.optionalText(5), let generation = statement.optionalInt64(6) {
                    replacing = Assignment(node: node, generation: generation)
                }
                assignments[agent] = AgentAssignment(
                    agent: agent, assignment: Assignment(node: statement.text(3), generation: statement.int64(4)), replacing: replacing,
                    released: statement.int(7) != 0, assignedAt: Timestamp(milliseconds: statement.int64(8)))
            }
            return assignments
        }
        intent = "read the singletons"
        let singletons = try database.withStatement("SELECT role, node, generation FROM singletons", intent: intent) {
            statement throws(StoreError) in
            var singletons: [String: Assignment] = [:]
            while try statement.step(intent: intent) {
                singletons[statement.text(0)] = Assignment(node: statement.text(1), generation: statement.int64(2))
            }
            return singletons
        }
        return NodeSnapshot(now: Timestamp(milliseconds: now), nodes: nodes, assignments: assignments, singletons: singletons)
    }
}
