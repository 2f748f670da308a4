import NIOCore
import NIOPosix
public import OrlCore
import Synchronization

/// orl's API inside sandboxed agents' network namespaces. The runtime makes a listener
/// on 127.0.0.1:PORT in each agent's namespace and hands it over; every connection
/// accepted there is spliced, byte for byte, to the API's own address in the host's
/// namespace. The API therefore sees each agent's calls as it sees any other (the
/// agent's token authenticates it), and nothing else of the host is reachable from
/// the namespace: no extra process per agent, one event-loop channel per listener.
public final class SandboxBridge: SandboxListeners {
    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let channels = Mutex<[Int32: EventLoopFuture<any Channel>]>([:])

    /// `apiURL`: where the API listens (`http://127.0.0.1:7420`).
    public init?(apiURL: String) {
        let group = MultiThreadedEventLoopGroup.singleton
        guard apiURL.hasPrefix("http://"), let colon = apiURL.lastIndex(of: ":"), let port = Int(apiURL[apiURL.index(after: colon)...])
        else { return nil }
        var host = String(apiURL.dropFirst("http://".count)[..<colon])
        if host == "0.0.0.0" || host == "localhost" { host = "127.0.0.1" }
        self.host = host
        self.port = port
        self.group = group
    }

    public func serve(listener fd: Int32, for pid: Int32) {
        let (host, port) = (self.host, self.port)
        let bound = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.allowRemoteHalfClosure, value: true)
                    .connect(host: host, port: port)
                    .flatMapThrowing { outbound in
                        let (a, b) = Splice.pair()
                        try inbound.pipeline.syncOperations.addHandler(a)
                        try outbound.pipeline.syncOperations.addHandler(b)
                    }
            }
            .withBoundSocket(fd)
        let previous = channels.withLock { channels in
            let old = channels[pid]
            channels[pid] = bound
            return old
        }
        previous?.whenSuccess { $0.close(promise: nil) }
    }

    public func release(pid: Int32) {
        let channel = channels.withLock { $0.removeValue(forKey: pid) }
        channel?.whenSuccess { $0.close(promise: nil) }
    }

    /// Listeners served now.
    public var count: Int { channels.withLock { $0.count } }
}

/// One side of a spliced pair of connections, on the same event loop: what one side
/// reads the other writes, reading waits while the other cannot write, and a close
/// (or half close) goes across.
private final class Splice: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: Splice?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func pair() -> (Splice, Splice) {
        let a = Splice()
        let b = Splice()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.context?.write(data, promise: nil) }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.context?.flush() }

    func channelInactive(context: ChannelHandlerContext) { partner?.context?.close(promise: nil) }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            partner?.context?.close(mode: .output, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { partner?.context?.close(promise: nil) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let partner, partner.pendingRead {
            partner.pendingRead = false
            partner.context?.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.context?.channel.isWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
