/// What the gateway reads of an OpenAI `POST /v1/chat/completions` body, and the body it
/// forwards in its place.
public struct ChatRequest: Sendable {
    /// As the agent wrote it: `provider/model`, or a model name alone.
    public let model: String
    public let stream: Bool
    /// The agent's bound on the completion (`max_completion_tokens`, else `max_tokens`).
    public let maxTokens: Int?
    /// An upper bound of the prompt's tokens: the body's size in bytes. Every tokenizer
    /// in use spends at least one byte per token, and the body holds all the prompt
    /// (messages, tools, their JSON), so the bound holds without a tokenizer. It is what
    /// makes a reservation a true worst case.
    public let promptBound: Int
    /// The text of the messages, in order, for the simulated provider.
    public let messages: [(role: String, content: String)]
    private let root: Node
    private let usesCompletionTokensField: Bool

    public init(body: [UInt8]) throws(GatewayError) {
        let root: Node
        do {
            root = try JSONParser.parse(bytes: body, file: "<request>")
        } catch {
            throw .invalidRequest("the body is not JSON: \(error.message)")
        }
        guard root.members != nil else { throw .invalidRequest("the body must be a JSON object") }
        guard let model = root["model"]?.string, !model.isEmpty else {
            throw .invalidRequest("you must provide a model parameter", param: "model")
        }
        guard let messages = root["messages"]?.elements, !messages.isEmpty else {
            throw .invalidRequest("messages must be a non-empty array", param: "messages")
        }
        var texts: [(role: String, content: String)] = []
        for message in messages {
            let role = message["role"]?.string ?? ""
            // Content is a string or an array of parts; only text parts matter here.
            let content =
                message["content"]?.string
                ?? (message["content"]?.elements ?? []).compactMap { $0["text"]?.string }.joined(separator: "\n")
            texts.append((role, content))
        }
        func count(_ key: String) throws(GatewayError) -> Int? {
            guard let node = root[key], !node.isNull else { return nil }
            guard let value = node.number?.integer, value >= 1 else {
                throw .invalidRequest("\(key) must be an integer of 1 or more", param: key)
            }
            return value
        }
        let completionTokens = try count("max_completion_tokens")
        let maxTokens = try count("max_tokens")
        self.root = root
        self.model = model
        self.stream = root["stream"]?.bool ?? false
        self.maxTokens = completionTokens ?? maxTokens
        self.usesCompletionTokensField = completionTokens != nil
        self.promptBound = body.count
        self.messages = texts
    }

    /// The body sent upstream: the provider's name of the model, the completion bound the
    /// reservation was made for (so the provider cannot bill beyond it), and, when
    /// streaming, a request for the final usage chunk that settles the call.
    public func upstreamBody(model upstreamModel: String, maxTokens bound: Int) -> [UInt8] {
        let at = root.location
        var members = root.members ?? []
        func set(_ key: String, _ value: Node.Value) {
            let node = Node(value, at: at)
            if let index = members.firstIndex(where: { $0.key == key }) {
                members[index].value = node
            } else {
                members.append(Node.Member(key: key, keyLocation: at, value: node))
            }
        }
        set("model", .string(upstreamModel))
        set(usesCompletionTokensField ? "max_completion_tokens" : "max_tokens", .number(Number(integer: bound)))
        if stream {
            var options = root["stream_options"]?.members ?? []
            options.removeAll { $0.key == "include_usage" }
            options.append(Node.Member(key: "include_usage", keyLocation: at, value: Node(.bool(true), at: at)))
            set("stream_options", .object(options))
        }
        return Array(CanonicalJSON.encode(Node(.object(members), at: at)).utf8)
    }
}

/// Tokens a call used, as the provider reports them.
public struct TokenUsage: Sendable, Hashable {
    public var prompt: Int
    public var completion: Int

    /// Each count is held in 0...`Bounds.tokens`: providers report them, and one that
    /// says `-1` or `1e30` must not trap the gateway, nor credit a budget.
    public init(prompt: Int, completion: Int) {
        self.prompt = min(max(prompt, 0), Bounds.tokens)
        self.completion = min(max(completion, 0), Bounds.tokens)
    }

    public var total: Int { prompt + completion }

    /// The `usage` object of a completion or of a stream's last chunk; nil when there is
    /// none (`"usage": null` in the other chunks).
    public init?(json: Node) {
        guard let usage = json["usage"], let prompt = usage["prompt_tokens"]?.number?.integer,
            let completion = usage["completion_tokens"]?.number?.integer
        else { return nil }
        self.init(prompt: prompt, completion: completion)
    }

    public init?(body: [UInt8]) {
        guard let json = try? JSONParser.parse(bytes: body, file: "<response>") else { return nil }
        self.init(json: json)
    }
}

/// Splits a server-sent event stream into its `data:` payloads as bytes arrive, for
/// the usage chunk a stream ends with.
public struct ServerSentEvents: Sendable {
    private var pending: [UInt8] = []

    public init() {}

    /// The payloads of the lines completed by `bytes`.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [[UInt8]] {
        pending.append(contentsOf: bytes)
        var payloads: [[UInt8]] = []
        var start = 0
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            var line = pending[start..<newline]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            if line.starts(with: Self.prefix) {
                var payload = line.dropFirst(Self.prefix.count)
                if payload.first == UInt8(ascii: " ") { payload = payload.dropFirst() }
                payloads.append(Array(payload))
            }
            start = newline + 1
        }
        pending.removeFirst(start)
        return payloads
    }

    private static let prefix = Array("data:".utf8)
}
