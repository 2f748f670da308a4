public import OrlJSON

/// The resource kinds read straight from their nodes, without `Decodable`.
///
/// A document reaches decoding only after its kind's schema accepted it, and then the
/// generic path (`NodeDecoder`: an existential decoder per value, a boxed container per
/// object, metadata looked up for every generic call) was a fifth of `validate`'s time.
/// These initializers read the same fields with the same defaults, and give up at the
/// first thing they do not expect (`DirectDecodingFailure`): the caller then decodes the
/// document again through `NodeDecoder`, whose value or error is the one that counts. So
/// a direct read only ever yields what `Decodable` yields for the same node; what it
/// does not know (MCP servers, dynamic patterns, approval gates) it hands to `NodeDecoder`
/// field by field. `DirectDecodingTests` holds both paths to the same resources.
struct DirectDecodingFailure: Error {}

extension ManifestReader {
    /// `metadata` and `spec` read directly, or nil when the generic path must decide.
    static func directlyDecoded(metadata: Node, spec: Node, kind: ResourceKind, annotations: Bool = true) -> (ObjectMeta, Resource.Spec)? {
        do throws(DirectDecodingFailure) {
            let meta = try ObjectMeta(direct: metadata, annotations: annotations)
            let decoded: Resource.Spec =
                switch kind {
                case .modelProvider: .modelProvider(try ModelProviderSpec(direct: spec))
                case .tool: .tool(try ToolSpec(direct: spec))
                case .agent: .agent(try AgentSpec(direct: spec))
                case .policy: .policy(try PolicySpec(direct: spec))
                case .budget: .budget(try BudgetSpec(direct: spec))
                case .workflow: .workflow(try WorkflowSpec(direct: spec))
                case .alert: throw DirectDecodingFailure()
                }
            return (meta, decoded)
        } catch {
            return nil
        }
    }
}

/// The members of a mapping, looked up as `KeyedDecodingContainer` does: the first
/// member of that name; `optional` treats null as absent, as `decodeIfPresent` does.
struct DirectFields {
    let members: [Node.Member]

    init(_ node: Node) throws(DirectDecodingFailure) {
        guard case .object(let members) = node.value else { throw DirectDecodingFailure() }
        self.members = members
    }

    func contains(_ key: String) -> Bool {
        for member in members where member.key == key { return true }
        return false
    }

    func required(_ key: String) throws(DirectDecodingFailure) -> Node {
        for member in members where member.key == key { return member.value }
        throw DirectDecodingFailure()
    }

    func optional(_ key: String) -> Node? {
        for member in members where member.key == key { return member.value.isNull ? nil : member.value }
        return nil
    }

    /// A field of a type read the generic way (rare parts of the model).
    func generic<T: Decodable>(_ type: T.Type, _ key: String) throws(DirectDecodingFailure) -> T? {
        guard let node = optional(key) else { return nil }
        do {
            return try NodeDecoder.decode(type, from: node)
        } catch {
            throw DirectDecodingFailure()
        }
    }
}

extension Node {
    func directString() throws(DirectDecodingFailure) -> String {
        guard case .string(let string) = value else { throw DirectDecodingFailure() }
        return string
    }

    func directLocatedString() throws(DirectDecodingFailure) -> Located<String> {
        Located(try directString(), at: location)
    }

    func directInt() throws(DirectDecodingFailure) -> Int {
        guard case .number(let number) = value, let integer = number.integer else { throw DirectDecodingFailure() }
        return integer
    }

    func directDouble() throws(DirectDecodingFailure) -> Double {
        guard case .number(let number) = value else { throw DirectDecodingFailure() }
        return number.double
    }

    func directBool() throws(DirectDecodingFailure) -> Bool {
        guard case .bool(let bool) = value else { throw DirectDecodingFailure() }
        return bool
    }

    func directEnum<E: RawRepresentable>(_ type: E.Type) throws(DirectDecodingFailure) -> E where E.RawValue == String {
        guard let value = E(rawValue: try directString()) else { throw DirectDecodingFailure() }
        return value
    }

    func directText<T: TextValue>(_ type: T.Type) throws(DirectDecodingFailure) -> T {
        guard let value = T(try directString()) else { throw DirectDecodingFailure() }
        return value
    }

    func directList<T>(_ element: (Node) throws(DirectDecodingFailure) -> T) throws(DirectDecodingFailure) -> [T] {
        guard case .array(let elements) = value else { throw DirectDecodingFailure() }
        var list: [T] = []
        list.reserveCapacity(elements.count)
        for node in elements { list.append(try element(node)) }
        return list
    }

    func directStrings() throws(DirectDecodingFailure) -> [String] {
        try directList { node throws(DirectDecodingFailure) in try node.directString() }
    }

