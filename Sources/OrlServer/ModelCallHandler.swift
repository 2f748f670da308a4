import Glibc
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes
import Synchronization

/// The routes a connection's pipeline serves itself (`ModelCallHandler`): exact paths
/// of `POST` requests, each answered by a handler that never blocks.
struct DirectRoutes: Sendable {
    typealias Handler = @Sendable (Request) async -> Response
    let handlers: [String: Handler]
    /// The most bytes of a request's body kept: past it the handler gets one byte more
    /// than the limit, which its own bound refuses as it refused a longer stream.
    let maxBodyBytes: Int
}

/// Serves the model calls (`POST /v1/chat/completions` and the other model APIs) from
/// the connection's pipeline, on its event loop: the request's parts are gathered here,
/// its handler runs in a task that prefers the loop, and the answer's parts are written
/// from here, without Hummingbird's async channel, its request loop and its router
/// between the socket and the gateway (about a sixth of a forwarded call's CPU).
/// Sits after Hummingbird's `HTTPConnectionStateHandler`, so its idle timeout and
/// graceful shutdown see these requests as they see the others, and before the async
/// channel, which gets every other request as it did.
///
/// Order is kept: a request is served here only when no request handed on is still
/// waiting for its answer's end, and while one served here is in progress the parts
/// that come after it wait (and, once some do, the socket is not read) until its answer
/// has gone out.
/// A request with `Connection: close` is handed on, since Hummingbird closes after it.
///
/// Each call runs in a task of `ModelCalls`, which the connection's handler waits for
/// (and cancels when it is cancelled, as it would a route of its own), and a close asked
/// for from behind (the async channel's, when the server shuts down) waits until the
/// answer in progress has gone out, as Hummingbird's own routes' answers do: so a server
/// that has stopped has no call left that could still write the ledger.
final class ModelCallHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let routes: DirectRoutes
    private let calls: ModelCalls
    private var context: ChannelHandlerContext?
    private var executor: EventLoopExecutor?
    /// Requests handed on whose answer's end has not been written.
    private var handedOn = 0
    /// The request being read here: its head, handler and body so far.
    private var reading: (head: HTTPRequest, handler: DirectRoutes.Handler, body: ByteBuffer?)?
    /// A request read here is being answered.
    private var serving = false
    /// The number of the last request served here.
    private var served = 0
    /// Parts that came while a request was read or answered here, in order.
    private var waiting: [HTTPRequestPart] = []
    /// A read asked for while a request was answered here and parts waited.
    private var readHeld = false
    private var date = HTTPDate()
    /// A close asked for while a request was answered here: done once it has been.
    private var closeHeld: (mode: CloseMode, promise: EventLoopPromise<Void>?)?

    init(_ routes: DirectRoutes, calls: ModelCalls) {
        self.routes = routes
        self.calls = calls
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        executor = EventLoopExecutor(context.eventLoop)
    }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        take(unwrapInboundIn(data), context)
    }

    /// Serves the part here, holds it, or hands it on (true).
    @discardableResult
    private func take(_ part: HTTPRequestPart, _ context: ChannelHandlerContext) -> Bool {
        if serving {
            waiting.append(part)
            return false
        }
        switch part {
        case .head(let head):
            if handedOn == 0, head.method == .post, let handler = handler(head) {
                reading = (head, handler, nil)
                return false
            }
            handedOn += 1
        case .body(var buffer):
            guard var request = reading else { break }
            reading = nil
            let kept = request.body?.readableBytes ?? 0
            let room = routes.maxBodyBytes + 1 - kept
            if room > 0 {
                if buffer.readableBytes > room { buffer.moveWriterIndex(to: buffer.readerIndex + room) }
                if request.body == nil { request.body = buffer } else { request.body!.writeBuffer(&buffer) }
            }
            reading = request
            return false
        case .end:
            guard let request = reading else { break }
            reading = nil
            serve(request.head, request.handler, request.body, context)
            return false
        }
        context.fireChannelRead(wrapInboundOut(part))
        return true
    }

    private func handler(_ head: HTTPRequest) -> DirectRoutes.Handler? {
        guard let target = head.path else { return nil }
        let path = target.firstIndex(of: "?").map { target[..<$0] } ?? Substring(target)
        guard let handler = routes.handlers[String(path)] else { return nil }
        // Hummingbird closes the connection after such a request: handed on to it.
        if let connection = head.headerFields[.connection], connection.lowercased() == "close" { return nil }
        return handler
    }

    private func serve(
        _ head: HTTPRequest, _ handler: @escaping DirectRoutes.Handler, _ body: ByteBuffer?, _ context: ChannelHandlerContext
    ) {
        serving = true
        served += 1
        let id = served
        let request = Request(head: head, body: RequestBody(buffer: body ?? context.channel.allocator.buffer(capacity: 0)))
        let writer = DirectBodyWriter(handler: NIOLoopBound(self, eventLoop: context.eventLoop), id: id, head: nil, flushEach: false)
        calls.run(id, on: executor) {
            let response = await handler(request)
            var writer = writer
            writer.head = response.head
            writer.flushEach = response.body.contentLength == nil
            do {
                // A stream's head goes out at once, as Hummingbird sends it, before its first event.
                if writer.flushEach { try await writer.start() }
                try await response.body.write(writer)
                writer.end()
            } catch {
                // The answer failed or the connection did under it: as Hummingbird does when a
                // response's body throws, the connection is closed.
                writer.end(closing: true)
            }
        }
    }

    /// Writes a part of the answer to request `id` (on the loop), with the head first if
    /// it has not gone out. A future when the caller should wait for it: a stream's part
    /// while the socket cannot take more.
    fileprivate func emit(_ id: Int, _ head: HTTPResponse?, _ part: HTTPResponsePart?, flush: Bool) throws -> EventLoopFuture<Void>? {
        guard id == served, serving, let context, context.channel.isActive else { throw ChannelError.ioOnClosedChannel }
        if var head {
            head.headerFields[.date] = date.now()
            context.write(wrapOutboundOut(.head(head)), promise: nil)
        }
        guard let part else {
            context.flush()
            return nil
        }
        guard flush else {
            context.write(wrapOutboundOut(part), promise: nil)
            return nil
        }
        if context.channel.isWritable {
            context.writeAndFlush(wrapOutboundOut(part), promise: nil)
            return nil
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(part), promise: promise)
        return promise.futureResult
    }

    /// The answer to request `id` has been written (or could not be): the parts that
    /// waited go on, and the socket is read again.
    fileprivate func done(_ id: Int, closing: Bool = false) {
        guard id == served, serving, let context else { return }
        serving = false
        if closing || closeHeld != nil {
            waiting = []
            let mode = closing ? .all : closeHeld!.mode
            let promise = closeHeld?.promise
            closeHeld = nil
            context.close(mode: mode, promise: promise)
            return
        }
        var handed = false
        while !serving, !waiting.isEmpty {
            if take(waiting.removeFirst(), context) { handed = true }
        }
        if handed { context.fireChannelReadComplete() }
        if !serving, readHeld {
            readHeld = false
            context.read()
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // Closing the input alone stops what comes next, not the answer being written.
        if serving, mode != .input, context.channel.isActive {
            if let held = closeHeld, let first = held.promise {
                if let promise { first.futureResult.cascade(to: promise) }
                closeHeld = (held.mode == .all ? .all : mode, first)
            } else {
                closeHeld = (closeHeld?.mode == .all ? .all : mode, promise)
            }
            return
        }
        context.close(mode: mode, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Closed under the answer (by the peer, or the idle timeout): what was held is done.
        if let held = closeHeld {
            closeHeld = nil
            context.close(mode: held.mode, promise: held.promise)
        }
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        // Held only once parts wait behind the answer: holding every read while a call is
        // answered took the socket out of the loop's interest and put it back (two
        // `epoll_ctl`s a call) though an agent at one connection sends nothing meanwhile.
        // So at most what one read brings is kept beside the answer in progress.
        if serving, !waiting.isEmpty {
            readHeld = true
            return
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), handedOn > 0 { handedOn -= 1 }
        context.write(data, promise: promise)
    }
}

/// The model calls in progress on one connection, each in a task of its own (preferring
/// the connection's loop): the connection's handler waits for them once the connection
/// has closed, and cancels them when it is cancelled, as it would a route it ran itself.
final class ModelCalls: Sendable {
    private struct State {
        var running: [Int: Task<Void, Never>] = [:]
        var cancelled = false
        var idle: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// Runs call `id`'s `body` in a task of its own.
    func run(_ id: Int, on executor: (any TaskExecutor)?, _ body: @escaping @Sendable () async -> Void) {
        state.withLock { state in
            // A task never starts inside its creation, so its end cannot come before this.
            let task = Task(executorPreference: executor) {
                await body()
                self.ended(id)
            }
            state.running[id] = task
            if state.cancelled { task.cancel() }
        }
    }

    private func ended(_ id: Int) {
        let idle = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.running[id] = nil
            guard state.running.isEmpty else { return [] }
            defer { state.idle = [] }
            return state.idle
        }
        for waiter in idle { waiter.resume() }
    }

    /// Cancels the calls in progress and every one started after.
    func cancel() {
        state.withLock { state in
            state.cancelled = true
            for task in state.running.values { task.cancel() }
        }
    }

    /// Returns once no call is in progress.
    func finished() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state in
                if state.running.isEmpty { return true }
                state.idle.append(waiter)
                return false
            }
            if now { waiter.resume() }
        }
    }
}

