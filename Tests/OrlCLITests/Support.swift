import Foundation
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
    /// The working directory is the process's, so calls take turns (each one short) and
    /// each runs on a thread of its own: commands read SQLite and files synchronously,
    /// which must not hold the cooperative pool's threads.
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
        await InProcess.turns.acquire()
        defer { InProcess.turns.release() }
        let outcome = try await withTaskExecutorPreference(InProcess.thread) {
            let previous = FileManager.default.currentDirectoryPath
            guard FileManager.default.changeCurrentDirectoryPath(directory.path) else {
                throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: directory.path])
            }
            defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
            return await OrlctlMain.run(arguments, context: context)
        }
        return Result(status: outcome.status, stdout: outcome.standardOutput, stderr: outcome.standardError)
    }
}

/// What in-process commands share: their turns and their thread.
enum InProcess {
    static let turns = Turns()
    static let thread = ThreadExecutor(name: "orlctl in process")

    /// One command at a time, waiting without holding a thread.
    final class Turns: Sendable {
        private struct State {
            var busy = false
            var waiting: [CheckedContinuation<Void, Never>] = []
        }
        private let state = Mutex(State())

        func acquire() async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { (state: inout State) -> Bool in
                    guard state.busy else {
                        state.busy = true
                        return true
                    }
                    state.waiting.append(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        }

        func release() {
            let next = state.withLock { (state: inout State) -> CheckedContinuation<Void, Never>? in
                guard !state.waiting.isEmpty else {
                    state.busy = false
                    return nil
                }
                return state.waiting.removeFirst()
            }
            next?.resume()
        }
    }

    /// A task executor that runs its jobs on one thread of its own.
    final class ThreadExecutor: TaskExecutor, Sendable {
        private let jobs = Mutex<[UnownedJob]>([])
        private let ready = DispatchSemaphore(value: 0)

        init(name: String) {
            let thread = Thread { [self] in
                while true {
                    ready.wait()
                    let job = jobs.withLock { $0.removeFirst() }
                    job.runSynchronously(on: asUnownedTaskExecutor())
                }
            }
            thread.name = name
            thread.start()
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
    }

    func write(_ relativePath: String, _ text: String) throws {
        let file = url.appendingPathComponent(relativePath)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: file, atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}
