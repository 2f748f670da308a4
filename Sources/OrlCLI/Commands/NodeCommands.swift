import ArgumentParser
import Foundation
import OrlController
import OrlCore
import OrlDaemon
import OrlRuntime

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

    /// Sets the daemon up as a node, with its guard process started.
    func configure(_ configuration: inout Daemon.Configuration) throws -> NodeGuard? {
        guard let node else { return nil }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let nodeGuard: NodeGuard
        do {
            nodeGuard = try NodeGuard.start(executable: executable, arguments: ["controller", "node-guard", "--node", node])
        } catch {
            throw CommandFailure(message: error.description)
        }
        configuration.node = NodeMembership.Configuration(name: node, labels: try labels())
        configuration.nodeGuard = nodeGuard
        return nodeGuard
    }
}

/// The node's guard (`NodeGuard`): started by `controller --node`, never by hand.
struct NodeGuardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node-guard", abstract: "The process that kills a node's agents when the node dies (internal).",
        shouldDisplay: false)

    @Option var node: String = ""

    func run() throws {
        let node = self.node
        NodeGuard.serve { message in
            OrlctlMain.writeStandardError(
                ControllerEvent(time: Controller.systemTime(), reason: .node, message: "guard of \(node): \(message)").textLine + "\n")
        }
    }
}