    func directLocatedStrings() throws(DirectDecodingFailure) -> [Located<String>] {
        try directList { node throws(DirectDecodingFailure) in try node.directLocatedString() }
    }

    func directStringMap() throws(DirectDecodingFailure) -> [String: String] {
        try checkStringMap()
        guard case .object(let members) = value, !members.isEmpty else { return [:] }
        return StringMaps.shared(members)
    }

    /// Gives up where `directStringMap` would, without making the map.
    func checkStringMap() throws(DirectDecodingFailure) {
        guard case .object(let members) = value else { throw DirectDecodingFailure() }
        for member in members where member.value.string == nil { throw DirectDecodingFailure() }
    }
}

extension ObjectMeta {
    /// Without `annotations`, they are checked as they would be read but not kept (see
    /// `ManifestReader.decode`).
    init(direct node: Node, annotations keepsAnnotations: Bool = true) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        name = try f.required("name").directString()
        namespace = try f.optional("namespace")?.directString() ?? ResourceID.defaultNamespace
        labels = try f.optional("labels")?.directStringMap() ?? [:]
        if keepsAnnotations {
            annotations = try f.optional("annotations")?.directStringMap() ?? [:]
        } else {
            try f.optional("annotations")?.checkStringMap()
            annotations = [:]
        }
    }
}

extension ModelProviderSpec {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        description = try f.optional("description")?.directString()
        apiStyle = try f.required("apiStyle").directEnum(APIStyle.self)
        baseURL = try f.optional("baseURL")?.directString()
        apiKeySecret = try f.optional("apiKeySecret")?.directLocatedString()
        timeout = try f.optional("timeout")?.directText(DurationValue.self) ?? DurationValue("120s")!
        models = try f.required("models").directList { node throws(DirectDecodingFailure) in
            let m = try DirectFields(node)
            let pricing = try DirectFields(try m.required("pricing"))
            return Model(
                name: try m.required("name").directString(), contextWindow: try m.optional("contextWindow")?.directInt(),
                maxOutputTokens: try m.optional("maxOutputTokens")?.directInt(),
                pricing: Pricing(input: try pricing.required("input").directDouble(), output: try pricing.required("output").directDouble())
            )
        }
    }
}

extension ToolSpec {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        description = try f.optional("description")?.directString()
        type = try f.required("type").directEnum(InvocationType.self)
        if let node = f.optional("http") {
            let h = try DirectFields(node)
            http = HTTPEndpoint(
                url: try h.required("url").directString(), method: try h.optional("method")?.directString() ?? "POST",
                headers: try h.optional("headers")?.directStringMap() ?? [:],
                credentialSecret: try h.optional("credentialSecret")?.directLocatedString())
        } else {
            http = nil
        }
        if let node = f.optional("command") {
            let c = try DirectFields(node)
            command = Command(command: try c.required("command").directString(), args: try c.optional("args")?.directStrings() ?? [])
        } else {
            command = nil
        }
        mcp = try f.generic(McpServerSpec.self, "mcp")
        pinned = nil
        timeout = try f.optional("timeout")?.directText(DurationValue.self) ?? DurationValue("30s")!
        capabilities =
            try f.optional("capabilities")?.directList { node throws(DirectDecodingFailure) in try node.directEnum(Capability.self) } ?? []
        dataClasses = try f.optional("dataClasses")?.directStrings() ?? []
        risk = try f.optional("risk")?.directEnum(Risk.self) ?? .low
        untrustedOutput = try f.optional("untrustedOutput")?.directBool() ?? false
    }
}

extension ToolSpec.HTTPEndpoint {
    init(url: String, method: String, headers: [String: String], credentialSecret: Located<String>?) {
        self.url = url
        self.method = method
        self.headers = headers
        self.credentialSecret = credentialSecret
    }
}

extension ToolSpec.Command {
    init(command: String, args: [String]) {
        self.command = command
        self.args = args
    }
}

extension AgentSpec {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        description = try f.optional("description")?.directString()
        let model = try f.required("model")
        self.model = Located(try model.directText(ModelRef.self), at: model.location)
        runtime = try Runtime(direct: try f.required("runtime"))
        tools = try f.optional("tools")?.directLocatedStrings() ?? []
        secrets =
            try f.optional("secrets")?.directList { node throws(DirectDecodingFailure) in
                let s = try DirectFields(node)
                let name = try s.required("name").directLocatedString()
                return SecretRequest(name: name, env: try s.optional("env")?.directString() ?? SecretRequest.defaultEnv(for: name.value))
            } ?? []
        maxTokensPerCall = try f.optional("maxTokensPerCall")?.directInt()
        suspend = try f.optional("suspend")?.directBool() ?? false
    }
}

extension AgentSpec.SecretRequest {
    init(name: Located<String>, env: String) {
        self.name = name
        self.env = env
    }
}

