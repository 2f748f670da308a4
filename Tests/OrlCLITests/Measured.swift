import Foundation
import OrlMeasure
import Testing

/// Runs `orlctl` and measures it from outside, alone (`MeasuredCommand`): wall time, CPU
/// time and peak resident memory, for the bounds the hardening tests assert.
enum Measured {
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
        let measured = try MeasuredCommand.run([Orlctl.binary.path] + arguments, environment: env, stdout: outPath, stderr: errPath)
        return Result(
            status: measured.status,
            seconds: measured.wallSeconds,
            cpuSeconds: measured.cpuSeconds,
            peakMiB: measured.peakMiB,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }
}
