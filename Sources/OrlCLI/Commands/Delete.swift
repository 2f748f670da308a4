import ArgumentParser
import OrlCore
import OrlJSON
import OrlManifests
import OrlStore

/// `orlctl delete`: remove resources from the state, all or nothing.
struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete resources from the state, all or nothing.",
        discussion: """
            Name resources as KIND/NAME... or KIND NAME..., or give manifests with -f: the \
            resources they define are deleted (the manifests must be valid; the permission \
            audit's findings do not stop a delete). Everything is deleted in one transaction, \
            recorded in the history (source "delete") with a Deleted event per resource.

            Exit codes: 0 deleted (with --ignore-not-found, also when nothing was there), 1 a \
            resource is not in the state or the manifests have errors (nothing deleted), 2 \
            error.
            """
    )

    @Argument(help: ArgumentHelp("KIND/NAME... or KIND NAME....", valueName: "resource"))
    var resources: [String] = []

    @Option(
        name: [.short, .customLong("filename")],
        help: ArgumentHelp(
            "Delete what these manifests define: a file or directory, or - for standard input. Repeatable.", valueName: "path"))
    var files: [String] = []

    @OptionGroup var namespace: NamespaceOption

    @Flag(help: "Print what would be deleted and delete nothing.")
    var dryRun = false

    @Flag(help: "Treat resources that are not in the state as already deleted.")
    var ignoreNotFound = false

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    @OptionGroup var state: StateOptions

    func validate() throws {
        if !files.isEmpty && !resources.isEmpty { throw ValidationError("give resources by name or with -f, not both") }
        if files.isEmpty {
            let selection = try ResourceSelection.parse(resources, allowAll: false)
            guard selection.isNamed else {
                throw ValidationError("name the resources to delete (KIND NAME... or KIND/NAME...); delete has no --all")
            }
        }
    }

    func run() async throws {
        let ids = files.isEmpty ? try namedIDs() : try await manifestIDs()
        let store = try state.openState()
        let outcome: DeleteOutcome
        do {
            outcome = try DeleteOperation.delete(
                ids, from: store, ignoreNotFound: ignoreNotFound, dryRun: dryRun, by: Caller.identity, now: Caller.now)
        } catch {
            switch error {
            case .store(let e): throw CommandFailure(message: e.description)
            case .notFound(let missing):
                let messages: [String]
                do {
                    messages = try store.read { reader throws(StoreError) in
                        var messages: [String] = []
                        for id in missing { messages.append(try NotFound.message(id, in: reader)) }
                        return messages
                    }
                } catch {
                    throw CommandFailure(message: error.description)
                }
                throw NotFound.fail(messages, note: dryRun ? nil : "nothing was deleted (--ignore-not-found deletes the rest)")
            }
        }
        switch output {
        case .text:
            let suffix = dryRun ? " (dry run)" : ""
            writeStandardOutput(
                outcome.deleted.map { "\($0.id.kind.lowercased()) \(Diagnostic.quoted($0.id.name)) deleted\(suffix)\n" }.joined())
        case .json:
            writeStandardOutput(
                JSONValue.object([
                    ("deleted", .bool(!dryRun && !outcome.deleted.isEmpty)),
                    ("dryRun", .bool(dryRun)),
                    ("historyNumber", outcome.historyNumber.map { .int($0) }),
                    ("resources", .array(outcome.deleted.map { identity($0.id) })),
                    ("notFound", .array(outcome.missing.map(identity))),
                ]).rendered())
        }
    }

    private func identity(_ id: ResourceID) -> JSONValue {
        .object([("kind", .string(id.kind)), ("namespace", .string(id.namespace)), ("name", .string(id.name))])
    }

    private func namedIDs() throws -> [ResourceID] {
        try ResourceSelection.parse(resources, allowAll: false).references.map { $0.id(namespace: namespace.namespace) }
    }

    /// What the manifests define; any error that makes them unreadable stops the delete.
    private func manifestIDs() async throws -> [ResourceID] {
        let report = try await ManifestLoader(standardInput: CommandContext.current.standardInputBytes).load(
            paths: files, output: output, stopsOn: Explain.preventsExplaining, notDone: "nothing was deleted")
        // What refers to others goes first (workflows before agents before tools), as prune does.
        let rank = { (id: ResourceID) in ResourceKind(rawValue: id.kind).flatMap { ResourceKind.allCases.firstIndex(of: $0) } ?? 0 }
        return report.fleet.resources.map(\.id).sorted { a, b in
            rank(a) != rank(b) ? rank(a) > rank(b) : (a.namespace, a.name) < (b.namespace, b.name)
        }
    }
}
