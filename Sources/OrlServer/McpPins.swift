import OrlCore
import OrlJSON
import Synchronization

/// The rug pull, in the Tool's status: the API compares each MCP server's live tool
/// definitions with its applied pins (at every call, and by itself every
/// `mcpPinCheckInterval` and as soon as new pins are applied) and writes what it found
/// as the Tool's conditions, for `orlctl get` and `describe`:
///
/// - `PinMatches`: True (`Matches`), False (`DefinitionChanged`, `ToolMissing`: each
///   tool and what of its definition changed), or Unknown (`Unreachable`, or
///   `NotStarted` for a stdio server no call has started yet: it is not started only
///   to be checked).
/// - `Ready` and `Stalled` follow it: a server whose pins do not match waits for a
///   person to review the change and pin again (`orlctl mcp pin`, then apply).
///
/// The calls themselves are refused whatever the status says (see `callTool`); the
/// status is what a person reads.
extension AgentAPI {
    public static let pinMatches = "PinMatches"

    struct PinCheck: Sendable {
        /// The pins checked (their hashes): new pins are checked at once.
        var pins: [String]
        var at: ContinuousClock.Instant
        /// When the listing checked was made: a call notes the pins again only for a newer one.
        var listedAt: ContinuousClock.Instant?
        var conditions: [ResourceStatus.Condition]
    }

    /// Checks the pins every `every` for new ones (the controller publishes a fleet at
    /// its next pass after an apply), and each server every `mcpPinCheckInterval`,
    /// until cancelled.
    public func watchPins(every: Duration = .seconds(2)) async {
        while !Task.isCancelled {
            await checkPins(every: configuration.mcpPinCheckInterval)
            try? await Task.sleep(for: every)
        }
    }

    /// Checks the servers whose pins changed since they were last checked, and those
    /// last checked `interval` ago or longer.
    public func checkPins(every interval: Duration) async {
        let now = ContinuousClock.now
        for server in gateway.mcpServers() {
            let pins = server.spec.mcp?.pins.map(\.hash) ?? []
            let due = pinChecks.withLock { checks in
                guard let last = checks[server.id], last.pins == pins else { return true }
                return now - last.at >= interval
            }
            if due { await checkPins(of: server) }
        }
    }

    private func checkPins(of server: CallerTable.ToolRoute) async {
        guard let spec = server.spec.mcp else { return }
        var credential: String?
        if let secret = spec.credentialSecret?.value {
            guard let value = self.secret(SecretID(namespace: server.id.namespace, name: secret)) else {
                notePins(
                    server.id, spec,
                    .unknown(
                        "CredentialMissing",
                        "the credential of MCP server \(server.id.name) (secret \(Diagnostic.quoted(secret))) is not in the vault"))
                return
            }
            credential = value
        }
        guard
            let endpoint = McpUpstream.Endpoint.server(
                server.id, spec: server.spec, origin: server.origin, credential: credential, stateDirectory: configuration.stateDirectory)
        else { return }
        let confinement = mcp.stdio?.confinement(of: endpoint)
        if endpoint.stdio != nil, mcp.stdio?.running()[server.id] == nil {
            notePins(
                server.id, spec,
                .unknown("NotStarted", "a stdio server starts at the first call of one of its tools; its definitions are checked then"),
                confinement: confinement)
            return
        }
        do throws(McpUpstream.Failure) {
            let listing = try await mcp.listing(endpoint, maxAge: configuration.mcpDefinitionMaxAge)
            notePins(server.id, spec, .checked(spec.drift(live: listing.tools)), listedAt: listing.at, confinement: confinement)
        } catch {
            notePins(server.id, spec, .unknown("Unreachable", error.message), confinement: confinement)
        }
    }

    enum PinFinding {
        case checked([McpPinDrift])
        case unknown(String, String)
    }

