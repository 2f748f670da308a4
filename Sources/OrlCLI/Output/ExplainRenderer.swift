import OrlCore
import OrlJSON

/// How `explain` prints an agent's permissions (`describe`-style text, or `-o json`)
/// and its answers to `--can use KIND/VALUE`.
enum ExplainRenderer {
    // MARK: The whole picture

    /// Headline fields, the policies that select the agent, the decision on everything
    /// the agent declares, then every rule by kind.
    static func text(_ e: AgentExplanation) -> String {
        let id = e.agent.id
        var out = TextTable.render([
            ["Agent:", id.name],
            ["Namespace:", id.namespace],
            ["Source:", e.agent.nameLocation.description],
            ["Isolation:", isolation(e)],
        ])

        out += "\nPolicies:"
        if e.policies.isEmpty {
            out += " <none> (nothing is allowed unless a Policy allows it)\n"
        } else {
            out += "\n"
            out += TextTable.render(
                e.policies.map { p in
                    let how = [p.byName ? "by name" : nil, p.byLabels ? "by labels" : nil].compactMap(\.self).joined(separator: ", ")
                    return [p.policy.metadata.name, how, p.policy.nameLocation.description]
                }, indent: 2)
        }

        out += "\nDeclared:\n"
        out += TextTable.render([["KIND", "NAME", "DECISION", "POLICY", "RULE", "SOURCE"]] + e.uses.flatMap(declaredRows), indent: 2)

        if !e.serves.isEmpty {
            // Where the audit checks the agent: every step of every bounded path it may serve.
            out += "\nWorkflow steps (every path the audit checks):\n"
            out += TextTable.render(
                [["WORKFLOW", "STEP", "PATH", "SOURCE"]]
                    + e.serves.map { [$0.workflow.name, $0.step, $0.path.isEmpty ? "-" : $0.path, $0.location.description] },
                indent: 2)
        }

        out += "\nRules (nothing is allowed unless a policy allows it; any deny wins):\n"
        let sections: [(String, [[String]])] =
            PermissionKind.allCases.map { kind in
                (title(kind), e.rules(kind).map { [$0.effect.rawValue, $0.pattern, $0.policy.name, $0.location.description] })
            } + [("Approval required (tools)", e.approvalRules.map { ["gate", $0.pattern, $0.policy.name, $0.location.description] })]
        // One set of widths for every section, so the rules line up down the page.
        let widths = TextTable.widths(sections.flatMap(\.1))
        for (title, rows) in sections {
            out += "  \(title):" + (rows.isEmpty ? " <none>\n" : "\n" + TextTable.render(rows, widths: widths, indent: 4))
        }
        return out
    }

    /// What the kernel enforces of the decisions below (docs/sandbox.md).
    static func isolation(_ e: AgentExplanation) -> String {
        e.agent.agent?.runtime.isolation == Optional.some(.none)
            ? "none (unconfined: the decisions below are not enforced by the kernel; perm.unconfined)"
            : "strict (sandboxed: orl's API is its only way out)"
    }

    private static func title(_ kind: PermissionKind) -> String {
        switch kind {
        case .tool: "Tools"
        case .model: "Models"
        case .secret: "Secrets"
        case .handoff: "Handoffs"
        case .dataClass: "Data classes"
        case .egress: "Egress"
        }
    }

    /// The first row names the thing and its decision; the rows under it give the
    /// other rules that bear on it.
    private static func declaredRows(_ use: AgentExplanation.Use) -> [[String]] {
        let answer = use.answer
        func row(_ decision: String, _ rule: PolicyRule) -> [String] {
            [decision, rule.policy.name, rule.pattern, rule.location.description]
        }
        var rows: [[String]]
        switch answer.decision.outcome {
        case .allowed: rows = answer.decision.rules.map { row("allowed", $0) }
        case .denied:
            rows = answer.decision.rules.map { row("denied", $0) } + answer.overridden.map { row("allow overridden", $0) }
        case .notAllowed: rows = [["not allowed", "-", "-", "no policy allows it"]]
        case .reserved: rows = [["reserved", "-", "-", answer.decision.reason]]
        }
        if answer.isAllowed { rows += answer.approval.map { row("needs approval", $0) } }
        return rows.enumerated().map { i, rest in (i == 0 ? [answer.kind.rawValue, answer.value] : ["", ""]) + rest }
    }

    private static func serviceJSON(_ s: AgentExplanation.Service) -> JSONValue {
        let members: [(String, JSONValue?)] = [
            ("workflow", .string(s.workflow.name)), ("step", .string(s.step)), ("path", .string(s.path)),
            ("file", .string(s.location.file)), ("line", .int(s.location.line)), ("column", .int(s.location.column)),
        ]
        return .object(members)
    }

