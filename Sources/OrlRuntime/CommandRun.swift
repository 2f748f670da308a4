import COrlSpawn
import Dispatch
import Glibc
public import OrlCore

/// Command Tools: a program run to completion for an agent, with the same care as an
/// agent process (its own session and process group, no descriptor or signal
/// disposition of the controller's, exactly the given environment), its input on a
/// pipe and its output read back. Past the timeout, or once the program has exited,
/// its whole process group is killed: nothing a tool started outlives its call.
extension ProcessRuntime: CommandRunner {
    public func run(_ invocation: CommandInvocation) async throws(RuntimeError) -> CommandOutcome {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<CommandOutcome, RuntimeError>, Never>) in
            // Blocking poll and waitpid: on a thread of their own, never the cooperative pool.
            DispatchQueue.global().async {
                do throws(RuntimeError) {
                    continuation.resume(returning: .success(try Self.runToCompletion(invocation)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    /// `run`, on the calling thread: it blocks until the program has ended, so call it
    /// from a thread of its own (a timer's executor), never the cooperative pool.
    public static func runToCompletion(_ invocation: CommandInvocation) throws(RuntimeError) -> CommandOutcome {
        func failure(_ reason: String) -> RuntimeError { RuntimeError("cannot run \(invocation.command): \(reason)") }
        for text in [invocation.command, invocation.workingDirectory] + invocation.arguments where text.utf8.contains(0) {
            throw failure("'\(text.replacing("\0", with: "\\0"))' contains a NUL character")
        }
        guard invocation.workingDirectory.hasPrefix("/") else {
            throw failure("the working directory must be an absolute path, not '\(invocation.workingDirectory)'")
        }
        let path = try resolve(
            invocation.command, path: invocation.environment["PATH"], workingDirectory: invocation.workingDirectory, failure)
        let argv = CStringArray([invocation.command] + invocation.arguments)
        let envp = CStringArray(invocation.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
        guard argv.isComplete && envp.isComplete else { throw failure("out of memory") }

        var input: [Int32] = [-1, -1]
        var output: [Int32] = [-1, -1]
        var errors: [Int32] = [-1, -1]
        guard orl_pipe_cloexec(&input) == 0, orl_pipe_cloexec(&output) == 0, orl_pipe_cloexec(&errors) == 0 else {
            let reason = describeErrno(errno)
            for fd in input + output + errors where fd >= 0 { close(fd) }
            throw failure("cannot create pipes: \(reason)")
        }
        var limits = orl_spawn_limits(address_space: -1, open_files: -1, cpu_seconds: -1)
        var pid: pid_t = 0
        var step = ORL_SPAWN_OK
        let stdio: [Int32] = [input[0], output[1], errors[1]]
        var sandbox: PreparedSandbox?
        if var wanted = invocation.sandbox {
            // A tool has no way out at all (no API listener), and no cgroups of its
            // own: its timeout bounds it.
            wanted.apiPort = nil
            wanted.memory = nil
            wanted.cpu = nil
            do throws(RuntimeError) {
                sandbox = try prepareSandbox(
                    wanted, key: "", program: path, arguments: invocation.arguments, searchPath: invocation.environment["PATH"],
                    workingDirectory: invocation.workingDirectory, limits: ProcessLimits(), failure)
            } catch {
                for fd in input + output + errors { close(fd) }
                throw error
            }
        }
        var statusPipe: Int32 = -1
        let code = stdio.withUnsafeBufferPointer { fds in
            if let sandbox {
                return sandbox.c.withPointer { pointer in
                    orl_spawn_sandboxed(
                        path, argv.pointers, envp.pointers, invocation.workingDirectory, nil, fds.baseAddress, &limits, pointer, &pid, nil,
                        &statusPipe, &step)
                }
            }
            return orl_spawn_stdio(path, argv.pointers, envp.pointers, invocation.workingDirectory, fds.baseAddress, &limits, &pid, &step)
        }
        close(input[0])
        close(output[1])
        close(errors[1])
        guard code == 0 else {
            for fd in [input[1], output[0], errors[0]] { close(fd) }
            let reason =
                step == ORL_SPAWN_CHDIR
                ? "cannot change to the working directory \(invocation.workingDirectory): \(describeErrno(code))"
                : "cannot \(String(cString: orl_spawn_step_description(step))): \(describeErrno(code))"
                    + (sandbox != nil && step.rawValue >= ORL_SPAWN_NAMESPACES.rawValue ? "; \(isolationHint)" : "")
            throw failure(reason)
        }
        let deadline = ContinuousClock.now + invocation.timeout
        var io = PipeIO(input: input[1], output: output[0], errors: errors[0], pending: invocation.input, limit: invocation.maxOutputBytes)
        let finished = withSIGPIPEBlocked { io.pump(until: deadline) }
        var exit: ProcessExit? = nil
        if finished {
            // Its output is closed; give the leader until the deadline to exit.
            exit = waitForExit(pid, until: deadline)
        }
        // Whatever is left of its group goes with it; its zombie leader still holds
        // the group's ID, so -pid cannot be anyone else's.
        _ = kill(-pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if exit == nil && finished { exit = decode(status) }
        if statusPipe >= 0 {
            // A sandbox's init exits with 128+N for a program killed by signal N; the
            // program's own status says which it was.
            var programStatus: Int32 = 0
            if exit != nil && orl_read_program_status(statusPipe, &programStatus) == 1 { exit = decode(programStatus) }
            close(statusPipe)
        }
        io.closeAll()
        return CommandOutcome(exit: exit, stdout: io.stdout, stderr: io.stderr, truncated: io.truncated)
    }

    /// The leader's exit once it has exited, or nil at the deadline (left unreaped).
    private static func waitForExit(_ pid: pid_t, until deadline: ContinuousClock.Instant) -> ProcessExit? {
        // Woken by its end (or the deadline); the loop below then reads its status at
        // once, and polls only where no pidfd can be had.
        if ProcessEnd.wait(for: pid, until: deadline) == false { return nil }
        var interval: UInt32 = 200
        while true {
            var status: Int32 = 0
            // WNOWAIT: leave it a zombie, so its group ID stays reserved for the kill.
            var info = siginfo_t()
            let result = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
            if result == 0 && info._sifields._sigchld.si_pid == pid {
                let code = info._sifields._sigchld.si_status
                status = info.si_code == CLD_EXITED ? (code & 0xff) << 8 : code & 0x7f
                return decode(status)
            }
            if ContinuousClock.now >= deadline { return nil }
            usleep(interval)
            interval = min(interval * 2, 20_000)
        }
    }
}

/// Writing to a program that closed its input raises SIGPIPE, which would end the
/// controller: blocked in this thread while `body` runs (the write fails with EPIPE
/// instead), and one left pending is taken before the mask is restored.
func withSIGPIPEBlocked<T>(_ body: () -> T) -> T {
    var pipeSignal = sigset_t()
    sigemptyset(&pipeSignal)
    sigaddset(&pipeSignal, SIGPIPE)
    var previous = sigset_t()
    pthread_sigmask(SIG_BLOCK, &pipeSignal, &previous)
    let result = body()
    var pending = sigset_t()
    sigpending(&pending)
    if sigismember(&pending, SIGPIPE) == 1 {
        var zero = timespec(tv_sec: 0, tv_nsec: 0)
        _ = sigtimedwait(&pipeSignal, nil, &zero)
    }
    pthread_sigmask(SIG_SETMASK, &previous, nil)
    return result
}

/// Feeds a child's standard input and drains its output and error with poll(2),
/// without blocking on any one of them.
private struct PipeIO {
    var input: Int32
    var output: Int32
    var errors: Int32
    var pending: [UInt8]
    var written = 0
    let limit: Int
    var stdout: [UInt8] = []
    var stderr: [UInt8] = []
    var truncated = false

    init(input: Int32, output: Int32, errors: Int32, pending: [UInt8], limit: Int) {
        self.input = input
        self.output = output
        self.errors = errors
        self.pending = pending
        self.limit = limit
        for fd in [input, output, errors] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        if pending.isEmpty { closeInput() }
    }

    /// Until stdout and stderr are both closed (true) or the deadline passes (false).
    mutating func pump(until deadline: ContinuousClock.Instant) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while output >= 0 || errors >= 0 {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return false }
            var fds: [pollfd] = []
            if input >= 0 { fds.append(pollfd(fd: input, events: Int16(POLLOUT), revents: 0)) }
            if output >= 0 { fds.append(pollfd(fd: output, events: Int16(POLLIN), revents: 0)) }
            if errors >= 0 { fds.append(pollfd(fd: errors, events: Int16(POLLIN), revents: 0)) }
            let milliseconds = Int32(min(min(left.wholeMilliseconds, 1000) + 1, 1000))
            let ready = poll(&fds, nfds_t(fds.count), milliseconds)
            if ready < 0 && errno != EINTR { return false }
            guard ready > 0 else { continue }
            for entry in fds where entry.revents != 0 {
                if entry.fd == input {
                    let count = pending.withUnsafeBytes { bytes in
                        Glibc.write(input, bytes.baseAddress! + written, pending.count - written)
                    }
                    if count > 0 { written += count }
                    // EPIPE: the program does not read its input; that is its business.
                    if written >= pending.count || (count < 0 && errno != EAGAIN && errno != EINTR) { closeInput() }
                } else {
                    let count = read(entry.fd, &buffer, buffer.count)
                    if count > 0 {
                        let room = max(0, limit - (entry.fd == output ? stdout.count : stderr.count))
                        if count > room { truncated = true }
                        if entry.fd == output {
                            stdout += buffer[0..<min(count, room)]
                        } else {
                            stderr += buffer[0..<min(count, room)]
                        }
                    } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                        close(entry.fd)
                        if entry.fd == output { output = -1 } else { errors = -1 }
                    }
                }
            }
        }
        return true
    }

    mutating func closeInput() {
        if input >= 0 { close(input) }
        input = -1
    }

    mutating func closeAll() {
        closeInput()
        if output >= 0 { close(output) }
        if errors >= 0 { close(errors) }
        output = -1
        errors = -1
    }
}
