import ArgumentParser
import Foundation
import OrlCore
import OrlDaemon
import OrlJSON
import OrlStore
import OrlYAML

/// How runs are named on the command line: `run/ID` (also `runs/ID`), or the bare ID.
enum RunReference {
    static func parse(_ text: String) throws -> RunID {
        var name = Substring(text)
        if let slash = text.firstIndex(of: "/") {
            let kind = text[..<slash].lowercased()
            guard kind == "run" || kind == "runs" else {
                throw ValidationError("name the run as run/ID (as orlctl runs lists them); got \(Diagnostic.quoted(text))")
            }
            name = text[text.index(after: slash)...]
        }
        guard let id = RunID(String(name)) else {
            throw ValidationError("\(Diagnostic.quoted(String(name))) is not a run id: 13 letters and digits, as orlctl runs lists them")
        }
        return id
    }

    /// The runs `describe` is asked about (`run/ID...` or `run ID...`), or nil when the
    /// arguments name resources instead.
    static func described(_ arguments: [String]) throws -> [RunID]? {
        guard let first = arguments.first?.lowercased() else { return nil }
        if first == "run" || first == "runs" {
            guard arguments.count > 1 else { throw ValidationError("name the runs to describe: run/ID (orlctl runs lists them)") }
            return try arguments.dropFirst().map(parse)
        }
        guard first.hasPrefix("run/") || first.hasPrefix("runs/") else { return nil }
        return try arguments.map(parse)
    }

    /// A run and what is shown of it, read in one transaction.
    static func view(_ id: RunID, in reader: any RunReader, attempts: Bool = false) throws(StoreError) -> RunView? {
        guard let run = try reader.run(id) else { return nil }
        var view = RunView(
            run: run, plan: try reader.plan(of: id), steps: try reader.steps(of: id), attempts: attempts ? try reader.attempts(of: id) : [],
            spend: try reader.spend(of: id))
        if attempts && run.phase == .running {
            // Why a step waits: its agent is halted by a budget, suspended, crashing.
            for agent in Set(view.steps.filter { $0.state == .ready || $0.state == .running }.compactMap(\.agent)) {
                if let ready = try reader.status(for: agent)?.condition(ResourceStatus.ready), ready.status != .true {
                    view.agentConditions[agent] = ready
                }
            }
        }
        return view
    }
}

extension RunError {
    /// Said on standard error as `orlctl: error: ...`, with exit 1 for what is about the
    /// run (not found, refused by its state or the audit) and 2 for a bad request.
    var reported: any Error {
        switch kind {
        case .invalid, .store: CommandFailure(message: message)
        case .notFound, .conflict, .forbidden: NotFound.fail([message])
        }
    }
}

// MARK: orlctl run

