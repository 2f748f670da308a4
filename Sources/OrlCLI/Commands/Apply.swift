import ArgumentParser
import Foundation
import OrlCore
import OrlManifests
import OrlRuntime
import OrlStore

/// What `apply` and `diff` share: which manifests, and which source they make up.
struct ManifestSourceOptions: ParsableArguments {
    @Option(
        name: [.short, .customLong("filename")],
        help: ArgumentHelp("A manifest file or directory, or - for standard input. Repeatable.", valueName: "path"))
    var files: [String] = []

    @Option(
        help: ArgumentHelp(
            "The apply source these manifests make up; prune removes only what this source applied (default: derived from the paths).",
            valueName: "name"))
    var source: String?

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give the manifests with -f PATH (a file, a directory or -)") }
    }

    /// `files:/abs/manifests`: the same directory is the same source from any working
    /// directory; several paths are one source together.
    var resolvedSource: String {
        if let source { return source }
        let paths = files.map { path in
            path == "-" ? "-" : URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        }
        return "files:" + paths.sorted().joined(separator: ",")
    }

    /// Where the applied Agents' and Tools' code is (see `CodeOrigin`): the top of the git
    /// work tree holding the first path given, else that path's directory (its own
    /// directory for a file), else (standard input only) the current directory. So
    /// `apply -f manifests/` from a repository runs `examples/agents/agent.py` from that
    /// repository, whichever directory it is applied from.
    var codeRoot: String {
        let files = FileManager.default
        let start: URL
        if let path = self.files.first(where: { $0 != "-" }) {
            let url = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath()
            var isDirectory: ObjCBool = false
            start =
                files.fileExists(atPath: url.path, isDirectory: &isDirectory) && !isDirectory.boolValue
                ? url.deletingLastPathComponent() : url
        } else {
            start = URL(fileURLWithPath: files.currentDirectoryPath).standardizedFileURL
        }
        var directory = start
        while true {
            if files.fileExists(atPath: directory.appendingPathComponent(".git").path) { return directory.path }
            let parent = directory.deletingLastPathComponent()
            if parent.path == directory.path { return start.path }
            directory = parent
        }
    }

    /// Loads the manifests, plans (and unless `dryRun`, applies) them against the state,
    /// and prints the plan: the whole of `apply` and `diff`. The manifests are loaded
    /// against what the last apply of the source read, so unchanged files are not parsed
    /// again (`ManifestIndexLoader`; `full` reads everything).
    func plan(
        state: StateOptions, output: OutputFormat, dryRun: Bool, options: ApplyOptions, invalid: ExitStatus = .findings, full: Bool = false
    ) async throws -> Plan {
        let outcome: ApplyOutcome
        let style = TextStyle.forStandardOutput()
        // The plan's lines, rendered on another core while the transaction's thread writes
        // the index and commits (a first apply's are a line per manifest), then printed.
        var changesAhead: WorkerPool.Pending<String>?
        defer { changesAhead?.cancel() }
        do {
            // A first apply (or one against a state that cannot be opened) loads with no
            // state and opens (or fails to open) it only once the manifests are known to be
            // valid, so that invalid manifests never create a state; its index is written
            // like any other apply's, so the next apply reads only what changed.
            let existing = try existingStore(state)
            let loaded: ManifestIndexLoader.Loaded
            do {
                loaded = try ManifestIndexLoader(standardInput: CommandContext.current.standardInputBytes).load(
                    paths: files, source: options.source, store: existing, full: full, report: DiagnosticRenderer.keptForm)
            } catch let error as SourceError {
                throw CommandFailure(message: error.description)
            } catch let error as StoreError {
                throw CommandFailure(message: "cannot open the state in \(state.label): \(error.description)")
            }
            // What was printed of the report, kept beside the index as it is (not rendered again).
            var printed: [UInt8]?
            if let kept = loaded.keptReport {
                // No file changed: the warnings as the apply that wrote the index printed
                // them (an index is written only by an apply whose manifests had no error).
                if output == .text, !kept.isEmpty { OrlctlMain.writeStandardError(String(decoding: kept, as: UTF8.self)) }
            } else {
                printed = try ManifestLoader.check(
                    loaded.outcome.report, files: loaded.files, output: output, stopsOn: { $0.severity == .error },
                    notDone: notDone(invalid),
                    exit: invalid)
            }
            keepUntilExit(loaded)
            let rendered = printed
            if existing != nil, state.postgresURL == nil, let exposure = SQLiteStateStore.exposure(of: state.resolvedDirectory) {
                OrlctlMain.writeStandardError("orlctl: warning: \(exposure)\n")
            }
            let store = try existing ?? state.openState()
            outcome = try ApplyOperation.apply(
                desired: loaded.outcome.desired, resolve: { index throws(StoreError) in try loaded.resource(at: index) }, to: store,
                options: options, now: Caller.now, dryRun: dryRun,
                shortcut: { reader throws(StoreError) in
                    try loaded.shortcut(reader, source: options.source, codeRoot: options.codeRoot)
                },
                also: { writer, plan throws(StoreError) in
                    if output == .text, !plan.isEmpty {
                        // A transaction tried again plans again.
                        changesAhead?.cancel()
                        changesAhead = WorkerPool.shared.start { PlanRenderer.changes(plan, style: style) }
                    }
                    try loaded.writeIndex(
                        source: options.source, codeRoot: options.codeRoot, prune: options.prune, plan: plan,
                        report: { rendered ?? DiagnosticRenderer.kept(loaded.outcome.report, files: loaded.files) }, writer)
                }, fork: .beside)
        } catch let error as ApplyError {
            switch error {
            case .store(let e): throw CommandFailure(message: e.description)
            case .refused(let refusal):
                OrlctlMain.writeStandardError("orlctl: nothing was applied: \(refusal.description)\n")
                throw ExitCode(ExitStatus.findings.rawValue)
            }
        }
        switch output {
        case .text:
            let changes = changesAhead?.wait()
            changesAhead = nil
            writeStandardOutput(PlanRenderer.text(outcome, dryRun: dryRun, style: style, changes: changes))
        case .json: writeStandardOutput(PlanRenderer.json(outcome, dryRun: dryRun))
        }
        return outcome.plan
    }

    /// The state, when its database exists and opens (nil: `plan` loads with no state and
    /// opens, or fails to open, it once the manifests are valid). A
    /// PostgreSQL state's database exists (its server made it): it is opened, or the
    /// apply fails saying why.
    private func existingStore(_ state: StateOptions) throws -> (any StateStore)? {
        if state.postgresURL != nil { return try state.openState() }
        let directory = state.resolvedDirectory
        guard access((directory.hasSuffix("/") ? directory : directory + "/") + "state.db", F_OK) == 0 else { return nil }
        // Opened as one that exists: a state removed since the check is not made again,
        // empty, before the manifests are known to be valid.
        return try? SQLiteStateStore(existing: directory)
    }

    private func notDone(_ exit: ExitStatus) -> String { exit == .findings ? "nothing was applied" : "no plan" }

}

