import COrlSpawn
import Dispatch
import Glibc
public import OrlCore
import Synchronization

/// Agent processes as plain Linux processes: each in its own session and process
/// group, stdout and stderr appended to its log file, identified by PID and start time
/// so that a reused PID is never taken for it, and left running when the controller
/// exits so that the next controller can adopt it.
///
/// Children this instance started are reaped by `exitStatus` and `stop` (with
/// `waitpid` on their own PID only, never `waitpid(-1)`, so other code in the
/// controller that waits for its own children is not disturbed). The controller must
/// not set SIGCHLD to SIG_IGN: the kernel would then reap the children itself, and
/// their exit status would be lost (they would be reported as adopted ones are).
///
/// Linux only: it relies on /proc, `close_range` and process-group semantics.
public final class ProcessRuntime: AgentRuntime {
    /// Where a bare command name is looked up when the agent's environment has no PATH.
    public static let defaultSearchPath = ProcessSpec.defaultSearchPath

    /// How long `stop` waits for the group to disappear after SIGKILL before giving
    /// up (a process in uninterruptible sleep, such as on a hung NFS mount, can outlast
    /// SIGKILL for a long time).
    static let killTimeout: Duration = .seconds(5)

    struct State: ~Copyable {
        /// Children started here and not reaped yet: PID to start time.
        var children: [Int32: UInt64] = [:]
        /// Sandboxed children's cgroup directories, removed once they are reaped.
        var cgroups: [Int32: [String]] = [:]
        /// Sandboxed children's status pipes (see `orl_spawn_sandboxed`), read once reaped.
        var statusPipes: [Int32: Int32] = [:]
        /// Why a sandboxed process ended, when one of its limits ended it.
        var notes: [ProcessIdentity: String] = [:]
        /// Exits already reaped, so that asking again gives the same answer; bounded,
        /// oldest first out.
        var exits: [ProcessIdentity: ProcessExit] = [:]
        var exitOrder: [ProcessIdentity] = []
        /// Watched processes whose end is not reported yet (see `watch`).
        var watches: Set<ProcessIdentity> = []
        /// Sent SIGTERM by `terminate`, not yet stopped: `stop` does not send it again.
        var terminated: Set<ProcessIdentity> = []
        /// Children that are a sandbox's init: once one has ended, its whole group has
        /// (an init's exit kills and waits for everything in its PID namespace, and
        /// nothing outside it can be in its session).
        var sandboxed: Set<Int32> = []

        mutating func remember(_ exit: ProcessExit, of process: ProcessIdentity) {
            exits[process] = exit
            exitOrder.append(process)
            if exitOrder.count > 1024 {
                let oldest = exitOrder.removeFirst()
                exits[oldest] = nil
                notes[oldest] = nil
            }
        }
    }

    let state = Mutex(State())
    /// Who serves orl's API on a sandboxed agent's listener; nil: nobody (command tools).
    private let listeners: (any SandboxListeners)?

    public init(listeners: (any SandboxListeners)? = nil) {
        self.listeners = listeners
    }

    // MARK: Starting

