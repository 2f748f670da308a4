public import OrlCore

/// A change feed for a command that follows the state (`orlctl run --wait`): told of
/// every commit, whichever process makes it, without polling the store.
public enum StateChanges {
    /// Posts to `inbox` each time one of `topics` moves in `state`, until the returned
    /// task is cancelled. Where the state gives no signal, the feed looks every `interval`.
    public static func follow(
        _ state: DaemonState, topics: Set<ChangeTopic>, into inbox: Inbox<Bool>, interval: Duration = .milliseconds(200)
    ) throws(StoreError) -> Task<Void, Never> {
        let feed = ChangeFeed(
            store: try state.open(), removed: state.removed, interval: interval, signal: state.signal({ _ in }),
            subscribers: [.init(topics: topics, ownToo: true) { inbox.post(true) }], log: { _ in })
        return Task { await feed.watch() }
    }
}
