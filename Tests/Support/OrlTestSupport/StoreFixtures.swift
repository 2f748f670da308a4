import Foundation
public import OrlCore

// What the store tests of both targets (OrlStoreTests, OrlStatePortTests) build their
// rows from.

public func agent(_ name: String, namespace: String = ResourceID.defaultNamespace) -> ResourceID {
    ResourceID(kind: "Agent", namespace: namespace, name: name)
}

public func stored(
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

public func apply(_ source: String, summary: String = "Plan: 1 to add, 0 to change, 0 to prune (0 unchanged).") -> ApplyRecord {
    ApplyRecord(
        number: 0, source: source, revision: nil, appliedAt: Timestamp(milliseconds: 1000), appliedBy: "alice", summary: summary,
        plan: "{}", result: "applied")
}

/// Runs each body on a thread of its own (not on the cooperative pool, which these
/// bodies would block) and waits for all of them.
public func onThreads(_ bodies: [@Sendable () -> Void]) {
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
