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

/// Errors raised on other threads, for the test to check afterwards.
final class Failures: Sendable {
    private let messages = Locked<[String]>([])

    func record(_ error: any Error) { messages.withLock { $0.append("\(error)") } }

    var all: [String] { messages.withLock { $0 } }
}

func milliseconds(_ duration: Duration) -> Int64 {
    duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
}
