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

    struct Value: ServerChildChannelValue {
        let inner: Inner.Value
        /// The calls served from the pipeline, when it serves some.
        let calls: ModelCalls?
        var channel: any Channel { inner.channel }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let value = inner.setup(channel: channel, logger: logger)
        guard let direct else { return value.map { Value(inner: $0, calls: nil) } }
        return value.flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let state = try pipeline.handler(type: HTTPConnectionStateHandler.self)
            let calls = ModelCalls()
            try pipeline.addHandler(ModelCallHandler(direct, calls: calls), position: .after(state))
            return Value(inner: value, calls: calls)
        }
    }

    /// Returns once the connection has closed and its calls served from the pipeline have
    /// ended: the server, which waits for this, has then no call left running.
    func handle(value: Value, logger: Logger) async {
        await withTaskCancellationHandler {
            await withTaskExecutorPreference(EventLoopExecutor(value.channel.eventLoop)) {
                await inner.handle(value: value.inner, logger: logger)
            }
            guard let calls = value.calls else { return }
            // No call starts once the channel is closed.
            try? await value.channel.closeFuture.get()
            await calls.finished()
        } onCancel: {
            value.calls?.cancel()
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
