import Synchronization

/// Runs a piece of work beside the caller's: on another core when the caller, which may
/// start threads, gives a way to (`beside`), else before it (`inline`); the core itself
/// does no I/O and starts none.
public struct Fork: Sendable {
    /// Runs `other` and `here`, `here` on the calling thread, and returns when both are done.
    public let run: @Sendable (_ other: @Sendable () -> Void, _ here: () -> Void) -> Void

    public init(_ run: @escaping @Sendable (_ other: @Sendable () -> Void, _ here: () -> Void) -> Void) { self.run = run }

    public static let inline = Fork { other, here in
        other()
        here()
    }

    /// Both results: `other`'s made beside `here` (which may use what is not `Sendable`,
    /// such as a transaction's writer, as it runs on the calling thread).
    public func both<A: Sendable, B, E: Error>(_ other: @Sendable () -> A, _ here: () throws(E) -> B) throws(E) -> (A, B) {
        let made = Mutex<A?>(nil)
        var result: Result<B, E>?
        run(
            {
                let value = other()
                made.withLock { $0 = value }
            },
            {
                do throws(E) { result = .success(try here()) } catch { result = .failure(error) }
            })
        return (made.withLock { $0 }!, try result!.get())
    }
}
