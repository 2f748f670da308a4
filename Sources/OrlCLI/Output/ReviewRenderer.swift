import OrlCore
import OrlJSON

/// `orlctl review` for people (a terminal, a pull request comment) and for machines.
enum ReviewRenderer {
    struct Revisions {
        var base: String
        var baseID: String
        var head: String
        var headID: String
        var path: String?
        /// Base is where head forked from `base` (git diff A...B), not base's tip.
        var mergeBase = false

        /// `origin/main (1a2b3c4) → HEAD (5d6e7f8) in manifests/`.
        var description: String {
            "\(base) (\(mergeBase ? "merge base " : "")\(baseID)) → \(head) (\(headID))" + (path.map { " in \($0)" } ?? "")
        }
    }

    // MARK: Text

    static func text(_ review: Review, _ revisions: Revisions, style: TextStyle) -> String {
        var out = style.bold(review.summary) + "\n"
        out += "Review of \(revisions.description)\n"
        out += "\n" + style.bold("Resources:") + "\n"
        out += review.plan.isEmpty ? "  no changes\n" : PlanRenderer.changes(review.plan, style: style)
        out += "\n" + style.bold("Permissions:") + "\n"
        if review.baseIncomplete {
            out += "  not compared: base has manifests that cannot be read, so what it granted is unknown\n"
        } else if review.permissions.isEmpty {
            out += "  no agent gains or loses a permission\n"
        }
        for (agent, changes) in grouped(review.permissions) {
            out += "  \(PlanRenderer.name(agent))\n"
            for change in changes {
                let sign = change.change == .gained ? style.green("+ gained ") : style.red("- lost   ")
                out += "    \(sign) \(change.subject): \(change.cause)\n"
                if !change.details.isEmpty { out += "              " + change.details.joined(separator: "; ") + "\n" }
            }
        }
        out += "\n" + style.bold("Budgets:") + "\n"
        if review.budgets.isEmpty { out += "  no changes\n" }
        for change in review.budgets {
            let sign = change.loosens ? style.yellow("↑ ") : "  "
            out += "  \(sign)\(change.message)\n"
        }
        if let spend = review.spend {
            out += "\n" + style.bold("Spend ceiling:") + "\n"
            out += "  before: \(spend.before.description)\n  after:  \(spend.after.description)\n"
            let rises = spend.monthlyIncrease.map { $0 > 0 } ?? true
            out += "  \(rises ? style.yellow("↑ ") : "")change: \(spend.increaseDescription)\n"
        }
        if let projection = review.projection {
            out += "\n" + style.bold("Projected spend (a month):") + "\n"
            out += projectionLines(projection).map { line in
                (line.rises ? style.yellow("↑ ") : "  ") + line.text + "\n"
            }.joined()
        }
        if !review.tools.isEmpty {
            out += "\n" + style.bold("Tools:") + "\n"
            for change in review.tools { out += "  \(change.escalates ? style.yellow("↑ ") : "  ")\(change.message)\n" }
        }
        if !review.models.isEmpty {
            out += "\n" + style.bold("Models:") + "\n"
            for change in review.models { out += "  \(change.escalates ? style.yellow("↑ ") : "  ")\(change.message)\n" }
        }
        out += "\n" + style.bold("Diagnostics:") + "\n"
        let sections: [(String, [Diagnostic])] = [
            ("new in head", review.newDiagnostics), ("fixed in head", review.fixedDiagnostics),
            ("still present", review.remainingDiagnostics),
        ]
        for (title, diagnostics) in sections {
            out += "  \(title): \(diagnostics.count)\n"
            for d in diagnostics { out += "    " + line(d, style: style) + "\n" }
        }
        return out
    }

    private static func line(_ d: Diagnostic, style: TextStyle) -> String {
        let place = d.location.map { "\($0): " } ?? ""
        let severity = d.severity == .error ? style.red("error[\(d.code)]") : style.magenta("warning[\(d.code)]")
        return place + severity + ": " + DiagnosticRenderer.headline(d)
    }

