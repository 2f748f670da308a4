import Foundation

/// The official MCP client (examples/mcp/client.py, the Python SDK) against orl's `/mcp`:
/// `list`, or `call NAME ARGS`; its last line of output, decoded. Waited for on a thread
/// of its own: blocking a thread of the cooperative pool (two here) for the client's
/// lifetime would starve the very API it calls, and every suite running beside it.
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

    private static func blocking(_ url: String, token: String, mode: String, _ arguments: [String]) throws -> Any {
        let process = Process()
        process.environment = ProcessInfo.processInfo.environment.merging(["MCP_MODE": mode]) { _, new in new }
        process.executableURL = URL(fileURLWithPath: McpServerTests.python)
        process.arguments = [McpServerTests.root + "/examples/mcp/client.py", url + "/mcp", token] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let said = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, let line = String(data: data, encoding: .utf8)?.split(separator: "\n").last else {
            throw CocoaError(
                .fileReadUnknown,
                userInfo: [NSLocalizedDescriptionKey: "client failed: \(String(decoding: said, as: UTF8.self).suffix(2000))"])
        }
        return try JSONSerialization.jsonObject(with: Data(line.utf8))
    }
}
