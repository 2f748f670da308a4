import ArgumentParser
import Dispatch
import Foundation
import Glibc
import OrlController
import OrlCore
import OrlDaemon
import OrlGit
import OrlJSON
import OrlManifests
import OrlServer
import OrlStore
import Synchronization

/// What `sync` and `watch` share: the git source, how it is applied, and the state.
struct GitSourceOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The git repository: a path, file://, ssh://, user@host:path or https:// URL.", valueName: "url-or-path"))
    var repo: String

    @Option(help: ArgumentHelp("The branch (or tag, or refs/... name) to sync (default: the remote's default branch).", valueName: "ref"))
    var ref: String?

    @Option(help: ArgumentHelp("The directory of the repository that holds the manifests (default: all of it).", valueName: "dir"))
    var path: String?

    @Option(
        help: ArgumentHelp(
            "The source's name: its status, its inventory (git:NAME) and suspend/resume use it (default: the repository's name).",
            valueName: "name"))
    var name: String?

    @Flag(help: "Delete what this source applied before and its manifests no longer define.")
    var prune = false

    @Flag(help: "Apply a head that does not descend from the applied revision (a force push that rewinds the branch).")
    var allowRewind = false

    @Option(help: "Refuse to prune more than this many resources.")
    var maxDeletions = 10

    @Flag(help: "Allow --prune when the manifests define nothing (which prunes everything the source owns).")
    var allowEmpty = false

    @Flag(help: "Take over resources another source applied (otherwise such a revision is refused as a conflict).")
    var forceConflicts = false

    @Option(help: ArgumentHelp("SSH: the private key file to authenticate with.", valueName: "file"))
    var sshKey: String?

    @Option(
        help: ArgumentHelp(
            "HTTPS: the vault secret (NAME or NAMESPACE/NAME) that holds the access token (sent as the password; user x-access-token).",
            valueName: "secret"))
    var tokenSecret: String?

    @OptionGroup var state: StateOptions
    @OptionGroup var dataDirectory: DataDirectoryOption

    func validate() throws {
        if let name, !SourceRecord.isValidName(name) {
            throw ValidationError(
                "\(Diagnostic.quoted(name)) cannot name a source: use lower-case letters, digits, '-', '_' and '.' (at most 63)")
        }
        if maxDeletions < 0 { throw ValidationError("--max-deletions must be 0 or more") }
        if let tokenSecret { _ = try VaultReference.id(tokenSecret, flag: "--token-secret") }
    }

    /// The URL as stored: a local path made absolute, so that the same repository is the
    /// same source from any working directory.
    var resolvedURL: String {
        let isURL = repo.contains("://") || (repo.contains("@") && repo.contains(":") && !repo.hasPrefix("/"))
        guard !isURL else { return repo }
        return URL(fileURLWithPath: repo).standardizedFileURL.path
    }

    var resolvedName: String { name ?? SourceRecord.defaultName(forURL: resolvedURL) }

    func configuration(state directory: String, auth: @escaping @Sendable () -> GitAuth) -> GitSourceConfiguration {
        let name = resolvedName
        return GitSourceConfiguration(
            name: name, url: resolvedURL, ref: ref, path: path, prune: prune, allowRewind: allowRewind, maxDeletions: maxDeletions,
            allowEmpty: allowEmpty, auth: auth, appliedBy: Caller.identity, mirror: SourceLock.directory(directory) + "/\(name).git",
            codeTrees: CodeTrees(directory: PIDLock.absolute(directory) + "/code/\(name)"), forceConflicts: forceConflicts)
    }

    /// The credentials: the key file as given, the token from the vault (checked now,
    /// then read through a cache that notices a `secret set`).
    func credentials() throws -> @Sendable () -> GitAuth {
        let sshKey = self.sshKey
        guard let tokenSecret else { return { GitAuth(sshPrivateKey: sshKey) } }
        let secret = try VaultReference.secret(tokenSecret, flag: "--token-secret", state: state)
        return { GitAuth(sshPrivateKey: sshKey, token: secret()) }
    }

    /// Opens the state and checks that the name is not another repository's source.
    func open() throws -> (any StateBackend, GitSourceConfiguration, SourceLock) {
        let store = try state.open()
        // The mirror and the source's lock are this machine's files.
        let directory = try state.localDirectory(dataDirectory.path, create: true)
        let configuration = configuration(state: directory, auth: try credentials())
        let existing: SourceRecord?
        do {
            existing = try store.read { reader throws(StoreError) in try reader.source(named: configuration.name) }
        } catch {
            throw CommandFailure(message: error.description)
        }
        if let existing, existing.url != configuration.url {
            throw CommandFailure(
                message:
                    "source \(Diagnostic.quoted(configuration.name)) syncs \(existing.url), not \(configuration.url); give this one another --name"
            )
        }
        let lock = try SourceLock.acquire(directory, name: configuration.name)
        return (store, configuration, lock)
    }
}