struct RunWorkflow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Start a run of an applied workflow.",
        discussion: """
            The run uses the workflow as applied now: it must pass the structural checks and \
            the permission audit against the applied state, and its inputs must fit the \
            workflow's (defaults are filled in; inputs are strings). Its steps are then handed \
            to their agents as tasks; the controller gives up on tasks whose agent stops \
            heart-beating or that run past their timeout, and retries them per the step's retry. \
            --wait prints each step as it changes and returns when the run ends.

            Exit codes: 0 started (with --wait: succeeded), 1 the workflow is not applied, does \
            not pass the audit (with --wait: the run failed or was cancelled), 2 bad input or error.
            """
    )

    @Argument(help: ArgumentHelp("The workflow: workflow/NAME (or wf/NAME).", valueName: "workflow/name"))
    var workflow: String

    @Option(name: .customLong("input"), help: ArgumentHelp("An input of the run, NAME=VALUE (repeatable).", valueName: "name=value"))
    var inputs: [String] = []

    @Option(name: .customLong("input-file"), help: ArgumentHelp("Inputs from a YAML or JSON mapping of NAME: VALUE.", valueName: "file"))
    var inputFile: String?

    @Flag(help: "Wait for the run to end, printing each step as it changes.")
    var wait = false

    @Option(name: [.short, .long], help: "Output format: text, or json (the run, as orlctl runs -o json prints it).")
    var output: OutputFormat = .text

    @OptionGroup var namespace: NamespaceOption
    @OptionGroup var state: StateOptions

    func validate() throws {
        _ = try workflowName()
        _ = try commandLineInputs()
        if inputFile != nil && !inputs.isEmpty { throw ValidationError("give inputs with --input or --input-file, not both") }
    }

    func workflowName() throws -> String {
        guard let slash = workflow.firstIndex(of: "/") else { return workflow }
        let kind = try ResourceSelection.kind(String(workflow[..<slash]))
        guard kind == .workflow else { throw ValidationError("only workflows run; name one as workflow/NAME") }
        let name = String(workflow[workflow.index(after: slash)...])
        guard !name.isEmpty else { throw ValidationError("name the workflow: workflow/NAME") }
        return name
    }

    func commandLineInputs() throws -> [(name: String, value: String)] {
        try inputs.map { text in
            guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
                throw ValidationError("--input takes NAME=VALUE; got \(Diagnostic.quoted(text))")
            }
            return (String(text[..<equals]), String(text[text.index(after: equals)...]))
        }
    }

    /// A mapping of scalars; numbers and booleans are taken as written (inputs are strings).
    func fileInputs(_ path: String) throws -> [(name: String, value: String)] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CommandFailure(message: "cannot read the input file \(path)")
        }
        let parsed = YAMLParser().parse(Array(data), file: path)
        if let problem = parsed.diagnostics.first {
            throw CommandFailure(message: "\(problem.location.map { "\($0): " } ?? "")\(problem.message)")
        }
        guard parsed.documents.count == 1, let members = parsed.documents[0].root.members else {
            throw CommandFailure(message: "\(path) must hold one mapping of input names to values")
        }
        return try members.map { member in
            switch member.value.value {
            case .string(let text): return (member.key, text)
            case .number, .bool: return (member.key, CanonicalJSON.encode(member.value))
            default:
                throw CommandFailure(message: "\(member.value.location): input \(Diagnostic.quoted(member.key)) must be a string")
            }
        }
    }

    func run() async throws {
        let given = try inputFile.map(fileInputs) ?? commandLineInputs()
        let store = try state.open()
        let id = ResourceID(kind: ResourceKind.workflow.rawValue, namespace: namespace.namespace, name: try workflowName())
        let run: RunRecord
        do {
            run = try RunOperations(store: store).start(
                .init(workflow: id, input: given, by: Caller.identity), now: Caller.now, random: UInt32.random(in: 0...UInt32.max))
        } catch {
            throw error.reported
        }
        if output == .text { writeStandardOutput("run/\(run.id) created\n") }
        guard wait else {
            if output == .json { try printJSON(run.id, store) }
            return
        }
        let final = try await follow(run.id, store, print: output == .text, state: state.daemonState(store))
        if output == .json { try printJSON(run.id, store) }
        guard final.phase == .succeeded else { throw ExitCode(ExitStatus.findings.rawValue) }
    }

    private func printJSON(_ id: RunID, _ store: any RunStore) throws {
        let view = try readingRuns(store) { reader throws(StoreError) in try RunReference.view(id, in: reader) }
        if let view { writeStandardOutput(RunRenderer.json(view).rendered()) }
    }

    /// Follows the run until it ends, printing each step whose state changes. It reads
    /// again when a commit (of any process) moves the runs, not on a timer: a step is
    /// printed as it changes, and a waiting run costs no reads.
    private func follow(_ id: RunID, _ store: any RunStore, print: Bool, state: DaemonState) async throws -> RunRecord {
        let moved = Inbox<Bool>()
        let changes: Task<Void, Never>
        do {
            changes = try StateChanges.follow(state, topics: [.runs], into: moved)
        } catch {
            throw CommandFailure(message: "cannot follow the state \(state.label): \(error.description)")
        }
        defer { changes.cancel() }
        var seen: [Int: (StepState, Int)] = [:]
        while true {
            guard let view = try readingRuns(store, { reader throws(StoreError) in try RunReference.view(id, in: reader) }) else {
                throw CommandFailure(message: "run \(id) is gone from the state")
            }
            let now = Caller.now
            for step in view.steps where seen[step.index].map({ $0 != (step.state, step.attempt) }) ?? (step.state != .pending) {
                seen[step.index] = (step.state, step.attempt)
                if print { writeStandardOutput(Self.line(step, view, now)) }
            }
            if view.run.phase.isTerminal {
                if print {
                    let took = view.run.createdAt.age(at: view.run.endedAt ?? now)
                    writeStandardOutput("run/\(id) \(view.run.phase.rawValue) after \(took)\(view.run.error.map { ": \($0)" } ?? "")\n")
                }
                return view.run
            }
            // Bounded only in case the feed has ended (its state removed): the read says why.
            _ = await moved.take(waitingAtMost: .seconds(5))
            try Task.checkCancellation()
        }
    }

    static func line(_ step: StepRecord, _ view: RunView, _ now: Timestamp) -> String {
        let planned = view.plan.steps[step.index]
        var detail = ""
        switch step.state {
        case .running:
            detail = " (attempt \(step.attempt) of \(planned.attempts), agent \(step.agent?.name ?? "?"))"
        case .ready where step.attempt > 0:
            detail = " (retry at \(step.readyAt?.rfc3339Seconds ?? "?")): \(step.error.map(RunRenderer.oneLine) ?? "")"
        case .waitingApproval:
            detail = ": orlctl approve run/\(view.run.id) --step \(step.id)   (or deny)"
        case .deadLetter, .failed, .skipped, .cancelled:
            detail = step.error.map { ": " + RunRenderer.oneLine($0) } ?? ""
        default:
            break
        }
        let width = view.plan.steps.map(\.id.count).max() ?? 0
        return "\(now.rfc3339Seconds)  \(step.id.padding(toLength: width))  \(step.state.rawValue)\(detail)\n"
    }
}

