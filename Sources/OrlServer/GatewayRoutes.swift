import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import OrlCore
import OrlJSON
import Synchronization

extension Gateway {
    /// `GET /v1/models`: the models the calling agent may use, as `provider/model`, in
    /// the shape of the client's API: Anthropic's (its SDKs send `anthropic-version`, or
    /// only `x-api-key`) lists the models `/v1/messages` serves; OpenAI's the others.
    func models(_ request: Request) -> Response {
        let anthropic =
            request.headers[Self.anthropicVersionHeader] != nil
            || request.headers[.authorization] == nil && request.headers[Self.apiKeyHeader] != nil
        let api: ModelAPI = anthropic ? .messages : .chatCompletions
        let caller: CallerTable.Caller
        do {
            caller = try authenticate(request)
        } catch {
            return Self.error(error, api: api)
        }
        let routes = caller.routes.filter { route in
            anthropic ? ModelAPI.messages.isSpoken(by: route.spec.apiStyle) : route.spec.apiStyle != .anthropic
        }
        if anthropic {
            let list = JSONValue.object([
                (
                    "data",
                    .array(
                        routes.map { route in
                            .object([
                                ("type", .string("model")), ("id", .string(route.id)), ("display_name", .string(route.id)),
                                ("created_at", .string("1970-01-01T00:00:00Z")),
                            ])
                        })
                ),
                ("has_more", .bool(false)), ("first_id", routes.first.map { .string($0.id) } ?? .null),
                ("last_id", routes.last.map { .string($0.id) } ?? .null),
            ])
            return Self.json(.ok, list.compactRendered())
        }
        let list = JSONValue.object([
            ("object", .string("list")),
            (
                "data",
                .array(
                    routes.map { route in
                        .object([
                            ("id", .string(route.id)), ("object", .string("model")), ("created", .int(0)),
                            ("owned_by", .string(route.provider.name)),
                        ])
                    })
            ),
        ])
        return Self.json(.ok, list.compactRendered())
    }

