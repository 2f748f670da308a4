import Foundation
import Synchronization
import Testing

/// A provider that echoes its key, in an error or a success, plainly or JSON-escaped,
/// whole or streamed in small chunks, hands the agent nothing: the gateway masks every
/// body the agent receives.
@Suite(.serialized) struct MaskingServerTests {
    static let key = GatewayServerTests.providerKey

    /// The key as an upstream may write it inside a JSON string.
    static let forms: [String] = {
        func escaped(_ s: Unicode.Scalar, upper: Bool) -> String {
            let hex = String(s.value, radix: 16, uppercase: upper)
            return "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        }
        let scalars = Array(key.unicodeScalars)
        return [
            key, key.split(separator: "-").joined(separator: "\\u002d"), key.split(separator: "-").joined(separator: "\\u002D"),
            scalars.map { escaped($0, upper: false) }.joined(), scalars.map { escaped($0, upper: true) }.joined(),
            scalars.enumerated().map { $0.offset % 2 == 0 ? escaped($0.element, upper: $0.offset % 4 == 0) : String($0.element) }.joined(),
        ]
    }()

    @Test(arguments: [200, 401, 429, 500])
    func aProviderEchoingItsKeyInABodyIsMasked(status: Int) async throws {
        let h = try GatewayServerTests.Harness()
        try await h.start()
        for form in Self.forms {
            let body =
                #"{"error":{"message":"bad key \#(form)","type":"x"},"id":"up","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"key=\#(form)"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#
            h.upstream.behaviour.withLock { $0 = .echo(status: status, contentType: "application/json", body: { _ in [body] }) }
            let answer = try await h.post(GatewayServerTests.chat())
            #expect(!Self.decodedStrings(answer.body).contains { $0.contains(Self.key) }, "\(status) \(form): \(answer.body)")
            #expect(!answer.body.contains(Self.key) && answer.body.contains("(sensitive)"), "\(status) \(form): \(answer.body)")
        }
        await h.stop()
    }

    @Test func aStreamEchoingItsKeyInSmallChunksIsMasked() async throws {
        let h = try GatewayServerTests.Harness()
        try await h.start()
        for form in Self.forms {
            let event =
                #"data: {"id":"up","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"\#(form)"}}]}"# + "\n\n"
            let all = event + "data: [DONE]\n\n"
            // Three bytes a chunk: every escape is cut somewhere.
            let chunks = stride(from: 0, to: all.utf8.count, by: 3).map { start in
                String(decoding: Array(all.utf8)[start..<min(all.utf8.count, start + 3)], as: UTF8.self)
            }
            h.upstream.behaviour.withLock { $0 = .echo(status: 200, contentType: "text/event-stream", body: { _ in chunks }) }
            let answer = try await h.post(GatewayServerTests.chat(stream: true))
            #expect(answer.status == 200)
            let payload = answer.body.split(separator: "\n").first { $0.hasPrefix("data: {") }.map { String($0.dropFirst(6)) } ?? ""
            #expect(!Self.decodedStrings(payload).contains { $0.contains(Self.key) }, "\(form): \(answer.body)")
            #expect(answer.body.contains("(sensitive)"), "\(form): \(answer.body)")
        }
        await h.stop()
    }

    /// Every string in a JSON text, decoded, as the agent's parser sees them.
    static func decodedStrings(_ text: String) -> [String] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) else { return [text] }
        var strings: [String] = []
        func walk(_ value: Any) {
            if let s = value as? String { strings.append(s) }
            if let a = value as? [Any] { a.forEach(walk) }
            if let d = value as? [String: Any] {
                for (k, v) in d {
                    strings.append(k)
                    walk(v)
                }
            }
        }
        walk(object)
        return strings
    }
}
