internal import Crypto

/// A vault secret's identity. Secrets live in a namespace, as the resources that name
/// them do (an Agent's `secrets`, a ModelProvider's `apiKeySecret`): a reference
/// never leaves its namespace.
public struct SecretID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var namespace: String
    public var name: String

    public init(namespace: String = ResourceID.defaultNamespace, name: String) {
        self.namespace = namespace
        self.name = name
    }

    public static func < (lhs: SecretID, rhs: SecretID) -> Bool { (lhs.namespace, lhs.name) < (rhs.namespace, rhs.name) }

    /// `secret "openai-key"`, with its namespace when not the default one.
    public var description: String {
        let scope = namespace == ResourceID.defaultNamespace ? "" : " in namespace \(Diagnostic.quoted(namespace))"
        return "secret \(Diagnostic.quoted(name))\(scope)"
    }

    /// What events about the secret are recorded against: `secret/openai-key` in
    /// `orlctl events`. A secret is not a resource; the key only names it.
    public var eventSubject: ResourceID { ResourceID(kind: "Secret", namespace: namespace, name: name) }

    /// The additional authenticated data of its ciphertext: a ciphertext copied to
    /// another name (or namespace) does not open there.
    var associatedData: [UInt8] { Array("\(namespace)/\(name)".utf8) }

    /// Why the name (or namespace) cannot name a secret; nil when it can. The rule is
    /// the manifests' own (`common.schema.json#/$defs/name`, checked by that schema),
    /// so every name a manifest can refer to can be set, and no other.
    public static func problem(name: String, namespace: String) -> String? {
        for (what, value) in [("secret name", name), ("namespace", namespace)] where !ManifestSchemas.bundled.isName(value) {
            return "invalid \(what) \(Diagnostic.quoted(value)): use a DNS-1123 label (lower-case letters, digits and '-', "
                + "starting and ending with a letter or digit, at most 63 characters), as manifests do"
        }
        return nil
    }
}

/// Why the vault could not do what was asked. Messages say what to do.
public struct VaultError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// Secrets exist but no master key was found.
        case missingKey
        /// The master key is not the one the secrets were sealed with.
        case wrongKey
        /// A master key that cannot be used: not base64 of 32 bytes, or a key file that
        /// others may read or that belongs to someone else.
        case unusableKey
        /// A ciphertext that does not open with the right key: altered, or moved.
        case corrupt
        /// A name or value that cannot be stored.
        case invalid
        /// Reading or writing the key file or the store failed.
        case io
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

/// The 256-bit key that seals every secret of a state. Never stored in the database:
/// it comes from `ORL_MASTER_KEY` or the state's `master.key` file.
public struct MasterKey: Sendable {
    public static let byteCount = 32

    let key: SymmetricKey
    /// Where it came from, for messages: `ORL_MASTER_KEY`, or the file's path.
    public let origin: String
    /// Identifies the key without revealing it (16 hex digits of an HMAC-SHA256 keyed by
    /// it), stored beside each ciphertext: opening with another key is reported as the
    /// wrong key, not as a failed decryption.
    public let check: String

    init(bytes: [UInt8], origin: String) {
        key = SymmetricKey(data: bytes)
        self.origin = origin
        let mac = HMAC<SHA256>.authenticationCode(for: Array("orl vault key check v1".utf8), using: key)
        check = String(CanonicalJSON.hex(mac).prefix(16))
    }

    /// Reads a key written as base64 of 32 bytes; surrounding white space (the file's
    /// trailing newline) is ignored.
    public init(base64 text: String, origin: String) throws(VaultError) {
        let trimmed = text.trimmingWhiteSpace
        guard let bytes = Base64.decode(String(trimmed)), bytes.count == Self.byteCount else {
            throw VaultError(
                .unusableKey,
                "the master key in \(origin) is not base64 of \(Self.byteCount) bytes; make one with `head -c 32 /dev/urandom | base64`")
        }
        self.init(bytes: bytes, origin: origin)
    }

