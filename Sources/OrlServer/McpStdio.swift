import Dispatch
public import OrlCore
import OrlJSON
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The stdio MCP servers orl runs (a Tool of type mcp with `spec.mcp.command`): one
/// process per server configuration, started at its first use, spoken to in
/// newline-delimited JSON-RPC on its standard input and output, its standard error in
/// its log. A server that exits is started again at a later call, no sooner than its
/// backoff (doubling from `firstBackoff` up to `longestBackoff`); one whose Tool
/// changes is stopped when the new configuration is first used, and `stopIdle` stops
/// those no call used for a while.
public final class McpStdioServers: Sendable {
    let launcher: (any StdioLauncher)?
    let log: @Sendable (ControllerEvent) -> Void
    let clock: @Sendable () -> Timestamp
    let maxMessageBytes: Int
    let firstBackoff: Duration
    let longestBackoff: Duration
    private let servers = Mutex<[McpUpstream.Endpoint: McpStdioServer]>([:])

    /// `launcher` nil: stdio servers are unavailable, and calls to them say so.
    public init(
        launcher: (any StdioLauncher)?, log: @escaping @Sendable (ControllerEvent) -> Void = { _ in },
        clock: @escaping @Sendable () -> Timestamp = { Timestamp(milliseconds: 0) }, maxMessageBytes: Int = 16 << 20,
        firstBackoff: Duration = .seconds(1), longestBackoff: Duration = .seconds(60)
    ) {
        self.launcher = launcher
        self.log = log
        self.clock = clock
        self.maxMessageBytes = maxMessageBytes
        self.firstBackoff = firstBackoff
        self.longestBackoff = longestBackoff
    }

    func request(_ endpoint: McpUpstream.Endpoint, method: String, params: JSONValue) async throws(McpUpstream.Failure) -> Node {
        guard let launcher, let invocation = endpoint.stdio else {
            throw McpUpstream.Failure("MCP server \(endpoint.server.name) is a stdio server, and nothing here can run it")
        }
        let (server, replaced) = servers.withLock { map -> (McpStdioServer, [McpStdioServer]) in
            if let known = map[endpoint] { return (known, []) }
            // Another configuration of the same Tool (its command or its credential
            // changed): the process of the old one is no longer needed.
            let old = map.filter { $0.key.server == endpoint.server }
            for key in old.keys { map[key] = nil }
            let server = McpStdioServer(endpoint: endpoint, invocation: invocation, launcher: launcher, owner: self)
            map[endpoint] = server
            return (server, Array(old.values))
        }
        for old in replaced { await old.stop(because: "its Tool changed") }
        return try await server.request(method: method, params: params)
    }

    /// The processes running now, by server.
    /// What confines the server `endpoint` runs, limits included (nil: not a stdio server).
    public func confinement(of endpoint: McpUpstream.Endpoint) -> String? {
        guard let launcher, let invocation = endpoint.stdio else { return nil }
        return launcher.confinement(of: invocation)
    }

    public func running() -> [ResourceID: ProcessIdentity] {
        let all = servers.withLock { Array($0.values) }
        var result: [ResourceID: ProcessIdentity] = [:]
        for server in all { if let identity = server.identity { result[server.endpoint.server] = identity } }
        return result
    }

    /// Stops the servers no call used for `idle`.
    public func stopIdle(after idle: Duration) async {
        let now = ContinuousClock.now
        let idleOnes = servers.withLock { map -> [McpStdioServer] in
            let idleOnes = map.filter { now - $0.value.lastUsed > idle }
            for key in idleOnes.keys { map[key] = nil }
            return Array(idleOnes.values)
        }
        for server in idleOnes { await server.stop(because: "no call used it for \(idle.compactDescription)") }
    }

    /// Stops every server (the controller is stopping).
    public func stopAll() async {
        let all = servers.withLock { map -> [McpStdioServer] in
            defer { map = [:] }
            return Array(map.values)
        }
        for server in all { await server.stop(because: "orl is stopping") }
    }
}

/// One stdio server's process and the requests waiting for its answers.
final class McpStdioServer: Sendable {
    typealias Failure = McpUpstream.Failure
    typealias Reply = CheckedContinuation<Result<Node, Failure>, Never>

    struct State: Sendable {
        var child: (any StdioChild)?
        /// Which process the reader callbacks belong to.
        var generation = 0
        var ready = false
        var starting: Task<Result<Void, Failure>, Never>?
        var pending: [Int: Reply] = [:]
        var crashes = 0
        var notBefore: ContinuousClock.Instant?
        var lastFailure: String?
        /// Why initialize failed, for the exit that follows.
        var initFailure: String?
        var startedAt = ContinuousClock.now
        var lastUsed = ContinuousClock.now
        var stopped = false
    }

