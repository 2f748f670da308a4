import ArgumentParser
import OrlCore
import OrlJSON
import OrlStore

enum GetOutputFormat: String, ExpressibleByArgument, CaseIterable {
    case wide
    case json
    case yaml
    case name
}

/// `orlctl get`: list resources from the state, as kubectl get does.
struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "List resources in the state, as kubectl get does.",
        discussion: """
            KIND is singular, plural or short (agent, agents, ag) or all. Name resources as \
            KIND NAME... or KIND/NAME.... AGE is the time since the resource was last applied. \
            Secret-like values are masked in -o json and -o yaml.

            Exit codes: 0 listed (an empty list too: "No resources found" goes to standard \
            error), 1 a named resource is not in the state (the others are still printed), \
            2 error (bad usage, bad selector, unreadable state).
            """
    )

    @Argument(help: ArgumentHelp("KIND [NAME...], KIND/NAME..., or all.", valueName: "kind"))
    var resources: [String] = []

    @OptionGroup var namespace: NamespaceOption

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "List across all namespaces.")
    var allNamespaces = false

    @Option(name: [.short, .long], help: "Output format: wide, json, yaml or name (default: a table).")
    var output: GetOutputFormat?

    @Option(
        name: [.customShort("l"), .customLong("selector")],
        help: ArgumentHelp(
            "Label selector: k=v, k!=v, k in (a,b), k notin (a), k, !k; comma-separated, all must hold.", valueName: "selector"))
    var selector: String?

    @OptionGroup var state: StateOptions

    func validate() throws {
        if NodeSelection.parse(resources) != nil {
            if selector != nil { throw ValidationError("nodes are not selected by -l; name them") }
            return
        }
        if try SourceSelection.parse(resources) != nil {
            if selector != nil { throw ValidationError("sources have no labels to select by (-l)") }
            return
        }
        let selection = try ResourceSelection.parse(resources, allowAll: true)
        if selection.isNamed && allNamespaces {
            throw ValidationError("a resource cannot be retrieved by name across all namespaces; use -n NAMESPACE")
        }
        if selection.isNamed && selector != nil { throw ValidationError("names cannot be given together with a selector (-l)") }
        _ = try labelSelector()
    }

    func labelSelector() throws -> LabelSelector? {
        guard let selector else { return nil }
        do {
            return try LabelSelector(parsing: selector)
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// An agent's supervision record; nil for other kinds.
    static func supervision(of id: ResourceID, in reader: any StateReader) throws(StoreError) -> SupervisionRecord? {
        id.kind == ResourceKind.agent.rawValue ? try reader.supervision(for: id) : nil
    }

    func run() async throws {
        if let names = try SourceSelection.parse(resources) { return try getSources(names) }
        if let names = NodeSelection.parse(resources) { return try getNodes(names) }
        let selection = try ResourceSelection.parse(resources, allowAll: true)
        let selector = try labelSelector()
        let store = try state.openState()
        let namespace = allNamespaces ? nil : self.namespace.namespace
        let (views, missing): ([ResourceView], [String])
        do {
            (views, missing) = try store.read { reader throws(StoreError) in
                var views: [ResourceView] = []
                var missing: [String] = []
                if selection.isNamed {
                    for reference in selection.references {
                        let id = reference.id(namespace: self.namespace.namespace)
                        if let stored = try reader.resource(id) {
                            views.append(
                                ResourceView(
                                    stored, status: try reader.status(for: id), supervision: try Self.supervision(of: id, in: reader)))
                        } else {
                            missing.append(try NotFound.message(id, in: reader))
                        }
                    }
                } else {
                    for kind in selection.kinds {
                        for stored in try reader.resources(kind: kind, namespace: namespace) {
                            let view = ResourceView(
                                stored, status: try reader.status(for: stored.id),
                                supervision: try Self.supervision(of: stored.id, in: reader))
                            if let selector, !selector.matches(Dictionary(view.labels, uniquingKeysWith: { a, _ in a })) { continue }
                            views.append(view)
                        }
                    }
                }
                return (views, missing)
            }
        } catch {
            throw CommandFailure(message: error.description)
        }

        let now = Caller.now
        switch output {
        case nil, .wide?:
            if views.isEmpty && missing.isEmpty {
                let scope = namespace.map { " in \($0) namespace" } ?? ""
                OrlctlMain.writeStandardError("No resources found\(scope).\n")
            } else if !views.isEmpty {
                writeStandardOutput(
                    ResourceRenderer.tables(
                        views, allNamespaces: allNamespaces, wide: output == .wide,
                        qualifyNames: selection.isAll || selection.kinds.isEmpty,
                        now: now))
            }
        case .name?:
            writeStandardOutput(views.map { $0.slashedName + "\n" }.joined())
        case .json?, .yaml?:
            // One named resource is printed as itself, anything else as a List.
            let single = selection.references.count == 1 && views.count == 1
            let value = single ? ResourceRenderer.object(views[0]) : ResourceRenderer.list(views)
            if !(single == false && views.isEmpty && !missing.isEmpty) {
                writeStandardOutput(output == .json ? value.rendered() : YAMLEmitter.emit(value))
            }
        }
        if !missing.isEmpty { throw NotFound.fail(missing) }
    }
}

extension Get {
    /// `get sources`: the git sources that sync and watch keep, with their status.
    func getSources(_ names: [String]) throws {
        let store = try state.openState()
        let (sources, missing): ([SourceRecord], [String])
        do {
            (sources, missing) = try store.read { reader throws(StoreError) in
                let all = try reader.sources()
                guard !names.isEmpty else { return (all, []) }
                var found: [SourceRecord] = []
                var missing: [String] = []
                for name in names {
                    if let source = all.first(where: { $0.name == name }) {
                        found.append(source)
                    } else {
                        missing.append(SourceSelection.notFound(name, among: all.map(\.name)))
                    }
                }
                return (found, missing)
            }
        } catch {
            throw CommandFailure(message: error.description)
        }
        switch output {
        case nil, .wide?:
            if sources.isEmpty && missing.isEmpty {
                OrlctlMain.writeStandardError("No sources found.\n")
            } else if !sources.isEmpty {
                writeStandardOutput(SourceRenderer.table(sources, wide: output == .wide, now: Caller.now))
            }
        case .name?:
            writeStandardOutput(sources.map { "source/\($0.name)\n" }.joined())
        case .json?, .yaml?:
            let single = names.count == 1 && sources.count == 1
            let value = single ? SourceRenderer.object(sources[0]) : SourceRenderer.list(sources)
            if !(sources.isEmpty && !missing.isEmpty) {
                writeStandardOutput(output == .json ? value.rendered() : YAMLEmitter.emit(value))
            }
        }
        if !missing.isEmpty { throw NotFound.fail(missing) }
    }
}
