import Foundation

/// The official MCP client (examples/mcp/client.py, the Python SDK) against orl's `/mcp`:
/// `list`, or `call NAME ARGS`; its last line of output, decoded. Waited for on a thread
/// of its own: blocking a thread of the cooperative pool (two here) for the client's
/// lifetime would starve the very API it calls, and every suite running beside it.
///
/// Each call is client.py's own `main()` (a new HTTP client and MCP session), run by a
/// worker interpreter kept for the next call (Fixtures/mcp_client_worker.py): a new
/// interpreter per call spent a second of CPU importing the SDK, for ~50 calls.
enum McpClient {
    /// `mode`: the client's MCP_MODE (auto: the stateless revision after a probe; legacy: the handshake).
    static func run(_ url: String, token: String, mode: String = "auto", _ arguments: [String]) async throws -> Any {
        let box = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Box, any Error>) in
            Thread { continuation.resume(with: Result { Box(try blocking(url, token: token, mode: mode, arguments)) }) }.start()
        }
        return box.value
    }

    private struct Box: @unchecked Sendable {
        let value: Any
        init(_ value: Any) { self.value = value }
    }

    private static let workers = PythonWorkers(
        script: [URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/mcp_client_worker.py").path])

    private static func blocking(_ url: String, token: String, mode: String, _ arguments: [String]) throws -> Any {
        let out = try workers.call([mode, url + "/mcp", token] + arguments)
        guard let line = out.split(separator: "\n").last else {
            throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "client failed: no output"])
        }
        return try JSONSerialization.jsonObject(with: Data(line.utf8))
    }
}
