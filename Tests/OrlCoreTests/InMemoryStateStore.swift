import OrlCore
import OrlJSON
import Synchronization

/// The state port in memory, for fast tests of planning and applying. A write works on a
/// copy and publishes it only when the body returns, so a throw rolls back, as SQLite's
/// transactions do.
final class InMemoryStateStore: StateStore {
    struct State {
        var resources: [ResourceID: StoredResource] = [:]
        var history: [ApplyRecord] = []
        var events: [StoreEvent] = []
        var statuses: [ResourceID: ResourceStatus] = [:]
        var supervision: [ResourceID: SupervisionRecord] = [:]
        var holds: [ResourceID: UserHold] = [:]
        var ledger: [LedgerEntry] = []
        var secrets: [SecretID: SealedSecret] = [:]
        var sources: [String: SourceRecord] = [:]
        var manifestIndexes: [String: [UInt8]] = [:]
    }

    private let state = Mutex(State())

    var snapshot: State { state.withLock { $0 } }

    func read<T>(_ body: (any StateReader) throws(StoreError) -> T) throws(StoreError) -> T {
        try body(Session(state: snapshot))
    }

    func write<T>(_ body: (any StateWriter) throws(StoreError) -> T) throws(StoreError) -> T {
        try state.withLock { (current: inout State) throws(StoreError) -> T in
            let session = Session(state: current)
            let result = try body(session)
            current = session.state
            return result
        }
    }

    final class Session: StateWriter {
        var state: State
        init(state: State) { self.state = state }

        func resource(_ id: ResourceID) throws(StoreError) -> StoredResource? { state.resources[id] }

        func resources(kind: ResourceKind?, namespace: String?) throws(StoreError) -> [StoredResource] {
            state.resources.values
                .filter { r in (kind.map { $0.rawValue == r.id.kind } ?? true) && (namespace.map { $0 == r.id.namespace } ?? true) }
                .sorted { $0.id < $1.id }
        }

        func inventory(source: String) throws(StoreError) -> [ResourceID] {
            state.resources.values.filter { $0.source == source }.map(\.id).sorted()
        }

        func history(limit: Int) throws(StoreError) -> [ApplyRecord] { Array(state.history.reversed().prefix(limit)) }

        func events(for resource: ResourceID?, limit: Int) throws(StoreError) -> [StoreEvent] {
            Array(state.events.filter { resource == nil || $0.resource == resource }.reversed().prefix(limit))
        }

        func status(for resource: ResourceID) throws(StoreError) -> ResourceStatus? { state.statuses[resource] }

        func supervision(for agent: ResourceID) throws(StoreError) -> SupervisionRecord? { state.supervision[agent] }

        func allSupervision() throws(StoreError) -> [SupervisionRecord] {
            state.supervision.values.sorted { ($0.agent.namespace, $0.agent.name) < ($1.agent.namespace, $1.agent.name) }
        }

        func putSupervision(_ record: SupervisionRecord) throws(StoreError) { state.supervision[record.agent] = record }

        func deleteSupervision(for agent: ResourceID) throws(StoreError) { state.supervision[agent] = nil }

        func requireLease(_ lease: NodeLease) throws(StoreError) { throw .fenced(lease, why: "an in-memory state has no nodes") }

        func holds() throws(StoreError) -> [UserHold] {
            state.holds.values.sorted { ($0.agent.namespace, $0.agent.name) < ($1.agent.namespace, $1.agent.name) }
        }

        func putHold(_ hold: UserHold) throws(StoreError) {
            guard state.resources[hold.agent] != nil else { throw StoreError("\(hold.agent) is not in the state") }
            state.holds[hold.agent] = hold
        }

        func deleteHold(for agent: ResourceID) throws(StoreError) { state.holds[agent] = nil }

        func ledger(_ query: LedgerQuery) throws(StoreError) -> [LedgerEntry] {
            Array(
                state.ledger.reversed().filter { entry in
                    query.agent.map { $0 == entry.agent } ?? true && query.since.map { entry.time >= $0 } ?? true
                }.prefix(query.limit))
        }

        func spend(since: Timestamp) throws(StoreError) -> [ResourceID: Charge] {
            state.ledger.filter { $0.time >= since }.reduce(into: [:]) { spend, entry in
                spend[entry.agent, default: .zero] = spend[entry.agent, default: .zero] + Charge(usd: entry.usd, tokens: entry.usage.total)
            }
        }

        func append(_ entries: [LedgerEntry]) throws(StoreError) {
            for var entry in entries {
                entry.number = state.ledger.count + 1
                state.ledger.append(entry)
            }
        }
        func secrets(namespace: String?) throws(StoreError) -> [SealedSecret] {
            state.secrets.values.filter { namespace == nil || $0.id.namespace == namespace }.sorted { $0.id < $1.id }
        }

        func putSecret(_ secret: SealedSecret) throws(StoreError) { state.secrets[secret.id] = secret }

        func deleteSecret(_ id: SecretID) throws(StoreError) { state.secrets[id] = nil }

        func sources() throws(StoreError) -> [SourceRecord] { state.sources.values.sorted { $0.name < $1.name } }

        func source(named name: String) throws(StoreError) -> SourceRecord? { state.sources[name] }

        func putSource(_ source: SourceRecord) throws(StoreError) { state.sources[source.name] = source }

        func manifestIndex(source: String) throws(StoreError) -> [UInt8]? { state.manifestIndexes[source] }

        func putManifestIndex(source: String, _ data: [UInt8]?) throws(StoreError) { state.manifestIndexes[source] = data }

        func put(_ resource: StoredResource) throws(StoreError) { state.resources[resource.id] = resource }

        func delete(_ id: ResourceID) throws(StoreError) {
            state.resources[id] = nil
            state.statuses[id] = nil
            state.holds[id] = nil
        }

        func putStatus(_ status: ResourceStatus, for resource: ResourceID) throws(StoreError) {
            guard state.resources[resource] != nil else { throw StoreError("\(resource) is not in the state") }
            state.statuses[resource] = status
        }

        func record(_ apply: ApplyRecord) throws(StoreError) -> Int {
            var apply = apply
            apply.number = state.history.count + 1
            state.history.append(apply)
            return apply.number
        }

        func append(_ event: StoreEvent) throws(StoreError) {
            var event = event
            event.number = state.events.count + 1
            state.events.append(event)
        }
    }
}
