import COrlSpawn
import Dispatch
import Glibc
public import OrlCore
import Synchronization

/// Stdio servers (MCP servers run as a `command`): started like an agent (its own
/// session, exactly the given environment, no descriptor of the controller's, the
/// sandbox it asks for) but with pipes on its standard input and output, which orl
/// speaks its protocol on, and its standard error appended to a log. Reaped by the
/// runtime's `stop` and `exitStatus`, as agents are.
extension ProcessRuntime: StdioLauncher {
    public func launch(
        _ invocation: StdioInvocation, maxLineBytes: Int, onLine: @escaping @Sendable ([UInt8]) -> Void,
        onClose: @escaping @Sendable () -> Void
    ) throws(RuntimeError) -> any StdioChild {
        func failure(_ reason: String) -> RuntimeError { RuntimeError("cannot start \(invocation.command): \(reason)") }
        for text in [invocation.command, invocation.workingDirectory, invocation.logFile] + invocation.arguments
        where text.utf8.contains(0) {
            throw failure("'\(text.replacing("\0", with: "\\0"))' contains a NUL character")
        }
        for (name, value) in invocation.environment where name.isEmpty || name.contains("=") || (name + value).utf8.contains(0) {
            throw failure("invalid environment variable \(name.replacing("\0", with: "\\0"))")
        }
        guard invocation.workingDirectory.hasPrefix("/"), invocation.logFile.hasPrefix("/") else {
            throw failure("the working directory and the log file must be absolute paths")
        }
        try createDirectories(parentOf: invocation.logFile, failure)
        try createDirectories(parentOf: invocation.workingDirectory + "/x", failure)
        let path = try Self.resolve(
            invocation.command, path: invocation.environment["PATH"], workingDirectory: invocation.workingDirectory, failure)
        let argv = CStringArray([invocation.command] + invocation.arguments)
        let envp = CStringArray(invocation.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
        guard argv.isComplete && envp.isComplete else { throw failure("out of memory") }

        var input: [Int32] = [-1, -1]
        var output: [Int32] = [-1, -1]
        guard orl_pipe_cloexec(&input) == 0, orl_pipe_cloexec(&output) == 0 else {
            let reason = describeErrno(errno)
            for fd in input + output where fd >= 0 { close(fd) }
            throw failure("cannot create pipes: \(reason)")
        }
        let log = open(invocation.logFile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard log >= 0 else {
            let reason = describeErrno(errno)
            for fd in input + output { close(fd) }
            throw failure("cannot open the log file \(invocation.logFile): \(reason)")
        }
        func closeAll() { for fd in input + output + [log] where fd >= 0 { close(fd) } }
        var sandbox: PreparedSandbox?
        if var wanted = invocation.sandbox {
            // No way out at all (no API listener); cgroups of its own, as an agent's.
            wanted.apiPort = nil
            do throws(RuntimeError) {
                sandbox = try Self.prepareSandbox(
                    wanted, key: invocation.cgroupKey.isEmpty ? "mcp" : invocation.cgroupKey, program: path,
                    arguments: invocation.arguments, searchPath: invocation.environment["PATH"],
                    workingDirectory: invocation.workingDirectory, limits: invocation.limits, failure)
            } catch {
                closeAll()
                throw error
            }
        }
        var limits = orl_spawn_limits(
            address_space: Int64((sandbox?.cgroups.memoryByCgroup == true ? nil : invocation.limits.addressSpace) ?? -1),
            open_files: Int64(invocation.limits.openFiles ?? -1), cpu_seconds: Int64(invocation.limits.cpuSeconds ?? -1))
        var pid: pid_t = 0
        var step = ORL_SPAWN_OK
        var code: Int32 = 0
        var statusPipe: Int32 = -1
        let stdio: [Int32] = [input[0], output[1], log]
        for delay in [0, 5, 10, 20, 40, 80] {
            // ETXTBSY: see `start`.
            if delay > 0 { usleep(UInt32(delay * 1000)) }
            code = stdio.withUnsafeBufferPointer { fds in
                if let sandbox {
                    return sandbox.c.withPointer { pointer in
                        orl_spawn_sandboxed(
                            path, argv.pointers, envp.pointers, invocation.workingDirectory, nil, fds.baseAddress, &limits, pointer, &pid,
                            nil, &statusPipe, &step)
                    }
                }
                return orl_spawn_stdio(
                    path, argv.pointers, envp.pointers, invocation.workingDirectory, fds.baseAddress, &limits, &pid, &step)
            }
            guard code == ETXTBSY && step == ORL_SPAWN_EXEC else { break }
        }
        close(input[0])
        close(output[1])
        close(log)
        guard code == 0 else {
            if let sandbox { SandboxCgroups.remove(sandbox.cgroups.directories) }
            close(input[1])
            close(output[0])
            let reason =
                step == ORL_SPAWN_CHDIR
                ? "cannot change to the working directory \(invocation.workingDirectory): \(describeErrno(code))"
                : "cannot \(String(cString: orl_spawn_step_description(step))): \(describeErrno(code))"
                    + (sandbox != nil && step.rawValue >= ORL_SPAWN_NAMESPACES.rawValue
                        ? "; the sandbox cannot be had on this host (see docs/sandbox.md)" : "")
            throw failure(reason)
        }
        guard let stat = ProcStat.read(pid) else {
            _ = kill(-pid, SIGKILL)
            if let sandbox { SandboxCgroups.remove(sandbox.cgroups.directories) }
            if statusPipe >= 0 { close(statusPipe) }
            close(input[1])
            close(output[0])
            throw failure("started as pid \(pid) but its /proc entry vanished at once; is SIGCHLD ignored in the controller?")
        }
        let identity = ProcessIdentity(pid: pid, startTime: stat.startTime)
        state.withLock {
            $0.children[pid] = stat.startTime
            // Read when it is reaped, as an agent's: a signal is reported as that signal.
            if statusPipe >= 0 { $0.statusPipes[pid] = statusPipe }
            // Read (what a limit did) and removed when it is reaped.
            if let sandbox { $0.cgroups[pid] = sandbox.cgroups.directories }
        }
        let child = StdioChildProcess(runtime: self, identity: identity, input: input[1])
        let reading = output[0]
        let leader = pid
        // A blocking read loop for the program's lifetime: on a thread of its own, neither
        // the cooperative pool nor Dispatch's global queues (as wide as the cores, which a
        // few idle servers would otherwise hold for good).
        startThread {
            StdioChildProcess.readLines(reading, pid: leader, maxLineBytes: maxLineBytes, onLine: onLine)
            close(reading)
            onClose()
        }
        return child
    }

    public func confinement(of invocation: StdioInvocation) -> String {
        confinement(
            of: ProcessSpec(
                agent: ResourceID(kind: "Tool", name: invocation.cgroupKey), command: invocation.command, arguments: invocation.arguments,
                environment: [], workingDirectory: invocation.workingDirectory, limits: invocation.limits, logFile: invocation.logFile,
                gracePeriod: .seconds(2), codeDirectory: nil, sandbox: invocation.sandbox))
    }
}

final class StdioChildProcess: StdioChild {
    let identity: ProcessIdentity
    private let runtime: ProcessRuntime
    /// -1 once closed; only touched on `writes`.
    private let input: Mutex<Int32>
    private let writes = DispatchQueue(label: "orl.stdio.write")

    init(runtime: ProcessRuntime, identity: ProcessIdentity, input: Int32) {
        self.runtime = runtime
        self.identity = identity
        self.input = Mutex(input)
    }

    func write(_ bytes: [UInt8]) async -> Bool {
        await withCheckedContinuation { continuation in
            writes.async {
                let fd = self.input.withLock { $0 }
                continuation.resume(returning: fd >= 0 && withSIGPIPEBlocked { Self.writeAll(fd, bytes) })
            }
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, bytes.count - written) }
            if count > 0 {
                written += count
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                return false
            }
        }
        return true
    }