    public func start(_ spec: ProcessSpec) throws(RuntimeError) -> ProcessIdentity {
        func failure(_ reason: String) -> RuntimeError {
            RuntimeError("cannot start agent \(spec.agent): \(reason)")
        }
        try validate(spec, failure)
        let path = try resolveCommand(spec, failure)
        try createDirectories(parentOf: spec.logFile, failure)

        let argv = CStringArray([spec.command] + spec.arguments)
        let envp = CStringArray(spec.environment.map { "\($0.name)=\($0.value)" })
        guard argv.isComplete && envp.isComplete else { throw failure("out of memory") }
        var sandbox: PreparedSandbox?
        if let wanted = spec.sandbox {
            sandbox = try Self.prepareSandbox(
                wanted, key: "\(spec.agent.namespace).\(spec.agent.name)", program: path, arguments: spec.arguments,
                searchPath: spec.environment.first(where: { $0.name == "PATH" })?.value, workingDirectory: spec.workingDirectory,
                limits: spec.limits, failure)
        }
        var limits = orl_spawn_limits(
            address_space: Int64((sandbox?.cgroups.memoryByCgroup == true ? nil : spec.limits.addressSpace) ?? -1),
            open_files: Int64(spec.limits.openFiles ?? -1),
            cpu_seconds: Int64(spec.limits.cpuSeconds ?? -1)
        )
        var pid: pid_t = 0
        var step = ORL_SPAWN_OK
        var code: Int32 = 0
        var listener: Int32 = -1
        var statusPipe: Int32 = -1
        // ETXTBSY: the program was recently written through a descriptor that a process
        // forked by another thread (anywhere in the controller) still holds between its
        // fork and its exec, a window of microseconds. Retrying briefly is the usual
        // remedy (the kernel offers nothing better); a file really held open for writing
        // still fails, after about 150 ms.
        for delay in [0, 5, 10, 20, 40, 80] {
            if delay > 0 { usleep(UInt32(delay * 1000)) }
            if let sandbox {
                code = sandbox.c.withPointer { pointer in
                    orl_spawn_sandboxed(
                        path, argv.pointers, envp.pointers, spec.workingDirectory, spec.logFile, nil, &limits, pointer, &pid, &listener,
                        &statusPipe, &step)
                }
            } else {
                code = orl_spawn(path, argv.pointers, envp.pointers, spec.workingDirectory, spec.logFile, &limits, &pid, &step)
            }
            guard code == ETXTBSY && step == ORL_SPAWN_EXEC else { break }
        }
        guard code == 0 else {
            if let sandbox { SandboxCgroups.remove(sandbox.cgroups.directories) }
            throw failure(Self.explain(step: step, code: code, path: path, spec: spec))
        }
        if listener >= 0 {
            if let listeners {
                listeners.serve(listener: listener, for: pid)
            } else {
                close(listener)
            }
        }
        if let sandbox {
            state.withLock {
                $0.cgroups[pid] = sandbox.cgroups.directories
                if statusPipe >= 0 { $0.statusPipes[pid] = statusPipe }
                $0.sandboxed.insert(pid)
            }
        }

        // The child is ours and unreaped, so its stat stays readable (as a zombie at
        // worst) until we wait for it: the start time read now is the child's.
        guard let stat = ProcStat.read(pid) else {
            // Only possible if something else reaped it (SIGCHLD ignored, waitpid(-1)).
            _ = kill(-pid, SIGKILL)
            throw failure("started as pid \(pid) but its /proc entry vanished at once; is SIGCHLD ignored in the controller?")
        }
        let identity = ProcessIdentity(pid: pid, startTime: stat.startTime)
        state.withLock { $0.children[pid] = stat.startTime }
        return identity
    }

    private func validate(_ spec: ProcessSpec, _ failure: (String) -> RuntimeError) throws(RuntimeError) {
        guard !spec.command.isEmpty else { throw failure("the command is empty") }
        guard spec.workingDirectory.hasPrefix("/") else {
            throw failure("the working directory must be an absolute path, not '\(spec.workingDirectory)'")
        }
        guard spec.logFile.hasPrefix("/") else {
            throw failure("the log file must be an absolute path, not '\(spec.logFile)'")
        }
        // A NUL would silently cut the string short on its way to execve.
        for text in [spec.command, spec.workingDirectory, spec.logFile] + spec.arguments where text.utf8.contains(0) {
            throw failure("'\(text.replacing("\0", with: "\\0"))' contains a NUL character")
        }
        for (name, value) in [
            ("addressSpace", spec.limits.addressSpace), ("openFiles", spec.limits.openFiles), ("cpuSeconds", spec.limits.cpuSeconds),
        ] {
            if let value, value < 0 {
                throw failure("the limit \(name) is \(value); it must not be negative (leave it unset for no limit)")
            }
        }
        for (name, value) in spec.environment {
            guard !name.isEmpty, !name.utf8.contains(UInt8(ascii: "=")), !name.utf8.contains(0) else {
                throw failure("invalid environment variable name '\(name.replacing("\0", with: "\\0"))'")
            }
            guard !value.utf8.contains(0) else { throw failure("the value of environment variable \(name) contains a NUL character") }
        }
    }

    /// The file to execute. A command with a slash is a path (a relative one is taken
    /// from the agent's working directory, where the agent itself would look); a bare
    /// name is searched in the PATH of the agent's own environment, as execvp would in
    /// the agent, or else in `defaultSearchPath`.
    private func resolveCommand(_ spec: ProcessSpec, _ failure: (String) -> RuntimeError) throws(RuntimeError) -> String {
        try Self.resolve(
            spec.command, path: spec.environment.first(where: { $0.name == "PATH" })?.value, workingDirectory: spec.workingDirectory,
            failure)
    }