    /// A new random key.
    public static func generate(origin: String) -> MasterKey {
        let bytes = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        return MasterKey(bytes: bytes, origin: origin)
    }

    /// The key as base64, what the key file and `ORL_MASTER_KEY` hold.
    public var base64: String { Base64.encode(key.withUnsafeBytes { Array($0) }) }
}

/// A secret as the store keeps it: the value sealed with AES-256-GCM, never in plain text.
public struct SealedSecret: Sendable, Hashable {
    public var id: SecretID
    /// Nonce (12 bytes), ciphertext, tag (16 bytes): AES-GCM's combined form.
    public var box: [UInt8]
    /// `MasterKey.check` of the key that sealed it.
    public var keyCheck: String
    /// The value's length in bytes (what `secret list` shows).
    public var size: Int
    public var updatedAt: Timestamp
    public var updatedBy: String

    public init(id: SecretID, box: [UInt8], keyCheck: String, size: Int, updatedAt: Timestamp, updatedBy: String) {
        self.id = id
        self.box = box
        self.keyCheck = keyCheck
        self.size = size
        self.updatedAt = updatedAt
        self.updatedBy = updatedBy
    }

    /// Changes exactly when the value is set anew (each seal draws a fresh nonce) and
    /// says nothing about the value: what a launch hash covers instead of the value, so
    /// the hash in the store cannot be used to guess a weak secret.
    public var version: String { String(CanonicalJSON.hex(SHA256.hash(data: box)).prefix(16)) }
}

/// A secret's value with its `SealedSecret.version`.
public struct SecretValue: Sendable, Hashable {
    public var value: String
    public var version: String

    public init(value: String, version: String) {
        self.value = value
        self.version = version
    }

    /// The most a value may hold: it must fit an environment variable with room to spare.
    public static let maxBytes = 64 * 1024

    /// Why `bytes` cannot be a secret's value; nil when it can. Values reach agents as
    /// environment variables, which hold text without NUL bytes.
    public static func problem(_ bytes: [UInt8]) -> String? {
        if bytes.isEmpty { return "the value is empty" }
        if bytes.count > maxBytes { return "the value is \(bytes.count) bytes; the most a secret holds is \(maxBytes) bytes" }
        if bytes.contains(0) {
            return "the value contains a NUL byte, which an environment variable cannot hold; store binary data as base64"
        }
        if String(validating: bytes, as: UTF8.self) == nil {
            return "the value is not UTF-8 text, which environment variables carry; store binary data as base64"
        }
        return nil
    }
}

/// The secrets of a state opened with its master key: what reads a value, and what
/// seals a new one. Pure: the store's adapter reads the sealed secrets and the key.
public struct Vault: Sendable {
    public let sealed: [SecretID: SealedSecret]
    private let loadedKey: Result<MasterKey?, VaultError>

    /// `key` is called only when there are secrets to open: an empty vault needs no key
    /// (and creates none).
    public init(sealed: [SealedSecret], key: () throws(VaultError) -> MasterKey?) {
        var byID: [SecretID: SealedSecret] = [:]
        for secret in sealed { byID[secret.id] = secret }
        self.sealed = byID
        if sealed.isEmpty {
            loadedKey = .success(nil)
        } else {
            do throws(VaultError) {
                loadedKey = .success(try key())
            } catch {
                loadedKey = .failure(error)
            }
        }
    }

    /// The secret's value; nil when it is not set.
    public func value(of id: SecretID) throws(VaultError) -> SecretValue? {
        guard let secret = sealed[id] else { return nil }
        let key = try self.key()
        let bytes = try Self.open(secret, with: key)
        guard let value = String(validating: bytes, as: UTF8.self) else {
            throw VaultError(.corrupt, "the stored \(secret.id) is not UTF-8 text; set it again with orlctl secret set")
        }
        return SecretValue(value: value, version: secret.version)
    }