/// `orlctl sync --once`: one round, for cron and CI.
struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        // Read only when `sync` is parsed as a root (`OrlctlMain.parse`): it is `orlctl`'s,
        // so no completion script is looked for. Under `orlctl` the root's name is used.
        _superCommandName: "orlctl",
        abstract: "Sync a git repository's manifests into the state, once.",
        discussion: """
            Asks the remote for the ref's commit; when it is the applied one, does nothing \
            else. Otherwise fetches it into a bare mirror in the state directory, reads the \
            manifests from the commit's tree (no checkout) and applies them as orlctl apply \
            does, all or nothing, with the source's own inventory (git:NAME). A head that does \
            not descend from the applied revision is refused unless --allow-rewind. A revision \
            that failed before is tried again (orlctl watch waits for a new head or a backoff).

            When Agents are applied and no controller runs for the state, one is started in \
            the background, as orlctl apply does (--no-controller, or ORL_NO_CONTROLLER=1, \
            to opt out).

            Exit codes: 0 applied or nothing to do (or suspended), 1 the manifests have \
            errors or a guard refused the revision (nothing applied), 2 error (the remote \
            cannot be reached, a git or state error).
            """
    )

    @OptionGroup var source: GitSourceOptions

    @Flag(help: "Do not start a controller when none runs (also ORL_NO_CONTROLLER=1).")
    var noController = false

    @Flag(help: "Sync one revision and exit (required; orlctl watch keeps syncing).")
    var once = false

    @Flag(
        help:
            "Read and check every manifest of the revision and compare every stored resource, ignoring what the last sync kept (the index is written again)."
    )
    var full = false

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    func validate() throws {
        guard once else { throw ValidationError("sync runs one round: pass --once (orlctl watch keeps syncing)") }
    }

    func run() async throws {
        let (store, opened, lock) = try source.open()
        defer { lock.release() }
        // One round, then the process ends: its apply is synced at its commit, and the
        // close does not fold the WAL into the database (SQLiteStateStore.closeWithoutCheckpoint).
        do {
            try (store as? SQLiteStateStore)?.closeWithoutCheckpoint()
        } catch {
            throw CommandFailure(message: error.description)
        }
        var configuration = opened
        configuration.full = full
        configuration.singleRound = true
        let sync = GitSourceSync(configuration: configuration, store: store, clock: { Caller.now })
        let report = await sync.round(retryFailed: true)
        // What the round read (the index of every file, the revision's manifests) goes
        // back to the system with the process; the state is closed as the command ends.
        keepUntilExit(sync.keptForTheNextRound())
        keepUntilExit(report)
        if report.changed { source.state.wakeController() }
        if !report.failed { try await ControllerAutostart.ensure(state: source.state, optedOut: noController, json: output == .json) }
        switch output {
        case .text: try SyncRenderer.finish(report, configuration: configuration)
        case .json:
            writeStandardOutput(SyncRenderer.json(report).rendered())
            if report.failed { throw ExitCode(SyncRenderer.exitStatus(report).rawValue) }
        }
    }
}

