import Foundation
import Glibc

/// A command run and measured from outside, alone: its wait status, wall time, CPU time
/// and peak resident memory, as the kernel counts them for that process. The benchmarks
/// (`orl-bench`) and the tests' resource bounds share it.
///
/// The command is started by a small forking parent (Python, which the tests and the
/// benchmarks need anyway), not by the caller: Linux keeps the peak of the memory a
/// process replaces at `execve` in its `ru_maxrss`, and `posix_spawn` runs the child in
/// the caller's memory until it execs, so a command spawned from a large test runner or
/// benchmark would report the caller's peak. The parent forks from its own small memory,
/// times the command (so its own start-up is not counted) and hands `wait4`'s figures
/// back through a pipe.
public struct MeasuredCommand: Sendable {
    /// The command's exit status, or 128 plus the signal that ended it.
    public var status: Int32
    public var wallSeconds: Double
    /// User plus system CPU time of the command.
    public var cpuSeconds: Double
    public var peakKiB: Int

    public var peakMiB: Double { Double(peakKiB) / 1024 }

    public enum Failure: Error, CustomStringConvertible {
        case spawn(argv0: String, errno: Int32)
        case launcher(status: Int32, output: String)

        public var description: String {
            switch self {
            case .spawn(let argv0, let code): "cannot start the measuring parent for \(argv0): \(String(cString: strerror(code)))"
            case .launcher(let status, let output): "the measuring parent failed (wait status \(status)): \(output)"
            }
        }
    }

    /// Forks, execs `sys.argv[1:]`, waits, and writes to fd 3: the wait status, the peak
    /// resident set (KiB), the CPU seconds and the wall seconds.
    static let launcher = """
        import os, sys, time
        os.set_inheritable(3, False)
        start = time.monotonic_ns()
        pid = os.fork()
        if pid == 0:
            try:
                os.execvp(sys.argv[1], sys.argv[1:])
            finally:
                os._exit(127)
        _, status, usage = os.wait4(pid, 0)
        wall = (time.monotonic_ns() - start) / 1e9
        os.write(3, f"{status} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime} {wall}".encode())
        """

    /// Runs `argv` (looked up on `PATH` when it has no slash) with `environment` (the
    /// caller's when nil), stdin from /dev/null, and stdout and stderr to the files named
    /// (created or truncated), or to /dev/null.
    public static func run(
        _ argv: [String], environment: [String: String]? = nil, stdout: String? = nil, stderr: String? = nil
    ) throws -> MeasuredCommand {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw Failure.spawn(argv0: argv.first ?? "", errno: errno) }
        // Close-on-exec at once, so that neither end reaches the children other threads
        // start (one started in between may still get a copy: see the read below).
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        let readEnd = fds[0]
        defer { close(readEnd) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderr ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        // dup2 clears the close-on-exec flag of the copy: only fd 3 reaches the parent.
        posix_spawn_file_actions_adddup2(&actions, fds[1], 3)
        let python = "/usr/bin/python3"
        let cArgs = ([python, "-c", launcher] + argv).map { strdup($0) } + [nil]
        let cEnv = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer {
            for pointer in cArgs + (cEnv ?? []) { free(pointer) }
        }
        var pid: pid_t = 0
        let spawned =
            cEnv.map { posix_spawn(&pid, python, &actions, nil, cArgs, $0) } ?? posix_spawn(&pid, python, &actions, nil, cArgs, environ)
        close(fds[1])
        guard spawned == 0 else { throw Failure.spawn(argv0: argv.first ?? "", errno: spawned) }
        var launcherStatus: Int32 = 0
        while waitpid(pid, &launcherStatus, 0) < 0, errno == EINTR {}
        // Read after the parent has ended, without blocking: its one short write is in the
        // pipe already, and a copy of the write end that leaked into a process another
        // thread started meanwhile must not hold this read open.
        _ = fcntl(readEnd, F_SETFL, O_NONBLOCK)
        var output = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let count = read(readEnd, &buffer, buffer.count)
            if count > 0 {
                output += buffer[0..<count]
            } else if count == 0 || errno != EINTR {
                break
            }
        }
        let text = String(decoding: output, as: UTF8.self)
        let fields = text.split(separator: " ")
        guard launcherStatus == 0, fields.count == 4, let status = Int32(fields[0]), let peak = Int(fields[1]),
            let cpu = Double(fields[2]), let wall = Double(fields[3])
        else { throw Failure.launcher(status: launcherStatus, output: text) }
        let exited = status & 0x7f == 0
        return MeasuredCommand(
            status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), wallSeconds: wall, cpuSeconds: cpu, peakKiB: peak)
    }
}
