import Foundation
import OrlCore
import OrlGit
import OrlJSON
import OrlManifests
import OrlStore
import Synchronization
import Testing

/// A git source's rounds read what changed only: the blobs of the files a commit changed,
/// the namespaces they touch, the index and kept resources the last round (or, after a
/// restart, the state) holds. They must end every round exactly where a full sync (every
/// blob parsed, every namespace checked, every stored hash compared) ends: the same
/// outcome, diagnostics, resources, events, history and source record, after any
/// sequence of commits: values, references broken and mended, files added, deleted and
/// renamed, resources moved between namespaces, duplicates, YAML errors, code changes,
/// force-pushes that rewrite history, and writes to the state behind the source's back.
/// `orlctl sync --once` must print what `orlctl sync --once --full` prints.
@Suite struct GitSyncIncrementalTests {
    typealias Doc = IncrementalApplyTests.Doc
    typealias Generator = IncrementalApplyTests.Generator

    struct File {
        var docs: [Doc]
        var comment = 0
        var yamlError = false
    }

    /// The time both sides see: one clock, moved a minute a round (failed revisions back
    /// off for two minutes, doubling).
    final class Clock: Sendable {
        let now = Mutex<Int64>(1_800_000_000_000)
        func advance() { now.withLock { $0 += 60_000 } }
        var timestamp: Timestamp { Timestamp(milliseconds: now.withLock { $0 }) }
    }

    /// An edit that breaks validation, made on top of whatever the files are.
    struct Breakage {
        var kind: Int
        var path: String
        var other: String
        var doc: Doc

        func apply(to files: [String: File]) -> [String: File] {
            var files = files
            let namespaces = IncrementalApplyTests.namespaces
            switch kind {
            case 0: files[path]?.docs[0].target = 7
            case 1: files[path]?.yamlError = true
            case 2: files[other]?.docs.append(doc)
            case 3: files[path] = nil
            default: files[path]?.docs[0].namespace = namespaces[(namespaces.firstIndex(of: doc.namespace)! + 1) % namespaces.count]
            }
            return files
        }
    }

    static func render(_ file: File) -> String {
        (file.comment > 0 ? "# edit \(file.comment)\n" : "") + file.docs.map(IncrementalApplyTests.render).joined(separator: "---\n")
            + (file.yamlError ? "oops: [unclosed\n" : "")
    }

    func sync(_ repo: GitFixture, state: String, clock: Clock, full: Bool) throws -> (GitSourceSync, SQLiteStateStore) {
        let store = try SQLiteStateStore(directory: state)
        let sync = GitSourceSync(
            configuration: GitSourceConfiguration(
                name: "fleet", url: repo.root.path, ref: "main", path: "fleet", prune: true, allowRewind: true, maxDeletions: 4,
                allowEmpty: false, auth: { .none }, appliedBy: "test", mirror: state + "/git/fleet.git",
                codeTrees: CodeTrees(directory: state + "/code/fleet"), full: full),
            store: store, clock: { clock.timestamp })
        return (sync, store)
    }

    /// What a round reported, less what only says how much was read.
    static func describe(_ report: SyncReport) -> String {
        var outcome: String
        switch report.outcome {
        case .suspended: outcome = "suspended"
        case .upToDate: outcome = "up to date"
        case .waiting(let until): outcome = "waiting until \(until.milliseconds)"
        case .applied(let applied): outcome = "applied #\(applied.applyNumber ?? 0) " + PlanJSON.render(applied.plan).rendered()
        case .invalid(let validation, let files):
            outcome = "invalid \(files) files, \(validation.resourceCount) resources, \(validation.diagnostics.count) diagnostics"
        case .refused(let message): outcome = "refused: \(message)"
        case .failed(let message): outcome = "failed: \(message)"
        case .unreachable(let message): outcome = "unreachable: \(message)"
        }
        return """
            \(outcome)
            head \(report.head?.hex ?? "-") previous \(report.previous ?? "-") files \(report.files) drift \(report.drift) \
            repeated \(report.repeated) recovered \(report.recovered ?? "-")
            record \(report.record.map { "\($0)" } ?? "-")
            """
    }

    static func diagnostics(_ report: SyncReport) -> [Diagnostic] {
        if case .invalid(let validation, _) = report.outcome { return validation.diagnostics }
        return []
    }

