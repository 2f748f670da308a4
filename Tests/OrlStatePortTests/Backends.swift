import Foundation
import OrlCore
import OrlPostgres
import OrlStore
import OrlTestPostgres
import Testing

/// The state backends every test of this target runs against, with the same expectations.
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    /// Both, or SQLite alone where PostgreSQL is not installed; ORL_TEST_BACKENDS=sqlite (or
    /// postgres) runs one, to time the suite per backend.
    static let available: [Backend] = {
        let installed = PostgresCluster.unavailable == nil ? allCases : [.sqlite]
        guard let chosen = ProcessInfo.processInfo.environment["ORL_TEST_BACKENDS"], !chosen.isEmpty else { return installed }
        let names = Set(chosen.split(separator: ",").map(String.init))
        return installed.filter { names.contains($0.rawValue) }
    }()
}

/// A fresh, empty state of one backend: `open()` gives a new store on it each time (a new
/// connection, as another process would have), and the state is removed afterwards.
final class TestState: Sendable {
    let backend: Backend
    let location: String
    private let cleanup: @Sendable () -> Void

    init(_ backend: Backend) throws {
        self.backend = backend
        switch backend {
        case .sqlite:
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("orl-ports-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            location = root.appendingPathComponent("state").path
            cleanup = { try? FileManager.default.removeItem(at: root) }
        case .postgres:
            location = try PostgresCluster.shared().database("ports")
            cleanup = {}
        }
    }

    deinit { cleanup() }

    func openAll() throws -> any StateBackend {
        switch backend {
        case .sqlite: try SQLiteStateStore(directory: location)
        case .postgres: try PostgresStateStore(url: location)
        }
    }

    func open() throws -> any StateBackend {
        switch backend {
        case .sqlite: try SQLiteStateStore(directory: location)
        case .postgres: try PostgresStateStore(url: location)
        }
    }
}
