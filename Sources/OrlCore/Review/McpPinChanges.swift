import OrlJSON

/// `review`'s findings on pinned MCP tool definitions: every tool whose pin the change
/// adds or alters, so a reviewer reads the new description before agents act on it.
enum McpPinChanges {
    static func findings(base: Fleet, head: Fleet) -> [Diagnostic] {
        var findings: [Diagnostic] = []
        for server in head.resources(of: .tool) {
            guard let spec = server.tool, spec.type == .mcp, let pins = spec.mcp?.pins else { continue }
            let before = Dictionary(
                (base[server.id]?.tool?.mcp?.pins ?? []).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            for pin in pins {
                let name = "\(server.metadata.name)/\(pin.name)"
                let what: String
                if let old = before[pin.name] {
                    guard old.hash != pin.hash else { continue }
                    var changed: [String] = []
                    if old.description != pin.description { changed.append("description") }
                    if old.title != pin.title { changed.append("title") }
                    if old.inputSchema != pin.inputSchema { changed.append("input schema") }
                    if old.outputSchema != pin.outputSchema { changed.append("output schema") }
                    if old.annotationsJSON != pin.annotationsJSON { changed.append("annotations") }
                    what =
                        "changes the pinned definition of MCP tool \"\(name)\" (\(changed.joined(separator: ", ")))"
                        + (old.description != pin.description
                            ? "; its description is now: \(Diagnostic.quoted(pin.description ?? ""))" : "")
                } else {
                    what = "pins a new MCP tool \"\(name)\": \(Diagnostic.quoted(pin.description ?? ""))"
                }
                findings.append(
                    .warning(
                        .mcpPinChanged, "this change \(what)", at: server.nameLocation, resource: server.id,
                        path: ValuePath([.key("spec"), .key("mcp"), .key("pins")])))
            }
        }
        return findings
    }
}
