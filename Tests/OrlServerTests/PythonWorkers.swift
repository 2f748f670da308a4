import Foundation
import Glibc
import Synchronization

/// Python fixtures that serve one call per line of standard input (a JSON array of
/// arguments) and answer one line each ({"out": what the call printed} or {"failed": the
/// traceback}), kept for the next call: the SDKs the tests drive cost a new interpreter one
/// to two seconds of CPU to import before its first request. A call takes an idle worker
/// or starts one and gives it back once answered, so calls made at the same time each have
/// their own. Blocking: call it from a thread of its own, never the cooperative pool.
final class PythonWorkers: Sendable {
    let python: String
    let script: [String]
    private let idle = Mutex<[Worker]>([])

    /// `script`: the fixture and its arguments, run by `python`.
    init(python: String = McpServerTests.python, script: [String]) {
        self.python = python
        self.script = script
    }

    /// What the call printed; throws with the traceback (or the worker's standard error,
    /// when it died) if it failed.
    func call(_ arguments: [Any]) throws -> String {
        // A worker that died makes the write fail with EPIPE instead of raising SIGPIPE,
        // which would end the tests; the signal stays pending on this thread alone.
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
        let worker = try idle.withLock { $0.popLast() } ?? Worker(python: python, script: script)
        let request = try JSONSerialization.data(withJSONObject: arguments) + Data("\n".utf8)
        guard let reply = worker.ask(request) else {
            throw Failed(description: "\(name) failed: \(worker.said().suffix(2000))")
        }
        idle.withLock { $0.append(worker) }
        let answer = try JSONSerialization.jsonObject(with: reply) as? [String: Any] ?? [:]
        guard let out = answer["out"] as? String else {
            let failed = answer["failed"] as? String ?? "no answer"
            throw Failed(description: "\(name) failed: \(failed.suffix(2000))")
        }
        return out
    }

    struct Failed: Error, CustomStringConvertible {
        var description: String
    }

    private var name: String { ((script.first ?? "") as NSString).lastPathComponent }

    /// One interpreter; it exits when the tests do (its input closes).
    private final class Worker: @unchecked Sendable {
        let process = Process()
        let input = Pipe()
        let output = Pipe()
        /// Its standard error, in an unlinked file: read only when it failed.
        let errors: FileHandle
        var pending: [UInt8] = []

        init(python: String, script: [String]) throws {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("orl-python-worker-\(UUID().uuidString).err").path
            guard FileManager.default.createFile(atPath: path, contents: nil), let errors = FileHandle(forUpdatingAtPath: path) else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "cannot create \(path)"])
            }
            unlink(path)
            self.errors = errors
            process.executableURL = URL(fileURLWithPath: python)
            process.arguments = script
            process.standardInput = input
            process.standardOutput = output
            process.standardError = errors
            try process.run()
        }

        /// Sends one request line and reads the answer line; nil if the worker is gone.
        func ask(_ request: Data) -> Data? {
            do { try input.fileHandleForWriting.write(contentsOf: request) } catch { return nil }
            let fd = output.fileHandleForReading.fileDescriptor
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                if let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Data(pending[..<end])
                    pending.removeSubrange(...end)
                    return line
                }
                let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { return nil }
                pending += chunk[..<count]
            }
        }

        /// What it wrote to its standard error, once it has exited.
        func said() -> String {
            process.waitUntilExit()
            errors.seek(toFileOffset: 0)
            return String(decoding: errors.readDataToEndOfFile(), as: UTF8.self)
        }
    }
}
