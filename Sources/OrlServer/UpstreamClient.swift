import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The gateway's HTTP/1.1 client for a provider on plain `http://` (a local model
/// server, a proxy on loopback), for whole (not streamed) answers: the request goes out
/// on a kept-alive connection of the event loop the call runs on, and the answer is read
/// there, so a call crosses no thread between the agent's connection and the provider's.
/// AsyncHTTPClient, which serves `https://` and streams, hops between its event loop
/// and Swift's pool at each await, which cost a call at one connection about a third of
/// its CPU.
///
/// Connections are kept per event loop, host and port; one idle longer than
/// `idleTimeout` is closed rather than reused (servers close theirs after 5 s or more).
/// A request that a reused connection closes on before any byte of an answer is sent
/// once more on a new connection: that is how a server's close of an idle connection
/// shows, and the request never reached a handler.
final class UpstreamClient: Sendable {
    struct Target: Hashable, Sendable {
        var host: String
        var port: Int
    }

    /// A URL this client serves: `http://host[:port]/path`, with no user info.
    struct Endpoint: Sendable, Equatable {
        var target: Target
        var path: String
        /// What the Host header says.
        var authority: String

        init?(_ url: String) {
            guard url.hasPrefix("http://") else { return nil }
            let rest = url.dropFirst("http://".count)
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            let authority = rest[..<slash]
            guard !authority.isEmpty, !authority.contains("@"), !authority.contains("?"), !authority.contains("#") else { return nil }
            var host = Substring(authority)
            var port = 80
            if authority.hasPrefix("[") {
                guard let close = authority.firstIndex(of: "]") else { return nil }
                host = authority[authority.index(after: authority.startIndex)..<close]
                let after = authority[authority.index(after: close)...]
                if !after.isEmpty {
                    guard after.hasPrefix(":"), let number = Int(after.dropFirst()), (1...65535).contains(number) else { return nil }
                    port = number
                }
            } else if let colon = authority.lastIndex(of: ":") {
                guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number) else { return nil }
                host = authority[..<colon]
                port = number
            }
            guard !host.isEmpty else { return nil }
            let path = rest[slash...]
            self.target = Target(host: String(host), port: port)
            self.path = path.isEmpty ? "/" : String(path)
            self.authority = String(authority)
        }
    }

    /// The endpoint of a URL (nil: not one this client serves), parsed once: a call
    /// asks for its provider's, and a fleet's providers have few.
    static func endpoint(_ url: String) -> Endpoint? {
        if let known = endpoints.withLock({ $0[url] }) { return known }
        let parsed = Endpoint(url)
        endpoints.withLock { known in
            // Bounded, should URLs ever vary: forgotten at once and parsed again.
            if known.count >= 256 { known.removeAll() }
            known[url] = parsed
        }
        return parsed
    }

    private static let endpoints = Mutex<[String: Endpoint?]>([:])

    struct Answer: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: ByteBuffer
    }

    enum Failure: Error, CustomStringConvertible {
        /// The deadline passed before the whole answer came.
        case timedOut
        /// The connection closed (or failed) before the whole answer came; `answered`:
        /// whether any of it had.
        case closed(answered: Bool, cause: String?)
        case tooLarge(limit: Int)
        case connect(String)

        var description: String {
            switch self {
            case .timedOut: "the answer did not come in time"
            case .closed(_, let cause): "the connection closed before the whole answer" + (cause.map { " (\($0))" } ?? "")
            case .tooLarge(let limit): "the answer is larger than \(limit) bytes"
            case .connect(let why): why
            }
        }
    }

    static let shared = UpstreamClient()

    /// How long a kept-alive connection may sit idle and still be reused.
    static let idleTimeout: TimeAmount = .seconds(4)
    /// Idle connections kept per event loop and target.
    static let keptPerTarget = 64

    private struct Key: Hashable {
        var loop: ObjectIdentifier
        var target: Target
    }

    private struct Idle {
        var connection: Connection
        var since: NIODeadline
    }

    private let idle = Mutex<[Key: [Idle]]>([:])

    /// A connection and its handler (touched only on the connection's event loop).
    struct Connection: Sendable {
        let channel: any Channel
        let handler: NIOLoopBound<UpstreamHandler>
    }

    /// Posts `body` and reads the whole answer, on the event loop the caller runs on
    /// (or one of the group's when it runs on none).
    func post(
        _ endpoint: Endpoint, headers: HTTPHeaders, body: ByteBuffer, timeout: TimeAmount, maxResponseBytes: Int
    ) async throws -> Answer {
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
        let deadline = NIODeadline.now() + timeout
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: endpoint.path, headers: headers)
        head.headers.replaceOrAdd(name: "Host", value: endpoint.authority)
        head.headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        let key = Key(loop: ObjectIdentifier(loop), target: endpoint.target)
        var retried = false
        while true {
            let reused = take(key)
            let connection: Connection
            if let reused {
                connection = reused
            } else {
                connection = try await connect(endpoint.target, on: loop, deadline: deadline)
            }
            do {
                let (answer, keepAlive) = try await Self.exchange(
                    connection, head: head, body: body, deadline: deadline, maxResponseBytes: maxResponseBytes
                ).get()
                if keepAlive { put(connection, key) } else { connection.channel.close(promise: nil) }
                return answer
            } catch Failure.closed(answered: false, _) where reused != nil && !retried {
                retried = true
                continue
            }
        }
    }

    private func take(_ key: Key) -> Connection? {
        let now = NIODeadline.now()
        while true {
            let found: Idle? = idle.withLock { idle in idle[key]?.popLast() }
            guard let found else { return nil }
            if found.connection.channel.isActive && now - found.since < Self.idleTimeout { return found.connection }
            found.connection.channel.close(promise: nil)
        }
    }

    private func put(_ connection: Connection, _ key: Key) {
        guard connection.channel.isActive else { return }
        let kept = idle.withLock { idle -> Bool in
            var list = idle[key] ?? []
            guard list.count < Self.keptPerTarget else { return false }
            list.append(Idle(connection: connection, since: .now()))
            idle[key] = list
            return true
        }
        if !kept { connection.channel.close(promise: nil) }
    }

    private func connect(_ target: Target, on loop: any EventLoop, deadline: NIODeadline) async throws -> Connection {
        let timeout = max(deadline - .now(), .milliseconds(1))
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(timeout)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(UpstreamHandler())
                    }
                }
                .connect(host: target.host, port: target.port).get()
        } catch let error as ChannelError where error == .connectTimeout(timeout) {
            throw Failure.timedOut
        } catch {
            throw Failure.connect("\(error)")
        }
        return try await channel.eventLoop.submit {
            let handler = try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
            return Connection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
        }.get()
    }

    /// Sends the request on the connection and completes with the whole answer and
    /// whether the connection may carry another request.
    private static func exchange(
        _ connection: Connection, head: HTTPRequestHead, body: ByteBuffer, deadline: NIODeadline, maxResponseBytes: Int
    ) -> EventLoopFuture<(Answer, Bool)> {
        let loop = connection.channel.eventLoop
        if loop.inEventLoop {
            return connection.handler.value.send(head, body, deadline: deadline, limit: maxResponseBytes)
        }
        return loop.flatSubmit { connection.handler.value.send(head, body, deadline: deadline, limit: maxResponseBytes) }
    }
}

