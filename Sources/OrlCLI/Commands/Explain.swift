import ArgumentParser
import OrlCore
import OrlJSON
import OrlManifests

/// `orlctl explain agent/NAME`: what an agent may do and which policy lines say so, or,
/// with `--can use KIND/VALUE`, a yes or no to one question.
struct Explain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Show an agent's effective permissions and the policy rules behind them.",
        discussion: """
            Reads and validates the manifests as validate does. Errors that make the fleet \
            untrustworthy (YAML, schemas, references, DAGs) are printed as validate prints them \
            and nothing is explained (exit 2, since 1 means no); the permission audit's own findings (perm.*, \
            budget.*) do not stop it, since they are what explain explains.

            Without --can: the policies that select the agent, the decision on its model, \
            tools and secrets, and every allow, deny and approval rule, each with its file, \
            line and column (exit 0).

            With --can use KIND/VALUE (KIND: tool, model, secret, handoff, data-class, egress; \
            a model is PROVIDER/MODEL): prints yes or no and the deciding rules; exit 0 for \
            yes, 1 for no.

            An agent that is not defined, or a malformed argument, is an error: exit 2.
            """
    )

    @Argument(help: ArgumentHelp("The agent to explain: agent/NAME (or agents/NAME, ag/NAME).", valueName: "agent/name"))
    var agent: String

    @Option(
        name: [.short, .customLong("filename")],
        help: ArgumentHelp("A manifest file or directory, or - for standard input. Repeatable.", valueName: "path"))
    var files: [String] = []

    @Option(name: [.short, .long], help: "The agent's namespace.")
    var namespace: String = ResourceID.defaultNamespace

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    // Two words after one flag (`--can use tool/web-search`) read like the question
    // they ask; `.upToNextOption` collects both, and `validate()` checks the shape.
    @Option(
        name: .customLong("can"), parsing: .upToNextOption,
        help: ArgumentHelp("Ask one question: use KIND/VALUE, e.g. --can use tool/web-search.", valueName: "use kind/value"))
    var can: [String] = []

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give the manifests with -f PATH (a file, a directory or -)") }
        _ = try agentName()
        _ = try question()
    }

    /// The NAME of `agent/NAME`, with every spelling kubectl users reach for.
    func agentName() throws -> String {
        let reference: ResourceReference
        do {
            reference = try ResourceReference(parsing: agent)
        } catch {
            let name = agent.split(separator: "/").last.map(String.init) ?? "writer"
            throw ValidationError("name the agent as agent/NAME, e.g. agent/\(name); got \(Diagnostic.quoted(agent))")
        }
        guard reference.kind == .agent else {
            throw ValidationError("explain shows what an agent may do; got a \(reference.kind.rawValue), \(Diagnostic.quoted(agent))")
        }
        return reference.name
    }

    /// The `--can` question, if one was asked.
    func question() throws -> (kind: PermissionKind, value: String)? {
        guard !can.isEmpty else { return nil }
        let kinds = PermissionKind.allCases.map(\.rawValue).joined(separator: ", ")
        let usage = "--can takes `use KIND/VALUE` (KIND: \(kinds)), e.g. --can use tool/web-search or --can use model/openai/gpt-4o"
        guard can.count == 2, can[0] == "use" else {
            throw ValidationError("\(usage); got --can \(can.joined(separator: " "))")
        }
        let parts = can[1].split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[1].isEmpty else { throw ValidationError("\(usage); got --can use \(can[1])") }
        guard let kind = PermissionKind(rawValue: String(parts[0])) else {
            let hint = Suggestion.hint(for: String(parts[0]), among: PermissionKind.allCases.map(\.rawValue))
            throw ValidationError("unknown permission kind \(Diagnostic.quoted(String(parts[0])))\(hint); \(usage)")
        }
        return (kind, String(parts[1]))
    }

    func run() async throws {
        let name = try agentName()
        let question = try question()
        let report = try await ManifestLoader(standardInput: CommandContext.current.standardInputBytes).load(
            paths: files, output: output, stopsOn: Self.preventsExplaining, notDone: "nothing was explained", exit: .failure)

        let id = ResourceID(kind: ResourceKind.agent.rawValue, namespace: namespace, name: name)
        guard let explanation = AgentExplanation(agent: id, fleet: report.fleet, engine: PolicyEngine(report.fleet)) else {
            throw CommandFailure(message: Self.notFound(id, in: report.fleet))
        }

        guard let question else {
            switch output {
            case .text: writeStandardOutput(ExplainRenderer.text(explanation))
            case .json: writeStandardOutput(ExplainRenderer.json(explanation))
            }
            return
        }
        let answer = explanation.answer(question.kind, question.value)
        switch output {
        case .text: writeStandardOutput(ExplainRenderer.text(answer, of: explanation))
        case .json: writeStandardOutput(ExplainRenderer.json(answer, of: explanation))
        }
        if !answer.isAllowed { throw ExitCode(ExitStatus.findings.rawValue) }
    }

    /// Errors that mean the fleet may not be what the files say (a policy that did not
    /// parse grants nothing, so an explanation would be wrong). The audit's findings
    /// are the exception: explaining them is the point.
    static func preventsExplaining(_ d: Diagnostic) -> Bool {
        d.severity == .error && !d.code.rawValue.hasPrefix("perm.") && !d.code.rawValue.hasPrefix("budget.")
    }

    /// `agent "publsher" not found in namespace "default" (did you mean "publisher"?)`,
    /// or where an agent of that name is, or which agents there are.
    static func notFound(_ id: ResourceID, in fleet: Fleet) -> String {
        let agents = fleet.resources(of: .agent)
        var message = "agent \(Diagnostic.quoted(id.name)) not found in namespace \(Diagnostic.quoted(id.namespace))"
        let elsewhere = agents.filter { $0.metadata.name == id.name }.map(\.metadata.namespace)
        if !elsewhere.isEmpty {
            return message + "; it is in namespace \(elsewhere.map(Diagnostic.quoted).joined(separator: ", ")) (use -n \(elsewhere[0]))"
        }
        let here = agents.filter { $0.metadata.namespace == id.namespace }.map(\.metadata.name)
        if let close = Suggestion.closest(to: id.name, among: here) {
            return message + " (did you mean \(Diagnostic.quoted(close))?)"
        }
        message += here.isEmpty ? ", which has no agents" : "; agents there: " + here.prefix(10).joined(separator: ", ")
        return message + (here.count > 10 ? ", …" : "")
    }
}
