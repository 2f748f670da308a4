/// One model call the gateway forwarded: what `orlctl usage` lists and what budgets'
/// spend is summed from.
public struct LedgerEntry: Sendable, Hashable {
    public var number: Int
    /// When the call began: its spend counts in the budget windows holding this instant.
    public var time: Timestamp
    public var agent: ResourceID
    /// `provider/model`.
    public var model: String
    public var usage: TokenUsage
    public var usd: Double
    public var latencyMilliseconds: Int
    /// The gateway's id for the call, also sent to the agent as `x-request-id`.
    public var requestID: String
    /// `ok`, or what went wrong (an upstream error is charged what it reported, if anything).
    public var outcome: String
    /// The workflow run and step the agent was serving, when there is one.
    public var run: String?
    public var step: String?

    public init(
        number: Int = 0, time: Timestamp, agent: ResourceID, model: String, usage: TokenUsage, usd: Double, latencyMilliseconds: Int,
        requestID: String, outcome: String, run: String? = nil, step: String? = nil
    ) {
        self.number = number
        self.time = time
        self.agent = agent
        self.model = model
        self.usage = usage
        self.usd = usd
        self.latencyMilliseconds = latencyMilliseconds
        self.requestID = requestID
        self.outcome = outcome
        self.run = run
        self.step = step
    }
}

/// Which ledger entries to read.
public struct LedgerQuery: Sendable, Hashable {
    public var agent: ResourceID?
    public var since: Timestamp?
    public var limit: Int

    public init(agent: ResourceID? = nil, since: Timestamp? = nil, limit: Int = 1000) {
        self.agent = agent
        self.since = since
        self.limit = limit
    }
}

/// Spend per UTC day, summed by the store (the raw ledger and the daily roll-ups that
/// retention leaves), for views that chart it: reading every call would cost a
/// page its time budget.
public protocol SpendHistory: Sendable {
    /// Spend per day (days since the epoch) from `since` on, of one agent or of all.
    func dailySpend(since: Timestamp, agent: ResourceID?) throws(StoreError) -> [Int: Charge]
}
