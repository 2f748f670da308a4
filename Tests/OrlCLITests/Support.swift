import Foundation
import Glibc
import OrlCLI
import Synchronization
import Testing

/// Runs the `orlctl` that was built next to the test bundle, as a user would.
enum Orlctl {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static let binary: URL = {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = exe.deletingLastPathComponent()
        // On Linux the test runner is <bin>/orlPackageTests.xctest; elsewhere a bundle.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("orlctl").path), directory.path != "/" {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("orlctl")
    }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String], stdin: String? = nil, in directory: URL = packageRoot, environment: [String: String] = [:])
        throws -> Result
    {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.currentDirectoryURL = directory
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        // Tests start the controllers they want; apply would start one per state.
        env["ORL_NO_CONTROLLER"] = "1"
        env.merge(environment) { _, new in new }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        // Read both pipes concurrently so a large output on one cannot block the other.
        nonisolated(unsafe) var errData = Data()
        let errRead = DispatchSemaphore(value: 0)
        Thread {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            errRead.signal()
        }.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        errRead.wait()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self))
    }
}

extension Orlctl {
    /// Runs a command inside the test process: the code the binary runs, with the
    /// environment, standard input and outputs of this call, and no process launched.
    /// For every command that does not start a long-running process (a controller, a
    /// `watch`, a `logs -f`); those, and what users rely on end to end, run the binary.
    ///
    /// Each call runs on a thread of its own with a working directory of its own (see
    /// `InProcess.Worker`), so calls in different directories run side by side; commands
    /// read SQLite and files synchronously, which must not hold the cooperative pool's threads.
    @discardableResult
    static func call(_ arguments: [String], stdin: String? = nil, in directory: URL = packageRoot, environment: [String: String] = [:])
        async throws -> Result
    {
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        env["ORL_NO_CONTROLLER"] = "1"
        env.merge(environment) { _, new in new }
        // In process, a detached controller would be this test runner started again.
        precondition(env["ORL_NO_CONTROLLER"] == "1", "a command that starts a controller runs the binary: use Orlctl.run")
        let context = CommandContext(environment: env, standardInput: Array((stdin ?? "").utf8))
        let worker = await InProcess.workers.take()
        defer { InProcess.workers.give(worker) }
        let outcome = try await withTaskExecutorPreference(worker) {
            // Every job of the command runs on the worker's thread, whose directory this is.
            try worker.enter(directory.path)
            return await OrlctlMain.run(arguments, context: context)
        }
        return Result(status: outcome.status, stdout: outcome.standardOutput, stderr: outcome.standardError)
    }
}

/// The threads in-process commands run on.
enum InProcess {
    /// Two cores' worth of commands, and one more for a command waiting on a peer
    /// (PostgreSQL, git) rather than working.
    static let workers = Workers(count: max(2, ProcessInfo.processInfo.activeProcessorCount) + 1)

    /// Workers handed out one call at a time, first come first served; nobody holds a
    /// thread while waiting for one.
    final class Workers: Sendable {
        private struct State {
            var idle: [Worker]
            var waiting: [CheckedContinuation<Worker, Never>] = []
        }
        private let state: Mutex<State>

        init(count: Int) {
            state = Mutex(State(idle: (0..<count).map { Worker(name: "orlctl in process \($0 + 1)") }))
        }

        func take() async -> Worker {
            await withCheckedContinuation { (continuation: CheckedContinuation<Worker, Never>) in
                let worker = state.withLock { (state: inout State) -> Worker? in
                    guard let worker = state.idle.popLast() else {
                        state.waiting.append(continuation)
                        return nil
                    }
                    return worker
                }
                if let worker { continuation.resume(returning: worker) }
            }
        }

        func give(_ worker: Worker) {
            let next = state.withLock { (state: inout State) -> CheckedContinuation<Worker, Never>? in
                guard !state.waiting.isEmpty else {
                    state.idle.append(worker)
                    return nil
                }
                return state.waiting.removeFirst()
            }
            next?.resume(returning: worker)
        }
    }

    /// A task executor of one thread whose working directory is its own: the thread stops
    /// sharing the process's file-system context (`unshare(CLONE_FS)`, Linux), so that a
    /// `chdir` on it moves no other thread. The process's directory stays the package root.
    final class Worker: TaskExecutor, Sendable {
        private let jobs = Mutex<[UnownedJob]>([])
        private let ready = DispatchSemaphore(value: 0)
        private let thread = Mutex<pthread_t?>(nil)

