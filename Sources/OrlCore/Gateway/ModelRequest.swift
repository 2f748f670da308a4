public import OrlJSON

/// The model APIs the gateway serves: four wire formats of one metered call (reserve
/// the worst case, forward, settle on the reported usage).
public enum ModelAPI: String, Sendable, Hashable, CaseIterable {
    case chatCompletions = "chat/completions"
    case responses
    case messages
    case embeddings

    /// The path after the base URL (`…/v1`), on orl as at the provider.
    public var path: String { "/" + rawValue }

    /// What users call it in errors and docs.
    public var title: String {
        switch self {
        case .chatCompletions: "OpenAI Chat Completions"
        case .responses: "OpenAI Responses"
        case .messages: "Anthropic Messages"
        case .embeddings: "OpenAI Embeddings"
        }
    }

    /// Whether a provider of this style serves the API. orl forwards a request in the
    /// format it came in and translates none: a translation would lose what one format
    /// has and the other lacks (tool-call ids, cache control, reasoning items).
    public func isSpoken(by style: ModelProviderSpec.APIStyle) -> Bool {
        switch style {
        case .simulated: true
        case .openai: self != .messages
        case .anthropic: self == .messages
        }
    }

    /// The APIs of a provider style, for the error that names what to use instead.
    public static func spoken(by style: ModelProviderSpec.APIStyle) -> [ModelAPI] { allCases.filter { $0.isSpoken(by: style) } }

    /// Embeddings have no output tokens.
    public var hasOutput: Bool { self != .embeddings }
}

/// What the gateway reads of a model API request body, and the body it forwards in its
/// place: enough to route, bound and meter the call; everything else passes through.
public struct ModelRequest: Sendable {
    public let api: ModelAPI
    /// As the agent wrote it: `provider/model`, or a model name alone.
    public let model: String
    public let stream: Bool
    /// The agent's bound on the output (`max_completion_tokens`/`max_tokens`,
    /// `max_output_tokens`, Anthropic's `max_tokens`); nil for embeddings.
    public let maxTokens: Int?
    /// An upper bound of the input's tokens: the body's size in bytes, plus a fixed
    /// worst case per image. Every tokenizer in use spends at least one byte per token of
    /// text, and the body holds all of the text input (messages, instructions, tools and
    /// their JSON), so the bound holds without a tokenizer. Images are the exception (a
    /// small PNG can be a large picture), hence their allowance; inputs whose tokens the
    /// body does not bound (files, provider-side state and tools) are refused.
    public let promptBound: Int
    /// The text of the input, in order (for embeddings, one entry per input), for the
    /// simulated provider and for estimates when a provider reports no usage.
    public let messages: [(role: String, content: String)]
    /// `dimensions` of an embeddings request.
    public let dimensions: Int?
    /// `encoding_format` of an embeddings request is `base64` (the OpenAI SDK's default).
    public let base64Embeddings: Bool
    private let root: Node
    private let usesCompletionTokensField: Bool

    /// Worst case tokens of one image: the largest any current model bills for an
    /// image after resizing (OpenAI's patch-based models reach about 3,800; Anthropic's
    /// about 1,600), with a margin.
    public static let imageTokenBound = 10_000

    /// A chat completions request (the API orl served first).
    public init(body: [UInt8]) throws(GatewayError) { try self.init(api: .chatCompletions, body: body) }

