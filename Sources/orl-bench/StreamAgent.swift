import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import OrlJSON

/// An agent on `/v1/tasks/stream` that answers each task pushed from the connection's
/// channel handler, on its event loop, as the line arrives: no hop to a task and back
/// between reading a task and writing its completion, as a Go or Rust agent's read loop
/// would do. What remains per step is the server's, and a parse of each line.
enum NIOStreamAgent {
    /// Opens streams until the run is done (a stream ends when no task came in `wait`).
    static func run(url: String, token: String, progress: RunsBench.Progress) async throws {
        guard let parsed = URLComponents(string: url), let host = parsed.host, let port = parsed.port else {
            throw StreamAgentError("the API's URL \(url) is not http://HOST:PORT")
        }
        while progress.end == nil {
            let ended = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Void.self)
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            StreamAgentHandler(host: "\(host):\(port)", token: token, progress: progress, ended: ended))
                    }
                }
                .connect(host: host, port: port).get()
            defer { channel.close(promise: nil) }
            try await ended.futureResult.get()
        }
    }
}

struct StreamAgentError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One stream: the request's head at once, then a completion line for each task line.
private final class StreamAgentHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let host: String
    private let token: String
    private let progress: RunsBench.Progress
    private let ended: EventLoopPromise<Void>
    private var pending = ByteBuffer()
    private var wrote = false
    private var done = false

    init(host: String, token: String, progress: RunsBench.Progress, ended: EventLoopPromise<Void>) {
        self.host = host
        self.token = token
        self.progress = progress
        self.ended = ended
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Authorization", value: "Bearer \(token)")
        headers.add(name: "Content-Type", value: "application/x-ndjson")
        headers.add(name: "Transfer-Encoding", value: "chunked")
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/tasks/stream?wait=1", headers: headers)
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            if head.status != .ok { fail(context, StreamAgentError("the stream answered \(head.status.code)")) }
        case .body(var chunk):
            pending.writeBuffer(&chunk)
            while let newline = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                let view = pending.readableBytesView
                let line = Array(view[view.startIndex..<newline])
                pending.moveReaderIndex(forwardBy: newline - view.startIndex + 1)
                do {
                    try answer(line, context: context)
                } catch {
                    fail(context, error)
                    return
                }
            }
            pending.discardReadBytes()
        case .end:
            finish(nil)
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if wrote {
            wrote = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    private func answer(_ line: [UInt8], context: ChannelHandlerContext) throws {
        let message = try JSONParser.parse(bytes: line, file: "<stream>")
        if message["error"] != nil { throw StreamAgentError("the stream refused: \(String(decoding: line, as: UTF8.self))") }
        if message["state"] != nil { progress.completed() }
        guard let next = message["next"], next.members != nil else { return }
        guard let id = next["task"]?.string else { throw StreamAgentError("a task without its id: \(next)") }
        let text = #"{"task": ""# + id + #"", "output": {"text": "done"}}"# + "\n"
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: text)))), promise: nil)
        wrote = true
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { fail(context, error) }

    private func fail(_ context: ChannelHandlerContext, _ error: any Error) {
        finish(error)
        context.close(promise: nil)
    }

    private func finish(_ error: (any Error)?) {
        guard !done else { return }
        done = true
        if let error { ended.fail(error) } else { ended.succeed(()) }
    }
}
