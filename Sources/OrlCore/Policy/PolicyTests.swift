public import OrlJSON

/// Policy unit tests, as `kyverno test` and `opa test` run them: a file in the
/// repository states verdicts the fleet must give (agent X may / may not use tool Y,
/// model M or secret S; workflow W puts a human approval gate before step S; budget B
/// covers agent X; a diagnostic is / is not raised), and `orlctl test` checks them
/// offline against the manifests.
///
/// ```yaml
/// tests:
///   - name: only the publisher publishes
///     agent: writer
///     mayNot: {tool: publish-post}
///   - workflow: content-pipeline
///     requiresApprovalBefore: publish
///   - budget: content-team
///     covers: writer
///   - diagnostic: perm.approval-missing
///     raised: false
/// ```
public struct PolicyTestCase: Sendable {
    public enum Expectation: Sendable {
        /// `may` / `mayNot`: the agent's answer for one kind of permission.
        case permission(agent: String, kind: PermissionKind, value: String, allowed: Bool)
        /// Every path to the step passes a human approval gate (one that does not
        /// approve itself on timeout).
        case approvalBefore(workflow: String, step: String)
        case covers(budget: String, agent: String)
        /// With `resource` (`Kind/name`), only diagnostics about it count.
        case diagnostic(code: String, raised: Bool, resource: String?)
    }

    public var name: String
    public var namespace: String
    public var expectation: Expectation
    public var location: SourceLocation
}

public struct PolicyTestResult: Sendable {
    public var test: PolicyTestCase
    public var passed: Bool
    /// What the fleet says, in words: why it passed or what it said instead.
    public var message: String
}

public enum PolicyTests {
    /// The tests of one parsed test file, or the errors that make it unusable (each
    /// with its file, line and column).
    public static func cases(from source: ParsedSource) -> ([PolicyTestCase], [Diagnostic]) {
        var cases: [PolicyTestCase] = []
        var errors = source.diagnostics.filter { $0.severity == .error }
        for document in source.documents {
            guard let list = document.root["tests"]?.elements else {
                errors.append(.error(.resourceInvalid, "a test file has a \"tests\" list", at: document.root.location))
                continue
            }
            for item in list {
                switch parse(item) {
                case .success(let test): cases.append(test)
                case .failure(let error): errors.append(.error(.resourceInvalid, error.message, at: error.location))
                }
            }
        }
        return (cases, errors)
    }

    struct ParseError: Error {
        var message: String
        var location: SourceLocation
    }

    static let usage =
        "each test has agent with may or mayNot ({tool|model|secret|handoff|data-class|egress: NAME}), workflow with requiresApprovalBefore, budget with covers, or diagnostic with raised"

    private static func parse(_ node: Node) -> Result<PolicyTestCase, ParseError> {
        func text(_ key: String) -> String? { node[key]?.string }
        let namespace = text("namespace") ?? ResourceID.defaultNamespace
        let location = node.location
        let expectation: PolicyTestCase.Expectation
        if let agent = text("agent") {
            let allowed = node["may"] != nil
            guard let question = node["may"] ?? node["mayNot"], let member = question.members?.first, question.members?.count == 1,
                let value = member.value.string
            else {
                return .failure(
                    ParseError(
                        message: "agent \(Diagnostic.quoted(agent)): give may or mayNot, e.g. may: {tool: web-search}", location: location))
            }
            guard let kind = PermissionKind(rawValue: member.key) else {
                let kinds = PermissionKind.allCases.map(\.rawValue)
                return .failure(
                    ParseError(
                        message:
                            "unknown permission kind \(Diagnostic.quoted(member.key))\(Suggestion.hint(for: member.key, among: kinds)); one of \(kinds.joined(separator: ", "))",
                        location: member.keyLocation))
            }
            expectation = .permission(agent: agent, kind: kind, value: value, allowed: allowed)
        } else if let workflow = text("workflow") {
            guard let step = text("requiresApprovalBefore") else {
                return .failure(
                    ParseError(message: "workflow \(Diagnostic.quoted(workflow)): give requiresApprovalBefore: STEP", location: location))
            }
            expectation = .approvalBefore(workflow: workflow, step: step)
        } else if let budget = text("budget") {
            guard let agent = text("covers") else {
                return .failure(ParseError(message: "budget \(Diagnostic.quoted(budget)): give covers: AGENT", location: location))
            }
            expectation = .covers(budget: budget, agent: agent)
        } else if let code = text("diagnostic") {
            guard let raised = node["raised"]?.bool else {
                return .failure(
                    ParseError(message: "diagnostic \(Diagnostic.quoted(code)): give raised: true or false", location: location))
            }
            expectation = .diagnostic(code: code, raised: raised, resource: text("resource"))
        } else {
            return .failure(ParseError(message: usage, location: location))
        }
        return .success(
            PolicyTestCase(name: text("name") ?? describe(expectation), namespace: namespace, expectation: expectation, location: location))
    }