    private static func grouped(_ changes: [Review.PermissionChange]) -> [(ResourceID, [Review.PermissionChange])] {
        var groups: [(ResourceID, [Review.PermissionChange])] = []
        for change in changes {
            if let last = groups.indices.last, groups[last].0 == change.agent {
                groups[last].1.append(change)
            } else {
                groups.append((change.agent, [change]))
            }
        }
        return groups
    }

    /// The projection for people: the totals and change, then each agent and scheduled
    /// workflow whose figure changes (-o json has them all); `rises` marks what went up.
    static func projectionLines(_ p: Review.ProjectionChange) -> [(text: String, rises: Bool)] {
        func money(_ v: Double) -> String { Money.format(v, rounding: .up) }
        var lines: [(String, Bool)] = [
            ("before: \(money(p.before.month))", false), ("after:  \(money(p.after.month))", false),
            ("change: \(p.increaseDescription)", p.monthlyIncrease.map { $0 > 1e-9 } ?? true),
        ]
        let observed = Dictionary(p.after.agents.map { ($0.agent, $0.observed) }, uniquingKeysWith: { a, _ in a })
        let changed = { (row: (id: ResourceID, before: Double, after: Double)) in abs(row.after - row.before) > 1e-9 }
        for row in p.agentRows where changed(row) {
            let ledger = (observed[row.id] ?? nil).map { " (from the ledger: \(money($0)))" } ?? ""
            lines.append(
                ("\(PlanRenderer.name(row.id)): \(money(row.before)) → \(money(row.after))\(ledger)", row.after > row.before + 1e-9))
        }
        let runs = Dictionary(
            (p.before.workflows + p.after.workflows).map { ($0.workflow, $0) }, uniquingKeysWith: { _, head in head })
        for row in p.workflowRows where changed(row) {
            let w = runs[row.id]!
            lines.append(
                (
                    "\(PlanRenderer.name(row.id)): \(money(row.before)) → \(money(row.after)) (\((w.runsPerMonth * 10).rounded() / 10) runs a month, at most \(money(w.perRun)) a run)",
                    row.after > row.before + 1e-9
                ))
        }
        let same = (p.agentRows.count { !changed($0) }, p.workflowRows.count { !changed($0) })
        if same.0 + same.1 > 0 {
            lines.append(
                (
                    "unchanged: \(same.0) agent\(same.0 == 1 ? "" : "s"), \(same.1) scheduled workflow\(same.1 == 1 ? "" : "s") (-o json lists them)",
                    false
                ))
        }
        for step in p.after.unbounded {
            lines.append(("\(step) has no maxTokens: its spend is not projected", !p.before.unbounded.contains(step)))
        }
        return lines
    }

    // MARK: Markdown