/// `orlctl watch`: rounds every `--interval` until SIGTERM or SIGINT.
struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Keep a git repository's manifests synced into the state.",
        discussion: """
            Runs in the foreground, a round every --interval (and at once on SIGUSR1, which \
            orlctl resume sends): the same round as orlctl sync --once, except that a revision \
            that failed is not tried again until the head moves or a backoff (2 minutes, \
            doubling to an hour) has passed; the last good revision stays applied meanwhile. \
            One line per round that changed something or failed goes to standard error \
            (with --verbose, one per round, also for a round that found nothing to do); \
            the state keeps the source's status and events (orlctl get sources, describe \
            source/NAME, events --for source/NAME). One watcher per source (a lock in \
            <state>/git). With --webhook it also serves http://ADDR/webhook for GitHub-style \
            push webhooks: a push to the watched ref signed (X-Hub-Signature-256) with the \
            vault secret --webhook-secret syncs at once; anything unsigned is refused (401). \
            SIGTERM or SIGINT ends it after the round in progress. When Agents are applied \
            and no controller runs for the state, one is started in the background after the \
            first round and after a round that changed the state, as orlctl apply does \
            (--no-controller, or ORL_NO_CONTROLLER=1, to opt out).

            Exit codes: 0 stopped by a signal, 2 error (another process syncs the source, \
            unreadable state).
            """
    )

    @OptionGroup var source: GitSourceOptions

    @Option(help: ArgumentHelp("How often to ask the remote for its head (e.g. 30s, 500ms, 2m).", valueName: "duration"))
    var interval = "30s"

    @Flag(help: "Do not start a controller when none runs (also ORL_NO_CONTROLLER=1).")
    var noController = false

    @Flag(help: "Log a line for every round, also one that found nothing to do (the head is the applied or a failed revision).")
    var verbose = false

    @Option(
        help: ArgumentHelp(
            "Serve a receiver for GitHub-style push webhooks on this address (HOST:PORT, or :PORT for every interface) at /webhook; a push to the watched ref syncs at once.",
            valueName: "addr"))
    var webhook: String?

    @Option(
        help: ArgumentHelp(
            "The vault secret (NAME or NAMESPACE/NAME) that X-Hub-Signature-256 is checked against (required with --webhook).",
            valueName: "secret"))
    var webhookSecret: String?

    @Option(
        help: ArgumentHelp(
            """
            Watch as part of controller node NAME (docs/nodes.md): run one watch per node; the \
            source is synced only by the one whose node holds the source's role, which moves to \
            another node's watch when that node's lease lapses.
            """, valueName: "name"))
    var node: String?

    func validate() throws {
        if let node, let problem = NodeLabels.nameProblem(node) { throw ValidationError("--node: \(problem)") }
        guard let duration = DurationValue(interval)?.duration, duration > .zero else {
            throw ValidationError("--interval: \(Diagnostic.quoted(interval)) is not a duration such as 30s, 500ms or 2m")
        }
        if let webhook {
            guard Self.address(webhook) != nil else {
                throw ValidationError("--webhook: \(Diagnostic.quoted(webhook)) is not HOST:PORT or :PORT")
            }
            guard let webhookSecret else {
                throw ValidationError("--webhook needs --webhook-secret NAME: deliveries are checked against that vault secret")
            }
            _ = try VaultReference.id(webhookSecret, flag: "--webhook-secret")
        } else if webhookSecret != nil {
            throw ValidationError("--webhook-secret goes with --webhook")
        }
    }

    /// `HOST:PORT`, or `:PORT` for every interface.
    static func address(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        let host = String(text[..<colon])
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    func run() async throws {
        let (store, configuration, lock) = try source.open()
        defer { lock.release() }
        let interval = DurationValue(interval)!.duration
        let wakes = Inbox<Watcher.Wake>()
        var receiver: Task<Void, any Error>?
        if let webhook, let address = Self.address(webhook), let webhookSecret {
            let secret = try VaultReference.secret(webhookSecret, flag: "--webhook-secret", state: source.state)
            let handler = Self.webhookHandler(secret: secret, ref: configuration.ref, source: configuration.name, wakes: wakes)
            do {
                ConnectionGuard.raiseDescriptorLimit()
                let (url, task) = try await WebhookServer(host: address.host, port: address.port, handle: handler).start()
                receiver = task
                SyncRenderer.log("webhook receiver listening on \(url)")
            } catch {
                throw CommandFailure(message: "cannot serve the webhook on \(webhook): \(error)")
            }
        }
        let ref = configuration.ref.map { " \($0)" } ?? ""
        let path = configuration.path.map { " (\($0))" } ?? ""
        SyncRenderer.log(
            "watching \(configuration.url)\(ref)\(path) every \(DurationValue(self.interval)!.text) as source \(configuration.name)")
        let rounds = WatchRounds(
            sync: GitSourceSync(configuration: configuration, store: store, clock: { Caller.now }), store: store, state: source.state,
            interval: interval, node: node, noController: noController, verbose: verbose)
        do {
            try await Watcher(wakes: wakes, receiver: receiver) { await rounds.next() }.run()
        } catch {
            throw CommandFailure(message: error.description)
        }
        SyncRenderer.log("stopped watching source \(configuration.name)")
    }
}