    /// `command` as execvp would find it from `workingDirectory` with `agentPath` as PATH.
    static func resolve(
        _ command: String, path agentPath: String?, workingDirectory: String, _ failure: (String) -> RuntimeError
    ) throws(RuntimeError) -> String {
        if command.hasPrefix("/") { return command }
        if command.contains("/") { return join(workingDirectory, command) }

        let searchPath = agentPath ?? Self.defaultSearchPath
        var deniedAt: String?
        for entry in searchPath.split(separator: ":", omittingEmptySubsequences: false) {
            // An empty entry means the current directory (POSIX), here the agent's.
            let directory =
                entry.isEmpty ? workingDirectory : entry.hasPrefix("/") ? String(entry) : join(workingDirectory, String(entry))
            let candidate = join(directory, command)
            var info = stat()
            guard stat(candidate, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
            if access(candidate, X_OK) == 0 { return candidate }
            deniedAt = deniedAt ?? candidate
        }
        if let deniedAt {
            throw failure("\(command): Permission denied (\(deniedAt) is not executable)")
        }
        let origin =
            agentPath == nil ? "the default search path, as the agent's environment sets no PATH" : "the PATH of the agent's environment"
        throw failure("\(command): No such file or directory (searched \(searchPath), \(origin))")
    }

    func createDirectories(parentOf file: String, _ failure: (String) -> RuntimeError) throws(RuntimeError) {
        // Made by the first start of the directory's agents: after that one mkdir says so
        // (not one per component of the path); anything else is walked from the top, as
        // the first time, so that an error names the component that failed.
        if !file.hasSuffix("/"), let slash = file.utf8.lastIndex(of: UInt8(ascii: "/")), slash != file.utf8.startIndex,
            mkdir(String(file[..<slash]), 0o700) == 0 || errno == EEXIST
        {
            return
        }
        var prefix = ""
        for component in file.split(separator: "/").dropLast() {
            prefix += "/" + component
            // 0700: agent logs may hold anything the agent printed, secrets included.
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw failure("cannot create the log directory \(prefix): \(describeErrno(errno))")
            }
        }
    }

    private static func explain(step: orl_spawn_step, code: Int32, path: String, spec: ProcessSpec) -> String {
        let reason = describeErrno(code)
        switch step {
        case ORL_SPAWN_EXEC:
            switch code {
            case ENOENT:
                return "\(path): \(reason) (if the file exists, the interpreter named on its #! line does not)"
            case ENOEXEC:
                return "\(path): \(reason) (a script needs a #! line)"
            case ENOMEM where spec.limits.addressSpace != nil:
                return "\(path): \(reason) (the address-space limit of \(spec.limits.addressSpace!) bytes is too small to load it)"
            default:
                return "\(path): \(reason)"
            }
        case ORL_SPAWN_CHDIR:
            return "cannot change to the working directory \(spec.workingDirectory): \(reason)"
        case ORL_SPAWN_OPEN_LOG:
            return "cannot open the log file \(spec.logFile): \(reason)"
        case ORL_SPAWN_NAMESPACES, ORL_SPAWN_CGROUP, ORL_SPAWN_MOUNTS, ORL_SPAWN_NETWORK, ORL_SPAWN_PRIVILEGES, ORL_SPAWN_SECCOMP,
            ORL_SPAWN_INIT:
            return "cannot \(String(cString: orl_spawn_step_description(step))): \(reason); \(Self.isolationHint)"
        case ORL_SPAWN_RLIMIT_AS, ORL_SPAWN_RLIMIT_NOFILE, ORL_SPAWN_RLIMIT_CPU, ORL_SPAWN_RLIMIT_NPROC:
            let hint = code == EPERM ? " (a limit above the controller's own hard limit needs privileges; lower it)" : ""
            return "cannot \(String(cString: orl_spawn_step_description(step))): \(reason)\(hint)"
        default:
            return "cannot \(String(cString: orl_spawn_step_description(step))): \(reason)"
        }
    }

    // MARK: Watching

    public func isRunning(_ process: ProcessIdentity) -> Bool {
        guard let stat = ProcStat.read(process.pid) else { return false }
        return stat.startTime == process.startTime && stat.isAlive
    }

    private enum Reaped {
        case exited(ProcessExit)
        case running
        /// Not a child of this instance (adopted), or reaped by someone else.
        case notOurs
    }

