import ArgumentParser
import OrlCore
import OrlJSON
import OrlStore

/// `orlctl history`: the applies (and deletes), newest first.
struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Show the apply history, newest first.",
        discussion: "Every apply that changed something and every delete, with who ran it and its summary. -o json includes each plan."
    )

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    @Option(help: "Show at most this many entries.")
    var limit = 20

    @OptionGroup var state: StateOptions

    func validate() throws { guard limit > 0 else { throw ValidationError("--limit must be at least 1") } }

    func run() async throws {
        let store = try state.openState()
        let records: [ApplyRecord]
        do {
            records = try store.read { reader throws(StoreError) in try reader.history(limit: limit) }
        } catch {
            throw CommandFailure(message: error.description)
        }
        switch output {
        case .text:
            guard !records.isEmpty else { return OrlctlMain.writeStandardError("No history: nothing has been applied.\n") }
            var rows = [["NUMBER", "TIME", "SOURCE", "BY", "SUMMARY"]]
            for r in records { rows.append([String(r.number), r.appliedAt.rfc3339Seconds, r.source, r.appliedBy, r.summary]) }
            writeStandardOutput(TextTable.render(rows))
        case .json:
            let items = records.map { r in
                JSONValue.object([
                    ("number", .int(r.number)),
                    ("time", .string(r.appliedAt.description)),
                    ("source", .string(r.source)),
                    ("revision", r.revision.map { .string($0) }),
                    ("by", .string(r.appliedBy)),
                    ("summary", .string(r.summary)),
                    ("result", .string(r.result)),
                    // Stored as text; parsed back so that it is JSON here, not a string of it.
                    ("plan", (try? JSONParser.parse(r.plan, file: "<history>")).map(JSONValue.init) ?? .string(r.plan)),
                ])
            }
            writeStandardOutput(JSONValue.object([("history", .array(items))]).rendered())
        }
    }
}

/// `orlctl events`: what happened to resources, newest first.
struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Show events, newest first: creates, updates, prunes and deletes.",
        discussion: "Events outlive the resources they are about, so a deleted resource's events are still listed."
    )

    @Option(
        name: .customLong("for"),
        help: ArgumentHelp(
            "Only the events of this resource (KIND/NAME), run (run/ID) or git source (source/NAME).", valueName: "kind/name"))
    var resource: String?

    @OptionGroup var namespace: NamespaceOption

    @Option(help: "Show at most this many events.")
    var limit = 50

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    @OptionGroup var state: StateOptions

    func validate() throws {
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
        if let resource, !isRun(resource), SourceSelection.name(resource) == nil { _ = try ResourceSelection.reference(resource) }
        if let resource, isRun(resource) { _ = try RunReference.parse(resource) }
    }

    private func isRun(_ text: String) -> Bool { text.lowercased().hasPrefix("run/") || text.lowercased().hasPrefix("runs/") }

    func run() async throws {
        let store = try state.openState()
        var id =
            try resource.map { reference -> ResourceID? in
                if isRun(reference) { return nil }
                if let source = SourceSelection.name(reference) { return SourceRecord.eventSubject(source) }
                return try ResourceSelection.reference(reference).id(namespace: namespace.namespace)
            } ?? nil
        if let resource, isRun(resource) {
            // A run's events are under its workflow's namespace, wherever -n points.
            let run = try RunReference.parse(resource)
            let namespace = try readingRuns(try state.open()) { reader throws(StoreError) in try reader.run(run)?.workflow.namespace }
            id = ResourceID(kind: RunRecord.eventKind, namespace: namespace ?? self.namespace.namespace, name: run.rawValue)
        }
        let events: [StoreEvent]
        do {
            events = try store.read { reader throws(StoreError) in try reader.events(for: id, limit: limit) }
        } catch {
            throw CommandFailure(message: error.description)
        }
        switch output {
        case .text:
            guard !events.isEmpty else {
                return OrlctlMain.writeStandardError("No events found\(id.map { " for \($0.description)" } ?? "").\n")
            }
            let now = Caller.now
            let namespaced = events.contains { ($0.resource?.namespace ?? ResourceID.defaultNamespace) != ResourceID.defaultNamespace }
            var rows = [(namespaced ? ["NAMESPACE"] : []) + ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]]
            for event in events {
                let object = event.resource.map { "\($0.kind.lowercased())/\($0.name)" } ?? "<none>"
                rows.append(
                    (namespaced ? [event.resource?.namespace ?? ""] : [])
                        + [event.time.age(at: now), event.kind.rawValue, event.reason, object, event.message])
            }
            writeStandardOutput(TextTable.render(rows))
        case .json:
            let items = events.map { e in
                JSONValue.object([
                    ("number", .int(e.number)),
                    ("time", .string(e.time.description)),
                    ("type", .string(e.kind.rawValue)),
                    ("reason", .string(e.reason)),
                    (
                        "object",
                        e.resource.map {
                            .object([("kind", .string($0.kind)), ("namespace", .string($0.namespace)), ("name", .string($0.name))])
                        }
                            ?? .null
                    ),
                    ("message", .string(e.message)),
                ])
            }
            writeStandardOutput(JSONValue.object([("events", .array(items))]).rendered())
        }
    }
}