/// The watch's rounds: what each does and how long the watch waits after it. Called by
/// one loop at a time (`Watcher`'s rounds service), so its lock is never contended.
final class WatchRounds: Sendable {
    private struct Memory {
        var wasSuspended = false
        var firstRound = true
        var holding: Bool?
    }

    private let sync: GitSourceSync
    private let store: any StateBackend
    private let state: StateOptions
    private let interval: Duration
    private let node: String?
    private let noController: Bool
    /// A line for every round, not only those that changed or failed something: for an
    /// operator who wants to see that the watch is alive, and for tests to wait on.
    private let verbose: Bool
    private let memory = Mutex(Memory())

    init(
        sync: GitSourceSync, store: any StateBackend, state: StateOptions, interval: Duration, node: String?, noController: Bool,
        verbose: Bool
    ) {
        self.sync = sync
        self.store = store
        self.state = state
        self.interval = interval
        self.node = node
        self.noController = noController
        self.verbose = verbose
    }

    /// Runs a round (or, on a node that does not hold the source's role, only looks at
    /// the role) and returns the wait before the next.
    func next() async -> Duration {
        let name = sync.configuration.name
        if let node {
            // One watcher of the source across nodes: the one whose node holds its role.
            let holds = WatchSingleton.holds(store, node: node, source: name)
            let changed = memory.withLock { memory in
                defer { memory.holding = holds }
                return memory.holding != holds
            }
            if changed || (verbose && !holds) {
                SyncRenderer.log(
                    "source \(name): " + (holds ? "watched by this watch (node \(node))" : "left to the watch of the node holding its role")
                )
            }
            if !holds { return min(interval, .seconds(2)) }
        }
        let report = await sync.round(retryFailed: false)
        if report.changed { state.wakeController() }
        // After the first round and after changes only: a controller stopped on purpose
        // stays stopped until the fleet changes again.
        let firstRound = memory.withLock { $0.firstRound }
        if !report.failed, report.changed || firstRound {
            memory.withLock { $0.firstRound = false }
            do {
                try await ControllerAutostart.ensure(state: state, optedOut: noController, json: true)
            } catch {
                SyncRenderer.log("cannot start a controller: \(error)")
            }
        }
        let suspended = if case .suspended = report.outcome { true } else { false }
        let wasSuspended = memory.withLock { memory in
            defer { memory.wasSuspended = suspended }
            return memory.wasSuspended
        }
        if let recovered = report.recovered { SyncRenderer.log("source \(name): \(recovered)") }
        if report.repeated {
            // Still unreachable: said once, when it started.
            if verbose, let line = SyncRenderer.logLine(report) { SyncRenderer.log(line) }
        } else if let line = SyncRenderer.logLine(report), !(suspended && wasSuspended) {
            SyncRenderer.log(line)
        } else if wasSuspended && !suspended {
            SyncRenderer.log("source \(name): resumed")
        } else if verbose, let line = SyncRenderer.logLine(report) ?? SyncRenderer.quietLine(report) {
            SyncRenderer.log(line)
        }
        if case .invalid(let validation, let files) = report.outcome {
            OrlctlMain.writeStandardError(DiagnosticRenderer.text(validation, files: files, color: false))
        }
        if case .unreachable = report.outcome {
            return SourceSync.unreachableDelay(failures: report.record?.failures ?? 1, interval: interval)
        }
        return interval
    }
}