    public func exitStatus(_ process: ProcessIdentity) -> ProcessExit? {
        // Under the lock, so that two callers (stop and a status poll) cannot both
        // wait for the same child and one of them lose its exit status.
        let reaped: Reaped = state.withLock { state in
            if let exit = state.exits[process] { return .exited(exit) }
            // A child's PID cannot be reused until it is reaped, so a PID found here
            // with the same start time is this very process.
            guard state.children[process.pid] == process.startTime else { return .notOurs }
            var status: Int32 = 0
            var result: pid_t
            repeat {
                result = waitpid(process.pid, &status, WNOHANG)
            } while result < 0 && errno == EINTR
            if result == 0 { return .running }
            state.children[process.pid] = nil
            state.sandboxed.remove(process.pid)
            let statusPipe = state.statusPipes.removeValue(forKey: process.pid)
            defer { if let statusPipe { close(statusPipe) } }
            let directories = state.cgroups.removeValue(forKey: process.pid) ?? []
            if let note = SandboxCgroups.containment(in: directories) { state.notes[process] = note }
            SandboxCgroups.remove(directories)
            listeners?.release(pid: process.pid)
            guard result == process.pid else { return .notOurs }  // ECHILD: reaped elsewhere
            // A sandbox's init can only exit with 128+N for a program killed by signal N
            // (and dies of a signal itself only when the whole sandbox is killed).
            var programStatus: Int32 = 0
            if let statusPipe, status & 0x7f == 0, orl_read_program_status(statusPipe, &programStatus) == 1 {
                status = programStatus
            }
            let exit = Self.decode(status)
            state.remember(exit, of: process)
            return .exited(exit)
        }
        switch reaped {
        case .exited(let exit): return exit
        case .running: return nil
        case .notOurs:
            if isRunning(process) { return nil }
            listeners?.release(pid: process.pid)
            return .signaled(signal: 0)
        }
    }

