/// `metadata`: the identity and labels every resource has.
public struct ObjectMeta: Sendable, Hashable, Decodable {
    public var name: String
    public var namespace: String
    public var labels: [String: String]
    public var annotations: [String: String]

    public init(
        name: String, namespace: String = ResourceID.defaultNamespace, labels: [String: String] = [:], annotations: [String: String] = [:]
    ) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
        self.annotations = annotations
    }

    enum CodingKeys: String, CodingKey { case name, namespace, labels, annotations }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        namespace = try c.decodeIfPresent(String.self, forKey: .namespace) ?? ResourceID.defaultNamespace
        labels = try c.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
        annotations = try c.decodeIfPresent([String: String].self, forKey: .annotations) ?? [:]
    }
}
