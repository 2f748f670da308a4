import Crypto

/// A W3C trace context: the trace a span belongs to and the span itself.
public struct SpanContext: Sendable, Hashable {
    /// 16 bytes.
    public var traceID: [UInt8]
    /// 8 bytes.
    public var spanID: [UInt8]

    public init(traceID: [UInt8], spanID: [UInt8]) {
        self.traceID = traceID
        self.spanID = spanID
    }

    /// `traceparent: 00-TRACEID-SPANID-01` (version 00; other versions are read for
    /// their first four fields, as the W3C recommendation asks). Nil for anything else,
    /// including the all-zero ids it forbids.
    public init?(traceparent: String) {
        let parts = traceparent.trimmingSpaces.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0].count == 2, parts[0] != "ff", parts[0] != "00" || parts.count == 4,
            let trace = Self.bytes(hex: parts[1], count: 16), let span = Self.bytes(hex: parts[2], count: 8),
            Self.bytes(hex: parts[3], count: 1) != nil,
            trace.contains(where: { $0 != 0 }), span.contains(where: { $0 != 0 })
        else { return nil }
        self.init(traceID: trace, spanID: span)
    }

    /// The header value naming this span as the parent of what follows (sampled).
    public var traceparent: String { "00-\(Self.hex(traceID))-\(Self.hex(spanID))-01" }

    /// The context of a run's trace: ids drawn from the run id, so that the API, the
    /// gateway and the runs driver name the same spans without sharing memory, and a
    /// restarted controller goes on with the same trace.
    public static func workflow(run: String) -> SpanContext {
        SpanContext(traceID: digest("orl/trace/" + run, 16), spanID: digest("orl/workflow/" + run, 8))
    }

    /// The `invoke_agent` span of one attempt at a step (`RUN/STEP/ATTEMPT`).
    public static func attempt(_ task: TaskID) -> SpanContext {
        SpanContext(traceID: workflow(run: task.run.rawValue).traceID, spanID: digest("orl/attempt/" + task.description, 8))
    }

    /// A new span in this trace.
    public func child(random: inout some RandomNumberGenerator) -> SpanContext {
        SpanContext(traceID: traceID, spanID: Self.randomID(8, &random))
    }

    /// A new trace's first span.
    public static func root(random: inout some RandomNumberGenerator) -> SpanContext {
        SpanContext(traceID: randomID(16, &random), spanID: randomID(8, &random))
    }

    /// `count` bytes, 8 from each draw (a draw from the system generator is a system call).
    static func randomID(_ count: Int, _ random: inout some RandomNumberGenerator) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count {
            let word = random.next()
            for shift in stride(from: 0, to: min(64, (count - bytes.count) * 8), by: 8) {
                bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
            }
        }
        if !bytes.contains(where: { $0 != 0 }) { bytes[count - 1] = 1 }
        return bytes
    }

    static func digest(_ text: String, _ count: Int) -> [UInt8] {
        Array(SHA256.hash(data: Array(text.utf8)).prefix(count))
    }

    static func bytes(hex: Substring, count: Int) -> [UInt8]? {
        guard hex.utf8.count == count * 2 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        var iterator = hex.utf8.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            guard let h = nibble(high), let l = nibble(low) else { return nil }
            bytes.append(h << 4 | l)
        }
        return bytes
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        default: nil  // the W3C format is lowercase
        }
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Span ids: xoshiro256** seeded from the system's generator once, so that an id costs
/// no system call. Ids need to be unique, not secret.
public struct SpanIDGenerator: RandomNumberGenerator, Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    public init() {
        var system = SystemRandomNumberGenerator()
        state = (system.next(), system.next(), system.next(), system.next())
        if state == (0, 0, 0, 0) { state.0 = 1 }
    }

    public mutating func next() -> UInt64 {
        let result = rotate(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotate(state.3, 45)
        return result
    }

    private func rotate(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}

/// One finished span, as OTLP carries it.
public struct SpanRecord: Sendable, Hashable {
    public enum Kind: Int, Sendable {
        case `internal` = 1
        case server = 2
        case client = 3
    }

    public enum Value: Sendable, Hashable {
        case string(String)
        case int(Int64)
        case double(Double)
        case bool(Bool)
    }

    public var context: SpanContext
    public var parent: [UInt8]?
    public var name: String
    public var kind: Kind
    public var startNanoseconds: UInt64
    public var endNanoseconds: UInt64
    public var attributes: [(String, Value)]
    /// Nil: unset; the message otherwise marks the span as an error.
    public var error: String?

    public init(
        context: SpanContext, parent: [UInt8]?, name: String, kind: Kind, startNanoseconds: UInt64, endNanoseconds: UInt64,
        attributes: [(String, Value)], error: String? = nil
    ) {
        self.context = context
        self.parent = parent
        self.name = name
        self.kind = kind
        self.startNanoseconds = startNanoseconds
        self.endNanoseconds = max(endNanoseconds, startNanoseconds)
        self.attributes = attributes
        self.error = error
    }

    public static func == (a: SpanRecord, b: SpanRecord) -> Bool {
        a.context == b.context && a.name == b.name && a.startNanoseconds == b.startNanoseconds && a.endNanoseconds == b.endNanoseconds
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(context) }
}

/// The OTLP protobuf encoding of an `ExportTraceServiceRequest` (opentelemetry-proto
/// `collector/trace/v1`), for the few fields orl sets. Written by hand: the wire format
/// is tags, varints and length-prefixed bytes, and this avoids a protobuf runtime and
/// the OpenTelemetry SDK's build (see docs/observability.md).
public enum OTLPEncoding {
    public static func exportRequest(_ spans: [SpanRecord], resource: [(String, SpanRecord.Value)], scope: String, version: String)
        -> [UInt8]
    {
        var scopeSpans = ProtoWriter()
        var instrumentation = ProtoWriter()
        instrumentation.string(1, scope)
        instrumentation.string(2, version)
        scopeSpans.message(1, instrumentation)
        for span in spans { scopeSpans.message(2, encode(span)) }
        var resourceMessage = ProtoWriter()
        for (key, value) in resource { resourceMessage.keyValue(1, key, value) }
        var resourceSpans = ProtoWriter()
        resourceSpans.message(1, resourceMessage)
        resourceSpans.message(2, scopeSpans)
        var request = ProtoWriter()
        request.message(1, resourceSpans)
        return request.bytes
    }

    static func encode(_ span: SpanRecord) -> ProtoWriter {
        var out = ProtoWriter()
        out.reserve(64 + span.name.utf8.count + span.attributes.count * 48)
        out.lengthDelimited(1, span.context.traceID)
        out.lengthDelimited(2, span.context.spanID)
        if let parent = span.parent { out.lengthDelimited(4, parent) }
        out.string(5, span.name)
        out.varint(6, UInt64(span.kind.rawValue))
        out.fixed64(7, span.startNanoseconds)
        out.fixed64(8, span.endNanoseconds)
        for (key, value) in span.attributes { out.keyValue(9, key, value) }
        var status = ProtoWriter()
        if let error = span.error {
            status.string(2, error)
            status.varint(3, 2)  // STATUS_CODE_ERROR
        }
        out.message(15, status)
        // W3C flags: sampled.
        out.fixed32(16, 1)
        return out
    }

}

extension ProtoWriter {
    /// A KeyValue (`key`, then an AnyValue) as field `field`, written in place: its
    /// length is computed rather than built in a buffer of its own, as spans carry a
    /// dozen attributes each.
    mutating func keyValue(_ field: Int, _ key: String, _ value: SpanRecord.Value) {
        tag(field, 2)
        rawVarint(UInt64(Self.keyValueSize(key, value)))
        keyValueFields(key, value)
    }

    mutating func keyValueFields(_ key: String, _ value: SpanRecord.Value) {
        string(1, key)
        tag(2, 2)
        rawVarint(UInt64(Self.anyValueSize(value)))
        switch value {
        case .string(let text): string(1, text, always: true)
        case .bool(let flag): varint(2, flag ? 1 : 0, always: true)
        case .int(let number): varint(3, UInt64(bitPattern: number), always: true)
        case .double(let number): fixed64(4, number.bitPattern, always: true)
        }
    }

    static func varintSize(_ value: UInt64) -> Int {
        var value = value
        var size = 1
        while value >= 0x80 {
            value >>= 7
            size += 1
        }
        return size
    }

    static func anyValueSize(_ value: SpanRecord.Value) -> Int {
        switch value {
        case .string(let text): 1 + varintSize(UInt64(text.utf8.count)) + text.utf8.count
        case .bool: 2
        case .int(let number): 1 + varintSize(UInt64(bitPattern: number))
        case .double: 9
        }
    }

    static func keyValueSize(_ key: String, _ value: SpanRecord.Value) -> Int {
        let keySize = key.utf8.isEmpty ? 0 : 1 + varintSize(UInt64(key.utf8.count)) + key.utf8.count
        let any = anyValueSize(value)
        return keySize + 1 + varintSize(UInt64(any)) + any
    }
}

/// Protocol buffers' wire format: each field a tag (number and wire type) then a varint,
/// 8 or 4 little-endian bytes, or a length and bytes. Proto3 leaves default values out.
public struct ProtoWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    mutating func reserve(_ count: Int) { bytes.reserveCapacity(count) }

    mutating func tag(_ field: Int, _ wireType: UInt64) { rawVarint(UInt64(field) << 3 | wireType) }

    mutating func rawVarint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7f) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    mutating func varint(_ field: Int, _ value: UInt64, always: Bool = false) {
        guard value != 0 || always else { return }
        tag(field, 0)
        rawVarint(value)
    }

    mutating func fixed64(_ field: Int, _ value: UInt64, always: Bool = false) {
        guard value != 0 || always else { return }
        tag(field, 1)
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    mutating func fixed32(_ field: Int, _ value: UInt32) {
        guard value != 0 else { return }
        tag(field, 5)
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    mutating func lengthDelimited(_ field: Int, _ value: [UInt8], always: Bool = false) {
        guard !value.isEmpty || always else { return }
        tag(field, 2)
        rawVarint(UInt64(value.count))
        bytes += value
    }

    mutating func string(_ field: Int, _ value: String, always: Bool = false) { lengthDelimited(field, Array(value.utf8), always: always) }

    /// An embedded message, written even when empty (a present, empty Status).
    mutating func message(_ field: Int, _ value: ProtoWriter) { lengthDelimited(field, value.bytes, always: true) }
}

extension String {
    fileprivate var trimmingSpaces: Substring {
        let start = firstIndex(where: { $0 != " " && $0 != "\t" }) ?? endIndex
        let end = lastIndex(where: { $0 != " " && $0 != "\t" }).map { index(after: $0) } ?? start
        return self[start..<max(start, end)]
    }
}
