import Glibc
public import OrlCore

/// Where a state's master key comes from: `ORL_MASTER_KEY` (base64 of 32 bytes) when
/// set, else `<state>/master.key`, which is created (mode 0600) the first time a secret
/// is set. The key file is refused when anyone but its owner may read or write it, or
/// when its owner is not the user running orl: a key others could read protects nothing.
public struct MasterKeySource: Sendable {
    public static let environmentVariable = "ORL_MASTER_KEY"

    public let stateDirectory: String
    /// `ORL_MASTER_KEY`'s value, as the caller read it from its environment.
    public let environmentValue: String?

    /// Whether the key may come from (and be created as) `<state>/master.key`: not for a
    /// state in a database, which every machine must open with the same key.
    public let keyFileAllowed: Bool

    /// `environment` is the process's (only `ORL_MASTER_KEY` is read; empty counts as unset).
    public init(stateDirectory: String, environment: [String: String]) {
        self.stateDirectory = stateDirectory
        environmentValue = environment[Self.environmentVariable].flatMap { $0.isEmpty ? nil : $0 }
        keyFileAllowed = true
    }

    /// The key of a state shared by several machines (PostgreSQL): `ORL_MASTER_KEY` only.
    public init(sharedState label: String, environment: [String: String]) {
        stateDirectory = label
        environmentValue = environment[Self.environmentVariable].flatMap { $0.isEmpty ? nil : $0 }
        keyFileAllowed = false
    }

    public var filePath: String { stateDirectory.hasSuffix("/") ? stateDirectory + "master.key" : stateDirectory + "/master.key" }

    /// The key; nil when there is none (no variable, no file).
    public func load() throws(VaultError) -> MasterKey? {
        if let environmentValue { return try MasterKey(base64: environmentValue, origin: Self.environmentVariable) }
        guard keyFileAllowed else { return nil }
        return try readFile()
    }

    /// The key, creating the key file when there is none. Only for sealing into an empty
    /// vault: a new key would not open secrets already sealed.
    public func loadOrCreate() throws(VaultError) -> MasterKey {
        if let key = try load() { return key }
        guard keyFileAllowed else {
            throw VaultError(
                .missingKey,
                "the vault of \(stateDirectory) is sealed with $\(Self.environmentVariable), the same on every machine that uses "
                    + "the state: set it to base64 of 32 random bytes (openssl rand -base64 32) and keep it safe")
        }
        try createFile()
        guard let key = try readFile() else { throw VaultError(.io, "\(filePath) vanished right after it was created") }
        return key
    }

