/// What a consumer of the store's changes reads, each with a generation (`change_topics`)
/// that every transaction writing its tables moves, whichever process writes (triggers
/// on the tables; for `runs`, the writer itself, once per transaction): the daemon's own
/// bookkeeping (statuses, supervision records, the ledger, the alert outbox) counts for none.
public enum ChangeTopic: String, Sendable, Hashable, CaseIterable {
    /// Applied resources and `orlctl suspend`'s holds.
    case resources
    /// The vault's sealed secrets.
    case secrets
    /// Workflow runs, their steps, attempts and values, and tool-call approvals.
    case runs
    /// Events added to the event log (what Alerts notify of).
    case events
}

/// News that the store may have changed, from outside the change feed's own looks: the
/// feed asks the store what changed (`data_version`, the topics' generations) when told,
/// and otherwise only once every safety interval, in case news was lost.
///
/// The port through which a store announces its commits: SQLite's files watched with
/// inotify (`SQLiteFileSignal`, OrlDaemon), PostgreSQL's `LISTEN/NOTIFY` channel
/// (`PostgresChangeSignal`, OrlPostgres).
public protocol ChangeSignal: Sendable {
    /// Calls `notify` (from any thread, as often as it likes: the feed merges the calls)
    /// whenever the store may have changed, until `stop`. False when it cannot watch:
    /// the feed then polls.
    func start(notify: @escaping @Sendable () -> Void) -> Bool
    func stop()
    /// Whether `notify` may come before the commit it tells of is visible to a reader
    /// (SQLite's WAL writes precede their publication in the WAL index): the feed then
    /// looks again shortly after each call. False: a call follows the commit
    /// (PostgreSQL's notifications are delivered once their transaction committed).
    var mayTellEarly: Bool { get }
}

extension ChangeSignal {
    public var mayTellEarly: Bool { false }
}