    /// Everything the state holds of the source, its resources, history and events, with
    /// the state's own directory masked (code roots are under it).
    static func dump(_ store: SQLiteStateStore, state: String) throws -> String {
        let text = try store.read { reader throws(StoreError) in
            let resources = try reader.resources(kind: nil, namespace: nil).map {
                "\($0.id) \($0.source) g\($0.generation) v\($0.resourceVersion) \($0.file):\($0.line) \($0.codeRoot ?? "-") "
                    + "\($0.revision ?? "-") \($0.appliedAt.milliseconds) \($0.appliedBy)\n\($0.manifest)"
            }
            let history = try reader.history(limit: 10_000).map {
                "#\($0.number) \($0.source) \($0.revision ?? "-") \($0.appliedAt.milliseconds) \($0.summary) \($0.result) \($0.plan)"
            }
            let events = try reader.events(for: nil, limit: 10_000).map {
                "\($0.time.milliseconds) \($0.kind) \($0.resource.map { "\($0)" } ?? "-") \($0.reason): \($0.message)"
            }
            let sources = try reader.sources().map { "\($0)" }
            return (resources + history + events + sources).joined(separator: "\n")
        }
        return text.replacingOccurrences(of: state, with: "<state>")
    }

    @Test(arguments: [21, 22, 23] as [UInt64])
    func incrementalRoundsEqualFullSyncs(seed: UInt64) async throws {
        var g = Generator(state: seed)
        let repo = try GitFixture()
        let clock = Clock()
        let namespaces = IncrementalApplyTests.namespaces
        let names = IncrementalApplyTests.names
        var files: [String: File] = [:]
        for i in 0..<30 {
            let namespace = namespaces[(i / 6) % 3]
            let doc = Doc(kind: i % 6, namespace: namespace, group: i / 6 % 4, target: i / 6 % 4, home: namespace)
            files["fleet/\(namespace)/\(names[doc.kind])-\(i).yaml"] = File(docs: [doc])
        }
        var code = 0
        // What breaks validation is an overlay on the files for a round or a few: most
        // breakages are mended at the next round, so that most rounds apply.
        var broken: Breakage?
        func writeTree() throws {
            let fleet = repo.root.appendingPathComponent("fleet")
            if FileManager.default.fileExists(atPath: fleet.path) { try FileManager.default.removeItem(at: fleet) }
            for (path, file) in broken.map({ $0.apply(to: files) }) ?? files { try repo.write(path, Self.render(file)) }
            try repo.write("src/agent.py", "print(\(code))\n")
        }
        try writeTree()
        var commits = [(sha: try repo.commit("first"), files: files, broken: broken, code: code)]

        let incrementalState = repo.directory.url.appendingPathComponent("incremental").path
        let fullState = repo.directory.url.appendingPathComponent("full").path
        var (incremental, incrementalStore) = try sync(repo, state: incrementalState, clock: clock, full: false)
        var serial = 0
        var applied = 0
        var invalid = 0
        var parsed = 0
        var read = 0
        var restarts = 0
        for round in 0..<30 {
            clock.advance()
            var commit = true
            if round > 0 {
                if g.below(4) != 0 { broken = nil }
                let paths = files.keys.sorted()
                let path = paths[g.below(paths.count)]
                let doc = files[path]!.docs[0]
                // Nothing refers to Budgets, Workflows and the files added here.
                let free = doc.kind == 4 || doc.kind == 5 || path.contains("/new-")
                switch g.below(16) {
                case 0:
                    files[path]!.docs[0].usd = 10 + g.below(90)
                case 1 where doc.kind == 4:
                    // A selector that may match nothing: a warning.
                    files[path]!.docs[0].target = g.below(5)
                case 2 where free:
                    files[path] = nil
                case 3:
                    serial += 1
                    let namespace = namespaces[g.below(3)]
                    let doc = Doc(
                        kind: [0, 1, 4][g.below(3)], namespace: namespace, group: 10 + serial, target: g.below(4), home: namespace)
                    files["fleet/\(namespace)/new-\(serial).yaml"] = File(docs: [doc])
                case 4:
                    // A rename, into another namespace's directory or not: same blob, new path.
                    serial += 1
                    files["fleet/\(namespaces[g.below(3)])/moved-\(serial).yaml"] = files[path]
                    files[path] = nil
                case 5:
                    files[path]!.comment += 1
                case 6:
                    // A write to the state behind the source's back, on both sides: the next
                    // round puts it back (drift) or the plan sees it.
                    let kind = ["ModelProvider", "Tool", "Agent", "Policy", "Budget", "Workflow"][doc.kind]
                    let id = ResourceID(kind: kind, namespace: doc.namespace, name: "\(names[doc.kind])-\(doc.group)")
                    for state in [incrementalState, fullState] {
                        let store = try SQLiteStateStore(directory: state)
                        try store.write { writer throws(StoreError) in
                            if try writer.resource(id) != nil { try writer.delete(id) }
                        }
                    }
                    commit = g.below(2) == 0
                case 7 where doc.kind == 4 || path.contains("/new-"):
                    // A move to another namespace: pruned there, added here.
                    files[path]!.docs[0].namespace = g.below(2) == 0 ? doc.home : namespaces[g.below(3)]
                case 8, 9, 10:
                    // What breaks validation: a reference to a group nothing defines, a YAML
                    // error, a duplicate, a resource others use deleted or moved away.
                    broken = Breakage(kind: g.below(5), path: path, other: paths[g.below(paths.count)], doc: doc)
                case 11 where commits.count > 2:
                    // A force-push: the branch goes back one or two commits (its files with it),
                    // and may move on from there.
                    let back = 1 + g.below(min(2, commits.count - 1))
                    commits.removeLast(back)
                    try repo.git("reset", "-q", "--hard", commits.last!.sha)
                    (files, broken, code) = (commits.last!.files, commits.last!.broken, commits.last!.code)
                    commit = g.below(2) == 0
                    if commit { files[files.keys.sorted()[0]]!.comment += 1 }
                case 12:
                    code += 1
                case 13:
                    commit = false  // a poll: the head did not move
                default:
                    files[path]!.docs[0].usd += 1
                }
                if commit {
                    try writeTree()
                    commits.append((try repo.commit("round \(round)"), files, broken, code))
                }
            }
            if round > 0, g.below(4) == 0 {
                // A restart: the first round of a new process reads the index the state keeps.
                (incremental, incrementalStore) = try sync(repo, state: incrementalState, clock: clock, full: false)
                restarts += 1
            }
            let retry = g.below(3) == 0
            let a = await incremental.round(retryFailed: retry)
            let (full, fullStore) = try sync(repo, state: fullState, clock: clock, full: true)
            let b = await full.round(retryFailed: retry)
            #expect(Self.describe(a) == Self.describe(b), "seed \(seed) round \(round)")
            #expect(Self.diagnostics(a) == Self.diagnostics(b), "seed \(seed) round \(round)")
            #expect(
                try Self.dump(incrementalStore, state: incrementalState) == Self.dump(fullStore, state: fullState),
                "seed \(seed) round \(round)")
            if case .applied = a.outcome { applied += 1 }
            if case .invalid = a.outcome { invalid += 1 }
            if a.files > 0 {
                parsed += a.parsed
                read += b.parsed
            }
        }
        // The property says something only if rounds applied, and read less than everything.
        #expect(applied > 12, "only \(applied) rounds applied")
        #expect(invalid > 2, "only \(invalid) rounds had errors")
        #expect(restarts > 3, "only \(restarts) restarts")
        #expect(parsed * 3 < read, "the incremental rounds parsed \(parsed) files, the full ones \(read)")
    }

    /// `sync --once` in a new process each time (the index the state keeps stands for the
    /// files a commit did not change) prints, exits and stores what `sync --once --full` does.
    @Test func syncOncePrintsWhatAFullSyncPrints() async throws {
        var g = Generator(state: 5)
        let repo = try GitFixture()
        let namespaces = IncrementalApplyTests.namespaces
        let names = IncrementalApplyTests.names
        var files: [String: File] = [:]
        for i in 0..<24 {
            let namespace = namespaces[(i / 6) % 3]
            let doc = Doc(kind: i % 6, namespace: namespace, group: i / 6 % 4, target: i / 6 % 4, home: namespace)
            files["fleet/\(namespace)/\(names[doc.kind])-\(i).yaml"] = File(docs: [doc])
        }
        func writeTree() throws {
            let fleet = repo.root.appendingPathComponent("fleet")
            if FileManager.default.fileExists(atPath: fleet.path) { try FileManager.default.removeItem(at: fleet) }
            for (path, file) in files { try repo.write(path, Self.render(file)) }
        }
        var outputs = Set<String>()
        for round in 0..<12 {
            if round > 0 {
                let paths = files.keys.sorted()
                let path = paths[g.below(paths.count)]
                switch g.below(5) {
                case 0: files[path]!.docs[0].usd = 10 + g.below(90)
                case 1: files[path]!.docs[0].target = g.below(5)
                case 2: files[path]!.yamlError.toggle()
                case 3: files[path]!.docs[0].namespace = namespaces[g.below(3)]
                default: files[path]!.comment += 1
                }
            }
            try writeTree()
            try repo.commit("round \(round)")
            for json in [false, true] {
                var results: [Orlctl.Result] = []
                for (state, full) in [("a", false), ("b", true)] {
                    let arguments =
                        [
                            "sync", "--once", "--repo", repo.root.path, "--path", "fleet", "--name", "fleet", "--prune",
                            "--max-deletions", "100", "--state", repo.directory.url.appendingPathComponent(state).path,
                        ] + (full ? ["--full"] : []) + (json ? ["-o", "json"] : [])
                    results.append(try await Orlctl.call(arguments, in: repo.directory.url))
                }
                #expect(results[0].status == results[1].status, "round \(round)")
                #expect(results[0].stdout == results[1].stdout, "round \(round)")
                #expect(results[0].stderr == results[1].stderr, "round \(round)")
                outputs.insert("\(results[0].status)")
            }
        }
        #expect(outputs.count > 1, "every round ended the same way: \(outputs)")
    }
}
