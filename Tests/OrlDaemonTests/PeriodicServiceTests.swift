import OrlCore
import Testing

@testable import OrlDaemon

/// Work that time calls for, brought forward by a wake: the controller's SIGUSR1 has the
/// logs looked at for rotation at once, not at the next of its 10 s rounds.
@Suite struct PeriodicServiceTests {
    @Test(.timeLimit(.minutes(1))) func eachWakeBringsARoundForward() async throws {
        let wakes = Inbox<Bool>()
        let (rounds, round) = AsyncStream<Void>.makeStream()
        // The interval is an hour: only the wakes can bring these rounds.
        let service = PeriodicService("test", every: .seconds(3600), wakes: wakes) { round.yield() }
        let running = Task { try await service.run() }
        var next = rounds.makeAsyncIterator()
        wakes.post(true)
        #expect(await next.next() != nil)
        wakes.post(true)
        #expect(await next.next() != nil)
        running.cancel()
        try await running.value
    }
}
