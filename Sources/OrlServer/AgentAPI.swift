import Dispatch
import Hummingbird
import NIOCore
public import OrlCore
import OrlJSON

/// The agents' side of workflow runs on the controller's loopback API: the task
/// protocol (long-poll the next task, heartbeat, complete, fail) and tool calls. Each
/// agent is who its token says (the gateway's table, refreshed every controller pass);
/// each handler is one `RunOperations` call, run on a queue of its own because SQLite
/// calls block.
///
/// ```text
/// POST /v1/tasks/next?wait=SECONDS          200 the task | 204 none came in time
/// POST /v1/tasks/RUN/STEP/ATTEMPT/heartbeat 200 {"leaseExpiresAt": ...}
/// POST /v1/tasks/RUN/STEP/ATTEMPT/complete  {"output": JSON}
/// POST /v1/tasks/RUN/STEP/ATTEMPT/fail      {"error": "...", "retry": true}
/// POST /v1/tools/NAME/invoke                {"input": JSON}, for the task x-orl-run/x-orl-step name
/// POST /mcp                                 MCP (streamable HTTP): the MCP tools the agent may call
/// ```
public final class AgentAPI: Sendable {
    public struct Configuration: Sendable {
        /// Where agents' working directories are (command tools run in the agent's).
        public var stateDirectory: String
        /// The longest a poll for the next task waits (what `wait` asks, at most this).
        public var longestPoll: Duration = .seconds(25)
        /// How often a waiting poll looks again by itself: for retries whose backoff
        /// ends, which nothing announces.
        public var recheckInterval: Duration = .seconds(1)
        /// How often the store is asked whether another process changed it.
        public var changePollInterval: Duration = .milliseconds(100)
        public var maxRequestBytes = 8 << 20
        public var maxToolOutputBytes = 8 << 20
        /// How old the live tool definitions an MCP call is checked against may be.
        public var mcpDefinitionMaxAge: Duration = .seconds(5)

        public init(stateDirectory: String) { self.stateDirectory = stateDirectory }
    }

    let gateway: Gateway
    let operations: RunOperations
    let waiters: TaskWaiters
    let commands: any CommandRunner
    let secret: @Sendable (SecretID) -> String?
    let changeMarker: @Sendable () -> Int64?
    let configuration: Configuration
    let mcp: McpUpstream
    private let queue = DispatchQueue(label: "orl.agent-api.store")

    /// `store` is a connection of the API's own; `secret` reads the vault (tools'
    /// credentials); `changeMarker` changes when another process writes the store.
    public init(
        gateway: Gateway, store: any RunStore, waiters: TaskWaiters, commands: any CommandRunner,
        secret: @escaping @Sendable (SecretID) -> String?, changeMarker: @escaping @Sendable () -> Int64? = { nil },
        configuration: Configuration
    ) {
        self.gateway = gateway
        self.operations = RunOperations(store: store, onReady: { waiters.notify($0) })
        self.waiters = waiters
        self.commands = commands
        self.secret = secret
        self.changeMarker = changeMarker
        self.configuration = configuration
        self.mcp = McpUpstream(client: gateway.client, maxResponseBytes: configuration.maxToolOutputBytes)
    }

    func register(_ router: Router<BasicRequestContext>) {
        router.post("/v1/tasks/next") { request, _ in await self.next(request) }
        router.post("/v1/tasks/:run/:step/:attempt/heartbeat") { request, context in
            await self.answer(request, context, .heartbeat)
        }
        router.post("/v1/tasks/:run/:step/:attempt/complete") { request, context in await self.answer(request, context, .complete) }
        router.post("/v1/tasks/:run/:step/:attempt/fail") { request, context in await self.answer(request, context, .fail) }
        router.post("/v1/tools/:name/invoke") { request, context in
            await self.invoke(request, tool: context.parameters.get("name") ?? "")
        }
        router.post("/mcp") { request, _ in await self.mcp(request) }
        // Stateless: no stream for the server to talk on, and no session to end.
        router.get("/mcp") { _, _ in Response(status: .methodNotAllowed) }
        router.delete("/mcp") { _, _ in Response(status: .methodNotAllowed) }
    }