    var exitNote: String? { runtime.exitNote(identity) }

    func stop(grace: Duration) async -> ProcessExit? {
        // Its input closed first: a server that reads to the end leaves by itself. On
        // the write queue, after any write in progress (which the signals end).
        writes.async {
            self.input.withLock { fd in
                if fd >= 0 { close(fd) }
                fd = -1
            }
        }
        return await runtime.stop(identity, grace: grace)
    }

    static func readLines(_ fd: Int32, pid: pid_t, maxLineBytes: Int, onLine: @Sendable ([UInt8]) -> Void) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var line: [UInt8] = []
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            var start = 0
            for index in 0..<count where buffer[index] == UInt8(ascii: "\n") {
                line += buffer[start..<index]
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                if !line.isEmpty { onLine(line) }
                line.removeAll(keepingCapacity: true)
                start = index + 1
            }
            line += buffer[start..<count]
            if line.count > maxLineBytes {
                // A message larger than any orl accepts: the program is ended rather
                // than buffered without bound.
                _ = kill(-pid, SIGKILL)
                return
            }
        }
    }
}

/// Runs `body` on a new detached POSIX thread (one that may block for as long as it
/// likes without holding a thread of the cooperative pool).
public func startThread(_ body: @escaping @Sendable () -> Void) {
    // No thread to be had: the work still runs, on a queue.
    if !tryStartThread(body) { DispatchQueue.global().async { body() } }
}

/// Starts `body` on a new detached POSIX thread, and says whether one could be had
/// (`body` does not run when not).
public func tryStartThread(_ body: @escaping @Sendable () -> Void) -> Bool {
    final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let created = pthread_create(
        &thread, nil,
        { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, context)
    guard created == 0 else {
        Unmanaged<Box>.fromOpaque(context).release()
        return false
    }
    pthread_detach(thread)
    return true
}
