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
    /// The working directory is the process's, so calls in different directories take
    /// turns (each one short), and calls run on threads of their own: commands read
    /// SQLite and files synchronously, which must not hold the cooperative pool's threads.
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
        let outcome = try await withTaskExecutorPreference(InProcess.threads) {
            // Waiting and handing over happen on the commands' threads, so that they need
            // no thread of the pool, which the suites that wait on processes can hold.
            try await InProcess.turns.enter(directory.path)
            defer { InProcess.turns.leave() }
            return await OrlctlMain.run(arguments, context: context)
        }
        return Result(status: outcome.status, stdout: outcome.standardOutput, stderr: outcome.standardError)
    }
}

/// What in-process commands share: the working directory and their threads.
enum InProcess {
    static let turns = Turns(home: FileManager.default.currentDirectoryPath)
    static let threads = ThreadExecutor(name: "orlctl in process", threads: 2)

    /// Commands run side by side as long as they run in the same working directory; one
    /// for another directory waits until those have left (and, first in line, holds
    /// back those that come after it). Nobody holds a thread while waiting.
    final class Turns: Sendable {
        private struct State {
            var directory = ""
            var inside = 0
            var waiting: [(directory: String, continuation: CheckedContinuation<Void, Never>)] = []
        }
        private let state = Mutex(State())
        private let home: String

        init(home: String) { self.home = home }

        func enter(_ directory: String) async throws {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { (state: inout State) -> Bool in
                    guard state.waiting.isEmpty, state.inside == 0 || state.directory == directory else {
                        state.waiting.append((directory, continuation))
                        return false
                    }
                    state.directory = directory
                    state.inside += 1
                    return true
                }
                if now { continuation.resume() }
            }
            // Those inside together share the directory, so entering it again is harmless.
            guard FileManager.default.changeCurrentDirectoryPath(directory) else {
                leave()
                throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: directory])
            }
        }

        func leave() {
            let next = state.withLock { (state: inout State) -> [CheckedContinuation<Void, Never>] in
                state.inside -= 1
                guard state.inside == 0 else { return [] }
                // Back home before anyone else comes in: the rest of the process reads
                // relative paths (if any) from the package root.
                _ = FileManager.default.changeCurrentDirectoryPath(home)
                guard let first = state.waiting.first else { return [] }
                state.directory = first.directory
                var admitted: [CheckedContinuation<Void, Never>] = []
                while let waiting = state.waiting.first, waiting.directory == first.directory {
                    admitted.append(waiting.continuation)
                    state.waiting.removeFirst()
                    state.inside += 1
                }
                return admitted
            }
            for continuation in next { continuation.resume() }
        }
    }

    /// A task executor that runs its jobs on threads of its own.
    final class ThreadExecutor: TaskExecutor, Sendable {
        private let jobs = Mutex<[UnownedJob]>([])
        private let ready = DispatchSemaphore(value: 0)

        init(name: String, threads: Int) {
            for index in 0..<threads {
                let thread = Thread { [self] in
                    while true {
                        ready.wait()
                        let job = jobs.withLock { $0.removeFirst() }
                        job.runSynchronously(on: asUnownedTaskExecutor())
                    }
                }
                thread.name = "\(name) \(index + 1)"
                thread.start()
            }
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
