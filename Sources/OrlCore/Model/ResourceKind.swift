/// The kinds of `orl.dev/v1`. The declaration order is the order plans and listings
/// use: what others refer to comes before what refers to it.
public enum ResourceKind: String, CaseIterable, Sendable, Hashable, Comparable, Codable {
    case modelProvider = "ModelProvider"
    case tool = "Tool"
    case agent = "Agent"
    case policy = "Policy"
    case budget = "Budget"
    case workflow = "Workflow"
    case alert = "Alert"

    public static let apiVersion = "orl.dev/v1"

    public static func < (lhs: ResourceKind, rhs: ResourceKind) -> Bool { lhs.order < rhs.order }

    private var order: Int {
        switch self {
        case .modelProvider: 0
        case .tool: 1
        case .agent: 2
        case .policy: 3
        case .budget: 4
        case .workflow: 5
        case .alert: 6
        }
    }

    /// The schema file in `schemas/` that defines this kind.
    public var schemaFile: String { "\(rawValue.lowercased()).schema.json" }

    public var plural: String {
        switch self {
        case .policy: "policies"
        default: rawValue.lowercased() + "s"
        }
    }

    /// Short names, as `kubectl get po` has them.
    public var shortNames: [String] {
        switch self {
        case .modelProvider: ["provider", "providers", "mp"]
        case .tool: []
        case .agent: ["ag"]
        case .policy: ["pol"]
        case .budget: []
        case .workflow: ["wf"]
        case .alert: []
        }
    }

    /// Resolves what a user typed on the command line: `Agent`, `agent`, `agents`, `ag`.
    public init?(userInput: String) {
        let lowered = userInput.lowercased()
        guard
            let kind = ResourceKind.allCases.first(where: {
                $0.rawValue.lowercased() == lowered || $0.plural == lowered || $0.shortNames.contains(lowered)
            })
        else { return nil }
        self = kind
    }
}
