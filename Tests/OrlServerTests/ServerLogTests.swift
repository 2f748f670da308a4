import Logging
import Synchronization
import Testing

@testable import OrlServer

/// Hummingbird sets a request id in every request's logger: the servers' handler keeps
/// it without formatting, and writes a message as the standard stream handler does.
@Suite struct ServerLogTests {
    final class Capture: TextOutputStream, Sendable {
        let text = Mutex("")
        func write(_ string: String) { text.withLock { $0 += string } }
        var written: String { text.withLock { $0 } }
    }

    @Test func metadataIsKeptAndAMessageWrittenAsTheStreamHandlerWritesIt() {
        let deferred = Capture()
        let standard = Capture()
        var logger = Logger(
            label: "orl.test",
            factory: {
                DeferredStreamLogHandler(label: $0, stream: { StreamLogHandler(label: $0, stream: deferred, metadataProvider: $1) })
            })
        var reference = Logger(label: "orl.test", factory: { StreamLogHandler(label: $0, stream: standard, metadataProvider: nil) })
        logger.logLevel = .critical
        reference.logLevel = .critical
        logger[metadataKey: "hb.request.id"] = "42"
        reference[metadataKey: "hb.request.id"] = "42"
        #expect(logger[metadataKey: "hb.request.id"] == "42")
        #expect(logger.handler.metadata == ["hb.request.id": "42"])

        logger.error("below the level")
        #expect(deferred.written.isEmpty)

        logger.critical("the upstream closed", metadata: ["peer": "127.0.0.1"])
        reference.critical("the upstream closed", metadata: ["peer": "127.0.0.1"])
        // The same line but for its timestamp (up to the first space).
        func withoutTime(_ line: String) -> Substring { line.drop { $0 != " " } }
        #expect(!deferred.written.isEmpty)
        #expect(withoutTime(deferred.written) == withoutTime(standard.written))
        #expect(deferred.written.contains("hb.request.id=42"))
    }

    @Test func theServersLogOnlyCriticalMessages() {
        let logger = ServerLog.logger(label: "orl.api")
        #expect(logger.logLevel == .critical)
        #expect(logger.handler is DeferredStreamLogHandler)
    }
}
