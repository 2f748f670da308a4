import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import OrlCore
import Synchronization

extension Gateway {
    /// `GET /v1/models`: the models the calling agent may use, as `provider/model`.
    func models(_ request: Request) -> Response {
        let caller: GatewayTable.Caller
        do {
            caller = try authenticate(request)
        } catch {
            return Self.error(error)
        }
        let list = JSONValue.object([
            ("object", .string("list")),
            (
                "data",
                .array(
                    caller.routes.map { route in
                        .object([
                            ("id", .string(route.id)), ("object", .string("model")), ("created", .int(0)),
                            ("owned_by", .string(route.provider.name)),
                        ])
                    })
            ),
        ])
        return Self.json(.ok, list.compactRendered())
    }

    /// `POST /v1/chat/completions`, plain or streamed.
    func chatCompletions(_ request: Request) async -> Response {
        let started = ContinuousClock.now
        let now = clock()
        let requestID = nextRequestID()
        let caller: GatewayTable.Caller
        let chat: ChatRequest
        let route: GatewayTable.Route
        let bound: Int
        do throws(GatewayError) {
            caller = try authenticate(request)
            var request = request
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: configuration.maxRequestBytes)
            } catch {
                throw GatewayError(
                    status: 413, type: "invalid_request_error", code: "request_too_large",
                    message: "the request is larger than \(configuration.maxRequestBytes) bytes")
            }
            chat = try ChatRequest(body: Array(body.readableBytesView))
            route = try caller.route(chat.model)
            bound = caller.completionBound(chat, route)
        } catch {
            return Self.error(error, requestID: requestID)
        }
        let worst = TokenUsage(prompt: chat.promptBound, completion: bound)
        let reserved = state.withLock { $0.meter.reserve(caller.agent, Charge(usd: route.cost(worst), tokens: worst.total), now: now) }
        let reservation: BudgetMeter.Reservation
        switch reserved {
        case .success(let held): reservation = held
        case .failure(let refusal):
            refused(refusal, agent: caller.agent, now: now)
            return Self.error(.budgetExceeded(refusal.message), requestID: requestID)
        }
        let task = serving(
            caller.agent, run: request.headers[values: Self.runHeader].first, step: request.headers[values: Self.stepHeader].first, now: now
        )
        let call = Call(
            gateway: self, agent: caller.agent, route: route, reservation: reservation, requestID: requestID, started: started,
            run: task?.run.rawValue, step: task?.step)

        switch route.spec.apiStyle {
        case .simulated:
            let completion = SimulatedProvider.complete(chat, model: route.model.name, maxTokens: bound)
            call.settle(completion.usage, outcome: "ok")
            if chat.stream {
                let events = SimulatedProvider.events(completion, model: route.model.name, created: now)
                return Response(
                    status: .ok, headers: Self.headers(eventStream: true, requestID: requestID),
                    body: ResponseBody(contentsOf: events.map { ByteBuffer(string: $0) }))
            }
            return Self.json(.ok, SimulatedProvider.body(completion, model: route.model.name, created: now), requestID: requestID)
        case .openai:
            return await forward(chat, bound: bound, call: call)
        }
    }

    // MARK: Forwarding

    private func forward(_ chat: ChatRequest, bound: Int, call: Call) async -> Response {
        let spec = call.route.spec
        guard let base = spec.baseURL else {
            call.release(outcome: "no baseURL")
            return Self.error(
                .upstream(status: 502, code: "provider_misconfigured", "ModelProvider \(call.route.provider) has no baseURL"),
                requestID: call.requestID)
        }
        var upstream = HTTPClientRequest(url: (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/chat/completions")
        upstream.method = .POST
        upstream.headers.add(name: "Content-Type", value: "application/json")
        upstream.headers.add(name: "Accept", value: chat.stream ? "text/event-stream" : "application/json")
        upstream.headers.add(name: "X-Request-Id", value: call.requestID)
        // The key, wherever a provider echoes it (an error, a 200, a stream), plainly or
        // JSON-escaped, is masked before the agent sees the body.
        var mask = CredentialMask([])
        if let secret = spec.apiKeySecret?.value {
            guard let key = providerKey(SecretID(namespace: call.route.provider.namespace, name: secret)) else {
                call.release(outcome: "provider key missing")
                return Self.error(
                    .upstream(
                        status: 503, code: "provider_key_missing",
                        "the key of ModelProvider \(call.route.provider) (secret \"\(secret)\") is not in the vault; set it with orlctl secret set \(secret)"
                    ), requestID: call.requestID)
            }
            upstream.headers.add(name: "Authorization", value: "Bearer \(key)")
            mask = CredentialMask([key])
        }
        upstream.body = .bytes(ByteBuffer(bytes: chat.upstreamBody(model: call.route.model.name, maxTokens: bound)))

        let response: HTTPClientResponse
        do {
            response = try await client.execute(upstream, timeout: .milliseconds(spec.timeout.duration.wholeMilliseconds))
        } catch {
            let failure = Self.upstreamFailure(error, provider: call.route.provider)
            call.release(outcome: failure.code)
            return Self.error(failure, requestID: call.requestID)
        }
        let status = Int(response.status.code)
        let eventStream = response.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true
        if chat.stream && status == 200 && eventStream {
            return Response(
                status: .ok, headers: Self.headers(eventStream: true, requestID: call.requestID),
                body: ResponseBody { [mask] writer in
                    var masking = CredentialMask.Stream(mask)
                    var events = ServerSentEvents()
                    var usage: TokenUsage?
                    var chunks = 0
                    do {
                        for try await buffer in response.body {
                            for payload in events.feed(buffer.readableBytesView) {
                                if let found = Self.usage(inEvent: payload) { usage = found }
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
                        call.settle(usage ?? call.estimate(chat, chunks: chunks), outcome: usage == nil ? "ok, usage estimated" : "ok")
                    } catch {
                        call.settle(usage ?? call.estimate(chat, chunks: chunks), outcome: "stream cut: \(error)")
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
            return Self.error(failure, requestID: call.requestID)
        }
        let raw = Array(body.readableBytesView)
        let usage = TokenUsage(body: raw)
        let bytes = mask.isEmpty ? raw : mask.mask(raw)
        let masked = mask.isEmpty ? body : ByteBuffer(bytes: bytes)
        if (200..<300).contains(status) {
            call.settle(usage ?? call.estimate(chat, chunks: 0), outcome: usage == nil ? "ok, usage estimated" : "ok")
            return Response(
                status: .init(code: status), headers: Self.headers(eventStream: eventStream, requestID: call.requestID),
                body: ResponseBody(byteBuffer: masked))
        }
        // Charged what the provider says it used, nothing more.
        if let usage { call.settle(usage, outcome: "upstream \(status)") } else { call.release(outcome: "upstream \(status)") }
        if status >= 500 {
            let said = String(decoding: bytes.prefix(300), as: UTF8.self)
            return Self.error(
                .upstream(status: 502, code: "upstream_error", "ModelProvider \(call.route.provider) answered \(status): \(said)"),
                requestID: call.requestID)
        }
        // A 4xx is the provider's verdict on the request: passed on as it is.
        return Response(
            status: .init(code: status), headers: Self.headers(eventStream: false, requestID: call.requestID),
            body: ResponseBody(byteBuffer: masked))
    }

    static func upstreamFailure(_ error: any Error, provider: ResourceID) -> GatewayError {
        if let error = error as? HTTPClientError,
            [.deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout].contains(error)
        {
            return .upstream(status: 504, code: "upstream_timeout", "ModelProvider \(provider) did not answer in time (\(error))")
        }
        return .upstream(status: 502, code: "upstream_unreachable", "cannot reach ModelProvider \(provider): \(error)")
    }

    /// The usage of a stream's event, read only when the event has one: most chunks say
    /// `"usage":null` or nothing, and parsing each would cost more than forwarding it.
    static func usage(inEvent payload: [UInt8]) -> TokenUsage? {
        guard payload.count > 20, payload.first == UInt8(ascii: "{"), payload.contains(subsequence: Self.usageKey) else { return nil }
        return TokenUsage(body: payload)
    }

    private static let usageKey = Array("\"prompt_tokens\"".utf8)

    // MARK: Helpers

    /// The headers with which an agent names the task a call serves.
    static let runHeader = HTTPField.Name("x-orl-run")!
    static let stepHeader = HTTPField.Name("x-orl-step")!

    /// The calling agent, by its token: the gateway's, the tasks' and the tools' one check.
    func authenticate(_ request: Request) throws(GatewayError) -> GatewayTable.Caller {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else {
            throw .unauthenticated(
                "no API key: send the agent's ORL_TOKEN as a bearer token (it is OPENAI_API_KEY in the agent's environment)")
        }
        let token = String(header.dropFirst("Bearer ".count))
        guard let caller = state.withLock({ $0.table.caller(token: token) }) else {
            throw .unauthenticated("the API key is not the token of a running agent")
        }
        return caller
    }

    static func headers(eventStream: Bool, requestID: String?) -> HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = eventStream ? "text/event-stream" : "application/json"
        if eventStream { headers[.cacheControl] = "no-cache" }
        if let requestID { headers[HTTPField.Name("x-request-id")!] = requestID }
        return headers
    }

    static func json(_ status: HTTPResponse.Status, _ body: String, requestID: String? = nil) -> Response {
        Response(
            status: status, headers: headers(eventStream: false, requestID: requestID),
            body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    static func error(_ error: GatewayError, requestID: String? = nil) -> Response {
        json(.init(code: error.status), error.body, requestID: requestID)
    }
}

/// One forwarded call: settles or releases its reservation exactly once, and writes its
/// ledger row.
final class Call: Sendable {
    let gateway: Gateway
    let agent: ResourceID
    let route: GatewayTable.Route
    let reservation: BudgetMeter.Reservation
    let requestID: String
    let started: ContinuousClock.Instant
    let run: String?
    let step: String?
    private let done = Atomic<Bool>(false)

    init(
        gateway: Gateway, agent: ResourceID, route: GatewayTable.Route, reservation: BudgetMeter.Reservation, requestID: String,
        started: ContinuousClock.Instant, run: String?, step: String?
    ) {
        self.gateway = gateway
        self.agent = agent
        self.route = route
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
        gateway.record(entry(usage, usd: usd, outcome: outcome), notices: notices)
    }

    /// The call cost nothing the provider reported: its reservation is given back.
    func release(outcome: String) {
        guard !done.exchange(true, ordering: .relaxed) else { return }
        gateway.state.withLock { $0.meter.release(reservation) }
        gateway.record(entry(TokenUsage(prompt: 0, completion: 0), usd: 0, outcome: outcome), notices: [])
    }

    /// When a provider reports no usage: the prompt as the simulated provider counts
    /// it, and a token per streamed chunk (what OpenAI-style servers send).
    func estimate(_ chat: ChatRequest, chunks: Int) -> TokenUsage {
        let prompt = chat.messages.reduce(3) { $0 + 4 + ($1.content.utf8.count + 3) / 4 }
        return TokenUsage(prompt: min(prompt, chat.promptBound), completion: min(chunks, reservation.charge.tokens - chat.promptBound))
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
