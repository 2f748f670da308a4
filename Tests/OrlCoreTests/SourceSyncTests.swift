import OrlCore
import OrlJSON
import Testing

@Suite struct SourceSyncTests {
    let t0 = Timestamp(milliseconds: 1_795_000_000_000)
    let a = String(repeating: "a", count: 40)
    let b = String(repeating: "b", count: 40)
    let c = String(repeating: "c", count: 40)

    func at(seconds: Int64) -> Timestamp { Timestamp(milliseconds: t0.milliseconds + seconds * 1000) }

    @Test func aNewSourceSyncsAndTheAppliedHeadIsUpToDate() {
        #expect(SourceSync.step(nil, head: a, now: t0) == .sync)
        let record = SourceRecord(name: "fleet", url: "/r", lastApplied: a, lastAttempted: a, result: .applied)
        #expect(SourceSync.step(record, head: a, now: t0) == .upToDate)
        #expect(SourceSync.step(record, head: b, now: t0) == .sync)
    }

    @Test func aFailedRevisionWaitsForItsBackoffButANewHeadIsTriedAtOnce() {
        let record = SourceRecord(name: "fleet", url: "/r", lastApplied: a, lastAttempted: a, result: .applied)
        let (failed, event) = SourceSync.failed(record, revision: b, result: .invalid, reason: "InvalidManifests", message: "bad", now: t0)
        #expect(failed.lastApplied == a, "the last good revision stays applied")
        #expect(failed.lastAttempted == b && failed.failures == 1 && failed.result == .invalid)
        #expect(event.kind == .warning && event.resource == SourceRecord.eventSubject("fleet"))
        // No hot loop: the same head is not tried again for two minutes.
        #expect(SourceSync.step(failed, head: b, now: at(seconds: 1)) == .retryLater(at: at(seconds: 120)))
        #expect(SourceSync.step(failed, head: b, now: at(seconds: 120)) == .sync)
        #expect(SourceSync.step(failed, head: c, now: at(seconds: 1)) == .sync, "a newer commit is picked up at once")
        // The backoff doubles with each failure of the same revision.
        let (again, _) = SourceSync.failed(
            failed, revision: b, result: .invalid, reason: "InvalidManifests", message: "bad", now: at(seconds: 120))
        #expect(again.failures == 2)
        #expect(SourceSync.step(again, head: b, now: at(seconds: 300)) == .retryLater(at: at(seconds: 360)))
        // A different revision failing starts over.
        let (other, _) = SourceSync.failed(again, revision: c, result: .failed, reason: "SyncFailed", message: "x", now: at(seconds: 400))
        #expect(other.failures == 1)
    }

    @Test func anUnreachableRemoteIsNotARevisionFailure() {
        let record = SourceRecord(name: "fleet", url: "/r", lastApplied: a, lastAttempted: a, result: .applied)
        let (next, event) = SourceSync.unreachable(record, message: "no", now: t0)
        #expect(next.lastAttempted == a && next.failures == 1 && next.result == .unreachable)
        #expect(event?.message == "Unreachable: no")
        #expect(SourceSync.step(next, head: a, now: t0) == .upToDate)
        #expect(SourceSync.step(next, head: b, now: t0) == .sync)
    }

    @Test func anOutageIsRecordedOnceAndItsEndToo() {
        let record = SourceRecord(name: "fleet", url: "/r", lastApplied: a, lastAttempted: a, result: .applied)
        var (down, event) = SourceSync.unreachable(record, message: "no", now: t0)
        #expect(event?.reason == "Unreachable")
        for round in 2...5 {
            (down, event) = SourceSync.unreachable(down, message: "still no", now: at(seconds: Int64(round * 30)))
            #expect(event == nil, "round \(round) records no new event")
            #expect(down.failures == round)
        }
        let (up, recovery) = try! #require(SourceSync.reachable(down, now: at(seconds: 200)))
        #expect(up.result == .applied && up.failures == 0)
        #expect(recovery.reason == "Reachable" && recovery.kind == .normal)
        #expect(recovery.message == "the remote is reachable again (it was not for 5 rounds)")
        #expect(SourceSync.reachable(up, now: at(seconds: 201)) == nil)
    }