    /// A pidfd, which the kernel makes readable when the process ends, watched by a
    /// dispatch source (epoll): an idle controller asks nothing of its processes. Works
    /// for adopted processes too; a PID already reused (the process ended before the
    /// pidfd was opened) is told apart by its start time, and reported at once.
    public func watch(_ process: ProcessIdentity, onExit: @escaping @Sendable () -> Void) -> Bool {
        let fd = orl_pidfd_open(process.pid)
        if fd < 0 {
            // ESRCH: already gone (and reaped); anything else: no pidfds here.
            guard errno == ESRCH else { return false }
            onExit()
            return true
        }
        state.withLock { _ = $0.watches.insert(process) }
        // The handler keeps the source alive until it has fired and been cancelled.
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: Self.watchQueue)
        source.setEventHandler { [weak self] in
            source.cancel()
            // Once: the check below may have reported it already.
            if self?.state.withLock({ $0.watches.remove(process) }) != nil { onExit() }
        }
        source.setCancelHandler { close(fd) }
        source.resume()
        // The pidfd may name a process that took the PID over: a child's PID is kept
        // until it is reaped, an adopted one's is checked by its start time.
        if state.withLock({ $0.children[process.pid] != process.startTime }) && !isRunning(process),
            state.withLock({ $0.watches.remove(process) }) != nil
        {
            source.cancel()
            onExit()
        }
        return true
    }

    private static let watchQueue = DispatchQueue(label: "orl.process-exits")

    /// Why a sandboxed process ended when one of its limits ended it (once reaped).
    public func exitNote(_ process: ProcessIdentity) -> String? {
        state.withLock { $0.notes[process] }
    }

    /// Decodes a wait status (the W* macros are not visible to Swift).
    public static func decode(_ status: Int32) -> ProcessExit {
        let signal = status & 0x7f
        return signal == 0 ? .exited(code: (status >> 8) & 0xff) : .signaled(signal: signal)
    }

    /// A child of this instance that has exited but is not reaped yet: its PID (and so
    /// its process group ID) is still reserved, so the group may still be signalled.
    private func isUnreapedChild(_ process: ProcessIdentity) -> Bool {
        state.withLock { $0.children[process.pid] == process.startTime }
    }

    // MARK: Stopping

    /// SIGTERM to the process group, up to `grace` for the whole group to exit, then
    /// SIGKILL to the group; returns the leader's exit (`.signaled(0)` for an adopted
    /// process, whose status only its real parent could read).
    ///
    /// Idempotent: stopping a process that is gone only reports its exit. Nothing is
    /// signalled unless the PID is verified to be this process (start time), or is
    /// this instance's unreaped child. If the calling task is cancelled, the grace
    /// period is cut short and SIGKILL follows at once.
    ///
    /// Processes that left the group (a daemon that called setsid or setpgid) are not
    /// reached; only a cgroup can contain those.
    public func stop(_ process: ProcessIdentity, grace: Duration) async -> ProcessExit? {
        let result = Mutex<ProcessExit?>(nil)
        await stop([(process, grace)]) { ended in result.withLock { $0 = ended.first?.exit } }
        return result.withLock { $0 }
    }

    /// Stops them together: SIGTERM to every group at once, then each is reported as
    /// its group is gone, SIGKILL to those still there at the end of their grace
    /// period.
    ///
    /// Nothing is polled while the leaders live: each leader's pidfd announces its end
    /// (as `watch` does), so a hundred agents that exit at once are reported a moment
    /// after the last one, not at the next tick of a poll. A group whose leader has
    /// ended but whose other members live on (no event tells of those) is looked at
    /// with a backoff, as is a process no pidfd can be had for; one scan of /proc
    /// serves them all at each look.
    public func stop(
        _ processes: [(process: ProcessIdentity, grace: Duration)],
        stopped: @escaping @Sendable ([(process: ProcessIdentity, exit: ProcessExit?)]) async -> Void
    ) async {
        struct Pending {
            var deadline: ContinuousClock.Instant
            var killed = false
            /// The leader has ended (its pidfd said so, or a look found it gone).
            var leaderEnded = false
            /// No pidfd announces its end: looked at.
            var unwatched = false
        }
        let clock = ContinuousClock()
        let began = clock.now
        var pending: [ProcessIdentity: Pending] = [:]
        var ended: [(process: ProcessIdentity, exit: ProcessExit?)] = []
        // Every signal first, in one tight loop: no process waits for another's
        // bookkeeping (nor for a read of /proc).
        let terminated = state.withLock { state in
            processes.filter { state.terminated.remove($0.process) != nil }.map(\.process)
        }
        let already = Set(terminated)
        var signalled: [ProcessIdentity] = []
        for (process, grace) in processes {
            if already.contains(process) {
                pending[process] = Pending(deadline: began + grace)
                continue
            }
            guard process.pid > 1, process.pid != getpid(), process.pid != getpgrp() else {
                ended.append((process, nil))
                continue
            }
            guard isUnreapedChild(process) || isRunning(process) else {
                ended.append((process, exitStatus(process)))
                continue
            }
            _ = kill(-process.pid, SIGTERM)
            signalled.append(process)
            pending[process] = Pending(deadline: began + grace)
        }
        for process in terminated + signalled { signalMovedLeader(of: process, SIGTERM) }
        if !ended.isEmpty { await stopped(ended) }
        guard !pending.isEmpty else { return }

        let exits = Inbox<ProcessIdentity>()
        var sources: [any DispatchSourceRead] = []
        defer { for source in sources { source.cancel() } }
        for process in Array(pending.keys) {
            let fd = orl_pidfd_open(process.pid)
            guard fd >= 0 else {
                if errno == ESRCH { pending[process]?.leaderEnded = true } else { pending[process]?.unwatched = true }
                continue
            }
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: Self.watchQueue)
            source.setEventHandler {
                source.cancel()
                exits.post(process)
            }
            source.setCancelHandler { close(fd) }
            source.resume()
            sources.append(source)
            // The pidfd may name a process that took the PID over: a child's PID is kept
            // until it is reaped, an adopted one's is checked by its start time.
            if !isUnreapedChild(process) && !isRunning(process) { pending[process]?.leaderEnded = true }
        }
        var interval: Duration = .microseconds(500)
        var announced: [ProcessIdentity] = []
        while !pending.isEmpty {
            for process in announced { pending[process]?.leaderEnded = true }
            for (process, entry) in pending where entry.unwatched && !entry.leaderEnded && !isRunning(process) {
                pending[process]?.leaderEnded = true
            }
            let leaderGone = pending.filter { $0.value.leaderEnded }.map(\.key)
            // A sandbox's group ends with its init; other groups are looked for in /proc.
            let sandboxes = state.withLock { state in
                Set(leaderGone.filter { state.sandboxed.contains($0.pid) && state.children[$0.pid] == $0.startTime })
            }
            var gone = sandboxes
            if leaderGone.count > sandboxes.count {
                let live = ProcStat.liveGroups()
                gone.formUnion(leaderGone.filter { !sandboxes.contains($0) && !live.contains($0.pid) })
            }
            let now = clock.now
            ended = []
            for (process, entry) in pending.sorted(by: { $0.key.pid < $1.key.pid }) {
                if gone.contains(process) {
                    // Reaped only now, after the group is gone: the zombie leader
                    // reserved the group's ID until then.
                    pending[process] = nil
                    ended.append((process, exitStatus(process)))
                    continue
                }
                if !entry.killed && (now >= entry.deadline || Task.isCancelled) {
                    // Safe even if the leader exited meanwhile: either it is our
                    // unreaped zombie, or the group still has live members; both keep
                    // the PID from being reused, so -pid is still this group.
                    signalGroup(of: process, SIGKILL)
                    pending[process]?.killed = true
                    pending[process]?.deadline = now + Self.killTimeout
                } else if entry.killed && now >= entry.deadline {
                    pending[process] = nil
                    ended.append((process, exitStatus(process)))
                }
            }
            if !ended.isEmpty { await stopped(ended) }
            guard let next = pending.values.map(\.deadline).min() else { break }
            // Only what no event announces is looked at again soon.
            let looked = pending.values.contains { $0.leaderEnded || $0.unwatched }
            var wait = max(.zero, next - clock.now)
            if looked {
                wait = min(wait, interval)
                interval = min(interval * 2, .milliseconds(20))
            }
            if Task.isCancelled {
                // The inbox returns at once in a cancelled task: waited on in a task of
                // its own, which is not (the grace periods are cut short, so only the
                // kill's aftermath is waited for), still woken by the pidfds.
                announced = await Task { await exits.take(waitingAtMost: wait) }.value
            } else {
                announced = await exits.take(waitingAtMost: wait)
            }
        }
    }

    /// SIGTERM at the decision (see `AgentRuntime.terminate`); the `stop` that follows
    /// only waits. Not a process that is gone or not this one (start time), as `stop`.
    public func terminate(_ process: ProcessIdentity) {
        guard process.pid > 1, process.pid != getpid(), process.pid != getpgrp(),
            isUnreapedChild(process) || isRunning(process)
        else { return }
        _ = kill(-process.pid, SIGTERM)
        state.withLock { _ = $0.terminated.insert(process) }
    }

    private func signalGroup(of process: ProcessIdentity, _ signal: Int32) {
        _ = kill(-process.pid, signal)
        signalMovedLeader(of: process, signal)
    }

    /// A leader that moved to another group itself is not reached by -pid.
    private func signalMovedLeader(of process: ProcessIdentity, _ signal: Int32) {
        if isUnreapedChild(process) {
            // Its PID cannot have been reused: one system call, not a read of /proc.
            let group = getpgid(process.pid)
            if group >= 0 && group != process.pid { _ = kill(process.pid, signal) }
            return
        }
        if let stat = ProcStat.read(process.pid), stat.startTime == process.startTime, stat.isAlive,
            stat.processGroup != process.pid
        {
            _ = kill(process.pid, signal)
        }
    }

}

