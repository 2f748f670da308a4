/// The wording of violations. Kept apart from the evaluator so that the phrasing can
/// be reviewed (and tested) in one place; nothing here runs unless a violation is
/// being reported.
enum ViolationMessages {
    /// `string "three"`, `integer 3`, `boolean true`, `null`, `object`, `array`.
    static func describe(_ node: Node) -> String {
        switch node.value {
        case .null: "null"
        case .bool(let b): "boolean \(b)"
        case .number(let n): "\(n.isWhole ? "integer" : "number") \(n.text)"
        case .string(let s): "string \(quoted(s))"
        case .array: "array"
        case .object: "object"
        }
    }

    /// A value as it appears inside a message: strings quoted and shortened, small
    /// scalars verbatim, containers by type.
    static func render(_ node: Node) -> String {
        switch node.value {
        case .null: "null"
        case .bool(let b): String(b)
        case .number(let n): n.text
        case .string(let s): quoted(s)
        case .array: "an array"
        case .object: "an object"
        }
    }

    /// How an allowed value is listed: `enum` lists show strings bare, as users
    /// write them in YAML (`Always, OnFailure, Never`).
    static func listed(_ node: Node) -> String {
        if case .string(let s) = node.value { return s.isEmpty ? "\"\"" : s }
        return render(node)
    }

    static func quoted(_ string: String) -> String { MessageText.quoted(string) }

    static func plural(_ count: Int, _ noun: String) -> String {
        "\(count) \(noun)\(count == 1 ? "" : "s")"
    }

    /// `"Allways" is not one of: Always, OnFailure, Never (did you mean "Always"?)`.
    static func notOneOf(_ node: Node, _ allowed: [Node]) -> String {
        let shown = allowed.count <= 12 ? allowed.map(listed).joined(separator: ", ") : "\(allowed.count) allowed values"
        var message = "\(render(node)) is not one of: \(shown)"
        if case .string(let string) = node.value {
            message += Suggestion.hint(for: string, among: allowed.compactMap(\.string))
        }
        return message
    }

    static func mustEqual(_ node: Node, _ constant: Node) -> String {
        switch constant.value {
        case .array, .object: "must equal the value the schema requires"
        default: "must be \(render(constant)), got \(render(node))"
        }
    }

    static func unknownField(_ key: String, candidates: some Sequence<String>) -> String {
        "unknown field \(quoted(key))" + Suggestion.hint(for: key, among: candidates)
    }
}