    @Test func anUnreachableRemoteIsAskedLessAndLessOften() {
        let interval = Duration.seconds(30)
        #expect(SourceSync.unreachableDelay(failures: 1, interval: interval) == .seconds(30))
        #expect(SourceSync.unreachableDelay(failures: 2, interval: interval) == .seconds(60))
        #expect(SourceSync.unreachableDelay(failures: 4, interval: interval) == .seconds(240))
        #expect(SourceSync.unreachableDelay(failures: 5, interval: interval) == .seconds(300))
        #expect(SourceSync.unreachableDelay(failures: 100, interval: interval) == .seconds(300))
        // An interval longer than the cap is kept.
        #expect(SourceSync.unreachableDelay(failures: 3, interval: .seconds(900)) == .seconds(900))
    }

    @Test func aSuspendedSourceDoesNothing() {
        let record = SourceRecord(name: "fleet", url: "/r", suspendedAt: t0, suspendedBy: "me", lastApplied: a)
        #expect(SourceSync.step(record, head: b, now: t0) == .suspended)
    }

    @Test func aHeadBackAtTheAppliedRevisionSettlesTheStatus() {
        let record = SourceRecord(name: "fleet", url: "/r", lastApplied: a, lastAttempted: b, result: .invalid, failures: 3)
        let settled = SourceSync.settled(record, head: a, now: t0)
        #expect(settled?.result == .applied && settled?.lastAttempted == a && settled?.failures == 0)
        #expect(SourceSync.settled(settled!, head: a, now: t0) == nil)
    }

    @Test func applyRecordsTheSourceWithTheResourcesAndARefusalAppliesNothing() throws {
        let store = InMemoryStateStore()
        let report = validate(baseFleet)
        try #require(report.isValid)
        let record = SourceRecord(name: "fleet", url: "/r")
        let options = ApplyOptions(source: record.applySource, prune: true, revision: a, appliedBy: "t")
        let (result, next) = try SourceSync.apply(report.fleet, revision: a, record: record, options: options, to: store, now: t0)
        #expect(try result.get().plan.additions == 10)
        #expect(next.lastApplied == a && next.result == .applied)
        #expect(store.snapshot.sources["fleet"] == next)
        #expect(store.snapshot.resources.values.allSatisfy { $0.source == "git:fleet" && $0.revision == a })
        #expect(store.snapshot.events.last?.reason == "Synced")

        // Pruning everything is refused: nothing is deleted, the status says why.
        let empty = validate("")
        let (refused, after) = try SourceSync.apply(
            empty.fleet, revision: b, record: next, options: ApplyOptions(source: "git:fleet", prune: true, revision: b, appliedBy: "t"),
            to: store, now: t0)
        guard case .failure(.emptyDesiredSet) = refused else {
            Issue.record("expected a refusal, got \(refused)")
            return
        }
        #expect(after.result == .refused && after.lastApplied == a && after.lastAttempted == b)
        #expect(store.snapshot.resources.count == 10)
        #expect(store.snapshot.sources["fleet"]?.result == .refused)
    }

    @Test func defaultNamesComeFromTheRepository() {
        #expect(SourceRecord.defaultName(forURL: "/srv/git/Fleet.git") == "fleet")
        #expect(SourceRecord.defaultName(forURL: "git@github.com:acme/agents.git") == "agents")
        #expect(SourceRecord.defaultName(forURL: "https://example.com/acme/my repo/") == "my-repo")
        #expect(SourceRecord.defaultName(forURL: "/work/checkout/.git") == "checkout")
        #expect(SourceRecord.isValidName("fleet-1.prod"))
        #expect(!SourceRecord.isValidName("Fleet") && !SourceRecord.isValidName("a/b") && !SourceRecord.isValidName("-x"))
    }
}
