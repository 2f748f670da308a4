import Hummingbird
import NIOCore
import OrlCore
import OrlJSON

/// `POST /v1/tasks/stream?wait=SECONDS`: the agent's tasks pushed on one request kept
/// open, and its answers sent back on the same request, one JSON object a line both
/// ways (NDJSON). A step costs one line each way: no request to route, authenticate
/// or parse, and no poll to park, between one task and the next.
///
/// ```text
/// server → agent   {"next": TASK, "traceparent": "..."}      a task, leased to the agent
/// agent → server   {"task": "RUN/STEP/ATTEMPT", "output": JSON}             complete it
///                  {"task": "...", "error": "...", "retry": true}           fail it
///                  {"task": "...", "heartbeat": true}                       renew its lease
/// server → agent   {"task", "state", "retryAt", "next": TASK or null}      the answer
///                  {"task", "leaseExpiresAt"}                               to a heartbeat
///                  {"task", "status", "error": {"code", "message", ...}}    a refusal
/// ```
///
/// Each operation is the one its own route runs (a completion claims the agent's next
/// task in the same transaction, as `complete?next=0` does), so a step is recorded
/// before the next is handed out. A task is pushed only when the agent holds none from
/// this stream; when none is Ready, the stream waits up to `wait` seconds (25 at most)
/// for one, and ends (the response ends) when none came: the agent opens another.
/// The server's idle timeout (30 s without a read, `ConnectionGuard`) also holds while a
/// request body is being read, so an agent working on a task heartbeats on the stream.
extension AgentAPI {
    func stream(_ request: Request) async -> Response {
        let caller: CallerTable.Caller
        let wait: Duration
        do throws(GatewayError) {
            caller = try gateway.authenticate(request)
            wait = try self.wait(request, "wait") ?? configuration.longestPoll
        } catch {
            return Gateway.error(error)
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        headers[.cacheControl] = "no-cache"
        let limit = configuration.maxRequestBytes
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                // On the connection's event loop: a completion is made there when the store
                // can make it without waiting (`completeAndClaimIfFree`), so a step reads its
                // line, commits and writes its answer on one thread; it goes to the store's
                // queue only when another writer holds the store.
                try await self.serve(
                    agent: caller.agent, claimant: caller.digest, wait: wait, limit: limit, request: request, writer: &writer)
            })
    }

    private func serve(
        agent: ResourceID, claimant: String?, wait: Duration, limit: Int, request: Request, writer: inout any ResponseBodyWriter
    ) async throws {
        var lines = TaskStreamLines(request.body.makeAsyncIterator(), limit: limit)
        // The tasks pushed here that the agent has not answered yet.
        var held: Set<TaskID> = []
        while true {
            if held.isEmpty {
                let task: RunTask?
                do throws(RunError) {
                    task = try await self.poll(agent, claimant: claimant, for: wait)
                } catch {
                    try await writer.write(Self.line(Self.refusal(nil, GatewayError(error))))
                    break
                }
                guard let task else { break }
                held.insert(task.id)
                try await writer.write(Self.line(Self.pushed(task)))
            }
            let line: [UInt8]?
            do {
                line = try await lines.next()
            } catch let error as GatewayError {
                try await writer.write(Self.line(Self.refusal(nil, error)))
                break
            }
            // The agent closed its side: what it holds runs out with its lease.
            guard let line else { break }
            try await writer.write(Self.line(await self.streamed(line, agent: agent, claimant: claimant, held: &held)))
        }
        try await writer.finish(nil)
    }

    /// Runs one line the agent sent and returns the answer's line.
    private func streamed(_ line: [UInt8], agent: ResourceID, claimant: String?, held: inout Set<TaskID>) async -> JSONValue {
        let message: Node
        do {
            message = try JSONParser.parse(bytes: line, file: "<stream>")
        } catch {
            return Self.refusal(nil, .invalidRequest("a line is not JSON: \(error.description)"))
        }
        guard message.members != nil, let name = message["task"]?.string else {
            return Self.refusal(nil, .invalidRequest("each line names its task: {\"task\": \"RUN/STEP/ATTEMPT\", ...}", param: "task"))
        }
        guard let task = TaskID(name) else {
            return Self.refusal(
                name, .invalidRequest("the task must be named RUN/STEP/ATTEMPT, as the task's \"task\" member gives it", param: "task"))
        }
        let now = gateway.clock()
        do throws(RunError) {
            if let output = message["output"] {
                let (record, next) = try await completeAndClaim(
                    task, agent: agent, claimant: claimant, output: output, now: now, inPlace: true)
                held.remove(task)
                if let next { held.insert(next.id) }
                return Self.answered(Self.state(of: record, task, next: .some(next)), next: next)
            }
            if let error = message["error"] {
                guard let text = error.string, !text.isEmpty else {
                    return Self.refusal(name, .invalidRequest("say why the task failed: {\"error\": \"...\"}", param: "error"))
                }
                let record = try await fail(task, agent: agent, error: text, retry: message["retry"]?.bool ?? true, now: now)
                held.remove(task)
                return Self.state(of: record, task)
            }
            if message["heartbeat"]?.bool == true {
                let lease = try await heartbeat(task, agent: agent, now: now)
                return .object([("task", .string(name)), ("leaseExpiresAt", .string(lease.description))])
            }
        } catch {
            // Not the agent's to run any more (given up, cancelled): it holds it no longer.
            if error.kind == .conflict || error.kind == .forbidden {
                gateway.release(task, agent: agent)
                held.remove(task)
            }
            return Self.refusal(name, GatewayError(error))
        }
        return Self.refusal(
            name,
            .invalidRequest(
                "say what to do with the task: \"output\" completes it, \"error\" fails it, \"heartbeat\": true renews its lease"))
    }

    private static func pushed(_ task: RunTask) -> JSONValue {
        .object([("next", task.json), ("traceparent", .string(SpanContext.attempt(task.id).traceparent))])
    }

    /// A completion's answer; the next task's span comes with it, as the route's header does.
    private static func answered(_ state: JSONValue, next: RunTask?) -> JSONValue {
        guard let next, case .object(var members) = state else { return state }
        members.append(("traceparent", .string(SpanContext.attempt(next.id).traceparent)))
        return .object(members)
    }

    private static func refusal(_ task: String?, _ error: GatewayError) -> JSONValue {
        .object([
            ("task", task.map { .string($0) } ?? .null), ("status", .int(error.status)),
            (
                "error",
                .object([
                    ("message", .string(error.message)), ("type", .string(error.type)), ("param", error.param.map { .string($0) } ?? .null),
                    ("code", .string(error.code)),
                ])
            ),
        ])
    }

    private static func line(_ value: JSONValue) -> ByteBuffer {
        var text = value.compactRendered()
        text.append("\n")
        return ByteBuffer(string: text)
    }
}

