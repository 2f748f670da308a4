import Foundation
import OrlCore
import Testing

@testable import OrlRuntime

/// A fresh directory (resolved, so /proc paths compare equal), removed afterwards.
func withTemporaryDirectory<R>(_ body: (String) async throws -> R) async throws -> R {
    let base = FileManager.default.temporaryDirectory.appendingPathComponent("orl-runtime-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: base) }
    return try await body(base.resolvingSymlinksInPath().path)
}

func spec(
    _ command: String, _ arguments: [String] = [], in directory: String, name: String = "writer",
    environment: [(name: String, value: String)] = [("PATH", "/usr/bin:/bin")], limits: ProcessLimits = ProcessLimits()
) -> ProcessSpec {
    ProcessSpec(
        agent: ResourceID(kind: "Agent", name: name), command: command, arguments: arguments, environment: environment,
        workingDirectory: directory, limits: limits, logFile: "\(directory)/logs/\(name).log", gracePeriod: .seconds(1))
}

/// `/bin/sh -c script` as an agent.
func shell(_ script: String, in directory: String, name: String = "writer") -> ProcessSpec {
    spec("/bin/sh", ["-c", script], in: directory, name: name)
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes.
func eventually(within timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return condition()
}

func contents(_ path: String) -> String {
    (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
}

/// Waits until the agent's log contains `marker` (the script reached that point).
func waitForLog(_ spec: ProcessSpec, containing marker: String) async -> Bool {
    await eventually { contents(spec.logFile).contains(marker) }
}

func procLink(_ pid: Int32, _ entry: String) -> String? {
    try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/\(entry)")
}
