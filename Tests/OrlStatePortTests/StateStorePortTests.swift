import Foundation
import OrlCore
import OrlTestPostgres
import OrlTestSupport
import Synchronization
import Testing

/// The `StateStore` port (StateReader and StateWriter), one set of expectations run
/// against every backend: what `SQLiteStateStore` does is what `PostgresStateStore` must do.
@Suite struct StateStorePortTests {
    struct Abort: Error {}

    // MARK: Resources

    @Test(arguments: Backend.available) func putThenGetReturnsEveryField(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let writer = stored(agent("writer"), revision: nil)
        var tool = stored(ResourceID(kind: "Tool", name: "search"))
        tool.codeRoot = "/src/fleet"
        try store.write { s throws(StoreError) in
            try s.put(writer)
            try s.put(tool)
        }
        #expect(try store.read { s throws(StoreError) in try s.resource(agent("writer")) } == writer)
        #expect(try store.read { s throws(StoreError) in try s.resource(tool.id) } == tool)
        #expect(try store.read { s throws(StoreError) in try s.resource(agent("reader")) } == nil)
        #expect(try store.read { s throws(StoreError) in try s.resource(agent("writer", namespace: "team-a")) } == nil)
    }

    @Test(arguments: Backend.available) func putReplacesTheWholeResource(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        try store.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
        var changed = stored(agent("writer"), manifest: #"{"changed":true}"#, generation: 2, source: "other/", revision: nil)
        changed.line = 42
        changed.appliedBy = "bob"
        try store.write { s throws(StoreError) in try s.put(changed) }
        #expect(try store.read { s throws(StoreError) in try s.resource(agent("writer")) } == changed)
        #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.count == 1)
    }

    @Test(arguments: Backend.available) func listingsAreInKindOrderThenNamespaceThenNameByBytes(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let ids = [
            ResourceID(kind: "Workflow", name: "ship"),
            ResourceID(kind: "Agent", namespace: "team-b", name: "a"),
            ResourceID(kind: "Agent", name: "writer"),
            ResourceID(kind: "Agent", name: "reader"),
            ResourceID(kind: "Agent", name: "Zeta"),
            ResourceID(kind: "Agent", name: "a-b"),
            ResourceID(kind: "Agent", name: "a.b"),
            ResourceID(kind: "Budget", name: "monthly"),
            ResourceID(kind: "Tool", name: "search"),
            ResourceID(kind: "Policy", name: "no-shell"),
            ResourceID(kind: "ModelProvider", name: "openai"),
            ResourceID(kind: "Agent", namespace: "team-a", name: "z"),
            ResourceID(kind: "Gadget", name: "unknown-kind"),
        ]
        try store.write { writer throws(StoreError) in
            for id in ids { try writer.put(stored(id)) }
        }
        let listed = try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id)
        // Byte order, as SQLite's BINARY collation: upper case before lower, '-' before '.'.
        #expect(
            listed == [
                ResourceID(kind: "ModelProvider", name: "openai"),
                ResourceID(kind: "Tool", name: "search"),
                ResourceID(kind: "Agent", name: "Zeta"),
                ResourceID(kind: "Agent", name: "a-b"),
                ResourceID(kind: "Agent", name: "a.b"),
                ResourceID(kind: "Agent", name: "reader"),
                ResourceID(kind: "Agent", name: "writer"),
                ResourceID(kind: "Agent", namespace: "team-a", name: "z"),
                ResourceID(kind: "Agent", namespace: "team-b", name: "a"),
                ResourceID(kind: "Policy", name: "no-shell"),
                ResourceID(kind: "Budget", name: "monthly"),
                ResourceID(kind: "Workflow", name: "ship"),
                ResourceID(kind: "Gadget", name: "unknown-kind"),
            ])
        let teamA = try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: "team-a") }.map(\.id)
        #expect(teamA == [ResourceID(kind: "Agent", namespace: "team-a", name: "z")])
        let defaultAgents = try store.read { s throws(StoreError) in try s.resources(kind: .agent, namespace: "default") }.map(\.id.name)
        #expect(defaultAgents == ["Zeta", "a-b", "a.b", "reader", "writer"])
        #expect(try store.read { s throws(StoreError) in try s.resources(kind: .tool, namespace: "team-a") }.isEmpty)
    }

    @Test(arguments: Backend.available) func deleteRemovesOnlyThatResourceAndIgnoresMissingOnes(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        try store.write { writer throws(StoreError) in
            try writer.put(stored(agent("writer")))
            try writer.put(stored(agent("writer", namespace: "team-a")))
        }
        try store.write { writer throws(StoreError) in
            try writer.delete(agent("writer"))
            try writer.delete(agent("never-there"))
        }
        #expect(try store.read { s throws(StoreError) in try s.resource(agent("writer")) } == nil)
        #expect(
            try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id) == [
                agent("writer", namespace: "team-a")
            ])
    }

    @Test(arguments: Backend.available) func inventoryDigestsAndFingerprintFollowTheSource(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        try store.write { writer throws(StoreError) in
            try writer.put(stored(agent("b"), source: "git:fleet"))
            try writer.put(stored(ResourceID(kind: "Tool", name: "search"), source: "git:fleet"))
            try writer.put(stored(agent("a"), source: "git:fleet"))
            try writer.put(stored(agent("local"), source: "manifests/"))
        }
        #expect(
            try store.read { s throws(StoreError) in try s.inventory(source: "git:fleet") } == [
                ResourceID(kind: "Tool", name: "search"), agent("a"), agent("b"),
            ])
        #expect(try store.read { s throws(StoreError) in try s.inventory(source: "nothing") }.isEmpty)
        let digests = try store.read { s throws(StoreError) in try s.digests() }
        #expect(digests.count == 4)
        #expect(
            digests[agent("a")]
                == StoredDigest(manifestHash: CanonicalJSON.textHash(stored(agent("a")).manifest), source: "git:fleet", codeRoot: nil))
        let before = try store.read { s throws(StoreError) in try s.fingerprint(source: "git:fleet") }
        #expect(before == "3:3:1763743503120")
        #expect(try store.read { s throws(StoreError) in try s.fingerprint(source: "nothing") } == "0:0:0")
        // A resource moved to another source leaves the first one's inventory and fingerprint.
        try store.write { s throws(StoreError) in try s.put(stored(agent("a"), source: "manifests/")) }
        #expect(
            try store.read { s throws(StoreError) in try s.inventory(source: "git:fleet") } == [
                ResourceID(kind: "Tool", name: "search"), agent("b"),
            ])
        #expect(try store.read { s throws(StoreError) in try s.fingerprint(source: "git:fleet") } == "2:2:1763743503120")
    }

    @Test(arguments: Backend.available) func theManifestIndexIsOneBlobPerSourceAndTheChangeMarkMovesWithEveryWrite(
        _ backend: Backend
    ) throws {
        let state = try TestState(backend)
        let store = try state.open()
        #expect(try store.read { s throws(StoreError) in try s.manifestIndex(source: "files:/a") } == nil)
        // Every byte value, and more than a page.
        let blob = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try store.write { w throws(StoreError) in
            try w.putManifestIndex(source: "files:/a", blob)
            try w.putManifestIndex(source: "files:/b", [1, 2, 3])
        }
        #expect(try store.read { s throws(StoreError) in try s.manifestIndex(source: "files:/a") } == blob)
        try store.write { w throws(StoreError) in try w.putManifestIndex(source: "files:/a", [0]) }
        #expect(try store.read { s throws(StoreError) in try s.manifestIndex(source: "files:/a") } == [0])
        try store.write { w throws(StoreError) in try w.putManifestIndex(source: "files:/a", nil) }
        #expect(try store.read { s throws(StoreError) in try s.manifestIndex(source: "files:/a") } == nil)
        #expect(try store.read { s throws(StoreError) in try s.manifestIndex(source: "files:/b") } == [1, 2, 3])
        // What a source keeps of a namespace's resources sits beside its index, under a key
        // with control characters in it, apart from the index itself.
        let kept = ResourceSnapshot.key(source: "files:/b", namespace: "team-a")
        try store.write { w throws(StoreError) in try w.putManifestIndex(source: kept, blob) }
        #expect(try store.read { s throws(StoreError) in try s.manifestIndex(source: kept) } == blob)
        #expect(try store.read { s throws(StoreError) in try s.manifestIndex(source: "files:/b") } == [1, 2, 3])
        try store.write { w throws(StoreError) in try w.putManifestIndex(source: kept, nil) }
        #expect(try store.read { s throws(StoreError) in try s.manifestIndex(source: kept) } == nil)

        // The mark an apply keeps must move with any change to what the source's resources
        // are (identity, manifest, owner), a takeover by another source and a delete included.
        var marks: [String] = [try store.read { s throws(StoreError) in try s.changeMark(source: "git:fleet") }]
        func mark(_ body: (any StateWriter) throws(StoreError) -> Void) throws {
            marks.append(
                try store.write { w throws(StoreError) in
                    try body(w)
                    return try w.changeMark(source: "git:fleet")
                })
        }
        try mark { w throws(StoreError) in try w.put(stored(agent("a"), source: "git:fleet")) }
        try mark { w throws(StoreError) in
            try w.put(stored(agent("a"), manifest: #"{"kind":"Agent","spec":{"x":2}}"#, generation: 2, source: "git:fleet"))
        }
        try mark { w throws(StoreError) in try w.put(stored(agent("a"), generation: 3, source: "manifests/")) }
        try mark { w throws(StoreError) in try w.put(stored(agent("b"), source: "git:fleet")) }
        try mark { w throws(StoreError) in try w.delete(agent("b")) }
        // (A store may give the same mark again when the source's resources are again what
        // they were: the memo claims no more than that.)
        for i in 1..<marks.count { #expect(marks[i] != marks[i - 1], "\(marks)") }
        // Nothing written to the resources: the same mark.
        try mark { w throws(StoreError) in try w.putManifestIndex(source: "git:fleet", [9]) }
        #expect(marks[marks.count - 1] == marks[marks.count - 2])
    }

    @Test(arguments: Backend.available) func manifestsRoundTripWhateverTheirSizeAndContent(_ backend: Backend) throws {
        let state = try TestState(backend)
        let large = String(repeating: #"{"k":"välue ✓ 🚀","n":[1,2,3]}"#, count: 80_000)  // about 2.6 MB
        var empty = stored(agent("empty"), manifest: "", revision: "")
        empty.file = ""
        empty.appliedBy = ""
        try state.open().write { writer throws(StoreError) in
            try writer.put(stored(agent("large"), manifest: large))
            try writer.put(empty)
        }
        let reopened = try state.open()
        #expect(try reopened.read { s throws(StoreError) in try s.resource(agent("large")) }?.manifest == large)
        // Empty strings stay empty strings (not NULL), and "" stays distinct from nil.
        #expect(try reopened.read { s throws(StoreError) in try s.resource(agent("empty")) } == empty)
    }

    // MARK: History and events

    @Test(arguments: Backend.available) func historyIsNumberedInOrderAndReadNewestFirst(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let first = try store.write { s throws(StoreError) in try s.record(apply("a")) }
        let second = try store.write { s throws(StoreError) in try s.record(apply("b")) }
        let third = try state.open().write { s throws(StoreError) in try s.record(apply("c")) }
        #expect((first, second, third) == (1, 2, 3))
        let history = try store.read { s throws(StoreError) in try s.history(limit: 10) }
        #expect(history.map(\.number) == [3, 2, 1])
        #expect(history.map(\.source) == ["c", "b", "a"])
        #expect(
            history.last
                == ApplyRecord(
                    number: 1, source: "a", revision: nil, appliedAt: Timestamp(milliseconds: 1000), appliedBy: "alice",
                    summary: "Plan: 1 to add, 0 to change, 0 to prune (0 unchanged).", plan: "{}", result: "applied"))
        #expect(try store.read { s throws(StoreError) in try s.history(limit: 2) }.map(\.number) == [3, 2])
        #expect(try store.read { s throws(StoreError) in try s.history(limit: 0) }.isEmpty)
    }

    @Test(arguments: Backend.available) func eventsAreReadNewestFirstForOneResourceOrAll(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let writer = agent("writer")
        let elsewhere = agent("writer", namespace: "team-a")
        try store.write { events throws(StoreError) in
            try events.append(
                StoreEvent(time: Timestamp(milliseconds: 1), kind: .normal, resource: writer, reason: "Created", message: "m1"))
            try events.append(
                StoreEvent(time: Timestamp(milliseconds: 2), kind: .normal, resource: elsewhere, reason: "Created", message: "m2"))
            try events.append(
                StoreEvent(time: Timestamp(milliseconds: 3), kind: .warning, resource: nil, reason: "SourceFailed", message: "m3"))
            try events.append(
                StoreEvent(time: Timestamp(milliseconds: 4), kind: .normal, resource: writer, reason: "Updated", message: "m4"))
        }
        let mine = try store.read { s throws(StoreError) in try s.events(for: writer, limit: 10) }
        #expect(mine.map(\.reason) == ["Updated", "Created"])
        #expect(mine.map(\.number) == [4, 1])
        #expect(
            mine.first
                == StoreEvent(
                    number: 4, time: Timestamp(milliseconds: 4), kind: .normal, resource: writer, reason: "Updated", message: "m4"))
        let all = try store.read { s throws(StoreError) in try s.events(for: nil, limit: 10) }
        #expect(all.map(\.message) == ["m4", "m3", "m2", "m1"])
        #expect(all[1].resource == nil && all[1].kind == .warning)
        #expect(try store.read { s throws(StoreError) in try s.events(for: nil, limit: 3) }.map(\.number) == [4, 3, 2])
        #expect(try store.read { s throws(StoreError) in try s.events(for: writer, limit: 1) }.map(\.number) == [4])
        // Events outlive their resource.
        try store.write { s throws(StoreError) in try s.delete(writer) }
        #expect(try store.read { s throws(StoreError) in try s.events(for: writer, limit: 10) }.count == 2)
    }

    // MARK: Status, supervision, holds

    @Test(arguments: Backend.available) func statusNeedsItsResourceAndGoesWithIt(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let status = ResourceStatus(
            conditions: [
                ResourceStatus.Condition(
                    type: "Ready", status: .true, reason: "Running", message: "pid 42", lastTransitionTime: Timestamp(milliseconds: 7))
            ], observedGeneration: 3, updatedAt: Timestamp(milliseconds: 9))
        try store.write { s throws(StoreError) in
            try s.put(stored(agent("writer")))
            try s.putStatus(status, for: agent("writer"))
        }
        #expect(try store.read { s throws(StoreError) in try s.status(for: agent("writer")) } == status)
        #expect(throws: StoreError.self) { try store.write { s throws(StoreError) in try s.putStatus(status, for: agent("ghost")) } }
        // Re-applying the resource keeps its status; deleting it deletes the status.
        try store.write { s throws(StoreError) in try s.put(stored(agent("writer"), generation: 2)) }
        #expect(try store.read { s throws(StoreError) in try s.status(for: agent("writer")) } == status)
        try store.write { s throws(StoreError) in try s.delete(agent("writer")) }
        try store.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
        #expect(try store.read { s throws(StoreError) in try s.status(for: agent("writer")) } == nil)
    }

    @Test(arguments: Backend.available) func supervisionRecordsRoundTripAndOutliveTheAgent(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let full = SupervisionRecord(
            agent: agent("writer"), process: ProcessIdentity(pid: 4242, startTime: 123_456_789), launchHash: "ab12", tokenDigest: "d1",
            startedAt: Timestamp(milliseconds: 1000), restarts: 3, crashes: 2, lastExit: .signaled(signal: 9),
            exitedAt: Timestamp(milliseconds: 2000))
        let empty = SupervisionRecord(agent: agent("reader", namespace: "team-a"))
        try store.write { s throws(StoreError) in
            try s.putSupervision(full)
            try s.putSupervision(empty)
        }
        #expect(try store.read { s throws(StoreError) in try s.supervision(for: agent("writer")) } == full)
        #expect(try store.read { s throws(StoreError) in try s.allSupervision() } == [full, empty])
        try store.write { s throws(StoreError) in
            try s.deleteSupervision(for: agent("writer"))
            try s.deleteSupervision(for: agent("never"))
        }
        #expect(try store.read { s throws(StoreError) in try s.allSupervision() } == [empty])
    }

    @Test(arguments: Backend.available) func holdsNeedTheAgentAndGoWithIt(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let hold = UserHold(agent: agent("writer"), at: Timestamp(milliseconds: 5), by: "alice")
        try store.write { s throws(StoreError) in
            try s.put(stored(agent("writer")))
            try s.putHold(hold)
        }
        #expect(try store.read { s throws(StoreError) in try s.holds() } == [hold])
        #expect(throws: StoreError.self) {
            try store.write { s throws(StoreError) in
                try s.putHold(UserHold(agent: agent("ghost"), at: Timestamp(milliseconds: 5), by: "a"))
            }
        }
        try store.write { s throws(StoreError) in try s.delete(agent("writer")) }
        #expect(try store.read { s throws(StoreError) in try s.holds() }.isEmpty)
    }

    // MARK: Ledger, vault, sources

    @Test(arguments: Backend.available) func theLedgerIsReadNewestFirstAndSummedPerAgent(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        func call(_ name: String, at time: Int64, usd: Double, run: String? = nil) -> LedgerEntry {
            LedgerEntry(
                time: Timestamp(milliseconds: time), agent: agent(name), model: "openai/gpt-4o",
                usage: TokenUsage(prompt: 100, completion: 20),
                usd: usd, latencyMilliseconds: 80, requestID: "req-\(time)", outcome: "ok", run: run, step: run.map { _ in "draft" })
        }
        try store.write { s throws(StoreError) in
            try s.append([
                call("writer", at: 10, usd: 0.25), call("reader", at: 20, usd: 0.5), call("writer", at: 30, usd: 0.125, run: "r1"),
            ])
        }
        let all = try store.read { s throws(StoreError) in try s.ledger(LedgerQuery()) }
        #expect(all.map(\.requestID) == ["req-30", "req-20", "req-10"])
        #expect(all.map(\.number) == [3, 2, 1])
        var expected = call("writer", at: 30, usd: 0.125, run: "r1")
        expected.number = 3
        #expect(all.first == expected)
        #expect(try store.read { s throws(StoreError) in try s.ledger(LedgerQuery(agent: agent("writer"), limit: 10)) }.count == 2)
        #expect(
            try store.read { s throws(StoreError) in try s.ledger(LedgerQuery(since: Timestamp(milliseconds: 15), limit: 1)) }.count == 1)
        let spend = try store.read { s throws(StoreError) in try s.spend(since: Timestamp(milliseconds: 0)) }
        #expect(spend[agent("writer")] == Charge(usd: 0.375, tokens: 240))
        #expect(spend[agent("reader")] == Charge(usd: 0.5, tokens: 120))
    }

    @Test(arguments: Backend.available) func sealedSecretsRoundTripEveryByte(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let box = (0...255).map { UInt8($0) } + [0, 0]
        let secret = SealedSecret(
            id: SecretID(name: "api-key"), box: box, keyCheck: "kc", size: 12, updatedAt: Timestamp(milliseconds: 3), updatedBy: "alice")
        let other = SealedSecret(
            id: SecretID(namespace: "team-a", name: "token"), box: [], keyCheck: "kc", size: 0, updatedAt: Timestamp(milliseconds: 4),
            updatedBy: "bob")
        try store.write { s throws(StoreError) in
            try s.putSecret(secret)
            try s.putSecret(other)
        }
        #expect(try store.read { s throws(StoreError) in try s.secrets(namespace: nil) } == [secret, other])
        #expect(try store.read { s throws(StoreError) in try s.secrets(namespace: "team-a") } == [other])
        try store.write { s throws(StoreError) in try s.deleteSecret(secret.id) }
        #expect(try store.read { s throws(StoreError) in try s.secrets(namespace: nil) } == [other])
    }

    @Test(arguments: Backend.available) func sourcesRoundTripAndReplace(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let fleet = SourceRecord(
            name: "fleet", url: "https://git.example/fleet.git", ref: "main", path: "deploy", suspendedAt: Timestamp(milliseconds: 1),
            suspendedBy: "alice", lastApplied: "abc", lastAppliedAt: Timestamp(milliseconds: 2), lastAttempted: "def",
            lastAttemptedAt: Timestamp(milliseconds: 3), result: .failed, message: "fetch failed", failures: 2)
        let bare = SourceRecord(name: "another", url: "/srv/git/another")
        try store.write { s throws(StoreError) in
            try s.putSource(fleet)
            try s.putSource(bare)
        }
        #expect(try store.read { s throws(StoreError) in try s.sources() } == [bare, fleet])
        #expect(try store.read { s throws(StoreError) in try s.source(named: "fleet") } == fleet)
        #expect(try store.read { s throws(StoreError) in try s.source(named: "none") } == nil)
        var applied = fleet
        applied.result = .applied
        applied.failures = 0
        try store.write { s throws(StoreError) in try s.putSource(applied) }
        #expect(try store.read { s throws(StoreError) in try s.source(named: "fleet") } == applied)
    }

    // MARK: Transactions

    @Test(arguments: Backend.available) func anErrorInsideWriteRollsBackEverything(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        try store.write { s throws(StoreError) in try s.put(stored(agent("kept"))) }
        #expect(throws: StoreError.self) {
            try store.write { writer throws(StoreError) in
                try writer.put(stored(agent("added")))
                try writer.put(stored(agent("kept"), generation: 9))
                try writer.delete(agent("kept"))
                _ = try writer.record(apply("a"))
                try writer.append(StoreEvent(time: Timestamp(milliseconds: 1), kind: .normal, resource: nil, reason: "R", message: "m"))
                throw StoreError("the plan changed under us")
            }
        }
        try store.read { reader throws(StoreError) in
            #expect(try reader.resources(kind: nil, namespace: nil) == [stored(agent("kept"))])
            #expect(try reader.history(limit: 10).isEmpty)
            #expect(try reader.events(for: nil, limit: 10).isEmpty)
        }
        // No transaction was left open: the next write works, and other connections see it.
        try store.write { s throws(StoreError) in try s.put(stored(agent("after"))) }
        #expect(
            try state.open().read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name) == [
                "after", "kept",
            ])
    }

    @Test(arguments: Backend.available) func theThrownErrorIsTheBodysOwn(_ backend: Backend) throws {
        let store = try TestState(backend).open()
        do throws(StoreError) {
            try store.write { _ throws(StoreError) in throw StoreError("mine") }
            Issue.record("write did not throw")
        } catch {
            #expect(error.message == "mine")
        }
    }

    @Test(arguments: Backend.available) func aReaderKeptPastItsBodyRefusesToRun(_ backend: Backend) throws {
        let store = try TestState(backend).open()
        let escaped = try store.write { $0 }
        #expect(throws: StoreError.self) { try escaped.put(stored(agent("late"))) }
        #expect(throws: StoreError.self) { try escaped.resource(agent("late")) }
    }

    @Test(arguments: Backend.available) func writingInsideAReadIsRefused(_ backend: Backend) throws {
        let store = try TestState(backend).open()
        #expect(throws: StoreError.self) {
            try store.read { reader throws(StoreError) in
                guard let writer = reader as? any StateWriter else { return }
                try writer.put(stored(agent("sneaky")))
            }
        }
        #expect(try store.read { s throws(StoreError) in try s.resource(agent("sneaky")) } == nil)
    }

    @Test(arguments: Backend.available) func aReadSeesOneSnapshot(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.open()
        let other = try state.open()
        try store.write { s throws(StoreError) in try s.put(stored(agent("a"))) }
        let (before, after) = try store.read { reader throws(StoreError) in
            let before = try reader.resources(kind: nil, namespace: nil).count
            // Another connection commits in the middle of the read.
            try other.write { s throws(StoreError) in try s.put(stored(agent("b"))) }
            return (before, try reader.resources(kind: nil, namespace: nil).count)
        }
        #expect(before == 1 && after == 1)
        #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.count == 2)
    }

    /// Writers on separate connections (as separate processes are) each read a generation
    /// and write it plus one: none may read a value another is about to replace, so no
    /// increment is lost, and the history's numbers are dense and in commit order.
    @Test(arguments: Backend.available) func concurrentWritersNeverLoseAnUpdate(_ backend: Backend) throws {
        let state = try TestState(backend)
        try state.open().write { s throws(StoreError) in try s.put(stored(agent("counter"), generation: 0)) }
        let writers = 4
        let rounds = 15
        let stores = try (0..<writers).map { _ in try state.open() }
        let failures = Failures()
        onThreads(
            stores.map { store in
                {
                    for _ in 0..<rounds {
                        do {
                            try store.write { s throws(StoreError) in
                                guard var counter = try s.resource(agent("counter")) else { throw StoreError("counter missing") }
                                counter.generation += 1
                                counter.resourceVersion += 1
                                try s.put(counter)
                                _ = try s.record(apply("g\(counter.generation)"))
                            }
                        } catch {
                            failures.record(error)
                        }
                    }
                }
            })
        #expect(failures.all.isEmpty)
        let reader = try state.open()
        #expect(try reader.read { s throws(StoreError) in try s.resource(agent("counter")) }?.generation == writers * rounds)
        let history = try reader.read { s throws(StoreError) in try s.history(limit: 1000) }
        #expect(history.map(\.number) == Array((1...(writers * rounds)).reversed()))
        #expect(history.map(\.source) == (1...(writers * rounds)).reversed().map { "g\($0)" })
    }
}

/// Errors raised on other threads, for the test to check afterwards.
final class Failures: Sendable {
    private let messages = Mutex<[String]>([])

    func record(_ error: any Error) { messages.withLock { $0.append("\(error)") } }

    var all: [String] { messages.withLock { $0 } }
}
