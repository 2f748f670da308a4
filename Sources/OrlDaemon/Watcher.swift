import Dispatch
import Logging
public import OrlCore
import ServiceLifecycle
public import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// `orlctl watch`'s process, on the controller's model: its long-running parts are
/// services of one `ServiceGroup`, which on SIGTERM or SIGINT shuts them down in the
/// reverse order:
///
/// 1. the rounds: the round in progress finishes (an apply is never cut in half), then
///    the loop ends;
/// 2. the wakes: SIGUSR1 (`orlctl resume`) and webhook deliveries ring the loop;
/// 3. the webhook receiver, if any, last, so that a delivery during the last round is
///    still answered.
///
/// What a round does (sync, log, start a controller) is the command's business: the
/// watcher only runs rounds and waits between them.
public final class Watcher: Sendable {
    /// Why the rounds loop should not wait any longer.
    public enum Wake: Hashable, Sendable {
        /// SIGUSR1, or a webhook delivery of a push to the watched ref.
        case now
        /// The group is shutting down.
        case stop
    }

    /// Runs one round and says how long to wait before the next unless woken.
    public typealias Round = @Sendable () async -> Duration

    private let group: ServiceGroup

    /// `wakes`: the inbox that the command's webhook handler posts `.now` to; the
    /// watcher posts SIGUSR1 there as well. `receiver`: the webhook server, already
    /// listening. `signals`: what shuts the watch down gracefully (none in a test,
    /// which calls `stop()`).
    public init(
        wakes: Inbox<Wake>, receiver: Task<Void, any Error>?, signals: [UnixSignal] = [.sigterm, .sigint],
        round: @escaping Round
    ) {
        var services: [any Service] = []
        if let receiver { services.append(APIService(server: receiver)) }
        services.append(WakeSignalService(wakes: wakes))
        services.append(RoundsService(round: round, wakes: wakes))
        group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services.map {
                    .init(
                        service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
                        failureTerminationBehavior: .gracefullyShutdownGroup)
                },
                gracefulShutdownSignals: signals,
                logger: Logger(label: "orl.watch", factory: { _ in SwiftLogNoOpLogHandler() })))
    }

    /// Runs until a shutdown signal (or `stop()`), then returns once the round in
    /// progress is done.
    public func run() async throws(DaemonError) {
        do {
            try await group.run()
        } catch {
            throw DaemonError("the watch stopped: \(error)")
        }
    }

    /// What SIGTERM does: the round in progress finishes, no other starts.
    public func stop() async { await group.triggerGracefulShutdown() }
}

/// Rounds, each followed by a wait that a wake cuts short; a graceful shutdown lets the
/// round in progress finish and ends the wait at once.
struct RoundsService: Service {
    let round: Watcher.Round
    let wakes: Inbox<Watcher.Wake>

    func run() async throws {
        await withGracefulShutdownHandler {
            while !Task.isShuttingDownGracefully {
                let wait = await round()
                let deadline = ContinuousClock.now + wait
                while !Task.isShuttingDownGracefully {
                    let left = deadline - ContinuousClock.now
                    guard left > .zero else { break }
                    let reasons = await wakes.take(waitingAtMost: left)
                    if reasons.contains(.now) || reasons.contains(.stop) { break }
                }
            }
        } onGracefulShutdown: {
            wakes.post(.stop)
        }
    }
}

/// SIGUSR1 (`orlctl resume`, `apply`) rings the rounds loop. `orlctl` ignores SIGUSR1
/// from its first line, so a wake before this service runs is lost, never fatal; the
/// next round comes at its interval anyway.
struct WakeSignalService: Service {
    let wakes: Inbox<Watcher.Wake>

    func run() async throws {
        signal(SIGUSR1, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
        let wakes = self.wakes
        source.setEventHandler { wakes.post(.now) }
        source.resume()
        defer { source.cancel() }
        try? await gracefulShutdown()
    }
}
