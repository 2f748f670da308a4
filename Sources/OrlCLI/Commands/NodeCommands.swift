import ArgumentParser
import Foundation
import OrlController
import OrlCore
import OrlDaemon
import OrlJSON
import OrlPostgres
import OrlRuntime
import OrlStore

/// `orlctl controller --node NAME --node-label k=v`: one of several controllers sharing a
/// state (docs/nodes.md).
struct NodeOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            """
            Run as node NAME of several controllers sharing the state: the node holds a lease, \
            runs only the agents placed on it, and its agents move to other nodes when its lease \
            lapses (docs/nodes.md). Without it, this controller runs every agent.
            """, valueName: "name"))
    var node: String?

    @Option(
        name: .customLong("node-label"),
        help: ArgumentHelp("A label of the node (repeatable), matched by agents' spec.runtime.nodeSelector.", valueName: "key=value"))
    var nodeLabels: [String] = []

    func validate() throws {
        if let node, let problem = NodeLabels.nameProblem(node) { throw ValidationError("--node: \(problem)") }
        if node == nil && !nodeLabels.isEmpty { throw ValidationError("--node-label needs --node") }
        _ = try labels()
    }

    func labels() throws -> [String: String] {
        var labels: [String: String] = [:]
        for text in nodeLabels {
            guard let equals = text.firstIndex(of: "=") else {
                throw ValidationError("--node-label must be KEY=VALUE, e.g. zone=eu-west-1a, not \(text)")
            }
            let (key, value) = (String(text[..<equals]), String(text[text.index(after: equals)...]))
            if let problem = NodeLabels.problem(key: key, value: value) { throw ValidationError("--node-label \(text): \(problem)") }
            labels[key] = value
        }
        return labels
    }

    /// What `--detach` passes on.
    var arguments: [String] { (node.map { ["--node", $0] } ?? []) + nodeLabels.flatMap { ["--node-label", $0] } }

    /// The PID lock: one controller per state directory, or one per node of it.
    func lock(_ directory: String) throws -> PIDLock {
        guard let node else { return try PIDLock.acquire(directory) }
        let nodeDirectory = directory + "/nodes/" + node
        do {
            try FileManager.default.createDirectory(
                atPath: nodeDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CommandFailure(message: "cannot create \(nodeDirectory): \(error.localizedDescription)")
        }
        return try PIDLock.acquire(file: PIDLock.path(nodeDirectory), held: { pid in "node \(node) already runs for \(directory)\(pid)" })
    }

    /// A lone controller refuses a state nodes share; a node refuses a state directory a lone
    /// controller runs on.
    func checkCoexistence(directory: String, store: any NodeStore) throws {
        guard node != nil else { return try NodeCoexistence.checkStandalone(store, label: directory) }
        if let pid = try PIDLock.holder(directory) {
            throw CommandFailure(
                message: "a controller without --node runs for \(directory) (pid \(pid)) and runs every agent: stop it first "
                    + "(orlctl controller stop)")
        }
    }

    /// Sets the daemon up as a node, with its guard process started.
    func configure(_ configuration: inout Daemon.Configuration, state: String) throws -> NodeGuard? {
        guard let node else { return nil }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let nodeGuard: NodeGuard
        do {
            nodeGuard = try NodeGuard.start(
                executable: executable,
                arguments: [
                    "controller", "node-guard", "--node", node, "--state", state, "--state-directory", configuration.stateDirectory,
                ])
        } catch {
            throw CommandFailure(message: error.description)
        }
        configuration.node = NodeMembership.Configuration(name: node, labels: try labels())
        configuration.nodeGuard = nodeGuard
        if PostgresURL.isPostgres(state) {
            // Pools of the node's own: its steps never wait behind the services' calls, its
            // renewals (one connection reserved for them) never behind its steps, which wait
            // for placement's advisory lock; and a call stuck on a dead connection gives up in
            // seconds.
            do {
                let url = try PostgresURL(parsing: state, environment: System.environment)
                configuration.nodeStore = try PostgresStateStore(url: url, maxConnections: 2, timeout: .seconds(4))
                configuration.nodeLeaseStore = try PostgresStateStore(url: url, maxConnections: 1, timeout: .seconds(4))
            } catch {
                nodeGuard.close()
                throw CommandFailure(message: "cannot open the state at \(PostgresURL.redacted(state)): \(error.description)")
            }
        }
        return nodeGuard
    }
}

/// The node's guard (`NodeGuard`): started by `controller --node`, never by hand.
struct NodeGuardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node-guard", abstract: "The process that kills a node's agents when the node dies (internal).",
        shouldDisplay: false)

    @Option var node: String = ""
    /// The state (directory or URL), to end the node's lease once its agents are killed.
    @Option var state: String = ""
    /// The state directory the node's agents were started for (their ORL_NODE_STATE).
    @Option var stateDirectory: String = ""

    func run() throws {
        let (node, state) = (self.node, self.state)
        let report: @Sendable (String) -> Void = { message in
            OrlctlMain.writeStandardError(
                ControllerEvent(time: Controller.systemTime(), reason: .node, message: "guard of \(node): \(message)").textLine + "\n")
        }
        NodeGuard.serve(node: node, state: stateDirectory, report: report) { generation in
            // The node is gone and so are its agents: its lease ends now rather than in up
            // to a lease's time, so that they move at once.
            guard let generation else { return }
            do {
                // The state the node ran on, not a new one: a state removed meanwhile (the
                // node's lease with it) stays removed.
                let store: any NodeStore =
                    PostgresURL.isPostgres(state)
                    ? try PostgresStateStore(url: state, environment: System.environment) : try SQLiteStateStore(existing: state)
                try store.expireNode(NodeLease(node: node, generation: generation, expiresAt: Timestamp(milliseconds: 0)))
                report("ended lease generation \(generation): the node's agents may start elsewhere")
            } catch {
                report("cannot end lease generation \(generation) (it lapses by itself): \(error)")
            }
        }
    }
}

