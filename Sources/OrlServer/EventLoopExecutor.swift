import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import OrlCore

/// Runs a task's jobs on an event loop: a connection's requests, preferring it, run on
/// the thread that reads and writes the connection, with no hop to Swift's pool and back
/// at each await (about a third of a gateway call's CPU at one connection).
final class EventLoopExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// A server's connections, each handled by a task that prefers the connection's event
/// loop. Only work that never blocks may stay there: `OffTheEventLoop` sends every route
/// but the gateway's back to Swift's pool. `direct`: routes the connection's pipeline
/// serves itself (`ModelCallHandler`).
struct EventLoopChildChannel<Inner: ServerChildChannel>: ServerChildChannel {
    let inner: Inner
    var direct: DirectRoutes? = nil

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Inner.Value> {
        let value = inner.setup(channel: channel, logger: logger)
        guard let direct else { return value }
        return value.flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let state = try pipeline.handler(type: HTTPConnectionStateHandler.self)
            try pipeline.addHandler(ModelCallHandler(direct), position: .after(state))
            return value
        }
    }

    func handle(value: Inner.Value, logger: Logger) async {
        await withTaskExecutorPreference(EventLoopExecutor(value.channel.eventLoop)) {
            await inner.handle(value: value, logger: logger)
        }
    }
}

/// Sends a request to Swift's pool unless its route is the gateway's (model calls, the
/// model list, health), whose work never blocks: the others may read the store or
/// wait on locks, which must not stall an event loop's other connections.
struct OffTheEventLoop<Context: RequestContext>: RouterMiddleware {
    static var onTheLoop: Set<String> { Set(["/v1/models", "/healthz"] + ModelAPI.allCases.map { "/v1" + $0.path }) }
    let kept: Set<String> = Self.onTheLoop

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if kept.contains(request.uri.path) { return try await next(request, context) }
        return try await withTaskExecutorPreference(globalConcurrentExecutor) { try await next(request, context) }
    }
}
