import HTTPTypes
import Hummingbird
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Synchronization
import Testing

@testable import OrlServer

/// While a call is answered from the pipeline the socket is read on (no reads held, so
/// the loop's interest in it is not changed twice a call), and only what comes while
/// parts already wait is held back: order and backpressure as before.
@Suite struct ModelCallReadTests {
    /// Counts the reads that reach the socket.
    final class Reads: ChannelOutboundHandler, @unchecked Sendable {
        typealias OutboundIn = Any
        var count = 0
        func read(context: ChannelHandlerContext) {
            count += 1
            context.read()
        }
    }

    /// A route that answers once the test lets it.
    final class Gate: Sendable {
        private let waiting = Mutex<CheckedContinuation<Void, Never>?>(nil)
        private let started = Mutex(false)
        var hasStarted: Bool { started.withLock { $0 } }
        func wait() async {
            await withCheckedContinuation { continuation in
                waiting.withLock { $0 = continuation }
                started.withLock { $0 = true }
            }
        }
        func open() { waiting.withLock { $0 }?.resume() }
    }

    static func head(_ path: String, method: HTTPRequest.Method = .post) -> HTTPRequestPart {
        .head(HTTPRequest(method: method, scheme: "http", authority: "x", path: path))
    }

    @Test func theSocketIsReadWhileACallIsAnsweredUntilPartsWait() throws {
        let gate = Gate()
        let routes = DirectRoutes(
            handlers: [
                "/v1/chat/completions": { _ in
                    await gate.wait()
                    return Response(
                        status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
                }
            ], maxBodyBytes: 1 << 20)
        let reads = Reads()
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        try channel.pipeline.syncOperations.addHandler(reads)
        try channel.pipeline.syncOperations.addHandler(ModelCallHandler(routes, calls: ModelCalls()))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()

        try channel.writeInbound(Self.head("/v1/chat/completions"))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "{}")))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        channel.embeddedEventLoop.run()
        #expect(gate.hasStarted)

        // Being answered, nothing waiting: the read goes to the socket.
        let before = reads.count
        channel.read()
        #expect(reads.count == before + 1)

        // A request pipelined behind it waits, and so do reads from then on.
        try channel.writeInbound(Self.head("/healthz", method: .get))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        #expect(try channel.readInbound(as: HTTPRequestPart.self) == nil)
        channel.read()
        #expect(reads.count == before + 1)

        // Answered: the waiting request goes on, after the answer, and the held read is made.
        gate.open()
        channel.embeddedEventLoop.run()
        guard case .head(let response)? = try channel.readOutbound(as: HTTPResponsePart.self) else {
            Issue.record("no answer's head")
            return
        }
        #expect(response.status == .ok)
        #expect(try channel.readOutbound(as: HTTPResponsePart.self) == .body(ByteBuffer(string: "{}")))
        #expect(try channel.readOutbound(as: HTTPResponsePart.self) == .end(nil))
        guard case .head(let next)? = try channel.readInbound(as: HTTPRequestPart.self) else {
            Issue.record("the pipelined request was not handed on")
            return
        }
        #expect(next.path == "/healthz")
        #expect(try channel.readInbound(as: HTTPRequestPart.self) == .end(nil))
        #expect(reads.count == before + 2)
    }
}
