import Hummingbird
import Logging
import NIOCore

/// `--metrics-listen`: `/metrics` alone, without a token, on an address of its own, for
/// a Prometheus that scrapes from a trusted network. What it shows (agent, budget and
/// model names, spend) is what the operator token guards on the API address.
public struct MetricsServer: Sendable {
    public let gateway: Gateway
    public let host: String
    public let port: Int

    public init(gateway: Gateway, host: String, port: Int) {
        self.gateway = gateway
        self.host = host
        self.port = port
    }

    /// The Prometheus text format, version 0.0.4.
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    static func response(_ gateway: Gateway) async -> Response {
        let text = await gateway.telemetry.scrape(budgets: gateway.budgetStatus(now: gateway.clock()))
        return Response(
            status: .ok, headers: [.contentType: contentType], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// `METHOD /path` of every route this server registers (APICatalog describes them).
    public var registeredRoutes: Set<String> { Set(makeRouter().routes.map { "\($0.method) \($0.path)" }) }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/metrics") { [gateway] _, _ in await Self.response(gateway) }
        return router
    }

    /// Starts serving in a task of its own; returns once it listens, with its URL.
    public func start() async throws -> (url: String, task: Task<Void, any Error>) {
        let host = self.host
        let port = self.port
        return try await startServing { [self] bound in
            let logger = ServerLog.logger(label: "orl.metrics")
            let app = Application(
                router: makeRouter(), configuration: .init(address: .hostname(host, port: port), serverName: nil),
                onServerRunning: { channel in await bound("http://\(host):\(channel.localAddress?.port ?? 0)") }, logger: logger)
            try await app.run()
        }
    }
}
