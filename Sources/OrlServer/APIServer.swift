import Hummingbird
import Logging
import NIOCore
import OrlCore

/// The controller's HTTP API on loopback: the gateway under `/v1`, and the agents' task
/// and tool calls beside it (`AgentAPI`). Agents find it in ORL_API_URL (and
/// OPENAI_BASE_URL, which is its `/v1`).
public struct APIServer: Sendable {
    public let gateway: Gateway
    /// Tasks and tools; nil serves the gateway alone.
    public let agents: AgentAPI?
    public let host: String
    public let port: Int
    /// The operator's credential (`<state>/controller.token`) for `/orl/v1`, which agents
    /// cannot read; nil serves no operator routes.
    public let adminToken: String?
    /// The connections held at most (see `ConnectionGuard`).
    public let connections: ConnectionGuard
    /// The web dashboard under `/ui`; nil serves none.
    public let dashboard: Dashboard?
    /// Whether `run` also writes the ledger and watches the store for the agents'
    /// polls; false when the daemon runs those as services of their own.
    public let runsBackgroundWork: Bool

    /// `port` 0 lets the system choose one.
    public init(
        gateway: Gateway, agents: AgentAPI? = nil, host: String = "127.0.0.1", port: Int, adminToken: String? = nil,
        connections: ConnectionGuard = ConnectionGuard(cap: ConnectionGuard.capForThisProcess()), runsBackgroundWork: Bool = true,
        dashboard: Dashboard? = nil
    ) {
        self.dashboard = dashboard
        self.connections = connections
        self.runsBackgroundWork = runsBackgroundWork
        self.gateway = gateway
        self.agents = agents
        self.host = host
        self.port = port
        self.adminToken = adminToken
    }

    /// Serves until the task is cancelled. `bound` is called once with the URL the server
    /// listens on (with the port the system chose), before any request is served.
    public func run(bound: @escaping @Sendable (String) async -> Void) async throws {
        let router = makeRouter()
        let logger = ServerLog.logger(label: "orl.api")
        let host = self.host
        let app = Application(
            router: router, server: connections.server(onEventLoops: true, direct: directRoutes),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                await bound("http://\(host):\(channel.localAddress?.port ?? 0)")
            }, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            if runsBackgroundWork {
                group.addTask { await gateway.run() }
                if let agents { group.addTask { await agents.run() } }
                if let tracer = gateway.telemetry.tracer { group.addTask { await tracer.run() } }
            }
            group.addTask { try await app.run() }
            try await group.next()
            group.cancelAll()
        }
    }

    /// The model calls, served from each connection's pipeline rather than through the
    /// router (the same handlers the router has for them).
    var directRoutes: DirectRoutes {
        var handlers: [String: DirectRoutes.Handler] = [:]
        for api in ModelAPI.allCases {
            handlers["/v1" + api.path] = { [gateway] request in await gateway.serve(api, request) }
        }
        return DirectRoutes(handlers: handlers, maxBodyBytes: gateway.configuration.maxRequestBytes)
    }

    /// `METHOD /path` of every route this server registers (APICatalog describes them).
    public var registeredRoutes: Set<String> { Set(makeRouter().routes.map { "\($0.method) \($0.path)" }) }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        // First: it wraps only the routes added after it.
        router.add(middleware: OffTheEventLoop())
        router.get("/v1/models") { [gateway] request, _ in gateway.models(request) }
        for api in ModelAPI.allCases {
            router.post(RouterPath("/v1" + api.path)) { [gateway] request, _ in await gateway.serve(api, request) }
        }
        agents?.register(router)
        dashboard?.register(router)
        if let adminToken {
            router.get("/orl/v1/budgets") { [gateway] request, _ in
                guard AgentToken.matches(request.headers[.authorization], "Bearer \(adminToken)") else {
                    return Gateway.error(.unauthenticated("the operator token of <state>/controller.token is needed"))
                }
                return Gateway.json(.ok, ControllerClient.encode(gateway.budgetStatus(now: gateway.clock())))
            }
            router.get("/metrics") { [gateway] request, _ in
                guard AgentToken.matches(request.headers[.authorization], "Bearer \(adminToken)") else {
                    return Gateway.error(.unauthenticated("the operator token of <state>/controller.token is needed"))
                }
                return await MetricsServer.response(gateway)
            }
        }
        router.get("/healthz") { _, _ in Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "ok\n"))) }
        return router
    }
}

extension APIServer {
    /// Starts serving in a task of its own and returns once the server listens, with its
    /// URL; throws what stopped it from listening (the port is taken, say).
    public func start() async throws -> (url: String, task: Task<Void, any Error>) {
        try await startServing { bound in try await run(bound: bound) }
    }
}

/// Runs a server (`run`, which reports the URL it listens on through `bound`) in a task
/// of its own and returns once it listens, with that URL; throws what stopped it from
/// listening.
func startServing(
    _ run: @escaping @Sendable (_ bound: @escaping @Sendable (String) async -> Void) async throws -> Void
) async throws -> (url: String, task: Task<Void, any Error>) {
    let (events, continuation) = AsyncStream<Result<String, any Error>>.makeStream()
    let task = Task {
        do {
            try await run { url in continuation.yield(.success(url)) }
            continuation.yield(.failure(CancellationError()))
        } catch {
            continuation.yield(.failure(error))
            throw error
        }
    }
    for await event in events {
        switch event {
        case .success(let url): return (url, task)
        case .failure(let error): throw error
        }
    }
    throw CancellationError()
}
