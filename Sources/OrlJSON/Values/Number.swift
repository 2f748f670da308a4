/// A JSON/YAML number that keeps its exact form.
///
/// Integers stay exact (`Int`); other numbers keep their source text next to the
/// `Double`, so decimal arithmetic (`multipleOf: 0.01`) can be exact when it matters.
public struct Number: Sendable, Hashable, CustomStringConvertible {
    public let double: Double
    /// Set when the value is mathematically an integer that fits in `Int` (`1.0` included).
    public let integer: Int?
    /// The literal as written, for exact decimal arithmetic and faithful messages.
    public let text: String

    public init(integer: Int) {
        self.integer = integer
        self.double = Double(integer)
        self.text = String(integer)
    }

    public init(double: Double, text: String? = nil) {
        self.double = double
        if double.isFinite, double == double.rounded(), abs(double) < 9.0e18 {
            self.integer = Int(double)
        } else {
            self.integer = nil
        }
        self.text = text ?? (integer.map(String.init) ?? String(double))
    }

    public var isInteger: Bool { integer != nil }

    public static func == (lhs: Number, rhs: Number) -> Bool {
        if let a = lhs.integer, let b = rhs.integer { return a == b }
        return lhs.double == rhs.double
    }

    public func hash(into hasher: inout Hasher) {
        if let i = integer { hasher.combine(i) } else { hasher.combine(double) }
    }

    public var description: String { text }
}