    /// Records what a check found; the status is written when it differs from the last
    /// one written (on the API's store queue, off the call's path).
    func notePins(
        _ server: ResourceID, _ spec: McpServerSpec, _ finding: PinFinding, listedAt: ContinuousClock.Instant? = nil,
        confinement: String? = nil
    ) {
        var found = Self.conditions(server, spec, finding)
        if let confinement {
            // A stdio server's sandbox and limits, as an agent's `Sandboxed` says.
            let strict = spec.isolation == .strict
            found.append(
                .init(type: "Sandboxed", status: strict ? .true : .false, reason: strict ? "Strict" : "Unconfined", message: confinement))
        }
        let conditions = found
        let pins = spec.pins.map(\.hash)
        let changed = pinChecks.withLock { checks in
            let before = checks[server]
            checks[server] = PinCheck(pins: pins, at: .now, listedAt: listedAt, conditions: conditions)
            return before?.pins != pins || before.map { Self.same($0.conditions, conditions) } != true
        }
        guard changed else { return }
        if case .checked(let drift) = finding, !drift.isEmpty {
            // An event on the Tool too, once per change found (its calls' refusals are
            // events of the agents that made them).
            gateway.note(
                ControllerEvent(
                    time: gateway.clock(), reason: .toolRefused, resource: server,
                    message: "MCP server \(server.name): " + drift.map(\.summary).joined(separator: "; ")
                        + "; its changed tools are refused until pinned again"))
        }
        guard let statusStore else { return }
        let now = gateway.clock()
        Task {
            do throws(RunError) {
                try await perform { () throws(RunError) in
                    do throws(StoreError) {
                        try statusStore.write { writer throws(StoreError) in
                            // Only for the pins checked: a Tool applied since then is
                            // checked again, and its status written then.
                            guard let stored = try writer.resource(server), Self.pinHashes(of: stored) == pins else { return }
                            let previous = try writer.status(for: server)
                            var status = ResourceStatus(conditions: conditions, observedGeneration: stored.generation, updatedAt: now)
                            for index in status.conditions.indices {
                                let before = previous?.condition(status.conditions[index].type)
                                status.conditions[index].lastTransitionTime =
                                    before?.status == status.conditions[index].status ? before?.lastTransitionTime ?? now : now
                            }
                            try writer.putStatus(status, for: server)
                        }
                    } catch {
                        throw RunError(error)
                    }
                }
            } catch {
                // Written again at the next check.
                pinChecks.withLock { $0[server] = nil }
                gateway.log(
                    ControllerEvent(
                        time: now, reason: .error, resource: server,
                        message: "writing the status of MCP server \(server.name): \(error.message)"))
            }
        }
    }

    /// A call saw this listing: the status follows it when it is newer than the one
    /// last noted (a listing is made at most every `mcpDefinitionMaxAge`, so this costs a
    /// call nothing most of the time).
    func notePins(_ server: ResourceID, _ spec: McpServerSpec, seen listing: McpUpstream.Live, endpoint: McpUpstream.Endpoint) {
        let pins = spec.pins.map(\.hash)
        let newer = pinChecks.withLock { checks in
            guard let last = checks[server], last.pins == pins, let listed = last.listedAt else { return true }
            return listed < listing.at
        }
        if newer {
            notePins(
                server, spec, .checked(spec.drift(live: listing.tools)), listedAt: listing.at,
                confinement: mcp.stdio?.confinement(of: endpoint))
        }
    }

    /// The hashes of the pins a stored Tool carries, in order.
    static func pinHashes(of stored: StoredResource) -> [String] {
        guard let manifest = try? JSONParser.parse(stored.manifest, file: "<state>") else { return [] }
        return manifest["spec"]?["mcp"]?["pins"]?.elements?.compactMap { $0["hash"]?.string } ?? []
    }

    static func conditions(_ server: ResourceID, _ spec: McpServerSpec, _ finding: PinFinding) -> [ResourceStatus.Condition] {
        typealias Condition = ResourceStatus.Condition
        switch finding {
        case .unknown(let reason, let message):
            return [
                Condition(type: pinMatches, status: .unknown, reason: reason, message: message),
                Condition(type: ResourceStatus.ready, status: .unknown, reason: reason, message: message),
            ]
        case .checked(let drift) where drift.isEmpty:
            let count = spec.exposed.count
            let message = "the live definitions of its \(count) exposed tool\(count == 1 ? "" : "s") match their pins"
            return [
                Condition(type: pinMatches, status: .true, reason: "Matches", message: message),
                Condition(type: ResourceStatus.ready, status: .true, reason: "PinsMatch", message: message),
            ]
        case .checked(let drift):
            let reason = drift.contains { $0.liveHash != nil } ? "DefinitionChanged" : "ToolMissing"
            let message =
                drift.map(\.summary).joined(separator: "; ")
                + "; calls to \(drift.count == 1 ? "it" : "them") are refused until the change is reviewed and pinned again (orlctl mcp pin, then apply)"
            return [
                Condition(type: pinMatches, status: .false, reason: reason, message: message),
                Condition(type: ResourceStatus.ready, status: .false, reason: reason, message: "Refused: " + message),
                Condition(
                    type: ResourceStatus.stalled, status: .true, reason: reason, message: "waiting for a person to review and pin again"),
            ]
        }
    }

    private static func same(_ a: [ResourceStatus.Condition], _ b: [ResourceStatus.Condition]) -> Bool {
        a.map { [$0.type, $0.status.rawValue, $0.reason, $0.message] } == b.map { [$0.type, $0.status.rawValue, $0.reason, $0.message] }
    }
}