    /// Learns the tasks in flight from the store (agents outlive controllers), then
    /// wakes every poll when another process changes the store, until cancelled.
    func run() async {
        do {
            let running = try await perform { () throws(RunError) in try self.operations.tasksInFlight() }
            gateway.resetTasks(running)
        } catch {
            gateway.log(ControllerEvent(time: gateway.clock(), reason: .error, message: "reading the tasks in flight: \(error.message)"))
        }
        var marker = changeMarker()
        var rounds = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.changePollInterval)
            let current = changeMarker()
            if current != marker {
                marker = current
                waiters.notifyAll()
            }
            rounds += 1
            if rounds % 600 == 0 {
                let now = gateway.clock()
                gateway.pruneTasks(at: now)
            }
        }
    }

    // MARK: Tasks

    /// `POST /v1/tasks/next?wait=SECONDS`: the agent's next task, waiting up to `wait`
    /// seconds (25 at most, the default) for one.
    func next(_ request: Request) async -> Response {
        let caller: GatewayTable.Caller
        do {
            caller = try gateway.authenticate(request)
        } catch {
            return Gateway.error(error)
        }
        let longest = configuration.longestPoll
        var wait = longest
        if let given = request.uri.queryParameters.get("wait") {
            // Clamped, never converted as given: `wait=1e16` once trapped the controller.
            guard let asked = Double(given).flatMap({ Duration.seconds(clamping: $0, atMost: longest) }) else {
                return Gateway.error(.invalidRequest("wait must be a number of seconds, 0 or more", param: "wait"))
            }
            wait = asked
        }
        let clock = ContinuousClock()
        let deadline = clock.now + wait
        let agent = caller.agent
        while true {
            let seen = waiters.version(of: agent)
            let task: RunTask?
            do {
                task = try await perform { () throws(RunError) in try self.operations.claim(agent: agent, now: self.gateway.clock()) }
            } catch {
                return Gateway.error(GatewayError(error))
            }
            if let task {
                gateway.hold(task.id, agent: agent, until: task.leaseExpiresAt)
                return Gateway.json(.ok, task.json.compactRendered())
            }
            let left = deadline - clock.now
            if left <= .zero || Task.isCancelled { return Response(status: .noContent) }
            await waiters.wait(agent, since: seen, for: min(left, configuration.recheckInterval))
        }
    }

    enum Answer { case heartbeat, complete, fail }

    /// Heartbeat, complete or fail one task, named by the path as the task names itself.
    func answer(_ request: Request, _ context: BasicRequestContext, _ answer: Answer) async -> Response {
        let caller: GatewayTable.Caller
        let body: Node?
        do throws(GatewayError) {
            caller = try gateway.authenticate(request)
            body = try await Self.body(request, limit: configuration.maxRequestBytes)
        } catch {
            return Gateway.error(error)
        }
        let path = [context.parameters.get("run"), context.parameters.get("step"), context.parameters.get("attempt")]
        guard let task = TaskID(path.map { $0 ?? "" }.joined(separator: "/")) else {
            return Gateway.error(
                .invalidRequest("the path must name a task as RUN/STEP/ATTEMPT, as the task's \"task\" member gives it"))
        }
        let agent = caller.agent
        let now = gateway.clock()
        do {
            switch answer {
            case .heartbeat:
                let lease = try await perform { () throws(RunError) in try self.operations.heartbeat(task, agent: agent, now: now) }
                gateway.hold(task, agent: agent, until: lease)
                return Gateway.json(
                    .ok,
                    JSONValue.object([("task", .string(task.description)), ("leaseExpiresAt", .string(lease.description))])
                        .compactRendered())
            case .complete:
                let output = body?["output"] ?? Node(.null, at: .file("<request>"))
                let record = try await perform { () throws(RunError) in
                    try self.operations.complete(task, agent: agent, output: output, now: now)
                }
                gateway.release(task, agent: agent)
                return Gateway.json(.ok, Self.state(of: record, task).compactRendered())
            case .fail:
                guard let message = body?["error"]?.string, !message.isEmpty else {
                    return Gateway.error(.invalidRequest("say why the task failed: {\"error\": \"...\"}", param: "error"))
                }
                let retry = body?["retry"]?.bool ?? true
                let record = try await perform { () throws(RunError) in
                    try self.operations.fail(task, agent: agent, error: message, retry: retry, now: now, random: Double.random(in: 0..<1))
                }
                gateway.release(task, agent: agent)
                return Gateway.json(.ok, Self.state(of: record, task).compactRendered())
            }
        } catch {
            // Not the agent's to run any more (given up, cancelled): it holds it no longer.
            if error.kind == .conflict || error.kind == .forbidden { gateway.release(task, agent: agent) }
            return Gateway.error(GatewayError(error))
        }
    }

    private static func state(of record: StepRecord, _ task: TaskID) -> JSONValue {
        .object([
            ("task", .string(task.description)), ("state", .string(record.state.rawValue)),
            ("retryAt", record.state == .ready ? record.readyAt.map { .string($0.description) } : nil),
        ])
    }

    // MARK: Helpers

    /// The request's JSON body, if it has one.
    static func body(_ request: Request, limit: Int) async throws(GatewayError) -> Node? {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: limit)
        } catch {
            throw GatewayError(
                status: 413, type: "invalid_request_error", code: "request_too_large", message: "the request is larger than \(limit) bytes")
        }
        let bytes = Array(buffer.readableBytesView)
        guard bytes.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\r") }) else {
            return nil
        }
        let node: Node
        do {
            node = try JSONParser.parse(bytes: bytes, file: "<request>")
        } catch {
            throw .invalidRequest("the body is not JSON: \(error.description)")
        }
        guard node.members != nil else { throw .invalidRequest("the body must be a JSON object") }
        return node
    }

    /// Runs a store call off the cooperative pool: SQLite blocks, up to its busy timeout
    /// while another process writes.
    func perform<T: Sendable>(_ body: @escaping @Sendable () throws(RunError) -> T) async throws(RunError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, RunError>, Never>) in
            queue.async {
                do throws(RunError) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}
