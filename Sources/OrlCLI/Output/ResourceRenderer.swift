import Foundation
import OrlCore
import OrlJSON

/// A stored resource ready to show: its manifest parsed back and its status as kstatus
/// reads it.
struct ResourceView {
    var stored: StoredResource
    var manifest: Node
    var status: ResourceStatus
    var kind: ResourceKind?
    /// What the controller keeps of an agent's process; nil for other kinds, and for an
    /// agent no controller has looked at.
    var supervision: SupervisionRecord?
    /// The state directory, absolute, for the log file's path.
    var stateDirectory: String?

    init(_ stored: StoredResource, status: ResourceStatus?, supervision: SupervisionRecord? = nil) {
        self.stored = stored
        self.supervision = supervision
        self.manifest =
            (try? JSONParser.parse(stored.manifest, file: "<state>")) ?? Node(.object([]), at: .file("<state>"))
        self.status = ResourceStatus.effective(for: stored, stored: status)
        self.kind = ResourceKind(rawValue: stored.id.kind)
    }

    var spec: Node? { manifest["spec"] }

    var labels: [(String, String)] {
        (manifest["metadata"]?["labels"]?.members ?? []).map { ($0.key, $0.value.string ?? CanonicalJSON.encode($0.value)) }
    }

    var annotations: [(String, String)] {
        (manifest["metadata"]?["annotations"]?.members ?? []).map { ($0.key, $0.value.string ?? CanonicalJSON.encode($0.value)) }
    }

    /// `agent/writer`.
    var slashedName: String { "\(stored.id.kind.lowercased())/\(stored.id.name)" }

    /// `agents/writer.yaml:3`.
    var place: String { "\(stored.file):\(stored.line)" }

    /// The agent's phase as the controller last wrote it (the Ready condition's message
    /// starts with it); nil when no controller has.
    var phase: String? {
        guard let ready = status.condition(ResourceStatus.ready),
            let head = ready.message.split(separator: ":", maxSplits: 1).first,
            AgentPhase(rawValue: String(head)) != nil
        else { return nil }
        return String(head)
    }

    /// The process that runs now, if the controller started one and it has not ended.
    var runningProcess: ProcessIdentity? {
        guard let supervision, let process = supervision.process, supervision.exitedAt.map({ $0 < supervision.startedAt ?? $0 }) ?? true
        else { return nil }
        return process
    }
}

/// Resources as `get` and `describe` print them.
enum ResourceRenderer {
    /// The object of `get -o json|yaml`: the manifest as applied (secret-like values
    /// masked), metadata completed with what the state knows, and the status.
    static func object(_ view: ResourceView) -> JSONValue {
        let r = view.stored
        var annotations = view.annotations.map { ($0.0, JSONValue.string($0.1)) }
        annotations += [
            ("orl.dev/source", .string(r.source)),
            ("orl.dev/file", .string(view.place)),
            ("orl.dev/applied-at", .string(r.appliedAt.rfc3339Seconds)),
            ("orl.dev/applied-by", .string(r.appliedBy)),
        ]
        if let revision = r.revision { annotations.append(("orl.dev/revision", .string(revision))) }
        if let root = r.codeRoot { annotations.append(("orl.dev/code-root", .string(root))) }
        let labels = view.labels.map { ($0.0, JSONValue.string($0.1)) }
        let metadata = JSONValue.object([
            ("name", .string(r.id.name)),
            ("namespace", .string(r.id.namespace)),
            ("labels", labels.isEmpty ? nil : .object(labels)),
            ("annotations", .object(annotations)),
            ("generation", .int(r.generation)),
            // Opaque, as in Kubernetes: compare for equality, do not do arithmetic.
            ("resourceVersion", .string(String(r.resourceVersion))),
        ])
        var members: [(String, JSONValue)] = [
            ("apiVersion", .string(view.manifest["apiVersion"]?.string ?? ResourceKind.apiVersion)),
            ("kind", .string(r.id.kind)),
            ("metadata", metadata),
        ]
        for member in view.manifest.members ?? [] where !["apiVersion", "kind", "metadata", "status"].contains(member.key) {
            members.append((member.key, JSONValue(Sensitivity.masked(member.value))))
        }
        members.append(("status", status(view)))
        return .object(members)
    }