    /// A pull request comment: the summary on the first line, then sections.
    static func markdown(_ review: Review, _ revisions: Revisions) -> String {
        var out = review.summary + "\n\n"
        out +=
            "orl review of `\(revisions.base)` (\(revisions.mergeBase ? "merge base " : "")\(revisions.baseID)) → `\(revisions.head)` (\(revisions.headID))"
        out += (revisions.path.map { " in `\($0)`" } ?? "") + "\n"

        out += "\n### Resources\n\n"
        if review.plan.isEmpty {
            out += "No changes.\n"
        } else {
            out +=
                "```diff\n"
                + PlanRenderer.changes(review.plan, style: TextStyle(enabled: false)).split(separator: "\n").map {
                    // diff highlighting keys on the first column.
                    let line = String($0)
                    return line.hasPrefix("  ") ? String(line.dropFirst(2)) : line
                }.joined(separator: "\n") + "\n```\n"
        }

        out += "\n### Permissions\n\n"
        if review.baseIncomplete {
            out += "Not compared: base has manifests that cannot be read, so what it granted is unknown.\n"
        } else if review.permissions.isEmpty {
            out += "No agent gains or loses a permission.\n"
        } else {
            out += "| Agent | Change | Permission | Cause | What it means |\n|---|---|---|---|---|\n"
            for change in review.permissions {
                let mark = change.change == .gained ? "🔺 gained" : "🔻 lost"
                out +=
                    "| \(cell(PlanRenderer.name(change.agent))) | \(mark) | \(cell(change.subject.description)) | \(cell(change.cause)) | \(cell(change.details.joined(separator: "; "))) |\n"
            }
        }

        out += "\n### Budgets\n\n"
        if review.budgets.isEmpty {
            out += "No changes.\n"
        } else {
            for change in review.budgets { out += "- \(change.loosens ? "⚠️ " : "")\(inline(change.message))\n" }
        }

        if let spend = review.spend {
            out += "\n### Spend ceiling\n\n"
            out += "- Before: \(inline(spend.before.description))\n- After: \(inline(spend.after.description))\n"
            out += "- Change: \((spend.monthlyIncrease.map { $0 > 0 } ?? true) ? "⚠️ " : "")\(inline(spend.increaseDescription))\n"
        }
        if let projection = review.projection {
            out += "\n### Projected spend (a month)\n\n"
            out += projectionLines(projection).map { "- \($0.rises ? "⚠️ " : "")\(inline($0.text))\n" }.joined()
        }
        if !review.tools.isEmpty {
            out += "\n### Tools\n\n"
            for change in review.tools { out += "- \(change.escalates ? "⚠️ " : "")\(inline(change.message))\n" }
        }
        if !review.models.isEmpty {
            out += "\n### Models\n\n"
            for change in review.models { out += "- \(change.escalates ? "⚠️ " : "")\(inline(change.message))\n" }
        }

        out += "\n### Audit\n\n"
        if review.newDiagnostics.isEmpty && review.fixedDiagnostics.isEmpty && review.remainingDiagnostics.isEmpty {
            out += "No problems in either revision.\n"
        }
        for (title, diagnostics, open) in [
            ("New in head", review.newDiagnostics, true), ("Fixed in head", review.fixedDiagnostics, true),
            ("Still present", review.remainingDiagnostics, false),
        ] where !diagnostics.isEmpty {
            if open {
                out += "**\(title)** (\(diagnostics.count))\n\n"
            } else {
                out += "<details><summary>\(title) (\(diagnostics.count))</summary>\n\n"
            }
            for d in diagnostics {
                let place = d.location.map { "`\($0)` " } ?? ""
                out += "- \(place)\(d.severity.rawValue) `\(d.code)`: \(inline(DiagnosticRenderer.headline(d)))\n"
            }
            out += open ? "\n" : "\n</details>\n\n"
        }
        return out
    }

    /// A table cell: pipes and line breaks would end it.
    private static func cell(_ text: String) -> String {
        inline(text).replacing("|", with: "\\|")
    }

    /// Text that must not start Markdown or HTML of its own.
    private static func inline(_ text: String) -> String {
        text.replacing("\n", with: " ").replacing("<", with: "&lt;")
    }

    // MARK: JSON

    static func json(_ review: Review, base: String, head: String) -> JSONValue {
        func location(_ l: SourceLocation?) -> [(String, JSONValue?)] {
            [("file", l.map { .string($0.file) }), ("line", l.map { .int($0.line) }), ("column", l.map { .int($0.column) })]
        }
        func id(_ id: ResourceID) -> JSONValue {
            .object([("kind", .string(id.kind)), ("namespace", .string(id.namespace)), ("name", .string(id.name))])
        }
        let permissions = review.permissions.map { change -> JSONValue in
            let (kind, value): (String, String) =
                switch change.subject {
                case .permission(let kind, let value): (kind.rawValue, value)
                case .approval(let tool): ("approval", tool)
                case .reach(let dataClass): ("reach", dataClass)
                case .unconfined: ("isolation", "none")
                }
            return .object(
                [
                    ("agent", id(change.agent)), ("change", .string(change.change.rawValue)), ("kind", .string(kind)),
                    ("value", .string(value)), ("cause", .string(change.cause)),
                    ("details", .array(change.details.map(JSONValue.string))),
                ] + location(change.location))
        }
        let budgets = review.budgets.map { change -> JSONValue in
            .object(
                [
                    ("subject", id(change.subject)), ("change", .string(change.change.rawValue)), ("message", .string(change.message)),
                    ("loosens", .bool(change.loosens)),
                ] + location(change.location))
        }
        let spend: JSONValue = review.spend.map { spendJSON($0) } ?? JSONValue.null
        let projected: JSONValue = review.projection.map { projectionJSON($0) } ?? JSONValue.null
        return .object([
            ("base", .string(base)),
            ("head", .string(head)),
            ("summary", .string(review.summary)),
            ("newErrors", .int(review.newErrors)),
            ("baseIncomplete", .bool(review.baseIncomplete)),
            ("gained", .int(review.gained)),
            ("lost", .int(review.lost)),
            ("plan", PlanJSON.render(review.plan)),
            ("permissions", .array(permissions)),
            ("budgets", .array(budgets)),
            ("escalations", .int(review.escalations)),
            ("spend", spend),
            ("projectedSpend", projected),
            (
                "tools",
                .array(
                    review.tools.map { change in
                        .object(
                            [
                                ("tool", id(change.tool)), ("changes", .array(change.changes.map(JSONValue.string))),
                                ("agents", .array(change.agents.map(JSONValue.string))), ("escalates", .bool(change.escalates)),
                                ("message", .string(change.message)),
                            ] + location(change.location))
                    })
            ),
            (
                "models",
                .array(
                    review.models.map { change in
                        .object(
                            [
                                ("agent", id(change.agent)), ("before", .string(change.before)), ("after", .string(change.after)),
                                ("escalates", .bool(change.escalates)),
                            ] + location(change.location))
                    })
            ),
            (
                "diagnostics",
                .object([
                    ("new", .array(review.newDiagnostics.map(DiagnosticRenderer.json))),
                    ("fixed", .array(review.fixedDiagnostics.map(DiagnosticRenderer.json))),
                    ("remaining", .array(review.remainingDiagnostics.map(DiagnosticRenderer.json))),
                ])
            ),
        ])
    }