/// One request at a time on one connection: writes it, gathers the answer, and fails
/// the request when the connection closes or the deadline passes first.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Never
    typealias OutboundOut = HTTPClientRequestPart

    private var context: ChannelHandlerContext?
    private var promise: EventLoopPromise<(UpstreamClient.Answer, Bool)>?
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    private var limit = 0
    /// The deadline of the request in progress.
    private var deadline: NIODeadline?
    /// One timer per connection rather than one per request (scheduling and cancelling
    /// one cost a call about 1% of its CPU): armed at `armedAt`, no later than the
    /// deadline of the request in progress; when it goes off before that deadline (it was
    /// armed for an earlier request) it is armed again for it.
    private var timer: Scheduled<Void>?
    private var armedAt: NIODeadline = .distantPast

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func send(
        _ request: HTTPRequestHead, _ requestBody: ByteBuffer, deadline: NIODeadline, limit: Int
    ) -> EventLoopFuture<(UpstreamClient.Answer, Bool)> {
        guard let context, context.channel.isActive else {
            return (self.context?.eventLoop ?? MultiThreadedEventLoopGroup.singleton.any()).makeFailedFuture(
                UpstreamClient.Failure.closed(answered: false, cause: nil))
        }
        let promise = context.eventLoop.makePromise(of: (UpstreamClient.Answer, Bool).self)
        self.promise = promise
        self.head = nil
        self.body = nil
        self.limit = limit
        self.deadline = deadline
        if timer == nil || armedAt > deadline {
            timer?.cancel()
            arm(deadline, context)
        }
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(requestBody))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        return promise.futureResult
    }

    private func arm(_ at: NIODeadline, _ context: ChannelHandlerContext) {
        armedAt = at
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: at) { [self] in
            self.timer = nil
            guard let deadline = self.deadline, self.promise != nil, let context = self.context else { return }
            if at >= deadline {
                self.fail(UpstreamClient.Failure.timedOut)
            } else {
                self.arm(deadline, context)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(var part):
            guard promise != nil else { return }
            if (body?.readableBytes ?? 0) + part.readableBytes > limit {
                fail(UpstreamClient.Failure.tooLarge(limit: limit))
                return
            }
            if body == nil { body = part } else { body!.writeBuffer(&part) }
        case .end:
            guard let promise, let head else { return }
            self.promise = nil
            // The timer stays armed: it goes off for nothing, or for the next request.
            deadline = nil
            let answer = UpstreamClient.Answer(
                status: Int(head.status.code), headers: head.headers, body: body ?? context.channel.allocator.buffer(capacity: 0))
            self.head = nil
            self.body = nil
            promise.succeed((answer, head.isKeepAlive))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(UpstreamClient.Failure.closed(answered: head != nil, cause: nil))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(UpstreamClient.Failure.closed(answered: head != nil, cause: "\(error)"))
    }

    /// Fails the request in progress and closes the connection, which can carry no other.
    private func fail(_ failure: UpstreamClient.Failure) {
        timer?.cancel()
        timer = nil
        deadline = nil
        head = nil
        body = nil
        if let promise {
            self.promise = nil
            promise.fail(failure)
        }
        context?.close(promise: nil)
    }
}