    /// The status, for an agent with what the tables show of its process as fields of
    /// their own (kubectl's columns come from the object too): `phase`, `reason` and
    /// `message` (of Ready, when not ready), `pid` and `startTime` while it runs,
    /// `restarts`, and `lastExit` (`exitCode` or `signal`, `reason`, `finishedAt`).
    static func status(_ view: ResourceView) -> JSONValue {
        guard view.kind == .agent, case .object(let conditions) = view.status.json else { return view.status.json }
        let ready = view.status.condition(ResourceStatus.ready)
        let notReady = ready.flatMap { $0.status == .true ? nil : $0 }
        let supervision = view.supervision
        let running = view.runningProcess
        let lastExit: JSONValue? = supervision?.lastExit.map { exit in
            let (number, reason): ((String, JSONValue), String) =
                switch exit {
                case .exited(let code): (("exitCode", .int(Int(code))), code == 0 ? "Completed" : "Error")
                case .signaled(let signal): (("signal", .int(Int(signal))), "Signaled")
                }
            return .object([number, ("reason", .string(reason)), ("finishedAt", supervision?.exitedAt.map { .string($0.rfc3339Seconds) })])
        }
        let process: [(String, JSONValue?)] = [
            ("phase", .string(view.phase ?? "Unknown")),
            ("reason", notReady.map { .string($0.reason) }),
            ("message", notReady.map { .string($0.message) }),
            ("pid", running.map { .int(Int($0.pid)) }),
            ("startTime", running == nil ? nil : supervision?.startedAt.map { .string($0.rfc3339Seconds) }),
            ("restarts", .int(supervision?.restarts ?? 0)),
            ("lastExit", lastExit),
            // The node that supervises it (`controller --node`), under its lease generation.
            ("node", supervision?.node.map { .string($0.node) }),
            ("nodeGeneration", supervision?.node.map { .int(Int($0.generation)) }),
        ]
        return .object(process + conditions.map { ($0.0, $0.1) })
    }

    static func list(_ views: [ResourceView]) -> JSONValue {
        .object([("apiVersion", .string(ResourceKind.apiVersion)), ("kind", .string("List")), ("items", .array(views.map(object)))])
    }

    // MARK: Tables

    /// One table per kind, as `kubectl get` prints them; with several kinds (`get all`)
    /// names are `kind/name` and tables are separated by a blank line.
    static func tables(_ views: [ResourceView], allNamespaces: Bool, wide: Bool, qualifyNames: Bool, now: Timestamp) -> String {
        var groups: [(String, [ResourceView])] = []
        for view in views {
            if let i = groups.firstIndex(where: { $0.0 == view.stored.id.kind }) {
                groups[i].1.append(view)
            } else {
                groups.append((view.stored.id.kind, [view]))
            }
        }
        return groups.map { kind, views in
            let columns = self.columns(for: ResourceKind(rawValue: kind))
            let wideColumns = wide ? self.wideColumns(for: ResourceKind(rawValue: kind)) : []
            var header = allNamespaces ? ["NAMESPACE", "NAME"] : ["NAME"]
            header += columns.map(\.title) + ["AGE"] + wideColumns.map(\.title)
            if wide { header += ["SOURCE", "FILE"] }
            var rows = [header]
            for view in views {
                var row = allNamespaces ? [view.stored.id.namespace] : []
                row.append(qualifyNames ? view.slashedName : view.stored.id.name)
                row += columns.map { $0.value(view) }
                row.append(view.stored.appliedAt.age(at: now))
                row += wideColumns.map { $0.value(view) }
                if wide { row += [view.stored.source, view.place] }
                rows.append(row)
            }
            return TextTable.render(rows)
        }.joined(separator: "\n")
    }

    struct Column {
        var title: String
        var value: (ResourceView) -> String
    }

