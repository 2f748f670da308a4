import OrlCore
import OrlJSON

/// Plans for people (terraform's `+ ~ -` with field changes and one summary line) and
/// for machines.
enum PlanRenderer {
    /// `changes`, when given, is `changes(outcome.plan, style: style)` rendered ahead (an
    /// apply renders it on another core while its transaction writes).
    static func text(_ outcome: ApplyOutcome, dryRun: Bool, style: TextStyle, changes rendered: String? = nil) -> String {
        let plan = outcome.plan
        if plan.isEmpty {
            return "No changes. \(DiagnosticRenderer.plural(plan.unchanged.count, "resource")) up to date.\n"
        }
        var out = rendered ?? changes(plan, style: style)
        out += "\n" + style.bold(plan.summary) + "\n"
        if let number = outcome.applyNumber {
            out += "Applied as #\(number).\n"
        } else if dryRun {
            out += "Dry run: nothing was written.\n"
        }
        return out
    }

    /// The plan's `+ ~ -` lines, with field changes under updates. Appended piece by piece
    /// (a first apply's is a line per manifest: 16 MB at 100,000).
    static func changes(_ plan: Plan, style: TextStyle) -> String {
        var out = ""
        let names = plan.changes.map { name($0.id) }
        let width = names.lazy.map(\.count).max() ?? 0
        let create = style.green("  + ")
        let update = style.yellow("  ~ ")
        let prune = style.red("  - ")
        for (change, name) in zip(plan.changes, names) {
            let label = name.padding(toLength: width)
            switch change.action {
            case .create:
                out += create
                out += label
                out += "  "
                if let desired = change.desired {
                    out += desired.file
                    out += ":"
                    out += String(desired.line)
                }
                out += "\n"
            case .update:
                var notes: [String] = []
                if let desired = change.desired { notes.append("\(desired.file):\(desired.line)") }
                if change.specChanged, let generation = change.desired?.generation { notes.append("generation \(generation)") }
                if let previous = change.takesOverFrom { notes.append("taken over from source \(previous)") }
                out += update
                out += label
                out += "  "
                out += notes.joined(separator: ", ")
                out += "\n"
                for field in change.fields {
                    switch field.kind {
                    case .added: out += style.green("      + ") + "\(field.path): \(field.after ?? "")\n"
                    case .removed: out += style.red("      - ") + "\(field.path): \(field.before ?? "")\n"
                    case .changed: out += style.yellow("      ~ ") + "\(field.path): \(field.before ?? "") → \(field.after ?? "")\n"
                    }
                }
            case .prune:
                out += prune
                out += label
                out += "  pruned: no longer in the manifests"
                if let current = change.current { out += ", applied from \(current.file):\(current.line)" }
                out += "\n"
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