extension Get {
    /// `get nodes [NAME...]`.
    func getNodes(_ names: [String]) throws {
        let store = try state.open()
        let snapshot: NodeSnapshot
        let applied: Set<ResourceID>
        do {
            snapshot = try store.nodeSnapshot()
            applied = Set(try store.read { reader throws(StoreError) in try reader.resources(kind: .agent, namespace: nil).map(\.id) })
        } catch {
            throw CommandFailure(message: error.description)
        }
        var rows = NodeRenderer.rows(snapshot, applied: applied)
        var missing: [String] = []
        if !names.isEmpty {
            missing = names.filter { name in !rows.contains { $0.record.name == name } }.map { "node \"\($0)\" not found" }
            rows = rows.filter { names.contains($0.record.name) }
        }
        switch output {
        case nil, .wide?:
            if rows.isEmpty && missing.isEmpty {
                OrlctlMain.writeStandardError("No nodes found (start controllers with --node NAME: docs/nodes.md).\n")
            } else if !rows.isEmpty {
                writeStandardOutput(NodeRenderer.table(rows, now: snapshot.now, wide: output == .wide))
            }
        case .name?:
            writeStandardOutput(rows.map { "node/\($0.record.name)\n" }.joined())
        case .json?, .yaml?:
            let single = names.count == 1 && rows.count == 1
            let value = single ? NodeRenderer.object(rows[0], now: snapshot.now) : NodeRenderer.list(rows, now: snapshot.now)
            if !(rows.isEmpty && !missing.isEmpty) {
                writeStandardOutput(output == .json ? value.rendered() : YAMLEmitter.emit(value))
            }
        }
        if !missing.isEmpty { throw NotFound.fail(missing) }
    }
}

/// `orlctl cordon NODE` / `uncordon NODE`: a cordoned node keeps the agents it runs but is
/// given no new ones.
struct Cordon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cordon",
        abstract: "Mark a controller node unschedulable: it keeps its agents, new ones go elsewhere (docs/nodes.md).",
        discussion: "Exit codes: 0 done, 2 error (no such node).")

    @OptionGroup var state: StateOptions
    @Argument(help: "The node's name.") var node: String

    func run() throws { try Self.set(node, true, state: state) }

    static func set(_ node: String, _ cordoned: Bool, state: StateOptions) throws {
        let name = node.hasPrefix("node/") ? String(node.dropFirst(5)) : node
        let store = try state.open()
        let found: Bool
        do {
            found = try store.setCordoned(name, cordoned)
        } catch {
            throw CommandFailure(message: error.description)
        }
        guard found else { throw CommandFailure(message: "no node named \(name) in \(state.label) (orlctl get nodes lists them)") }
        writeStandardOutput("node/\(name) \(cordoned ? "cordoned" : "uncordoned")\n")
    }
}

struct Uncordon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uncordon",
        abstract: "Mark a controller node schedulable again.", discussion: "Exit codes: 0 done, 2 error (no such node).")

    @OptionGroup var state: StateOptions
    @Argument(help: "The node's name.") var node: String

    func run() throws { try Cordon.set(node, false, state: state) }
}

/// Nodes and a lone controller do not mix on one state: each would run every agent the other runs.
enum NodeCoexistence {
    /// The nodes whose lease is live, by the database's clock.
    static func liveNodes(_ store: any NodeStore) -> [String] {
        guard let snapshot = try? store.nodeSnapshot() else { return [] }
        return snapshot.nodes.filter { $0.lease.isLive(at: snapshot.now) }.map(\.name)
    }

    /// A controller without `--node` refuses a state that live nodes share.
    static func checkStandalone(_ store: any NodeStore, label: String) throws {
        let live = liveNodes(store)
        guard live.isEmpty else {
            throw CommandFailure(
                message: "nodes run on \(label) (\(live.joined(separator: ", "))): start this controller with --node NAME to join them "
                    + "(docs/nodes.md)")
        }
    }
}

/// `watch --node NAME`: a git source's watcher as a singleton across nodes.
enum WatchSingleton {
    /// The role of a source's watcher.
    static func role(_ source: String) -> String { "source:" + source }

    /// Whether the watch of `node` may sync `source` now: the node holds a live lease and
    /// has (or just took) the source's role, claimed under that lease (fenced by it).
    static func holds(_ store: any NodeStore, node: String, source: String) -> Bool {
        guard let snapshot = try? store.nodeSnapshot(),
            let record = snapshot.nodes.first(where: { $0.name == node }), record.lease.isLive(at: snapshot.now)
        else { return false }
        return (try? store.claimSingleton(role(source), by: record.lease)) ?? false
    }
}
