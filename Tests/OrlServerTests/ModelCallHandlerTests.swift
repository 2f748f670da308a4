import Foundation
import Glibc
import OrlCore
import Synchronization
import Testing

@testable import OrlServer

/// The model calls served from the connection's pipeline (`ModelCallHandler`) beside the
/// routes Hummingbird serves, on one connection.
@Suite(.serialized) struct ModelCallHandlerTests {
    static func request(_ method: String, _ path: String, body: String = "", close: Bool = false) -> String {
        "\(method) \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(GatewayServerTests.agentToken)\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" + (close ? "Connection: close\r\n" : "")
            + "\r\n" + body
    }

    /// Sends `text` at once on a new connection (then closes its writing side when
    /// `halfClose`) and reads until the server closes it.
    static func exchange(_ url: String, _ text: String, halfClose: Bool = false) throws -> String {
        let port = UInt16(url.split(separator: ":").last!)!
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw POSIXError(.EPIPE) }
            sent += n
        }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            received += chunk[..<n]
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Splits answers by their Content-Length: (status line, lowercased headers, body).
    static func answers(_ text: String) -> [(status: String, headers: [String: String], body: String)] {
        var rest = Substring(text)
        var found: [(String, [String: String], String)] = []
        while let end = rest.range(of: "\r\n\r\n") {
            let lines = rest[..<end.lowerBound].components(separatedBy: "\r\n")
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                let parts = line.split(separator: ":", maxSplits: 1)
                headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces)
            }
            let length = Int(headers["content-length"] ?? "0") ?? 0
            let body = rest[end.upperBound...].utf8.prefix(length)
            found.append((lines[0], headers, String(decoding: body, as: UTF8.self)))
            rest = rest[rest.utf8.index(end.upperBound, offsetBy: body.count)...]
        }
        return found
    }

    @Test(.timeLimit(.minutes(1))) func pipelinedCallsAndOtherRoutesAreAnsweredInOrder() async throws {
        let h = try GatewayServerTests.Harness()
        try await h.start()
        defer { Task { await h.stop() } }
        let chat = GatewayServerTests.chat(model: "sim/m")
        // Served from the pipeline; then one for Hummingbird that comes while it is answered;
        // then a call that comes while that one waits (handed on too); a forwarded call; and
        // one that closes the connection.
        let text =
            Self.request("POST", "/v1/chat/completions", body: chat) + Self.request("GET", "/healthz")
            + Self.request("POST", "/v1/chat/completions?x=1", body: chat)
            + Self.request("POST", "/v1/chat/completions", body: GatewayServerTests.chat())
            + Self.request("POST", "/v1/chat/completions", body: chat, close: true)
        let url = h.url
        let answers = Self.answers(try await Task.detached { try Self.exchange(url, text) }.value)
        #expect(answers.map(\.status) == Array(repeating: "HTTP/1.1 200 OK", count: 5))
        guard answers.count == 5 else { return }
        #expect(answers[1].body == "ok\n")
        for index in [0, 2, 3, 4] {
            #expect(GatewayServerTests.json(answers[index].body)["object"] as? String == "chat.completion")
            #expect(answers[index].headers["content-type"] == "application/json")
            #expect(answers[index].headers["x-request-id"] != nil)
        }
        #expect(Set(answers.compactMap { $0.headers["x-request-id"] }).count == 4)
        #expect(
            (GatewayServerTests.json(answers[3].body)["usage"] as? [String: Any])?["completion_tokens"] as? Int
                == FakeUpstream.usage.completion)
        // Hummingbird's Date header, in the same form on both paths.
        let date = #/^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/#
        for answer in answers { #expect(answer.headers["date"].map { $0.wholeMatch(of: date) != nil } == true, "\(answer.headers)") }
        let rows = try await h.ledger(count: 4)
        #expect(rows.count == 4 && rows.allSatisfy { $0.outcome == "ok" })
    }

    /// The socket is read while a call is answered, so the agent's end of its sending (a
    /// half-close) can come before the answer has gone out: the answer still goes out.
    @Test(.timeLimit(.minutes(1))) func aCallWhoseAgentStopsSendingIsStillAnswered() async throws {
        let h = try GatewayServerTests.Harness()
        try await h.start()
        defer { Task { await h.stop() } }
        let url = h.url
        for body in [GatewayServerTests.chat(), GatewayServerTests.chat(model: "sim/m")] {
            let text = Self.request("POST", "/v1/chat/completions", body: body)
            let answers = Self.answers(try await Task.detached { try Self.exchange(url, text, halfClose: true) }.value)
            #expect(answers.map(\.status) == ["HTTP/1.1 200 OK"])
            #expect(GatewayServerTests.json(answers.first?.body ?? "")["object"] as? String == "chat.completion")
        }
        let rows = try await h.ledger(count: 2)
        #expect(rows.count == 2 && rows.allSatisfy { $0.outcome == "ok" })
    }

    @Test func theDateIsTheHTTPForm() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(1_795_302_000) == "Sat, 21 Nov 2026 23:00:00 GMT")
    }

    @Test func aBodyPastTheLimitIsRefusedAsBefore() async throws {
        let h = try GatewayServerTests.Harness()
        try await h.start()
        defer { Task { await h.stop() } }
        let limit = h.gateway.configuration.maxRequestBytes
        let big = #"{"model":"sim/m","messages":[{"role":"user","content":""# + String(repeating: "a", count: limit) + #""}]}"#
        let refused = try await h.post(big)
        #expect(refused.status == 413)
        #expect(refused.body.contains("request_too_large"))
        let after = try await h.post(GatewayServerTests.chat(model: "sim/m"))
        #expect(after.status == 200)
    }

    /// The server stops (the daemon's shutdown cancels it) while a forwarded call waits for
    /// its provider: it stops only once the call has ended, answered and in the ledger's
    /// pending rows, so the ledger's last flush after it writes the call (as it did when
    /// Hummingbird's router served these calls).
    @Test(.timeLimit(.minutes(1))) func aCallInProgressWhenTheServerStopsIsAnsweredBeforeItStops() async throws {
        let h = try GatewayServerTests.Harness()
        try await h.upstream.start()
        defer { Task { await h.stop() } }
        // Answered by the gateway's timeout: the provider never does.
        h.configure(dailyUSD: 100, timeout: "2s")
        h.upstream.behaviour.withLock { $0 = .stall(seconds: 30) }
        let (url, server) = try await APIServer(gateway: h.gateway, port: 0, runsBackgroundWork: false).start()
        let text = Self.request("POST", "/v1/chat/completions", body: GatewayServerTests.chat())
        // The blocking socket on a thread of its own, not the pool's.
        let answer = Task {
            await withCheckedContinuation { (done: CheckedContinuation<String, Never>) in
                Thread.detachNewThread { done.resume(returning: (try? Self.exchange(url, text)) ?? "") }
            }
        }
        await h.upstream.waitForRequests(1)
        server.cancel()
        _ = await server.result
        h.gateway.flush()
        let rows = try h.ledger()
        #expect(rows.map(\.outcome) == ["upstream_timeout"])
        let answers = Self.answers(await answer.value)
        #expect(answers.map(\.status) == ["HTTP/1.1 504 Gateway Timeout"])
    }
}
