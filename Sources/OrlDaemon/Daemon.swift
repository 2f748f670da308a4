import Foundation
import Logging
public import OrlController
public import OrlCore
public import OrlPostgres
import OrlRuntime
public import OrlServer
public import OrlStore
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// The controller's process: the long-running parts of orl, each a service in one
/// `ServiceGroup`, which starts them, and on SIGTERM or SIGINT shuts them down in the
/// reverse order, each once the one after it has finished:
///
/// 1. reconcile (the `Controller`): stops every agent, each within its grace period;
/// 2. history retention, log rotation, lease pruning (timers);
/// 3. the runs driver; the secrets the gateway reads;
/// 4. the change feed;
/// 5. the API and gateway: after the agents, so that their last calls are answered;
/// 6. the ledger: its last batch once no call can add to it.
///
/// Every SQLite connection is used from an actor (or queue) with an executor of its
/// own, never from the cooperative pool, so a long write by another process (a large
/// apply) stalls only the loop that waits for it. The gateway reads nothing from the
/// store on a call's path: the controller pushes it the fleet and the tokens, and the
/// secrets service the provider keys, each time the change feed says the store changed.
///
/// The PID lock, detaching and the command line are `orlctl controller`'s business.
public struct Daemon: Sendable {
    public struct Configuration: Sendable {
        /// The state directory, absolute.
        public var stateDirectory: String
        /// Where to serve the API: nil is the previous run's port (adopted agents know
        /// only that one), else any free port.
        public var listen: (host: String, port: Int)?
        public var logMaxBytes = 10 * 1024 * 1024
        public var logKeep = 3
        /// How often the logs are looked at for rotation.
        public var logRotationInterval: Duration = .seconds(10)
        /// How often history is trimmed as `orlctl gc` does with its defaults.
        public var retentionInterval: Duration = .seconds(3600)
        /// How often the change feed asks SQLite whether the store changed when it
        /// cannot watch the database's files.
        public var changePollInterval: Duration = .milliseconds(100)
        /// How often it asks anyway while watching them, in case news was lost.
        public var changeSafetyInterval: Duration = .seconds(5)
        /// Also serve /metrics here, without the operator token (`--metrics-listen`).
        public var metricsListen: (host: String, port: Int)?
        /// Metrics and spans (`.off`: none kept).
        public var telemetry: Telemetry = .off
        /// Who the dashboard's decisions are recorded as made by (`user@host (dashboard)`).
        public var identity = "dashboard"
        /// Called once the API (and /metrics) listen, with the API's URL: `--detach`
        /// returns then.
        public var onListening: (@Sendable (String) -> Void)?
        /// The controller's own settings (its API URL is set once the API listens).
        public var controller: Controller.Configuration
        /// One node of several sharing the state (`--node`, docs/nodes.md): it runs only the
        /// agents placed on it, and the runs driver only while it holds the `runs` role.
        public var node: NodeMembership.Configuration?
        /// The node's guard process, which kills its agents if the node dies.
        public var nodeGuard: (any NodeGuardLink)?
        /// The node's own connection to the state for placement, releases and roles (nil: one
        /// opened for it), so that busy services never hold up its steps.
        public var nodeStore: (any NodeStore)?
        /// The connection its lease is registered, renewed and ended on (nil: one opened for
        /// it), so that nothing a step waits for (placement's lock, the other placers) ever
        /// holds up a renewal.
        public var nodeLeaseStore: (any NodeStore)?
        /// Where controller.api and controller.token go: the state directory, or a node's
        /// directory of its own in it (several nodes may share a directory on one host).
        public var runDirectory: String { node.map { stateDirectory + "/nodes/" + $0.name } ?? stateDirectory }

        public init(stateDirectory: String) {
            self.stateDirectory = stateDirectory
            self.controller = Controller.Configuration(stateDirectory: stateDirectory)
        }
    }

    public let configuration: Configuration
    /// The state the daemon runs on (a SQLite directory or a PostgreSQL database).
    public let state: DaemonState
    public let keys: MasterKeySource
    public let log: @Sendable (ControllerEvent) -> Void

