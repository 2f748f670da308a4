import Foundation
import OrlCore
import OrlPostgres
import OrlStore
import OrlTestPostgres
import Testing

/// `apply` against the index the last apply kept (unchanged files not read, the plan
/// taking the store for granted while nothing wrote to it) must do exactly what
/// `apply --full` does: the same output, exit status and stored resources, after any
/// sequence of edits on disk and of writes to the state behind the source's back.
/// Not serialized: each test (and each seed) has a directory and states of its own, and
/// its commands run in process, so the seeds' rounds go side by side.
@Suite struct IncrementalApplyTests {
    let work: TemporaryDirectory
    var fleet: URL { work.url.appendingPathComponent("fleet") }

    init() throws { work = try TemporaryDirectory() }

    struct Doc {
        var kind: Int  // 0 provider, 1 tool, 2 agent, 3 policy, 4 budget, 5 workflow
        var namespace: String
        var group: Int
        var target: Int
        var usd = 25
        /// Where it was generated: edits that break references mostly mend them later.
        var home = ""
    }

    static let namespaces = ["default", "team-a", "team-b"]
    static let names = ["provider", "tool", "agent", "policy", "budget", "workflow"]

    static func render(_ doc: Doc) -> String {
        let kind = ["ModelProvider", "Tool", "Agent", "Policy", "Budget", "Workflow"][doc.kind]
        var text = """
            apiVersion: orl.dev/v1
            kind: \(kind)
            metadata:
              name: \(names[doc.kind])-\(doc.group)
              namespace: \(doc.namespace)
              labels:
                team: t\(doc.group % 2)
            spec:

            """
        switch doc.kind {
        case 0:
            text += """
                  apiStyle: openai
                  baseURL: https://llm-\(doc.group).example.com/v1
                  apiKeySecret: key-\(doc.group)
                  models:
                    - name: small
                      pricing: {input: 0.15, output: 0.60}

                """
        case 1:
            text += """
                  type: http
                  http:
                    url: https://tools.example.com/\(doc.group)
                  timeout: 30s
                  risk: low

                """
        case 2:
            text += """
                  model: provider-\(doc.target)/small
                  runtime:
                    command: python3
                    args: [agent.py]
                  tools: [tool-\(doc.target)]

                """
        case 3:
            text += """
                  appliesTo:
                    agents: [agent-\(doc.target)]
                  allow:
                    tools: [tool-\(doc.target)]
                    models: [provider-\(doc.target)/*]

                """
        case 4:
            text += """
                  appliesTo:
                    selector:
                      matchLabels:
                        team: t\(doc.target % 2)
                  limits:
                    - window: day
                      usd: \(doc.usd)
                  onExceeded: halt

                """
        default:
            text += """
                  steps:
                    - id: a
                      agent: agent-\(doc.target)
                    - id: b
                      agent: agent-\(doc.target)
                      dependsOn: [a]

                """
        }
        return text
    }

