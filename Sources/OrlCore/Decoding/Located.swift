public import OrlJSON

/// A decoded value together with where it was written, so a diagnostic about it
/// (a reference that does not resolve, say) can point at the exact spot.
public struct Located<Value: Sendable>: Sendable {
    public var value: Value
    public var location: SourceLocation

    public init(_ value: Value, at location: SourceLocation) {
        self.value = value
        self.location = location
    }
}

extension Located: Equatable where Value: Equatable {
    /// Two located values are the same value wherever they were written.
    public static func == (lhs: Located, rhs: Located) -> Bool { lhs.value == rhs.value }
}

extension Located: Hashable where Value: Hashable {
    public func hash(into hasher: inout Hasher) { hasher.combine(value) }
}

extension Located: Decodable where Value: Decodable {
    public init(from decoder: any Decoder) throws {
        // The concrete type first: casting to a protocol looks the conformance up, a
        // cost paid for every located field of every manifest.
        if let decoder = decoder as? NodeDecoding {
            self.init(try Value(from: decoder), at: decoder.node.location)
            return
        }
        guard let locating = decoder as? any LocatingDecoder else {
            throw DecodingError.typeMismatch(
                Located.self,
                .init(codingPath: decoder.codingPath, debugDescription: "Located values decode only from a located Node tree"))
        }
        self.init(try Value(from: decoder), at: locating.node.location)
    }
}