    public init(
        configuration: Configuration, keys: MasterKeySource, log: @escaping @Sendable (ControllerEvent) -> Void, state: DaemonState
    ) {
        self.configuration = configuration
        self.keys = keys
        self.log = log
        self.state = state
    }

    /// A SQLite state in `configuration.stateDirectory`, each service on a connection
    /// `openStore` opens.
    public init(
        configuration: Configuration, keys: MasterKeySource, log: @escaping @Sendable (ControllerEvent) -> Void,
        openStore: @escaping @Sendable () throws(StoreError) -> SQLiteStateStore
    ) {
        self.init(
            configuration: configuration, keys: keys, log: log,
            state: .sqlite(directory: configuration.stateDirectory, open: openStore))
    }

    /// `<state>/controller.api`: the URL the last controller served its API on.
    public static func apiFile(_ directory: String) -> String { directory + "/controller.api" }

    /// `<state>/controller.token`: the operator's credential for the API's `/orl/v1`
    /// routes, new for each controller, readable by the state's owner only.
    public static func tokenFile(_ directory: String) -> String { directory + "/controller.token" }

    /// `HOST:PORT`, as --listen takes it and controller.api records it.
    public static func address(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port)
        else { return nil }
        let host = String(text[..<colon])
        return host.isEmpty ? nil : (host, port)
    }

    /// Runs until SIGTERM or SIGINT has stopped every agent and every service.
    public func run() async throws(DaemonError) {
        let directory = configuration.stateDirectory
        let state = self.state
        let store: any StateBackend
        let apiStore: any StateBackend
        let runsStore: any StateBackend
        let ledgerStore: any StateBackend
        let feedStore: any StateBackend
        let secretsStore: any StateBackend
        let retentionStore: any StateBackend
        let dashboardStore: any StateBackend
        let alertStore: any StateBackend
        let apiReadStore: any StateBackend
        do {
            (store, apiStore, runsStore) = (try state.open(), try state.open(), try state.open())
            (ledgerStore, feedStore, secretsStore, retentionStore) = (
                try state.open(), try state.open(), try state.open(), try state.open()
            )
            (dashboardStore, alertStore, apiReadStore) = (try state.open(), try state.open(), try state.open())
        } catch {
            throw DaemonError("cannot open the state \(state.label): \(error.description)")
        }
        let log = self.log

        // ORL_MASTER_KEY is read once, from the controller's own environment (agents never
        // see it: theirs is built from scratch); master.key is read when secrets are opened.
        let keys = self.keys
        let secrets = SecretsService(cache: SecretCache(vault: StateVault(store: secretsStore, keys: keys)))
        await secrets.refresh()
        let secretCache = { @Sendable (id: SecretID) in secrets.cacheValue(of: id) }
        // Filled in once the controller exists: the gateway halts an agent at once.
        let halt = Inbox<Bool>()
        let gateway = Gateway(
            store: ledgerStore, providerKey: secretCache, clock: Controller.systemTime, log: log,
            onExhausted: { halt.post(true) }, telemetry: configuration.telemetry,
            // Nodes on one SQLite state each serve a gateway too: their budgets must be exact
            // across them.
            reservations: state.sharesBudgets || configuration.node != nil ? ledgerStore : nil)
        // The agents' task and tool calls, on a connection of their own (on a queue of
        // the API's own: SQLite calls block): a poll waits for its agent's next Ready
        // step, which the API's own answers, the runs driver's sweeps and the change
        // feed announce.
        let waiters = TaskWaiters()
        let agents = AgentAPI(
            gateway: gateway, store: apiStore, reader: apiReadStore, waiters: waiters, commands: ProcessRuntime(), secret: secretCache,
            configuration: AgentAPI.Configuration(stateDirectory: directory))
        // Ready only once it knows the tasks in flight: their calls are attributed from
        // the first one.
        await agents.prepare()
        let (url, server) = try await serve(gateway, agents: agents) { adminToken in
            Dashboard(
                store: dashboardStore, adminToken: adminToken, budgets: { gateway.budgetStatus(now: $0) },
                onReady: { waiters.notify($0) }, clock: Controller.systemTime, identity: configuration.identity)
        }
        let metricsServer = try await serveMetrics(gateway)
        configuration.onListening?(url)

        var controllerConfiguration = configuration.controller
        controllerConfiguration.apiURL = url
        if let node = configuration.node {
            controllerConfiguration.node = node.name
            let guardLink = configuration.nodeGuard
            controllerConfiguration.onProcess = { process, running in guardLink?.track(process, running: running) }
        }
        if let metrics = configuration.telemetry.metrics {
            controllerConfiguration.onPass = { took in metrics.observe(Metrics.reconcileDuration, [], Metrics.seconds(took)) }
        }
        // Sandboxed agents reach the API on a listener in their own network namespace.
        let controller = Controller(
            store: store, runtime: ProcessRuntime(listeners: SandboxBridge(apiURL: url)), gateway: gateway,
            configuration: controllerConfiguration, log: log,
            masterKey: { () throws(VaultError) in try keys.load() })
        let membership: NodeMembership?
        if var node = configuration.node {
            node.roles = [NodeMembership.runsRole]
            let nodeStore: any NodeStore
            let leaseStore: any NodeStore
            do throws(StoreError) {
                if let own = configuration.nodeStore { nodeStore = own } else { nodeStore = try state.open() }
                if let own = configuration.nodeLeaseStore { leaseStore = own } else { leaseStore = try state.open() }
            } catch {
                throw DaemonError("cannot open the state \(state.label): \(error.description)")
            }
            membership = NodeMembership(
                store: nodeStore, leaseStore: leaseStore, controller: controller, configuration: node, log: log,
                guardLink: configuration.nodeGuard,
                onLease: { gateway.serve(node: $0) })
        } else {
            membership = nil
        }
        var leader: (@Sendable () -> Bool)?
        if let roles = membership?.roles { leader = { roles.holds(NodeMembership.runsRole) } }
        let runs = RunsDriver(store: runsStore, log: log, onReady: { waiters.notify($0) }, leader: leader)
        // The API's and the runs driver's commits wake the polls they concern in memory
        // (`onReady`): the feed wakes the polls only for other writers' (`orlctl run`,
        // `approve`, another node), not once more for each step an agent completes here.
        let own = OwnCommits()
        for writer in [apiStore, runsStore] { (writer as? SQLiteStateStore)?.recordRunCommits(in: own) }
        let notifier = Notifier(store: alertStore, secret: secretCache, log: log, clock: Controller.systemTime)
        let feedLog: @Sendable (String) -> Void = { log(ControllerEvent(time: Controller.systemTime(), reason: .error, message: $0)) }
        let feed = ChangeFeed(
            store: feedStore, removed: state.removed, interval: configuration.changePollInterval,
            signal: state.signal(feedLog), safetyInterval: configuration.changeSafetyInterval,
            subscribers: [
                .init(topics: [.resources, .secrets]) { controller.inbox.post(.storeChanged) },
                // New agents to place.
                .init(topics: [.resources]) { membership?.inbox.post(true) } as ChangeFeed.Subscriber,
                // Workflows (their cron triggers) are resources; runs move leases.
                .init(topics: [.resources]) { runs.storeChanged.post(.workflows) },
                // Its own leases and deadlines too: a claim here sets one to sweep at.
                .init(topics: [.runs], ownToo: true) { runs.storeChanged.post(.runs) },
                // Task polls wait for a Ready step: a run started, an approval decided.
                .init(topics: [.runs]) { agents.storeChanged() },
                .init(topics: [.secrets]) { secrets.changed.post(true) },
                // New events may be due to Alerts (themselves resources).
                .init(topics: [.events, .resources]) { notifier.storeChanged.post(true) },
            ],
            own: own, log: feedLog)

        // apply, suspend and resume signal SIGUSR1 after a change. Agents do not inherit
        // the ignored disposition: the spawn resets every signal to its default.
        // The logs are looked at too: whoever signals needs no wait of up to the rotation's
        // interval for a log past its size to be rotated.
        let rotationWakes = Inbox<Bool>()
        signal(SIGUSR1, SIG_IGN)
        let wake = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
        wake.setEventHandler {
            controller.wake("SIGUSR1")
            rotationWakes.post(true)
        }
        wake.resume()
        defer { wake.cancel() }
        let halts = Task {
            while !Task.isCancelled {
                if !(await halt.take()).isEmpty { controller.wake("a budget is exhausted") }
            }
        }
        defer { halts.cancel() }

        let (maxBytes, keep) = (configuration.logMaxBytes, configuration.logKeep)
        // Spans go last: after the ledger, so that the calls' last spans are in.
        let tracing: [any Service] = configuration.telemetry.tracer.map { [TracingService(tracer: $0, agents: agents)] } ?? []
        let services: [any Service] =
            tracing + [
                LedgerService(gateway: gateway),
                McpServersService(agents: agents),
                APIService(server: server),
            ] + (metricsServer.map { [APIService(server: $0)] } ?? []) + [

                feed,
                secrets,
                RunsService(driver: runs),
                NotifierService(notifier: notifier),
                PeriodicService("log-rotation", every: configuration.logRotationInterval, wakes: rotationWakes) {
                    LogRotation.rotateAll(in: directory + "/logs", runtime: ProcessRuntime(), maxBytes: maxBytes, keep: keep, log: log)
                },
                PeriodicService("retention", every: configuration.retentionInterval, atStart: true) {
                    _ = try? retentionStore.retain(.standard, now: Controller.systemTime())
                    // Git sources' mirrors: repacked once git's own thresholds are passed.
                    let mirrors = GitMirrors.collect(
                        in: directory + "/git", thorough: false, environment: ProcessInfo.processInfo.environment)
                    for mirror in mirrors.mirrors {
                        if let error = mirror.error {
                            log(
                                ControllerEvent(
                                    time: Controller.systemTime(), reason: .error, message: "git mirror \(mirror.path): \(error)"))
                        }
                    }
                },
                PeriodicService("lease-pruning", every: .seconds(60)) { agents.prune() },
                // Budget holds in the store: this gateway's renewed, abandoned ones released.
                PeriodicService("budget-holds", every: BudgetHolder.renewInterval) { gateway.keepSharedHolds() },
            ] + (membership.map { [NodeService(membership: $0)] } ?? []) + [
                ReconcileService(controller: controller)
            ]
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services.map {
                    .init(
                        service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
                        failureTerminationBehavior: .gracefullyShutdownGroup)
                },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: Logger(label: "orl.daemon", factory: { _ in SwiftLogNoOpLogHandler() })))
        do {
            try await group.run()
        } catch {
            throw DaemonError("the controller stopped: \(error)")
        }
    }

    /// `metricsListen`: /metrics on an address of its own, without the token.
    private func serveMetrics(_ gateway: Gateway) async throws(DaemonError) -> Task<Void, any Error>? {
        guard let address = configuration.metricsListen else { return nil }
        do {
            let (url, task) = try await MetricsServer(gateway: gateway, host: address.host, port: address.port).start()
            log(ControllerEvent(time: Controller.systemTime(), reason: .listening, message: url + "/metrics"))
            return task
        } catch {
            throw DaemonError("cannot serve the metrics on \(address.host):\(address.port): \(error)")
        }
    }

    /// Starts the API: on `listen`, else on the previous run's port (adopted agents know
    /// only that one), else on any free port.
    private func serve(
        _ gateway: Gateway, agents: AgentAPI, dashboard: (_ adminToken: String) -> Dashboard
    ) async throws(DaemonError) -> (String, Task<Void, any Error>) {
        let directory = configuration.runDirectory
        try? FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let previous = (try? String(contentsOfFile: Self.apiFile(directory), encoding: .utf8))
            .flatMap { text -> (host: String, port: Int)? in
                let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
                guard trimmed.hasPrefix("http://") else { return nil }
                return Self.address(String(trimmed.dropFirst("http://".count)))
            }
        let wanted = configuration.listen ?? previous ?? ("127.0.0.1", 0)
        let adminToken = Controller.newToken()
        let file = Self.tokenFile(directory)
        unlink(file)
        let fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0, write(fd, adminToken, adminToken.utf8.count) == adminToken.utf8.count else {
            throw DaemonError("cannot write \(file): \(String(cString: strerror(errno)))")
        }
        close(fd)
        let dashboard = dashboard(adminToken)
        func server(port: Int) -> APIServer {
            APIServer(
                gateway: gateway, agents: agents, host: wanted.host, port: port, adminToken: adminToken, runsBackgroundWork: false,
                dashboard: dashboard)
        }
        let started: (url: String, task: Task<Void, any Error>)
        do {
            started = try await server(port: wanted.port).start()
        } catch {
            guard configuration.listen == nil, wanted.port != 0 else {
                throw DaemonError("cannot serve the API on \(wanted.host):\(wanted.port): \(error)")
            }
            log(
                ControllerEvent(
                    time: Controller.systemTime(), reason: .error,
                    message: "cannot serve the API on the previous port \(wanted.port) (\(error)); agents started before will be restarted"
                ))
            do {
                started = try await server(port: 0).start()
            } catch {
                throw DaemonError("cannot serve the API on \(wanted.host): \(error)")
            }
        }
        do {
            try (started.url + "\n").write(toFile: Self.apiFile(directory), atomically: true, encoding: .utf8)
        } catch {
            log(ControllerEvent(time: Controller.systemTime(), reason: .error, message: "cannot record the API URL: \(error)"))
        }
        log(ControllerEvent(time: Controller.systemTime(), reason: .listening, message: started.url))
        return started
    }
}