    public init(api: ModelAPI, body: [UInt8]) throws(GatewayError) {
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
        func count(_ key: String) throws(GatewayError) -> Int? {
            guard let node = root[key], !node.isNull else { return nil }
            guard let value = node.number?.integer, value >= 1 else {
                throw .invalidRequest("\(key) must be an integer of 1 or more", param: key)
            }
            return value
        }
        func refuse(_ key: String, _ why: String) throws(GatewayError) {
            if let node = root[key], !node.isNull, node.bool != false {
                throw .invalidRequest("orl does not forward \(key): \(why)", param: key)
            }
        }
        var texts: [(role: String, content: String)] = []
        var scan = ContentScan()
        var maxTokens: Int?
        var usesCompletionTokensField = false
        switch api {
        case .chatCompletions:
            guard let messages = root["messages"]?.elements, !messages.isEmpty else {
                throw .invalidRequest("messages must be a non-empty array", param: "messages")
            }
            for message in messages {
                texts.append((message["role"]?.string ?? "", try scan.text(of: message["content"])))
            }
            try refuse("web_search_options", "the provider's web search adds input tokens the request does not bound")
            try Self.checkTools(root["tools"], allowed: ["function", "custom"], api: api)
            let completionTokens = try count("max_completion_tokens")
            let maxTokensField = try count("max_tokens")
            maxTokens = completionTokens ?? maxTokensField
            usesCompletionTokensField = completionTokens != nil
        case .responses:
            if let instructions = root["instructions"]?.string { texts.append(("system", instructions)) }
            if let input = root["input"]?.string {
                texts.append(("user", input))
            } else if let items = root["input"]?.elements, !items.isEmpty {
                for item in items {
                    if let text = item.string {
                        texts.append(("user", text))
                        continue
                    }
                    let content = item["content"] ?? item["output"]
                    texts.append((item["role"]?.string ?? item["type"]?.string ?? "", try scan.text(of: content)))
                }
            } else {
                throw .invalidRequest("input must be a string or a non-empty array", param: "input")
            }
            let unbounded = "orl bounds a call's input by its request, and this input lives at the provider; send the conversation in input"
            try refuse("previous_response_id", unbounded)
            try refuse("conversation", unbounded)
            try refuse("prompt", "a stored prompt's tokens are not in the request, so orl cannot bound them; send its text as instructions")
            try refuse("background", "a background response settles after the call ends; call it in the foreground")
            try Self.checkTools(root["tools"], allowed: ["function", "custom"], api: api)
            maxTokens = try count("max_output_tokens")
        case .messages:
            guard let messages = root["messages"]?.elements, !messages.isEmpty else {
                throw .invalidRequest("messages must be a non-empty array", param: "messages")
            }
            if let system = root["system"], !system.isNull { texts.append(("system", try scan.text(of: system))) }
            for message in messages {
                texts.append((message["role"]?.string ?? "", try scan.text(of: message["content"])))
            }
            try refuse("mcp_servers", "the provider would call MCP servers whose results orl cannot bound; serve them through orl's /mcp")
            try refuse("container", "code execution runs at the provider, whose output orl cannot bound")
            try Self.checkTools(root["tools"], allowed: ["custom"], api: api)
            maxTokens = try count("max_tokens")
        case .embeddings:
            let input = root["input"]
            if let text = input?.string {
                texts.append(("input", text))
            } else if let items = input?.elements, !items.isEmpty {
                // Strings, or token arrays (`[1,2]` or `[[1,2],[3]]`): a token is at least
                // a digit and a comma, so the body's bytes bound these too.
                if items.allSatisfy({ $0.number != nil }) {
                    texts.append(("input", CanonicalJSON.encode(input!)))
                } else {
                    for item in items {
                        guard let text = item.string ?? (item.elements.map { _ in CanonicalJSON.encode(item) }) else {
                            throw .invalidRequest("input must be a string, an array of strings or of token arrays", param: "input")
                        }
                        texts.append(("input", text))
                    }
                }
            } else {
                throw .invalidRequest("input must be a non-empty string or array", param: "input")
            }
        }
        self.api = api
        self.root = root
        self.model = model
        self.stream = api == .embeddings ? false : root["stream"]?.bool ?? false
        self.maxTokens = maxTokens
        self.usesCompletionTokensField = usesCompletionTokensField
        self.promptBound = body.count + scan.images * Self.imageTokenBound
        self.messages = texts
        self.dimensions = api == .embeddings ? try count("dimensions") : nil
        self.base64Embeddings = root["encoding_format"]?.string == "base64"
    }

    /// Tools that run at the provider (web search, file search, code execution, the
    /// provider's MCP connector) add input the request does not hold, and built-in client
    /// tools (computer use, bash) add a hidden system prompt: orl cannot bound either.
    private static func checkTools(_ tools: Node?, allowed: Set<String>, api: ModelAPI) throws(GatewayError) {
        for tool in tools?.elements ?? [] {
            guard let type = tool["type"]?.string, !allowed.contains(type) else { continue }
            throw .invalidRequest(
                "orl does not forward \(api.title) tools of type \"\(type)\": their tokens are not in the request, so orl cannot bound the call's cost; use \(allowed.sorted().map { "\"\($0)\"" }.joined(separator: " or ")) tools (an orl Tool or MCP server for the rest)",
                param: "tools")
        }
    }

    /// The body sent upstream: the provider's name of the model, the output bound the
    /// reservation was made for (so that a compliant provider cannot bill beyond it),
    /// and, when streaming chat completions, a request for the final usage chunk.
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
        switch api {
        case .chatCompletions:
            set(usesCompletionTokensField ? "max_completion_tokens" : "max_tokens", .number(Number(integer: bound)))
            if stream {
                var options = root["stream_options"]?.members ?? []
                options.removeAll { $0.key == "include_usage" }
                options.append(Node.Member(key: "include_usage", keyLocation: at, value: Node(.bool(true), at: at)))
                set("stream_options", .object(options))
            }
        case .responses: set("max_output_tokens", .number(Number(integer: bound)))
        case .messages: set("max_tokens", .number(Number(integer: bound)))
        case .embeddings: break
        }
        return Array(CanonicalJSON.encode(Node(.object(members), at: at)).utf8)
    }
}

