import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// A delivery as the receiver hands it on: the headers a webhook handler reads, and the
/// body, whole.
public struct WebhookDelivery: Sendable {
    public var event: String?
    public var signature: String?
    public var body: [UInt8]
}

/// What the handler answers: a status and a line of text.
public struct WebhookAnswer: Sendable {
    public var status: Int
    public var message: String

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }
}

/// `orlctl watch --webhook ADDR`: an HTTP receiver for push webhooks on `POST /webhook`.
/// It only reads deliveries and hands them to `handle`; what they mean (the signature,
/// the ref) is the caller's to decide.
public struct WebhookServer: Sendable {
    public let host: String
    public let port: Int
    /// Larger bodies are refused (413) before the handler sees them.
    public let maxBodyBytes: Int
    public let handle: @Sendable (WebhookDelivery) async -> WebhookAnswer

    public static let path = "/webhook"

    public init(
        host: String, port: Int, maxBodyBytes: Int = 5 << 20, handle: @escaping @Sendable (WebhookDelivery) async -> WebhookAnswer
    ) {
        self.host = host
        self.port = port
        self.maxBodyBytes = maxBodyBytes
        self.handle = handle
    }

    /// Starts serving in a task of its own and returns once the server listens, with the
    /// URL deliveries go to; throws what stopped it from listening (the port is taken).
    public func start() async throws -> (url: String, task: Task<Void, any Error>) {
        try await startServing { bound in try await run(bound: bound) }
    }

    /// `METHOD /path` of every route this server registers (APICatalog describes them).
    public var registeredRoutes: Set<String> { Set(makeRouter().routes.map { "\($0.method) \($0.path)" }) }

    private func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        let (handle, maxBodyBytes) = (self.handle, self.maxBodyBytes)
        router.post(RouterPath(stringLiteral: Self.path)) { request, _ -> Response in
            var request = request
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: maxBodyBytes)
            } catch {
                return Self.text(413, "the delivery is larger than \(maxBodyBytes) bytes")
            }
            let delivery = WebhookDelivery(
                event: request.headers[HTTPField.Name("X-GitHub-Event")!],
                signature: request.headers[HTTPField.Name("X-Hub-Signature-256")!],
                body: Array(body.readableBytesView))
            let answer = await handle(delivery)
            return Self.text(answer.status, answer.message)
        }
        return router
    }

    /// Serves until the task is cancelled; `bound` gets the URL deliveries go to.
    private func run(bound: @escaping @Sendable (String) async -> Void) async throws {
        let router = makeRouter()
        let logger = ServerLog.logger(label: "orl.webhook")
        let host = self.host
        let app = Application(
            router: router, server: ConnectionGuard(cap: ConnectionGuard.capForThisProcess()).server(),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in await bound("http://\(host):\(channel.localAddress?.port ?? 0)\(Self.path)") },
            logger: logger)
        try await app.run()
    }

    private static func text(_ status: Int, _ message: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(
            status: HTTPResponse.Status(code: status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: message + "\n")))
    }
}
