import COrlSpawn
import Glibc
public import OrlCore
import Synchronization

/// A node's guard: a small process of its own (`orlctl controller node-guard`) that kills
/// the node's agents when the node can no longer vouch for them, because agents outlive
/// their controller (setsid) and a node that dies must not leave them running while its
/// lease lapses and another node starts them.
///
/// The node writes to the guard's standard input, one line each: `d MS` (the stop deadline,
/// CLOCK_MONOTONIC milliseconds, moved at each renewal), `+ PID START` and `- PID START` (a
/// process started or gone). The guard kills every process it tracks, with its process
/// group, when the deadline passes, and when its input ends (the node exited, or was
/// killed: the pipe's only writer is gone), then exits.
public final class NodeGuard: NodeGuardLink {
    private let input: Mutex<Int32>
    public let pid: Int32

    private init(input: Int32, pid: Int32) {
        self.input = Mutex(input)
        self.pid = pid
    }

    /// Starts `executable arguments` (the guard) with a pipe from this process as its
    /// standard input, in a process group of its own (a terminal's Ctrl-C is the node's
    /// business: the node stops its agents gracefully, then closes the pipe).
    public static func start(executable: String, arguments: [String]) throws(RuntimeError) -> NodeGuard {
        var fds: [Int32] = [0, 0]
        // Close-on-exec at once (no other thread's spawn may inherit the writing end, or the
        // guard would not see it close); the dup2 below clears it on the guard's copy.
        guard pipe(&fds) == 0, fcntl(fds[0], F_SETFD, FD_CLOEXEC) == 0, fcntl(fds[1], F_SETFD, FD_CLOEXEC) == 0 else {
            throw RuntimeError("cannot create the node guard's pipe: \(describeErrno(errno))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[0], 0)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let code = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        Glibc.close(fds[0])
        guard code == 0 else {
            Glibc.close(fds[1])
            throw RuntimeError("cannot start the node guard \(executable): \(describeErrno(code))")
        }
        return NodeGuard(input: fds[1], pid: pid)
    }

    public func deadline(_ monotonicMilliseconds: Int64) { send("d \(monotonicMilliseconds)\n") }

    public func lease(_ generation: Int64) { send("g \(generation)\n") }

    public func track(_ process: ProcessIdentity, running: Bool) {
        send("\(running ? "+" : "-") \(process.pid) \(process.startTime)\n")
    }

    /// Ends the guard's input: it kills what it still tracks and exits.
    public func close() {
        input.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    private func send(_ line: String) {
        input.withLock { fd in
            guard fd >= 0 else { return }
            let bytes = Array(line.utf8)
            _ = withSIGPIPEBlocked { bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
        }
    }

    // MARK: The guard's side

    /// The guard process's main: reads its input until it ends, killing the tracked
    /// processes at the deadline and at the end, and any process that carries the node's
    /// ORL_NODE and ORL_NODE_STATE (one spawned just before the node died, not yet tracked).
    /// `report` is told what it killed; `ended` is called with the node's last lease
    /// generation once the node is gone and its agents are.
    public static func serve(
        input: Int32 = 0, node: String, state: String, report: @escaping @Sendable (String) -> Void,
        ended: (Int64?) -> Void
    ) -> Never {
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGHUP, SIG_IGN)
        var said = Input(fd: input)
        while true {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let ms = Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
            var victims: [ProcessIdentity] = []
            var why = ""
            if said.ended {
                victims = Array(said.tracked)
                why = "the node is gone"
            } else if let deadline = said.deadline, ms >= deadline, !said.tracked.isEmpty {
                victims = Array(said.tracked)
                why = "the node's lease was not renewed in time"
            }
            if said.ended || !victims.isEmpty { said.tracked = [] }
            var killed = victims.filter { kill($0) }
            if said.ended || !victims.isEmpty {
                for process in labelled(node: node, state: state) where !killed.contains(process) && kill(process) {
                    killed.append(process)
                }
            }
            for process in killed { report("killed pid \(process.pid): \(why)") }
            if said.ended {
                // Gone for good before the lease is ended: SIGKILL is not instant. Each
                // one's pidfd says when (2 s at most for them all).
                let until = ContinuousClock.now + .seconds(2)
                for process in killed { waitForEnd(process, until: until) }
                ended(said.generation)
                exit(0)
            }
            // Asleep until the node says something or the deadline passes: nothing to
            // look at in between (a deadline matters only while something is tracked).
            var timeout: Int32 = -1
            if let deadline = said.deadline, !said.tracked.isEmpty { timeout = Int32(clamping: max(0, deadline - ms)) }
            var entry = pollfd(fd: said.fd, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, timeout) > 0 { said.readOnce() }
        }
    }

    /// Returns once `process` has ended (or is not that process any more), or at `deadline`.
    private static func waitForEnd(_ process: ProcessIdentity, until deadline: ContinuousClock.Instant) {
        func alive() -> Bool { ProcStat.read(process.pid).map { $0.isAlive && $0.startTime == process.startTime } ?? false }
        guard alive() else { return }
        if ProcessEnd.wait(for: process.pid, until: deadline) != nil { return }
        // No pidfd (a kernel before 5.3): looked at.
        while alive() && ContinuousClock.now < deadline { usleep(10_000) }
    }

    /// Processes whose environment says this node of this state started them.
    static func labelled(node: String, state: String) -> [ProcessIdentity] {
        let wanted = [Array("\(AgentLaunch.nodeVariable)=\(node)".utf8), Array("\(AgentLaunch.nodeStateVariable)=\(state)".utf8)]
        var found: [ProcessIdentity] = []
        guard let directory = opendir("/proc") else { return found }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let pid = withUnsafeBytes(of: entry.pointee.d_name) { name in Int32(decimal: name.prefix(while: { $0 != 0 })) }
            guard let pid, pid != getpid(), let environ = readSmallFile("/proc/\(pid)/environ") else { continue }
            let variables = environ.split(separator: 0).map(Array.init)
            guard wanted.allSatisfy({ variables.contains($0) }), let stat = ProcStat.read(pid), stat.isAlive else { continue }
            found.append(ProcessIdentity(pid: pid, startTime: stat.startTime))
        }
        return found
    }

    /// SIGKILL to the process's group and to it, if it is still the process started then.
    static func kill(_ process: ProcessIdentity) -> Bool {
        guard let stat = ProcStat.read(process.pid), stat.startTime == process.startTime, stat.isAlive else { return false }
        _ = Glibc.kill(-process.pid, SIGKILL)
        _ = Glibc.kill(process.pid, SIGKILL)
        return true
    }

    /// What the node said so far; read on the guard's one thread.
    private struct Input {
        let fd: Int32
        var deadline: Int64?
        var tracked: Set<ProcessIdentity> = []
        var ended = false
        var generation: Int64?
        private var pending: [UInt8] = []

        init(fd: Int32) { self.fd = fd }

        /// One read (poll said there is something: data, or the end).
        mutating func readOnce() {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
            if count < 0 && (errno == EINTR || errno == EAGAIN) { return }
            guard count > 0 else {
                ended = true
                return
            }
            pending += buffer[..<count]
            while let newline = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                apply(line)
            }
        }

        private mutating func apply(_ line: String) {
            let fields = line.split(separator: " ")
            switch (fields.first, fields.count) {
            case ("d"?, 2): deadline = Int64(fields[1])
            case ("g"?, 2): generation = Int64(fields[1])
            case ("+"?, 3):
                if let pid = Int32(fields[1]), let start = UInt64(fields[2]) {
                    tracked.insert(ProcessIdentity(pid: pid, startTime: start))
                }
            case ("-"?, 3):
                if let pid = Int32(fields[1]), let start = UInt64(fields[2]) {
                    tracked.remove(ProcessIdentity(pid: pid, startTime: start))
                }
            default: break
            }
        }
    }
}
