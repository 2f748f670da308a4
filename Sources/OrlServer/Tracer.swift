import AsyncHTTPClient
import NIOCore
import NIOHTTP1
public import OrlCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Spans sent to an OpenTelemetry collector over OTLP/HTTP (protobuf), in batches: a
/// span is queued in microseconds under a lock and the export runs on its own task, so
/// no call waits on the collector. When the collector is down the queue keeps the
/// newest `maxQueued` spans and counts what it dropped.
public final class Tracer: Sendable {
    public struct Configuration: Sendable {
        /// `.../v1/traces`.
        public var endpoint: String
        public var headers: [(String, String)] = []
        public var serviceName = "orl"
        /// The instrumentation scope's version: orl's commit.
        public var scopeVersion = ""
        public var interval: Duration = .seconds(1)
        public var maxBatch = 512
        public var maxQueued = 8192
        public var timeout: Duration = .seconds(10)

        public init(endpoint: String) { self.endpoint = endpoint }

        /// From the standard variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is), else
        /// OTEL_EXPORTER_OTLP_ENDPOINT + `/v1/traces`; OTEL_EXPORTER_OTLP_HEADERS
        /// (`k=v,k2=v2`, values percent-decoded), OTEL_SERVICE_NAME and
        /// OTEL_BSP_SCHEDULE_DELAY (milliseconds). Nil when no endpoint is set.
        public static func fromEnvironment(_ environment: [String: String]) throws(ConfigurationError) -> Configuration? {
            let endpoint: String
            if let traces = environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"], !traces.isEmpty {
                endpoint = traces
            } else if let base = environment["OTEL_EXPORTER_OTLP_ENDPOINT"], !base.isEmpty {
                endpoint = (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/v1/traces"
            } else {
                return nil
            }
            guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
                throw ConfigurationError(
                    message: "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL (OTLP/HTTP), not \(endpoint)")
            }
            var configuration = Configuration(endpoint: endpoint)
            for pair in (environment["OTEL_EXPORTER_OTLP_HEADERS"] ?? "").split(separator: ",") {
                guard let equals = pair.firstIndex(of: "=") else {
                    throw ConfigurationError(message: "OTEL_EXPORTER_OTLP_HEADERS must be key=value pairs separated by commas")
                }
                let key = pair[..<equals].trimmingCharacters(in: " ")
                let value = pair[pair.index(after: equals)...].trimmingCharacters(in: " ")
                configuration.headers.append((key, percentDecoded(value) ?? value))
            }
            if let name = environment["OTEL_SERVICE_NAME"], !name.isEmpty { configuration.serviceName = name }
            if let delay = environment["OTEL_BSP_SCHEDULE_DELAY"] {
                guard let milliseconds = Int(delay), milliseconds > 0 else {
                    throw ConfigurationError(message: "OTEL_BSP_SCHEDULE_DELAY must be a number of milliseconds, not \(delay)")
                }
                configuration.interval = .milliseconds(milliseconds)
            }
            return configuration
        }
    }

    public struct ConfigurationError: Error, Sendable {
        public var message: String
    }

    struct Queue {
        var spans: [SpanRecord] = []
        var dropped = 0
        var exported = 0
        var failures = 0
        var random = SpanIDGenerator()
    }

    public let configuration: Configuration
    private let queue = Mutex(Queue())
    private let log: @Sendable (String) -> Void

    /// `log` hears of failed exports (once per failure streak).
    public init(configuration: Configuration, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.configuration = configuration
        self.log = log
    }

    /// Nanoseconds since the epoch, now.
    public static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    /// A new span id in `parent`'s trace, or a new trace.
    public func newContext(in parent: SpanContext?) -> SpanContext {
        queue.withLock { queue in
            parent.map { $0.child(random: &queue.random) } ?? SpanContext.root(random: &queue.random)
        }
    }

    public func record(_ span: SpanRecord) {
        queue.withLock { queue in
            queue.spans.append(span)
            if queue.spans.count > configuration.maxQueued {
                let excess = queue.spans.count - configuration.maxQueued
                queue.spans.removeFirst(excess)
                queue.dropped += excess
            }
        }
    }

    /// How many spans were exported, dropped, and export attempts failed (tests, bench).
    public var counts: (exported: Int, dropped: Int, failures: Int) {
        queue.withLock { ($0.exported, $0.dropped, $0.failures) }
    }

    /// Exports every `interval` until cancelled, then once more.
    public func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.interval)
            await flush()
        }
        await flush()
    }

    /// Sends what is queued, in batches. A batch the collector refused or did not take is
    /// dropped and counted, not retried: spans are diagnostics, and a collector that
    /// rejects them must not grow the queue without end.
    public func flush() async {
        while true {
            let batch = queue.withLock { queue -> [SpanRecord] in
                let batch = Array(queue.spans.prefix(configuration.maxBatch))
                queue.spans.removeFirst(batch.count)
                return batch
            }
            guard !batch.isEmpty else { return }
            let body = OTLPEncoding.exportRequest(
                batch, resource: [("service.name", .string(configuration.serviceName))], scope: "orl", version: configuration.scopeVersion)
            var request = HTTPClientRequest(url: configuration.endpoint)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/x-protobuf")
            for (name, value) in configuration.headers { request.headers.add(name: name, value: value) }
            request.body = .bytes(ByteBuffer(bytes: body))
            var failure: String?
            do {
                let response = try await Gateway.sharedClient.execute(
                    request, timeout: .milliseconds(configuration.timeout.wholeMilliseconds))
                _ = try? await response.body.collect(upTo: 1 << 20)
                if !(200..<300).contains(Int(response.status.code)) { failure = "the collector answered \(response.status.code)" }
            } catch {
                failure = "\(error)"
            }
            let firstFailure = queue.withLock { queue -> Bool in
                guard failure != nil else {
                    queue.exported += batch.count
                    queue.failures = 0
                    return false
                }
                queue.failures += 1
                queue.dropped += batch.count
                return queue.failures == 1
            }
            if let failure {
                if firstFailure { log("cannot export \(batch.count) spans to \(configuration.endpoint): \(failure)") }
                return
            }
        }
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in character: Character) -> String {
        String(drop(while: { $0 == character }).reversed().drop(while: { $0 == character }).reversed())
    }

}

/// `%20` and the like decoded, as OTEL_EXPORTER_OTLP_HEADERS values are; nil when malformed.
private func percentDecoded(_ text: String) -> String? {
    var bytes: [UInt8] = []
    var iterator = text.utf8.makeIterator()
    while let byte = iterator.next() {
        if byte == UInt8(ascii: "%") {
            guard let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            else { return nil }
            bytes.append(value)
        } else {
            bytes.append(byte)
        }
    }
    return String(validating: bytes, as: UTF8.self)
}
