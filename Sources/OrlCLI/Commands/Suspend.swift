import ArgumentParser
import OrlCore
import OrlStore

/// `orlctl suspend` and `orlctl resume`: an imperative hold on agents, kept in the state
/// apart from their manifests so that a re-apply does not undo it (as `flux suspend`).
struct HoldArguments: ParsableArguments {
    @Argument(help: ArgumentHelp("agent/NAME... or agent NAME..., or source/NAME... for git sources.", valueName: "agent"))
    var resources: [String] = []

    @Flag(help: "Every agent in the namespace (every agent anywhere with -A).")
    var all = false

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "With --all: across all namespaces.")
    var allNamespaces = false

    @OptionGroup var namespace: NamespaceOption
    @OptionGroup var state: StateOptions

    func validate() throws {
        if let names = try SourceSelection.parse(resources) {
            guard !all, !allNamespaces else { throw ValidationError("--all and -A take agents; name sources as source/NAME") }
            guard !names.isEmpty else { throw ValidationError("name the sources (source/NAME...)") }
            return
        }
        if all {
            guard resources.isEmpty else { throw ValidationError("give agents by name or --all, not both") }
            return
        }
        if allNamespaces { throw ValidationError("-A goes with --all") }
        let selection = try ResourceSelection.parse(resources, allowAll: false, bareNames: .agent)
        guard selection.isNamed else { throw ValidationError("name the agents (agent/NAME...) or give --all") }
        guard selection.references.allSatisfy({ $0.kind == .agent }) else {
            throw ValidationError("only agents can be suspended and resumed; name them as agent/NAME")
        }
    }

    /// Holds or releases the agents in one transaction: all of them, or none when one
    /// is not in the state. Prints a line per agent.
    func change(suspend: Bool) throws {
        if let names = try SourceSelection.parse(resources) { return try changeSources(names, suspend: suspend) }
        let store = try state.open()
        let by = Caller.identity
        let now = Caller.now
        let references = all ? [] : try ResourceSelection.parse(resources, allowAll: false, bareNames: .agent).references
        let lines: [String]
        let missing: [String]
        do {
            (lines, missing) = try store.write { writer throws(StoreError) in
                var ids: [ResourceID] = []
                var missing: [String] = []
                if all {
                    ids = try writer.resources(kind: .agent, namespace: allNamespaces ? nil : namespace.namespace).map(\.id)
                } else {
                    for reference in references {
                        let id = reference.id(namespace: namespace.namespace)
                        if try writer.resource(id) == nil { missing.append(try NotFound.message(id, in: writer)) } else { ids.append(id) }
                    }
                }
                guard missing.isEmpty else { return ([], missing) }
                let held = Set(try writer.holds().map(\.agent))
                var lines: [String] = []
                for id in ids {
                    let quoted = Diagnostic.quoted(id.name)
                    let scope = id.namespace == ResourceID.defaultNamespace ? "" : " in namespace \(Diagnostic.quoted(id.namespace))"
                    if suspend {
                        guard !held.contains(id) else {
                            lines.append("agent \(quoted)\(scope) already suspended")
                            continue
                        }
                        try writer.putHold(UserHold(agent: id, at: now, by: by))
                        try writer.append(
                            StoreEvent(time: now, kind: .normal, resource: id, reason: "Suspended", message: "suspended by \(by)"))
                        lines.append("agent \(quoted)\(scope) suspended")
                    } else {
                        guard held.contains(id) else {
                            lines.append("agent \(quoted)\(scope) was not suspended")
                            continue
                        }
                        try writer.deleteHold(for: id)
                        try writer.append(
                            StoreEvent(time: now, kind: .normal, resource: id, reason: "Resumed", message: "resumed by \(by)"))
                        lines.append("agent \(quoted)\(scope) resumed")
                    }
                }
                return (lines, [])
            }
        } catch {
            throw CommandFailure(message: error.description)
        }
        if !missing.isEmpty { throw NotFound.fail(missing, note: "nothing was changed") }
        if lines.isEmpty { OrlctlMain.writeStandardError("No agents found.\n") }
        writeStandardOutput(lines.map { $0 + "\n" }.joined())
        state.wakeController()
    }
}

extension HoldArguments {
    /// Suspends or resumes git sources, all or none: a suspended source is neither
    /// applied nor pruned (its watcher asks nothing of the remote) until resumed.
    func changeSources(_ names: [String], suspend: Bool) throws {
        let store = try state.open()
        let by = Caller.identity
        let now = Caller.now
        let (lines, missing): ([String], [String])
        do {
            (lines, missing) = try store.write { writer throws(StoreError) in
                let all = try writer.sources()
                let missing = names.filter { name in !all.contains { $0.name == name } }
                guard missing.isEmpty else {
                    return ([], missing.map { SourceSelection.notFound($0, among: all.map(\.name)) })
                }
                var lines: [String] = []
                for name in names {
                    var source = all.first { $0.name == name }!
                    let quoted = Diagnostic.quoted(name)
                    guard source.isSuspended != suspend else {
                        lines.append("source \(quoted) \(suspend ? "already suspended" : "was not suspended")")
                        continue
                    }
                    source.suspendedAt = suspend ? now : nil
                    source.suspendedBy = suspend ? by : nil
                    try writer.putSource(source)
                    try writer.append(
                        StoreEvent(
                            time: now, kind: .normal, resource: source.eventSubject, reason: suspend ? "Suspended" : "Resumed",
                            message: "\(suspend ? "suspended" : "resumed") by \(by)"))
                    lines.append("source \(quoted) \(suspend ? "suspended" : "resumed")")
                }
                return (lines, [])
            }
        } catch {
            throw CommandFailure(message: error.description)
        }
        if !missing.isEmpty { throw NotFound.fail(missing, note: "nothing was changed") }
        writeStandardOutput(lines.map { $0 + "\n" }.joined())
        // A resumed source's watcher syncs at once rather than at its next poll.
        if state.postgresURL == nil { for name in names { SourceLock.wake(state.resolvedDirectory, name: name) } }
    }
}

struct Suspend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suspend",
        abstract: "Suspend agents: their processes are stopped and not started until resumed.",
        discussion: """
            The hold is kept in the state, apart from the manifests, so a re-apply does not undo \
            it (as flux suspend). The controller shows the agent as Suspended, reason \
            SuspendedByUser (SuspendedInSpec for spec.suspend). A Suspended event is recorded.

            source/NAME suspends a git source instead: orlctl sync and watch neither apply \
            nor prune it until it is resumed.

            Exit codes: 0 suspended, 1 an agent is not in the state (nothing changed), 2 error.
            """
    )

    @OptionGroup var arguments: HoldArguments

    func run() async throws { try arguments.change(suspend: true) }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Resume agents suspended by orlctl suspend.",
        discussion: """
            An agent whose manifest says spec.suspend: true stays suspended. A Resumed event is \
            recorded. source/NAME resumes a git source and wakes its watcher.

            Exit codes: 0 resumed, 1 an agent is not in the state (nothing changed), 2 error.
            """
    )

    @OptionGroup var arguments: HoldArguments

    func run() async throws { try arguments.change(suspend: false) }
}