        private typealias Unshare = @convention(c) (Int32) -> Int32
        /// Glibc declares `unshare` only under _GNU_SOURCE, which Swift's Glibc module lacks.
        private static let unshare: Unshare = unsafeBitCast(dlsym(nil, "unshare")!, to: Unshare.self)
        private static let cloneFS: Int32 = 0x0000_0200

        init(name: String) {
            let started = DispatchSemaphore(value: 0)
            let thread = Thread { [self] in
                precondition(Self.unshare(Self.cloneFS) == 0, "unshare(CLONE_FS): errno \(errno)")
                self.thread.withLock { $0 = pthread_self() }
                started.signal()
                while true {
                    ready.wait()
                    let job = jobs.withLock { $0.removeFirst() }
                    job.runSynchronously(on: asUnownedTaskExecutor())
                }
            }
            thread.name = name
            thread.start()
            started.wait()
        }

        /// Makes `directory` this worker's working directory; called on the worker.
        func enter(_ directory: String) throws {
            let own = thread.withLock { $0 }
            precondition(own.map { pthread_equal($0, pthread_self()) != 0 } == true, "not on the worker's thread")
            guard chdir(directory) == 0 else { throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: directory]) }
        }

        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            jobs.withLock { $0.append(job) }
            ready.signal()
        }
    }
}

/// Compares output with a file under Golden/; `ORL_UPDATE_GOLDEN=1 swift test` rewrites them.
func expectGolden(_ actual: String, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/\(name)")
    if ProcessInfo.processInfo.environment["ORL_UPDATE_GOLDEN"] == "1" {
        try actual.write(to: url, atomically: true, encoding: .utf8)
        return
    }
    let expected = try String(contentsOf: url, encoding: .utf8)
    #expect(actual == expected, "output differs from Golden/\(name) (ORL_UPDATE_GOLDEN=1 to re-record)", sourceLocation: sourceLocation)
}

/// A temporary directory removed when the test ends.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("orl-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        Changes.watch(url.path)
    }

    func write(_ relativePath: String, _ text: String) throws {
        let file = url.appendingPathComponent(relativePath)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: file, atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// The processes a test started that outlive the ones it holds: a node's guard, the agents
/// it kills, a detached controller. Each is found by its working directory, under the test's
/// directory, and waited for with a pidfd (Linux), which says when a process that is not our
/// child has ended.
enum Survivors {
    private typealias PidfdOpen = @convention(c) (pid_t, UInt32) -> Int32
    /// glibc's `pidfd_open` (2.36), which its Swift module does not declare.
    private static let pidfdOpen: PidfdOpen = unsafeBitCast(dlsym(nil, "pidfd_open")!, to: PidfdOpen.self)

    /// Processes whose working directory is `root` or under it (this process aside).
    static func under(_ root: String) -> [pid_t] {
        var found: [pid_t] = []
        guard let directory = opendir("/proc") else { return found }
        defer { closedir(directory) }
        let own = getpid()
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            guard let pid = pid_t(name), pid != own else { continue }
            var buffer = [CChar](repeating: 0, count: 4096)
            let length = readlink("/proc/\(name)/cwd", &buffer, 4095)
            guard length > 0 else { continue }
            let cwd = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if cwd == root || cwd.hasPrefix(root + "/") { found.append(pid) }
        }
        return found
    }

    /// Kills every process working under `root` (SIGKILL: none runs another instruction,
    /// so none writes there afterwards) and returns once they have ended.
    static func end(under root: String) {
        var pids = under(root)
        while !pids.isEmpty {
            for pid in pids { kill(pid, SIGKILL) }
            awaitEnd(under: root, timeout: .seconds(10))
            pids = under(root)
        }
    }

    /// Returns once every process working under `root` has ended, or `timeout` passed;
    /// returns those left. Blocks: for a `deinit`, which cannot suspend.
    @discardableResult
    static func awaitEnd(under root: String, timeout: Duration = .seconds(30)) -> [pid_t] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let pids = under(root)
            if pids.isEmpty { return [] }
            var fds = pids.compactMap { pid -> pollfd? in
                let fd = pidfdOpen(pid, 0)
                return fd >= 0 ? pollfd(fd: fd, events: Int16(POLLIN), revents: 0) : nil
            }
            defer { for entry in fds { close(entry.fd) } }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return pids }
            // Wakes when any of them ends; then looks again (an agent's child may remain).
            if !fds.isEmpty {
                let milliseconds = Int32(min(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000, 60_000))
                _ = poll(&fds, nfds_t(fds.count), max(1, milliseconds))
            }
        }
    }
}