    static func columns(for kind: ResourceKind?) -> [Column] {
        switch kind {
        case .modelProvider?:
            [
                Column(title: "API-STYLE") { $0.spec?["apiStyle"]?.string ?? "<none>" },
                Column(title: "MODELS") { short(($0.spec?["models"]?.elements ?? []).compactMap { $0["name"]?.string }) },
            ]
        case .tool?:
            [
                Column(title: "TYPE") { $0.spec?["type"]?.string ?? "<none>" },
                Column(title: "CAPABILITIES") { short(strings($0.spec?["capabilities"])) },
                Column(title: "RISK") { $0.spec?["risk"]?.string ?? "<none>" },
            ]
        case .agent?:
            [
                Column(title: "MODEL") { $0.spec?["model"]?.string ?? "<none>" },
                Column(title: "TOOLS") { short(strings($0.spec?["tools"])) },
                Column(title: "GENERATION") { String($0.stored.generation) },
                Column(title: "PHASE") { $0.phase ?? "-" },
                Column(title: "PID") { $0.runningProcess.map { String($0.pid) } ?? "-" },
                Column(title: "RESTARTS") { $0.supervision.map { String($0.restarts) } ?? "-" },
            ]
        case .policy?:
            [
                Column(title: "APPLIES-TO") { appliesTo($0.spec?["appliesTo"]) },
                Column(title: "ALLOW") { ruleCount($0.spec?["allow"]) },
                Column(title: "DENY") { ruleCount($0.spec?["deny"]) },
            ]
        case .budget?:
            [
                Column(title: "SCOPE") { $0.spec?["scope"]?.string ?? "shared" },
                Column(title: "LIMITS") { limits($0.spec?["limits"]) },
                Column(title: "ON-EXCEEDED") { $0.spec?["onExceeded"]?.string ?? "halt" },
            ]
        case .workflow?:
            [
                Column(title: "STEPS") { String($0.spec?["steps"]?.elements?.count ?? 0) },
                Column(title: "TRIGGERS") { view in
                    short(
                        (view.spec?["triggers"]?.elements ?? []).map { trigger in
                            let type = trigger["type"]?.string ?? "?"
                            return trigger["cron"]?.string.map { "\(type)(\($0))" } ?? type
                        })
                },
            ]
        case .alert?:
            [
                Column(title: "EVENTS") { short(strings($0.spec?["events"])) },
                Column(title: "FORMAT") { $0.spec?["webhook"]?["format"]?.string ?? "json" },
            ]
        case nil:
            [Column(title: "GENERATION") { String($0.stored.generation) }]
        }
    }

    /// What `-o wide` adds before SOURCE and FILE.
    static func wideColumns(for kind: ResourceKind?) -> [Column] {
        guard kind == .agent else { return [] }
        return [
            Column(title: "STARTED") { view in view.runningProcess == nil ? "-" : view.supervision?.startedAt?.rfc3339Seconds ?? "-" },
            Column(title: "LAST-EXIT") { $0.supervision?.lastExit?.stored ?? "-" },
            Column(title: "ISOLATION") { $0.spec?["runtime"]?["isolation"]?.string ?? "strict" },
        ]
    }

    static func strings(_ node: Node?) -> [String] { (node?.elements ?? []).compactMap(\.string) }

    /// `a,b,c`, or `a,b,c +2` when longer; `<none>` when empty.
    static func short(_ items: [String], max: Int = 3) -> String {
        guard !items.isEmpty else { return "<none>" }
        let head = items.prefix(max).joined(separator: ",")
        return items.count > max ? "\(head) +\(items.count - max)" : head
    }

    /// `researcher`, `team=content`, `role in (publishing)`.
    static func appliesTo(_ node: Node?) -> String {
        guard let node else { return "<none>" }
        var parts = strings(node["agents"])
        if let selector = node["selector"] { parts.append(self.selector(selector)) }
        return parts.isEmpty ? "<none>" : parts.joined(separator: ",")
    }

    /// A label selector in kubectl's `-l` syntax.
    static func selector(_ node: Node) -> String {
        var parts = (node["matchLabels"]?.members ?? []).map { "\($0.key)=\($0.value.string ?? "")" }
        for expression in node["matchExpressions"]?.elements ?? [] {
            let key = expression["key"]?.string ?? "?"
            let values = strings(expression["values"]).joined(separator: ",")
            switch expression["operator"]?.string {
            case "In": parts.append("\(key) in (\(values))")
            case "NotIn": parts.append("\(key) notin (\(values))")
            case "Exists": parts.append(key)
            case "DoesNotExist": parts.append("!\(key)")
            default: parts.append(key)
            }
        }
        return parts.joined(separator: ",")
    }

    /// How many entries the allow or deny lists hold together.
    static func ruleCount(_ node: Node?) -> String {
        String((node?.members ?? []).reduce(0) { $0 + ($1.value.elements?.count ?? 1) })
    }

    /// `day: $10, 5M tokens; month: $150, 60M tokens`.
    static func limits(_ node: Node?) -> String {
        let limits = (node?.elements ?? []).map { limit in
            var caps: [String] = []
            if let usd = limit["usd"]?.number {
                caps.append(usd.integer.map { "$\($0)" } ?? "$" + String(format: "%.2f", usd.double))
            }
            if let tokens = limit["tokens"]?.number?.integer { caps.append("\(compact(tokens)) tokens") }
            return "\(limit["window"]?.string ?? "?"): " + caps.joined(separator: ", ")
        }
        return limits.isEmpty ? "<none>" : limits.joined(separator: "; ")
    }