/// One read of the runs, with store errors said as command failures.
func readingRuns<T>(_ store: any RunStore, _ body: (any RunReader) throws(StoreError) -> T) throws -> T {
    do {
        return try store.readRuns(body)
    } catch {
        throw CommandFailure(message: error.description)
    }
}

// MARK: orlctl runs

struct Runs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs",
        abstract: "List workflow runs, newest first, or the approvals they wait for.",
        discussion: """
            STATUS is the run's phase (Running, Succeeded, Failed, Cancelled), or \
            WaitingApproval while one of its approval gates waits. STEPS counts the steps \
            that succeeded. --pending-approval lists the gates waiting for a decision \
            (orlctl approve / deny), with how long they have waited and when they time out.
            """
    )

    @Option(help: ArgumentHelp("Only the runs of this workflow.", valueName: "name"))
    var workflow: String?

    @Flag(help: "List the approval gates waiting for a decision instead.")
    var pendingApproval = false

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "Runs in every namespace.")
    var allNamespaces = false

    @Option(help: "Show at most this many runs.")
    var limit = 50

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    @OptionGroup var namespace: NamespaceOption
    @OptionGroup var state: StateOptions

    func validate() throws { guard limit > 0 else { throw ValidationError("--limit must be at least 1") } }

    func run() async throws {
        let store = try state.open()
        let scope = allNamespaces ? nil : namespace.namespace
        let now = Caller.now
        let place = allNamespaces ? "" : " in \(namespace.namespace) namespace"
        if pendingApproval {
            let pending = try readingRuns(store) { reader throws(StoreError) in
                var views: [RunID: RunView] = [:]
                var pending: [(view: RunView, step: StepRecord)] = []
                for step in try reader.pendingApprovals(namespace: scope) {
                    if views[step.run] == nil { views[step.run] = try RunReference.view(step.run, in: reader) }
                    guard let view = views[step.run], workflow == nil || view.run.workflow.name == workflow else { continue }
                    pending.append((view, step))
                }
                return pending
            }
            let calls: [ToolApproval]
            do {
                calls = try store.pendingToolApprovals(namespace: scope)
            } catch {
                throw CommandFailure(message: error.message)
            }
            switch output {
            case .text:
                guard !pending.isEmpty || !calls.isEmpty else {
                    return OrlctlMain.writeStandardError("No approvals pending\(place).\n")
                }
                if !pending.isEmpty { writeStandardOutput(RunRenderer.approvalsTable(pending, now: now, allNamespaces: allNamespaces)) }
                if !pending.isEmpty && !calls.isEmpty { writeStandardOutput("\n") }
                if !calls.isEmpty { writeStandardOutput(RunRenderer.callApprovalsTable(calls, now: now, allNamespaces: allNamespaces)) }
            case .json:
                writeStandardOutput(
                    JSONValue.object([
                        ("approvals", .array(pending.map { RunRenderer.approvalJSON($0.view, $0.step) })),
                        ("calls", .array(calls.map(RunRenderer.callApprovalJSON))),
                    ]).rendered())
            }
            return
        }
        let views = try readingRuns(store) { reader throws(StoreError) in
            var views: [RunView] = []
            for run in try reader.runs(namespace: scope, workflow: workflow, limit: limit) {
                if let view = try RunReference.view(run.id, in: reader) { views.append(view) }
            }
            return views
        }
        switch output {
        case .text:
            guard !views.isEmpty else { return OrlctlMain.writeStandardError("No runs found\(place).\n") }
            writeStandardOutput(RunRenderer.table(views, now: now, allNamespaces: allNamespaces))
        case .json:
            writeStandardOutput(JSONValue.object([("runs", .array(views.map(RunRenderer.json)))]).rendered())
        }
    }
}

