import Foundation
import OrlCore
import OrlJSON
import Testing

@testable import OrlStore

/// Runs `body` with a path for a state directory that does not exist yet, under a
/// fresh temporary directory removed afterwards.
func withStateDirectory<R>(_ body: (String) throws -> R) throws -> R {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("orl-store-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: root) }
    return try body(root.appendingPathComponent("state").path)
}

func agent(_ name: String, namespace: String = ResourceID.defaultNamespace) -> ResourceID {
    ResourceID(kind: "Agent", namespace: namespace, name: name)
}

func stored(
    _ id: ResourceID, manifest: String? = nil, generation: Int = 1, source: String = "manifests/", revision: String? = "abc123",
    at time: Int64 = 1_763_743_503_120
) -> StoredResource {
    StoredResource(
        id: id,
        manifest: manifest ?? #"{"apiVersion":"orl.dev/v1","kind":"\#(id.kind)","metadata":{"name":"\#(id.name)"}}"#,
        specHash: String(repeating: "ab", count: 32),
        generation: generation,
        resourceVersion: generation,
        source: source,
        file: "manifests/\(id.name).yaml",
        line: 1,
        revision: revision,
        appliedAt: Timestamp(milliseconds: time),
        appliedBy: "alice"
    )
}

func apply(_ source: String, summary: String = "Plan: 1 to add, 0 to change, 0 to prune (0 unchanged).") -> ApplyRecord {
    ApplyRecord(
        number: 0, source: source, revision: nil, appliedAt: Timestamp(milliseconds: 1000), appliedBy: "alice", summary: summary,
        plan: "{}", result: "applied")
}

/// Runs each body on a thread of its own (not on the cooperative pool, which these
/// bodies would block) and waits for all of them.
func onThreads(_ bodies: [@Sendable () -> Void]) {
    let done = DispatchGroup()
    for body in bodies {
        done.enter()
        Thread {
            body()
            done.leave()
        }
        .start()
    }
    done.wait()
}

/// Errors raised on other threads, for the test to check afterwards.
final class Failures: Sendable {
    private let messages = Locked<[String]>([])

    func record(_ error: any Error) { messages.withLock { $0.append("\(error)") } }

    var all: [String] { messages.withLock { $0 } }
}

func milliseconds(_ duration: Duration) -> Int64 {
    duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
}
