public import OrlJSON

/// The vault secrets that orl itself presents on an agent's behalf: a ModelProvider's
/// `apiKeySecret` (the gateway sends it upstream) and an http Tool's `credentialSecret`.
/// No agent ever receives one, whatever its policies allow: an agent that held the
/// provider key could call the provider directly, around budgets and policy.
public struct CredentialSecrets: Sendable {
    /// A resource that presents the secret, and where its manifest names it.
    public struct User: Sendable, Hashable {
        public var resource: ResourceID
        public var location: SourceLocation

        /// `the API key of ModelProvider/openai`.
        public var role: String {
            switch resource.kind {
            case ResourceKind.modelProvider.rawValue: "the API key of \(resource)"
            case ResourceKind.alert.rawValue: "the webhook of \(resource)"
            default: "the credential of \(resource)"
            }
        }
    }

    private let users: [SecretID: [User]]
    /// Namespaces with a ModelProvider or Tool that could not be read: which secrets
    /// they use is unknown there, so none may be given out.
    private let blind: Set<String>
    /// Some document could not even be named: any namespace may hold a provider or tool.
    private let blindEverywhere: Bool

    public init(_ fleet: Fleet) {
        var users: [SecretID: [User]] = [:]
        for provider in fleet.resources(of: .modelProvider) {
            guard let name = provider.modelProvider?.apiKeySecret else { continue }
            users[SecretID(namespace: provider.metadata.namespace, name: name.value), default: []].append(
                User(resource: provider.id, location: name.location))
        }
        for tool in fleet.resources(of: .tool) {
            guard let name = tool.tool?.http?.credentialSecret ?? tool.tool?.mcp?.credentialSecret else { continue }
            users[SecretID(namespace: tool.metadata.namespace, name: name.value), default: []].append(
                User(resource: tool.id, location: name.location))
        }
        // An Alert's webhook URL and signing key: the notifier presents them.
        for alert in fleet.resources(of: .alert) {
            guard let webhook = alert.alert?.webhook else { continue }
            for name in [webhook.urlSecret] + (webhook.signingKeySecret.map { [$0] } ?? []) {
                users[SecretID(namespace: alert.metadata.namespace, name: name.value), default: []].append(
                    User(resource: alert.id, location: name.location))
            }
        }
        self.users = users
        blind = Set(
            fleet.unreadable.filter { $0.kind == ResourceKind.modelProvider.rawValue || $0.kind == ResourceKind.tool.rawValue }.map(
                \.namespace))
        blindEverywhere = fleet.unidentified > 0
    }

    /// The resources that use the secret as their credential, in fleet order; empty when none.
    public func users(of secret: SecretID) -> [User] { users[secret] ?? [] }

    /// Why an agent may not receive the secret even when a policy allows it; nil when it may.
    public func reservation(of secret: SecretID) -> String? {
        if let user = users(of: secret).first { return "it is \(user.role), which only orl presents" }
        if blindEverywhere || blind.contains(secret.namespace) {
            return "a ModelProvider or Tool in its namespace cannot be read, so whether it is a provider key or tool credential is unknown"
        }
        return nil
    }

    /// May the agent with these permissions read the secret: the one decision that
    /// `explain`, the audit and the controller all use. A reservation beats any allow.
    public func decide(_ secret: SecretID, _ permissions: EffectivePermissions) -> PermissionDecision {
        let decision = permissions.decide(.secret, secret.name)
        guard let why = reservation(of: secret) else { return decision }
        return PermissionDecision(outcome: .reserved, rules: decision.isAllowed ? decision.rules : [], reservation: why)
    }

    /// `decide(...).isAllowed`, on the fast path.
    public func permits(_ secret: SecretID, _ permissions: EffectivePermissions) -> Bool {
        permissions.permits(.secret, secret.name) && reservation(of: secret) == nil
    }
}
