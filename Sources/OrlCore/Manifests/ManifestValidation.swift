/// The outcome of validating a set of manifests: the resources that were read and
/// every problem found, in report order.
public struct ValidationReport: Sendable {
    public var fleet: Fleet
    /// Documents that define a resource (duplicates and invalid ones included).
    public var resourceCount: Int
    public var diagnostics: [Diagnostic]

    public var errorCount: Int { diagnostics.count(of: .error) }
    public var warningCount: Int { diagnostics.count(of: .warning) }
    public var isValid: Bool { errorCount == 0 }
}

/// The checks that need the whole set of manifests at once.
public enum ManifestValidation {
    /// Combines what reading each document found with the checks across documents.
    /// With `strict`, warnings count as errors.
    public static func validate(_ read: ReadManifests, strict: Bool = false) -> ValidationReport {
        let checked = crossChecks(read)
        return ValidationReport(
            fleet: checked.fleet, resourceCount: read.resources.count + read.unreadable.count,
            diagnostics: strictened(read.diagnostics + checked.diagnostics, strict).sortedForReport())
    }

    /// The checks across documents: MCP pins, duplicates, references, DAGs and the
    /// audit, with the fleet they assembled. Not `read`'s own diagnostics.
    /// `fork` may make the checks against the policy engine (building it among them) on
    /// one core and the others on another: the diagnostics come out in the same order.
    public static func crossChecks(_ read: ReadManifests, fork: Fork = .inline) -> (fleet: Fleet, diagnostics: [Diagnostic]) {
        let attached =
            read.mcpLocks.isEmpty && !read.resources.contains(where: { $0.tool?.type == .mcp }) ? read : McpLock.attach(read)
        let (fleet, duplicates) = Fleet.assemble(attached.resources, unreadable: attached.unreadable, unidentified: attached.unidentified)
        var all = Array(attached.diagnostics[read.diagnostics.count...]) + duplicates
        let (audited, others) = fork.both(
            { PolicyAudit.engineChecks(fleet, engine: PolicyEngine(fleet)) },
            { () -> (checks: [Diagnostic], unmatched: [Diagnostic]) in
                (ReferenceCheck.run(fleet) + WorkflowCheck.run(fleet), PolicyAudit.unmatched(fleet))
            })
        all += others.checks
        all += audited.declared
        all += others.unmatched
        all += audited.handoffs
        return (fleet, all)
    }

    /// With `strict`, warnings count as errors.
    static func strictened(_ diagnostics: [Diagnostic], _ strict: Bool) -> [Diagnostic] {
        guard strict else { return diagnostics }
        return diagnostics.map { d in
            var d = d
            d.severity = .error
            return d
        }
    }

    /// Reads every document (in order) and validates the set.
    public static func validate(_ sources: [ParsedSource], reader: ManifestReader = ManifestReader(), strict: Bool = false)
        -> ValidationReport
    {
        var read = ReadManifests()
        for source in sources { read.append(reader.read(source)) }
        return validate(read, strict: strict)
    }
}
