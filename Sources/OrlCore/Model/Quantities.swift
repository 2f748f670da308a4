/// A value manifests write as a string (`10m`, `512Mi`, `sim/small`) and orl parses.
public protocol TextValue: Decodable {
    init?(_ text: String)
    /// What a valid value looks like, for the error when one is not.
    static var expected: String { get }
}

extension TextValue {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(text) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "\"\(text)\" is not \(Self.expected)"))
        }
        self = value
    }
}

/// `10m`, `1h30m`, `500ms`: how manifests write durations.
public struct DurationValue: Sendable, Hashable, TextValue, CustomStringConvertible {
    public static let expected = "a duration such as 30s, 10m or 1h30m, of at most 36600d"

    public var duration: Duration
    public var text: String

    public init?(_ text: String) {
        var total = Duration.zero
        var digits: Int?
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        while let c = rest.first {
            if let d = c.wholeNumberValue, c.isASCII {
                let (mul, o1) = (digits ?? 0).multipliedReportingOverflow(by: 10)
                let (sum, o2) = mul.addingReportingOverflow(d)
                guard !o1, !o2 else { return nil }
                digits = sum
                rest = rest.dropFirst()
                continue
            }
            guard let n = digits else { return nil }
            let unit: Duration
            if rest.hasPrefix("ms") {
                unit = .milliseconds(n)
                rest = rest.dropFirst(2)
            } else {
                switch c {
                case "s": unit = .seconds(n)
                case "m": unit = .seconds(n.saturatingMultiplied(by: 60))
                case "h": unit = .seconds(n.saturatingMultiplied(by: 3600))
                case "d": unit = .seconds(n.saturatingMultiplied(by: 86400))
                default: return nil
                }
                rest = rest.dropFirst()
            }
            total += unit
            digits = nil
            // Longer is refused, so that instants plus durations stay in range.
            guard total <= Bounds.duration else { return nil }
        }
        guard digits == nil else { return nil }
        self.duration = total
        self.text = text
    }

    public var description: String { text }
}

/// `512Mi`, `2G`: a byte count with an optional binary or decimal suffix.
public struct ByteQuantity: Sendable, Hashable, TextValue, CustomStringConvertible {
    public static let expected = "a quantity such as 512Mi"

    public var bytes: Int
    public var text: String

    public init?(_ text: String) {
        let suffixes: [(String, Int)] = [
            ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40),
            ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
        ]
        var number = Substring(text)
        var multiplier = 1
        for (suffix, value) in suffixes where text.hasSuffix(suffix) {
            number = number.dropLast(suffix.count)
            multiplier = value
            break
        }
        guard let n = Int(number), n >= 0 else { return nil }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { return nil }
        self.bytes = bytes
        self.text = text
    }

    public var description: String { text }
}

/// `PROVIDER/MODEL`: a ModelProvider's name and one of its models. The model part may
/// itself contain '/' (`vllm/meta-llama/Llama-3.1-8B-Instruct`).
public struct ModelRef: Sendable, Hashable, TextValue, CustomStringConvertible {
    public static let expected = "PROVIDER/MODEL"

    public var provider: String
    public var model: String

    public init(provider: String, model: String) {
        self.provider = provider
        self.model = model
    }

    public init?(_ text: String) {
        guard let slash = text.firstIndex(of: "/") else { return nil }
        let provider = String(text[..<slash])
        let model = String(text[text.index(after: slash)...])
        guard !provider.isEmpty, !model.isEmpty else { return nil }
        self.init(provider: provider, model: model)
    }

    public var description: String { "\(provider)/\(model)" }
}