extension AgentSpec.Runtime {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        command = try f.required("command").directString()
        args = try f.optional("args")?.directStrings() ?? []
        env =
            try f.optional("env")?.directList { node throws(DirectDecodingFailure) in
                let e = try DirectFields(node)
                return AgentSpec.EnvVar(name: try e.required("name").directString(), value: try e.required("value").directString())
            } ?? []
        workingDir = try f.optional("workingDir")?.directString()
        restartPolicy = try f.optional("restartPolicy")?.directEnum(AgentSpec.RestartPolicy.self) ?? .always
        gracePeriod = try f.optional("gracePeriod")?.directText(DurationValue.self) ?? DurationValue("10s")!
        if let node = f.optional("resources") {
            let r = try DirectFields(node)
            resources = AgentSpec.Resources(
                memory: try r.optional("memory")?.directText(ByteQuantity.self), openFiles: try r.optional("openFiles")?.directInt(),
                cpuTime: try r.optional("cpuTime")?.directText(DurationValue.self), pids: try r.optional("pids")?.directInt(),
                cpu: try r.optional("cpu")?.directDouble())
        } else {
            resources = nil
        }
        if let node = f.optional("isolation") {
            isolationSetting = Located(try node.directEnum(AgentSpec.Isolation.self), at: node.location)
        } else {
            isolationSetting = nil
        }
        // Rare: read the generic way.
        mounts = try f.generic([AgentSpec.Mount].self, "mounts") ?? []
        nodeSelector = try f.optional("nodeSelector")?.directStringMap() ?? [:]
    }
}

extension AgentSelector {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        agents = try f.optional("agents")?.directLocatedStrings() ?? []
        if let node = f.optional("selector") {
            let s = try DirectFields(node)
            selector = LabelSelector(
                matchLabels: try s.optional("matchLabels")?.directStringMap() ?? [:],
                matchExpressions: try s.optional("matchExpressions")?.directList { node throws(DirectDecodingFailure) in
                    let r = try DirectFields(node)
                    return LabelSelector.Requirement(
                        key: try r.required("key").directString(),
                        operator: try r.required("operator").directEnum(LabelSelector.Requirement.Operator.self),
                        values: try r.optional("values")?.directStrings() ?? [])
                } ?? [])
        } else {
            selector = nil
        }
        location = node.location
    }
}

extension PolicySpec {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        description = try f.optional("description")?.directString()
        appliesTo = try AgentSelector(direct: try f.required("appliesTo"))
        allow = try f.optional("allow").map { node throws(DirectDecodingFailure) in try Rules(direct: node) } ?? Rules()
        deny = try f.optional("deny").map { node throws(DirectDecodingFailure) in try Rules(direct: node) } ?? Rules()
        if let node = f.optional("requireIsolation") {
            requireIsolation = Located(try node.directEnum(AgentSpec.Isolation.self), at: node.location)
        } else {
            requireIsolation = nil
        }
        if f.contains("requireApproval") {
            let a = try DirectFields(try f.required("requireApproval"))
            approvalTools = try a.optional("tools")?.directLocatedStrings() ?? []
            approvalCapabilities =
                try a.optional("capabilities")?.directList { node throws(DirectDecodingFailure) in
                    Located(try node.directEnum(ToolSpec.Capability.self), at: node.location)
                } ?? []
            if let node = a.optional("risk") {
                approvalRisk = Located(try node.directEnum(ToolSpec.Risk.self), at: node.location)
            } else {
                approvalRisk = nil
            }
            acceptTimeoutApproval = try a.optional("acceptTimeoutApproval")?.directBool() ?? false
        } else {
            approvalTools = []
            approvalCapabilities = []
            approvalRisk = nil
            acceptTimeoutApproval = false
        }
    }
}

extension PolicySpec.Rules {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        self.init()
        tools = try f.optional("tools")?.directLocatedStrings() ?? []
        models = try f.optional("models")?.directLocatedStrings() ?? []
        secrets = try f.optional("secrets")?.directLocatedStrings() ?? []
        handoffs = try f.optional("handoffs")?.directLocatedStrings() ?? []
        dataClasses = try f.optional("dataClasses")?.directLocatedStrings() ?? []
        egress = try f.optional("egress")?.directLocatedStrings() ?? []
    }
}

extension BudgetSpec {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        description = try f.optional("description")?.directString()
        appliesTo = try AgentSelector(direct: try f.required("appliesTo"))
        scope = try f.optional("scope")?.directEnum(Scope.self) ?? .shared
        limits = try f.required("limits").directList { node throws(DirectDecodingFailure) in
            let l = try DirectFields(node)
            return Limit(
                window: try l.required("window").directEnum(Window.self), usd: try l.optional("usd")?.directDouble(),
                tokens: try l.optional("tokens")?.directInt())
        }
        onExceeded = try f.optional("onExceeded")?.directEnum(OnExceeded.self) ?? .halt
        alertThresholds = try f.optional("alertThresholds")?.directList { node throws(DirectDecodingFailure) in try node.directInt() } ?? []
    }
}