    /// `agent "writer" may not use tool "publish-post"`.
    static func describe(_ e: PolicyTestCase.Expectation) -> String {
        switch e {
        case .permission(let agent, let kind, let value, let allowed):
            "agent \(Diagnostic.quoted(agent)) \(allowed ? "may" : "may not") use \(kind.noun) \(Diagnostic.quoted(value))"
        case .approvalBefore(let workflow, let step):
            "workflow \(Diagnostic.quoted(workflow)) requires approval before step \(Diagnostic.quoted(step))"
        case .covers(let budget, let agent): "budget \(Diagnostic.quoted(budget)) covers agent \(Diagnostic.quoted(agent))"
        case .diagnostic(let code, let raised, let resource):
            "\(code) is \(raised ? "" : "not ")raised" + (resource.map { " for \($0)" } ?? "")
        }
    }

    /// Runs the tests against a validated fleet (its diagnostics included).
    public static func run(_ cases: [PolicyTestCase], against report: ValidationReport) -> [PolicyTestResult] {
        let fleet = report.fleet
        let engine = PolicyEngine(fleet)
        return cases.map { test in
            let (passed, message) = evaluate(test, fleet: fleet, engine: engine, diagnostics: report.diagnostics)
            return PolicyTestResult(test: test, passed: passed, message: message)
        }
    }

    private static func evaluate(_ test: PolicyTestCase, fleet: Fleet, engine: PolicyEngine, diagnostics: [Diagnostic]) -> (Bool, String) {
        let namespace = test.namespace
        switch test.expectation {
        case .permission(let agent, let kind, let value, let allowed):
            let id = ResourceID(kind: ResourceKind.agent.rawValue, namespace: namespace, name: agent)
            guard let explanation = AgentExplanation(agent: id, fleet: fleet, engine: engine) else {
                return (false, "there is no agent \(Diagnostic.quoted(agent)) in namespace \(Diagnostic.quoted(namespace))")
            }
            let answer = explanation.answer(kind, value)
            let said = answer.isAllowed ? "it may: \(answer.decision.reason)" : "it may not: \(answer.decision.reason)"
            return (answer.isAllowed == allowed, said)
        case .approvalBefore(let name, let stepID):
            guard let workflow = fleet.resource(.workflow, name, namespace: namespace), let spec = workflow.workflow else {
                return (false, "there is no workflow \(Diagnostic.quoted(name)) in namespace \(Diagnostic.quoted(namespace))")
            }
            let graph = WorkflowGraph(spec)
            guard let target = graph.index[stepID] else {
                return (false, "workflow \(Diagnostic.quoted(name)) has no step \(Diagnostic.quoted(stepID))")
            }
            guard let order = graph.topologicalOrder() else { return (false, "workflow \(Diagnostic.quoted(name)) has a cycle") }
            // ungated[i]: a path from a root reaches step i's start without a human gate.
            var ungated = [Bool](repeating: false, count: spec.steps.count)
            for i in order {
                ungated[i] = graph.dependencies[i].isEmpty || graph.dependencies[i].contains { ungated[$0] && !isHumanGate(spec.steps[$0]) }
            }
            if ungated[target] { return (false, "a path reaches step \(Diagnostic.quoted(stepID)) without a human approval gate") }
            return (true, "every path to step \(Diagnostic.quoted(stepID)) passes a human approval gate")
        case .covers(let budgetName, let agentName):
            guard let budget = fleet.resource(.budget, budgetName, namespace: namespace)?.budget else {
                return (false, "there is no budget \(Diagnostic.quoted(budgetName)) in namespace \(Diagnostic.quoted(namespace))")
            }
            guard let agent = fleet.resource(.agent, agentName, namespace: namespace) else {
                return (false, "there is no agent \(Diagnostic.quoted(agentName)) in namespace \(Diagnostic.quoted(namespace))")
            }
            let covers = budget.appliesTo.selects(agent.metadata)
            return (covers, covers ? "it selects the agent" : "its appliesTo does not select the agent")
        case .diagnostic(let code, let raised, let resource):
            let found = diagnostics.filter { d in
                d.code.rawValue == code && (resource.map { r in d.resource.map { "\($0.kind)/\($0.name)" == r } ?? false } ?? true)
            }
            let said =
                found.isEmpty
                ? "it is not raised"
                : "it is raised: " + found.prefix(3).map { ($0.location.map { "\($0): " } ?? "") + $0.headline }.joined(separator: "; ")
            return (found.isEmpty != raised, said)
        }
    }

    /// An approval step that fails closed: one that approves itself on timeout lets the
    /// run go on with no human having looked.
    static func isHumanGate(_ step: WorkflowSpec.Step) -> Bool {
        if case .approval(let approval) = step.executor { return approval.onTimeout == .deny }
        return false
    }
}
