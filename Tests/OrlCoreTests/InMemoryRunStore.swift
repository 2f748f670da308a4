import OrlCore
import OrlJSON
import Synchronization

/// The run port in memory, for fast tests of the run engine through `RunOperations`. A
/// write works on a copy and publishes it only when the body returns, so a throw rolls
/// back, as SQLite's transactions do. Queries order their results as the SQLite store's do.
final class InMemoryRunStore: RunStore {
    struct State {
        var resources: [ResourceID: StoredResource] = [:]
        var events: [StoreEvent] = []
        var runs: [RunID: RunRecord] = [:]
        var plans: [RunID: RunPlan] = [:]
        var steps: [RunID: [StepRecord]] = [:]
        var values: [BlackboardValue] = []
        var attempts: [AttemptRecord] = []
        var slots: [String: CronSlotRecord] = [:]
    }

    private let state: Mutex<State>

    init(resources: [StoredResource] = []) {
        state = Mutex(State(resources: Dictionary(uniqueKeysWithValues: resources.map { ($0.id, $0) })))
    }

    var snapshot: State { state.withLock { $0 } }

    func readRuns<T>(_ body: (any RunReader) throws(StoreError) -> T) throws(StoreError) -> T {
        try body(Session(state: snapshot))
    }

    func writeRuns<T>(_ body: (any RunWriter) throws(StoreError) -> T) throws(StoreError) -> T {
        try state.withLock { (current: inout State) throws(StoreError) -> T in
            let session = Session(state: current)
            let result = try body(session)
            current = session.state
            return result
        }
    }

    final class Session: RunWriter {
        var state: State
        init(state: State) { self.state = state }

        func resource(_ id: ResourceID) throws(StoreError) -> StoredResource? { state.resources[id] }

        func resources(kind: ResourceKind?, namespace: String?) throws(StoreError) -> [StoredResource] {
            state.resources.values
                .filter { r in (kind.map { $0.rawValue == r.id.kind } ?? true) && (namespace.map { $0 == r.id.namespace } ?? true) }
                .sorted { $0.id < $1.id }
        }

        func events(for resource: ResourceID?, limit: Int) throws(StoreError) -> [StoreEvent] {
            Array(state.events.filter { resource == nil || $0.resource == resource }.reversed().prefix(limit))
        }

        func run(_ id: RunID) throws(StoreError) -> RunRecord? { state.runs[id] }

        func runs(namespace: String?, workflow: String?, limit: Int) throws(StoreError) -> [RunRecord] {
            Array(
                state.runs.values.filter {
                    ($0.workflow.namespace == namespace || namespace == nil) && ($0.workflow.name == workflow || workflow == nil)
                }
                .sorted { $0.id > $1.id }.prefix(limit))
        }

        func plan(of run: RunID) throws(StoreError) -> RunPlan {
            guard let plan = state.plans[run] else { throw StoreError("run \(run) is not in the state") }
            return plan
        }

        func step(of run: RunID, index: Int) throws(StoreError) -> StepRecord? { state.steps[run]?[index] }

        func steps(of run: RunID) throws(StoreError) -> [StepRecord] { state.steps[run] ?? [] }

        func openStepCount(of run: RunID) throws(StoreError) -> Int { (state.steps[run] ?? []).filter { !$0.state.isTerminal }.count }

        private var allSteps: [StepRecord] { state.steps.keys.sorted().flatMap { state.steps[$0]! } }

        func nextClaimable(agent: ResourceID, at now: Timestamp) throws(StoreError) -> StepRecord? {
            allSteps.filter { $0.state == .ready && $0.agent == agent && $0.readyAt! <= now }
                .min { ($0.readyAt!, $0.run, $0.index) < ($1.readyAt!, $1.run, $1.index) }
        }

