/// Dollar amounts as people read them, without Foundation's formatters.
public enum Money {
    /// `$12.30`; `decimals` digits after the point, rounded as asked.
    public static func format(_ usd: Double, decimals: Int = 2, rounding: FloatingPointRoundingRule = .toNearestOrAwayFromZero)
        -> String
    {
        var scale = 1
        for _ in 0..<min(max(decimals, 0), 9) { scale *= 10 }
        // Beyond what an Int of cents holds (or not a number), the plain figure: a
        // stored `usd: 1e308` once trapped `budget status`.
        let scaled = (usd.magnitude * Double(scale)).rounded(rounding)
        guard scaled.isFinite, scaled < 9.0e18 else { return (usd < 0 ? "-$" : "$") + "\(usd.magnitude)" }
        let units = Int(scaled)
        let fraction = String(units % scale)
        let digits = scale == 1 ? "" : "." + String(repeating: "0", count: max(0, String(scale).count - 1 - fraction.count)) + fraction
        return (usd < 0 && units > 0 ? "-$" : "$") + String(units / scale) + digits
    }
}
