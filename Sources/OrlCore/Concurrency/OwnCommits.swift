import Synchronization

/// The moves of the store's change topics (`ChangeTopic`'s generations) that this
/// process's own writers made, each told in memory to whom it concerns already: a
/// completion that readies a step wakes its agent's polls from the API's own
/// transaction (`RunOperations.onReady`). The change feed asks whether every move of a
/// topic since its last look was one of these, and then wakes no one for it: without
/// this, each step of a chain woke every waiting poll to look in the store again.
///
/// Safe by construction: a writer records a move from the generation it read under the
/// write lock to the one it left, so no other process's write can fall inside one, and
/// a move by anyone else breaks the chain the feed follows, which then wakes everyone
/// as before. A move recorded late (after the feed looked) only costs a wake.
public final class OwnCommits: Sendable {
    private let moves = Mutex<[ChangeTopic: [Move]]>([:])
    /// The most moves kept per topic while nobody asks (a feed that does not run): an
    /// old one forgotten only costs a wake.
    private static let kept = 4096

    private struct Move {
        var from: Int64
        var to: Int64
    }

    public init() {}

    /// A transaction of this process moved `topic` from generation `from` to `to`, and
    /// committed.
    public func committed(_ topic: ChangeTopic, from: Int64, to: Int64) {
        guard to > from else { return }
        moves.withLock { moves in
            var list = moves[topic, default: []]
            list.append(Move(from: from, to: to))
            if list.count > Self.kept { list.removeFirst(list.count - Self.kept) }
            moves[topic] = list
        }
    }

    /// Whether every move of `topic` from generation `from` to `to` was this process's
    /// own; the moves up to `to` are forgotten either way (the feed has seen them).
    public func explain(_ topic: ChangeTopic, from: Int64, to: Int64) -> Bool {
        moves.withLock { moves in
            guard var list = moves[topic], !list.isEmpty else { return false }
            var at = from
            // Two writers of this process (two connections) may record out of order.
            while at < to, let next = list.first(where: { $0.from == at }) { at = next.to }
            list.removeAll { $0.to <= to }
            moves[topic] = list
            return at == to
        }
    }
}