        func runningSteps(agent: ResourceID?) throws(StoreError) -> [StepRecord] {
            allSteps.filter { $0.state == .running && (agent == nil || $0.agent == agent) }.sorted {
                ($0.run, $0.index) < ($1.run, $1.index)
            }
        }

        func dueSteps(at now: Timestamp, limit: Int) throws(StoreError) -> [StepRecord] {
            Array(
                allSteps.filter { step in
                    (step.state == .running || step.state == .waitingApproval) && step.deadline.map { $0 <= now } == true
                        || step.state == .running && step.leaseExpiresAt.map { $0 <= now } == true
                }.prefix(limit))
        }

        func nextDue() throws(StoreError) -> Timestamp? {
            allSteps.flatMap { step -> [Timestamp] in
                switch step.state {
                case .running: [step.deadline, step.leaseExpiresAt].compactMap { $0 }
                case .waitingApproval: [step.deadline].compactMap { $0 }
                default: []
                }
            }.min()
        }

        func pendingApprovals(namespace: String?) throws(StoreError) -> [StepRecord] {
            allSteps.filter { step in
                step.state == .waitingApproval && (namespace == nil || state.runs[step.run]?.workflow.namespace == namespace)
            }
        }

        func value(of run: RunID, key: String) throws(StoreError) -> BlackboardValue? {
            state.values.last { $0.run == run && $0.key == key }
        }

        func values(of run: RunID) throws(StoreError) -> [BlackboardValue] {
            state.values.filter { $0.run == run }.sorted { ($0.key, $0.version) < ($1.key, $1.version) }
        }

        func attempts(of run: RunID) throws(StoreError) -> [AttemptRecord] {
            AttemptRecord.reported(stored: state.attempts.filter { $0.run == run }, steps: state.steps[run] ?? [])
        }

        func cronSlot(workflow: ResourceID, cron: String) throws(StoreError) -> CronSlotRecord? { state.slots["\(workflow) \(cron)"] }

        func spend(of run: RunID) throws(StoreError) -> [String: Charge] { [:] }

        func status(for resource: ResourceID) throws(StoreError) -> ResourceStatus? { nil }

        func append(_ event: StoreEvent) throws(StoreError) {
            var event = event
            event.number = state.events.count + 1
            state.events.append(event)
        }

        func insert(_ run: RunRecord, plan: RunPlan, steps: [StepRecord]) throws(StoreError) {
            guard state.runs[run.id] == nil else { throw StoreError("run \(run.id) exists") }
            if case .schedule(_, let slot) = run.trigger,
                state.runs.values.contains(where: { $0.workflow == run.workflow && $0.trigger.slot == slot })
            {
                throw StoreError("a run for that slot exists")
            }
            state.runs[run.id] = run
            state.plans[run.id] = plan
            state.steps[run.id] = steps
        }

        func update(_ run: RunRecord) throws(StoreError) { state.runs[run.id] = run }

        func update(_ step: StepRecord) throws(StoreError) { state.steps[step.run]![step.index] = step }

        func put(_ value: BlackboardValue) throws(StoreError) -> Int {
            var value = value
            value.version = (state.values.last { $0.run == value.run && $0.key == value.key }?.version ?? 0) + 1
            state.values.append(value)
            return value.version
        }

        func put(_ attempt: AttemptRecord) throws(StoreError) {
            if let i = state.attempts.firstIndex(where: {
                $0.run == attempt.run && $0.step == attempt.step && $0.attempt == attempt.attempt
            }) {
                state.attempts[i].endedAt = attempt.endedAt
                state.attempts[i].outcome = attempt.outcome
                state.attempts[i].error = attempt.error
            } else {
                state.attempts.append(attempt)
            }
        }

        func put(_ slot: CronSlotRecord) throws(StoreError) { state.slots["\(slot.workflow) \(slot.cron)"] = slot }
    }
}

extension RunTrigger {
    var slot: Timestamp? {
        if case .schedule(_, let slot) = self { return slot }
        return nil
    }
}