    private func readFile() throws(VaultError) -> MasterKey? {
        let fd = open(filePath, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            if errno == ELOOP {
                throw VaultError(.unusableKey, "refusing to use \(filePath): it is a symbolic link; put the key file itself there")
            }
            throw VaultError(.io, "cannot read \(filePath): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw VaultError(.io, "cannot read \(filePath): \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw VaultError(.unusableKey, "refusing to use \(filePath): it is not a regular file")
        }
        guard info.st_uid == geteuid() else {
            throw VaultError(
                .unusableKey,
                "refusing to use \(filePath): it belongs to uid \(info.st_uid), not to you (uid \(geteuid())); "
                    + "run orl as its owner, or chown the file")
        }
        let mode = info.st_mode & 0o7777
        guard mode & 0o7177 == 0 else {
            throw VaultError(
                .unusableKey,
                "refusing to use \(filePath): its mode is \(Self.octal(mode)), so others may read or change the key; "
                    + "run chmod 600 \(filePath) (and treat the key as exposed)")
        }
        var bytes = [UInt8](repeating: 0, count: 1024)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count >= 0 else { throw VaultError(.io, "cannot read \(filePath): \(String(cString: strerror(errno)))") }
        return try MasterKey(base64: String(decoding: bytes[..<count], as: UTF8.self), origin: filePath)
    }

    /// Writes a new key to a private temporary file and links it into place, so that no
    /// one ever reads a partly written key, and of two processes creating it at once one
    /// wins and the other uses the winner's.
    private func createFile() throws(VaultError) {
        let key = MasterKey.generate(origin: filePath)
        let temporary = "\(stateDirectory)/.master.key.\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw VaultError(.io, "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        defer { unlink(temporary) }
        let text = key.base64 + "\n"
        let written = text.withCString { write(fd, $0, strlen($0)) }
        let synced = fchmod(fd, 0o600) == 0 && fsync(fd) == 0
        close(fd)
        guard written == text.utf8.count, synced else {
            throw VaultError(.io, "cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        if link(temporary, filePath) != 0 && errno != EEXIST {
            throw VaultError(.io, "cannot create \(filePath): \(String(cString: strerror(errno)))")
        }
        // The link is a directory entry: make it durable before any secret depends on it.
        let directory = open(stateDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            _ = fsync(directory)
            close(directory)
        }
    }

    private static func octal(_ mode: mode_t) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

/// A state's vault: the sealed secrets in its store, opened with its master key. The
/// one way orl reads and writes secrets: `orlctl secret`, the controller (agents'
/// environments), the gateway (provider keys) and git sources (tokens) all use it.
///
/// Calls block on the store as `SQLiteStateStore` calls do.
public struct StateVault: Sendable {
    public let store: any StateStore
    public let keys: MasterKeySource

    public init(store: any StateStore, keys: MasterKeySource) {
        self.store = store
        self.keys = keys
    }

    /// Every secret, opened with the key: one read for callers that need several values.
    /// The key is only read when there are secrets.
    public func open(namespace: String? = nil) throws(VaultError) -> Vault {
        let sealed = try list(namespace: namespace)
        return Vault(sealed: sealed, key: keys.load)
    }

    /// A secret's value; nil when it is not set. Throws when it is set but cannot be
    /// read: no key, the wrong key, or a damaged ciphertext.
    public func value(of id: SecretID) throws(VaultError) -> String? {
        try open(namespace: id.namespace).value(of: id)?.value
    }

    /// The sealed secrets (names, sizes, times: never values), in namespace and name order.
    public func list(namespace: String?) throws(VaultError) -> [SealedSecret] {
        try storeCall { () throws(StoreError) in try store.read { reader throws(StoreError) in try reader.secrets(namespace: namespace) } }
    }

    /// Seals `value` as `id` (unless it already holds that value), records an event
    /// (never the value), and returns what changed. The first secret creates the key file
    /// when no key is set; later ones must use the same key.
    public func set(_ value: [UInt8], as id: SecretID, at now: Timestamp, by who: String) throws(VaultError) -> Vault.Change {
        // Before any key is made: a refused value must leave no key file behind.
        try Vault.check(value, as: id)
        let existing = try list(namespace: nil)
        // A key is made only for an empty vault: with secrets sealed, a missing key is an
        // error to fix (restore the key), never a reason to make another.
        let key = existing.isEmpty ? try keys.loadOrCreate() : try Vault(sealed: existing, key: keys.load).key()
        let outcome = try storeCall { () throws(StoreError) in
            try store.write { writer throws(StoreError) -> Result<Vault.Change, VaultError> in
                // Again under the write lock: another orlctl may have set secrets meanwhile.
                let vault = Vault(sealed: try writer.secrets(namespace: nil), key: { key })
                let outcome = Result { () throws(VaultError) in try vault.set(value, as: id, with: key, at: now, by: who) }
                switch outcome {
                case .success(.created(let secret)), .success(.updated(let secret)):
                    try writer.putSecret(secret)
                    let reason = if case .success(.created) = outcome { "Created" } else { "Updated" }
                    try writer.append(
                        StoreEvent(
                            time: now, kind: .normal, resource: id.eventSubject, reason: reason,
                            message: "set by \(who) (\(secret.size) bytes)"))
                case .success(.unchanged), .failure:
                    break
                }
                return outcome
            }
        }
        return try outcome.get()
    }

    /// Deletes the secrets, all or none, in one transaction, with a Deleted event each.
    /// When one is not in the vault, nothing is deleted and the missing ones are
    /// returned, unless `ignoreNotFound` (then the others are deleted).
    public func delete(_ ids: [SecretID], ignoreNotFound: Bool = false, at now: Timestamp, by who: String) throws(VaultError) -> (
        deleted: [SecretID], missing: [SecretID]
    ) {
        var seen: Set<SecretID> = []
        let ids = ids.filter { seen.insert($0).inserted }
        return try storeCall { () throws(StoreError) in
            try store.write { writer throws(StoreError) in
                var present: Set<SecretID> = []
                for namespace in Set(ids.map(\.namespace)) { present.formUnion(try writer.secrets(namespace: namespace).map(\.id)) }
                let missing = ids.filter { !present.contains($0) }
                guard missing.isEmpty || ignoreNotFound else { return ([], missing) }
                let deleted = ids.filter(present.contains)
                for id in deleted {
                    try writer.deleteSecret(id)
                    try writer.append(
                        StoreEvent(time: now, kind: .normal, resource: id.eventSubject, reason: "Deleted", message: "deleted by \(who)"))
                }
                return (deleted, missing)
            }
        }
    }

    private func storeCall<T>(_ body: () throws(StoreError) -> T) throws(VaultError) -> T {
        do {
            return try body()
        } catch {
            throw VaultError(.io, error.description)
        }
    }
}
