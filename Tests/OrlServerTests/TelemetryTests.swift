import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import OrlCore
import OrlServer
import OrlStore
import Synchronization
import Testing

/// The gateway's metrics and spans in process: what a call adds to `/metrics`, who may
/// scrape it, and the `chat` span of a call that carries the agent's own traceparent
/// (exported over OTLP/HTTP to a receiver in the test, read with a protobuf reader).
@Suite(.serialized) struct TelemetryTests {
    /// An OTLP/HTTP endpoint keeping every export's body.
    final class Receiver: Sendable {
        let bodies = Mutex<[[UInt8]]>([])
        nonisolated(unsafe) var url = ""
        nonisolated(unsafe) var task: Task<Void, any Error>?

        func start() async throws {
            let router = Router()
            router.post("/v1/traces") { [self] request, _ in
                var request = request
                let body = try await request.collectBody(upTo: 1 << 22)
                guard request.headers[.contentType] == "application/x-protobuf" else { return Response(status: .unsupportedMediaType) }
                bodies.withLock { $0.append(Array(body.readableBytesView)) }
                return Response(status: .ok)
            }
            let (urls, continuation) = AsyncStream<String>.makeStream()
            let app = Application(
                router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                onServerRunning: { continuation.yield("http://127.0.0.1:\($0.localAddress?.port ?? 0)") })
            task = Task { try await app.run() }
            for await url in urls {
                self.url = url
                return
            }
        }

        /// Every span received, each as its fields (number → values).
        var spans: [Proto] {
            bodies.withLock { $0 }.flatMap { body in
                Proto(body)[1].flatMap { Proto($0)[2] }.flatMap { Proto($0)[2] }.map { Proto($0) }
            }
        }
    }

    /// A protobuf message read as its fields: each field number's length-delimited
    /// values (bytes), varints and fixed64s, enough to check what orl writes.
    struct Proto {
        var fields: [Int: [[UInt8]]] = [:]
        var numbers: [Int: [UInt64]] = [:]

        init(_ bytes: [UInt8]) {
            var index = 0
            func varint() -> UInt64 {
                var value: UInt64 = 0
                var shift: UInt64 = 0
                while index < bytes.count {
                    let byte = bytes[index]
                    index += 1
                    value |= UInt64(byte & 0x7f) << shift
                    if byte < 0x80 { break }
                    shift += 7
                }
                return value
            }
            while index < bytes.count {
                let tag = varint()
                let field = Int(tag >> 3)
                switch tag & 7 {
                case 0: numbers[field, default: []].append(varint())
                case 1:
                    var value: UInt64 = 0
                    for shift in 0..<8 { value |= UInt64(bytes[index + shift]) << (8 * UInt64(shift)) }
                    numbers[field, default: []].append(value)
                    index += 8
                case 2:
                    let length = Int(varint())
                    fields[field, default: []].append(Array(bytes[index..<index + length]))
                    index += length
                case 5:
                    var value: UInt64 = 0
                    for shift in 0..<4 { value |= UInt64(bytes[index + shift]) << (8 * UInt64(shift)) }
                    numbers[field, default: []].append(value)
                    index += 4
                default:
                    index = bytes.count
                }
            }
        }

        subscript(_ field: Int) -> [[UInt8]] { fields[field] ?? [] }
        func string(_ field: Int) -> String? { self[field].first.map { String(decoding: $0, as: UTF8.self) } }

        /// A span's attributes: string and int values by key.
        var attributes: [String: String] {
            var result: [String: String] = [:]
            for pair in self[9].map(Proto.init) {
                guard let key = pair.string(1), let value = pair[2].first.map(Proto.init) else { continue }
                result[key] = value.string(1) ?? value.numbers[3]?.first.map { String(Int64(bitPattern: $0)) }
            }
            return result
        }
    }

