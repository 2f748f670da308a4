import Foundation
import Glibc
import Testing

/// Runs `orlctl` and measures it from outside: wall time and peak resident memory
/// (`wait4`'s rusage of that child alone), for the bounds the hardening tests assert.
///
/// The child is started by a small forking parent, not by this process: Linux keeps the
/// peak of the memory a process replaces at `execve` in its `ru_maxrss`, and
/// `posix_spawn` runs the child in this process's memory until it execs, so a child
/// spawned from here inherits the test runner's own peak (hundreds of MiB, more as
/// suites run side by side) and a bound on the child's memory would fail for the wrong
/// process.
enum Measured {
    /// Forks, execs the command, waits, and writes the child's wait status, peak resident
    /// set (KiB) and CPU time to the file named first.
    static let launcher = """
        import os, sys
        pid = os.fork()
        if pid == 0:
            try:
                os.execv(sys.argv[2], sys.argv[2:])
            finally:
                os._exit(127)
        _, status, usage = os.wait4(pid, 0)
        with open(sys.argv[1], "w") as f:
            f.write(f"{status} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
        """

    struct Result {
        var status: Int32
        var seconds: Double
        /// User plus system CPU time of the child: what a bound on work should assert,
        /// since wall time on a loaded machine (two cores, other suites) says little.
        var cpuSeconds: Double
        /// Peak resident set, in MiB.
        var peakMiB: Double
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("orl-measured-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outPath = directory.appendingPathComponent("out").path
        let errPath = directory.appendingPathComponent("err").path
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        env["ORL_NO_CONTROLLER"] = "1"
        env.merge(environment) { _, new in new }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let usagePath = directory.appendingPathComponent("usage").path
        let python = "/usr/bin/python3"
        let argv = ([python, "-c", launcher, usagePath, Orlctl.binary.path] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv + envp { free(pointer) }
        }
        var pid: pid_t = 0
        let started = ContinuousClock.now
        let spawned = posix_spawn(&pid, python, &actions, nil, argv, envp)
        guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EINVAL) }
        var launcherStatus: Int32 = 0
        while waitpid(pid, &launcherStatus, 0) < 0, errno == EINTR {}
        let elapsed = ContinuousClock.now - started
        let measured = (try? String(contentsOfFile: usagePath, encoding: .utf8))?.split(separator: " ") ?? []
        guard launcherStatus == 0, measured.count == 3, let status = Int32(measured[0]), let maxrss = Double(measured[1]),
            let cpu = Double(measured[2])
        else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: usagePath])
        }
        let exited = status & 0x7f == 0
        return Result(
            status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f),
            seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
            cpuSeconds: cpu,
            peakMiB: maxrss / 1024,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }
}