// MARK: Sandboxes

extension ProcessRuntime {
    static let isolationHint =
        "the sandbox of spec.runtime.isolation: strict cannot be had on this host (see docs/sandbox.md); set spec.runtime.isolation: none to run this agent unconfined"

    struct PreparedSandbox {
        var c: CSandbox
        var cgroups: SandboxCgroups
    }

    static func prepareSandbox(
        _ sandbox: SandboxSpec, key: String, program: String, arguments: [String], searchPath: String?, workingDirectory: String,
        limits: ProcessLimits, _ failure: (String) -> RuntimeError
    ) throws(RuntimeError) -> PreparedSandbox {
        // Namespaces, a root of its own and the uid drop all need CAP_SYS_ADMIN and
        // CAP_SETUID; without them there is no sandbox, and no silent fallback either.
        guard geteuid() == 0 else {
            throw failure("the controller runs as uid \(geteuid()), not root; \(isolationHint)")
        }
        let state = SandboxPlan.normalized(sandbox.stateDirectory)
        for (index, path) in sandbox.writable.enumerated() {
            let path = SandboxPlan.normalized(path)
            let what = index == 0 ? "the working directory" : "the writable mount"
            // Writable and holding the state (or in it, but for the agent's own
            // directory): the database, the keys, other agents would be exposed.
            if SandboxPlan.isWithin(state, path) || (index > 0 && SandboxPlan.isWithin(path, state)) {
                throw failure(
                    "\(what) \(path) \(SandboxPlan.isWithin(state, path) ? "contains" : "is inside") the state directory \(state); "
                        + "a sandboxed agent may not write there (choose another path)")
            }
        }
        if let directory = sandbox.writable.first {
            // The program runs as the sandbox's uid: its own directory must be its.
            // (Declared writable mounts keep their owner: the operator grants access.)
            if chown(directory, sandbox.uid, sandbox.gid) != 0 {
                throw failure("cannot hand the working directory \(directory) to uid \(sandbox.uid): \(describeErrno(errno))")
            }
        }
        let plan = SandboxPlan.make(
            sandbox, program: program, arguments: arguments, searchPath: searchPath, workingDirectory: workingDirectory)
        let cgroups = SandboxCgroups.make(key: key, sandbox: sandbox)
        let c = CSandbox(sandbox, plan: plan, cgroups: cgroups, processes: cgroups.pidsByCgroup ? nil : sandbox.pids)
        guard c.isComplete else { throw failure("out of memory") }
        return PreparedSandbox(c: c, cgroups: cgroups)
    }