    let endpoint: McpUpstream.Endpoint
    let invocation: StdioInvocation
    let launcher: any StdioLauncher
    let log: @Sendable (ControllerEvent) -> Void
    let clock: @Sendable () -> Timestamp
    let maxMessageBytes: Int
    let firstBackoff: Duration
    let longestBackoff: Duration
    let state = Mutex(State())
    let ids = Atomic<Int>(0)

    init(endpoint: McpUpstream.Endpoint, invocation: StdioInvocation, launcher: any StdioLauncher, owner: McpStdioServers) {
        self.endpoint = endpoint
        self.invocation = invocation
        self.launcher = launcher
        self.log = owner.log
        self.clock = owner.clock
        self.maxMessageBytes = owner.maxMessageBytes
        self.firstBackoff = owner.firstBackoff
        self.longestBackoff = owner.longestBackoff
    }

    var name: String { endpoint.server.name }
    var identity: ProcessIdentity? { state.withLock { $0.ready ? $0.child?.identity : nil } }
    var lastUsed: ContinuousClock.Instant { state.withLock { $0.lastUsed } }

    func request(method: String, params: JSONValue) async throws(Failure) -> Node {
        try await running()
        return try await send(method, params)
    }

    /// Returns once the process runs and has answered initialize (starting it if it
    /// is not, unless it is backing off after an exit).
    private func running() async throws(Failure) {
        enum Next {
            case ready
            case wait(Task<Result<Void, Failure>, Never>)
            case refuse(String)
        }
        let next: Next = state.withLock { s in
            s.lastUsed = .now
            if s.stopped { return .refuse("MCP server \(name) was stopped") }
            if s.ready && s.child != nil { return .ready }
            if let starting = s.starting { return .wait(starting) }
            if let notBefore = s.notBefore, notBefore > .now {
                let left = notBefore - .now
                return .refuse(
                    "\(s.lastFailure ?? "MCP server \(name) exited"); orl starts it again at a call in \(left.wholeMilliseconds / 1000 + 1)s or later"
                )
            }
            let starting = Task { await self.start() }
            s.starting = starting
            return .wait(starting)
        }
        switch next {
        case .ready: return
        case .refuse(let message): throw Failure(message)
        case .wait(let starting): try await starting.value.get()
        }
    }

