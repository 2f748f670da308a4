/// The port through which the controller drives the gateway: it tells it what is
/// applied and which processes hold which token, and asks it which agents their
/// budgets halt.
public protocol ModelGateway: Sendable {
    /// The applied fleet, and the token digest of each agent whose process runs.
    func update(fleet: Fleet, tokens: [ResourceID: String], now: Timestamp)
    /// The agents that exhausted `halt` budgets.
    func halts(now: Timestamp) -> [ResourceID: BudgetMeter.Halt]
}