/// `orlctl apply`: make the stored desired state match the manifests, all or nothing.
struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        // Read only when the command is parsed as a root (`OrlctlMain.parse`): it is `orlctl`'s,
        // so no completion script is looked for. Under `orlctl` the root's name is used.
        _superCommandName: "orlctl",
        abstract: "Apply manifests to the state: create, update and (with --prune) prune, all or nothing.",
        discussion: """
            The whole set is validated and audited first; any error means nothing is written. \
            The plan is computed and written in one transaction, so concurrent applies run one \
            after the other. When Agents are applied and no controller runs for the state, one is \
            started in the background so that they run (--no-controller, or ORL_NO_CONTROLLER=1 as \
            in CI, to opt out). Relative paths in an Agent's command and args (and a \
            command Tool's) resolve against the git work tree holding the first -f path, \
            else that path (docs/operations.md). A resource another source applied (another -f \
            path, a git source) is not taken over unless --force-conflicts: the apply is refused \
            and names its owner. Exit 0 when applied (or nothing to do), 1 when the manifests have \
            errors or a guard refused the plan (nothing written), 2 on error.
            """
    )

    @OptionGroup var manifests: ManifestSourceOptions
    @OptionGroup var state: StateOptions

    @Flag(help: "Delete what this source applied before and the manifests no longer define.")
    var prune = false

    @Flag(help: "Print the plan and write nothing.")
    var dryRun = false

    @Option(help: "Refuse to prune more than this many resources.")
    var maxDeletions = 10

    @Flag(help: "Allow --prune when the manifests define nothing (which prunes everything the source owns).")
    var allowEmpty = false

    @Flag(help: "Take over resources another source applied (otherwise the apply is refused as a conflict).")
    var forceConflicts = false

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    @Flag(help: "Do not start a controller when none runs (also ORL_NO_CONTROLLER=1).")
    var noController = false

    @Flag(help: "Read and check every file, not only those changed since the last apply of this source.")
    var full = false

    func run() async throws {
        let plan = try await manifests.plan(
            state: state, output: output, dryRun: dryRun,
            options: ApplyOptions(
                source: manifests.resolvedSource, prune: prune, allowEmpty: allowEmpty, maxDeletions: maxDeletions,
                appliedBy: Caller.identity, codeRoot: manifests.codeRoot, forceConflicts: forceConflicts), full: full)
        guard !dryRun else { return }
        // A running controller reconciles the change at once rather than at its next poll.
        if !plan.isEmpty && state.postgresURL == nil { ControllerWake.wake(state.resolvedDirectory) }
        try await ControllerAutostart.ensure(state: state, optedOut: noController, json: output == .json)
    }
}

