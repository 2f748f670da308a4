/// A change to one field between the applied and the desired manifest.
public struct FieldChange: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case added
        case removed
        case changed
    }

    public var kind: Kind
    public var path: ValuePath
    /// Rendered for people: compact JSON, or `(sensitive)` for secret-like fields.
    public var before: String?
    public var after: String?
}

/// Field-level differences between two manifests, in document order of the desired one.
public enum FieldDiff {
    public static func changes(from old: Node, to new: Node) -> [FieldChange] {
        var changes: [FieldChange] = []
        diff(old, new, at: .root, sensitive: false, into: &changes)
        return changes
    }

    private static func diff(_ old: Node, _ new: Node, at path: ValuePath, sensitive: Bool, into changes: inout [FieldChange]) {
        switch (old.value, new.value) {
        case (.object(let a), .object(let b)):
            let credentialEntry = Sensitivity.isSensitive(entry: new) || Sensitivity.isSensitive(entry: old)
            for member in b {
                let here = path.appending(member.key)
                let secret = sensitive || Sensitivity.isSensitive(key: member.key) || (credentialEntry && member.key == "value")
                if let previous = a.first(where: { $0.key == member.key }) {
                    diff(previous.value, member.value, at: here, sensitive: secret, into: &changes)
                } else {
                    changes.append(FieldChange(kind: .added, path: here, before: nil, after: render(member.value, secret)))
                }
            }
            for member in a where !b.contains(where: { $0.key == member.key }) {
                let secret = sensitive || Sensitivity.isSensitive(key: member.key) || (credentialEntry && member.key == "value")
                changes.append(
                    FieldChange(kind: .removed, path: path.appending(member.key), before: render(member.value, secret), after: nil))
            }
        case (.array(let a), .array(let b)):
            for i in 0..<max(a.count, b.count) {
                let here = path.appending(i)
                let secret = sensitive
                if i >= a.count {
                    changes.append(FieldChange(kind: .added, path: here, before: nil, after: render(b[i], secret)))
                } else if i >= b.count {
                    changes.append(FieldChange(kind: .removed, path: here, before: render(a[i], secret), after: nil))
                } else {
                    diff(a[i], b[i], at: here, sensitive: secret, into: &changes)
                }
            }
        default:
            if old != new || old.typeName != new.typeName {
                changes.append(FieldChange(kind: .changed, path: path, before: render(old, sensitive), after: render(new, sensitive)))
            }
        }
    }

    private static func render(_ node: Node, _ sensitive: Bool) -> String {
        sensitive ? Sensitivity.mask : CanonicalJSON.encode(Sensitivity.masked(node))
    }
}

/// Which values plans and listings hide. Manifests name their secrets (the vault holds
/// the values), so what can leak is a credential written inline: an env var such as
/// `OPENAI_API_KEY`, a header such as `Authorization`, a field called `password`. Names
/// of secrets (`apiKeySecret`, `credentialSecret`, `secrets`) and counts (`tokens`) are
/// not credentials and stay visible.
public enum Sensitivity {
    public static let mask = "(sensitive)"

    /// Endings of keys (lower-cased, `-`, `_` and `.` removed) whose value is a
    /// credential: `bot_token`, `X-Api-Key`, `client_secret`. A plain `secret` too, but
    /// not `apiKeySecret` or `credentialSecret`, which name a vault secret.
    private static let credentialEndings = [
        "password", "passwd", "token", "apikey", "privatekey", "secretkey", "clientsecret", "authorization", "cookie",
    ]

    /// Words that make an env var's name a credential's.
    private static let credentialWords = ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "PRIVATE_KEY", "CREDENTIAL"]

    /// The value with every sensitive field replaced by the mask.
    public static func masked(_ node: Node) -> Node {
        switch node.value {
        case .object(let members):
            let credentialEntry = isSensitive(entry: node)
            return Node(
                .object(
                    members.map { member in
                        let hide = isSensitive(key: member.key) || (credentialEntry && member.key == "value")
                        return Node.Member(
                            key: member.key, keyLocation: member.keyLocation,
                            value: hide ? Node(.string(mask), at: member.value.location) : masked(member.value))
                    }), at: node.location)
        case .array(let items):
            return Node(.array(items.map(masked)), at: node.location)
        default:
            return node
        }
    }

    public static func isSensitive(key: String) -> Bool {
        let normalized = String(key.lowercased().filter { $0 != "-" && $0 != "_" && $0 != "." })
        return normalized == "secret" || credentialEndings.contains { normalized.hasSuffix($0) }
    }

    /// `{name: OPENAI_API_KEY, value: ...}`: a name/value entry whose name is a credential's.
    public static func isSensitive(entry: Node) -> Bool {
        guard let name = entry["name"]?.string?.uppercased(), entry["value"] != nil else { return false }
        return credentialWords.contains { name.contains($0) } || name.hasSuffix("_KEY")
    }
}
