import ArgumentParser
import OrlCore
import OrlJSON
import OrlPostgres
import OrlStore

/// `orlctl describe`: one resource on a page, as kubectl describe prints it.
struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "describe",
        abstract: "Show resources in detail: metadata, where they came from, spec, status and recent events.",
        discussion: """
            Name resources as KIND/NAME... or KIND NAME...; KIND alone describes every \
            resource of that kind in the namespace. run/ID describes a workflow run: each \
            step's state, attempts, agent, times, spend and error, pending approvals, the \
            attempts of failed or retried steps, and the run's events. The spec is printed as YAML with \
            secret-like values masked. Status follows kstatus (Ready, Reconciling, Stalled, \
            observedGeneration); until a controller has observed the current generation it is \
            Reconciling=True, reason NotObserved. Events are the newest 10. `describe state` \
            shows the state directory: its parts (the database with its WAL, logs, git \
            mirrors, code trees, agents' directories) and their sizes, human-readable in text \
            and in bytes with -o json|yaml (orlctl gc trims them).

            Exit codes: 0 described, 1 a named resource is not in the state (the others are \
            still printed), 2 error.
            """
    )

    @Argument(help: ArgumentHelp("KIND/NAME..., KIND NAME..., KIND, or run/ID....", valueName: "resource"))
    var resources: [String] = []

    @OptionGroup var namespace: NamespaceOption
    @OptionGroup var state: StateOptions

    @Option(name: [.short, .long], help: "Output format for describe state: text, json or yaml (resources: use get -o json|yaml).")
    var output: StateOutputFormat = .text

    enum StateOutputFormat: String, ExpressibleByArgument, CaseIterable {
        case text
        case json
        case yaml
    }

    static let eventLimit = 10

    func validate() throws {
        if resources == ["state"] { return }
        if output != .text {
            throw ValidationError("-o \(output.rawValue) is for describe state; for resources, use get -o \(output.rawValue)")
        }
        if try RunReference.described(resources) != nil { return }
        if try SourceSelection.parse(resources) != nil { return }
        _ = try ResourceSelection.parse(resources, allowAll: false)
    }

    func run() async throws {
        if resources == ["state"] {
            if state.postgresURL != nil { return try describePostgres() }
            let directory = PIDLock.absolute(state.resolvedDirectory)
            _ = try state.openStore()
            let parts = GC.parts(directory)
            switch output {
            case .text: writeStandardOutput("State:              \(directory)\n" + GC.sizes(parts))
            case .json: writeStandardOutput(GC.json(directory, parts).rendered())
            case .yaml: writeStandardOutput(YAMLEmitter.emit(GC.json(directory, parts)))
            }
            return
        }
        if let runs = try RunReference.described(resources) { return try RunDescription.describe(runs, state: state) }
        if let names = try SourceSelection.parse(resources) { return try describeSources(names) }
        let selection = try ResourceSelection.parse(resources, allowAll: false)
        let store = try state.openState()
        let namespace = self.namespace.namespace
        // Agents' logs are files of the state directory; a PostgreSQL state has none here.
        let directory = state.postgresURL == nil ? PIDLock.absolute(state.resolvedDirectory) : nil
        let (pages, missing): ([(ResourceView, [StoreEvent])], [String])
        do {
            (pages, missing) = try store.read { reader throws(StoreError) in
                var stored: [StoredResource] = []
                var missing: [String] = []
                if selection.isNamed {
                    for reference in selection.references {
                        let id = reference.id(namespace: namespace)
                        if let resource = try reader.resource(id) {
                            stored.append(resource)
                        } else {
                            missing.append(try NotFound.message(id, in: reader))
                        }
                    }
                } else {
                    for kind in selection.kinds { stored += try reader.resources(kind: kind, namespace: namespace) }
                }
                var pages: [(ResourceView, [StoreEvent])] = []
                for resource in stored {
                    var view = ResourceView(
                        resource, status: try reader.status(for: resource.id), supervision: try Get.supervision(of: resource.id, in: reader)
                    )
                    view.stateDirectory = directory
                    pages.append(
                        (
                            view,
                            try reader.events(for: resource.id, limit: Self.eventLimit)
                        ))
                }
                return (pages, missing)
            }
        } catch {
            throw CommandFailure(message: error.description)
        }
        let now = Caller.now
        if pages.isEmpty && missing.isEmpty {
            OrlctlMain.writeStandardError("No resources found in \(namespace) namespace.\n")
        }
        writeStandardOutput(pages.map { ResourceRenderer.describe($0.0, events: $0.1, now: now) }.joined(separator: "\n\n"))
        if !missing.isEmpty { throw NotFound.fail(missing) }
    }
}

extension Describe {
    /// `describe state` of a PostgreSQL state: the server, the schema and each table's size.
    func describePostgres() throws {
        guard let store = try state.open() as? PostgresStateStore else { return }
        let info: PostgresStateInfo
        do {
            info = try store.info()
        } catch {
            throw CommandFailure(message: error.description)
        }
        switch output {
        case .text: writeStandardOutput(GC.describe(info, url: state.label))
        case .json: writeStandardOutput(GC.json(info, url: state.label).rendered())
        case .yaml: writeStandardOutput(YAMLEmitter.emit(GC.json(info, url: state.label)))
        }
    }

    /// `describe source/NAME`: where the source reads, its status and its events.
    func describeSources(_ names: [String]) throws {
        let store = try state.openState()
        let (pages, missing): ([(SourceRecord, Int, [StoreEvent])], [String])
        do {
            (pages, missing) = try store.read { reader throws(StoreError) in
                let all = try reader.sources()
                var pages: [(SourceRecord, Int, [StoreEvent])] = []
                var missing: [String] = []
                for name in names.isEmpty ? all.map(\.name) : names {
                    guard let source = all.first(where: { $0.name == name }) else {
                        missing.append(SourceSelection.notFound(name, among: all.map(\.name)))
                        continue
                    }
                    pages.append(
                        (
                            source, try reader.inventory(source: source.applySource).count,
                            try reader.events(for: source.eventSubject, limit: Self.eventLimit)
                        ))
                }
                return (pages, missing)
            }
        } catch {
            throw CommandFailure(message: error.description)
        }
        if pages.isEmpty && missing.isEmpty { OrlctlMain.writeStandardError("No sources found.\n") }
        let now = Caller.now
        writeStandardOutput(pages.map { SourceRenderer.describe($0.0, resources: $0.1, events: $0.2, now: now) }.joined(separator: "\n\n"))
        if !missing.isEmpty { throw NotFound.fail(missing) }
    }
}
