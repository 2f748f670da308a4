import Foundation
import OrlJSON
import Testing

@testable import OrlCore

/// Numbers in manifests, and the money and token arithmetic they reach, at their
/// extremes: a manifest is refused with a diagnostic at the number, or valid and then
/// planned, metered and reported without a trap. `maxTokens: 9223372036854775807` once
/// crashed `validate`; a price of `1e308` the controller; `usd: 1e308` `budget status`.
@Suite struct ExtremeNumbersTests {
    /// A fleet with every numeric field a manifest has, each one `$NAME`.
    static let template = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models:
            - {name: small, contextWindow: $contextWindow, maxOutputTokens: $maxOutputTokens, pricing: {input: $input, output: $output}}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: a}
        spec: {model: sim/small, maxTokensPerCall: $maxTokensPerCall, runtime: {command: /bin/true, resources: {openFiles: $openFiles}}}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: all}
        spec:
          appliesTo: {agents: [a]}
          allow: {models: ["sim/*"]}
        ---
        apiVersion: orl.dev/v1
        kind: Budget
        metadata: {name: cap}
        spec:
          appliesTo: {agents: [a]}
          limits: [{window: day, usd: $usd}, {window: month, tokens: $tokens}]
          alertThresholds: [$threshold]
        ---
        apiVersion: orl.dev/v1
        kind: Workflow
        metadata: {name: w}
        spec:
          steps:
            - {id: s1, agent: a, maxTokens: $maxTokens, retry: {attempts: $attempts}, timeout: $timeout}
            - {id: s2, agent: a, maxTokens: $maxTokens, retry: {attempts: $attempts}, dependsOn: [s1]}
        """

    static let ordinary: [String: String] = [
        "contextWindow": "1000", "maxOutputTokens": "100", "input": "1", "output": "2", "maxTokensPerCall": "100",
        "openFiles": "1024", "usd": "10", "tokens": "100000", "threshold": "50", "maxTokens": "100", "attempts": "3",
        "timeout": "10m",
    ]

    static func fleet(_ values: [String: String]) -> String {
        var text = template
        // Longest names first: `$maxTokensPerCall` before `$maxTokens`.
        for (name, value) in ordinary.merging(values, uniquingKeysWith: { $1 }).sorted(by: { $0.key.count > $1.key.count }) {
            text = text.replacingOccurrences(of: "$" + name, with: value)
        }
        return text
    }

    static let extremes = [
        "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551616", "1e308", "1.7976931348623157e308",
        "-1e308", ".inf", "-.inf", ".nan", "1e13", "1000000000001", "0x7fffffffffffffff", "4.9e-324", "-1", "0",
    ]

    @Test func theOrdinaryFleetIsValid() {
        let report = validate(Self.fleet([:]))
        #expect(report.isValid, "\(report.diagnostics.map(\.message))")
    }

    /// Each numeric field, at each extreme, alone: refused where the arithmetic cannot
    /// hold it, with the diagnostic at that field; never a trap.
    @Test(arguments: [
        "contextWindow", "maxOutputTokens", "input", "output", "maxTokensPerCall", "openFiles", "usd", "tokens", "threshold", "maxTokens",
        "attempts",
    ])
    func everyNumericFieldIsBoundedAtItsExtremes(field: String) {
        for value in Self.extremes {
            let text = Self.fleet([field: value])
            let report = validate(text)
            let tiny = value == "4.9e-324" && ["input", "output", "usd"].contains(field)
            let zero = (value == "0" || value == "-0") && ["input", "output"].contains(field)
            if tiny || zero {
                #expect(report.isValid, "\(field): \(value): \(report.diagnostics.map(\.message))")
            } else {
                #expect(!report.isValid, "\(field): \(value) was accepted")
                #expect(report.diagnostics.contains { $0.severity == .error && ($0.location?.line ?? 0) > 0 }, "\(field): \(value)")
            }
        }
    }

    /// At the bounds themselves the fleet is valid, and planning its budget (the
    /// feasibility check) holds: many steps, many attempts, the largest numbers.
    @Test func theLargestValidNumbersArePlannedWithoutATrap() {
        let top = String(Bounds.tokens)
        let text = Self.fleet([
            "contextWindow": top, "maxOutputTokens": top, "maxTokensPerCall": top, "input": "1000000", "output": "1000000",
            "usd": "1000000000000", "tokens": top, "maxTokens": top, "attempts": "100", "threshold": "100", "timeout": "36600d",
        ])
        let report = validate(text)
        #expect(report.isValid, "\(report.diagnostics.map(\.message))")
        #expect(report.diagnostics.contains { $0.code == .budgetInfeasible })
    }

    @Test func durationsBeyondAHundredYearsAreRefused() {
        for text in [
            "36601d", "9223372036854775807s", "9223372036854775807d", "153722867280912931m", "99999999999999999999h", "1000000000h",
        ] {
            #expect(DurationValue(text) == nil, "\(text)")
            let report = validate(Self.fleet(["timeout": text]))
            #expect(!report.isValid, "timeout \(text)")
        }
        #expect(DurationValue("36600d")?.duration == Bounds.duration)
    }

    // MARK: Arithmetic, over extreme and random values

    static let integers: [Int] = {
        var generator = SeededGenerator(seed: 20)
        let fixed = [Int.min, Int.min + 1, -Bounds.tokens, -1, 0, 1, Bounds.tokens, Int(Int32.max), Int.max / 2, Int.max - 1, Int.max]
        return fixed + (0..<40).map { _ in Int.random(in: .min ... .max, using: &generator) }
    }()

    static let doubles: [Double] = {
        var generator = SeededGenerator(seed: 21)
        let fixed: [Double] = [
            0, -0.0, .leastNonzeroMagnitude, 1e-9, 0.005, 1, 1e6, 9.0e18, 9.3e18, 1e19, 1e308, .greatestFiniteMagnitude, .infinity,
            -.infinity, .nan, -1, -1e308,
        ]
        return fixed + (0..<40).map { _ in Double(bitPattern: UInt64.random(in: .min ... .max, using: &generator)) }
    }()

    @Test func integerArithmeticSaturates() {
        for x in Self.integers {
            for y in Self.integers {
                let sum = x.saturatingAdding(y)
                let exact = x.addingReportingOverflow(y)
                #expect(exact.overflow ? (sum == .max || sum == .min) : sum == exact.partialValue)
                let product = x.saturatingMultiplied(by: y)
                let exactProduct = x.multipliedReportingOverflow(by: y)
                if exactProduct.overflow {
                    #expect(product == ((x < 0) == (y < 0) ? .max : .min))
                } else {
                    #expect(product == exactProduct.partialValue)
                }
                let difference = x.saturatingSubtracting(y)
                let exactDifference = x.subtractingReportingOverflow(y)
                #expect(exactDifference.overflow ? (difference == .max || difference == .min) : difference == exactDifference.partialValue)
                _ = Charge(usd: 0, tokens: x) + Charge(usd: 0, tokens: y)
                _ = Charge(usd: 0, tokens: x) - Charge(usd: 0, tokens: y)
            }
            let usage = TokenUsage(prompt: x, completion: x)
            #expect((0...Bounds.tokens).contains(usage.prompt) && usage.total <= 2 * Bounds.tokens)
        }
    }

    @Test func moneyAndDurationsFormatAndConvertAnyDouble() {
        for x in Self.doubles {
            for decimals in [0, 2, 4, 6, 30] {
                let text = Money.format(x, decimals: decimals)
                #expect(text.hasPrefix("$") || text.hasPrefix("-$"), "\(x)")
            }
            _ = Int(clamping: x)
            if let duration = Duration.seconds(clamping: x, atMost: .seconds(25)) {
                #expect(x.isFinite && x >= 0 && duration <= .seconds(25) && duration >= .zero)
            } else {
                #expect(!(x.isFinite && x >= 0))
            }
        }
        #expect(Money.format(12.3) == "$12.30" && Money.format(0.00004, decimals: 4) == "$0.0000" && Money.format(-1.5) == "-$1.50")
        #expect(Int(clamping: 1e300) == .max && Int(clamping: -1e300) == .min && Int(clamping: Double.nan) == 0)
    }

    /// A meter configured from a stored fleet that predates the bounds (a price of
    /// 1e308, `usd: 1e308`, NaN), reserving, settling and reporting extreme charges:
    /// no trap, and a NaN never opens a halting budget.
    @Test func theMeterHoldsStoredManifestsAndChargesBeyondTheBounds() throws {
        let base = validate(Self.fleet([:]))
        try #require(base.isValid)
        let agent = ResourceID(kind: "Agent", name: "a")
        let now = Timestamp(milliseconds: 1_795_000_000_000)
        for price in [1e308, .greatestFiniteMagnitude, .infinity, .nan] {
            for usd in [1e308, .infinity, 1e-300] {
                let fleet = Fleet(
                    base.fleet.resources.map { resource in
                        switch resource.spec {
                        case .modelProvider(var spec):
                            spec.models[0].pricing.input = price
                            spec.models[0].pricing.output = price
                            return Resource(
                                metadata: resource.metadata, spec: .modelProvider(spec), document: resource.document, file: resource.file,
                                documentIndex: resource.documentIndex)
                        case .budget(var spec):
                            spec.limits[0].usd = usd
                            spec.limits[1].tokens = .max
                            return Resource(
                                metadata: resource.metadata, spec: .budget(spec), document: resource.document, file: resource.file,
                                documentIndex: resource.documentIndex)
                        default: return resource
                        }
                    })
                var meter = BudgetMeter()
                meter.configure(fleet)
                let table = CallerTable(fleet: fleet, tokens: [agent: AgentToken.digest("t")])
                let route = try #require(table.caller(token: "t")?.routes.first)
                for tokens in [0, 1, Bounds.tokens, .max] {
                    let usage = TokenUsage(prompt: tokens, completion: tokens)
                    let cost = route.cost(usage)
                    #expect(cost.isFinite && cost >= 0, "price \(price), \(tokens) tokens: \(cost)")
                    let charge = Charge(usd: cost, tokens: usage.total)
                    switch meter.reserve(agent, charge, now: now) {
                    case .success(let reservation):
                        _ = meter.settle(reservation, cost: charge)
                    case .failure(let refusal):
                        #expect(!refusal.message.isEmpty)
                    }
                    for status in meter.status(now: now) {
                        _ = Money.format(status.spent.usd, decimals: 4)
                        _ = Int(clamping: status.percentUsed.rounded(.down))
                        #expect(!status.spent.usd.isNaN && !status.reserved.usd.isNaN)
                    }
                    _ = meter.halts(now: now)
                }
                // After a dear call, the halting budget refuses even a cheap one.
                if case .success = meter.reserve(agent, Charge(usd: 1, tokens: 1), now: now), usd < 1e300 {
                    Issue.record("price \(price), usd \(usd): an exhausted budget accepted a call")
                }
            }
        }
    }
}

/// A deterministic generator (SplitMix64), so that a failure repeats.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
