import Logging

/// The logger of orl's HTTP servers: critical messages only (none of the libraries
/// under them writes one in normal operation), to standard error.
///
/// Hummingbird gives every request a copy of it with a request id in its metadata. The
/// standard handler formats all of its metadata into a string each time metadata is
/// set, which cost a gateway call a few microseconds (about 2% of its CPU) for a string
/// never written; `DeferredStreamLogHandler` formats it only for a message.
enum ServerLog {
    static func logger(label: String) -> Logger {
        var logger = Logger(label: label, factory: { DeferredStreamLogHandler(label: $0) })
        logger.logLevel = .critical
        return logger
    }
}

/// A `StreamLogHandler` that keeps its metadata as given and makes the stream handler
/// (which formats it) only when a message is logged: what it writes is the same.
struct DeferredStreamLogHandler: LogHandler {
    let label: String
    /// The handler a message is written with (`StreamLogHandler.standardError`; tests
    /// give one on a stream of their own).
    let stream: @Sendable (String, Logger.MetadataProvider?) -> StreamLogHandler
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider

    init(
        label: String,
        stream: @escaping @Sendable (String, Logger.MetadataProvider?) -> StreamLogHandler = {
            StreamLogHandler.standardError(label: $0, metadataProvider: $1)
        }
    ) {
        self.label = label
        self.stream = stream
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var handler = stream(label, metadataProvider)
        handler.logLevel = logLevel
        handler.metadata = metadata
        handler.log(event: event)
    }
}
