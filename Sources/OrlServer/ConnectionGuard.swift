import Glibc
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Bounds the connections a server holds, so that idle ones (opened by anyone: no
/// token is needed to connect) can never use up the process's descriptors and lock
/// agents out. Past the cap, a new connection closes the connection idle the longest
/// (one with no request in progress, or still sending its request head); only when
/// every connection is busy with a request is the new one refused. A connection that
/// sends nothing is also closed by the server's idle timeout.
public final class ConnectionGuard: Sendable {
    public let cap: Int

    private struct Entry {
        var channel: any Channel
        var busy: Bool
        var lastActive: UInt64
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var clock: UInt64 = 0
    }

    private let state = Mutex(State())

    public init(cap: Int) { self.cap = max(1, cap) }

    /// How many connections are open now.
    public var count: Int { state.withLock { $0.entries.count } }

    /// A handler for one new connection's pipeline.
    func handler() -> ConnectionGuardHandler { ConnectionGuardHandler(guard: self) }

    /// How long a connection may send nothing: a request head (or body) that stops
    /// coming, or a kept-alive connection with no request, is closed after it. Long
    /// polls are not cut: a request in progress is not idle.
    static let idleTimeout: TimeAmount = .seconds(30)

    /// The HTTP/1 server of an `Application`, guarded; `onEventLoops`: each connection's
    /// requests run on its event loop (see `EventLoopChildChannel`; the router must send
    /// what may block elsewhere, as `OffTheEventLoop` does); `direct`: routes served from
    /// the connection's pipeline (`ModelCallHandler`), only with `onEventLoops`.
    func server(onEventLoops: Bool = false, direct: DirectRoutes? = nil) -> HTTPServerBuilder {
        let configuration = HTTP1Channel.Configuration(additionalChannelHandlers: [self.handler()], idleTimeout: Self.idleTimeout)
        guard onEventLoops else { return .http1(configuration: configuration) }
        return HTTPServerBuilder { responder in
            EventLoopChildChannel(inner: HTTP1Channel(responder: responder, configuration: configuration), direct: direct)
        }
    }

    fileprivate func opened(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let victim: (any Channel)? = state.withLock { state in
            state.clock += 1
            state.entries[id] = Entry(channel: channel, busy: false, lastActive: state.clock)
            guard state.entries.count > cap else { return nil }
            let idle = state.entries.filter { $0.key != id && !$0.value.busy }.min { $0.value.lastActive < $1.value.lastActive }
            let chosen = idle?.key ?? id
            return state.entries.removeValue(forKey: chosen)?.channel
        }
        victim?.close(promise: nil)
    }

    fileprivate func mark(_ channel: any Channel, busy: Bool) {
        state.withLock { state in
            state.clock += 1
            let clock = state.clock
            state.entries[ObjectIdentifier(channel)]?.busy = busy
            state.entries[ObjectIdentifier(channel)]?.lastActive = clock
        }
    }

    fileprivate func closed(_ channel: any Channel) {
        _ = state.withLock { $0.entries.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// The cap for a process: what its descriptors allow, less room for everything
    /// else it opens (agents' pipes and logs, the database, upstream connections).
    public static func capForThisProcess() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 512 }
        let soft = Int(clamping: limit.rlim_cur)
        return min(max(soft / 2, 64), 16_384)
    }

    /// Raises the soft limit of open files to the hard one: the default soft limit
    /// (often 1,024) is what a crowd of idle connections exhausted.
    public static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}

/// Tells the guard when its connection opens, starts and ends requests, and closes.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let owner: ConnectionGuard
    private var registered = false

    init(guard owner: ConnectionGuard) { self.owner = owner }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { register(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        register(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        owner.closed(context.channel)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        owner.closed(context.channel)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) { owner.mark(context.channel, busy: true) }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { owner.mark(context.channel, busy: false) }
        context.write(data, promise: promise)
    }

    private func register(_ context: ChannelHandlerContext) {
        guard !registered else { return }
        registered = true
        owner.opened(context.channel)
    }
}
