import Foundation
import OrlCore
import OrlGit
import OrlJSON
import OrlManifests
import OrlStore
import Synchronization
import Testing

/// The sync round in process, as a watcher runs it: what it reads and parses.
@Suite(.serialized) struct GitSourceSyncTests {
    func sync(_ repo: GitFixture, store: SQLiteStateStore, singleRound: Bool = false) -> GitSourceSync {
        GitSourceSync(
            configuration: GitSourceConfiguration(
                name: "fleet", url: repo.root.path, ref: "main", path: "fleet", prune: true, allowRewind: false, maxDeletions: 10,
                allowEmpty: false, auth: { .none }, appliedBy: "test", mirror: repo.state + "/git/fleet.git", singleRound: singleRound),
            store: store, clock: { Timestamp(milliseconds: Int64(Date().timeIntervalSince1970 * 1000)) })
    }

    /// The round parsed the one changed file of five, applied it as one update, and the
    /// source now records `commit` as applied.
    func expectOneFileApplied(
        _ report: SyncReport, commit: String, store: SQLiteStateStore, sourceLocation: Testing.SourceLocation = #_sourceLocation
    ) throws {
        #expect(report.files == 5 && report.parsed == 1, "only the changed file is parsed", sourceLocation: sourceLocation)
        guard case .applied(let outcome) = report.outcome else {
            Issue.record("expected applied, got \(report.outcome)", sourceLocation: sourceLocation)
            return
        }
        #expect(outcome.plan.updates == 1 && outcome.plan.unchanged.count == 4, sourceLocation: sourceLocation)
        let source = try store.read { reader throws(StoreError) in try reader.source(named: "fleet") }
        #expect(source?.lastApplied == commit, sourceLocation: sourceLocation)
    }

    /// `sync --once` makes one round (`singleRound`) and takes no fingerprint of the state
    /// for a round after it; rounds after it are right all the same. Its first round starts
    /// reading the index the state keeps before asking the remote: when the remote cannot
    /// be reached, the round after takes that read.
    @Test func aSingleRoundLeavesNothingOutThatARoundAfterItNeeds() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        let store = try SQLiteStateStore(directory: repo.state)
        #expect(await sync(repo, store: store).round(retryFailed: false).changed)
        try repo.write("fleet/budget.yaml", GitFleet.budget.replacingOccurrences(of: "usd: 5", with: "usd: 6"))
        let second = try repo.commit("second")

        let once = sync(repo, store: store, singleRound: true)
        let away = repo.directory.url.appendingPathComponent("away").path
        try FileManager.default.moveItem(atPath: repo.root.path, toPath: away)
        var report = await once.round(retryFailed: true)
        guard case .unreachable = report.outcome else {
            Issue.record("expected unreachable, got \(report.outcome)")
            return
        }
        try FileManager.default.moveItem(atPath: away, toPath: repo.root.path)
        report = await once.round(retryFailed: true)
        try expectOneFileApplied(report, commit: second, store: store)

