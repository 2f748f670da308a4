import Dispatch
import Hummingbird
import NIOCore
public import OrlCore
import OrlJSON
import Synchronization

/// The agents' side of workflow runs on the controller's loopback API: the task
/// protocol (long-poll the next task, heartbeat, complete, fail) and tool calls. Each
/// agent is who its token says (the gateway's table, refreshed every controller pass);
/// each handler is one `RunOperations` call, run on a queue of its own because SQLite
/// calls block.
///
/// ```text
/// POST /v1/tasks/next?wait=SECONDS          200 the task | 204 none came in time
/// POST /v1/tasks/stream?wait=SECONDS        NDJSON both ways: tasks pushed, answers sent back
/// POST /v1/tasks/RUN/STEP/ATTEMPT/heartbeat 200 {"leaseExpiresAt": ...}
/// POST /v1/tasks/RUN/STEP/ATTEMPT/complete  {"output": JSON}; with ?next=SECONDS the
///                                           answer also carries the agent's next task
/// POST /v1/tasks/RUN/STEP/ATTEMPT/fail      {"error": "...", "retry": true}
/// POST /v1/tasks/RUN/STEP/ATTEMPT/publish   {"topic": "...", "value": JSON}, a topic the step publishes
/// POST /v1/tasks/RUN/STEP/ATTEMPT/read      {"topic": "..."}, a topic the step subscribes to
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
        /// A stdio MCP server no call used for this long is stopped (started again at
        /// the next call).
        public var mcpIdleTimeout: Duration = .seconds(600)
        /// The first wait before a stdio MCP server that exited is started again
        /// (doubling with each exit in a row, up to a minute).
        public var mcpFirstBackoff: Duration = .seconds(1)
        /// How long a call of a tool behind `requireApproval` (outside a workflow step)
        /// waits for `orlctl approve`; then it is refused.
        public var mcpApprovalTimeout: Duration = .seconds(120)
        /// How often each MCP server's live definitions are compared with its pins for
        /// the Tool's status when no call did (new pins are checked at once).
        public var mcpPinCheckInterval: Duration = .seconds(60)

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
    /// Where per-call approvals are kept; nil: approval-gated calls are refused.
    let approvals: (any ToolApprovalStore)?
    /// Where MCP servers' Tools get their status (`PinMatches`); nil: nowhere.
    let statusStore: (any StateStore)?
    let pinChecks = Mutex<[ResourceID: PinCheck]>([:])
    private let queue: DispatchQueue
    /// Reads that decide a call (may this step call this tool?), on a connection and a
    /// queue of their own: a write waiting for another process's lock (a large apply)
    /// holds up the writes queued behind it, never these (WAL readers do not wait).
    let reads: RunOperations
    private let readQueue: DispatchQueue
    /// When each attempt in flight was claimed, and the runs they belong to: the spans of
    /// attempts and runs (only kept while a tracer is set).
    let traced = Mutex(TracedRuns())

    struct TracedRuns {
        var claimed: [TaskID: Timestamp] = [:]
        var runs: Set<RunID> = []
    }

    /// `store` is a connection of the API's own; `reader` another, for the reads that
    /// decide tool calls (nil: `store`); `secret` reads the vault (tools'
    /// credentials); `changeMarker` changes when another process writes the store;
    /// `servers` runs stdio MCP servers (by default `commands`, when it can).
    public init(
        gateway: Gateway, store: any RunStore, reader: (any RunStore)? = nil, waiters: TaskWaiters, commands: any CommandRunner,
        secret: @escaping @Sendable (SecretID) -> String?, changeMarker: @escaping @Sendable () -> Int64? = { nil },
        servers: (any StdioLauncher)? = nil, configuration: Configuration
    ) {
        self.gateway = gateway
        let queue = DispatchQueue(label: "orl.agent-api.store")
        self.queue = queue
        self.operations = RunOperations(store: store, onReady: { waiters.notify($0) })
        self.reads = reader.map { RunOperations(store: $0) } ?? operations
        self.readQueue = reader == nil ? queue : DispatchQueue(label: "orl.agent-api.reads")
        self.approvals = store as? any ToolApprovalStore
        self.statusStore = store as? any StateStore
        self.waiters = waiters
        self.commands = commands
        self.secret = secret
        self.changeMarker = changeMarker
        self.configuration = configuration
        let stdio = McpStdioServers(
            launcher: servers ?? (commands as? any StdioLauncher), log: { gateway.note($0) }, clock: gateway.clock,
            maxMessageBytes: configuration.maxToolOutputBytes, firstBackoff: configuration.mcpFirstBackoff)
        self.mcp = McpUpstream(client: gateway.client, maxResponseBytes: configuration.maxToolOutputBytes, stdio: stdio)
    }

    func register(_ router: Router<BasicRequestContext>) {
        router.post("/v1/tasks/next") { request, _ in await self.next(request) }
        router.post("/v1/tasks/stream") { request, _ in await self.stream(request) }
        router.post("/v1/tasks/:run/:step/:attempt/heartbeat") { request, context in
            await self.answer(request, context, .heartbeat)
        }
        router.post("/v1/tasks/:run/:step/:attempt/complete") { request, context in await self.answer(request, context, .complete) }
        router.post("/v1/tasks/:run/:step/:attempt/fail") { request, context in await self.answer(request, context, .fail) }
        router.post("/v1/tasks/:run/:step/:attempt/publish") { request, context in await self.answer(request, context, .publish) }
        router.post("/v1/tasks/:run/:step/:attempt/read") { request, context in await self.answer(request, context, .read) }
        router.post("/v1/tools/:name/invoke") { request, context in
            await self.invoke(request, tool: context.parameters.get("name") ?? "")
        }
        router.post("/mcp") { request, _ in await self.mcp(request) }
        // Stateless: no stream for the server to talk on, and no session to end.
        router.get("/mcp") { _, _ in Response(status: .methodNotAllowed) }
        router.delete("/mcp") { _, _ in Response(status: .methodNotAllowed) }
    }

    /// Learns the tasks in flight from the store (agents outlive controllers), then
    /// wakes every poll when another process changes the store, until cancelled. The
    /// daemon does not use this loop: it calls `prepare` before it serves, and
    /// `storeChanged` from its change feed.
    func run() async {
        await prepare()
        let pins = Task { await self.watchPins() }
        defer { pins.cancel() }
        var marker = changeMarker()
        var rounds = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.changePollInterval)
            let current = changeMarker()
            if current != marker {
                marker = current
                storeChanged()
            }
            rounds += 1
            if rounds % 10 == 0, gateway.telemetry.tracer != nil { await traceEndedRuns() }
            if rounds % 600 == 0 {
                prune()
                await stopIdleServers()
            }
        }
        await mcp.stdio?.stopAll()
    }

    /// Learns the tasks in flight from the store (agents outlive controllers), so that
    /// their calls are attributed from the first one: done before the API serves.
    public func prepare() async {
        do {
            let running = try await perform { () throws(RunError) in try self.operations.tasksInFlight() }
            gateway.resetTasks(running)
        } catch {
            gateway.log(ControllerEvent(time: gateway.clock(), reason: .error, message: "reading the tasks in flight: \(error.message)"))
        }
    }

    /// Another connection changed the store: every waiting poll looks again.
    public func storeChanged() { waiters.notifyAll() }

    /// Forgets the leases that have passed.
    public func prune() { gateway.pruneTasks(at: gateway.clock()) }

    /// Stops the stdio MCP servers no call has used for `mcpIdleTimeout`.
    public func stopIdleServers() async { await mcp.stdio?.stopIdle(after: configuration.mcpIdleTimeout) }

    /// Stops every stdio MCP server (the controller is stopping).
    public func stopServers() async { await mcp.stdio?.stopAll() }

    // MARK: Tasks

    /// `POST /v1/tasks/next?wait=SECONDS`: the agent's next task, waiting up to `wait`
    /// seconds (25 at most, the default) for one.
    func next(_ request: Request) async -> Response {
        let caller: CallerTable.Caller
        let wait: Duration
        do throws(GatewayError) {
            caller = try gateway.authenticate(request)
            wait = try self.wait(request, "wait") ?? configuration.longestPoll
        } catch {
            return Gateway.error(error)
        }
        do {
            guard let task = try await poll(caller.agent, claimant: caller.digest, for: wait) else { return Response(status: .noContent) }
            var response = Gateway.json(.ok, task.json.compactRendered())
            // The attempt's span: an agent that sends it back on its model and tool
            // calls puts their spans under it (the reference agent does).
            response.headers[Gateway.traceparentHeader] = SpanContext.attempt(task.id).traceparent
            return response
        } catch {
            return Gateway.error(GatewayError(error))
        }
    }

    /// The query parameter `name` as a wait in seconds, clamped to the longest poll;
    /// nil when it is absent.
    func wait(_ request: Request, _ name: String) throws(GatewayError) -> Duration? {
        guard let given = request.uri.queryParameters.get(name) else { return nil }
        // Clamped, never converted as given: `wait=1e16` once trapped the controller.
        guard let asked = Double(given).flatMap({ Duration.seconds(clamping: $0, atMost: configuration.longestPoll) }) else {
            throw .invalidRequest("\(name) must be a number of seconds, 0 or more", param: name)
        }
        return asked
    }

    /// Claims the agent's next task, waiting up to `wait` for one to be Ready; nil when
    /// none came in time (or the client went away).
    func poll(_ agent: ResourceID, claimant: String?, for wait: Duration) async throws(RunError) -> RunTask? {
        let clock = ContinuousClock()
        let deadline = clock.now + wait
        while true {
            let seen = waiters.version(of: agent)
            // A process being stopped (or gone: the poll outlived it) is handed nothing: the
            // task would be lost with it, and the step's attempt spent on no work. It is
            // answered as if none came, at the end of its wait, not at once again and again.
            guard gateway.takesTasks(claimant) else {
                let left = deadline - clock.now
                if left > .zero { try? await Task.sleep(for: left) }
                return nil
            }
            let task = try await perform { () throws(RunError) -> RunTask? in
                guard self.gateway.takesTasks(claimant) else { return nil }
                return try self.operations.claim(agent: agent, claimant: claimant, now: self.gateway.clock())
            }
            if let task {
                claimed(task, agent: agent)
                return task
            }
            let left = deadline - clock.now
            if left <= .zero || Task.isCancelled { return nil }
            await waiters.wait(agent, since: seen, for: min(left, configuration.recheckInterval))
        }
    }

    /// The agent holds the task now: its calls are attributed to it.
    private func claimed(_ task: RunTask, agent: ResourceID) {
        gateway.hold(task.id, agent: agent, until: task.leaseExpiresAt)
        if gateway.telemetry.tracer != nil {
            let now = gateway.clock()
            traced.withLock { traced in
                traced.claimed[task.id] = now
                traced.runs.insert(task.id.run)
            }
        }
    }

    enum Answer { case heartbeat, complete, fail, publish, read }

    /// Heartbeat, complete or fail one task, named by the path as the task names itself.
    func answer(_ request: Request, _ context: BasicRequestContext, _ answer: Answer) async -> Response {
        let caller: CallerTable.Caller
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
                let lease = try await heartbeat(task, agent: agent, now: now)
                return Gateway.json(
                    .ok,
                    JSONValue.object([("task", .string(task.description)), ("leaseExpiresAt", .string(lease.description))])
                        .compactRendered())
            case .complete:
                let output = body?["output"] ?? Node(.null, at: .file("<request>"))
                let wait: Duration?
                do throws(GatewayError) {
                    wait = try self.wait(request, "next")
                } catch {
                    return Gateway.error(error)
                }
                guard let wait else {
                    let record = try await perform { () throws(RunError) in
                        try self.operations.complete(task, agent: agent, output: output, now: now)
                    }
                    gateway.release(task, agent: agent)
                    attemptEnded(task, agent: agent, record: record, failed: nil)
                    return Gateway.json(.ok, Self.state(of: record, task).compactRendered())
                }
                // `?next=SECONDS`: the agent's next task comes with the answer, claimed in
                // the same transaction when one is Ready, else waited for as a poll does.
                let (record, claimed) = try await completeAndClaim(task, agent: agent, claimant: caller.digest, output: output, now: now)
                // The completion is committed: a failed wait for the next task is only a
                // missing `next`, which the agent's next poll makes up for.
                var next = claimed
                if next == nil, wait > .zero, gateway.takesTasks(caller.digest) {
                    next = (try? await poll(agent, claimant: caller.digest, for: wait)) ?? nil
                }
                var response = Gateway.json(.ok, Self.state(of: record, task, next: .some(next)).compactRendered())
                if let next { response.headers[Gateway.traceparentHeader] = SpanContext.attempt(next.id).traceparent }
                return response
            case .fail:
                guard let message = body?["error"]?.string, !message.isEmpty else {
                    return Gateway.error(.invalidRequest("say why the task failed: {\"error\": \"...\"}", param: "error"))
                }
                let record = try await fail(task, agent: agent, error: message, retry: body?["retry"]?.bool ?? true, now: now)
                return Gateway.json(.ok, Self.state(of: record, task).compactRendered())
            case .publish, .read:
                guard let topic = body?["topic"]?.string, !topic.isEmpty else {
                    return Gateway.error(.invalidRequest("name the blackboard topic: {\"topic\": \"...\"}", param: "topic"))
                }
                if answer == .publish {
                    guard let value = body?["value"] else {
                        return Gateway.error(
                            .invalidRequest("give the value to publish: {\"topic\": ..., \"value\": JSON}", param: "value"))
                    }
                    let version = try await perform { () throws(RunError) in
                        try self.operations.publish(task, agent: agent, topic: topic, value: value, now: now)
                    }
                    return Gateway.json(
                        .ok, JSONValue.object([("topic", .string(topic)), ("version", .int(version))]).compactRendered())
                }
                let found = try await perform { () throws(RunError) in try self.operations.read(task, agent: agent, topic: topic) }
                let value = found.flatMap { try? JSONParser.parse($0.value, file: "<blackboard>") }.map(JSONValue.init)
                return Gateway.json(
                    .ok,
                    JSONValue.object([
                        ("topic", .string(topic)), ("version", .int(found?.version ?? 0)), ("value", value ?? .null),
                        ("step", found?.step.map { .string($0) }), ("writtenAt", found.map { .string($0.writtenAt.description) }),
                    ]).compactRendered())
            }
        } catch {
            // Not the agent's to run any more (given up, cancelled): it holds it no longer.
            if error.kind == .conflict || error.kind == .forbidden { gateway.release(task, agent: agent) }
            return Gateway.error(GatewayError(error))
        }
    }

    func heartbeat(_ task: TaskID, agent: ResourceID, now: Timestamp) async throws(RunError) -> Timestamp {
        let lease = try await perform { () throws(RunError) in try self.operations.heartbeat(task, agent: agent, now: now) }
        gateway.hold(task, agent: agent, until: lease)
        return lease
    }

    /// Completes the task and claims the agent's next one in the same transaction.
    /// `inPlace`: first try it on the caller's thread (an event loop, a stream's), if the
    /// store can make it without waiting; the store's queue otherwise.
    func completeAndClaim(
        _ task: TaskID, agent: ResourceID, claimant: String?, output: Node, now: Timestamp, inPlace: Bool = false
    ) async throws(RunError) -> (StepRecord, RunTask?) {
        let done: (StepRecord, RunTask?)?
        if inPlace, gateway.takesTasks(claimant) {
            done = try operations.completeAndClaimIfFree(task, agent: agent, claimant: claimant, output: output, now: now)
            let store = operations.store
            if done != nil, store.hasUnfinishedWrites { queue.async { store.finishWrites() } }
        } else {
            done = nil
        }
        let (record, next) =
            if let done {
                done
            } else {
                try await perform { () throws(RunError) -> (StepRecord, RunTask?) in
                    // A process being stopped answers what it holds, and takes nothing new (`poll`).
                    guard self.gateway.takesTasks(claimant) else {
                        return (try self.operations.complete(task, agent: agent, output: output, now: now), nil)
                    }
                    return try self.operations.completeAndClaim(task, agent: agent, claimant: claimant, output: output, now: now)
                }
            }
        gateway.release(task, agent: agent)
        attemptEnded(task, agent: agent, record: record, failed: nil)
        if let next { claimed(next, agent: agent) }
        return (record, next)
    }

    func fail(_ task: TaskID, agent: ResourceID, error message: String, retry: Bool, now: Timestamp) async throws(RunError)
        -> StepRecord
    {
        let record = try await perform { () throws(RunError) in
            try self.operations.fail(task, agent: agent, error: message, retry: retry, now: now, random: Double.random(in: 0..<1))
        }
        gateway.release(task, agent: agent)
        attemptEnded(task, agent: agent, record: record, failed: message)
        return record
    }

    /// The attempt's duration and span: from its claim here, or from the step's start
    /// when it was claimed before this controller started.
    private func attemptEnded(_ task: TaskID, agent: ResourceID, record: StepRecord, failed: String?) {
        let claimed = traced.withLock { $0.claimed.removeValue(forKey: task) }
        var timed = record
        if let claimed { timed.startedAt = claimed }
        gateway.observeAttempt(task, agent: agent, record: timed, failed: failed)
    }

    /// The `invoke_workflow` span of each run an attempt was traced of, once it ended
    /// (by its last step, a sweep, a decision or a cancel in another process).
    public func traceEndedRuns() async {
        let runs = traced.withLock { $0.runs }
        guard !runs.isEmpty else { return }
        // A run that ended, or is gone from the state (deleted with its workflow), is let go.
        let found =
            (try? await perform(reading: true) { () throws(RunError) -> [(RunID, RunRecord?)] in
                do throws(StoreError) {
                    return try self.reads.store.readRuns { reader throws(StoreError) in
                        try runs.map { id throws(StoreError) in (id, try reader.run(id)) }
                    }
                } catch {
                    throw RunError(error)
                }
            }) ?? []
        let done = found.filter { $0.1 == nil || $0.1?.endedAt != nil }
        guard !done.isEmpty else { return }
        traced.withLock { traced in
            for (id, _) in done { traced.runs.remove(id) }
            traced.claimed = traced.claimed.filter { traced.runs.contains($0.key.run) }
        }
        let ended = done.compactMap { $0.1 }
        for run in ended { gateway.observeRunEnded(run) }
    }

    /// What an answer says of the task; `next` (when asked for) is the agent's next
    /// task, or null.
    static func state(of record: StepRecord, _ task: TaskID, next: RunTask?? = nil) -> JSONValue {
        .object([
            ("task", .string(task.description)), ("state", .string(record.state.rawValue)),
            ("retryAt", record.state == .ready ? record.readyAt.map { .string($0.description) } : nil),
            ("next", next.map { $0?.json ?? .null }),
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
    /// while another process writes. `reading` calls run on the readers' connection
    /// (`reads`), which never waits for a writer.
    func perform<T: Sendable>(reading: Bool = false, _ body: @escaping @Sendable () throws(RunError) -> T) async throws(RunError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, RunError>, Never>) in
            (reading ? readQueue : queue).async {
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