    struct Generator {
        var state: UInt64
        mutating func below(_ n: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(n))
        }
    }

    func write(_ path: String, _ docs: [Doc], comment: String = "") throws {
        let url = fleet.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try (comment + docs.map(Self.render).joined(separator: "---\n")).write(to: url, atomically: false, encoding: .utf8)
    }

    /// The states by name: a directory of the work directory, or a PostgreSQL database.
    func location(_ state: String, _ postgres: [String: String]) -> String {
        postgres[state] ?? work.url.appendingPathComponent(state).path
    }

    func run(_ arguments: [String], state: String, postgres: [String: String] = [:]) async throws -> Orlctl.Result {
        try await Orlctl.call(
            arguments + ["--state", location(state, postgres)], in: work.url, environment: ["ORL_NO_CONTROLLER": "1"])
    }

    /// Every stored resource as the store keeps it, less the times.
    func stored(_ state: String, postgres: [String: String] = [:]) throws -> [String] {
        let store: any StateStore =
            if let url = postgres[state] { try PostgresStateStore(url: url) } else {
                try SQLiteStateStore(directory: work.url.appendingPathComponent(state).path)
            }
        return try store.read { reader throws(StoreError) in
            try reader.resources(kind: nil, namespace: nil).map {
                "\($0.id) \($0.source) \($0.generation) \($0.resourceVersion) \($0.file):\($0.line) \($0.codeRoot ?? "-")\n\($0.manifest)"
            }
        }
    }

    /// The manifest index the state holds for the fleet, less when each stamp was taken
    /// and the memo (the store's change mark): what an apply that reads everything writes.
    func index(_ state: String, postgres: [String: String] = [:]) throws -> StoredManifestIndex? {
        let store: any StateStore =
            if let url = postgres[state] { try PostgresStateStore(url: url) } else {
                try SQLiteStateStore(directory: work.url.appendingPathComponent(state).path)
            }
        let source = "files:" + fleet.standardizedFileURL.resolvingSymlinksInPath().path
        guard var index = try store.read({ reader throws(StoreError) in try StoredManifestIndex.read(source: source, reader) })?.index
        else { return nil }
        index.memo = nil
        for i in index.files.indices { index.files[i].stampedAt = 0 }
        return index
    }

    @Test(arguments: [11, 12] as [UInt64])
    func incrementalApplyEqualsFullApply(seed: UInt64) async throws {
        try await incrementalApplyEqualsFullApply(seed: seed, postgres: [:])
    }

    /// The same on PostgreSQL, whose index and kept resources are written in chunks too.
    @Test(.enabled(if: PostgresCluster.unavailable == nil, "PostgreSQL is not installed; run scripts/install-deps"))
    func incrementalApplyEqualsFullApplyOnPostgres() async throws {
        let cluster = try PostgresCluster.shared()
        try await incrementalApplyEqualsFullApply(
            seed: 13, postgres: ["incremental": try cluster.database("incremental"), "full": try cluster.database("full")])
    }

    func incrementalApplyEqualsFullApply(seed: UInt64, postgres: [String: String]) async throws {
        var g = Generator(state: seed)
        var files: [String: [Doc]] = [:]
        for i in 0..<30 {
            let namespace = Self.namespaces[(i / 6) % 3]
            let doc = Doc(kind: i % 6, namespace: namespace, group: i / 6 % 4, target: i / 6 % 4, home: namespace)
            files["\(doc.namespace)/\(Self.names[doc.kind])-\(i).yaml"] = [doc]
        }
        for (path, docs) in files { try write(path, docs) }
        var serial = 0
        var applied = 0
        for round in 0..<24 {
            if round > 0 {
                let paths = files.keys.sorted()
                let path = paths[g.below(paths.count)]
                switch g.below(9) {
                case 0:
                    files[path]![0].usd = 10 + g.below(90)
                    try write(path, files[path]!)
                case 1:
                    // A Budget's selector may match nothing (a warning); other references mend.
                    files[path]![0].target = files[path]![0].kind == 4 ? g.below(5) : files[path]![0].group
                    try write(path, files[path]!)
                case 2:
                    // What nothing refers to: a Budget, a Workflow, an added file.
                    if [4, 5].contains(files[path]![0].kind) || path.contains("/new-") {
                        files[path] = nil
                        try FileManager.default.removeItem(at: fleet.appendingPathComponent(path))
                    }
                case 3:
                    serial += 1
                    let namespace = Self.namespaces[g.below(3)]
                    let doc = Doc(
                        kind: [0, 1, 4][g.below(3)], namespace: namespace, group: 10 + serial, target: g.below(4), home: namespace)
                    let added = "\(doc.namespace)/new-\(serial).yaml"
                    files[added] = [doc]
                    try write(added, [doc])
                case 4:
                    // The same bytes written again: new times, same hash.
                    try write(path, files[path]!)
                case 5:
                    serial += 1
                    try write(path, files[path]!, comment: "# edit \(serial)\n")
                case 6:
                    // A write to the state behind the source's back: the plan must see it.
                    let doc = files[path]![0]
                    let kind = ["ModelProvider", "Tool", "Agent", "Policy", "Budget", "Workflow"][doc.kind]
                    for state in ["incremental", "full"]
                    where postgres[state] != nil || FileManager.default.fileExists(atPath: work.url.appendingPathComponent(state).path) {
                        let deleted = try await run(
                            ["delete", "\(kind)/\(Self.names[doc.kind])-\(doc.group)", "-n", doc.namespace, "--ignore-not-found"],
                            state: state, postgres: postgres)
                        #expect(deleted.status == 0, "\(deleted.stderr)")
                    }
                case 7 where files[path]![0].kind == 4 || path.contains("/new-"):
                    files[path]![0].namespace = g.below(2) == 0 ? files[path]![0].home : Self.namespaces[g.below(3)]
                    try write(path, files[path]!)
                default:
                    break  // nothing changes
                }
            }
            let prune = g.below(3) == 0 ? ["--prune", "--max-deletions", "100"] : []
            let json = g.below(4) == 0 ? ["-o", "json"] : []
            let incremental = try await run(["apply", "-f", "fleet"] + prune + json, state: "incremental", postgres: postgres)
            let full = try await run(["apply", "-f", "fleet", "--full"] + prune + json, state: "full", postgres: postgres)
            #expect(incremental.status == full.status, "seed \(seed) round \(round)")
            #expect(incremental.stdout == full.stdout, "seed \(seed) round \(round)")
            #expect(incremental.stderr == full.stderr, "seed \(seed) round \(round)")
            if !postgres.isEmpty || FileManager.default.fileExists(atPath: work.url.appendingPathComponent("full/state.db").path) {
                #expect(try stored("incremental", postgres: postgres) == stored("full", postgres: postgres), "seed \(seed) round \(round)")
                // The index too, stamps included: a file read again is restamped, whichever
                // chunk holds it.
                if incremental.status == 0 {
                    let kept = try index("incremental", postgres: postgres)
                    let fromFull = try index("full", postgres: postgres)
                    #expect(kept != nil && kept == fromFull, "seed \(seed) round \(round)")
                }
            }
            if incremental.status == 0 {
                applied += 1
                // Applied again with nothing changed, it prints the warnings it kept beside the
                // index (not worked out again): they must be the ones of these files.
                let again = try await run(["apply", "-f", "fleet"] + prune, state: "incremental", postgres: postgres)
                let againFull = try await run(["apply", "-f", "fleet", "--full"] + prune, state: "full", postgres: postgres)
                #expect(again.status == 0 && againFull.status == 0, "seed \(seed) round \(round)")
                #expect(again.stdout.hasPrefix("No changes."), "seed \(seed) round \(round): \(again.stdout)")
                #expect(again.stdout == againFull.stdout, "seed \(seed) round \(round)")
                #expect(again.stderr == againFull.stderr, "seed \(seed) round \(round)")
                if json.isEmpty { #expect(again.stderr == full.stderr, "seed \(seed) round \(round)") }
            }
        }
        // The property says something only if most rounds applied.
        #expect(applied > 12, "only \(applied) rounds applied")
    }

    /// A file rewritten with the same size in the same clock tick as the apply that read
    /// it keeps its times on a coarse clock: its stamp must not vouch for it.
    @Test func aRewriteRightAfterAnApplyIsSeen() async throws {
        let doc = Doc(kind: 4, namespace: "default", group: 1, target: 1, usd: 25)
        try write("budget.yaml", [doc])
        try write("agent.yaml", [Doc(kind: 2, namespace: "default", group: 1, target: 1)])
        try write("provider.yaml", [Doc(kind: 0, namespace: "default", group: 1, target: 1)])
        try write("tool.yaml", [Doc(kind: 1, namespace: "default", group: 1, target: 1)])
        try write("policy.yaml", [Doc(kind: 3, namespace: "default", group: 1, target: 1)])
        let first = try await run(["apply", "-f", "fleet"], state: "s")
        #expect(first.status == 0, "\(first.stdout)\(first.stderr)")
        var changed = doc
        changed.usd = 26
        let url = fleet.appendingPathComponent("budget.yaml")
        let before = try FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as! Date
        try write("budget.yaml", [changed])
        // Same size, and the modification time put back: the change time still tells.
        try FileManager.default.setAttributes([.modificationDate: before], ofItemAtPath: url.path)
        let apply = try await run(["apply", "-f", "fleet"], state: "s")
        #expect(apply.stdout.contains("~ Budget/budget-1"), "\(apply.stdout)\(apply.stderr)")
        #expect(try await run(["apply", "-f", "fleet"], state: "s").stdout.hasPrefix("No changes."))
    }

    /// Enough files, in nested directories and through a link, for the walk to take their
    /// stamps in more runs of files than there are cores here: every stamp the index keeps is its
    /// own file's, and a file edited with the same size and modification time, one replaced
    /// by a rename or edited through a link is read again; one only touched is read and
    /// found unchanged. The same as `apply --full` at every step.
    @Test func theStampsOfManyFilesAreEachTheirOwn() async throws {
        try write("base.yaml", [0, 1, 2, 3].map { Doc(kind: $0, namespace: "default", group: 1, target: 1) })
        let directories = ["a", "b", "b/deep"]
        func path(_ i: Int) -> String { "\(directories[i % 3])/budget-\(i).yaml" }
        for i in 0..<1_100 { try write(path(i), [Doc(kind: 4, namespace: "default", group: i, target: 1)]) }
        let linked = work.url.appendingPathComponent("linked.yaml")
        try Self.render(Doc(kind: 4, namespace: "default", group: 5_000, target: 1)).write(to: linked, atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(
            atPath: fleet.appendingPathComponent("a/link.yaml").path, withDestinationPath: "../../linked.yaml")
        func apply(_ state: String) async throws -> Orlctl.Result {
            try await run(["apply", "-f", "fleet", "--source", "t"] + (state == "full" ? ["--full"] : []), state: state)
        }
        func bothApplied() async throws -> String {
            let (incremental, full) = (try await apply("s"), try await apply("full"))
            #expect(incremental.status == 0, "\(incremental.stdout)\(incremental.stderr)")
            #expect(incremental.stdout == full.stdout && incremental.stderr == full.stderr && incremental.status == full.status)
            return incremental.stdout
        }
        _ = try await bothApplied()
        #expect(try await bothApplied().hasPrefix("No changes."))

        let store = try SQLiteStateStore(directory: work.url.appendingPathComponent("s").path)
        let index = try #require(try store.read { reader throws(StoreError) in try StoredManifestIndex.read(source: "t", reader) }).index
        #expect(index.files.count == 1_102)
        for file in index.files {
            let own = try #require(statStamp(work.url.appendingPathComponent(file.path).path), "\(file.path)")
            #expect(file.stamp == own, "\(file.path)")
        }

        /// `text` written over `url` with the same size, its modification time put back.
        func sameSizeAndTime(_ url: URL, _ text: String, byRename: Bool = false) throws {
            let before = try FileManager.default.attributesOfItem(atPath: url.path)
            #expect(before[.size] as? Int == text.utf8.count)
            if byRename {
                let other = url.deletingLastPathComponent().appendingPathComponent(".next")
                try text.write(to: other, atomically: false, encoding: .utf8)
                try FileManager.default.setAttributes([.modificationDate: before[.modificationDate]!], ofItemAtPath: other.path)
                #expect(rename(other.path, url.path) == 0)
            } else {
                try text.write(to: url, atomically: false, encoding: .utf8)
                try FileManager.default.setAttributes([.modificationDate: before[.modificationDate]!], ofItemAtPath: url.path)
            }
        }
        for i in [0, 299, 300, 599, 1_099] {
            try sameSizeAndTime(
                fleet.appendingPathComponent(path(i)), Self.render(Doc(kind: 4, namespace: "default", group: i, target: 1, usd: 26)))
        }
        try sameSizeAndTime(
            fleet.appendingPathComponent(path(451)), Self.render(Doc(kind: 4, namespace: "default", group: 451, target: 1, usd: 27)),
            byRename: true)
        try sameSizeAndTime(linked, Self.render(Doc(kind: 4, namespace: "default", group: 5_000, target: 1, usd: 28)))
        try write(path(100), [Doc(kind: 4, namespace: "default", group: 100, target: 1)])
        let changed = try await bothApplied()
        for i in [0, 299, 300, 599, 1_099, 451, 5_000] { #expect(changed.contains("~ Budget/budget-\(i) "), "\(i): \(changed)") }
        #expect(!changed.contains("Budget/budget-100 "), "\(changed)")
        #expect(try await bothApplied().hasPrefix("No changes."))
    }
}