    /// `5M`, `200k`, `1500`.
    /// `2,410`: a count with thousands separators.
    static func count(_ n: Int) -> String {
        let digits = Array(String(n.magnitude))
        var out = ""
        for (i, d) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(d)
        }
        return (n < 0 ? "-" : "") + out
    }

    static func compact(_ n: Int) -> String {
        if n >= 1_000_000, n % 1_000_000 == 0 { return "\(n / 1_000_000)M" }
        if n >= 1000, n % 1000 == 0 { return "\(n / 1000)k" }
        return String(n)
    }

    // MARK: Describe

    /// kubectl describe's page: fields, the spec as YAML, Status and Events.
    static func describe(_ view: ResourceView, events: [StoreEvent], now: Timestamp) -> String {
        let r = view.stored
        var out = ""
        func field(_ label: String, _ value: String) {
            out += (label + ":").padding(toLength: 20) + value + "\n"
        }
        func pairs(_ label: String, _ entries: [(String, String)], separator: String) {
            guard let first = entries.first else { return field(label, "<none>") }
            field(label, first.0 + separator + first.1)
            for entry in entries.dropFirst() { out += String(repeating: " ", count: 20) + entry.0 + separator + entry.1 + "\n" }
        }
        field("Name", r.id.name)
        field("Namespace", r.id.namespace)
        field("Kind", r.id.kind)
        pairs("Labels", view.labels, separator: "=")
        pairs("Annotations", view.annotations, separator: ": ")
        field("Source", r.source)
        field("File", view.place)
        field("Revision", r.revision ?? "<none>")
        if view.kind == .agent || view.kind == .tool { field("Code", r.codeRoot ?? "<none>") }
        field("Applied", "\(r.appliedAt.rfc3339Seconds) (\(r.appliedAt.age(at: now)) ago) by \(r.appliedBy)")
        field("Generation", String(r.generation))
        field("Resource Version", String(r.resourceVersion))
        out += "Spec:\n"
        if let spec = view.spec {
            let yaml = YAMLEmitter.emit(JSONValue(Sensitivity.masked(spec)))
            for line in yaml.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
                out += line.isEmpty ? "\n" : "  " + line + "\n"
            }
        }
        out += "Status:\n"
        let status = view.status
        out += "  " + "Summary:".padding(toLength: 22) + status.summary(generation: r.generation) + "\n"
        out += "  " + "Observed Generation:".padding(toLength: 22) + (status.observedGeneration.map(String.init) ?? "<none>") + "\n"
        if status.conditions.isEmpty {
            out += "  Conditions:           <none>\n"
        } else {
            out += "  Conditions:\n"
            var rows = [["TYPE", "STATUS", "REASON", "MESSAGE", "LAST-TRANSITION"]]
            for c in status.conditions {
                rows.append([c.type, c.status.rawValue, c.reason, c.message, c.lastTransitionTime.map { $0.age(at: now) } ?? "<none>"])
            }
            out += TextTable.render(rows, indent: 4)
        }
        if view.kind == .agent {
            let process = view.supervision
            out += "Process:\n"
            func line(_ label: String, _ value: String) { out += "  " + (label + ":").padding(toLength: 22) + value + "\n" }
            line("Phase", view.phase ?? "<unknown>")
            if let node = process?.node { line("Node", "\(node.node) (lease generation \(node.generation))") }
            line("PID", view.runningProcess.map { String($0.pid) } ?? "<none>")
            if let started = process?.startedAt, view.runningProcess != nil {
                line("Started", "\(started.rfc3339Seconds) (\(started.age(at: now)) ago)")
            } else {
                line("Started", "<none>")
            }
            line("Restarts", process.map { String($0.restarts) } ?? "0")
            if let exit = process?.lastExit {
                line("Last Exit", exit.description + (process?.exitedAt.map { " at \($0.rfc3339Seconds) (\($0.age(at: now)) ago)" } ?? ""))
            } else {
                line("Last Exit", "<none>")
            }
            if let state = view.stateDirectory {
                line("Log File", "\(state)/logs/\(r.id.namespace)/\(r.id.name).log")
            }
        }
        out += eventsSection(events, now: now)
        return out
    }

    /// The Events section that ends a describe page (of a resource, or of a run).
    static func eventsSection(_ events: [StoreEvent], now: Timestamp) -> String {
        guard !events.isEmpty else { return "Events:             <none>\n" }
        var rows = [["TYPE", "REASON", "AGE", "MESSAGE"]]
        for event in events { rows.append([event.kind.rawValue, event.reason, event.time.age(at: now), event.message]) }
        return "Events:\n" + TextTable.render(rows, indent: 2)
    }
}
