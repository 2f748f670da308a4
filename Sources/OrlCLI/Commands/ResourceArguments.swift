import ArgumentParser
import OrlCore
import OrlJSON

/// What `get`, `describe`, `delete` and `events` name on the command line, read one
/// way for all of them: `KIND`, `KIND NAME...`, or `KIND/NAME...` (kinds singular,
/// plural or short: `agent`, `agents`, `ag`).
struct ResourceSelection {
    /// The kinds to list when no names are given.
    var kinds: [ResourceKind]
    /// The named resources, when names are given.
    var references: [ResourceReference]
    /// `get all`.
    var isAll: Bool

    var isNamed: Bool { !references.isEmpty }

    /// With `bareNames`, words that are not a type name resources of that kind, as
    /// `kubectl logs POD` does: `orlctl logs writer`, `orlctl suspend writer researcher`.
    static func parse(_ arguments: [String], allowAll: Bool, bareNames: ResourceKind? = nil) throws -> ResourceSelection {
        guard let first = arguments.first else {
            throw ValidationError("name a resource type (e.g. agents) or a resource (e.g. agent/writer)")
        }
        if let bareNames, !first.contains("/"), (try? ResourceReference.kind(first)) == nil {
            guard arguments.allSatisfy({ !$0.contains("/") }) else {
                throw ValidationError("give names as NAME or KIND/NAME, not a mix")
            }
            return ResourceSelection(
                kinds: [bareNames], references: arguments.map { ResourceReference(kind: bareNames, name: $0) }, isAll: false)
        }
        if first.contains("/") {
            return ResourceSelection(kinds: [], references: try arguments.map(reference), isAll: false)
        }
        if allowAll && first.lowercased() == "all" {
            guard arguments.count == 1 else { throw ValidationError("`all` takes no names; name resources as KIND/NAME") }
            return ResourceSelection(kinds: ResourceKind.allCases, references: [], isAll: true)
        }
        let kind = try kind(first)
        var references: [ResourceReference] = []
        for name in arguments.dropFirst() {
            guard !name.contains("/") else {
                throw ValidationError(
                    "there is no need to give the type twice: use \(kind.rawValue.lowercased()) NAME or KIND/NAME, not both")
            }
            references.append(ResourceReference(kind: kind, name: name))
        }
        return ResourceSelection(kinds: [kind], references: references, isAll: false)
    }

    static func reference(_ text: String) throws -> ResourceReference {
        do {
            return try ResourceReference(parsing: text)
        } catch {
            throw ValidationError(error.message)
        }
    }

    static func kind(_ text: String) throws -> ResourceKind {
        do {
            return try ResourceReference.kind(text)
        } catch {
            throw ValidationError(error.message)
        }
    }
}

/// `Agent "x" not found in namespace "default" (did you mean "writer"?)`, or where a
/// resource of that name is.
enum NotFound {
    static func message(_ id: ResourceID, in reader: any StateReader) throws(StoreError) -> String {
        let message = "\(id.kind) \(Diagnostic.quoted(id.name)) not found in namespace \(Diagnostic.quoted(id.namespace))"
        let all = try reader.resources(kind: ResourceKind(rawValue: id.kind), namespace: nil)
        let elsewhere = all.filter { $0.id.name == id.name }.map(\.id.namespace)
        if let namespace = elsewhere.first {
            return message + "; it is in namespace \(elsewhere.map(Diagnostic.quoted).joined(separator: ", ")) (use -n \(namespace))"
        }
        let here = all.filter { $0.id.namespace == id.namespace }.map(\.id.name)
        return message + Suggestion.hint(for: id.name, among: here)
    }

    /// Prints each message as an error and ends with exit 1.
    static func fail(_ messages: [String], note: String? = nil) -> ExitCode {
        for message in messages { OrlctlMain.writeStandardError("orlctl: error: \(message)\n") }
        if let note { OrlctlMain.writeStandardError("orlctl: \(note)\n") }
        return ExitCode(ExitStatus.findings.rawValue)
    }
}

/// `-n NS`, shared by the commands that read resources.
struct NamespaceOption: ParsableArguments {
    @Option(name: [.short, .long], help: "The namespace.")
    var namespace: String = ResourceID.defaultNamespace
}
