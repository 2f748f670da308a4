public import OrlJSON

/// What a delete did (or, in a dry run, would do).
public struct DeleteOutcome: Sendable {
    /// What was deleted, as it was stored, in the order asked.
    public var deleted: [StoredResource]
    /// What was asked for and not there (only with `ignoreNotFound`).
    public var missing: [ResourceID]
    /// The history number, when something was written.
    public var historyNumber: Int?
}

public enum DeleteError: Error, Sendable, CustomStringConvertible {
    case store(StoreError)
    /// Some of the resources are not in the state; nothing was deleted.
    case notFound([ResourceID])

    public var description: String {
        switch self {
        case .store(let e): e.description
        case .notFound(let ids): "not found: " + ids.map(\.description).joined(separator: ", ")
        }
    }
}

/// `orlctl delete`: removes resources from the state in one transaction, all or nothing,
/// with a history entry (source `delete`) and a `Deleted` event for each.
public enum DeleteOperation {
    /// The apply source delete records in the history.
    public static let source = "delete"

    public static func delete(
        _ ids: [ResourceID], from store: any StateStore, ignoreNotFound: Bool = false, dryRun: Bool = false, by caller: String,
        now: Timestamp
    ) throws(DeleteError) -> DeleteOutcome {
        var unique: [ResourceID] = []
        var seen = Set<ResourceID>()
        for id in ids where seen.insert(id).inserted { unique.append(id) }

        func lookUp(_ reader: any StateReader) throws(StoreError) -> (found: [StoredResource], missing: [ResourceID]) {
            var found: [StoredResource] = []
            var missing: [ResourceID] = []
            for id in unique {
                if let resource = try reader.resource(id) { found.append(resource) } else { missing.append(id) }
            }
            return (found, missing)
        }

        var notFound: [ResourceID] = []
        let outcome: DeleteOutcome
        do throws(StoreError) {
            if dryRun {
                let (found, missing) = try store.read(lookUp)
                notFound = missing
                outcome = DeleteOutcome(deleted: found, missing: missing, historyNumber: nil)
            } else {
                outcome = try store.write { writer throws(StoreError) -> DeleteOutcome in
                    let (found, missing) = try lookUp(writer)
                    if !missing.isEmpty && !ignoreNotFound {
                        // Nothing written yet: the transaction ends with no change.
                        notFound = missing
                        return DeleteOutcome(deleted: [], missing: missing, historyNumber: nil)
                    }
                    guard !found.isEmpty else { return DeleteOutcome(deleted: [], missing: missing, historyNumber: nil) }
                    for resource in found {
                        try writer.delete(resource.id)
                        try writer.append(
                            StoreEvent(
                                time: now, kind: .normal, resource: resource.id, reason: "Deleted",
                                message:
                                    "deleted by \(caller); it was applied from \(resource.file):\(resource.line) by source \(resource.source)"
                            ))
                    }
                    let summary = "Deleted: \(found.count)"
                    let number = try writer.record(
                        ApplyRecord(
                            number: 0, source: source, revision: nil, appliedAt: now, appliedBy: caller, summary: summary,
                            plan: json(found, summary: summary).rendered(), result: "deleted"))
                    return DeleteOutcome(deleted: found, missing: missing, historyNumber: number)
                }
            }
        } catch {
            throw .store(error)
        }
        if !notFound.isEmpty && !ignoreNotFound { throw .notFound(notFound) }
        return outcome
    }

    /// What the history keeps of a delete, shaped like a plan: every change a `delete`.
    public static func json(_ deleted: [StoredResource], summary: String) -> JSONValue {
        .object([
            ("source", .string(source)),
            ("summary", .string(summary)),
            ("delete", .int(deleted.count)),
            (
                "changes",
                .array(
                    deleted.map { r in
                        .object([
                            ("action", .string("delete")),
                            ("kind", .string(r.id.kind)),
                            ("namespace", .string(r.id.namespace)),
                            ("name", .string(r.id.name)),
                            ("file", .string(r.file)),
                            ("line", .int(r.line)),
                            ("generation", .int(r.generation)),
                            ("appliedBySource", .string(r.source)),
                        ])
                    })
            ),
        ])
    }
}