    @Test func aCallIsMeteredAndItsSpanContinuesTheAgentsTraceparent() async throws {
        let receiver = Receiver()
        try await receiver.start()
        defer { receiver.task?.cancel() }
        var configuration = try #require(
            try Tracer.Configuration.fromEnvironment([
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url + "/", "OTEL_SERVICE_NAME": "orl-test",
                "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=a%20b",
            ]))
        #expect(configuration.endpoint == receiver.url + "/v1/traces")
        #expect(configuration.headers.first?.0 == "x-tenant" && configuration.headers.first?.1 == "a b")
        configuration.interval = .milliseconds(20)
        let telemetry = Telemetry(metrics: Metrics(), tracer: Tracer(configuration: configuration))
        let h = try GatewayServerTests.Harness(telemetry: telemetry)
        try await h.start()
        let metricsServer = try await APIServer(gateway: h.gateway, port: 0, adminToken: "operator-token").start()
        defer {
            metricsServer.task.cancel()
            Task { await h.stop() }
        }

        // The agent's own trace: the gateway's span goes under its span, and the
        // provider is handed the gateway's span as its parent.
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        let traced = try await h.post(GatewayServerTests.chat(), headers: [("traceparent", incoming)])
        #expect(traced.status == 200)
        let upstream = try #require(h.upstream.received.withLock { $0.last?.traceparent })
        let forwarded = try #require(SpanContext(traceparent: upstream))
        #expect(SpanContext.hex(forwarded.traceID) == "0af7651916cd43dd8448eb211c80319c")
        #expect(SpanContext.hex(forwarded.spanID) != "b7ad6b7169203331")
        // Refused calls never reach a provider, and are counted by reason.
        #expect(try await h.post(GatewayServerTests.chat(model: "up/forbidden")).status == 403)
        #expect(try await h.post(GatewayServerTests.chat(), token: "not-a-token").status == 401)

        let metrics = try #require(telemetry.metrics)
        let labels = ["default", "a", "up/m"]
        #expect(metrics.value(Metrics.tokens, labels + ["input"]) == Double(FakeUpstream.usage.prompt))
        #expect(metrics.value(Metrics.tokens, labels + ["output"]) == Double(FakeUpstream.usage.completion))
        #expect(abs(metrics.value(Metrics.costUSD, labels) - GatewayServerTests.callUSD) < 1e-12)
        #expect(metrics.value(Metrics.refusals, ["default", "a", "model_not_allowed"]) == 1)
        #expect(metrics.value(Metrics.refusals, ["", "", "invalid_api_key"]) == 1)

        // /metrics on the API address needs the operator token.
        #expect(try await Self.get(metricsServer.url + "/metrics").status == 401)
        #expect(try await Self.get(metricsServer.url + "/metrics", token: GatewayServerTests.agentToken).status == 401)
        let scraped = try await Self.get(metricsServer.url + "/metrics", token: "operator-token")
        #expect(scraped.status == 200 && scraped.contentType == "text/plain; version=0.0.4; charset=utf-8")
        let bucket =
            #"gen_ai_client_token_usage_bucket{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="up/m",namespace="default",agent="a",gen_ai_token_type="input",le="64"} 1"#
        #expect(scraped.body.contains(bucket), "\(scraped.body)")
        #expect(scraped.body.contains(#"orl_refusals_total{namespace="default",agent="a",reason="model_not_allowed"} 1"#))
        #expect(scraped.body.contains(#"orl_budget_limit_usd{namespace="default",budget="#))

