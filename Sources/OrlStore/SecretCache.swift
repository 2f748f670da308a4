public import OrlCore
import Synchronization

/// Secret values for a process that reads them on every request (the gateway's
/// provider keys): opened once, and again only after another process wrote the store
/// (a `secret set`, say), so a call costs a lookup rather than a read and a decryption.
///
/// Two ways to learn of a change: pulled (`changeMarker` is asked on each lookup, which
/// touches the store: fine for `orlctl watch`), or pushed (no marker: the owner calls
/// `refresh` when its change feed says the store changed, and a lookup never touches
/// the store, as the daemon's gateway needs).
public final class SecretCache: Sendable {
    private let vault: StateVault
    private let changeMarker: (@Sendable () -> Int64?)?
    private let cached = Mutex<(marker: Int64?, values: [SecretID: String])?>(nil)

    public init(vault: StateVault, changeMarker: (@Sendable () -> Int64?)? = nil) {
        self.vault = vault
        self.changeMarker = changeMarker
    }

    /// Reads and opens every secret again (blocks on SQLite and the key file): for the
    /// pushed mode, on a thread that may block.
    public func refresh() {
        let values = readAll()
        cached.withLock { $0 = (nil, values) }
    }

    /// The secret's value; nil when it is not set or cannot be read (no key, the wrong
    /// key), which the caller reports as missing.
    public func value(of id: SecretID) -> String? {
        guard let changeMarker else { return cached.withLock { $0?.values[id] } }
        let marker = changeMarker()
        if let hit = cached.withLock({ cache -> String?? in
            guard let cache, cache.marker == marker, marker != nil else { return nil }
            return .some(cache.values[id])
        }) {
            return hit
        }
        let values = readAll()
        cached.withLock { $0 = (marker, values) }
        return values[id]
    }

    private func readAll() -> [SecretID: String] {
        var values: [SecretID: String] = [:]
        if let opened = try? vault.open() {
            for sealed in (try? vault.list(namespace: nil)) ?? [] {
                if let value = try? opened.value(of: sealed.id)?.value { values[sealed.id] = value }
            }
        }
        return values
    }
}
