/// The `simulated` API style: replies made up on the spot, the same for the same
/// request, with token counts priced like a real model's. Demos, the quickstart and
/// tests run the whole path (reservation, metering, halts) with no network.
public enum SimulatedProvider {
    public struct Completion: Sendable, Hashable {
        public var id: String
        public var content: String
        public var usage: TokenUsage
    }

    /// About four bytes a token plus each message's framing, as real tokenizers count;
    /// never more than the request's `promptBound`, so reservations stay worst cases.
    public static func complete(_ request: ChatRequest, model: String, maxTokens: Int) -> Completion {
        let prompt = request.messages.reduce(3) { $0 + 4 + ($1.content.utf8.count + 3) / 4 }
        let asked = request.messages.last { $0.role == "user" }?.content ?? request.messages.last?.content ?? ""
        let echo = asked.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).prefix(24).joined(separator: " ")
        let words = ("This is a simulated reply from \(model). You asked: " + echo).split(separator: " ").prefix(max(1, maxTokens))
        let digest = AgentToken.digest(model + "\u{0}" + request.messages.map { $0.role + "\u{0}" + $0.content }.joined(separator: "\u{0}"))
        return Completion(
            id: "chatcmpl-sim-" + digest.prefix(24), content: words.joined(separator: " "),
            usage: TokenUsage(prompt: min(prompt, request.promptBound), completion: words.count))
    }

    /// The `chat.completion` body.
    public static func body(_ completion: Completion, model: String, created: Timestamp) -> String {
        JSONValue.object([
            ("id", .string(completion.id)), ("object", .string("chat.completion")), ("created", .int(Int(created.milliseconds / 1000))),
            ("model", .string(model)),
            (
                "choices",
                .array([
                    .object([
                        ("index", .int(0)),
                        ("message", .object([("role", .string("assistant")), ("content", .string(completion.content))])),
                        ("finish_reason", .string("stop")),
                    ])
                ])
            ),
            ("usage", usage(completion.usage)),
        ]).compactRendered()
    }

    /// The stream's events: a role chunk, a chunk per word, a finish chunk, the usage
    /// chunk (as `stream_options.include_usage` asks), then `[DONE]`.
    public static func events(_ completion: Completion, model: String, created: Timestamp) -> [String] {
        func chunk(_ delta: JSONValue, finish: String? = nil, usage: TokenUsage? = nil, choices: Bool = true) -> String {
            let choice = JSONValue.object([("index", .int(0)), ("delta", delta), ("finish_reason", finish.map(JSONValue.string) ?? .null)])
            return "data: "
                + JSONValue.object([
                    ("id", .string(completion.id)), ("object", .string("chat.completion.chunk")),
                    ("created", .int(Int(created.milliseconds / 1000))), ("model", .string(model)),
                    ("choices", .array(choices ? [choice] : [])), ("usage", usage.map(Self.usage) ?? .null),
                ]).compactRendered() + "\n\n"
        }
        var events = [chunk(.object([("role", .string("assistant")), ("content", .string(""))]))]
        for (index, word) in completion.content.split(separator: " ").enumerated() {
            events.append(chunk(.object([("content", .string(index == 0 ? String(word) : " " + word))])))
        }
        events.append(chunk(.object([]), finish: "stop"))
        events.append(chunk(.object([]), usage: completion.usage, choices: false))
        events.append("data: [DONE]\n\n")
        return events
    }

    static func usage(_ usage: TokenUsage) -> JSONValue {
        .object([("prompt_tokens", .int(usage.prompt)), ("completion_tokens", .int(usage.completion)), ("total_tokens", .int(usage.total))])
    }
}