    /// What setting a secret does.
    public enum Change: Sendable, Hashable {
        case created(SealedSecret)
        case updated(SealedSecret)
        /// The same value is set already: nothing to write (its update time stays).
        case unchanged(SealedSecret)
    }

    /// Seals `value` as `id`, or says it is unchanged. Refuses a key other than the one
    /// the vault's secrets were sealed with: one vault, one key.
    public func set(_ value: [UInt8], as id: SecretID, with key: MasterKey, at now: Timestamp, by who: String) throws(VaultError)
        -> Change
    {
        try Self.check(value, as: id)
        try Self.requireSame(key, as: sealed.values.map(\.keyCheck))
        let existing = sealed[id]
        if let existing, try Self.open(existing, with: key) == value { return .unchanged(existing) }
        let box: [UInt8]
        do {
            box = Array(try AES.GCM.seal(value, using: key.key, authenticating: id.associatedData).combined!)
        } catch {
            throw VaultError(.io, "cannot seal \(id): \(error)")
        }
        let secret = SealedSecret(id: id, box: box, keyCheck: key.check, size: value.count, updatedAt: now, updatedBy: who)
        return existing == nil ? .created(secret) : .updated(secret)
    }

    /// Refuses a name or value that cannot be set.
    public static func check(_ value: [UInt8], as id: SecretID) throws(VaultError) {
        if let problem = SecretID.problem(name: id.name, namespace: id.namespace) { throw VaultError(.invalid, problem) }
        if let problem = SecretValue.problem(value) { throw VaultError(.invalid, "cannot set \(id): \(problem)") }
    }

    /// The key that opens the vault's secrets: the missing or wrong key is an error.
    public func key() throws(VaultError) -> MasterKey {
        let checks = sealed.values.map(\.keyCheck)
        switch loadedKey {
        case .failure(let error): throw error
        case .success(nil):
            throw VaultError(
                .missingKey,
                "the vault holds \(Self.count(checks.count)) sealed with master key \(Self.majority(checks)), but there is no master key: "
                    + "ORL_MASTER_KEY is not set and the state directory has no master.key; restore master.key (mode 0600) "
                    + "or set ORL_MASTER_KEY to the key (base64)")
        case .success(let key?):
            try Self.requireSame(key, as: checks)
            return key
        }
    }

    private static func requireSame(_ key: MasterKey, as checks: [String]) throws(VaultError) {
        let others = checks.filter { $0 != key.check }
        guard !others.isEmpty else { return }
        throw VaultError(
            .wrongKey,
            "the master key from \(key.origin) (key id \(key.check)) is not the key the vault's secrets were sealed with "
                + "(key id \(majority(others)), \(count(others.count))); use that key, in ORL_MASTER_KEY or the state's master.key")
    }

    private static func open(_ secret: SealedSecret, with key: MasterKey) throws(VaultError) -> [UInt8] {
        try requireSame(key, as: [secret.keyCheck])
        do {
            let box = try AES.GCM.SealedBox(combined: secret.box)
            return Array(try AES.GCM.open(box, using: key.key, authenticating: secret.id.associatedData))
        } catch {
            throw VaultError(
                .corrupt,
                "the stored \(secret.id) does not decrypt with the right key: its ciphertext was altered or copied from another "
                    + "secret; set it again with orlctl secret set")
        }
    }

    private static func count(_ n: Int) -> String { n == 1 ? "1 secret" : "\(n) secrets" }

    /// The key id most secrets were sealed with.
    private static func majority(_ checks: [String]) -> String {
        var counts: [String: Int] = [:]
        for check in checks { counts[check, default: 0] += 1 }
        return counts.max { ($0.value, $1.key) < ($1.value, $0.key) }?.key ?? "?"
    }
}

extension String {
    fileprivate var trimmingWhiteSpace: Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else { return "" }
        return self[start...end]
    }
}
