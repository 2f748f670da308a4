import Crypto
import OrlJSON

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
    public static func complete(_ request: ModelRequest, model: String, maxTokens: Int) -> Completion {
        let prompt = request.messages.reduce(3) { $0 + 4 + ($1.content.utf8.count + 3) / 4 }
        let asked = request.messages.last { $0.role == "user" }?.content ?? request.messages.last?.content ?? ""
        let echo = asked.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).prefix(24).joined(separator: " ")
        let words = ("This is a simulated reply from \(model). You asked: " + echo).split(separator: " ").prefix(max(1, maxTokens))
        let digest = AgentToken.digest(model + "\u{0}" + request.messages.map { $0.role + "\u{0}" + $0.content }.joined(separator: "\u{0}"))
        let prefix =
            switch request.api {
            case .chatCompletions, .embeddings: "chatcmpl-sim-"
            case .responses: "resp_sim"
            case .messages: "msg_sim"
            }
        return Completion(
            id: prefix + digest.prefix(24), content: words.joined(separator: " "),
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

    // MARK: The other APIs

    /// The reply in the request's API, plain: a body.
    public static func body(_ completion: Completion, for api: ModelAPI, model: String, maxTokens: Int, created: Timestamp) -> String {
        switch api {
        case .chatCompletions, .embeddings: body(completion, model: model, created: created)
        case .responses: response(completion, model: model, maxTokens: maxTokens, created: created, done: true).compactRendered()
        case .messages: message(completion, model: model, maxTokens: maxTokens, done: true).compactRendered()
        }
    }

    /// The reply in the request's API, streamed: its server-sent events.
    public static func events(_ completion: Completion, for api: ModelAPI, model: String, maxTokens: Int, created: Timestamp) -> [String] {
        let words = completion.content.split(separator: " ").enumerated().map { $0.offset == 0 ? String($0.element) : " " + $0.element }
        func event(_ type: String, _ members: [(String, JSONValue)]) -> String {
            "event: \(type)\ndata: " + JSONValue.object([("type", .string(type))] + members).compactRendered() + "\n\n"
        }
        switch api {
        case .chatCompletions, .embeddings:
            return events(completion, model: model, created: created)
        case .responses:
            // Each event carries its sequence number; the last, `response.completed`, the usage.
            var sequence = 0
            func next(_ type: String, _ members: [(String, JSONValue)]) -> String {
                defer { sequence += 1 }
                return event(type, members + [("sequence_number", .int(sequence))])
            }
            let itemID = "msg_" + completion.id.dropFirst("resp_".count)
            let item = { (done: Bool) -> JSONValue in
                outputMessage(id: itemID, text: done ? completion.content : nil)
            }
            let part = { (text: String) -> JSONValue in
                .object([("type", .string("output_text")), ("text", .string(text)), ("annotations", .array([]))])
            }
            let started = response(completion, model: model, maxTokens: maxTokens, created: created, done: false)
            var events = [
                next("response.created", [("response", started)]), next("response.in_progress", [("response", started)]),
                next("response.output_item.added", [("output_index", .int(0)), ("item", item(false))]),
                next(
                    "response.content_part.added",
                    [("item_id", .string(itemID)), ("output_index", .int(0)), ("content_index", .int(0)), ("part", part(""))]),
            ]
            for word in words {
                events.append(
                    next(
                        "response.output_text.delta",
                        [
                            ("item_id", .string(itemID)), ("output_index", .int(0)), ("content_index", .int(0)), ("delta", .string(word)),
                            ("logprobs", .array([])),
                        ]))
            }
            events += [
                next(
                    "response.output_text.done",
                    [
                        ("item_id", .string(itemID)), ("output_index", .int(0)), ("content_index", .int(0)),
                        ("text", .string(completion.content)), ("logprobs", .array([])),
                    ]),
                next(
                    "response.content_part.done",
                    [
                        ("item_id", .string(itemID)), ("output_index", .int(0)), ("content_index", .int(0)),
                        ("part", part(completion.content)),
                    ]),
                next("response.output_item.done", [("output_index", .int(0)), ("item", item(true))]),
                next(
                    "response.completed",
                    [("response", response(completion, model: model, maxTokens: maxTokens, created: created, done: true))]),
            ]
            return events
        case .messages:
            // The input in `message_start`, the output in `message_delta`, as Anthropic streams.
            var events = [
                event("message_start", [("message", message(completion, model: model, maxTokens: maxTokens, done: false))]),
                event(
                    "content_block_start",
                    [("index", .int(0)), ("content_block", .object([("type", .string("text")), ("text", .string(""))]))]),
            ]
            for word in words {
                events.append(
                    event(
                        "content_block_delta",
                        [("index", .int(0)), ("delta", .object([("type", .string("text_delta")), ("text", .string(word))]))]))
            }
            events += [
                event("content_block_stop", [("index", .int(0))]),
                event(
                    "message_delta",
                    [
                        ("delta", .object([("stop_reason", .string(stopReason(completion, maxTokens))), ("stop_sequence", .null)])),
                        ("usage", .object([("output_tokens", .int(completion.usage.completion))])),
                    ]),
                event("message_stop", []),
            ]
            return events
        }
    }

    /// A Responses API `response` object; in progress, it has no output nor usage yet.
    static func response(_ completion: Completion, model: String, maxTokens: Int, created: Timestamp, done: Bool) -> JSONValue {
        let usage = JSONValue.object([
            ("input_tokens", .int(completion.usage.prompt)), ("input_tokens_details", .object([("cached_tokens", .int(0))])),
            ("output_tokens", .int(completion.usage.completion)), ("output_tokens_details", .object([("reasoning_tokens", .int(0))])),
            ("total_tokens", .int(completion.usage.total)),
        ])
        return .object([
            ("id", .string(completion.id)), ("object", .string("response")), ("created_at", .int(Int(created.milliseconds / 1000))),
            ("status", .string(done ? "completed" : "in_progress")), ("error", .null), ("incomplete_details", .null),
            ("instructions", .null), ("max_output_tokens", .int(maxTokens)), ("model", .string(model)),
            ("output", .array(done ? [outputMessage(id: "msg_" + completion.id.dropFirst("resp_".count), text: completion.content)] : [])),
            ("parallel_tool_calls", .bool(true)), ("temperature", .double(1)), ("tool_choice", .string("auto")), ("tools", .array([])),
            ("top_p", .double(1)), ("metadata", .object([])), ("usage", done ? usage : .null),
        ])
    }

    private static func outputMessage(id: String, text: String?) -> JSONValue {
        .object([
            ("id", .string(id)), ("type", .string("message")), ("status", .string(text == nil ? "in_progress" : "completed")),
            ("role", .string("assistant")),
            (
                "content",
                .array(
                    text.map { [.object([("type", .string("output_text")), ("text", .string($0)), ("annotations", .array([]))])] } ?? [])
            ),
        ])
    }

    /// An Anthropic `message`; at the start of a stream, with no content and no output yet.
    static func message(_ completion: Completion, model: String, maxTokens: Int, done: Bool) -> JSONValue {
        .object([
            ("id", .string(completion.id)), ("type", .string("message")), ("role", .string("assistant")), ("model", .string(model)),
            ("content", .array(done ? [.object([("type", .string("text")), ("text", .string(completion.content))])] : [])),
            ("stop_reason", done ? .string(stopReason(completion, maxTokens)) : .null), ("stop_sequence", .null),
            (
                "usage",
                .object([
                    ("input_tokens", .int(completion.usage.prompt)), ("cache_creation_input_tokens", .int(0)),
                    ("cache_read_input_tokens", .int(0)), ("output_tokens", .int(done ? completion.usage.completion : 0)),
                ])
            ),
        ])
    }

    private static func stopReason(_ completion: Completion, _ maxTokens: Int) -> String {
        completion.usage.completion >= maxTokens ? "max_tokens" : "end_turn"
    }

    // MARK: Embeddings

    /// Unit vectors made from a digest of each input (8 dimensions unless asked), and a
    /// token count of about four bytes a token, never more than the request's bound.
    public static func embed(_ request: ModelRequest, model: String) -> (body: String, usage: TokenUsage) {
        let dimensions = request.dimensions ?? 8
        var tokens = 0
        var data: [JSONValue] = []
        for (index, input) in request.messages.enumerated() {
            tokens += max(1, (input.content.utf8.count + 3) / 4)
            let digest = SHA256.hash(data: Array((model + "\u{0}" + input.content).utf8)).map { $0 }
            var vector = (0..<dimensions).map { i in
                Double(Int(digest[i % digest.count] ^ UInt8(truncatingIfNeeded: i / digest.count))) - 127.5
            }
            let norm = vector.reduce(0) { $0 + $1 * $1 }.squareRoot()
            vector = vector.map { Double(Float($0 / norm)) }
            let embedding: JSONValue =
                request.base64Embeddings
                ? .string(Base64.encode(vector.flatMap { Float($0).bitPattern.littleEndianBytes }))
                : .array(vector.map(JSONValue.double))
            data.append(.object([("object", .string("embedding")), ("index", .int(index)), ("embedding", embedding)]))
        }
        let usage = TokenUsage(prompt: min(tokens, request.promptBound), completion: 0)
        let body = JSONValue.object([
            ("object", .string("list")), ("data", .array(data)), ("model", .string(model)),
            ("usage", .object([("prompt_tokens", .int(usage.prompt)), ("total_tokens", .int(usage.prompt))])),
        ])
        return (body.compactRendered(), usage)
    }
}

extension UInt32 {
    fileprivate var littleEndianBytes: [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: self >> ($0 * 8)) } }
}
