import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTPTypes
import OrlTestSupport
import Synchronization

/// A real OpenAI- and Anthropic-compatible server on loopback, for the gateway to forward
/// to. It records every request it gets, and answers as told: a reply with a fixed usage
/// (chat completions, Responses, Messages, embeddings; plain or streamed, with the usage
/// events of each API), an error status, or nothing for a while.
final class FakeUpstream: Sendable {
    enum Behaviour: Sendable {
        case answer
        case fail(status: Int)
        case stall(seconds: Int)
        /// Answers `status` with the chunks `body` makes of the key it was sent (an
        /// upstream that echoes its credential).
        case echo(status: Int, contentType: String, body: @Sendable (_ key: String) -> [String])
    }

    struct Received: Sendable {
        var path: String = "/v1/chat/completions"
        var authorization: String?
        var apiKey: String?
        var anthropicVersion: String?
        var traceparent: String?
        var body: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(raw))) as? [String: Any] ?? [:] }
        var raw: [UInt8]
    }

    static let usage = (prompt: 17, completion: 9)

    let behaviour = Mutex(Behaviour.answer)
    let received = Mutex<[Received]>([])
    private(set) nonisolated(unsafe) var url = ""
    private nonisolated(unsafe) var task: Task<Void, any Error>?

    /// The connections the server has closed so far (whoever closed them first).
    let closes = Tally()
    /// The chat completions' requests recorded so far.
    private let requests = Tally()

    /// Returns once `count` chat completions' requests have come in all.
    func waitForRequests(_ count: Int) async { await requests.wait(atLeast: count) }

    /// A connection closed.
    fileprivate func closed() { closes.add() }

    /// Returns once the server has closed `count` connections in all.
    func waitForCloses(_ count: Int) async { await closes.wait(atLeast: count) }

    /// `idleTimeout`: how long a kept-alive connection may sit idle before the server
    /// closes it (nil: Hummingbird's default). `closeReused`: a connection is closed,
    /// unanswered, when a second request comes on it, as a server does that closes an
    /// idle connection just as the client sends on it again.
    func start(idleTimeout: TimeAmount? = nil, closeReused: Bool = false) async throws {
        let router = Router()
        router.post("/v1/chat/completions") { [self] request, _ in
            var request = request
            let body = try await request.collectBody(upTo: 1 << 20)
            let received = Received(
                authorization: request.headers[.authorization], traceparent: request.headers[HTTPField.Name("traceparent")!],
                raw: Array(body.readableBytesView))
            self.received.withLock { $0.append(received) }
            self.requests.add()
            switch behaviour.withLock({ $0 }) {
            case .fail(let status):
                return Response(
                    status: .init(code: status), headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"upstream is unwell","type":"server_error"}}"#)))
            case .echo(let status, let contentType, let body):
                let key = String((request.headers[.authorization] ?? "").dropFirst("Bearer ".count))
                return Response(
                    status: .init(code: status), headers: [.contentType: contentType],
                    body: ResponseBody(contentsOf: body(key).map { ByteBuffer(string: $0) }))
            case .stall(let seconds):
                try await Task.sleep(for: .seconds(seconds))
                return Response(status: .ok)
            case .answer:
                break
            }
            let model = received.body["model"] as? String ?? "?"
            let usage =
                #"{"prompt_tokens":\#(Self.usage.prompt),"completion_tokens":\#(Self.usage.completion),"total_tokens":\#(Self.usage.prompt + Self.usage.completion)}"#
            if received.body["stream"] as? Bool == true {
                let words = ["Hello", " from", " upstream"]
                var events = words.map { word in
                    #"data: {"id":"up-1","object":"chat.completion.chunk","model":"\#(model)","choices":[{"index":0,"delta":{"content":"\#(word)"},"finish_reason":null}],"usage":null}"#
                        + "\n\n"
                }
                let options = received.body["stream_options"] as? [String: Any]
                if options?["include_usage"] as? Bool == true {
                    events.append(
                        #"data: {"id":"up-1","object":"chat.completion.chunk","model":"\#(model)","choices":[],"usage":\#(usage)}"# + "\n\n"
                    )
                }
                events.append("data: [DONE]\n\n")
                return Response(
                    status: .ok, headers: [.contentType: "text/event-stream"],
                    body: ResponseBody(contentsOf: events.map { ByteBuffer(string: $0) }))
            }
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(
                    byteBuffer: ByteBuffer(
                        string:
                            #"{"id":"up-1","object":"chat.completion","created":1,"model":"\#(model)","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from upstream"},"finish_reason":"stop"}],"usage":\#(usage)}"#
                    )))
        }
        for path in ["/v1/responses", "/v1/messages", "/v1/embeddings"] {
            router.post(RouterPath(path)) { [self] request, _ in
                var request = request
                let body = try await request.collectBody(upTo: 1 << 20)
                let received = Received(
                    path: path, authorization: request.headers[.authorization],
                    apiKey: request.headers[HTTPField.Name("x-api-key")!],
                    anthropicVersion: request.headers[HTTPField.Name("anthropic-version")!], raw: Array(body.readableBytesView))
                self.received.withLock { $0.append(received) }
                switch behaviour.withLock({ $0 }) {
                case .fail(let status):
                    return Response(
                        status: .init(code: status), headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"upstream is unwell","type":"server_error"}}"#)))
                case .echo(let status, let contentType, let body):
                    let key = received.apiKey ?? String((received.authorization ?? "").dropFirst("Bearer ".count))
                    return Response(
                        status: .init(code: status), headers: [.contentType: contentType],
                        body: ResponseBody(contentsOf: body(key).map { ByteBuffer(string: $0) }))
                case .stall(let seconds):
                    try await Task.sleep(for: .seconds(seconds))
                    return Response(status: .ok)
                case .answer:
                    break
                }
                return Self.answer(path: path, received.body)
            }
        }
        let (urls, continuation) = AsyncStream<String>.makeStream()
        let app = Application(
            router: router,
            server: .http1(
                configuration: .init(
                    additionalChannelHandlers: [ClosingHandler(upstream: self, closeReused: closeReused)], idleTimeout: idleTimeout)),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield("http://127.0.0.1:\(channel.localAddress?.port ?? 0)/v1") })
        task = Task { try await app.run() }
        for await url in urls {
            self.url = url
            return
        }
    }

    func stop() async {
        task?.cancel()
        _ = await task?.result
    }

    /// The reply of the Responses, Messages or embeddings API, with `usage`.
    static func answer(path: String, _ body: [String: Any]) -> Response {
        let model = body["model"] as? String ?? "?"
        let (prompt, completion) = usage
        let words = ["Hello", " from", " upstream"]
        func json(_ text: String) -> Response {
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        func stream(_ events: [(String, String)]) -> Response {
            Response(
                status: .ok, headers: [.contentType: "text/event-stream"],
                body: ResponseBody(contentsOf: events.map { ByteBuffer(string: "event: \($0.0)\ndata: \($0.1)\n\n") }))
        }
        let streamed = body["stream"] as? Bool == true
        switch path {
        case "/v1/embeddings":
            let count = (body["input"] as? [Any])?.count ?? 1
            let data = (0..<count).map { #"{"object":"embedding","index":\#($0),"embedding":[0.6,0.8]}"# }.joined(separator: ",")
            return json(
                #"{"object":"list","data":[\#(data)],"model":"\#(model)","usage":{"prompt_tokens":\#(prompt),"total_tokens":\#(prompt)}}"#)
        case "/v1/messages":
            let message = { (content: String, output: Int, stop: String) in
                #"{"id":"msg_up1","type":"message","role":"assistant","model":"\#(model)","content":[\#(content)],"stop_reason":\#(stop),"stop_sequence":null,"usage":{"input_tokens":\#(prompt),"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":\#(output)}}"#
            }
            guard streamed else { return json(message(#"{"type":"text","text":"Hello from upstream"}"#, completion, #""end_turn""#)) }
            var events = [
                ("message_start", #"{"type":"message_start","message":\#(message("", 1, "null"))}"#),
                ("content_block_start", #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
                ("ping", #"{"type":"ping"}"#),
            ]
            events += words.map {
                ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\#($0)"}}"#)
            }
            events += [
                ("content_block_stop", #"{"type":"content_block_stop","index":0}"#),
                (
                    "message_delta",
                    #"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":\#(completion)}}"#
                ),
                ("message_stop", #"{"type":"message_stop"}"#),
            ]
            return stream(events)
        default:
            let response = { (status: String, output: String, usage: String) in
                #"{"id":"resp_up1","object":"response","created_at":1,"status":"\#(status)","error":null,"incomplete_details":null,"instructions":null,"model":"\#(model)","output":[\#(output)],"parallel_tool_calls":true,"tool_choice":"auto","tools":[],"usage":\#(usage)}"#
            }
            let item =
                #"{"id":"msg_up1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello from upstream","annotations":[]}]}"#
            let usage =
                #"{"input_tokens":\#(prompt),"input_tokens_details":{"cached_tokens":0},"output_tokens":\#(completion),"output_tokens_details":{"reasoning_tokens":0},"total_tokens":\#(prompt + completion)}"#
            guard streamed else { return json(response("completed", item, usage)) }
            var sequence = 0
            func event(_ type: String, _ rest: String) -> (String, String) {
                defer { sequence += 1 }
                return (type, #"{"type":"\#(type)","sequence_number":\#(sequence),\#(rest)}"#)
            }
            var events = [event("response.created", #""response":\#(response("in_progress", "", "null"))"#)]
            events += words.map {
                event(
                    "response.output_text.delta", #""item_id":"msg_up1","output_index":0,"content_index":0,"delta":"\#($0)","logprobs":[]"#)
            }
            events.append(event("response.completed", #""response":\#(response("completed", item, usage))"#))
            return stream(events)
        }
    }
}

/// Tells the fake upstream when its connection closes, and (with `closeReused`) closes
/// it, unanswered, when a second request comes on it.
private final class ClosingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private let upstream: FakeUpstream
    private let closeReused: Bool
    private var requests = 0
    private var refusing = false

    init(upstream: FakeUpstream, closeReused: Bool) {
        self.upstream = upstream
        self.closeReused = closeReused
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            requests += 1
            if closeReused && requests > 1 {
                refusing = true
                context.close(promise: nil)
            }
        }
        if !refusing { context.fireChannelRead(data) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream.closed()
        context.fireChannelInactive()
    }
}
