import OrlCore
import OrlJSON
import OrlYAML
import Testing

/// The incremental load (`IncrementalValidation`, the index an apply keeps) must always
/// give what reading and checking everything gives: the same diagnostics, resource count,
/// desired set, plan and index, after any sequence of edits. A seeded generator makes a
/// fleet over a few namespaces and edits it at random: values, references that break and
/// mend, files added, removed and split, resources moved between namespaces, duplicates,
/// schema and YAML errors, workflow cycles.
@Suite struct IncrementalValidationTests {
    struct Doc {
        var kind: Int  // 0 provider, 1 tool, 2 agent, 3 policy, 4 budget, 5 workflow
        var namespace: String
        var group: Int
        /// What it refers to: the group of the agent, tool or provider it names.
        var target: Int
        var usd = 25
        var schemaError = false
        var cycle = false
        /// A Policy's label selector (`team: tN`), besides the agent it names.
        var selector: Int?
    }

    struct File {
        var path: String
        var docs: [Doc]
        var yamlError = false
        var comment = 0
    }

    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static let namespaces = ["default", "team-a", "team-b", "team-c"]
    static let kindNames = ["provider", "tool", "agent", "policy", "budget", "workflow"]

    static func render(_ doc: Doc) -> String {
        let kind = ["ModelProvider", "Tool", "Agent", "Policy", "Budget", "Workflow"][doc.kind]
        var text = """
            apiVersion: orl.dev/v1
            kind: \(kind)
            metadata:
              name: \(kindNames[doc.kind])-\(doc.group)
              namespace: \(doc.namespace)
              labels:
                team: t\(doc.group % 3)
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
                  timeout: \(doc.schemaError ? "banana" : "30s")
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
                \(doc.selector.map { "    selector: {matchLabels: {team: t\($0)}}\n" } ?? "")\
                  allow:
                    tools: [tool-\(doc.target)]
                    models: [provider-\(doc.target)/*]

                """
        case 4:
            text += """
                  appliesTo:
                    selector:
                      matchLabels:
                        team: t\(doc.target % 3)
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
                      tools: [tool-\(doc.target)]
                  \(doc.cycle ? "    dependsOn: [b]" : "")
                    - id: b
                      agent: agent-\(doc.target)
                      dependsOn: [a]

                """
        }
        return text
    }

    static func render(_ file: File) -> String {
        (file.comment > 0 ? "# edit \(file.comment)\n" : "") + file.docs.map(render).joined(separator: "---\n")
            + (file.yamlError ? "oops: [unclosed\n" : "")
    }

    static func padded(_ n: Int) -> String { String(String(n + 1000).dropFirst()) }

    static func fleet(_ g: inout Generator) -> [File] {
        var files: [File] = []
        for i in 0..<40 {
            let doc = Doc(kind: i % 6, namespace: namespaces[(i / 6) % namespaces.count], group: i / 6 % 5, target: i / 6 % 5)
            files.append(File(path: "m/\(Self.padded(i)).yaml", docs: [doc]))
        }
        _ = g.next()
        return files
    }

    static func edit(_ files: inout [File], _ g: inout Generator, serial: inout Int) {
        guard !files.isEmpty else {
            files.append(File(path: "m/new-\(serial).yaml", docs: [Doc(kind: 0, namespace: "default", group: 0, target: 0)]))
            return
        }
        // A YAML error makes every load read everything; most are fixed at the next edit,
        // so that the incremental path is exercised on the rounds between.
        if g.below(4) != 0 { for i in files.indices { files[i].yamlError = false } }
        let f = g.below(files.count)
        let d = files[f].docs.isEmpty ? 0 : g.below(files[f].docs.count)
        switch g.below(12) {
        case 0: if !files[f].docs.isEmpty { files[f].docs[d].usd = 10 + g.below(90) }
        case 1: if !files[f].docs.isEmpty { files[f].docs[d].target = g.below(6) }
        case 2: files.remove(at: f)
        case 3:
            serial += 1
            let doc = Doc(kind: g.below(6), namespace: namespaces[g.below(namespaces.count)], group: g.below(6), target: g.below(6))
            files.insert(File(path: "m/\(Self.padded(g.below(50)))-\(serial).yaml", docs: [doc]), at: g.below(files.count + 1))
            files.sort { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
        case 4: if !files[f].docs.isEmpty { files[f].docs[d].namespace = namespaces[g.below(namespaces.count)] }
        case 5: if !files[f].docs.isEmpty { files[f].docs[d].schemaError.toggle() }
        case 6: files[f].yamlError = g.below(2) == 0
        case 7:
            // A duplicate, or a second document of another namespace in the same file.
            if !files[f].docs.isEmpty { files[g.below(files.count)].docs.append(files[f].docs[d]) }
        case 8: if !files[f].docs.isEmpty { files[f].docs[d].cycle.toggle() }
        case 9: if !files[f].docs.isEmpty { files[f].docs[d].group = g.below(6) }
        case 10: if files[f].docs.count > 1 { files[f].docs.remove(at: d) }
        default:
            // Nothing changes but a comment: same resources, new content hash.
            files[f].comment += 1
        }
    }

    static func read(_ files: [File], _ positions: [Int]) -> [ReadManifests] {
        let parser = YAMLParser()
        let reader = ManifestReader()
        return positions.map { i in
            var read = reader.read(parser.parse(render(files[i]), file: files[i].path))
            read.resources = read.resources.map { $0.withCanonicalForm() }
            return read
        }
    }

    static func planText(_ plan: Plan) -> String { PlanJSON.render(plan).rendered() }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func incrementalEqualsFull(seed: UInt64) throws {
        var g = Generator(state: seed)
        var files = Self.fleet(&g)
        var serial = 0
        var index: ManifestIndex?
        let store = InMemoryStateStore()
        let options = ApplyOptions(source: "test", prune: true, maxDeletions: .max, appliedBy: "test", codeRoot: "/src")
        var incrementalRuns = 0
        // What an apply keeps of each namespace (`ResourceSnapshot`), written as the loader
        // writes it: a second incremental run takes unchanged files from it.
        var snapshots: [String: [UInt8]] = [:]
        var keptIndex: ManifestIndex?
        var keptRuns = 0
        // The index as the loader holds it (files in order, desired positions), for the
        // by-position path of a re-apply whose files are the previous ones.
        var stored: StoredManifestIndex?
        var alignedRuns = 0
        for step in 0..<40 {
            if step > 0 { Self.edit(&files, &g, serial: &serial) }
            let strict = g.below(5) == 0
            let hashed = files.map { (path: $0.path, contentHash: CanonicalJSON.bytesHash(Array(Self.render($0).utf8))) }
            let current = files
            let incremental = IncrementalValidation.validate(files: hashed, previous: index, strict: strict) { Self.read(current, $0) }
            let all = Self.read(current, Array(current.indices))
            var merged = ReadManifests()
            for part in all { merged.append(part) }
            let full = ManifestValidation.validate(merged, strict: strict)
            let fullOutcome = IncrementalValidation.validate(files: hashed, previous: nil, strict: strict) { Self.read(current, $0) }

            let saved = snapshots
            let withKept = IncrementalValidation.validate(
                files: hashed, previous: keptIndex, strict: strict,
                kept: { namespaces in namespaces.flatMap { saved[$0].flatMap(ResourceSnapshot.decode) ?? [] } },
                read: { Self.read(current, $0) })
            #expect(withKept.report.diagnostics == full.diagnostics, "kept: seed \(seed) step \(step)")
            #expect(withKept.report.resourceCount == full.resourceCount, "kept: seed \(seed) step \(step)")
            #expect(withKept.desired == full.fleet.resources.map(DesiredResource.init), "kept: seed \(seed) step \(step)")
            #expect(withKept.index == fullOutcome.index, "kept: seed \(seed) step \(step)")
            #expect(Set(withKept.read.keys).isSubset(of: Set(incremental.read.keys)), "kept: seed \(seed) step \(step)")
            if withKept.parsed.count < incremental.parsed.count { keptRuns += 1 }
            if withKept.index != nil {
                for (namespace, resources) in withKept.checked { snapshots[namespace] = ResourceSnapshot.encode(resources) }
            }
            keptIndex = withKept.index

            if let previous = stored, previous.files.map(\.path) == hashed.map(\.path) {
                let changed = hashed.indices.filter { hashed[$0].contentHash != previous.files[$0].record.contentHash }
                if let aligned = IncrementalValidation.validate(
                    aligned: hashed, changed: changed, previous: previous, strict: strict,
                    kept: { namespaces in namespaces.flatMap { saved[$0].flatMap(ResourceSnapshot.decode) ?? [] } },
                    read: { Self.read(current, $0) })
                {
                    alignedRuns += 1
                    let outcome = aligned.outcome
                    #expect(outcome.report.diagnostics == full.diagnostics, "aligned: seed \(seed) step \(step)")
                    #expect(outcome.report.resourceCount == full.resourceCount, "aligned: seed \(seed) step \(step)")
                    #expect(outcome.desired == full.fleet.resources.map(DesiredResource.init), "aligned: seed \(seed) step \(step)")
                    #expect(aligned.next.index == fullOutcome.index, "aligned: seed \(seed) step \(step)")
                    #expect(aligned.next.desired == StoredManifestIndex.positions(of: outcome.desired, in: aligned.next.files))
                    #expect(aligned.settled == previous.settled(outcome.desired), "aligned: seed \(seed) step \(step)")
                    #expect(aligned.sameDesired == previous.desires(outcome.desired), "aligned: seed \(seed) step \(step)")
                    #expect(Set(outcome.read.keys) == Set(withKept.read.keys), "aligned: seed \(seed) step \(step)")
                    #expect(Set(outcome.checked.keys) == Set(withKept.checked.keys), "aligned: seed \(seed) step \(step)")
                }
            }
            stored = withKept.index.flatMap { index -> StoredManifestIndex? in
                let files = hashed.map { StoredManifestIndex.File(record: index.files[$0.path]!, stamp: nil, stampedAt: 0) }
                guard let positions = StoredManifestIndex.positions(of: withKept.desired, in: files) else { return nil }
                return StoredManifestIndex(files: files, namespaces: index.namespaces, desired: positions, memo: nil)
            }

            #expect(incremental.report.diagnostics == full.diagnostics, "seed \(seed) step \(step)")
            #expect(incremental.report.resourceCount == full.resourceCount, "seed \(seed) step \(step)")
            #expect(incremental.desired == full.fleet.resources.map(DesiredResource.init), "seed \(seed) step \(step)")
            #expect(incremental.index == fullOutcome.index, "seed \(seed) step \(step)")
            #expect(fullOutcome.report.diagnostics == full.diagnostics)
            if !incremental.full { incrementalRuns += 1 }

            // The plan from hashes equals the plan from the whole fleet.
            let fromHashes = try store.read { reader throws(StoreError) in
                try Planner.plan(
                    desired: incremental.desired,
                    resolve: { i throws(StoreError) in
                        let id = incremental.desired[i].id
                        if let resource = incremental.read[id] { return resource }
                        return full.fleet[id]!
                    }, actual: reader, options: options, now: Timestamp(milliseconds: Int64(step)))
            }
            let fromFleet = try store.read { reader throws(StoreError) in
                try Planner.plan(desired: full.fleet, actual: reader, options: options, now: Timestamp(milliseconds: Int64(step)))
            }
            #expect(Self.planText(fromHashes) == Self.planText(fromFleet), "seed \(seed) step \(step)")

            if full.isValid {
                _ = try ApplyOperation.apply(full.fleet, to: store, options: options, now: Timestamp(milliseconds: Int64(step)))
            }
            index = incremental.index
        }
        // The property says something only if most rounds took the incremental path.
        #expect(incrementalRuns > 12, "only \(incrementalRuns) incremental rounds")
        #expect(keptRuns > 8, "only \(keptRuns) rounds took unchanged files from the snapshots")
        #expect(alignedRuns > 8, "only \(alignedRuns) rounds took the by-position path")
    }

    /// Edits whose verdicts land on resources in other, unchanged files: the checks over
    /// kept resources give what reading everything gives, and only the changed file is parsed.
    @Test(arguments: ["policy", "tool", "budget", "workflow", "provider", "policySelector", "toolRename"])
    func changesThatMoveVerdictsElsewhereReadOnlyTheChangedFile(edit: String) {
        var g = Generator(state: 11)
        var files = Self.fleet(&g)
        func hashes() -> [(path: String, contentHash: String)] {
            files.map { (path: $0.path, contentHash: CanonicalJSON.bytesHash(Array(Self.render($0).utf8))) }
        }
        let first = IncrementalValidation.validate(files: hashes(), previous: nil, strict: false) { Self.read(files, $0) }
        var snapshots: [String: [UInt8]] = [:]
        for (namespace, resources) in first.checked { snapshots[namespace] = ResourceSnapshot.encode(resources) }
        #expect(Set(snapshots.keys) == Set(Self.namespaces))

        let kind = ["provider": 0, "tool": 1, "policy": 3, "budget": 4, "workflow": 5, "policySelector": 3, "toolRename": 1][edit]!
        let at = files.firstIndex { $0.docs[0].kind == kind && $0.docs[0].namespace == "team-a" }!
        var changedPaths = [files[at].path]
        switch edit {
        // The Policy now allows another tool and model: its agents' own tools and models break it.
        case "policy": files[at].docs[0].target += 1
        // The Tool goes away: the agent and the workflow that use it name nothing.
        case "tool": files.remove(at: at)
        // The Budget selects other labels.
        case "budget": files[at].docs[0].target += 1
        // The workflow runs another agent, with another tool.
        case "workflow": files[at].docs[0].target += 2
        // The Policy also selects agents by label: those of another label class than the
        // agent it names now have its rules (and their verdicts cite it).
        case "policySelector": files[at].docs[0].selector = (files[at].docs[0].target + 1) % 3
        // The Tool is renamed: the agent that declares it and the workflow step that uses
        // it name nothing.
        case "toolRename": files[at].docs[0].group += 3
        // The provider is renamed: agents' models name nothing.
        default: files[at].docs[0].group += 3
        }
        if edit == "tool" { changedPaths = [] }
        let saved = snapshots
        let changed = IncrementalValidation.validate(
            files: hashes(), previous: first.index, strict: false,
            kept: { namespaces in namespaces.flatMap { saved[$0].flatMap(ResourceSnapshot.decode) ?? [] } },
            read: { Self.read(files, $0) })
        let all = Self.read(files, Array(files.indices))
        var merged = ReadManifests()
        for part in all { merged.append(part) }
        let full = ManifestValidation.validate(merged)
        #expect(changed.parsed == changedPaths)
        #expect(!changed.full)
        #expect(changed.report.diagnostics == full.diagnostics)
        #expect(changed.report.diagnostics != first.report.diagnostics, "the edit changed no verdict")
        #expect(changed.desired == full.fleet.resources.map(DesiredResource.init))
        #expect(Set(changed.checked.keys) == ["team-a"])

        // By position, when the files are the previous ones (every edit but the removal).
        guard edit != "tool", let index = first.index else { return }
        let before = files.map { $0.path }
        let stored = StoredManifestIndex(
            files: before.map { StoredManifestIndex.File(record: index.files[$0]!, stamp: nil, stampedAt: 0) },
            namespaces: index.namespaces,
            desired: StoredManifestIndex.positions(
                of: first.desired,
                in: before.map {
                    StoredManifestIndex.File(record: index.files[$0]!, stamp: nil, stampedAt: 0)
                })!, memo: nil)
        let now = hashes()
        let aligned = IncrementalValidation.validate(
            aligned: now, changed: now.indices.filter { now[$0].contentHash != stored.files[$0].record.contentHash }, previous: stored,
            strict: false, kept: { namespaces in namespaces.flatMap { saved[$0].flatMap(ResourceSnapshot.decode) ?? [] } },
            read: { Self.read(files, $0) })
        #expect(aligned?.outcome.parsed == changedPaths)
        #expect(aligned?.outcome.report.diagnostics == full.diagnostics)
        #expect(aligned?.outcome.desired == full.fleet.resources.map(DesiredResource.init))
        #expect(aligned?.next.index == changed.index)
    }

    @Test func snapshotsRoundTripEveryNodeAndPosition() throws {
        let text = """
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: a, namespace: team-a, labels: {x: "1"}}
            spec:
              model: p/small
              runtime: {command: python3, args: [a.py, "--n", "0x10"]}
              tools: []
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: b}
            spec:
              appliesTo: {selector: {matchLabels: {x: "1"}}}
              limits: [{window: day, usd: 12.50}, {window: month, usd: 1e3}]
              onExceeded: halt

            """
        let read = ManifestReader().read(YAMLParser().parse(text, file: "dir/f.yaml"))
        #expect(read.resources.count == 2)
        let kept = read.resources.map { ResourceSnapshot.Kept(contentHash: "h", resource: $0) }
        let bytes = ResourceSnapshot.encode(kept)
        let back = try #require(ResourceSnapshot.decode(bytes))
        #expect(back.count == 2)
        for (a, b) in zip(read.resources, back.map(\.resource)) {
            #expect(a.id == b.id && a.file == b.file && a.documentIndex == b.documentIndex)
            #expect(a.canonical.text == b.canonical.text)
            #expect(Self.positions(a.document) == Self.positions(b.document))
        }
        for parts in 1...3 {
            let pieces = (0..<parts).map { ResourceSnapshot.decode(bytes, part: $0, of: parts) }
            #expect(pieces.allSatisfy { $0 != nil })
            // Typed apart: inside #expect this chain took half a second to type-check.
            let joined: [ResourceID] = pieces.flatMap { (piece: [ResourceSnapshot.Kept]?) in piece ?? [] }.map(\.resource.id)
            #expect(joined == back.map(\.resource.id))
        }
        #expect(ResourceSnapshot.decode(bytes, part: 2, of: 2) == nil)
        #expect(ResourceSnapshot.decode(Array(bytes.dropLast())) == nil)
        #expect(ResourceSnapshot.decode(bytes + [0]) == nil)
        #expect(ResourceSnapshot.decode(Array("orl-kept-0\n".utf8)) == nil)
    }

    /// What is kept of a namespace is written in chunks of whole files: a change to one
    /// file writes the head and that file's chunk, drops the chunk it replaced, and
    /// nothing kept drops every chunk.
    @Test func keptResourcesAreWrittenInChunksOfFiles() throws {
        let text = """
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: b, namespace: team-a}
            spec:
              appliesTo: {selector: {matchLabels: {x: "1"}}}
              limits: [{window: day, usd: 12.50}]
              onExceeded: halt

            """
        let kept = (0..<300).map { i in
            let resource = ManifestReader().read(YAMLParser().parse(text, file: "fleet/f\(i).yaml")).resources[0]
            return ResourceSnapshot.Kept(contentHash: "h\(i)", resource: resource)
        }
        let store = InMemoryStateStore()
        func chunks() throws -> [String] {
            let head = try #require(store.snapshot.manifestIndexes[ResourceSnapshot.key(source: "s", namespace: "team-a")])
            return try #require(ResourceSnapshot.decodeHead(head))
        }
        func back(_ hashes: [String]) throws -> [ResourceSnapshot.Kept] {
            try hashes.flatMap { hash in
                let key = ResourceSnapshot.chunkKey(source: "s", namespace: "team-a", hash: hash)
                let bytes = try #require(store.snapshot.manifestIndexes[key])
                return try #require(ResourceSnapshot.decode(bytes))
            }
        }
        try store.write { writer throws(StoreError) in try ResourceSnapshot.write(kept, source: "s", namespace: "team-a", writer) }
        let before = try chunks()
        #expect(before.count > 5)
        #expect(try back(before).map(\.resource.file) == kept.map(\.resource.file))
        var changed = kept
        changed[150].contentHash = "new"
        changed.remove(at: 40)
        try store.write { writer throws(StoreError) in try ResourceSnapshot.write(changed, source: "s", namespace: "team-a", writer) }
        let after = try chunks()
        #expect(Set(after).subtracting(before).count <= 2)
        #expect(try back(after).map(\.contentHash) == changed.map(\.contentHash))
        #expect(store.snapshot.manifestIndexes.count == 1 + Set(after).count)
        try store.write { writer throws(StoreError) in try ResourceSnapshot.write([], source: "s", namespace: "team-a", writer) }
        #expect(store.snapshot.manifestIndexes.isEmpty)
    }

    static func positions(_ node: Node) -> [String] {
        var out = ["\(node.location)"]
        switch node.value {
        case .array(let elements): for element in elements { out += positions(element) }
        case .object(let members):
            for member in members { out += ["\(member.key)@\(member.keyLocation)"] + positions(member.value) }
        case .number(let number): out.append("\(number.text)|\(number.double)|\(String(describing: number.integer))")
        default: break
        }
        return out
    }

    @Test func unchangedFilesAreNotReadAndOneChangeReadsItsNamespace() {
        var g = Generator(state: 42)
        var files = Self.fleet(&g)
        func hashes() -> [(path: String, contentHash: String)] {
            files.map { (path: $0.path, contentHash: CanonicalJSON.bytesHash(Array(Self.render($0).utf8))) }
        }
        let first = IncrementalValidation.validate(files: hashes(), previous: nil, strict: false) { Self.read(files, $0) }
        #expect(first.full && first.index != nil)
        let same = IncrementalValidation.validate(files: hashes(), previous: first.index, strict: false) { positions in
            Issue.record("read \(positions) though nothing changed")
            return Self.read(files, positions)
        }
        #expect(same.parsed.isEmpty && !same.full)
        #expect(same.report.diagnostics == first.report.diagnostics)

        let budget = files.firstIndex { $0.docs[0].kind == 4 && $0.docs[0].namespace == "team-a" }!
        files[budget].docs[0].usd = 99
        let changed = IncrementalValidation.validate(files: hashes(), previous: first.index, strict: false) { Self.read(files, $0) }
        let namespace = files.filter { $0.docs.contains { $0.namespace == "team-a" } }.map(\.path)
        #expect(Set(changed.parsed) == Set(namespace))
        #expect(changed.parsed.count < files.count / 2)
    }

    @Test func recordsAndDiagnosticsRoundTripThroughTheirStoredForm() throws {
        var g = Generator(state: 7)
        var files = Self.fleet(&g)
        files[3].docs[0].target = 9
        files[1].docs[0].schemaError = true
        files[5].docs.append(files[5].docs[0])
        let all = Self.read(files, Array(files.indices))
        var merged = ReadManifests()
        for part in all { merged.append(part) }
        let diagnostics = ManifestValidation.validate(merged).diagnostics
        #expect(!diagnostics.isEmpty)
        let stored = StoredManifestIndex(
            files: zip(files, all).enumerated().map { i, pair in
                StoredManifestIndex.File(
                    record: ManifestFileRecord(path: pair.0.path, contentHash: "h\(i)", read: pair.1),
                    stamp: i % 2 == 0 ? FileStamp(size: 700, mtime: -1, ctime: Int64.max, inode: 3, device: 4) : nil,
                    stampedAt: i % 2 == 0 ? Int64(i) : 0)
            },
            namespaces: ["team-a": diagnostics, "default": []], desired: [.init(file: 0, entry: 0), .init(file: 2, entry: 0)],
            memo: ApplyMemo(mark: "g:12", codeRoot: "/src", ownsExactly: true))
        #expect(stored.files.contains { !$0.record.diagnostics.isEmpty })
        let store = InMemoryStateStore()
        func held() throws -> StoredManifestIndex.Stored? {
            try store.read { reader throws(StoreError) in try StoredManifestIndex.read(source: "s", reader) }
        }
        try store.write { writer throws(StoreError) in try stored.write(source: "s", previous: nil, writer) }
        let first = try #require(try held())
        #expect(first.index == stored)
        #expect(first.chunks.reduce(0) { $0 + $1.count } == stored.files.count)
        var noMemo = stored
        noMemo.memo = nil
        try store.write { writer throws(StoreError) in try noMemo.write(source: "s", previous: first, writer) }
        let second = try #require(try held())
        #expect(second.index == noMemo)
        // Only the head changed: every chunk and every namespace's diagnostics are the ones
        // written before.
        #expect(second.chunks == first.chunks)
        #expect(second.diagnostics == first.diagnostics && first.diagnostics.count == 2)
        #expect(store.snapshot.manifestIndexes.count == 1 + Set(first.chunks.map(\.hash)).count + 2)
        // Anything else is not an index: the apply reads everything rather than trust it.
        let head = try #require(store.snapshot.manifestIndexes["s"])
        for broken in [Array(head.dropLast()), head + [0], Array("E\tAgent\tdefault\ta\th\t1\t0\n".utf8)] {
            try store.write { writer throws(StoreError) in try writer.putManifestIndex(source: "s", broken) }
            #expect(try held() == nil)
        }
        try store.write { writer throws(StoreError) in try writer.putManifestIndex(source: "s", head) }
        #expect(try held()?.index == noMemo)
        // A chunk missing or damaged: nothing is trusted either.
        let key = StoredManifestIndex.chunkKey(source: "s", hash: first.chunks[0].hash)
        let chunk = try #require(store.snapshot.manifestIndexes[key])
        try store.write { writer throws(StoreError) in try writer.putManifestIndex(source: "s", Array(chunk.dropLast())) }
        #expect(try held() == nil)
    }

    /// What a caller keeps of an index's report is found only for that index: the same
    /// chunks and namespaces' findings (the memo may change), in the caller's form. Another
    /// file's record or another namespace's findings find none, and the row kept for the
    /// replaced head is dropped; the namespaces' findings are decoded only when asked for.
    @Test func aKeptReportStandsOnlyForItsIndex() throws {
        var g = Generator(state: 7)
        var files = Self.fleet(&g)
        files[3].docs[0].target = 9
        files[1].docs[0].schemaError = true
        let all = Self.read(files, Array(files.indices))
        var merged = ReadManifests()
        for part in all { merged.append(part) }
        let diagnostics = ManifestValidation.validate(merged).diagnostics
        let index = StoredManifestIndex(
            files: zip(files, all).enumerated().map { i, pair in
                StoredManifestIndex.File(
                    record: ManifestFileRecord(path: pair.0.path, contentHash: "h\(i)", read: pair.1),
                    stamp: FileStamp(size: 700, mtime: 1, ctime: 1, inode: Int64(i), device: 4), stampedAt: 9)
            },
            namespaces: ["team-a": diagnostics, "default": []], desired: [.init(file: 0, entry: 0)],
            memo: ApplyMemo(mark: "g:12", codeRoot: "/src", ownsExactly: true))
        #expect(index.files.contains { !$0.record.diagnostics.isEmpty } && !diagnostics.isEmpty)
        let store = InMemoryStateStore()
        func held(_ form: String?) throws -> StoredManifestIndex.Stored {
            try #require(try store.read { reader throws(StoreError) in try StoredManifestIndex.read(source: "s", reader, report: form) })
        }
        func write(_ next: StoredManifestIndex, report: [UInt8]?) throws {
            let previous = try held(nil)
            try store.write { writer throws(StoreError) in
                let written = try next.write(source: "s", previous: previous, writer)
                if let report { try StoredManifestIndex.putReport(report, form: "f", source: "s", of: written, writer) }
            }
        }
        func reportRows() -> Int { store.snapshot.manifestIndexes.keys.count { $0.contains("\u{1}report\u{1}") } }
        try store.write { writer throws(StoreError) in
            let written = try index.write(source: "s", previous: nil, writer)
            try StoredManifestIndex.putReport(Array("first".utf8), form: "f", source: "s", of: written, writer)
        }
        let kept = try held("f")
        #expect(kept.report == Array("first".utf8))
        #expect(kept.diagnosticsPending && kept.index.namespaces.isEmpty)
        #expect(kept.decodingDiagnostics()?.index == index)
        // Another form, or none: no report, and the findings decoded.
        for form in ["g", nil] as [String?] {
            let other = try held(form)
            #expect(other.report == nil && !other.diagnosticsPending && other.index == index)
        }
        // Only the memo changed: the same report.
        var next = index
        next.memo = ApplyMemo(mark: "g:13", codeRoot: "/src", ownsExactly: true)
        try write(next, report: nil)
        #expect(try held("f").report == Array("first".utf8))
        #expect(reportRows() == 1)
        // A file's own findings changed: the kept report does not stand for it, and is dropped.
        var fileChanged = next
        fileChanged.files[1].record.diagnostics.removeAll()
        try write(fileChanged, report: nil)
        #expect(try held("f").report == nil)
        #expect(reportRows() == 0)
        try write(fileChanged, report: Array("second".utf8))
        #expect(try held("f").report == Array("second".utf8))
        // A namespace's findings changed, or a file's resources: the same.
        var namespaceChanged = fileChanged
        namespaceChanged.namespaces["team-a"]!.removeLast()
        try write(namespaceChanged, report: nil)
        #expect(try held("f").report == nil && reportRows() == 0)
        try write(namespaceChanged, report: Array("third".utf8))
        var entryChanged = namespaceChanged
        entryChanged.files[0].record.entries[0].manifestHash = "other"
        try write(entryChanged, report: nil)
        #expect(try held("f").report == nil && reportRows() == 0)
        try write(entryChanged, report: Array("fourth".utf8))
        #expect(try held("f").report == Array("fourth".utf8) && reportRows() == 1)
        try store.write { writer throws(StoreError) in try StoredManifestIndex.drop(source: "s", writer) }
        #expect(store.snapshot.manifestIndexes.isEmpty)
    }

    /// A write that is given the report of its index keeps it under the name the replaced
    /// head points to when the bytes are those kept (a value edited: no copy of the whole
    /// report), and under a name of its own otherwise; the head points to the one that
    /// stands for it, and the replaced one is dropped.
    @Test func aReportWithTheSameBytesIsNotWrittenAgain() throws {
        let files = (0..<300).map { stampedFile($0, path: "fleet/f\($0).yaml", hash: "h\($0)") }
        let store = InMemoryStateStore()
        func held(_ form: String? = "f") throws -> StoredManifestIndex.Stored {
            try #require(try store.read { reader throws(StoreError) in try StoredManifestIndex.read(source: "s", reader, report: form) })
        }
        func reportRows() -> [String: [UInt8]] { store.snapshot.manifestIndexes.filter { $0.key.contains("\u{1}report\u{1}") } }
        var index = StoredManifestIndex(files: files, namespaces: [:], desired: [], memo: nil)
        try store.write { writer throws(StoreError) in
            try index.write(source: "s", previous: nil, report: .rendered(form: "f", payload: Array("warnings".utf8)), writer)
        }
        let first = reportRows()
        #expect(first.count == 1)
        #expect(try held().report == Array("warnings".utf8))
        // A value edited: another chunk, the same report, the same row.
        for edit in 0..<3 {
            let previous = try held()
            index.files[100].record.contentHash = "edit \(edit)"
            let written = try store.write { writer throws(StoreError) in
                try index.write(
                    source: "s", previous: previous, dirty: [100], report: .rendered(form: "f", payload: Array("warnings".utf8)), writer)
            }
            #expect(written.chunks != previous.chunks, "edit \(edit)")
            #expect(reportRows() == first, "edit \(edit)")
            #expect(try held().report == Array("warnings".utf8), "edit \(edit)")
        }
        // Read in another form (or not read at all), the bytes are not known to be the same:
        // written again, under the new head's name.
        for (form, payload) in [("g", "other form"), (nil, "no form read")] as [(String?, String)] {
            let previous = try held(form)
            index.files[200].record.contentHash = payload
            try store.write { writer throws(StoreError) in
                try index.write(source: "s", previous: previous, report: .rendered(form: "f", payload: Array(payload.utf8)), writer)
            }
            #expect(reportRows().count == 1 && reportRows() != first, "\(payload)")
            #expect(try held().report == Array(payload.utf8), "\(payload)")
        }
        // Other bytes: another row, the replaced one dropped.
        let before = reportRows()
        let previous = try held()
        index.files[5].record.contentHash = "with a warning"
        try store.write { writer throws(StoreError) in
            try index.write(source: "s", previous: previous, report: .rendered(form: "f", payload: Array("more warnings".utf8)), writer)
        }
        #expect(reportRows().count == 1 && reportRows() != before)
        #expect(try held().report == Array("more warnings".utf8))
        // The same bytes, but the state's head is no longer the one read (an apply came in
        // between and kept none): not taken for kept.
        let stale = try held()
        index.files[6].record.contentHash = "in between"
        try store.write { writer throws(StoreError) in try index.write(source: "s", previous: stale, writer) }
        #expect(reportRows().isEmpty)
        #expect(try held().report == nil)
        index.files[7].record.contentHash = "after"
        _ = try store.write { writer throws(StoreError) in
            try index.write(source: "s", previous: stale, report: .rendered(form: "f", payload: Array("more warnings".utf8)), writer)
        }
        #expect(reportRows().count == 1)
        #expect(try held().report == Array("more warnings".utf8))
        try store.write { writer throws(StoreError) in try StoredManifestIndex.drop(source: "s", writer) }
        #expect(store.snapshot.manifestIndexes.isEmpty)
    }

    /// A write told which positions changed keeps the other chunks without comparing them:
    /// it must store what a write that compares every file stores.
    @Test func chunksKeptByPositionAreTheComparedOnes() throws {
        func file(_ i: Int, _ hash: String) -> StoredManifestIndex.File { stampedFile(i, path: "fleet/f\(i).yaml", hash: hash) }
        let index = StoredManifestIndex(files: (0..<1_200).map { file($0, "h\($0)") }, namespaces: [:], desired: [], memo: nil)
        for dirty in [[0], [1_199], [3, 700], [64, 65, 66, 900, 1_000], Array(0..<1_200)] {
            let store = InMemoryStateStore()
            let before = try store.write { writer throws(StoreError) in try index.write(source: "s", previous: nil, writer) }
            var changed = index
            for position in dirty {
                changed.files[position].record.contentHash = "new"
                changed.files[position].stamp = nil
                changed.files[position].stampedAt = 0
            }
            // A position said to change that did not: compared, and kept.
            let listed = dirty + [500]
            let expected = try InMemoryStateStore().write { writer throws(StoreError) in
                try changed.write(source: "s", previous: nil, writer)
            }
            let written = try store.write { writer throws(StoreError) in
                try changed.write(source: "s", previous: before, dirty: listed.sorted(), writer)
            }
            #expect(written.chunks == expected.chunks, "\(dirty.prefix(5))")
            #expect(store.snapshot.manifestIndexes.count == 1 + Set(written.chunks.map(\.hash)).count, "\(dirty.prefix(5))")
            let held = try store.read { reader throws(StoreError) in try StoredManifestIndex.read(source: "s", reader) }
            #expect(held?.index == changed, "\(dirty.prefix(5))")
        }
    }

    /// A change to one file of many rewrites the head and that file's chunk, and drops
    /// the chunk it replaced; dropping the index drops every chunk.
    @Test func aChangedFileRewritesItsChunkOnly() throws {
        let files = (0..<2_000).map { stampedFile($0, path: "fleet/f\($0).yaml", hash: "h\($0)") }
        let index = StoredManifestIndex(files: files, namespaces: [:], desired: [], memo: nil)
        let store = InMemoryStateStore()
        func held() throws -> StoredManifestIndex.Stored {
            try #require(try store.read { reader throws(StoreError) in try StoredManifestIndex.read(source: "s", reader) })
        }
        try store.write { writer throws(StoreError) in try index.write(source: "s", previous: nil, writer) }
        let before = try held()
        #expect(before.chunks.count > 10)
        #expect(store.snapshot.manifestIndexes.count == 1 + Set(before.chunks.map(\.hash)).count)
        var changed = index
        changed.files[1_000].record.contentHash = "new"
        changed.files.remove(at: 1_500)
        try store.write { writer throws(StoreError) in try changed.write(source: "s", previous: before, writer) }
        let after = try held()
        #expect(after.index == changed)
        #expect(Set(after.chunks.map(\.hash)).subtracting(before.chunks.map(\.hash)).count <= 2)
        #expect(store.snapshot.manifestIndexes.count == 1 + Set(after.chunks.map(\.hash)).count)
        try store.write { writer throws(StoreError) in try StoredManifestIndex.drop(source: "s", writer) }
        #expect(store.snapshot.manifestIndexes.isEmpty)
    }

    /// A re-apply over the same paths takes its chunks' bounds from the index it read
    /// instead of hashing every path again: they must be the bounds a write from nothing
    /// makes, and after a file is added or removed they are worked out again.
    @Test func chunkBoundsTakenFromTheIndexReadAreTheHashedOnes() throws {
        func file(_ i: Int, _ hash: String) -> StoredManifestIndex.File { stampedFile(i, path: "fleet/f\(i)-\u{E9}.yaml", hash: hash) }
        let index = StoredManifestIndex(files: (0..<1_500).map { file($0, "h\($0)") }, namespaces: [:], desired: [], memo: nil)
        let store = InMemoryStateStore()
        let before = try store.write { writer throws(StoreError) in try index.write(source: "s", previous: nil, writer) }
        #expect(before.chunks.count > 10)
        for edit in 0..<5 {
            var changed = index
            changed.files[700].record.contentHash = "new \(edit)"
            changed.files[3].stamp = nil
            changed.files[3].stampedAt = 0
            if edit == 1 { changed.files.remove(at: 900) }
            if edit == 2 { changed.files.insert(file(1_500, "added"), at: 10) }
            // As many files, other paths: other bounds.
            if edit == 3 { for i in changed.files.indices { changed.files[i].record.path = "moved/f\(i).yaml" } }
            // The same names to `==`, spelled with other bytes (decomposed): other bounds too.
            if edit == 4 { for i in changed.files.indices { changed.files[i].record.path = "fleet/f\(i)-e\u{301}.yaml" } }
            let expected = try InMemoryStateStore().write { writer throws(StoreError) in
                try changed.write(source: "s", previous: nil, writer)
            }
            let written = try store.write { writer throws(StoreError) in try changed.write(source: "s", previous: before, writer) }
            #expect(written.chunks == expected.chunks, "edit \(edit)")
            let held = try store.read { reader throws(StoreError) in try StoredManifestIndex.read(source: "s", reader) }
            #expect(held?.index == changed, "edit \(edit)")
        }
    }
}

/// An index's record of a file that defines nothing, stamped (inode `i`): what the index
/// writes' tests store by the thousand.
private func stampedFile(_ i: Int, path: String, hash: String) -> StoredManifestIndex.File {
    StoredManifestIndex.File(
        record: ManifestFileRecord(path: path, contentHash: hash, read: ReadManifests()),
        stamp: FileStamp(size: 10, mtime: 1, ctime: 1, inode: Int64(i), device: 1), stampedAt: 5)
}
