public import OrlJSON

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
            if let key = listKey(a, b) {
                keyedDiff(a, b, key: key, at: path, sensitive: sensitive, into: &changes)
            } else {
                sequenceDiff(a, b, at: path, sensitive: sensitive, into: &changes)
            }
        default:
            if old != new || old.typeName != new.typeName {
                changes.append(FieldChange(kind: .changed, path: path, before: render(old, sensitive), after: render(new, sensitive)))
            }
        }
    }

    /// The member that names the elements of a list of objects (`id` for steps, `name`
    /// for models, env vars and secrets, `window` for budget limits), when every element
    /// of both sides has it as a distinct string: such lists are compared by key, so
    /// adding a step does not read as every later step changing.
    static let listKeys = ["id", "name", "window"]

    private static func listKey(_ a: [Node], _ b: [Node]) -> String? {
        guard !a.isEmpty || !b.isEmpty else { return nil }
        return listKeys.first { key in
            for side in [a, b] {
                var seen = Set<String>()
                for element in side {
                    guard element.members != nil, let value = element[key]?.string, seen.insert(value).inserted else { return false }
                }
            }
            return true
        }
    }

    private static func keyedDiff(
        _ a: [Node], _ b: [Node], key: String, at path: ValuePath, sensitive: Bool, into changes: inout [FieldChange]
    ) {
        let old = Dictionary(uniqueKeysWithValues: a.map { ($0[key]!.string!, $0) })
        let new = Set(b.map { $0[key]!.string! })
        for element in b {
            let name = element[key]!.string!
            let here = ValuePath(path.components + [.element(key: key, value: name)])
            if let previous = old[name] {
                diff(previous, element, at: here, sensitive: sensitive, into: &changes)
            } else {
                changes.append(FieldChange(kind: .added, path: here, before: nil, after: render(element, sensitive)))
            }
        }
        for element in a where !new.contains(element[key]!.string!) {
            let here = ValuePath(path.components + [.element(key: key, value: element[key]!.string!)])
            changes.append(FieldChange(kind: .removed, path: here, before: render(element, sensitive), after: nil))
        }
        // Only the order changed among the elements both sides have.
        let kept = Set(old.keys).intersection(new)
        let before = a.map { $0[key]!.string! }.filter(kept.contains)
        let after = b.map { $0[key]!.string! }.filter(kept.contains)
        if before != after {
            changes.append(
                FieldChange(
                    kind: .changed, path: path, before: "order " + before.joined(separator: ", "),
                    after: "order " + after.joined(separator: ", ")))
        }
    }

    /// Other lists element by element, aligned by their longest common subsequence, so
    /// one value inserted or removed is one change (`args`, `tools`, `dependsOn`).
    private static func sequenceDiff(_ a: [Node], _ b: [Node], at path: ValuePath, sensitive: Bool, into changes: inout [FieldChange]) {
        // Lists in manifests are short; a quadratic table is fine, but bound it anyway.
        guard a.count * b.count <= 250_000 else {
            positional(a, b, at: path, sensitive: sensitive, into: &changes)
            return
        }
        let n = a.count
        let m = b.count
        var table = [[Int]](repeating: [Int](repeating: 0, count: m + 1), count: n + 1)
        for i in stride(from: n - 1, through: 0, by: -1) {
            for j in stride(from: m - 1, through: 0, by: -1) {
                table[i][j] =
                    a[i] == b[j] && a[i].typeName == b[j].typeName ? table[i + 1][j + 1] + 1 : max(table[i + 1][j], table[i][j + 1])
            }
        }
        var i = 0
        var j = 0
        var pendingRemoved: [Int] = []
        var pendingAdded: [Int] = []
        func flush() {
            // A removal facing an addition at the same place is a change of that element.
            let paired = min(pendingRemoved.count, pendingAdded.count)
            for k in 0..<paired {
                diff(a[pendingRemoved[k]], b[pendingAdded[k]], at: path.appending(pendingAdded[k]), sensitive: sensitive, into: &changes)
            }
            for k in pendingRemoved.dropFirst(paired) {
                changes.append(FieldChange(kind: .removed, path: path.appending(k), before: render(a[k], sensitive), after: nil))
            }
            for k in pendingAdded.dropFirst(paired) {
                changes.append(FieldChange(kind: .added, path: path.appending(k), before: nil, after: render(b[k], sensitive)))
            }
            pendingRemoved = []
            pendingAdded = []
        }
        while i < n || j < m {
            if i < n, j < m, a[i] == b[j], a[i].typeName == b[j].typeName {
                flush()
                i += 1
                j += 1
            } else if j < m, i == n || table[i][j + 1] >= table[i + 1][j] {
                pendingAdded.append(j)
                j += 1
            } else {
                pendingRemoved.append(i)
                i += 1
            }
        }
        flush()
    }

    private static func positional(_ a: [Node], _ b: [Node], at path: ValuePath, sensitive: Bool, into changes: inout [FieldChange]) {
        for i in 0..<max(a.count, b.count) {
            let here = path.appending(i)
            if i >= a.count {
                changes.append(FieldChange(kind: .added, path: here, before: nil, after: render(b[i], sensitive)))
            } else if i >= b.count {
                changes.append(FieldChange(kind: .removed, path: here, before: render(a[i], sensitive), after: nil))
            } else {
                diff(a[i], b[i], at: here, sensitive: sensitive, into: &changes)
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