/// The lines of a request body as they arrive; blank lines are skipped, and a last line
/// without its newline still counts.
struct TaskStreamLines {
    private var body: RequestBody.AsyncIterator
    private var buffer = ByteBuffer()
    private let limit: Int
    private var ended = false

    init(_ body: RequestBody.AsyncIterator, limit: Int) {
        self.body = body
        self.limit = limit
    }

    mutating func next() async throws -> [UInt8]? {
        while true {
            let view = buffer.readableBytesView
            if let newline = view.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(view[view.startIndex..<newline])
                buffer.moveReaderIndex(forwardBy: newline - view.startIndex + 1)
                if Self.isBlank(line) { continue }
                return line
            }
            guard buffer.readableBytes <= limit else {
                throw GatewayError(
                    status: 413, type: "invalid_request_error", code: "request_too_large", message: "a line is longer than \(limit) bytes")
            }
            if ended {
                let rest = Array(view)
                buffer.clear()
                return Self.isBlank(rest) ? nil : rest
            }
            buffer.discardReadBytes()
            if var chunk = try await body.next() {
                buffer.writeBuffer(&chunk)
            } else {
                ended = true
            }
        }
    }

    private static func isBlank(_ line: [UInt8]) -> Bool {
        line.allSatisfy { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\t") }
    }
}