    private static func optional(_ value: Double?) -> JSONValue {
        guard let value else { return .null }
        return .double(value)
    }

    private static func spendJSON(_ spend: Review.SpendChange) -> JSONValue {
        func side(_ p: ProjectedSpend) -> JSONValue {
            .object([
                ("dayUSD", .double(p.day)), ("monthUSD", .double(p.month)),
                ("uncapped", .array(p.uncapped.map { .string($0.description) })),
                ("bounded", .bool(p.uncapped.isEmpty)),
            ])
        }
        return .object([
            ("before", side(spend.before)), ("after", side(spend.after)),
            ("monthlyIncreaseUSD", optional(spend.monthlyIncrease)),
            ("dailyIncreaseUSD", optional(spend.dailyIncrease)),
        ])
    }

    private static func projectionJSON(_ p: Review.ProjectionChange) -> JSONValue {
        func side(_ s: SpendProjection) -> JSONValue {
            .object([
                ("monthUSD", .double(s.month)),
                (
                    "agents",
                    .array(
                        s.agents.map { a in
                            .object([
                                ("agent", .string(a.agent.description)), ("monthUSD", .double(a.month)),
                                ("scheduledUSD", .double(a.scheduled)), ("observedUSD", optional(a.observed)),
                            ])
                        })
                ),
                (
                    "workflows",
                    .array(
                        s.workflows.map { w in
                            .object([
                                ("workflow", .string(w.workflow.description)), ("runsPerMonth", .double(w.runsPerMonth)),
                                ("perRunUSD", .double(w.perRun)), ("monthUSD", .double(w.month)),
                                ("unboundedSteps", .array(w.unboundedSteps.map(JSONValue.string))),
                            ])
                        })
                ),
                ("bounded", .bool(s.unbounded.isEmpty)),
            ])
        }
        return .object([
            ("before", side(p.before)), ("after", side(p.after)), ("monthlyIncreaseUSD", optional(p.monthlyIncrease)),
        ])
    }

    // MARK: SARIF

    /// Escalations and rises of spend as SARIF results, so a pull request whose only
    /// effect is one still shows up in code scanning.
    static func sarifEscalations(_ review: Review) -> [SARIFRenderer.Extra] {
        review.escalationItems.map { item in
            SARIFRenderer.Extra(
                rule: Review.escalationRule, message: item.message, location: item.location,
                fingerprint: "review.escalation:" + item.message)
        }
            + review.spendItems.map { message in
                SARIFRenderer.Extra(
                    rule: Review.spendRule, message: message, location: nil,
                    fingerprint: "review.spend-increase:" + message.prefix { $0 != ":" })
            }
    }
}