/// The state a daemon runs on: how each service gets its store, and how the change feed
/// learns of commits made elsewhere (another `orlctl`, another node).
public struct DaemonState: Sendable {
    /// The state as messages name it: its directory, or its URL without a password.
    public var label: String
    /// A store for one service. SQLite: a connection of its own each time (a long write
    /// by another process stalls only the service waiting for it). PostgreSQL: the one
    /// store, whose pool every service shares.
    public var open: @Sendable () throws(StoreError) -> any StateBackend
    /// The feed's signal (nil: it polls); `log` takes what it has to say (a lost session).
    public var signal: @Sendable (_ log: @escaping @Sendable (String) -> Void) -> (any ChangeSignal)?
    /// Says why the state is gone, when it is; nil while it is there.
    public var removed: (@Sendable () -> String?)?
    /// Whether several gateways may serve the state (PostgreSQL: every node's), so that
    /// each model call is also reserved in the store (`BudgetReservations`). A SQLite
    /// state has one controller, whose meter is exact, and whose calls must never wait
    /// for the file's write lock (a large apply holds it for seconds).
    public var sharesBudgets: Bool

    public init(
        label: String, open: @escaping @Sendable () throws(StoreError) -> any StateBackend,
        signal: @escaping @Sendable (_ log: @escaping @Sendable (String) -> Void) -> (any ChangeSignal)?,
        removed: (@Sendable () -> String?)?, sharesBudgets: Bool
    ) {
        self.label = label
        self.open = open
        self.signal = signal
        self.removed = removed
        self.sharesBudgets = sharesBudgets
    }

    /// The SQLite state in `directory`: inotify on its files, and the daemon stops when
    /// its database is deleted.
    public static func sqlite(
        directory: String, open: @escaping @Sendable () throws(StoreError) -> SQLiteStateStore
    ) -> DaemonState {
        let path = SQLiteStateStore.databasePath(directory)
        return DaemonState(
            label: directory, open: { () throws(StoreError) in try open() }, signal: { _ in SQLiteFileSignal(databasePath: path) },
            removed: ChangeFeed.removal(of: path), sharesBudgets: false)
    }

    /// A PostgreSQL state: one store (one pool) for every service, and `LISTEN` on its
    /// change channel, from every node's commits.
    public static func postgres(_ store: PostgresStateStore) -> DaemonState {
        DaemonState(
            label: store.url.description, open: { () throws(StoreError) in store }, signal: { log in store.changeSignal(log: log) },
            removed: nil, sharesBudgets: true)
    }
}

/// Why the daemon could not start or stopped on its own.
public struct DaemonError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
