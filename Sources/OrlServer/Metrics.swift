import Synchronization

/// The controller's own counters and histograms, rendered in the Prometheus text format
/// (0.0.4) with the gauges read from the state at each scrape (`FleetGauges`).
///
/// Written here rather than with swift-prometheus: most of what is scraped is state
/// (budgets, phases, steps, sources) rendered from one snapshot, which a registry of
/// long-lived gauge objects would have to mirror and prune; the event-driven part is a
/// handful of families behind one lock, and the exposition format is a few lines of
/// text. No dependency to build, and one lock taken per gateway call.
public final class Metrics: Sendable {
    public enum Kind: String, Sendable { case counter, histogram }

    /// A metric family: its name, what it means, its labels and, for a histogram, the
    /// upper bounds of its buckets. Identified by its position in `families`, so that a
    /// call hashes its label values only.
    public struct Family: Sendable {
        public let name: String
        public let help: String
        public let kind: Kind
        public let labels: [String]
        public let buckets: [Double]
        let index: Int
        /// `,le="0.01"} `, one per bucket then `+Inf`: written once, not per scrape.
        let bucketSuffixes: [String]

        init(_ index: Int, _ name: String, _ kind: Kind, _ help: String, labels: [String], buckets: [Double] = []) {
            self.index = index
            self.name = name
            self.kind = kind
            self.help = help
            self.labels = labels
            self.buckets = buckets
            self.bucketSuffixes = (buckets.map { Metrics.number($0) } + ["+Inf"]).map { "le=\"\($0)\"} " }
        }
    }

    struct Series {
        /// `{label="value",...` without the closing brace, rendered when the series is made.
        var labelText: String
        var value = 0.0
        var counts: [UInt64] = []
        var sum = 0.0
        var count: UInt64 = 0

        init(_ family: Family, _ values: [String]) {
            var text = "{"
            for (index, (label, value)) in zip(family.labels, values).enumerated() {
                if index > 0 { text += "," }
                text += label + "=\""
                Metrics.escape(value, into: &text)
                text += "\""
            }
            labelText = text
            counts = Array(repeating: 0, count: family.buckets.count)
        }
    }

    struct Store {
        var series: [[[String]: Series]] = Array(repeating: [:], count: Metrics.families.count)
    }

    private let store = Mutex(Store())

    public init() {}

    /// Records several observations under one lock.
    public func record(_ body: (inout Recorder) -> Void) {
        store.withLock { store in
            // Swapped, not copied: a copy would duplicate every series on the first write.
            var recorder = Recorder(store: Store(series: []))
            swap(&recorder.store, &store)
            body(&recorder)
            swap(&recorder.store, &store)
        }
    }

    public func add(_ family: Family, _ labels: [String], _ amount: Double = 1) {
        record { $0.add(family, labels, amount) }
    }

    public func observe(_ family: Family, _ labels: [String], _ value: Double) {
        record { $0.observe(family, labels, value) }
    }

    public struct Recorder {
        var store: Store

        public mutating func add(_ family: Family, _ labels: [String], _ amount: Double = 1) {
            store.series[family.index][labels, default: Series(family, labels)].value += amount
        }

        public mutating func observe(_ family: Family, _ labels: [String], _ value: Double) {
            store.series[family.index][labels, default: Series(family, labels)].observe(value, family.buckets)
        }
    }

    /// A duration in seconds, as the text format writes it.
    public static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// The value of a counter's series (tests and `orl-bench` read it); 0 when never added to.
    public func value(_ family: Family, _ labels: [String]) -> Double {
        store.withLock { $0.series[family.index][labels]?.value ?? 0 }
    }

    /// Every family this registry holds series of, in the text format, sorted.
    public func render(into text: inout String) {
        let snapshot = store.withLock { $0.series }
        for family in Self.families {
            let series = snapshot[family.index]
            guard !series.isEmpty else { continue }
            Self.header(family.name, family.help, family.kind.rawValue, into: &text)
            let hasLabels = !family.labels.isEmpty
            for value in series.values.sorted(by: { $0.labelText < $1.labelText }) {
                switch family.kind {
                case .counter:
                    text += family.name
                    if hasLabels { text += value.labelText + "} " } else { text += " " }
                    text += Self.number(value.value)
                    text += "\n"
                case .histogram:
                    let prefix = family.name + "_bucket" + (hasLabels ? value.labelText + "," : "{")
                    var cumulative: UInt64 = 0
                    for (index, suffix) in family.bucketSuffixes.enumerated() {
                        cumulative += index < value.counts.count ? value.counts[index] : 0
                        text += prefix
                        text += suffix
                        text += String(index < value.counts.count ? cumulative : value.count)
                        text += "\n"
                    }
                    let close = hasLabels ? value.labelText + "} " : " "
                    text += family.name + "_sum" + close + Self.number(value.sum) + "\n"
                    text += family.name + "_count" + close + String(value.count) + "\n"
                }
            }
        }
    }