/// What `apply`, `sync` and `watch` share: applied agents should run, so with none
/// running a controller for the state, one is started detached, and said so (on
/// standard error when standard output is JSON). `--no-controller` or
/// ORL_NO_CONTROLLER=1 (as in CI) opts out.
enum ControllerAutostart {
    static var disabledByEnvironment: Bool {
        !(System.environment("ORL_NO_CONTROLLER").map({ $0.isEmpty || $0 == "0" }) ?? true)
    }

    static func ensure(state: StateOptions, optedOut: Bool, json: Bool) async throws {
        // No controller runs against a PostgreSQL state yet (docs/postgres.md).
        guard !optedOut, !disabledByEnvironment, state.postgresURL == nil else { return }
        let directory = PIDLock.absolute(state.resolvedDirectory)
        guard try PIDLock.holder(directory) == nil else { return }
        let store = try state.openStore()
        // Nodes run the state's agents: a lone controller would run them twice.
        guard NodeCoexistence.liveNodes(store).isEmpty else { return }
        let agents: Int
        do throws(StoreError) {
            agents = try store.read { reader throws(StoreError) in try reader.resources(kind: .agent, namespace: nil).count }
        } catch {
            throw CommandFailure(message: error.description)
        }
        guard agents > 0 else { return }
        try await ControllerRunCommand.startDetached(stateDirectory: directory, arguments: []) { message in
            if json { OrlctlMain.writeStandardError(message) } else { writeStandardOutput(message) }
        }
    }
}

/// `orlctl diff`: the plan against the state, written nowhere. Exit 0 no changes, 1
/// changes, 2 error (invalid manifests included: a script reads 1 as "there are
/// changes"), like `diff` and `kubectl diff`.
struct Diff: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        // Read only when the command is parsed as a root (`OrlctlMain.parse`): it is `orlctl`'s,
        // so no completion script is looked for. Under `orlctl` the root's name is used.
        _superCommandName: "orlctl",
        abstract: "Show what apply would change. Exit 0 no changes, 1 changes, 2 error (invalid manifests included).")

    @OptionGroup var manifests: ManifestSourceOptions
    @OptionGroup var state: StateOptions

    @Flag(help: "Include what --prune would delete.")
    var prune = false

    @Flag(help: "Read and check every file, not only those changed since the last apply of this source.")
    var full = false

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    func run() async throws {
        // Diff shows every prune; the guards are apply's business.
        let plan = try await manifests.plan(
            state: state, output: output, dryRun: true,
            options: ApplyOptions(
                source: manifests.resolvedSource, prune: prune, allowEmpty: true, maxDeletions: .max, appliedBy: Caller.identity,
                codeRoot: manifests.codeRoot, forceConflicts: true),
            invalid: .failure, full: full)
        if !plan.isEmpty { throw ExitCode(ExitStatus.findings.rawValue) }
    }
}