    /// An adopted sandboxed agent lost its API listener with the controller that made
    /// it: a new one is made in its network namespace, on the same port.
    public func adopt(_ process: ProcessIdentity) {
        guard let listeners, let port = Self.apiPort(of: process.pid), Self.ownNetworkNamespace(process.pid) == false else { return }
        let fd = orl_listen_in_netns(process.pid, Int32(port))
        if fd >= 0 { listeners.serve(listener: fd, for: process.pid) }
    }

    /// The port of ORL_API_URL in the process's (or its program's) environment.
    static func apiPort(of pid: Int32) -> Int? {
        for candidate in [pid] + children(of: pid) {
            guard let environ = SandboxCgroups.readText("/proc/\(candidate)/environ") else { continue }
            for entry in environ.split(separator: "\0") where entry.hasPrefix("ORL_API_URL=") {
                if let colon = entry.lastIndex(of: ":") { return Int(entry[entry.index(after: colon)...]) }
            }
        }
        return nil
    }

    private static func children(of pid: Int32) -> [Int32] {
        guard let text = SandboxCgroups.readText("/proc/\(pid)/task/\(pid)/children") else { return [] }
        return text.split(separator: " ").compactMap { Int32($0.filter { $0.isNumber }) }
    }

    private static func ownNetworkNamespace(_ pid: Int32) -> Bool? {
        var mine = stat()
        var theirs = stat()
        guard stat("/proc/self/ns/net", &mine) == 0, stat("/proc/\(pid)/ns/net", &theirs) == 0 else { return nil }
        return mine.st_ino == theirs.st_ino && mine.st_dev == theirs.st_dev
    }

    /// What confines a process started from `spec`, as `describe` shows it.
    public func confinement(of spec: ProcessSpec) -> String {
        guard let sandbox = spec.sandbox else { return "none: an ordinary process of the controller's user (perm.unconfined)" }
        var limits: [String] = []
        let v2 = SandboxCgroups.controllersV2()
        func how(_ controller: String) -> String {
            v2.contains(controller) ? "cgroup v2" : SandboxCgroups.hasV1(controller) ? "cgroup v1" : ""
        }
        if let memory = sandbox.memory {
            let by = how("memory")
            limits.append("memory \(memory) bytes (\(by.isEmpty ? "RLIMIT_AS: no cgroup memory controller" : by))")
        }
        if let pids = sandbox.pids {
            let by = how("pids")
            limits.append("pids \(pids) (\(by.isEmpty ? "RLIMIT_NPROC, per uid: no cgroup pids controller" : by))")
        }
        if let cpu = sandbox.cpu {
            let by = how("cpu")
            limits.append("cpu \(cpu) (\(by.isEmpty ? "NOT enforced: no cgroup cpu controller" : by))")
        }
        if let files = spec.limits.openFiles { limits.append("openFiles \(files) (RLIMIT_NOFILE)") }
        if let seconds = spec.limits.cpuSeconds { limits.append("cpuTime \(seconds)s (RLIMIT_CPU)") }
        let api = sandbox.apiPort.map { "orl's API only, at 127.0.0.1:\($0)" } ?? "none"
        return "strict: namespaces mount, network, pid, ipc, uts; uid \(sandbox.uid) gid \(sandbox.gid), no capabilities, "
            + "no_new_privs, seccomp; network: loopback, \(api); files: host system read-only, \(sandbox.writable.joined(separator: ", ")) "
            + "writable, private /tmp, state directory hidden; limits: \(limits.isEmpty ? "none set" : limits.joined(separator: ", "))"
    }
}

/// NUL-terminated C strings for execve, copied once before the fork (the child must
/// not allocate), freed when this goes away.
final class CStringArray {
    let pointers: [UnsafeMutablePointer<CChar>?]
    init(_ strings: [String]) { pointers = strings.map { strdup($0) } + [nil] }
    var isComplete: Bool { !pointers.dropLast().contains(nil) }
    deinit { for pointer in pointers { free(pointer) } }
}

/// `directory/name`, without doubling a trailing slash.
func join(_ directory: String, _ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
}

