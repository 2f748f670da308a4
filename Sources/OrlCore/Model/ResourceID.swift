/// The identity of a resource: kind, namespace and name, as in Kubernetes.
public struct ResourceID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var kind: String
    public var namespace: String
    public var name: String

    public static let defaultNamespace = "default"

    public init(kind: String, namespace: String = ResourceID.defaultNamespace, name: String) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
    }

    /// `Agent/writer`, or `Agent/writer@team-a` outside the default namespace... kept to
    /// `Kind/name` as the JSON contract says; the namespace is reported beside it.
    public var description: String { "\(kind)/\(name)" }

    public static func < (lhs: ResourceID, rhs: ResourceID) -> Bool {
        (lhs.kind, lhs.namespace, lhs.name) < (rhs.kind, rhs.namespace, rhs.name)
    }
}
