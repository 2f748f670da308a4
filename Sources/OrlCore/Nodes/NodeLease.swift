/// A node's lease on its share of the fleet, as the shared state records it.
///
/// The database's clock decides when a lease lapses (`expiresAt`), never a node's wall clock, so
/// nodes whose clocks disagree still agree on who holds what. `generation` is the fencing token:
/// it grows each time the node registers, so a write stamped with an older generation comes from
/// a node that lost its lease and is refused.
public struct NodeLease: Sendable, Hashable {
    public var node: String
    public var generation: Int64
    public var expiresAt: Timestamp

    public init(node: String, generation: Int64, expiresAt: Timestamp) {
        self.node = node
        self.generation = generation
        self.expiresAt = expiresAt
    }

    /// Live until the instant it expires, by the database's clock.
    public func isLive(at now: Timestamp) -> Bool { now < expiresAt }
}

/// How long a lease lasts, how often a node renews it, and when a node that cannot renew must
/// have stopped its agents.
///
/// Why an agent never runs on two nodes: a renewal sets `expiresAt` to the database's time at
/// the renewal plus `duration`. The database reads its time after the node sent the renewal, so
/// if the node stops everything by (the instant it sent its last successful renewal) + `duration`
/// − `safetyMargin` on its own monotonic clock, it has stopped before the lease lapses anywhere,
/// as long as the two clocks' rates differ by less than the margin over one lease; and no other
/// node is given the node's agents before the lease lapses.
public struct LeaseTiming: Sendable, Hashable {
    public var duration: Duration
    public var renewInterval: Duration
    public var safetyMargin: Duration

    public static let standard = LeaseTiming(duration: .seconds(10), renewInterval: .seconds(2), safetyMargin: .seconds(2))

    public enum Problem: Error, Sendable, Hashable, CustomStringConvertible {
        case nonPositive(String)
        case tooFewRenewals(duration: Duration, renewInterval: Duration, safetyMargin: Duration)

        public var description: String {
            switch self {
            case .nonPositive(let what): "the lease's \(what) must be greater than zero"
            case .tooFewRenewals(let duration, let interval, let margin):
                "a lease of \(duration.orlText) renewed every \(interval.orlText) with a \(margin.orlText) safety margin "
                    + "leaves no room for a failed renewal: the interval must be at most a third of the lease minus the margin"
            }
        }
    }

    /// Checked, because a lease that must be renewed as often as it lasts makes every slow
    /// database round trip stop a node's agents.
    public init(duration: Duration, renewInterval: Duration, safetyMargin: Duration) {
        self.duration = duration
        self.renewInterval = renewInterval
        self.safetyMargin = safetyMargin
    }

    public func validate() throws(Problem) {
        if duration <= .zero { throw .nonPositive("duration") }
        if renewInterval <= .zero { throw .nonPositive("renewal interval") }
        if safetyMargin <= .zero { throw .nonPositive("safety margin") }
        if renewInterval * 3 > duration - safetyMargin {
            throw .tooFewRenewals(duration: duration, renewInterval: renewInterval, safetyMargin: safetyMargin)
        }
    }

    /// The instant by which a node must have stopped every agent it runs, given when it sent the
    /// last renewal that succeeded (on its own monotonic clock).
    public func stopDeadline<I: InstantProtocol>(lastRenewalSentAt sent: I) -> I where I.Duration == Duration {
        sent.advanced(by: duration - safetyMargin)
    }

    /// The longest an agent of a node that dies stays down, beyond the time its new node takes to
    /// start it: the lease runs out, then the placer notices on its next pass.
    public func failoverBound(placementInterval: Duration) -> Duration {
        duration + placementInterval
    }
}

extension Duration {
    /// `10s`, `1.5s`, `250ms`: how the lease settings read in messages.
    public var orlText: String {
        let ms = wholeMilliseconds
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        if ms >= 1000 { return "\(Double(ms) / 1000)s" }
        return "\(ms)ms"
    }
}

/// What outlives a node's process to kill its agents if the node dies or stops renewing
/// (`OrlRuntime.NodeGuard`, a process of its own): told the instant (CLOCK_MONOTONIC,
/// milliseconds) by which they must be gone, and which processes run.
public protocol NodeGuardLink: Sendable {
    /// The generation the node registered under: once the node is gone and its agents are
    /// killed, the guard ends that lease, so the agents move at once.
    func lease(_ generation: Int64)
    func deadline(_ monotonicMilliseconds: Int64)
    func track(_ process: ProcessIdentity, running: Bool)
}
