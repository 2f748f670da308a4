/// Dollar amounts as people read them, without Foundation's formatters.
public enum Money {
    /// `$12.30`; `decimals` digits after the point, rounded as asked.
    public static func format(_ usd: Double, decimals: Int = 2, rounding: FloatingPointRoundingRule = .toNearestOrAwayFromZero)
        -> String
    {
        var scale = 1
        for _ in 0..<decimals { scale *= 10 }
        let units = Int((usd.magnitude * Double(scale)).rounded(rounding))
        let fraction = String(units % scale)
        let digits = decimals == 0 ? "" : "." + String(repeating: "0", count: decimals - fraction.count) + fraction
        return (usd < 0 && units > 0 ? "-$" : "$") + String(units / scale) + digits
    }
}