        // The chat span, exported.
        var spans: [Proto] = []
        #expect(
            await waitFor {
                spans = receiver.spans
                return !spans.isEmpty
            })
        let chat = try #require(spans.first)
        #expect(chat[1].first.map(SpanContext.hex) == "0af7651916cd43dd8448eb211c80319c")
        #expect(chat[2].first.map(SpanContext.hex) == SpanContext.hex(forwarded.spanID), "the span the provider was told of")
        #expect(chat[4].first.map(SpanContext.hex) == "b7ad6b7169203331", "the agent's span is the parent")
        #expect(chat.string(5) == "chat up/m")
        #expect(chat.numbers[6] == [3], "SPAN_KIND_CLIENT")
        let attributes = chat.attributes
        #expect(attributes["gen_ai.operation.name"] == "chat" && attributes["gen_ai.provider.name"] == "openai")
        #expect(attributes["gen_ai.request.model"] == "up/m" && attributes["gen_ai.response.model"] == "m")
        #expect(attributes["gen_ai.usage.input_tokens"] == String(FakeUpstream.usage.prompt))
        #expect(attributes["gen_ai.usage.output_tokens"] == String(FakeUpstream.usage.completion))
        let start = try #require(chat.numbers[7]?.first)
        let end = try #require(chat.numbers[8]?.first)
        #expect(start > 1_700_000_000_000_000_000 && end >= start)
        let export = Proto(try #require(receiver.bodies.withLock { $0.first }))
        let resource = Proto(try #require(export[1].first))
        let resourceMessage = Proto(try #require(resource[1].first))
        let service = Proto(try #require(resourceMessage[1].first))
        #expect(service.string(1) == "service.name")
        let serviceName = try #require(service[2].first)
        #expect(Proto(serviceName).string(1) == "orl-test")
    }

    @Test func traceparentsAreReadAsTheW3CSpecificationSays() {
        let valid = SpanContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        #expect(valid?.traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        #expect(SpanContext(traceparent: "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01") == nil, "uppercase")
        #expect(SpanContext(traceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01") == nil, "zero trace id")
        #expect(SpanContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01") == nil, "zero span id")
        #expect(SpanContext(traceparent: "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == nil, "version ff")
        #expect(SpanContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra") == nil)
        #expect(SpanContext(traceparent: "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra") != nil, "a later version")
        #expect(SpanContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01") == nil, "short")
        // A run's ids are the same wherever they are computed.
        let task = TaskID(run: RunID("0123456789abc")!, step: "draft", attempt: 2)
        #expect(SpanContext.attempt(task).traceID == SpanContext.workflow(run: "0123456789abc").traceID)
        #expect(SpanContext.attempt(task) != SpanContext.attempt(TaskID(run: task.run, step: "draft", attempt: 3)))
    }

    @Test func theTextFormatEscapesLabelsAndAccumulatesBuckets() {
        let metrics = Metrics()
        metrics.add(Metrics.toolCalls, ["ns", "a\"b\\c\nd", "t", "ok"], 2)
        metrics.observe(Metrics.toolDuration, ["ns", "t"], 0.007)
        metrics.observe(Metrics.toolDuration, ["ns", "t"], 0.3)
        metrics.observe(Metrics.toolDuration, ["ns", "t"], 1000)
        var text = ""
        metrics.render(into: &text)
        #expect(text.contains(#"orl_tool_calls_total{namespace="ns",agent="a\"b\\c\nd",tool="t",outcome="ok"} 2"#), "\(text)")
        #expect(text.contains(#"orl_tool_call_duration_seconds_bucket{namespace="ns",tool="t",le="0.005"} 0"#))
        #expect(text.contains(#"orl_tool_call_duration_seconds_bucket{namespace="ns",tool="t",le="0.01"} 1"#))
        #expect(text.contains(#"orl_tool_call_duration_seconds_bucket{namespace="ns",tool="t",le="0.5"} 2"#))
        #expect(text.contains(#"orl_tool_call_duration_seconds_bucket{namespace="ns",tool="t",le="60"} 2"#))
        #expect(text.contains(#"orl_tool_call_duration_seconds_bucket{namespace="ns",tool="t",le="+Inf"} 3"#))
        #expect(text.contains(#"orl_tool_call_duration_seconds_count{namespace="ns",tool="t"} 3"#))
        #expect(text.contains("# TYPE orl_tool_call_duration_seconds histogram"))
        #expect(!text.contains("gen_ai_client_token_usage"), "families without series are left out")
    }

    static func get(_ url: String, token: String? = nil) async throws -> (status: Int, body: String, contentType: String?) {
        var request = HTTPClientRequest(url: url)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let body = String(buffer: try await response.body.collect(upTo: 1 << 22))
        return (Int(response.status.code), body, response.headers.first(name: "content-type"))
    }

    func waitFor(seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}