extension WorkflowSpec {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        description = try f.optional("description")?.directString()
        triggers =
            try f.optional("triggers")?.directList { node throws(DirectDecodingFailure) in
                let t = try DirectFields(node)
                return Trigger(
                    type: try t.required("type").directEnum(Trigger.TriggerType.self), cron: try t.optional("cron")?.directLocatedString())
            } ?? []
        inputs =
            try f.optional("inputs")?.directList { node throws(DirectDecodingFailure) in
                let i = try DirectFields(node)
                return Input(
                    name: try i.required("name").directString(), description: try i.optional("description")?.directString(),
                    required: try i.optional("required")?.directBool() ?? false, default: try i.optional("default")?.directString())
            } ?? []
        let declared = try f.required("steps").directList { node throws(DirectDecodingFailure) in try Step(direct: node) }
        declaredCount = declared.count
        steps = WorkflowPatterns.expand(declared)
        graph = WorkflowGraph(steps: steps)
    }
}

extension WorkflowSpec.Input {
    init(name: String, description: String?, required: Bool, default: String?) {
        self.name = name
        self.description = description
        self.required = required
        self.default = `default`
    }
}

extension WorkflowSpec.Step {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        let id = try f.required("id").directLocatedString()
        let description = try f.optional("description")?.directString()
        let executor: Executor
        if let approval = try f.generic(WorkflowSpec.Approval.self, "approval") {
            executor = .approval(approval)
        } else {
            executor = .agent(try f.required("agent").directLocatedString())
        }
        let dependsOn = try f.optional("dependsOn")?.directLocatedStrings() ?? []
        let tools = try f.optional("tools")?.directLocatedStrings() ?? []
        var inputs: [(name: String, source: WorkflowSpec.InputSource)] = []
        if f.contains("inputs") {
            let i = try DirectFields(try f.required("inputs"))
            inputs.reserveCapacity(i.members.count)
            for member in i.members {
                // As `decode(forKey:)` reads it: the first member of that name.
                inputs.append((member.key, try WorkflowSpec.InputSource(direct: try i.required(member.key))))
            }
        }
        let prompt = try f.optional("prompt")?.directString()
        let maxTokens = try f.optional("maxTokens")?.directInt()
        let timeout = try f.optional("timeout")?.directText(DurationValue.self) ?? DurationValue("10m")!
        let heartbeatTimeout = try f.optional("heartbeatTimeout")?.directText(DurationValue.self) ?? DurationValue("60s")!
        let retry: WorkflowSpec.Retry
        if let node = f.optional("retry") {
            let r = try DirectFields(node)
            retry = WorkflowSpec.Retry(
                attempts: try r.optional("attempts")?.directInt() ?? WorkflowSpec.Retry.none.attempts,
                backoff: try r.optional("backoff")?.directText(DurationValue.self) ?? WorkflowSpec.Retry.none.backoff,
                maxBackoff: try r.optional("maxBackoff")?.directText(DurationValue.self) ?? WorkflowSpec.Retry.none.maxBackoff)
        } else {
            retry = .none
        }
        let continueOnFailure = try f.optional("continueOnFailure")?.directBool() ?? false
        // The dynamic patterns are rare: read the generic way.
        let patterns = PatternFields(
            route: try f.generic(WorkflowSpec.Route.self, "route"),
            loop: try f.generic(WorkflowSpec.Loop.self, "loop"),
            fallback: try f.generic([WorkflowSpec.Fallback].self, "fallback") ?? [],
            delegate: try f.generic(WorkflowSpec.Delegate.self, "delegate"),
            handoff: try f.generic(WorkflowSpec.Handoff.self, "handoff"),
            publish: try f.optional("publish")?.directLocatedStrings() ?? [],
            subscribe: try f.optional("subscribe")?.directLocatedStrings() ?? [],
            generated: nil)
        self.init(
            id: id, description: description, executor: executor, dependsOn: dependsOn, tools: tools, inputs: inputs, prompt: prompt,
            maxTokens: maxTokens, timeout: timeout, heartbeatTimeout: heartbeatTimeout, retry: retry, continueOnFailure: continueOnFailure,
            patterns: patterns, location: node.location)
    }
}

extension WorkflowSpec.InputSource {
    init(direct node: Node) throws(DirectDecodingFailure) {
        let f = try DirectFields(node)
        if let input = f.optional("input") {
            self = .runInput(try input.directLocatedString())
        } else if let step = f.optional("step") {
            self = .stepOutput(step: try step.directLocatedString(), key: try f.optional("key")?.directString())
        } else if let value = node["value"] {
            self = .literal(value)
        } else {
            throw DirectDecodingFailure()
        }
    }
}
