import OrlCore
import OrlJSON

/// Plans for people (terraform's `+ ~ -` with field changes and one summary line) and
/// for machines.
enum PlanRenderer {
    static func text(_ outcome: ApplyOutcome, dryRun: Bool, style: TextStyle) -> String {
        let plan = outcome.plan
        if plan.isEmpty {
            return "No changes. \(DiagnosticRenderer.plural(plan.unchanged.count, "resource")) up to date.\n"
        }
        var out = changes(plan, style: style)
        out += "\n" + style.bold(plan.summary) + "\n"
        if let number = outcome.applyNumber {
            out += "Applied as #\(number).\n"
        } else if dryRun {
            out += "Dry run: nothing was written.\n"
        }
        return out
    }

    /// The plan's `+ ~ -` lines, with field changes under updates.
    static func changes(_ plan: Plan, style: TextStyle) -> String {
        var out = ""
        let width = plan.changes.map { name($0.id).count }.max() ?? 0
        for change in plan.changes {
            let label = name(change.id).padding(toLength: width)
            switch change.action {
            case .create:
                out += style.green("  + ") + label + "  " + (change.desired.map { "\($0.file):\($0.line)" } ?? "") + "\n"
            case .update:
                var notes: [String] = []
                if let desired = change.desired { notes.append("\(desired.file):\(desired.line)") }
                if change.specChanged, let generation = change.desired?.generation { notes.append("generation \(generation)") }
                if let previous = change.takesOverFrom { notes.append("taken over from source \(previous)") }
                out += style.yellow("  ~ ") + label + "  " + notes.joined(separator: ", ") + "\n"
                for field in change.fields {
                    switch field.kind {
                    case .added: out += style.green("      + ") + "\(field.path): \(field.after ?? "")\n"
                    case .removed: out += style.red("      - ") + "\(field.path): \(field.before ?? "")\n"
                    case .changed: out += style.yellow("      ~ ") + "\(field.path): \(field.before ?? "") → \(field.after ?? "")\n"
                    }
                }
            case .prune:
                let from = change.current.map { ", applied from \($0.file):\($0.line)" } ?? ""
                out += style.red("  - ") + label + "  pruned: no longer in the manifests\(from)\n"
            }
        }
        return out
    }

    /// `Agent/writer`, with the namespace when it is not the default one.
    static func name(_ id: ResourceID) -> String {
        id.namespace == ResourceID.defaultNamespace ? id.description : "\(id) (namespace \(id.namespace))"
    }

    static func json(_ outcome: ApplyOutcome, dryRun: Bool) -> String {
        var members: [(String, JSONValue?)] = [
            ("applied", .bool(outcome.applyNumber != nil)),
            ("dryRun", .bool(dryRun)),
            ("applyNumber", outcome.applyNumber.map { .int($0) }),
        ]
        if case .object(let plan) = PlanJSON.render(outcome.plan) { members += plan.map { ($0.0, $0.1) } }
        return JSONValue.object(members).rendered()
    }
}
