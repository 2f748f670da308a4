import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// A real OpenAI-compatible server on loopback, for the gateway to forward to. It
/// records every request it gets, and answers as told: a completion with a fixed usage,
/// a stream ending with a usage chunk, an error status, or nothing for a while.
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
        var authorization: String?
        var body: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(raw))) as? [String: Any] ?? [:] }
        var raw: [UInt8]
    }

    static let usage = (prompt: 17, completion: 9)

    let behaviour = Mutex(Behaviour.answer)
    let received = Mutex<[Received]>([])
    private(set) nonisolated(unsafe) var url = ""
    private nonisolated(unsafe) var task: Task<Void, any Error>?

    func start() async throws {
        let router = Router()
        router.post("/v1/chat/completions") { [self] request, _ in
            var request = request
            let body = try await request.collectBody(upTo: 1 << 20)
            let received = Received(authorization: request.headers[.authorization], raw: Array(body.readableBytesView))
            self.received.withLock { $0.append(received) }
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
        let (urls, continuation) = AsyncStream<String>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
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
}
