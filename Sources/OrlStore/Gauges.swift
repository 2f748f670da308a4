public import OrlCore

extension SQLiteStateStore {
    /// The state a metrics scrape shows, read in one transaction: a few indexed queries
    /// whose cost grows with agents and steps, never with the ledger.
    public func fleetGauges() throws(StoreError) -> FleetGauges {
        try transaction(.deferred, intent: "read the fleet's gauges") { access throws(StoreError) in try access.fleetGauges() }
    }
}

extension SQLStateAccess {
    func fleetGauges() throws(StoreError) -> FleetGauges {
        let database = try connection()
        let agentsIntent = "read the agents' phases"
        let agents = try database.withStatement(
            """
            SELECT r.namespace, r.name,
                (SELECT json_extract(c.value, '$.message') FROM json_each(s.conditions) AS c
                    WHERE json_extract(c.value, '$.type') = 'Ready'),
                coalesce(v.restarts, 0), coalesce(v.crashes, 0)
            FROM resources AS r
            LEFT JOIN status AS s ON s.kind = r.kind AND s.namespace = r.namespace AND s.name = r.name
            LEFT JOIN supervision AS v ON v.kind = r.kind AND v.namespace = r.namespace AND v.name = r.name
            WHERE r.kind = 'Agent' ORDER BY r.namespace, r.name
            """, intent: agentsIntent
        ) { statement throws(StoreError) in
            var agents: [FleetGauges.Agent] = []
            while try statement.step(intent: agentsIntent) {
                agents.append(
                    FleetGauges.Agent(
                        id: ResourceID(kind: "Agent", namespace: statement.text(0), name: statement.text(1)),
                        phase: FleetGauges.Agent.phase(readyMessage: statement.optionalText(2)), restarts: statement.int(3),
                        crashes: statement.int(4)))
            }
            return agents
        }
        let stepsIntent = "count the run steps"
        let steps = try database.withStatement(
            "SELECT namespace, state, count(*) FROM run_steps GROUP BY namespace, state ORDER BY namespace, state", intent: stepsIntent
        ) { statement throws(StoreError) in
            var steps: [FleetGauges.StepCount] = []
            while try statement.step(intent: stepsIntent) {
                guard let state = StepState(rawValue: statement.text(1)) else { continue }
                steps.append(FleetGauges.StepCount(namespace: statement.text(0), state: state, count: statement.int(2)))
            }
            return steps
        }
        return FleetGauges(agents: agents, steps: steps, sources: try sources())
    }
}
