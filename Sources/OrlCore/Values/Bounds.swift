/// Numbers that agents, providers and manifests supply reach arithmetic that would trap
/// on overflow and stop the controller. Schemas bound what manifests may say
/// (`Bounds`), and the arithmetic on such numbers saturates instead of trapping, so
/// that no input, stored or sent, can crash the product.
public enum Bounds {
    /// The most tokens a manifest may name anywhere (a budget, a step, a model): a
    /// thousand billion. Sums of many of them stay far from `Int.max`.
    public static let tokens = 1_000_000_000_000
    /// The most dollars a Budget may name.
    public static let usd = 1_000_000_000_000.0
    /// The most a model may cost, in dollars per million tokens.
    public static let pricePerMillionTokens = 1_000_000.0
    /// The longest duration a manifest may name: a hundred years, so that any instant
    /// plus it stays an `Int64` of milliseconds.
    public static let duration = Duration.seconds(100 * 366 * 86_400)
}

extension Int {
    /// `self + other`, held at `Int.min`/`Int.max` instead of trapping.
    public func saturatingAdding(_ other: Int) -> Int {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }

    /// `self - other`, held at `Int.min`/`Int.max` instead of trapping.
    public func saturatingSubtracting(_ other: Int) -> Int {
        let (difference, overflow) = subtractingReportingOverflow(other)
        return overflow ? (other < 0 ? .max : .min) : difference
    }

    /// `self * other`, held at `Int.min`/`Int.max` instead of trapping.
    public func saturatingMultiplied(by other: Int) -> Int {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? ((self < 0) == (other < 0) ? .max : .min) : product
    }

    /// The integer nearest `value`, held in `Int`'s range (0 for NaN): `Int(_:)` traps on
    /// what does not fit.
    public init(clamping value: Double) {
        if value.isNaN {
            self = 0
        } else if value >= 9_223_372_036_854_775_807.0 {
            self = .max
        } else if value <= -9_223_372_036_854_775_808.0 {
            self = .min
        } else {
            self = Int(value.rounded(.towardZero))
        }
    }
}

extension Duration {
    /// `seconds` as a duration, at most `limit`; nil when it is not a number of seconds
    /// (negative, NaN or infinite). An agent's `wait=1e16` is the limit, not a trap.
    public static func seconds(clamping seconds: Double, atMost limit: Duration) -> Duration? {
        guard seconds.isFinite, seconds >= 0 else { return nil }
        let limitSeconds = Double(limit.components.seconds) + Double(limit.components.attoseconds) / 1e18
        guard seconds < limitSeconds else { return limit }
        return .milliseconds(Int64(seconds * 1000))
    }
}
