import OrlCore
import OrlJSON

/// `orlctl get nodes`: the controller nodes sharing the state (docs/nodes.md).
enum NodeSelection {
    static let words: Set<String> = ["node", "nodes", "no"]

    /// The names given (empty for all nodes) when the arguments name nodes; nil otherwise.
    static func parse(_ arguments: [String]) -> [String]? {
        guard let first = arguments.first else { return nil }
        let parts = first.split(separator: "/", maxSplits: 1).map(String.init)
        guard let kind = parts.first, words.contains(kind.lowercased()) else { return nil }
        if parts.count == 2 { return arguments.compactMap { $0.split(separator: "/", maxSplits: 1).last.map(String.init) } }
        return Array(arguments.dropFirst())
    }
}

enum NodeRenderer {
    /// What `get nodes` shows of one node.
    struct Row {
        var record: NodeRecord
        var live: Bool
        /// Applied agents placed on it under its current lease.
        var agents: [ResourceID]
        var roles: [String]
    }

    static func rows(_ snapshot: NodeSnapshot, applied: Set<ResourceID>) -> [Row] {
        snapshot.nodes.map { node in
            let agents = snapshot.assignments.values.filter {
                $0.assignment == Assignment(node: node.name, generation: node.lease.generation) && applied.contains($0.agent)
            }.map(\.agent).sorted()
            let roles = snapshot.singletons.keys.filter { snapshot.holder(of: $0) == node.name }.sorted()
            return Row(record: node, live: node.lease.isLive(at: snapshot.now), agents: agents, roles: roles)
        }
    }

    static func status(_ row: Row) -> String {
        (row.live ? "Ready" : "NotReady") + (row.record.view.cordoned ? ",SchedulingDisabled" : "")
    }

    /// `in 8s` or `lapsed 3m ago`, by the database's clock.
    static func lease(_ lease: NodeLease, now: Timestamp) -> String {
        if lease.isLive(at: now) { return "expires in " + now.age(at: lease.expiresAt) }
        return "lapsed " + lease.expiresAt.age(at: now) + " ago"
    }

    static func labels(_ labels: [String: String]) -> String {
        labels.isEmpty ? "<none>" : labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }

    static func table(_ rows: [Row], now: Timestamp, wide: Bool) -> String {
        var header = ["NAME", "STATUS", "GENERATION", "LEASE", "AGENTS", "ROLES", "AGE"]
        if wide { header += ["LABELS", "PLACED"] }
        var lines = [header]
        for row in rows {
            var line = [
                row.record.name, status(row), String(row.record.lease.generation), lease(row.record.lease, now: now),
                String(row.agents.count),
                row.roles.isEmpty ? "<none>" : row.roles.joined(separator: ","), row.record.registeredAt.age(at: now),
            ]
            if wide {
                line += [
                    labels(row.record.view.labels), row.agents.isEmpty ? "<none>" : row.agents.map(\.description).joined(separator: ","),
                ]
            }
            lines.append(line)
        }
        return TextTable.render(lines)
    }

    static func object(_ row: Row, now: Timestamp) -> JSONValue {
        .object([
            ("apiVersion", .string(ResourceKind.apiVersion)),
            ("kind", .string("Node")),
            (
                "metadata",
                .object([
                    ("name", .string(row.record.name)),
                    ("labels", .object(row.record.view.labels.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
                ])
            ),
            ("spec", .object([("unschedulable", .bool(row.record.view.cordoned))])),
            (
                "status",
                .object([
                    ("live", .bool(row.live)),
                    ("leaseGeneration", .int(Int(row.record.lease.generation))),
                    ("leaseExpiresAt", .string(row.record.lease.expiresAt.description)),
                    ("renewedAt", .string(row.record.renewedAt.description)),
                    ("registeredAt", .string(row.record.registeredAt.description)),
                    ("observedAt", .string(now.description)),
                    ("roles", .array(row.roles.map { .string($0) })),
                    (
                        "agents",
                        .array(row.agents.map { .object([("namespace", .string($0.namespace)), ("name", .string($0.name))]) })
                    ),
                ])
            ),
        ])
    }

    static func list(_ rows: [Row], now: Timestamp) -> JSONValue {
        .object([
            ("apiVersion", .string(ResourceKind.apiVersion)), ("kind", .string("List")),
            ("items", .array(rows.map { object($0, now: now) })),
        ])
    }
}