    // MARK: Text format

    static func header(_ name: String, _ help: String, _ type: String, into text: inout String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    static func sample(_ name: String, _ labels: [(String, String)], _ value: Double, into text: inout String) {
        text += name
        if !labels.isEmpty {
            text += "{"
            for (index, (label, value)) in labels.enumerated() {
                if index > 0 { text += "," }
                text += label
                text += "=\""
                escape(value, into: &text)
                text += "\""
            }
            text += "}"
        }
        text += " "
        text += number(value)
        text += "\n"
    }

    /// Label values escape backslash, double quote and line feed.
    static func escape(_ value: String, into text: inout String) {
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else {
            text += value
            return
        }
        for character in value.unicodeScalars {
            switch character {
            case "\\": text += "\\\\"
            case "\"": text += "\\\""
            case "\n": text += "\\n"
            default: text.unicodeScalars.append(character)
            }
        }
    }

    /// Integers without a fraction (token counts read as such), others as Swift prints
    /// them, which Prometheus parses (`1e-05`, `0.25`).
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}

extension Metrics.Series {
    mutating func observe(_ value: Double, _ bounds: [Double]) {
        if let index = bounds.firstIndex(where: { value <= $0 }) { counts[index] += 1 }
        sum += value
        count += 1
    }
}

// MARK: The families

extension Metrics {
    /// The OpenTelemetry GenAI client metrics (semantic conventions 1.37+), with the
    /// buckets they advise, named as an OpenTelemetry collector exports them to Prometheus.
    static let genAILabels = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "namespace", "agent"]
    public static let tokenUsage = Family(
        0, "gen_ai_client_token_usage", .histogram, "Tokens used per model call, by gen_ai_token_type (input, output).",
        labels: genAILabels + ["gen_ai_token_type"],
        buckets: [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864])
    public static let operationDuration = Family(
        1, "gen_ai_client_operation_duration_seconds", .histogram,
        "Duration of model calls through the gateway, to the last byte; error_type is empty on success.",
        labels: genAILabels + ["error_type"],
        buckets: [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92])
    public static let timeToFirstChunk = Family(
        2, "gen_ai_client_operation_time_to_first_chunk_seconds", .histogram,
        "Time from a streamed call's arrival to its first chunk sent to the agent.", labels: genAILabels,
        buckets: [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10])

    /// orl's own.
    public static let costUSD = Family(
        3, "orl_cost_usd_total", .counter, "Dollars the ledger charged, by agent and model (provider/model).",
        labels: ["namespace", "agent", "model"])
    public static let tokens = Family(
        4, "orl_tokens_total", .counter, "Tokens the ledger charged, by agent, model and type (input, output).",
        labels: ["namespace", "agent", "model", "type"])
    public static let modelCalls = Family(
        5, "orl_model_calls_total", .counter, "Model calls settled by the gateway (ledger rows), by outcome (ok or error).",
        labels: ["namespace", "agent", "model", "outcome"])
    public static let refusals = Family(
        6, "orl_refusals_total", .counter,
        "Calls the gateway, tools or MCP refused before reaching a provider or a tool, by reason (the error code).",
        labels: ["namespace", "agent", "reason"])
    public static let toolCalls = Family(
        7, "orl_tool_calls_total", .counter, "Tool calls, by tool, agent and outcome (ok or the error code).",
        labels: ["namespace", "agent", "tool", "outcome"])
    public static let toolDuration = Family(
        8, "orl_tool_call_duration_seconds", .histogram, "Duration of tool calls.", labels: ["namespace", "tool"],
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60])
    public static let stepAttemptDuration = Family(
        9, "orl_run_step_attempt_duration_seconds", .histogram,
        "Duration of step attempts that agents completed or failed, by outcome (Succeeded, Failed).",
        labels: ["namespace", "agent", "outcome"],
        buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600])
    public static let reconcileDuration = Family(
        10, "orl_reconcile_duration_seconds", .histogram, "Duration of the controller's reconcile passes.", labels: [],
        buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5])

    static let families = [
        tokenUsage, operationDuration, timeToFirstChunk, costUSD, tokens, modelCalls, refusals, toolCalls, toolDuration,
        stepAttemptDuration, reconcileDuration,
    ]
}
