import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

@testable import OrlServer

/// The plain-http client's connection keeps one timer across its requests: each request
/// still fails at its own deadline, neither earlier nor later.
@Suite struct UpstreamHandlerTests {
    static let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions")

    static func at(_ milliseconds: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(milliseconds) * 1_000_000) }

    /// A connection on a loop whose clock the test moves.
    static func connection() throws -> (EmbeddedEventLoop, EmbeddedChannel, UpstreamHandler) {
        let loop = EmbeddedEventLoop()
        let handler = UpstreamHandler()
        let channel = EmbeddedChannel(handler: handler, loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return (loop, channel, handler)
    }

    /// How a request ended, once it does.
    final class Outcome: Sendable {
        private let error = Mutex<(any Error)?>(nil)
        func fail(_ failure: any Error) { error.withLock { $0 = failure } }
        var pending: Bool { error.withLock { $0 == nil } }
        var timedOut: Bool {
            error.withLock { error in
                if case UpstreamClient.Failure.timedOut? = error { return true }
                return false
            }
        }
    }

    /// Sends a request that no answer comes to.
    static func send(_ handler: UpstreamHandler, deadline: NIODeadline) -> Outcome {
        let outcome = Outcome()
        handler.send(head, ByteBuffer(string: "{}"), deadline: deadline, limit: 1 << 20).whenFailure { outcome.fail($0) }
        return outcome
    }

    /// A request answered at once (200, no body): the connection's timer is then armed
    /// for `deadline`, with nothing in progress.
    static func answered(_ handler: UpstreamHandler, _ channel: EmbeddedChannel, deadline: NIODeadline) throws {
        let first = handler.send(head, ByteBuffer(string: "{}"), deadline: deadline, limit: 1 << 20)
        try channel.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
        #expect(try first.wait().0.status == 200)
    }

    @Test func aLaterRequestIsNotCutByTheTimerOfAnEarlierOne() throws {
        let (loop, channel, handler) = try Self.connection()
        defer { _ = try? channel.finish() }
        // Answered at once; the connection's timer is armed for its deadline, at 2 s.
        try Self.answered(handler, channel, deadline: Self.at(2_000))

        // Sent at 1 s with its deadline at 3 s, never answered.
        loop.advanceTime(to: Self.at(1_000))
        let second = Self.send(handler, deadline: Self.at(3_000))
        loop.advanceTime(to: Self.at(2_500))
        #expect(second.pending, "the timer went off at 2 s, before this request's deadline")
        #expect(channel.isActive)
        loop.advanceTime(to: Self.at(2_999))
        #expect(second.pending)
        loop.advanceTime(to: Self.at(3_000))
        #expect(second.timedOut)
        #expect(!channel.isActive, "a connection whose request timed out carries no other")
    }

    @Test func aRequestWithAnEarlierDeadlineThanTheTimerFailsAtItsOwn() throws {
        let (loop, channel, handler) = try Self.connection()
        defer { _ = try? channel.finish() }
        try Self.answered(handler, channel, deadline: Self.at(60_000))

        // The provider's timeout was lowered: this request's deadline comes first.
        let second = Self.send(handler, deadline: Self.at(2_000))
        loop.advanceTime(to: Self.at(1_999))
        #expect(second.pending)
        loop.advanceTime(to: Self.at(2_000))
        #expect(second.timedOut)
    }

    @Test func anIdleConnectionOutlivesTheTimerOfItsLastRequest() throws {
        let (loop, channel, handler) = try Self.connection()
        defer { _ = try? channel.finish() }
        try Self.answered(handler, channel, deadline: Self.at(2_000))
        loop.advanceTime(to: Self.at(5_000))
        #expect(channel.isActive, "the timer went off with no request in progress: nothing to fail")
        // And the next request is timed again.
        let second = Self.send(handler, deadline: Self.at(7_000))
        loop.advanceTime(to: Self.at(7_000))
        #expect(second.timedOut)
    }
}
