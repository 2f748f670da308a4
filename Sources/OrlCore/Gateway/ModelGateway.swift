/// The port through which the controller drives the gateway: it tells it what is
/// applied and which processes hold which token, and asks it which agents their
/// budgets halt.
public protocol ModelGateway: Sendable {
    /// The applied fleet, and the token digest of each agent whose process runs.
    func update(fleet: Fleet, tokens: [ResourceID: String], now: Timestamp)
    /// The processes with these token digests are being stopped: they may still answer the
    /// tasks they hold (their grace period is for that), but are handed no new one. Told
    /// before they are signalled: a task claimed as a process stops would be lost with
    /// it, an attempt spent on work nobody did.
    func stopHandingTasks(to digests: Set<String>)
    /// The agents that exhausted `halt` budgets.
    func halts(now: Timestamp) -> [ResourceID: BudgetMeter.Halt]
}