/// Writes an answer served by `ModelCallHandler` on its connection: a whole body is
/// written with its head and end and flushed once; a stream's parts are each flushed,
/// and waited for while the socket cannot take more, so a slow reader holds it back.
private struct DirectBodyWriter: ResponseBodyWriter {
    let handler: NIOLoopBound<ModelCallHandler>
    let id: Int
    var head: HTTPResponse?
    var flushEach: Bool

    mutating func write(_ buffer: ByteBuffer) async throws {
        let (head, flush, id) = (self.head, flushEach, self.id)
        self.head = nil
        try await onLoop { try $0.emit(id, head, .body(buffer), flush: flush) }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        let (head, id) = (self.head, self.id)
        try await onLoop { handler in
            defer { handler.done(id) }
            return try handler.emit(id, head, .end(trailingHeaders), flush: true)
        }
    }

    /// Writes and flushes the head alone.
    mutating func start() async throws {
        guard let head = self.head else { return }
        self.head = nil
        let id = self.id
        try await onLoop { try $0.emit(id, head, nil, flush: true) }
    }

    /// Ends the request, written or not (nothing when `finish` has); `closing`: and its
    /// connection.
    func end(closing: Bool = false) {
        let (handler, id) = (self.handler, self.id)
        let loop = handler.eventLoop
        if loop.inEventLoop { handler.value.done(id, closing: closing) } else { loop.execute { handler.value.done(id, closing: closing) } }
    }

    private func onLoop(_ body: @escaping @Sendable (ModelCallHandler) throws -> EventLoopFuture<Void>?) async throws {
        let handler = self.handler
        let loop = handler.eventLoop
        if loop.inEventLoop {
            try await body(handler.value)?.get()
        } else {
            try await loop.flatSubmit {
                do { return try body(handler.value) ?? loop.makeSucceededVoidFuture() } catch { return loop.makeFailedFuture(error) }
            }.get()
        }
    }
}

/// The `Date` header's value (RFC 9110's IMF-fixdate, as Hummingbird writes it), made
/// again only when the second changes.
struct HTTPDate {
    private var second = -1
    private var text = ""

    mutating func now() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        let seconds = Int(spec.tv_sec)
        if seconds != second {
            second = seconds
            text = Self.format(seconds)
        }
        return text
    }

    static func format(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