        // Deleted behind the source's back: put back, though no fingerprint was taken.
        let budget = ResourceID(kind: "Budget", namespace: ResourceID.defaultNamespace, name: "daily")
        try store.write { writer throws(StoreError) in try writer.delete(budget) }
        report = await once.round(retryFailed: true)
        #expect(report.drift && report.changed)
        #expect(try store.read { reader throws(StoreError) in try reader.resource(budget) } != nil)
        report = await once.round(retryFailed: true)
        guard case .upToDate = report.outcome else {
            Issue.record("expected up to date, got \(report.outcome)")
            return
        }
        #expect(!report.drift)
    }

    @Test func unchangedBlobsAreNotParsedAgain() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        let store = try SQLiteStateStore(directory: repo.state)
        let sync = sync(repo, store: store)

        var report = await sync.round(retryFailed: false)
        #expect(report.files == 5 && report.parsed == 5)
        #expect(report.changed)

        report = await sync.round(retryFailed: false)
        guard case .upToDate = report.outcome else {
            Issue.record("expected up to date, got \(report.outcome)")
            return
        }
        #expect(report.files == 0, "a poll reads no tree")

        try repo.write("fleet/agent.yaml", GitFleet.agent("two"))
        let second = try repo.commit("second")
        report = await sync.round(retryFailed: false)
        #expect(report.head?.hex == second)
        try expectOneFileApplied(report, commit: second, store: store)
    }

    /// The first round of a new process (a restarted watch, `sync --once`) reads the index
    /// the state keeps: a one-file commit parses that file, and the plan takes the rest
    /// for granted while nothing else wrote to the state.
    @Test func aNewProcessParsesOnlyWhatChangedSinceTheLastApply() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        let store = try SQLiteStateStore(directory: repo.state)
        var report = await sync(repo, store: store).round(retryFailed: false)
        #expect(report.files == 5 && report.parsed == 5)

        try repo.write("fleet/budget.yaml", GitFleet.budget.replacingOccurrences(of: "usd: 5", with: "usd: 6"))
        let second = try repo.commit("second")
        report = await sync(repo, store: store).round(retryFailed: false)
        try expectOneFileApplied(report, commit: second, store: store)

        // A Policy that now forbids the agent's tool: the agent's file is not parsed, the
        // check sees it through what the state kept of its namespace.
        try repo.write("fleet/policy.yaml", GitFleet.policy(tools: ["other"]))
        try repo.commit("third")
        report = await sync(repo, store: store).round(retryFailed: false)
        #expect(report.parsed == 1)
        guard case .invalid(let validation, _) = report.outcome else {
            Issue.record("expected invalid, got \(report.outcome)")
            return
        }
        let other = repo.directory.url.appendingPathComponent("other").path
        let full = GitSourceSync(
            configuration: GitSourceConfiguration(
                name: "fleet", url: repo.root.path, ref: "main", path: "fleet", prune: true, allowRewind: false, maxDeletions: 10,
                allowEmpty: false, auth: { .none }, appliedBy: "test", mirror: other + "/git/fleet.git", full: true),
            store: try SQLiteStateStore(directory: other), clock: { Timestamp(milliseconds: 0) })
        let reference = await full.round(retryFailed: false)
        guard case .invalid(let expected, _) = reference.outcome else {
            Issue.record("expected invalid, got \(reference.outcome)")
            return
        }
        #expect(reference.parsed == 5)
        #expect(validation.diagnostics == expected.diagnostics)
        #expect(validation.diagnostics.contains { $0.resource?.kind == "Agent" }, "\(validation.diagnostics.map(\.message))")
    }

    /// A first load against the index the state keeps (a new process's round): what the
    /// state kept of the changed file's namespaces is read beside the parse and asked for
    /// once; a resource moved to another namespace asks again for both, and the result is a
    /// full read's. What the load found against that index (`againstStored`) is that
    /// index's own answer, which the plan's shortcut takes.
    @Test func aFirstLoadReadsWhatTheStateKeptBesideTheParse() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        let first = try GitObjectID(hex: repo.commit("first"))!
        let git = try GitRepository.open(repo.root.path)
        let loaded = try GitManifests().load(git, commit: first, under: "fleet")
        let stored = try #require(loaded.next)
        let kept = loaded.outcome.checked
        #expect(loaded.againstStored == nil)
        let asked = Mutex<[Set<String>]>([])
        let keptOf: @Sendable (Set<String>) -> [ResourceSnapshot.Kept] = { namespaces in
            asked.withLock { $0.append(namespaces) }
            return namespaces.sorted().flatMap { kept[$0] ?? [] }
        }

        try repo.write("fleet/budget.yaml", GitFleet.budget.replacingOccurrences(of: "usd: 5", with: "usd: 6"))
        let second = try GitObjectID(hex: repo.commit("second"))!
        let again = try GitManifests().load(git, commit: second, under: "fleet", stored: stored, kept: keptOf)
        #expect(asked.withLock { $0 } == [[ResourceID.defaultNamespace]])
        #expect(again.outcome.parsed == ["fleet/budget.yaml"] && !again.outcome.full)
        let against = try #require(again.againstStored)
        #expect(against.settled == stored.settled(again.desired))
        #expect(against.settled.filter { !$0 }.count == 1 && against.sameIdentities)
        let reference = try GitManifests().load(git, commit: second, under: "fleet", full: true)
        #expect(again.report.diagnostics == reference.report.diagnostics)
        #expect(again.desired == reference.desired)

        asked.withLock { $0 = [] }
        let movedBudget = GitFleet.budget.replacingOccurrences(of: "{name: daily}", with: "{name: daily, namespace: team}")
        try repo.write("fleet/budget.yaml", movedBudget)
        let third = try GitObjectID(hex: repo.commit("third"))!
        let moved = try GitManifests().load(git, commit: third, under: "fleet", stored: stored, kept: keptOf)
        #expect(asked.withLock { $0 } == [[ResourceID.defaultNamespace], [ResourceID.defaultNamespace, "team"]])
        let movedReference = try GitManifests().load(git, commit: third, under: "fleet", full: true)
        #expect(moved.report.diagnostics == movedReference.report.diagnostics)
        #expect(moved.desired == movedReference.desired)
        #expect(moved.againstStored?.sameIdentities == false)
        #expect(moved.againstStored.map { $0.settled == stored.settled(moved.desired) } ?? true)
    }

    @Test func theMirrorReadsTreesWithoutACheckout() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.write("fleet/.hidden/x.yaml", "not read")
        try repo.write("fleet/notes.txt", "not a manifest")
        let commit = try repo.commit("first")
        let mirror = try GitRepository.mirror(at: repo.directory.url.appendingPathComponent("mirror.git").path)
        let remote = try mirror.remoteRef(url: repo.root.path, ref: nil, auth: .none)
        #expect(remote.name == "refs/heads/main" && remote.commit.hex == commit)
        #expect(!mirror.hasCommit(remote.commit))
        #expect(try mirror.fetch(url: repo.root.path, ref: remote.name, auth: .none) == remote.commit)
        #expect(mirror.hasCommit(remote.commit))
        let files = try mirror.files(of: remote.commit, under: "./fleet/", extensions: ManifestParsing.extensions)
        #expect(
            files.map(\.path) == ["fleet/agent.yaml", "fleet/budget.yaml", "fleet/policy.yaml", "fleet/provider.yaml", "fleet/tool.yaml"])
        let blob = try mirror.blob(files[0].blob, maxBytes: 1 << 20)
        #expect(String(decoding: blob.bytes, as: UTF8.self) == GitFleet.agent())
        #expect(try mirror.blob(files[0].blob, maxBytes: 10).oversizedBy == GitFleet.agent().utf8.count)
        #expect(throws: GitError.self) { try mirror.files(of: remote.commit, under: "fleet/agent.yaml", extensions: [".yaml"]) }
    }

    /// The code tree's listing leaves out the manifests under the source's path as the walk
    /// meets them: the same files as the whole listing with the manifests dropped.
    @Test func theCodeListingLeavesTheManifestsUnderThePathOut() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        for (path, text) in [
            ("fleet/run.sh", "echo"), ("fleet/notes.txt", "notes"), ("fleet/sub/helper.py", "pass"), ("fleet/sub/more.yml", "a: 1"),
            ("fleet/caf\u{E9}.yaml", "b: 2"), ("fleet/\u{0600}.json", "{}"), ("fleet/yaml", "no dot"), ("tools/tool.yaml", "c: 3"),
            ("tools/x.py", "pass"), ("top.json", "{}"),
        ] {
            try repo.write(path, text)
        }
        let commit = try repo.commit("first")
        let mirror = try GitRepository.mirror(at: repo.directory.url.appendingPathComponent("mirror.git").path)
        let remote = try mirror.remoteRef(url: repo.root.path, ref: nil, auth: .none)
        #expect(try mirror.fetch(url: repo.root.path, ref: remote.name, auth: .none).hex == commit)
        let isManifest = { (file: String) in file.hasPrefix("fleet/") && ManifestParsing.extensions.contains { file.hasSuffix($0) } }
        for round in 0..<2 {
            let all = try mirror.files(of: remote.commit, under: nil, extensions: [""])
            let code = try mirror.files(
                of: remote.commit, under: nil, extensions: [""], excluding: ("./fleet/", ManifestParsing.extensions))
            #expect(code == all.filter { !isManifest($0.path) }, "round \(round)")
            #expect(
                code.map(\.path) == [
                    "README.md", "fleet/notes.txt", "fleet/run.sh", "fleet/sub/helper.py", "fleet/yaml", "fleet/\u{0600}.json",
                    "tools/tool.yaml", "tools/x.py",
                    "top.json",
                ], "round \(round)")
            #expect(all.count == code.count + 7)
            let everywhere = try mirror.files(of: remote.commit, under: nil, extensions: [""], excluding: (nil, [".yaml", ".json"]))
            #expect(everywhere == all.filter { !$0.path.hasSuffix(".yaml") && !$0.path.hasSuffix(".json") }, "round \(round)")
        }
    }
}