extension Watch {
    /// Checks a delivery's signature, then syncs at once when it is a push to the
    /// watched ref. Unsigned or wrongly signed deliveries change nothing.
    static func webhookHandler(secret: @escaping @Sendable () -> String?, ref: String?, source: String, wakes: Inbox<Watcher.Wake>)
        -> @Sendable (WebhookDelivery) async -> WebhookAnswer
    {
        { delivery in
            guard let secret = secret(), GitWebhook.isValid(signature: delivery.signature, body: delivery.body, secret: secret) else {
                SyncRenderer.log("source \(source): webhook delivery refused: bad or missing X-Hub-Signature-256")
                return WebhookAnswer(
                    status: 401, message: "refused: X-Hub-Signature-256 must be sha256= and the HMAC-SHA256 of the body with the secret")
            }
            let event: GitWebhook.Event
            do throws(WebhookError) {
                event = try GitWebhook.event(named: delivery.event, body: delivery.body)
            } catch {
                return WebhookAnswer(status: 400, message: error.message)
            }
            switch event {
            case .ping:
                return WebhookAnswer(status: 200, message: "pong")
            case .push(let pushed, let after, _):
                guard GitWebhook.moves(event, watched: ref) else {
                    return WebhookAnswer(status: 202, message: "ignored: \(pushed) is not the watched ref")
                }
                wakes.post(.now)
                let commit = after.map { " to \(SourceSync.short($0))" } ?? ""
                SyncRenderer.log("source \(source): webhook: push of \(pushed)\(commit); syncing")
                return WebhookAnswer(status: 202, message: "syncing")
            case .other(let name):
                return WebhookAnswer(status: 202, message: "ignored: event \(name)")
            }
        }
    }
}

/// A vault secret named on the command line (`NAME` or `NAMESPACE/NAME`), for the
/// credentials of sync and watch.
enum VaultReference {
    static func id(_ text: String, flag: String) throws -> SecretID {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        let id = parts.count == 2 ? SecretID(namespace: parts[0], name: parts[1]) : SecretID(name: text)
        if let problem = SecretID.problem(name: id.name, namespace: id.namespace) { throw ValidationError("\(flag): \(problem)") }
        return id
    }

    /// The secret's value, read now (so that a missing secret or key fails at start,
    /// exit 2) and then through a cache on a connection of its own, which reads the
    /// vault again only after another process changed the state (`orlctl secret set`).
    static func secret(_ text: String, flag: String, state: StateOptions) throws -> @Sendable () -> String? {
        let id = try id(text, flag: flag)
        let store = try state.open()
        let vault = StateVault(store: store, keys: state.masterKeys)
        let value: String?
        do {
            value = try vault.value(of: id)
        } catch {
            throw CommandFailure(message: "\(flag): cannot read \(id): \(error)")
        }
        guard value != nil else {
            let scope = id.namespace == ResourceID.defaultNamespace ? "" : " -n \(id.namespace)"
            throw CommandFailure(message: "\(flag): \(id) is not in the vault; set it with orlctl secret set \(id.name)\(scope)")
        }
        let cache = SecretCache(vault: vault, changeMarker: { try? store.changeMarker() })
        return { cache.value(of: id) }
    }
}

/// `<state>/git/<name>.lock`: held by the process that syncs the source (a watcher for
/// its whole life, `sync --once` for its round), so two never fetch into one mirror or
/// apply one source at once. It holds the PID, for resume to wake the watcher.
struct SourceLock {
    let lock: PIDLock

    static func directory(_ state: String) -> String { state + "/git" }

    static func path(_ state: String, name: String) -> String { directory(state) + "/\(name).lock" }

    static func acquire(_ state: String, name: String) throws -> SourceLock {
        do {
            try FileManager.default.createDirectory(
                atPath: directory(state), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CommandFailure(message: "cannot create \(directory(state)): \(error.localizedDescription)")
        }
        return SourceLock(
            lock: try PIDLock.acquire(
                file: path(state, name: name), held: { pid in "source \(Diagnostic.quoted(name)) is being synced by another orlctl\(pid)" })
        )
    }

    func release() { lock.release() }

    /// Tells the watcher of the source, if one runs, to sync now.
    static func wake(_ state: String, name: String) {
        guard let pid = try? PIDLock.holder(file: path(PIDLock.absolute(state), name: name)), pid > 0 else { return }
        _ = kill(pid, SIGUSR1)
    }
}
