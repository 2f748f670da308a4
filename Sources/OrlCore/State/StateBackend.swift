/// What reads or changes a state as a whole rather than through one transaction's
/// reader: retention, the reports that must read two tables in one snapshot, the
/// metrics scrape's gauges, and the marker a controller polls for other writers.
public protocol StateUpkeep: Sendable {
    /// Deletes the history `policy` does not keep, in one write transaction (see
    /// `RetentionPolicy`): ended runs, events, and ledger rows rolled up by day first.
    func retain(_ policy: RetentionPolicy, now: Timestamp) throws(StoreError) -> RetentionReport
    /// What `orlctl usage` reports, read in one snapshot (so retention cannot move a call
    /// from one to the other in between): the calls since `query.since`, newest first,
    /// and the daily roll-ups of the days from the one holding `since` on.
    func usage(_ query: LedgerQuery) throws(StoreError) -> (calls: [LedgerEntry], days: [LedgerDay])
    /// The ledger's daily roll-up, oldest day first.
    func ledgerDaily() throws(StoreError) -> [LedgerDay]
    /// The state a metrics scrape shows, read in one snapshot.
    func fleetGauges() throws(StoreError) -> FleetGauges
    /// A number that changes whenever a write is committed by another connection (another
    /// orlctl, another node), and only then, cheap enough to poll.
    func changeMarker() throws(StoreError) -> Int64
    /// Each topic's generation (see `ChangeTopic`), moved by every transaction that writes it,
    /// whichever process writes: read when `changeMarker` moved, to tell which consumers
    /// the commits concern.
    func changeGenerations() throws(StoreError) -> [ChangeTopic: Int64]
}

/// Every port of a state: what `orlctl` opens, whichever backend holds the state.
/// `SQLiteStateStore` and `PostgresStateStore` each implement all of it.
public typealias StateBackend = StateStore & RunStore & ToolApprovalStore & SpendHistory & AlertOutbox & StateUpkeep
    & BudgetReservations & StateTables & NodeStore
