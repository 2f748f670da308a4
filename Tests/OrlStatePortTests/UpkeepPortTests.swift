import Foundation
import OrlCore
import OrlJSON
import OrlTestSupport
import Synchronization
import Testing

private let day: Int64 = 86_400_000
private let now = Timestamp(milliseconds: 1_795_161_600_000 + 3_600_000)

private func call(_ name: String, at time: Int64, usd: Double) -> LedgerEntry {
    LedgerEntry(
        time: Timestamp(milliseconds: time), agent: agent(name), model: "openai/gpt-4o", usage: TokenUsage(prompt: 100, completion: 50),
        usd: usd, latencyMilliseconds: 80, requestID: "req-\(name)-\(time)", outcome: "ok")
}

/// The ports beyond reading and writing resources (`StateUpkeep`, `AlertOutbox`,
/// `StateTables`), one set of expectations run against every backend.
@Suite struct UpkeepPortTests {
    @Test(arguments: Backend.available) func retentionRollsTheLedgerUpAndUsageReadsBoth(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let old = now.milliseconds - 70 * day
        try store.write { s throws(StoreError) in
            try s.append([
                call("writer", at: old, usd: 0.5), call("writer", at: old + 1000, usd: 0.25), call("writer", at: old + day, usd: 1),
                call("writer", at: now.milliseconds - 1000, usd: 2),
            ])
            for i in 0..<5 {
                try s.append(
                    StoreEvent(
                        time: Timestamp(milliseconds: old + Int64(i)), kind: .normal, resource: agent("writer"), reason: "Old",
                        message: "\(i)"))
            }
            try s.append(StoreEvent(time: now, kind: .normal, resource: agent("writer"), reason: "New", message: "kept"))
        }
        let report = try store.retain(
            RetentionPolicy(eventsMaxAge: .seconds(30 * 86_400), ledgerMaxAge: .seconds(62 * 86_400)), now: now)
        #expect(report.ledgerRows == 3)
        #expect(report.ledgerDays == 2)
        #expect(report.events == 5)
        let daily = try store.ledgerDaily()
        #expect(daily.map(\.calls) == [2, 1])
        #expect(daily.map(\.usd) == [0.75, 1])
        #expect(
            daily.allSatisfy { $0.agent == agent("writer") && $0.usage == TokenUsage(prompt: $0.calls * 100, completion: $0.calls * 50) })
        #expect(daily.first?.day == LedgerDay.name(of: Timestamp(milliseconds: old)))
        let (calls, days) = try store.usage(LedgerQuery(since: Timestamp(milliseconds: old - day), limit: 100))
        #expect(calls.map(\.usd) == [2])
        #expect(days.count == 2)
        let (recent, none) = try store.usage(LedgerQuery(since: Timestamp(milliseconds: now.milliseconds - day), limit: 100))
        #expect(recent.count == 1 && none.isEmpty)
        // A second pass finds nothing more; a roll-up of the same day adds to its row.
        #expect(try store.retain(RetentionPolicy(ledgerMaxAge: .seconds(62 * 86_400)), now: now).ledgerRows == 0)
        try store.write { s throws(StoreError) in try s.append([call("writer", at: old + 2000, usd: 0.25)]) }
        #expect(try store.retain(RetentionPolicy(ledgerMaxAge: .seconds(62 * 86_400)), now: now).ledgerDays == 1)
        #expect(try store.ledgerDaily().map(\.usd) == [1, 1])
    }

    @Test(arguments: Backend.available) func gaugesReadPhasesRestartsAndSteps(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        try store.write { s throws(StoreError) in
            try s.put(stored(agent("writer")))
            try s.put(stored(agent("reader")))
            try s.putStatus(
                ResourceStatus(
                    conditions: [
                        ResourceStatus.Condition(
                            type: "Ready", status: .false, reason: "CrashLoop", message: "CrashLoopBackOff: exited 1",
                            lastTransitionTime: Timestamp(milliseconds: 7))
                    ], observedGeneration: 1, updatedAt: Timestamp(milliseconds: 9)), for: agent("writer"))
            try s.putSupervision(SupervisionRecord(agent: agent("writer"), restarts: 4, crashes: 3))
        }
        let gauges = try store.fleetGauges()
        #expect(gauges.agents.map(\.id) == [agent("reader"), agent("writer")])
        #expect(gauges.agents[1].phase == .crashLoopBackOff)
        #expect(gauges.agents[1].restarts == 4 && gauges.agents[1].crashes == 3)
        #expect(gauges.agents[0].phase == nil && gauges.agents[0].restarts == 0)
        #expect(gauges.steps.isEmpty)
    }

    /// The marker moves when another connection commits a write, and stays put otherwise.
    @Test(arguments: Backend.available) func theChangeMarkerMovesWithAnotherConnectionsWrite(_ backend: Backend) throws {
        let state = try TestState(backend)
        let watcher = try state.open()
        let writer = try state.open()
        let before = try watcher.changeMarker()
        #expect(try watcher.changeMarker() == before)
        try writer.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
        let after = try watcher.changeMarker()
        #expect(after != before)
        #expect(try watcher.changeMarker() == after)
    }

    /// Each topic's generation moves with the writes it counts, whichever connection
    /// makes them; statuses and supervision records (the controller's bookkeeping) move none.
    @Test(arguments: Backend.available) func changeGenerationsCountEachTopicOnly(_ backend: Backend) throws {
        let state = try TestState(backend)
        let watcher = try state.open()
        let writer = try state.open()
        #expect(Set(try watcher.changeGenerations().keys) == Set(ChangeTopic.allCases))
        try writer.write { s throws(StoreError) in try s.put(stored(agent("a"))) }
        let start = try watcher.changeGenerations()
        func moved() throws -> Set<ChangeTopic> {
            let now = try watcher.changeGenerations()
            return Set(ChangeTopic.allCases.filter { now[$0] != start[$0] })
        }
        try writer.write { s throws(StoreError) in
            try s.putStatus(ResourceStatus(conditions: [], observedGeneration: 1, updatedAt: Timestamp(milliseconds: 1)), for: agent("a"))
        }
        #expect(try moved() == [])
        try writer.write { s throws(StoreError) in
            try s.append(StoreEvent(time: Timestamp(milliseconds: 1), kind: .normal, resource: agent("a"), reason: "R", message: "m"))
        }
        #expect(try moved() == [.events])
        try writer.write { s throws(StoreError) in try s.put(stored(agent("b"))) }
        #expect(try moved() == [.resources, .events])
    }

    /// A write of many resources, holds and events moves each of their topics (SQLite: once
    /// per transaction, not per row, however many rows); a delete that finds nothing moves none
    /// in SQLite (PostgreSQL's statement triggers move it: a reader reads again, nothing more).
    @Test(arguments: Backend.available) func aTransactionMovesTheTopicsItWrote(_ backend: Backend) throws {
        let state = try TestState(backend)
        let watcher = try state.open()
        let writer = try state.open()
        var before = try watcher.changeGenerations()
        func moves() throws -> [ChangeTopic: Int64] {
            let now = try watcher.changeGenerations()
            defer { before = now }
            let moved = ChangeTopic.allCases.compactMap { t in now[t] == before[t] ? nil : (t, now[t]! - before[t]!) }
            return Dictionary(uniqueKeysWithValues: moved)
        }
        try writer.write { s throws(StoreError) in
            for i in 0..<50 {
                try s.put(stored(agent("a\(i)")))
                try s.append(
                    StoreEvent(time: Timestamp(milliseconds: 1), kind: .normal, resource: agent("a\(i)"), reason: "R", message: "m"))
            }
        }
        let wrote = try moves()
        #expect(Set(wrote.keys) == [.resources, .events])
        if backend == .sqlite { #expect(wrote == [.resources: 1, .events: 1]) }
        try writer.write { s throws(StoreError) in
            try s.putHold(UserHold(agent: agent("a1"), at: Timestamp(milliseconds: 5), by: "alice"))
        }
        #expect(Set(try moves().keys) == [.resources])
        try writer.write { s throws(StoreError) in try s.deleteHold(for: agent("a1")) }
        #expect(Set(try moves().keys) == [.resources])
        try writer.write { s throws(StoreError) in try s.delete(agent("a2")) }
        #expect(Set(try moves().keys) == [.resources])
        try writer.write { s throws(StoreError) in
            try s.delete(agent("ghost"))
            try s.deleteHold(for: agent("a3"))
        }
        if backend == .sqlite { #expect(try moves() == [:]) }
    }

    @Test(arguments: Backend.available) func theAlertOutboxQueuesEachEventOnceAndRecordsDeliveries(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let alert = ResourceID(kind: "Alert", name: "pager")
        try store.write { s throws(StoreError) in
            for i in 1...3 {
                try s.append(
                    StoreEvent(
                        time: Timestamp(milliseconds: Int64(i)), kind: .warning, resource: agent("writer"), reason: "R", message: "m\(i)"))
            }
        }
        func route(_ reader: any StateReader, _ events: [StoreEvent]) -> [AlertNotification] {
            events.map {
                AlertNotification(
                    event: $0.number, alert: alert, type: .deadLetter, time: $0.time, subject: $0.resource!, reason: $0.reason,
                    message: $0.message, action: nil)
            }
        }
        #expect(try store.enqueueAlerts(limit: 2, route: route) == 2)
        #expect(try store.enqueueAlerts(limit: 10, route: route) == 1)
        #expect(try store.enqueueAlerts(limit: 10, route: route) == 0)
        #expect(try store.nextAlertDue() == Timestamp(milliseconds: 1))
        let due = try store.dueAlerts(now: Timestamp(milliseconds: 2), limit: 10)
        #expect(due.map(\.notification.message) == ["m1", "m2"])
        try store.recordAlert(due[0].notification, delivered: true, error: nil, retryAt: nil, event: nil, now: Timestamp(milliseconds: 5))
        try store.recordAlert(
            due[1].notification, delivered: false, error: "503", retryAt: Timestamp(milliseconds: 100),
            event: StoreEvent(time: Timestamp(milliseconds: 5), kind: .warning, resource: alert, reason: "Retry", message: "503"),
            now: Timestamp(milliseconds: 5))
        let deliveries = try store.alertDeliveries(limit: 10)
        #expect(deliveries.map(\.state) == [.pending, .pending, .delivered])
        #expect(deliveries[1].attempts == 1 && deliveries[1].lastError == "503")
        #expect(deliveries[2].deliveredAt == Timestamp(milliseconds: 5))
        #expect(try store.nextAlertDue() == Timestamp(milliseconds: 3))
        #expect(try store.read { s throws(StoreError) in try s.events(for: alert, limit: 5) }.map(\.reason) == ["Retry"])
    }

    /// Inside one write, what was written is read back, the last put of a resource wins, and
    /// events are numbered in the order they were appended (PostgreSQL sends puts and events
    /// many rows per statement, later: none of it may show).
    @Test(arguments: Backend.available) func writesInATransactionAreReadBackInOrder(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let seen = try store.write { s throws(StoreError) -> (Int, String?, [String]) in
            for i in 0..<12_000 { try s.put(stored(agent("a\(i)"))) }
            try s.append(StoreEvent(time: now, kind: .normal, resource: agent("a1"), reason: "First", message: "1"))
            try s.put(stored(agent("a1"), manifest: #"{"second":true}"#, generation: 2))
            try s.append(StoreEvent(time: now, kind: .warning, resource: nil, reason: "Second", message: "2"))
            try s.delete(agent("a2"))
            try s.append(StoreEvent(time: now, kind: .normal, resource: agent("a3"), reason: "Third", message: "3"))
            return (
                try s.resources(kind: .agent, namespace: nil).count, try s.resource(agent("a1"))?.manifest,
                try s.events(for: nil, limit: 10).map(\.reason)
            )
        }
        #expect(seen.0 == 11_999)
        #expect(seen.1 == #"{"second":true}"#)
        #expect(seen.2 == ["Third", "Second", "First"])
        let events = try store.read { s throws(StoreError) in try s.events(for: nil, limit: 10) }
        #expect(events.map(\.number) == [3, 2, 1])
        #expect(events[1].resource == nil && events[1].kind == .warning)
        #expect(try store.read { s throws(StoreError) in try s.resource(agent("a11999")) } == stored(agent("a11999")))
        // A failed write sends nothing, buffered or not.
        #expect(throws: StoreError.self) {
            try store.write { s throws(StoreError) in
                try s.put(stored(agent("ghost")))
                try s.append(StoreEvent(time: now, kind: .normal, resource: nil, reason: "Lost", message: "x"))
                try s.putStatus(ResourceStatus(conditions: [], observedGeneration: 1, updatedAt: now), for: agent("nobody"))
            }
        }
        #expect(try store.read { s throws(StoreError) in try s.resource(agent("ghost")) } == nil)
        #expect(try store.read { s throws(StoreError) in try s.events(for: nil, limit: 10) }.count == 3)
    }

    // MARK: Moving a state

    /// A state with a row in every table, exported from one backend and imported into the
    /// other, exports the same rows with the same hashes; a non-empty target is refused
    /// unless replaced, and a refused import writes nothing.
    @Test(arguments: Backend.available, Backend.available) func tablesMoveBetweenBackendsIdentically(_ from: Backend, _ to: Backend)
        throws
    {
        let source = try TestState(from)
        let store = try source.open()
        try fill(store)
        let exported = try store.exportTables()
        #expect(exported.map(\.name) == StateTableCatalog.tables.map(\.name))
        // The manifest index is written by the manifest reader, not through these ports.
        let empty = exported.filter { $0.rows.isEmpty && $0.name != "manifest_indexes" }.map(\.name)
        #expect(empty.isEmpty, "tables without a row: \(empty)")

        let target = try TestState(to)
        let into = try target.open()
        try into.importTables(exported, replace: false)
        let moved = try into.exportTables()
        #expect(moved.map(\.contentHash) == exported.map(\.contentHash))
        #expect(moved.map(\.rows.count) == exported.map(\.rows.count))
        #expect(moved == exported)
        // Numbers continue after the imported ones.
        let number = try into.write { s throws(StoreError) in
            try s.append(StoreEvent(time: now, kind: .normal, resource: nil, reason: "After", message: "x"))
            return try s.events(for: nil, limit: 1)[0].number
        }
        #expect(number == (exported.first { $0.name == "events" }!.rows.count + 1))

        #expect(throws: StoreError.self) { try into.importTables(exported, replace: false) }
        try into.importTables(exported, replace: true)
        #expect(try into.exportTables() == exported)
    }

    /// A row in (almost) every table, written through the ports.
    private func fill(_ store: any StateBackend) throws {
        let worker = agent("worker")
        try store.write { s throws(StoreError) in
            for json in runManifests {
                let root = try! JSONParser.parse(json, file: "test.json")
                let manifest = CanonicalJSON.manifest(root)
                var resource = stored(
                    ResourceID(kind: root["kind"]!.string!, name: root["metadata"]!["name"]!.string!), manifest: manifest.text)
                resource.specHash = manifest.specHash
                resource.codeRoot = resource.id.kind == "Agent" ? "/src/fleet" : nil
                try s.put(resource)
            }
            _ = try s.record(apply("manifests/"))
            try s.append(StoreEvent(time: now, kind: .warning, resource: worker, reason: "Crashed", message: "exit 1"))
            try s.putStatus(ResourceStatus(conditions: [], observedGeneration: 1, updatedAt: Timestamp(milliseconds: 9)), for: worker)
            try s.putSupervision(
                SupervisionRecord(
                    agent: worker, process: ProcessIdentity(pid: 42, startTime: 7), launchHash: "h", tokenDigest: "d",
                    startedAt: Timestamp(milliseconds: 1), restarts: 1, crashes: 1, lastExit: .exited(code: 1),
                    exitedAt: Timestamp(milliseconds: 2)))
            try s.append([call("worker", at: now.milliseconds - 70 * day, usd: 0.1), call("worker", at: now.milliseconds, usd: 0.2)])
            try s.putSecret(
                SealedSecret(
                    id: SecretID(name: "api-key"), box: (0...255).map { UInt8($0) }, keyCheck: "kc", size: 3,
                    updatedAt: Timestamp(milliseconds: 4), updatedBy: "alice"))
            try s.putSource(SourceRecord(name: "fleet", url: "https://git.example/fleet.git", ref: "main", path: "manifests"))
        }
        _ = try store.retain(RetentionPolicy(ledgerMaxAge: .seconds(62 * 86_400)), now: now)
        let operations = RunOperations(store: store)
        let run = try operations.start(.init(workflow: ResourceID(kind: "Workflow", name: "two"), by: "test"), now: now, random: 1)
        // A first attempt that fails, then one that succeeds: an attempt succeeding at once
        // is told by its step alone, and run_attempts would have no row.
        let first = try #require(try operations.claim(agent: worker, now: now))
        try operations.fail(first.id, agent: worker, error: "busy", now: now, random: 0)
        let later = now.adding(.seconds(60))
        let task = try #require(try operations.claim(agent: worker, now: later))
        _ = try operations.complete(
            task.id, agent: worker, output: try JSONParser.parse(#"{"title":"Otters"}"#, file: "out"), now: later)
        try store.writeRuns { s throws(StoreError) in
            try s.put(CronSlotRecord(workflow: ResourceID(kind: "Workflow", name: "one"), cron: "0 * * * *", slot: now, run: run.id))
        }
        try store.write { s throws(StoreError) in try s.putHold(UserHold(agent: worker, at: Timestamp(milliseconds: 3), by: "alice")) }
        try store.request(
            ToolApproval(
                id: "call-1", agent: worker, tool: "search", arguments: "{}", requestedAt: now,
                expiresAt: Timestamp(milliseconds: now.milliseconds + 60_000)))
        _ = try store.enqueueAlerts(limit: 10) { _, events throws(StoreError) in
            events.map {
                AlertNotification(
                    event: $0.number, alert: ResourceID(kind: "Alert", name: "pager"), type: .deadLetter, time: $0.time,
                    subject: $0.resource ?? worker, reason: $0.reason, message: $0.message, action: nil)
            }
        }
        let line = BudgetLine(
            account: BudgetMeter.Account(budget: ResourceID(kind: "Budget", name: "team"), agent: nil), window: .day,
            windowStart: BudgetSpec.Window.day.interval(containing: now).lowerBound, cap: BudgetAmount(microUSD: 5_000_000, tokens: nil))
        _ = try store.reserve(BudgetAmount(microUSD: 10, tokens: 1), against: [line], spentBefore: [:], now: now)
        _ = try store.reserve(BudgetAmount(microUSD: 10, tokens: 1), against: [line], spentBefore: [:], now: now)
    }
}
