/// A git source that `orlctl sync` and `orlctl watch` apply: where its manifests come
/// from, whether it is suspended, and how its last rounds went. The store keeps one per
/// source name; the name also names the source's inventory (`applySource`).
public struct SourceRecord: Sendable, Hashable {
    /// How the last attempt ended.
    public enum Result: String, Sendable, Hashable, CaseIterable {
        /// The attempted revision is applied (with changes or without).
        case applied = "Applied"
        /// The revision's manifests have errors; nothing was applied.
        case invalid = "Invalid"
        /// A guard refused the revision (a rewind, or prune's --max-deletions and
        /// --allow-empty); nothing was applied.
        case refused = "Refused"
        /// Git or the store failed while the revision was synced (a fetch, a corrupt
        /// object); nothing was applied.
        case failed = "Failed"
        /// The remote could not be asked for its head; no revision was attempted.
        case unreachable = "Unreachable"

        /// The attempted revision itself failed, so trying it again at once would fail
        /// again: it waits for the head to move or for a backoff.
        public var isRevisionFailure: Bool { self == .invalid || self == .refused || self == .failed }
    }

    public var name: String
    /// The remote as given: a path, `file://`, `ssh://`, `user@host:path` or `https://`.
    public var url: String
    /// The branch (or tag, or full ref); nil for the remote's default branch.
    public var ref: String?
    /// The directory of the tree that holds the manifests; nil for the whole tree.
    public var path: String?
    public var suspendedAt: Timestamp?
    public var suspendedBy: String?
    /// The commit whose manifests the state holds for this source.
    public var lastApplied: String?
    public var lastAppliedAt: Timestamp?
    /// The commit of the last attempt, applied or not.
    public var lastAttempted: String?
    public var lastAttemptedAt: Timestamp?
    public var result: Result?
    public var message: String
    /// Consecutive failed attempts of `lastAttempted`: what the retry backoff grows with.
    public var failures: Int

    public init(
        name: String, url: String, ref: String? = nil, path: String? = nil, suspendedAt: Timestamp? = nil, suspendedBy: String? = nil,
        lastApplied: String? = nil, lastAppliedAt: Timestamp? = nil, lastAttempted: String? = nil, lastAttemptedAt: Timestamp? = nil,
        result: Result? = nil, message: String = "", failures: Int = 0
    ) {
        self.name = name
        self.url = url
        self.ref = ref
        self.path = path
        self.suspendedAt = suspendedAt
        self.suspendedBy = suspendedBy
        self.lastApplied = lastApplied
        self.lastAppliedAt = lastAppliedAt
        self.lastAttempted = lastAttempted
        self.lastAttemptedAt = lastAttemptedAt
        self.result = result
        self.message = message
        self.failures = failures
    }

    public var isSuspended: Bool { suspendedAt != nil }

    /// The apply source its resources belong to: `git:NAME`. Prune removes only what it
    /// applied.
    public var applySource: String { Self.applySource(name) }

    public static func applySource(_ name: String) -> String { "git:" + name }

    /// What the source's events are about: `source/NAME` in `orlctl events`.
    public var eventSubject: ResourceID { Self.eventSubject(name) }

    public static let kind = "Source"

    public static func eventSubject(_ name: String) -> ResourceID {
        ResourceID(kind: kind, namespace: ResourceID.defaultNamespace, name: name)
    }

    /// Whether `name` may name a source: it names files in the state directory and an
    /// inventory, so lower-case letters, digits, `-`, `_` and `.`, starting with a
    /// letter or digit, at most 63 characters.
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 63 else { return false }
        func alphanumeric(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        return alphanumeric(first) && name.utf8.allSatisfy { alphanumeric($0) || $0 == 45 || $0 == 95 || $0 == 46 }
    }

    /// The name a source gets when none is given: the repository's name, from the last
    /// part of its URL or path without `.git` (`/srv/git/fleet.git` → `fleet`), lowered,
    /// with other characters as `-`.
    public static func defaultName(forURL url: String) -> String {
        var text = Substring(url)
        while text.hasSuffix("/") { text = text.dropLast() }
        if text.hasSuffix("/.git") { text = text.dropLast(5) }
        if text.hasSuffix(".git") { text = text.dropLast(4) }
        let last = text.split(whereSeparator: { $0 == "/" || $0 == ":" }).last.map(String.init) ?? ""
        var name = String(
            last.lowercased().map { c -> Character in
                c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "_" || c == ".") ? c : "-"
            })
        while let first = name.first, !(first.isLetter || first.isNumber) { name.removeFirst() }
        name = String(name.prefix(63))
        return name.isEmpty ? "source" : name
    }
}
