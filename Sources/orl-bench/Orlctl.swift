import ArgumentParser
import Foundation

/// The `orlctl` the benchmarks drive, as operators would: a process per command.
enum Orlctl {
    /// `--orlctl` if given, else the one built next to orl-bench.
    static func binary(_ given: String?) -> String {
        given
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("orlctl").path
    }

    /// Runs `orlctl ARGUMENTS`, its output discarded (and its standard error too when
    /// `quiet`: warnings a benchmark's fleet draws on purpose); throws unless it exits 0.
    static func run(_ binary: String, _ arguments: [String], quiet: Bool = false) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        if quiet { process.standardError = FileHandle(forWritingAtPath: "/dev/null") }
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("orlctl \(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
        }
    }

    /// A foreground `orlctl controller` (in the bench's session) that runs the bench's
    /// agent: the address of its API and the agent's own token, read from the agent's
    /// environment as a real agent would have it.
    struct Controller {
        let process: Process
        let api: String
        let token: String

        func stop() {
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// Starts `orlctl controller ARGUMENTS` and returns once `directory/controller.api`
    /// names its API and an agent working under `marker` has its token (after `seconds`,
    /// stops it and throws).
    static func controller(
        _ binary: String, _ arguments: [String], directory: String, marker: String, seconds: Int = 10
    ) async throws -> Controller {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["controller"] + arguments
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        for _ in 0..<seconds * 20 {
            do {
                try await Task.sleep(for: .milliseconds(50))
            } catch {
                process.terminate()
                process.waitUntilExit()
                throw error
            }
            if let api = try? String(contentsOfFile: directory + "/controller.api", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines), let token = GatewayBench.agentToken(marker: marker)
            {
                return Controller(process: process, api: api, token: token)
            }
        }
        process.terminate()
        process.waitUntilExit()
        throw ValidationError("orlctl controller \(arguments.joined(separator: " ")) did not start the bench agent")
    }
}