/// Reads the text of content (a string, or parts of any of the APIs), counting images
/// and refusing files, whose tokens the bytes of the request do not bound.
private struct ContentScan {
    var images = 0

    mutating func text(of content: Node?) throws(GatewayError) -> String {
        guard let content, !content.isNull else { return "" }
        if let text = content.string { return text }
        var texts: [String] = []
        for part in content.elements ?? [content] {
            if let text = part.string ?? part["text"]?.string {
                texts.append(text)
                continue
            }
            switch part["type"]?.string ?? "" {
            case "image_url", "input_image", "image": images += 1
            case "file", "input_file":
                throw Self.fileRefusal
            case "document" where !["text", "content"].contains(part["source"]?["type"]?.string ?? ""):
                throw Self.fileRefusal
            case "tool_result", "function_call_output":
                texts.append(try text(of: part["content"] ?? part["output"]))
            default: break
            }
        }
        return texts.joined(separator: "\n")
    }

    static let fileRefusal = GatewayError.invalidRequest(
        "orl cannot bound the tokens of a file input (a PDF's pages count as text and images): send its text instead",
        param: "messages")
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

    /// The usage of a response body or of a stream's event, in any of the APIs' shapes;
    /// nil when there is none (`"usage": null` in the chunks before the last).
    public init?(json: Node) {
        guard let usage = UsageReport(json: json)?.usage else { return nil }
        self = usage
    }

    public init?(body: [UInt8]) {
        guard let json = try? JSONParser.parse(bytes: body, file: "<response>") else { return nil }
        self.init(json: json)
    }
}

/// Usage as the APIs report it, possibly in parts: OpenAI's `prompt_tokens` and
/// `completion_tokens`; the Responses API's `input_tokens` and `output_tokens` (in a
/// stream, under `response` of `response.completed`); Anthropic's `input_tokens` plus its
/// cache reads and writes, and `output_tokens` (in a stream, the input under `message`
/// of `message_start`, the output so far in each `message_delta`).
public struct UsageReport: Sendable, Hashable {
    public var prompt: Int?
    public var completion: Int?

    public init(prompt: Int? = nil, completion: Int? = nil) {
        self.prompt = prompt
        self.completion = completion
    }

    /// The top-level members of a body or event that `init(json:)` reads: the rest of a
    /// body need not be built (`JSONParser.parse(bytes:file:keeping:)`).
    public static let members: Set<String> = ["usage", "response", "message"]

    /// The report in a body or event; nil when it has none.
    public init?(json: Node) {
        guard
            let usage = [json["usage"], json["response"]?["usage"], json["message"]?["usage"]].lazy.compactMap({ $0 }).first(where: {
                $0.members != nil
            })
        else { return nil }
        func count(_ key: String) -> Int? { usage[key]?.number?.integer }
        let input = count("input_tokens").map { $0 + (count("cache_creation_input_tokens") ?? 0) + (count("cache_read_input_tokens") ?? 0) }
        self.init(prompt: count("prompt_tokens") ?? input, completion: count("completion_tokens") ?? count("output_tokens"))
        if prompt == nil && completion == nil { return nil }
    }

    /// A later report: what it says replaces what was said before (Anthropic's output
    /// count is cumulative).
    public mutating func merge(_ later: UsageReport) {
        prompt = later.prompt ?? prompt
        completion = later.completion ?? completion
    }

    /// The whole usage, once the input is known (embeddings report no output).
    public var usage: TokenUsage? { prompt.map { TokenUsage(prompt: $0, completion: completion ?? 0) } }
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