    static func json(_ e: AgentExplanation) -> String {
        JSONValue.object([
            (
                "agent",
                .object([
                    ("name", .string(e.agent.metadata.name)),
                    ("namespace", .string(e.agent.metadata.namespace)),
                    ("file", .string(e.agent.nameLocation.file)),
                    ("line", .int(e.agent.nameLocation.line)),
                    ("column", .int(e.agent.nameLocation.column)),
                    ("isolation", .string(e.agent.agent?.runtime.isolation.rawValue ?? "strict")),
                ])
            ),
            (
                "policies",
                .array(
                    e.policies.map { p in
                        .object([
                            ("policy", .string(p.policy.id.description)),
                            ("byName", .bool(p.byName)),
                            ("byLabels", .bool(p.byLabels)),
                            ("file", .string(p.policy.nameLocation.file)),
                            ("line", .int(p.policy.nameLocation.line)),
                            ("column", .int(p.policy.nameLocation.column)),
                        ])
                    })
            ),
            (
                "steps",
                .array(e.serves.map(serviceJSON))
            ),
            (
                "declared",
                .array(
                    e.uses.map { use in
                        // Kind and value first, then where the agent declares it, then the answer.
                        let members = answerMembers(use.answer)
                        return .object(Array(members.prefix(2)) + location(use.location) + members.dropFirst(2))
                    })
            ),
            ("rules", .array(e.permissions.rules.map(json))),
        ]).rendered()
    }

    // MARK: One question

    /// `yes: agent "a" may use tool "t"`, then the rules that decided, each with its
    /// policy and place.
    static func text(_ answer: PermissionAnswer, of e: AgentExplanation) -> String {
        let agent = e.agent.metadata.name
        var out = "\(answer.isAllowed ? "yes" : "no"): agent \(Diagnostic.quoted(agent)) "
        out += "\(answer.isAllowed ? "may" : "may not") \(question(answer.kind, answer.value))\n"
        func row(_ label: String, _ rule: PolicyRule, _ note: String = "") -> [String] {
            let matched = rule.pattern == answer.value ? "" : "(matches \(Diagnostic.quoted(rule.pattern)))"
            return [
                label, rule.policy.description, rule.location.description, [matched, note].filter { !$0.isEmpty }.joined(separator: " "),
            ]
        }
        var rows: [[String]] = []
        switch answer.decision.outcome {
        case .allowed:
            rows = answer.decision.rules.map { row("allowed by", $0) }
            rows += answer.approval.map { row("needs approval", $0, "a workflow must put a human approval step before it") }
        case .denied:
            rows = answer.decision.rules.map { row("denied by", $0) }
            rows += answer.overridden.map { row("allowed by", $0, "but a deny wins") }
        case .reserved:
            out += "  \(answer.decision.reason): no agent reads it, whatever its policies allow\n"
            rows = answer.decision.rules.map { row("allowed by", $0, "but orl alone presents it") }
        case .notAllowed:
            if e.policies.isEmpty {
                out += "  no Policy applies to agent \(Diagnostic.quoted(agent)); nothing is allowed unless a Policy allows it\n"
            } else {
                out += "  no policy allows it; the policies that apply to agent \(Diagnostic.quoted(agent)):\n"
                rows = e.policies.map { ["", $0.policy.id.description, $0.policy.nameLocation.description] }
            }
        }
        return out + TextTable.render(rows, indent: 2)
    }

    /// What `--can use KIND/VALUE` asks, in words: `use tool "t"`, `read secret "s"`.
    private static func question(_ kind: PermissionKind, _ value: String) -> String {
        let v = Diagnostic.quoted(value)
        return switch kind {
        case .tool: "use tool \(v)"
        case .model: "use model \(v)"
        case .secret: "read secret \(v)"
        case .handoff: "hand off to agent \(v)"
        case .dataClass: "receive data of class \(v)"
        case .egress: "send data of class \(v) out"
        }
    }

    static func json(_ answer: PermissionAnswer, of e: AgentExplanation) -> String {
        JSONValue.object(
            [
                ("agent", .string(e.agent.metadata.name)),
                ("namespace", .string(e.agent.metadata.namespace)),
            ] + answerMembers(answer) + [("policies", .array(e.policies.map { .string($0.policy.id.description) }))]
        ).rendered()
    }

    // MARK: Shared JSON members

    private static func answerMembers(_ answer: PermissionAnswer) -> [(String, JSONValue)] {
        [
            ("kind", .string(answer.kind.rawValue)),
            ("value", .string(answer.value)),
            ("allowed", .bool(answer.isAllowed)),
            ("outcome", .string(outcome(answer.decision.outcome))),
            ("reason", .string(answer.decision.reason)),
            ("rules", .array(answer.decision.rules.map(json))),
            ("overridden", .array(answer.overridden.map(json))),
            ("approval", .array(answer.approval.map(json))),
        ]
    }

    private static func outcome(_ outcome: PermissionDecision.Outcome) -> String {
        switch outcome {
        case .allowed: "allowed"
        case .denied: "denied"
        case .notAllowed: "not-allowed"
        case .reserved: "reserved"
        }
    }

    private static func json(_ rule: PolicyRule) -> JSONValue {
        .object(
            [
                ("effect", .string(rule.effect.rawValue)),
                ("kind", .string(rule.kind.rawValue)),
                ("pattern", .string(rule.pattern)),
                ("policy", .string(rule.policy.description)),
            ] + location(rule.location))
    }

    private static func location(_ location: SourceLocation) -> [(String, JSONValue)] {
        [("file", .string(location.file)), ("line", .int(location.line)), ("column", .int(location.column))]
    }
}
