import OrlController
import OrlCore
import OrlServer
import OrlStore
import ServiceLifecycle

/// The reconcile loop: on graceful shutdown it stops every agent (each with its grace
/// period), which is why it is the first service the group shuts down.
struct ReconcileService: Service {
    let controller: Controller

    func run() async throws {
        await withGracefulShutdownHandler {
            await controller.run()
        } onGracefulShutdown: {
            controller.requestStop()
        }
    }
}

/// Workflow runs moved along: leases, timeouts, approvals, cron.
struct RunsService: Service {
    let driver: RunsDriver

    func run() async throws {
        await cancelWhenGracefulShutdown { await driver.run() }
    }
}

/// A node's membership (`--node`): shut down after the controller has stopped every agent,
/// and then ends its lease, so that those agents move to other nodes at once.
struct NodeService: Service {
    let membership: NodeMembership

    func run() async throws {
        await cancelWhenGracefulShutdown { await membership.run() }
        await membership.leave()
    }
}

/// Alerts' notifications posted to their webhooks from the store's outbox.
struct NotifierService: Service {
    let notifier: Notifier

    func run() async throws {
        await cancelWhenGracefulShutdown { await notifier.run() }
    }
}

/// The HTTP API, already listening when the group starts (the controller needs its
/// URL first): serves until the group shuts it down, after the agents have stopped.
struct APIService: Service {
    let server: Task<Void, any Error>

    func run() async throws {
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await server.value
        } onCancelOrGracefulShutdown: {
            server.cancel()
        }
    }
}

/// The gateway's ledger: batches written on an executor of their own, since a write
/// may wait for another process's lock; the last batch once the API has stopped.
actor LedgerService: Service {
    private let gateway: Gateway
    private let executor: StoreExecutor

    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    init(gateway: Gateway, executor: StoreExecutor = StoreExecutor(label: "orl.ledger")) {
        self.gateway = gateway
        self.executor = executor
    }

    func run() async throws {
        let gateway = self.gateway
        await cancelWhenGracefulShutdown {
            await gateway.run(write: { await self.flush() })
        }
        finish()
    }

    private func flush() { gateway.flush() }

    /// The store's budget holds of the last calls, settled before the process exits.
    private func finish() { gateway.finishSharedBudgets() }
}

/// The gateway's provider keys (and tools' credentials), read from the vault when the
/// store changed and pushed into the cache the request path reads without a lock on
/// the store.
actor SecretsService: Service {
    private let cache: SecretCache
    private let executor: StoreExecutor
    nonisolated let changed = Inbox<Bool>()

    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    init(cache: SecretCache, executor: StoreExecutor = StoreExecutor(label: "orl.secrets")) {
        self.cache = cache
        self.executor = executor
    }

    func refresh() { cache.refresh() }

    /// What the request path reads: the cache, never the store.
    nonisolated func cacheValue(of id: SecretID) -> String? { cache.value(of: id) }

    func run() async throws {
        await cancelWhenGracefulShutdown { await self.follow() }
    }

    private func follow() async {
        while !Task.isCancelled {
            if !(await changed.take()).isEmpty { cache.refresh() }
        }
    }
}

/// Work that only time calls for (log rotation, history retention, forgetting lapsed
/// leases): a timer, on an executor of its own when the work blocks. `wakes` brings a
/// round forward (one that came during a round brings the next at once).
struct PeriodicService: Service {
    let name: String
    let interval: Duration
    let atStart: Bool
    let wakes: Inbox<Bool>?
    let executor: StoreExecutor
    let work: @Sendable () -> Void

    init(
        _ name: String, every interval: Duration, atStart: Bool = false, wakes: Inbox<Bool>? = nil,
        work: @escaping @Sendable () -> Void
    ) {
        self.name = name
        self.interval = interval
        self.atStart = atStart
        self.wakes = wakes
        self.executor = StoreExecutor(label: "orl.\(name)")
        self.work = work
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            if atStart { await executor.run(work) }
            while !Task.isCancelled {
                if let wakes { _ = await wakes.take(waitingAtMost: interval) } else { try? await Task.sleep(for: interval) }
                if Task.isCancelled { break }
                await executor.run(work)
            }
        }
    }
}

/// OpenTelemetry spans: the exporter, and the `invoke_workflow` span of each traced run
/// once it has ended (a second at most after). Shut down last: its final export carries
/// the spans of the calls the API answered while the agents stopped.
struct TracingService: Service {
    let tracer: Tracer
    let agents: AgentAPI

    func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await cancelWhenGracefulShutdown {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(1))
                        await agents.traceEndedRuns()
                    }
                }
            }
            group.addTask {
                await cancelWhenGracefulShutdown { await tracer.run() }
            }
        }
        await agents.traceEndedRuns()
        await tracer.flush()
    }
}

/// The MCP servers orl fronts: their live definitions compared with their pins (the
/// Tools' status), the idle stdio ones stopped every minute, and all of them once the
/// API that calls them has stopped.
struct McpServersService: Service {
    let agents: AgentAPI

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                // The Tools' PinMatches conditions.
                group.addTask { await agents.watchPins() }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(60))
                        await agents.stopIdleServers()
                    }
                }
            }
        }
        await agents.stopServers()
    }
}