    /// `POST /v1/chat/completions`, `/v1/responses`, `/v1/messages` and `/v1/embeddings`,
    /// plain or streamed: one metered call whatever the wire format. Authenticated, routed
    /// by policy (fail closed), reserved at its worst case, answered by the simulated
    /// provider or forwarded, then settled on the reported usage and written to the ledger.
    func serve(_ api: ModelAPI, _ request: Request) async -> Response {
        let started = ContinuousClock.now
        let now = clock()
        let requestID = nextRequestID()
        let caller: CallerTable.Caller
        let parsed: ModelRequest
        let route: CallerTable.Route
        let bound: Int
        var agent: ResourceID?
        do throws(GatewayError) {
            caller = try authenticate(request)
            agent = caller.agent
            var request = request
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: configuration.maxRequestBytes)
            } catch {
                throw GatewayError(
                    status: 413, type: "invalid_request_error", code: "request_too_large",
                    message: "the request is larger than \(configuration.maxRequestBytes) bytes")
            }
            parsed = try ModelRequest(api: api, body: Array(body.readableBytesView))
            route = try caller.route(parsed.model, for: api)
            bound = caller.completionBound(parsed, route)
        } catch {
            countRefusal(error, agent: agent)
            return Self.error(error, api: api, requestID: requestID)
        }
        let worst = TokenUsage(prompt: parsed.promptBound, completion: bound)
        let reserved = state.withLock { $0.meter.reserve(caller.agent, Charge(usd: route.cost(worst), tokens: worst.total), now: now) }
        let reservation: BudgetMeter.Reservation
        switch reserved {
        case .success(let held): reservation = held
        case .failure(let refusal):
            refused(refusal, agent: caller.agent, now: now)
            let error = GatewayError.budgetExceeded(refusal.message)
            countRefusal(error, agent: caller.agent)
            return Self.error(error, api: api, requestID: requestID)
        }
        let hold: Int64?
        switch await reserveShared(reservation, now: now) {
        case .success(let held): hold = held
        case .failure(let error):
            countRefusal(error, agent: caller.agent)
            return Self.error(error, api: api, requestID: requestID)
        }
        let task = serving(
            caller.agent, run: request.headers[values: Self.runHeader].first, step: request.headers[values: Self.stepHeader].first, now: now
        )
        let parent = telemetry.tracer == nil ? nil : parentContext(request.headers, task: task)
        let call = Call(
            gateway: self, agent: caller.agent, route: route, request: parsed, bound: bound, reservation: reservation, hold: hold,
            requestID: requestID, started: started, run: task?.run.rawValue, step: task?.step,
            trace: telemetry.tracer.map { (span: $0.newContext(in: parent), parent: parent, start: Tracer.now()) })

        switch route.spec.apiStyle {
        case .simulated:
            return simulate(call, now: now)
        case .openai, .anthropic:
            return await forward(call, headers: request.headers)
        }
    }

    private func simulate(_ call: Call, now: Timestamp) -> Response {
        let request = call.request
        let model = call.route.model.name
        if request.api == .embeddings {
            let (body, usage) = SimulatedProvider.embed(request, model: model)
            call.settle(usage, outcome: "ok")
            return Self.json(.ok, body, requestID: call.requestID)
        }
        let completion = SimulatedProvider.complete(request, model: model, maxTokens: call.bound)
        call.settle(completion.usage, outcome: "ok")
        if request.stream {
            observeFirstChunk(call)
            let events = SimulatedProvider.events(completion, for: request.api, model: model, maxTokens: call.bound, created: now)
            return Response(
                status: .ok, headers: Self.headers(eventStream: true, requestID: call.requestID),
                body: ResponseBody(contentsOf: events.map { ByteBuffer(string: $0) }))
        }
        return Self.json(
            .ok, SimulatedProvider.body(completion, for: request.api, model: model, maxTokens: call.bound, created: now),
            requestID: call.requestID)
    }

    // MARK: Forwarding

    /// The request the provider gets: the agent's body with the provider's model name and
    /// the reserved output bound, the provider's key instead of the agent's token (in
    /// `x-api-key` for Anthropic, with the client's `anthropic-version` and betas).
    private func upstreamRequest(_ call: Call, headers: HTTPFields) throws(GatewayError) -> (UpstreamRequest, CredentialMask) {
        let spec = call.route.spec
        guard let base = spec.baseURL else {
            throw .upstream(status: 502, code: "provider_misconfigured", "ModelProvider \(call.route.provider) has no baseURL")
        }
        var upstream = UpstreamRequest(url: (base.hasSuffix("/") ? String(base.dropLast()) : base) + call.request.api.path)
        upstream.headers.add(name: "Content-Type", value: "application/json")
        upstream.headers.add(name: "Accept", value: call.request.stream ? "text/event-stream" : "application/json")
        upstream.headers.add(name: "X-Request-Id", value: call.requestID)
        // The provider's spans, if it traces, go under the call's.
        if let span = call.span { upstream.headers.add(name: "traceparent", value: span.traceparent) }
        if spec.apiStyle == .anthropic {
            upstream.headers.add(name: "anthropic-version", value: headers[Self.anthropicVersionHeader] ?? "2023-06-01")
            if let beta = headers[Self.anthropicBetaHeader] { upstream.headers.add(name: "anthropic-beta", value: beta) }
        }
        // The key, wherever a provider echoes it (an error, a 200, a stream), plainly or
        // JSON-escaped, is masked before the agent sees the body.
        var mask = CredentialMask([])
        if let secret = spec.apiKeySecret?.value {
            guard let key = providerKey(SecretID(namespace: call.route.provider.namespace, name: secret)) else {
                throw .upstream(
                    status: 503, code: "provider_key_missing",
                    "the key of ModelProvider \(call.route.provider) (secret \"\(secret)\") is not in the vault; set it with orlctl secret set \(secret)"
                )
            }
            if spec.apiStyle == .anthropic {
                upstream.headers.add(name: "x-api-key", value: key)
            } else {
                upstream.headers.add(name: "Authorization", value: "Bearer \(key)")
            }
            mask = CredentialMask([key])
        }
        upstream.body = ByteBuffer(bytes: call.request.upstreamBody(model: call.route.model.name, maxTokens: call.bound))
        return (upstream, mask)
    }

    private func forward(_ call: Call, headers: HTTPFields) async -> Response {
        let api = call.request.api
        let upstream: UpstreamRequest
        let mask: CredentialMask
        do throws(GatewayError) {
            (upstream, mask) = try upstreamRequest(call, headers: headers)
        } catch {
            call.release(outcome: error.code)
            return Self.error(error, api: api, requestID: call.requestID)
        }
        let timeout = call.route.spec.timeout.duration.wholeMilliseconds
        // A whole answer from a plain-http provider: on this event loop (`UpstreamClient`).
        if !call.request.stream, let endpoint = UpstreamClient.endpoint(upstream.url) {
            let reply: UpstreamClient.Answer
            do {
                reply = try await UpstreamClient.shared.post(
                    endpoint, headers: upstream.headers, body: upstream.body, timeout: .milliseconds(timeout),
                    maxResponseBytes: configuration.maxResponseBytes)
            } catch {
                let failure = Self.upstreamFailure(error, provider: call.route.provider)
                call.release(outcome: failure.code)
                return Self.error(failure, api: api, requestID: call.requestID)
            }
            let eventStream = reply.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true
            return answer(call, reply.body, status: reply.status, eventStream: eventStream, mask: mask)
        }
        var request = HTTPClientRequest(url: upstream.url)
        request.method = .POST
        request.headers = upstream.headers
        request.body = .bytes(upstream.body)
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: .milliseconds(timeout))
        } catch {
            let failure = Self.upstreamFailure(error, provider: call.route.provider)
            call.release(outcome: failure.code)
            return Self.error(failure, api: api, requestID: call.requestID)
        }
        let status = Int(response.status.code)
        let eventStream = response.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true
        if call.request.stream && status == 200 && eventStream {
            return Response(
                status: .ok, headers: Self.headers(eventStream: true, requestID: call.requestID),
                body: ResponseBody { [mask] writer in
                    var masking = CredentialMask.Stream(mask)
                    var events = ServerSentEvents()
                    var report = UsageReport()
                    var chunks = 0
                    var first = true
                    do {
                        for try await buffer in response.body {
                            if first {
                                first = false
                                self.observeFirstChunk(call)
                            }
                            for payload in events.feed(buffer.readableBytesView) {
                                if let found = Self.usage(inEvent: payload) { report.merge(found) }
                                chunks += 1
                            }
                            if mask.isEmpty {
                                try await writer.write(buffer)
                            } else {
                                let ready = masking.feed(buffer.readableBytesView)
                                if !ready.isEmpty { try await writer.write(ByteBuffer(bytes: ready)) }
                            }
                        }
                        let rest = masking.finish()
                        if !rest.isEmpty { try await writer.write(ByteBuffer(bytes: rest)) }
                        try await writer.finish(nil)
                        call.settle(report, chunks: chunks, outcome: "ok")
                    } catch {
                        call.settle(report, chunks: chunks, outcome: "stream cut: \(error)")
                        throw error
                    }
                })
        }
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: configuration.maxResponseBytes)
        } catch {
            let failure = Self.upstreamFailure(error, provider: call.route.provider)
            call.release(outcome: failure.code)
            return Self.error(failure, api: api, requestID: call.requestID)
        }
        return answer(call, body, status: status, eventStream: eventStream, mask: mask)
    }

    /// A provider's whole (not streamed) answer: settled on its usage and passed on, a
    /// 5xx turned into a 502 that names the provider. The one place that reads an
    /// upstream body.
    private func answer(_ call: Call, _ body: ByteBuffer, status: Int, eventStream: Bool, mask: CredentialMask) -> Response {
        let api = call.request.api
        let raw = Array(body.readableBytesView)
        let report = (try? JSONParser.parse(bytes: raw, file: "<response>", keeping: UsageReport.members)).flatMap { UsageReport(json: $0) }
        let bytes = mask.isEmpty ? raw : mask.mask(raw)
        let masked = mask.isEmpty ? body : ByteBuffer(bytes: bytes)
        if (200..<300).contains(status) {
            call.settle(report ?? UsageReport(), chunks: 0, outcome: "ok")
            return Response(
                status: .init(code: status), headers: Self.headers(eventStream: eventStream, requestID: call.requestID),
                body: ResponseBody(byteBuffer: masked))
        }
        // Charged what the provider says it used, nothing more.
        if let usage = report?.usage {
            call.settle(usage, outcome: "upstream \(status)")
        } else {
            call.release(outcome: "upstream \(status)")
        }
        if status >= 500 {
            let said = String(decoding: bytes.prefix(300), as: UTF8.self)
            return Self.error(
                .upstream(status: 502, code: "upstream_error", "ModelProvider \(call.route.provider) answered \(status): \(said)"),
                api: api,
                requestID: call.requestID)
        }
        // A 4xx is the provider's verdict on the request: passed on as it is.
        return Response(
            status: .init(code: status), headers: Self.headers(eventStream: false, requestID: call.requestID),
            body: ResponseBody(byteBuffer: masked))
    }

    static func upstreamFailure(_ error: any Error, provider: ResourceID) -> GatewayError {
        if case UpstreamClient.Failure.timedOut = error {
            return .upstream(status: 504, code: "upstream_timeout", "ModelProvider \(provider) did not answer in time (\(error))")
        }
        if let error = error as? HTTPClientError,
            [.deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout].contains(error)
        {
            return .upstream(status: 504, code: "upstream_timeout", "ModelProvider \(provider) did not answer in time (\(error))")
        }
        return .upstream(status: 502, code: "upstream_unreachable", "cannot reach ModelProvider \(provider): \(error)")
    }

    /// The usage of a stream's event, read only when the event may have one: most
    /// chunks carry text only, and parsing each would cost more than forwarding it.
    static func usage(inEvent payload: [UInt8]) -> UsageReport? {
        guard payload.count > 20, payload.first == UInt8(ascii: "{"), payload.contains(subsequence: Self.usageKey) else { return nil }
        return (try? JSONParser.parse(bytes: payload, file: "<event>")).flatMap { UsageReport(json: $0) }
    }

    /// In every API's usage: `prompt_tokens`, `input_tokens`, `output_tokens`.
    private static let usageKey = Array("_tokens\"".utf8)

    // MARK: Helpers

    /// The headers with which an agent names the task a call serves.
    static let runHeader = HTTPField.Name("x-orl-run")!
    static let stepHeader = HTTPField.Name("x-orl-step")!
    /// Anthropic's SDKs send the key in `x-api-key` and the API version in `anthropic-version`.
    static let apiKeyHeader = HTTPField.Name("x-api-key")!
    static let anthropicVersionHeader = HTTPField.Name("anthropic-version")!
    static let anthropicBetaHeader = HTTPField.Name("anthropic-beta")!

    /// The calling agent, by its token: the gateway's, the tasks' and the tools' one check.
    /// The token comes as a bearer token (OpenAI's SDKs) or in `x-api-key` (Anthropic's).
    func authenticate(_ request: Request) throws(GatewayError) -> CallerTable.Caller {
        let token: String
        if let header = request.headers[.authorization], header.hasPrefix("Bearer ") {
            token = String(header.dropFirst("Bearer ".count))
        } else if let key = request.headers[Self.apiKeyHeader], !key.isEmpty {
            token = key
        } else {
            throw .unauthenticated(
                "no API key: send the agent's ORL_TOKEN as a bearer token or in x-api-key (it is OPENAI_API_KEY and ANTHROPIC_API_KEY in the agent's environment)"
            )
        }
        // Hashed before the lock, which every call takes.
        let digest = AgentToken.digest(token)
        guard let caller = state.withLock({ $0.table.caller(digest: digest) }) else {
            throw .unauthenticated("the API key is not the token of a running agent")
        }
        return caller
    }

    /// Made from a list: setting fields one by one searches the fields each time, and a
    /// name made from a string is checked each time (every answer has these).
    static func headers(eventStream: Bool, requestID: String?) -> HTTPFields {
        var fields: [HTTPField] = []
        fields.reserveCapacity(3)
        fields.append(eventStream ? Self.eventStreamType : Self.jsonType)
        if eventStream { fields.append(Self.noCache) }
        if let requestID { fields.append(HTTPField(name: Self.requestIDHeader, value: requestID)) }
        return HTTPFields(fields)
    }

    static let requestIDHeader = HTTPField.Name("x-request-id")!
    private static let jsonType = HTTPField(name: .contentType, value: "application/json")
    private static let eventStreamType = HTTPField(name: .contentType, value: "text/event-stream")
    private static let noCache = HTTPField(name: .cacheControl, value: "no-cache")

    static func json(_ status: HTTPResponse.Status, _ body: String, requestID: String? = nil) -> Response {
        Response(
            status: status, headers: headers(eventStream: false, requestID: requestID),
            body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    static func error(_ error: GatewayError, api: ModelAPI = .chatCompletions, requestID: String? = nil) -> Response {
        json(.init(code: error.status), error.body(for: api), requestID: requestID)
    }
}

/// What the gateway sends a provider: its URL, headers and body.
struct UpstreamRequest {
    var url: String
    var headers = HTTPHeaders()
    var body = ByteBuffer()
}

/// One forwarded call: settles or releases its reservation exactly once, and writes its
/// ledger row.
final class Call: Sendable {
    let gateway: Gateway
    let agent: ResourceID
    let route: CallerTable.Route
    let request: ModelRequest
    /// The output tokens reserved for, and sent upstream as the request's bound.
    let bound: Int
    let reservation: BudgetMeter.Reservation
    /// The store's hold, when the state's reservations are shared.
    let hold: Int64?
    let requestID: String
    let started: ContinuousClock.Instant
    let run: String?
    let step: String?
    /// The call's span, the span it continues, and when it started (nanoseconds since the
    /// epoch); nil when nothing is traced.
    let span: SpanContext?
    let parent: SpanContext?
    let startNanoseconds: UInt64
    private let done = Atomic<Bool>(false)

    init(
        gateway: Gateway, agent: ResourceID, route: CallerTable.Route, request: ModelRequest, bound: Int,
        reservation: BudgetMeter.Reservation, hold: Int64? = nil, requestID: String, started: ContinuousClock.Instant, run: String?,
        step: String?, trace: (span: SpanContext, parent: SpanContext?, start: UInt64)? = nil
    ) {
        self.hold = hold
        self.span = trace?.span
        self.parent = trace?.parent
        self.startNanoseconds = trace?.start ?? 0
        self.gateway = gateway
        self.agent = agent
        self.route = route
        self.request = request
        self.bound = bound
        self.reservation = reservation
        self.requestID = requestID
        self.started = started
        self.run = run
        self.step = step
    }

    func settle(_ usage: TokenUsage, outcome: String) {
        guard !done.exchange(true, ordering: .relaxed) else { return }
        let usd = route.cost(usage)
        let notices = gateway.state.withLock { $0.meter.settle(reservation, cost: Charge(usd: usd, tokens: usage.total)) }
        if let hold { gateway.endShared(hold, cost: Charge(usd: usd, tokens: usage.total)) }
        let entry = entry(usage, usd: usd, outcome: outcome)
        gateway.record(entry, notices: notices)
        gateway.observe(self, entry, failed: !outcome.hasPrefix("ok"))
    }

    /// The call cost nothing the provider reported: its reservation is given back.
    func release(outcome: String) {
        guard !done.exchange(true, ordering: .relaxed) else { return }
        gateway.state.withLock { $0.meter.release(reservation) }
        if let hold { gateway.endShared(hold, cost: nil) }
        let entry = entry(TokenUsage(prompt: 0, completion: 0), usd: 0, outcome: outcome)
        gateway.record(entry, notices: [])
        gateway.observe(self, entry, failed: true)
    }

    /// Settles on what the provider reported, estimating what it did not: the input as
    /// the simulated provider counts it, a token per streamed event (what servers send),
    /// each within what was reserved.
    func settle(_ report: UsageReport, chunks: Int, outcome: String) {
        let prompt = report.prompt ?? min(request.messages.reduce(3) { $0 + 4 + ($1.content.utf8.count + 3) / 4 }, request.promptBound)
        let completion = report.completion ?? min(chunks, bound)
        let estimated = report.prompt == nil || report.completion == nil && request.api.hasOutput
        settle(TokenUsage(prompt: prompt, completion: completion), outcome: estimated ? outcome + ", usage estimated" : outcome)
    }

    private func entry(_ usage: TokenUsage, usd: Double, outcome: String) -> LedgerEntry {
        let elapsed = ContinuousClock.now - started
        return LedgerEntry(
            time: reservation.at, agent: agent, model: route.id, usage: usage, usd: usd,
            latencyMilliseconds: Int(elapsed.wholeMilliseconds),
            requestID: requestID, outcome: outcome, run: run, step: step)
    }
}

extension Array where Element == UInt8 {
    fileprivate func contains(subsequence: [UInt8]) -> Bool {
        guard subsequence.count <= count else { return false }
        return (0...(count - subsequence.count)).contains { start in self[start..<(start + subsequence.count)].elementsEqual(subsequence) }
    }
}
