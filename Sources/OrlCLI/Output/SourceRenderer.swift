import ArgumentParser
import OrlCore
import OrlJSON

/// `source/NAME`, `source NAME`, `sources`: how the command line names git sources,
/// which are not manifest resources but share get, describe, suspend, resume and events.
enum SourceSelection {
    static let words: Set<String> = ["source", "sources", "src"]

    /// The names given (empty for all sources) when the arguments name sources; nil when
    /// they name resources.
    static func parse(_ arguments: [String]) throws -> [String]? {
        guard let first = arguments.first else { return nil }
        let kind = first.split(separator: "/", maxSplits: 1).first.map { String($0).lowercased() } ?? ""
        guard words.contains(kind) else {
            if arguments.contains(where: { isSource($0) }) {
                throw ValidationError("name sources apart from resources: source/NAME... on its own")
            }
            return nil
        }
        if first.contains("/") {
            return try arguments.map { argument in
                guard isSource(argument), let name = argument.split(separator: "/", maxSplits: 1).last, argument.contains("/") else {
                    throw ValidationError("name sources apart from resources: source/NAME... on its own")
                }
                return String(name)
            }
        }
        for name in arguments.dropFirst() where name.contains("/") {
            throw ValidationError("there is no need to give the type twice: use source NAME or source/NAME, not both")
        }
        return Array(arguments.dropFirst())
    }

    /// `source/NAME` as `events --for` takes it; nil when it names a resource.
    static func name(_ reference: String) -> String? {
        guard isSource(reference), reference.contains("/") else { return nil }
        return reference.split(separator: "/", maxSplits: 1).last.map(String.init)
    }

    private static func isSource(_ argument: String) -> Bool {
        words.contains(argument.split(separator: "/", maxSplits: 1).first.map { String($0).lowercased() } ?? "")
    }

    /// `source "x" not found` with a close match.
    static func notFound(_ name: String, among names: [String]) -> String {
        "source \(Diagnostic.quoted(name)) not found" + Suggestion.hint(for: name, among: names)
    }
}

/// Git sources as `get` and `describe` print them.
enum SourceRenderer {
    static func table(_ sources: [SourceRecord], wide: Bool, now: Timestamp) -> String {
        var header = ["NAME", "URL", "REF", "APPLIED", "RESULT", "SUSPENDED", "AGE"]
        if wide { header += ["PATH", "ATTEMPTED", "MESSAGE"] }
        var rows = [header]
        for s in sources {
            var row = [
                s.name, s.url, s.ref ?? "<default>", s.lastApplied.map(SourceSync.short) ?? "<none>", s.result?.rawValue ?? "<none>",
                s.isSuspended ? "True" : "False", s.lastAttemptedAt?.age(at: now) ?? "<none>",
            ]
            if wide { row += [s.path ?? "<all>", s.lastAttempted.map(SourceSync.short) ?? "<none>", s.message] }
            rows.append(row)
        }
        return TextTable.render(rows)
    }

    /// The object of `get sources -o json|yaml`, in the shape of a resource.
    static func object(_ s: SourceRecord) -> JSONValue {
        .object([
            ("apiVersion", .string(ResourceKind.apiVersion)),
            ("kind", .string(SourceRecord.kind)),
            ("metadata", .object([("name", .string(s.name))])),
            (
                "spec",
                .object([
                    ("url", .string(s.url)),
                    ("ref", s.ref.map { .string($0) }),
                    ("path", s.path.map { .string($0) }),
                    ("suspend", .bool(s.isSuspended)),
                ])
            ),
            (
                "status",
                .object([
                    ("lastAppliedRevision", s.lastApplied.map { .string($0) }),
                    ("lastAppliedAt", s.lastAppliedAt.map { .string($0.rfc3339Seconds) }),
                    ("lastAttemptedRevision", s.lastAttempted.map { .string($0) }),
                    ("lastAttemptedAt", s.lastAttemptedAt.map { .string($0.rfc3339Seconds) }),
                    ("result", s.result.map { .string($0.rawValue) }),
                    ("message", .string(s.message)),
                    ("failures", .int(s.failures)),
                    ("suspendedAt", s.suspendedAt.map { .string($0.rfc3339Seconds) }),
                    ("suspendedBy", s.suspendedBy.map { .string($0) }),
                ])
            ),
        ])
    }

    static func list(_ sources: [SourceRecord]) -> JSONValue {
        .object([("apiVersion", .string(ResourceKind.apiVersion)), ("kind", .string("List")), ("items", .array(sources.map(object)))])
    }

    static func describe(_ s: SourceRecord, resources: Int, events: [StoreEvent], now: Timestamp) -> String {
        var out = ""
        func field(_ label: String, _ value: String) { out += (label + ":").padding(toLength: 20) + value + "\n" }
        func time(_ t: Timestamp?) -> String { t.map { "\($0.rfc3339Seconds) (\($0.age(at: now)) ago)" } ?? "<none>" }
        field("Name", s.name)
        field("Kind", SourceRecord.kind)
        field("URL", s.url)
        field("Ref", s.ref ?? "<the remote's default branch>")
        field("Path", s.path ?? "<the whole tree>")
        field("Inventory", "\(s.applySource) (\(DiagnosticRenderer.plural(resources, "resource")))")
        field("Suspended", s.suspendedAt.map { "since \($0.rfc3339Seconds) by \(s.suspendedBy ?? "?")" } ?? "False")
        out += "Status:\n"
        func line(_ label: String, _ value: String) { out += "  " + (label + ":").padding(toLength: 22) + value + "\n" }
        line("Last Applied", s.lastApplied ?? "<none>")
        line("Applied At", time(s.lastAppliedAt))
        line("Last Attempted", s.lastAttempted ?? "<none>")
        line("Attempted At", time(s.lastAttemptedAt))
        line("Result", s.result?.rawValue ?? "<none>")
        line("Message", s.message.isEmpty ? "<none>" : s.message)
        if s.failures > 0 && s.result?.isRevisionFailure == true { line("Failures", String(s.failures)) }
        if events.isEmpty {
            out += "Events:             <none>\n"
        } else {
            out += "Events:\n"
            var rows = [["TYPE", "REASON", "AGE", "MESSAGE"]]
            for event in events { rows.append([event.kind.rawValue, event.reason, event.time.age(at: now), event.message]) }
            out += TextTable.render(rows, indent: 2)
        }
        return out
    }
}
