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
        let shared = ReaderBox(input: input)
        var reader = pthread_t()
        let box = Unmanaged.passRetained(shared).toOpaque()
        pthread_create(
            &reader, nil,
            { raw in
                let box = Unmanaged<ReaderBox>.fromOpaque(raw!).takeRetainedValue()
                box.readAll()
                return nil
            }, box)
        while true {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let ms = Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
            let (victims, gone, why) = shared.state.withLock { state -> ([ProcessIdentity], Bool, String) in
                if state.ended {
                    defer { state.tracked = [] }
                    return (Array(state.tracked), true, "the node is gone")
                }
                if let deadline = state.deadline, ms >= deadline, !state.tracked.isEmpty {
                    defer { state.tracked = [] }
                    return (Array(state.tracked), false, "the node's lease was not renewed in time")
                }
                return ([], false, "")
            }
            var killed = victims.filter { kill($0) }
            if gone || !victims.isEmpty {
                for process in labelled(node: node, state: state) where !killed.contains(process) && kill(process) {
                    killed.append(process)
                }
            }
            for process in killed { report("killed pid \(process.pid): \(why)") }
            if gone {
                // Gone for good before the lease is ended: SIGKILL is not instant.
                for _ in 0..<200
                where killed.contains(where: { process in
                    ProcStat.read(process.pid).map { $0.isAlive && $0.startTime == process.startTime } ?? false
                }) {
                    usleep(10_000)
                }
                ended(shared.state.withLock { $0.generation })
                exit(0)
            }
            usleep(20_000)
        }
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

    private final class ReaderBox: Sendable {
        let input: Int32
        let state = Mutex<(deadline: Int64?, tracked: Set<ProcessIdentity>, ended: Bool, generation: Int64?)>((nil, [], false, nil))
        init(input: Int32) { self.input = input }

        func readAll() {
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, 4096) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                pending += buffer[..<count]
                while let newline = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    apply(line)
                }
            }
            state.withLock { $0.ended = true }
        }

        private func apply(_ line: String) {
            let fields = line.split(separator: " ")
            state.withLock { state in
                switch (fields.first, fields.count) {
                case ("d"?, 2): state.deadline = Int64(fields[1])
                case ("g"?, 2): state.generation = Int64(fields[1])
                case ("+"?, 3):
                    if let pid = Int32(fields[1]), let start = UInt64(fields[2]) {
                        state.tracked.insert(ProcessIdentity(pid: pid, startTime: start))
                    }
                case ("-"?, 3):
                    if let pid = Int32(fields[1]), let start = UInt64(fields[2]) {
                        state.tracked.remove(ProcessIdentity(pid: pid, startTime: start))
                    }
                default: break
                }
            }
        }
    }
}
