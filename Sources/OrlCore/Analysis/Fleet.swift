import OrlJSON

/// A consistent set of resources: the desired state as read from manifests, one
/// resource per identity, in the order plans and listings use.
public struct Fleet: Sendable {
    public let resources: [Resource]
    private let positions: [ResourceID: Int]
    /// Positions by kind and namespace: reference checks ask for these once per
    /// reference, so a scan would make validation quadratic in fleet size.
    private let groups: [Group: [Int]]

    private struct Group: Hashable {
        var kind: ResourceKind
        var namespace: String
    }
    /// Resources the manifests define but that could not be read; see `ReadManifests`.
    public let unreadable: Set<ResourceID>
    /// Documents whose resources could not even be named (see `ReadManifests.unidentified`).
    public let unidentified: Int
    private let unreadableGroups: Set<Group>

    /// Keeps the first resource of every identity and reports the others as duplicates,
    /// pointing at the first definition.
    public static func assemble(_ candidates: [Resource], unreadable: [ResourceID] = [], unidentified: Int = 0) -> (
        Fleet, [Diagnostic]
    ) {
        var first: [ResourceID: Int] = [:]
        first.reserveCapacity(candidates.count)
        var kept: [Resource] = []
        kept.reserveCapacity(candidates.count)
        var diagnostics: [Diagnostic] = []
        for resource in candidates {
            let id = resource.id
            if let index = first[id] {
                let original = kept[index]
                let place = id.namespace == ResourceID.defaultNamespace ? "" : " in namespace \"\(id.namespace)\""
                diagnostics.append(
                    .error(
                        .resourceDuplicate, "\(id) is defined more than once\(place)", at: resource.nameLocation,
                        resource: id, path: ValuePath([.key("metadata"), .key("name")]),
                        notes: [.init("first defined here", at: original.nameLocation)]))
            } else {
                first[id] = kept.count
                kept.append(resource)
            }
        }
        return (Fleet(kept, unreadable: Set(unreadable), unidentified: unidentified), diagnostics)
    }

    public init(_ resources: [Resource], unreadable: Set<ResourceID> = [], unidentified: Int = 0) {
        self.unreadable = unreadable
        self.unidentified = unidentified
        unreadableGroups = Set(
            unreadable.compactMap { id in ResourceKind(rawValue: id.kind).map { Group(kind: $0, namespace: id.namespace) } })
        // Sort positions, not resources: a Resource is large and copying it costs.
        let keys = resources.map { ($0.kind, $0.metadata.namespace, $0.metadata.name) }
        let order = keys.indices.sorted { keys[$0] < keys[$1] }
        let sorted = order.map { resources[$0] }
        self.resources = sorted
        var positions: [ResourceID: Int] = [:]
        positions.reserveCapacity(sorted.count)
        var groups: [Group: [Int]] = [:]
        for (i, r) in sorted.enumerated() {
            positions[r.id] = i
            groups[Group(kind: r.kind, namespace: r.metadata.namespace), default: []].append(i)
        }
        self.positions = positions
        self.groups = groups
    }

    public subscript(id: ResourceID) -> Resource? {
        positions[id].map { resources[$0] }
    }

    public func resource(_ kind: ResourceKind, _ name: String, namespace: String) -> Resource? {
        self[ResourceID(kind: kind.rawValue, namespace: namespace, name: name)]
    }

    /// Whether the manifests define `kind/name`, readable or not: what reference checks
    /// ask, so that one broken document is not reported again at every reference to it.
    public func declares(_ kind: ResourceKind, _ name: String, namespace: String) -> Bool {
        let id = ResourceID(kind: kind.rawValue, namespace: namespace, name: name)
        return positions[id] != nil || unreadable.contains(id)
    }

    /// Whether every document of the manifests was read: nothing unreadable, nothing
    /// unnamed. A permission diff or an audit of an incomplete fleet would report what
    /// the missing documents may grant or deny.
    public var isComplete: Bool { unreadable.isEmpty && unidentified == 0 }

    /// Whether the manifests may define a `kind` in `namespace` that could not be read:
    /// one of that kind there is unreadable, or some document could not even be named.
    public func mayMiss(_ kind: ResourceKind, in namespace: String) -> Bool {
        unidentified > 0 || unreadableGroups.contains(Group(kind: kind, namespace: namespace))
    }

    public func resources(of kind: ResourceKind) -> [Resource] {
        resources.filter { $0.kind == kind }
    }

    public func resources(of kind: ResourceKind, namespace: String) -> [Resource] {
        groups[Group(kind: kind, namespace: namespace)]?.map { resources[$0] } ?? []
    }

    /// The names of the resources of a kind in a namespace, without copying them: what
    /// a "did you mean" looks through, once per unresolved reference.
    public func names(of kind: ResourceKind, namespace: String) -> LazyMapSequence<[Int], String> {
        (groups[Group(kind: kind, namespace: namespace)] ?? []).lazy.map { resources[$0].metadata.name }
    }

    /// The agents a Policy or Budget selects, in its namespace.
    public func agents(selectedBy selector: AgentSelector, namespace: String) -> [Resource] {
        resources(of: .agent, namespace: namespace).filter { selector.selects($0.metadata) }
    }
}
