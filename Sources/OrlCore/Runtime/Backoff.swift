/// How long to wait before restarting a crashing agent: 1 s, doubling to a 5 minute
/// cap, with jitter so that agents that crashed together do not restart together, and
/// forgiven once an agent has stayed up for a while.
public struct BackoffPolicy: Sendable, Hashable {
    public var initial: Duration
    public var cap: Duration
    /// Up to this fraction is added at random.
    public var jitter: Double
    /// A process that ran at least this long resets the count of restarts.
    public var resetAfter: Duration

    public static let standard = BackoffPolicy(initial: .seconds(1), cap: .seconds(300), jitter: 0.2, resetAfter: .seconds(600))

    public init(initial: Duration, cap: Duration, jitter: Double, resetAfter: Duration) {
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.resetAfter = resetAfter
    }

    /// The wait before the restart that follows `crashes` consecutive crashes (1 for
    /// the first). `random` is in [0, 1): the caller's random source, so tests are exact.
    public func delay(afterCrashes crashes: Int, random: Double) -> Duration {
        let exponent = max(0, min(crashes - 1, 30))
        let base = min(initial.inSeconds * Double(1 << exponent), cap.inSeconds)
        let withJitter = min(base * (1 + jitter * random), cap.inSeconds)
        return .milliseconds(Int64((withJitter * 1000).rounded()))
    }
}

extension Duration {
    /// Seconds as a Double, sub-second part included.
    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
