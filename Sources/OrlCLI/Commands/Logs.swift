import ArgumentParser
import Foundation
import Glibc
import OrlCore
import OrlStore

/// `orlctl logs agent/NAME`: an agent's output, as the controller captured it.
struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print an agent's log (its standard output and error).",
        discussion: """
            The log is <state>/logs/<namespace>/<name>.log (with a PostgreSQL state, in the \
            data directory of the machine whose controller runs the agent: --data-dir); the \
            controller rotates it by size \
            (the previous one is <name>.log.1, printed by --previous). With -f, new output is \
            printed as it is written, across rotations, until interrupted.

            Exit codes: 0 printed, 1 no such agent or no log yet, 2 error.
            """
    )

    @Argument(help: ArgumentHelp("agent/NAME or agent NAME.", valueName: "agent"))
    var resources: [String] = []

    @OptionGroup var namespace: NamespaceOption

    @Option(help: ArgumentHelp("Print only the last N lines.", valueName: "n"))
    var tail: Int?

    @Flag(name: [.short, .long], help: "Keep printing new output until interrupted.")
    var follow = false

    @Flag(help: "Print the previous (rotated) log.")
    var previous = false

    @OptionGroup var state: StateOptions
    @OptionGroup var dataDirectory: DataDirectoryOption

    func validate() throws {
        _ = try agentID()
        if let tail, tail < 0 { throw ValidationError("--tail must be 0 or more") }
        if follow && previous { throw ValidationError("--previous cannot be followed (-f)") }
    }

    func agentID() throws -> ResourceID {
        let selection = try ResourceSelection.parse(resources, allowAll: false, bareNames: .agent)
        guard selection.references.count == 1, let reference = selection.references.first else {
            throw ValidationError("name one agent: agent/NAME or agent NAME")
        }
        guard reference.kind == .agent else { throw ValidationError("only agents have logs; name one as agent/NAME") }
        return reference.id(namespace: namespace.namespace)
    }

    static func logPath(state: String, _ id: ResourceID) -> String {
        "\(PIDLock.absolute(state))/logs/\(id.namespace)/\(id.name).log"
    }

    func run() async throws {
        let id = try agentID()
        let directory = try state.localDirectory(dataDirectory.path)
        let store = try state.openState()
        let missing: String?
        do {
            missing = try store.read { reader throws(StoreError) in
                try reader.resource(id) == nil ? try NotFound.message(id, in: reader) : nil
            }
        } catch {
            throw CommandFailure(message: error.description)
        }
        if let missing { throw NotFound.fail([missing]) }

        let path = Self.logPath(state: directory, id) + (previous ? ".1" : "")
        // Watched before the first read, so that nothing written in between goes unseen.
        let watch = follow ? LogFollower(path: path) : nil
        defer { watch?.close() }
        guard let data = FileManager.default.contents(atPath: path) else {
            let what = previous ? "no previous log" : "no log yet"
            throw NotFound.fail(["agent \(Diagnostic.quoted(id.name)) has \(what) (\(path))"])
        }
        writeStandardOutput(Self.lastLines(String(decoding: data, as: UTF8.self), tail))
        guard let watch else { return }
        try await watch.follow(from: Int64(data.count), write: CommandContext.current.standardOutput.write)
    }

    /// The last `count` lines of `text` (all when nil); a final line without a newline counts.
    static func lastLines(_ text: String, _ count: Int?) -> String {
        guard let count else { return text }
        guard count > 0 else { return "" }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if text.hasSuffix("\n") { lines.removeLast() }
        return lines.suffix(count).map { $0 + "\n" }.joined()
    }
}