    private func start() async -> Result<Void, Failure> {
        let generation = state.withLock { s in
            s.generation += 1
            s.initFailure = nil
            return s.generation
        }
        let launcher = self.launcher
        let invocation = self.invocation
        let maxLineBytes = maxMessageBytes
        // fork, namespaces and mounts block: not on the cooperative pool.
        let launched: Result<any StdioChild, RuntimeError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                do throws(RuntimeError) {
                    let child = try launcher.launch(
                        invocation, maxLineBytes: maxLineBytes, onLine: { self.received($0, generation: generation) },
                        onClose: { self.closed(generation: generation) })
                    continuation.resume(returning: .success(child))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        let child: any StdioChild
        switch launched {
        case .success(let started): child = started
        case .failure(let error):
            let message = "MCP server \(name) cannot be started: \(error.message)"
            log(ControllerEvent(time: clock(), reason: .failedToStart, resource: endpoint.server, message: message))
            state.withLock { s in
                s.crashes += 1
                s.notBefore = .now + backoff(s.crashes)
                s.lastFailure = message
                s.starting = nil
            }
            return .failure(Failure(message))
        }
        state.withLock { s in
            s.child = child
            s.startedAt = .now
        }
        do throws(Failure) {
            let initialize = JSONValue.object([
                ("protocolVersion", .string(McpUpstream.protocolVersion)), ("capabilities", .object([])),
                ("clientInfo", .object([("name", .string("orl")), ("version", .string("1"))])),
            ])
            let result = try await send("initialize", initialize)
            let version = result["protocolVersion"]?.string ?? McpUpstream.protocolVersion
            guard McpUpstream.protocolVersions.contains(version) else {
                throw Failure(
                    "MCP server \(name) speaks protocol \(version); orl speaks \(McpUpstream.protocolVersions.joined(separator: ", "))")
            }
            let initialized = JSONValue.object([("jsonrpc", .string("2.0")), ("method", .string("notifications/initialized"))])
            guard await child.write(Array((initialized.compactRendered() + "\n").utf8)) else {
                throw Failure("MCP server \(name) stopped reading its input")
            }
            state.withLock { s in
                s.ready = true
                s.starting = nil
            }
            let confinement = invocation.sandbox == nil ? "unconfined (isolation none)" : "in a strict sandbox with no network"
            log(
                ControllerEvent(
                    time: clock(), reason: .started, resource: endpoint.server, pid: child.identity.pid,
                    message: "MCP server \(name) started \(confinement), protocol \(version); its stderr goes to \(invocation.logFile)"))
            return .success(())
        } catch {
            state.withLock { $0.initFailure = error.message }
            // Its exit (`closed`) records the failure and the backoff.
            _ = await child.stop(grace: .milliseconds(200))
            let message = state.withLock { s in
                s.starting = nil
                return s.lastFailure ?? error.message
            }
            return .failure(Failure(message))
        }
    }

    /// One request, answered or failed within the endpoint's timeout.
    private func send(_ method: String, _ params: JSONValue) async throws(Failure) -> Node {
        let id = ids.wrappingAdd(1, ordering: .relaxed).newValue
        let line = Array(
            (JSONValue.object([("jsonrpc", .string("2.0")), ("id", .int(id)), ("method", .string(method)), ("params", params)])
                .compactRendered() + "\n").utf8)
        guard let child = state.withLock({ $0.child }) else { throw Failure("MCP server \(name) is not running") }
        let timeout = endpoint.timeout
        let name = self.name
        let timer = Task {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled {
                self.resolve(id, .failure(Failure("MCP server \(name) did not answer \(method) within \(timeout.compactDescription)")))
            }
        }
        let result: Result<Node, Failure> = await withCheckedContinuation { (reply: Reply) in
            let current = state.withLock { s in
                guard s.child === child else { return false }
                s.pending[id] = reply
                return true
            }
            guard current else {
                reply.resume(returning: .failure(Failure("MCP server \(name) exited")))
                return
            }
            Task {
                if await !child.write(line) { self.resolve(id, .failure(Failure("MCP server \(name) stopped reading its input"))) }
            }
        }
        timer.cancel()
        return try result.get()
    }

    private func resolve(_ id: Int, _ result: Result<Node, Failure>) {
        state.withLock { $0.pending.removeValue(forKey: id) }?.resume(returning: result)
    }

    /// A line of the server's output: an answer, a request of its own, or noise.
    private func received(_ line: [UInt8], generation: Int) {
        // Not JSON (a server that prints on its standard output): ignored.
        guard let message = try? JSONParser.parse(bytes: line, file: "<mcp>"), message.members != nil else { return }
        if let method = message["method"]?.string {
            guard let id = message["id"] else { return }  // a notification: nothing to do
            // orl declares no client capability (no roots, sampling or elicitation):
            // only ping is answered.
            let reply: JSONValue =
                method == "ping"
                ? .object([("jsonrpc", .string("2.0")), ("id", JSONValue(id)), ("result", .object([]))])
                : .object([
                    ("jsonrpc", .string("2.0")), ("id", JSONValue(id)),
                    ("error", .object([("code", .int(-32601)), ("message", .string("orl offers no \(method)"))])),
                ])
            guard let child = state.withLock({ $0.generation == generation ? $0.child : nil }) else { return }
            Task { _ = await child.write(Array((reply.compactRendered() + "\n").utf8)) }
            return
        }
        guard let id = message["id"]?.number?.integer else { return }
        if let error = message["error"] {
            let code = error["code"]?.number?.integer.map { " \($0)" } ?? ""
            resolve(id, .failure(Failure("MCP server \(name) refused\(code): \(error["message"]?.string ?? "no message")")))
        } else {
            resolve(id, .success(message["result"] ?? Node(.object([]), at: message.location)))
        }
    }

    /// Its output closed: it exited (or is about to). Reaped; what waited fails; unless
    /// it was stopped on purpose, it backs off before the next start.
    private func closed(generation: Int) {
        let child: (any StdioChild)? = state.withLock { s in
            guard s.generation == generation else { return nil }
            let child = s.child
            s.child = nil
            s.ready = false
            return child
        }
        guard let child else { return }
        Task {
            let exit = await child.stop(grace: .milliseconds(500))
            let said = Self.lastLine(of: invocation.logFile)
            let note = child.exitNote
            let (pending, message, stopped, delay) = state.withLock { s in
                let pending = s.pending
                s.pending = [:]
                var message = "MCP server \(name) \(exit.map { "\($0)" } ?? "exited")"
                if let failure = s.initFailure { message = failure }
                // Its sandbox held: a limit ended it (or refused it processes).
                if let note { message += ": \(note)" }
                if let said, !said.isEmpty { message += "; its last words on stderr: \(said)" }
                var delay = Duration.zero
                if !s.stopped {
                    // One that ran a good while before it failed starts the count again.
                    s.crashes = ContinuousClock.now - s.startedAt > .seconds(60) ? 1 : s.crashes + 1
                    delay = backoff(s.crashes)
                    s.notBefore = .now + delay
                    s.lastFailure = message
                }
                return (pending, message, s.stopped, delay)
            }
            if !stopped {
                log(
                    ControllerEvent(
                        time: clock(), reason: .exited, resource: endpoint.server, pid: child.identity.pid,
                        message: "\(message); started again at its next call, not before \(delay.compactDescription)"))
            }
            for reply in pending.values { reply.resume(returning: .failure(Failure(message))) }
        }
    }

    func stop(because reason: String) async {
        let child: (any StdioChild)? = state.withLock { s in
            s.stopped = true
            s.ready = false
            return s.child
        }
        guard let child else { return }
        _ = await child.stop(grace: .seconds(2))
        log(
            ControllerEvent(
                time: clock(), reason: .stopped, resource: endpoint.server, pid: child.identity.pid,
                message: "MCP server \(name) stopped: \(reason)"))
    }

    private func backoff(_ crashes: Int) -> Duration {
        var delay = firstBackoff
        for _ in 1..<max(1, min(crashes, 20)) where delay < longestBackoff { delay *= 2 }
        return min(delay, longestBackoff)
    }

    /// The last non-empty line of a log (its last 4 KiB), for an error message.
    static func lastLine(of path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0 else { return nil }
        let start = max(0, size - 4096)
        var buffer = [UInt8](repeating: 0, count: Int(size - start))
        let count = pread(fd, &buffer, buffer.count, start)
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        return text.split(whereSeparator: \.isNewline).last.map { String($0.prefix(300)) }
    }
}

extension McpUpstream.Endpoint {
    /// Where orl reaches the MCP server `id` (a Tool of type mcp): its url, or the
    /// program it runs over stdio, confined as `spec.mcp.isolation` says. nil when the
    /// spec names neither.
    public static func server(
        _ id: ResourceID, spec: ToolSpec, origin: CodeOrigin?, credential: String?, stateDirectory: String,
        workingDirectory: String? = nil, logFile: String? = nil
    ) -> McpUpstream.Endpoint? {
        guard let mcp = spec.mcp else { return nil }
        if let url = mcp.url {
            return .init(server: id, url: url, headers: mcp.headers, credential: credential, timeout: spec.timeout.duration)
        }
        guard let command = mcp.command else { return nil }
        let directory = workingDirectory ?? "\(stateDirectory)/mcp/\(id.namespace)/\(id.name)"
        var environment = [
            "PATH": ProcessSpec.defaultSearchPath, "LANG": "C.UTF-8", "HOME": directory, "ORL_TOOL": id.name, "ORL_NAMESPACE": id.namespace,
        ]
        if let credential { environment[mcp.credentialEnv] = credential }
        var (program, arguments) = (command.command, command.args)
        if let origin {
            environment["ORL_CODE_DIR"] = origin.root
            (program, arguments) = origin.resolve(command: program, arguments: arguments, exists: { access($0, F_OK) == 0 })
        }
        // Its own sandbox, not an agent's: one process serves every agent that may
        // call it, and none of them is its way out. No API port: no network at all.
        // Limits as an agent's: memory, pids and cpu by its own cgroups where the host
        // has them (rlimits else), open files and CPU time by rlimits.
        let limits = mcp.limits
        let sandbox =
            mcp.isolation == .strict
            ? SandboxSpec(
                stateDirectory: stateDirectory, writable: [directory], readOnly: origin.map { [$0.root] } ?? [], memory: limits.memory,
                pids: limits.pids, cpu: limits.cpu) : nil
        let invocation = StdioInvocation(
            command: program, arguments: arguments, environment: environment, workingDirectory: directory,
            logFile: logFile ?? "\(stateDirectory)/logs/mcp/\(id.namespace)/\(id.name).log", sandbox: sandbox,
            limits: ProcessLimits(addressSpace: limits.memory, openFiles: limits.openFiles, cpuSeconds: limits.cpuSeconds),
            cgroupKey: "mcp.\(id.namespace).\(id.name)")
        return .init(server: id, stdio: invocation, credential: credential, timeout: spec.timeout.duration)
    }
}

extension AgentAPI {
    /// The stdio MCP servers running now, by server.
    public func stdioServers() -> [ResourceID: ProcessIdentity] { mcp.stdio?.running() ?? [:] }
}