/// `orlctl describe run/ID...`: called by `describe` when it is asked about runs.
enum RunDescription {
    static let eventLimit = 20

    static func describe(_ ids: [RunID], state: StateOptions) throws {
        let store = try state.open()
        let (views, missing) = try readingRuns(store) { reader throws(StoreError) in
            var views: [RunView] = []
            var missing: [String] = []
            for id in ids {
                guard var view = try RunReference.view(id, in: reader, attempts: true) else {
                    missing.append("run \(id) not found")
                    continue
                }
                view.events = try reader.events(for: view.run.eventSubject, limit: eventLimit)
                views.append(view)
            }
            return (views, missing)
        }
        let now = Caller.now
        writeStandardOutput(views.map { RunRenderer.describe($0, now: now) }.joined(separator: "\n\n"))
        if !missing.isEmpty { throw NotFound.fail(missing) }
    }
}

// MARK: orlctl approve, deny, cancel

struct DecisionArguments: ParsableArguments {
    @Argument(
        help: ArgumentHelp(
            "The run (run/ID, with --step) or a tool call waiting for approval (call/ID, as runs --pending-approval lists it).",
            valueName: "run/id|call/id"))
    var run: String

    @Option(help: ArgumentHelp("The approval step of the run.", valueName: "step"))
    var step: String?

    @Option(help: "Why, kept with the decision and shown in describe run and the events.")
    var reason: String?

    @OptionGroup var state: StateOptions

    var call: String? { run.hasPrefix("call/") ? String(run.dropFirst(5)) : nil }

    func validate() throws {
        if call != nil {
            guard step == nil else { throw ValidationError("a tool call has no steps: leave out --step") }
            return
        }
        _ = try RunReference.parse(run)
        guard step != nil else { throw ValidationError("name the approval step of the run with --step") }
    }

    func decide(approve: Bool) throws {
        if let call {
            let store = try state.open()
            let decided: ToolApproval
            do {
                decided = try store.decide(call, approve: approve, by: Caller.identity, reason: reason, now: Caller.now)
            } catch {
                throw error.reported
            }
            return writeStandardOutput(
                "call/\(call) (tool \(Diagnostic.quoted(decided.tool)) of agent \(decided.agent.name)) \(approve ? "approved" : "denied")\n"
            )
        }
        let id = try RunReference.parse(run)
        let step = self.step ?? ""
        let store = try state.open()
        do {
            _ = try RunOperations(store: store).decide(
                run: id, step: step, approve: approve, by: Caller.identity, reason: reason, now: Caller.now)
        } catch {
            throw error.reported
        }
        writeStandardOutput("run/\(id) step \(Diagnostic.quoted(step)) \(approve ? "approved" : "denied")\n")
    }
}

struct Approve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve",
        abstract: "Approve a run's approval gate, so that the steps after it run, or a tool call waiting for approval.",
        discussion: "Exit codes: 0 approved, 1 no such run, step or call, or it is not waiting, 2 error."
    )

    @OptionGroup var arguments: DecisionArguments

    func run() async throws { try arguments.decide(approve: true) }
}

struct Deny: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deny",
        abstract:
            "Deny a run's approval gate (the run fails and the steps after the gate are skipped), or a tool call waiting for approval (it is refused).",
        discussion: "Exit codes: 0 denied, 1 no such run, step or call, or it is not waiting, 2 error."
    )

    @OptionGroup var arguments: DecisionArguments

    func run() async throws { try arguments.decide(approve: false) }
}

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a run: its unfinished steps are cancelled and running tasks told to stop.",
        discussion: """
            A running task's next heartbeat or answer is refused, which is how its agent \
            learns to stop. Exit codes: 0 cancelled, 1 no such run or it has already ended, 2 error.
            """
    )

    @Argument(help: ArgumentHelp("The run: run/ID.", valueName: "run/id"))
    var target: String

    @Option(help: "Why, kept with the run.")
    var reason: String?

    @OptionGroup var state: StateOptions

    func validate() throws { _ = try RunReference.parse(target) }

    func run() async throws {
        let id = try RunReference.parse(target)
        let store = try state.open()
        do {
            _ = try RunOperations(store: store).cancel(run: id, by: Caller.identity, reason: reason, now: Caller.now)
        } catch {
            throw error.reported
        }
        writeStandardOutput("run/\(id) cancelled\n")
    }
}
