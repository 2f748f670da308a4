/// How much history a state keeps. Ended runs (with their steps, attempts and
/// blackboard values) and events older than their age, or beyond their count (newest
/// kept), are deleted; ledger rows older than theirs are rolled up into spend per agent,
/// model and UTC day, then deleted. nil keeps everything of that kind.
public struct RetentionPolicy: Sendable, Hashable {
    public var runsMaxAge: Duration?
    public var runsMaxCount: Int?
    public var eventsMaxAge: Duration?
    public var eventsMaxCount: Int?
    public var ledgerMaxAge: Duration?

    /// 30 days of runs and at most 10,000; 30 days of events and at most 100,000; the
    /// ledger's rows for 62 days (a budget's month window always stays whole).
    public static let standard = RetentionPolicy(
        runsMaxAge: .seconds(30 * 86_400), runsMaxCount: 10_000, eventsMaxAge: .seconds(30 * 86_400), eventsMaxCount: 100_000,
        ledgerMaxAge: .seconds(62 * 86_400))

    public init(
        runsMaxAge: Duration? = nil, runsMaxCount: Int? = nil, eventsMaxAge: Duration? = nil, eventsMaxCount: Int? = nil,
        ledgerMaxAge: Duration? = nil
    ) {
        self.runsMaxAge = runsMaxAge
        self.runsMaxCount = runsMaxCount
        self.eventsMaxAge = eventsMaxAge
        self.eventsMaxCount = eventsMaxCount
        self.ledgerMaxAge = ledgerMaxAge
    }

    /// The time before which a kind's history goes, for `age` before `now`.
    public static func cutoff(_ age: Duration?, now: Timestamp) -> Timestamp? {
        age.map { Timestamp(milliseconds: now.milliseconds - Int64($0.components.seconds) * 1000) }
    }
}

/// What a retention pass removed.
public struct RetentionReport: Sendable, Hashable {
    public var runs = 0
    public var events = 0
    public var ledgerRows = 0
    /// Rows of the daily roll-up written or added to.
    public var ledgerDays = 0

    public init() {}
}