extension ProcessRuntime {
    /// Starts a program detached, as a daemon: in a session of its own, with stdin from
    /// /dev/null, stdout and stderr appended to `logFile` (whose directory must exist),
    /// no other descriptor inherited but `inherit` (>= 3, under its number), default
    /// signal dispositions. Returns its PID once it has called execve. The caller may
    /// reap it or exit and leave it to init.
    public static func spawnDetached(
        path: String, arguments: [String], environment: [String], workingDirectory: String, logFile: String, inherit: Int32? = nil
    ) throws(RuntimeError) -> Int32 {
        let argv = CStringArray([path] + arguments)
        let envp = CStringArray(environment)
        guard argv.isComplete && envp.isComplete else { throw RuntimeError("cannot start \(path): out of memory") }
        var pid: pid_t = 0
        var step = ORL_SPAWN_OK
        let code: Int32
        if let inherit {
            code = orl_spawn_detached(path, argv.pointers, envp.pointers, workingDirectory, logFile, inherit, &pid, &step)
        } else {
            var limits = orl_spawn_limits(address_space: -1, open_files: -1, cpu_seconds: -1)
            code = orl_spawn(path, argv.pointers, envp.pointers, workingDirectory, logFile, &limits, &pid, &step)
        }
        guard code == 0 else {
            throw RuntimeError("cannot start \(path): cannot \(String(cString: orl_spawn_step_description(step))): \(describeErrno(code))")
        }
        return pid
    }
}

// MARK: Unrecorded processes

extension ProcessRuntime {
    /// One scan of /proc: every process whose environment says it is an agent of this
    /// controller (`marks`, `ORL_AGENT`, `ORL_NAMESPACE`; a command tool's, which also
    /// has `ORL_TOOL`, is not) stands for the session it is in, whose leader is the
    /// process a controller records (the agent itself, or its sandbox's first process,
    /// whose environment is the controller's). Sessions of this runtime's own children
    /// and recorded ones are left out.
    public func unrecorded(marks: [String: String], recorded: Set<ProcessIdentity>) -> [(agent: ResourceID, process: ProcessIdentity)] {
        let own = state.withLock { Set($0.children.keys) }
        let recordedPIDs = Set(recorded.map(\.pid))
        var found: [Int32: (agent: ResourceID, process: ProcessIdentity)] = [:]
        for environment in Self.agentEnvironments(marks: marks) {
            let pid = environment.pid
            guard let stat = ProcStat.read(pid), stat.isAlive else { continue }
            let leader = stat.session
            guard leader > 1, leader != getpid(), found[leader] == nil, !own.contains(leader),
                let leaderStat = leader == pid ? stat : ProcStat.read(leader), leaderStat.isAlive
            else { continue }
            let process = ProcessIdentity(pid: leader, startTime: leaderStat.startTime)
            if recordedPIDs.contains(leader) && recorded.contains(process) { continue }
            found[leader] = (
                ResourceID(kind: ResourceKind.agent.rawValue, namespace: environment.namespace, name: environment.agent), process
            )
        }
        return found.values.sorted { $0.process.pid < $1.process.pid }
    }

    /// The agents named by the environments of the processes that hold every mark, by PID.
    static func agentEnvironments(marks: [String: String]) -> [(pid: Int32, namespace: String, agent: String)] {
        // Without a mark every agent of every controller would match.
        guard !marks.isEmpty, let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        let me = getpid()
        let wanted = Set(marks.map { Array("\($0.key)=\($0.value)".utf8) })
        var found: [(Int32, String, String)] = []
        while let entry = readdir(directory) {
            let pid = withUnsafeBytes(of: entry.pointee.d_name) { name in
                Int32(decimal: name.prefix(while: { $0 != 0 }))
            }
            // Another user's process cannot be read (nor be an agent of this controller's).
            guard let pid, pid != me, let environ = readSmallFile("/proc/\(pid)/environ") else { continue }
            var matched = 0
            var agent: String?
            var namespace: String?
            var tool = false
            for entry in environ.split(separator: 0, omittingEmptySubsequences: true) {
                if wanted.contains(Array(entry)) {
                    matched += 1
                } else if entry.starts(with: "ORL_AGENT=".utf8) {
                    agent = String(decoding: entry.dropFirst(10), as: UTF8.self)
                } else if entry.starts(with: "ORL_NAMESPACE=".utf8) {
                    namespace = String(decoding: entry.dropFirst(14), as: UTF8.self)
                } else if entry.starts(with: "ORL_TOOL=".utf8) {
                    tool = true
                }
            }
            if matched == wanted.count, !tool, let agent, let namespace, !agent.isEmpty, !namespace.isEmpty {
                found.append((pid, namespace, agent))
            }
        }
        return found
    }
}
