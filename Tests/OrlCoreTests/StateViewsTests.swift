import Foundation
import OrlCore
import OrlJSON
import OrlYAML
import Testing

/// What get, describe, delete, history and events build on: the YAML emitter, label
/// selectors, ages, kstatus defaults, the status port and deleting.
@Suite struct StateViewsTests {
    let t0 = Timestamp(milliseconds: 1_795_000_000_000)

    // MARK: YAML

    func roundTrip(_ value: JSONValue, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws -> String {
        let yaml = YAMLEmitter.emit(value)
        let parsed = YAMLParser().parse(yaml, file: "emitted.yaml")
        #expect(parsed.diagnostics.isEmpty, "\(parsed.diagnostics.map(\.message))\n\(yaml)", sourceLocation: sourceLocation)
        let root = try #require(parsed.documents.first?.root, sourceLocation: sourceLocation)
        let json = CanonicalJSON.encode(root)
        let expected = try JSONParser.parse(value.rendered(), file: "expected.json")
        #expect(root == expected, "\(yaml)\nread back as \(json)", sourceLocation: sourceLocation)
        return yaml
    }

    @Test func stringsThatLookLikeOtherTypesAreQuoted() throws {
        let tricky = [
            "true", "False", "NULL", "~", "", "null", "1", "-2", "+3", "0o17", "0x1F", "1.5", ".5", "1e3", "-1.5E-3", ".inf", "-.Inf",
            ".nan", "yes", "no", "on", "off", "y", "N", "<<", "- item", "-", "--root", "-v", ":", "key: value", "a #b", "a#b",
            "#comment", "&anchor", "*alias", "!tag", "|", ">", "'single'", "\"double\"", "%directive", "@at", "`tick`", "[x]", "{y}",
            ",comma", "? q", "?q", " leading", "trailing ", "trailing:", "---", "...", "--- x", "tab\there", "line\nbreak",
            "two\nlines\n", "keep\n\n", "  indented\nfirst", "a\n  b\nc", "blank\n\nline", "spaces\n  \nline", "cr\r\n", "bell\u{7}",
            "nel\u{85}", "ls\u{2028}", "bom\u{FEFF}", "é unicode ✓", "0 7 * * 1-5", "1Gi", "45s", "sim/gpt-4o", "1-5", "1.2.3", "0x",
            "0o8", "1e", "e3", "1_000",
        ]
        let value = JSONValue.object(
            [("list", .array(tricky.map { .string($0) }))] + tricky.map { ($0, JSONValue.string($0)) })
        let yaml = try roundTrip(value)
        #expect(yaml.contains("  - 1Gi\n") && yaml.contains("  - \"1\"\n") && yaml.contains("  - \"yes\"\n"))
        #expect(yaml.contains("  - --root\n") && yaml.contains("  - 0 7 * * 1-5\n") && yaml.contains("  - sim/gpt-4o\n"))
        #expect(yaml.contains("  - \"\"\n") && yaml.contains("  - \"true\"\n") && yaml.contains("\"<<\": \"<<\"\n"))
    }

    @Test func nestedShapesRoundTrip() throws {
        let value = JSONValue.object([
            ("int", .int(-42)),
            ("double", .double(0.5)),
            ("big", .double(1e21)),
            ("bool", .bool(false)),
            ("null", .null),
            ("empty", .object([])),
            ("none", .array([])),
            ("steps", .array([.object([("id", .string("a")), ("dependsOn", .array([.string("b")]))]), .object([])])),
            ("matrix", .array([.array([.int(1), .int(2)]), .array([]), .array([.array([.string("deep")])])])),
            ("prompt", .string("Line one\nline two\n")),
            ("nested", .object([("prompt", .object([("text", .string("x\ny"))]))])),
        ])
        let yaml = try roundTrip(value)
        #expect(yaml.contains("prompt: |\n  Line one\n  line two\n"))
        #expect(yaml.contains("steps:\n  - id: a\n    dependsOn:\n      - b\n  - {}\n"))
        #expect(yaml.contains("matrix:\n  - - 1\n    - 2\n  - []\n  - - - deep\n"))
        #expect(try roundTrip(.string("top")) == "top\n")
        #expect(try roundTrip(.array([])) == "[]\n")
    }

    @Test func theDemoFleetRoundTrips() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("manifests")
        let files = try #require(FileManager.default.enumerator(atPath: directory.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".yaml") }
        #expect(files.count > 5)
        for file in files {
            let text = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            for document in YAMLParser().parse(text, file: file).documents { _ = try roundTrip(JSONValue(document.root)) }
        }
    }

    // MARK: Selectors

    func selects(_ selector: String, _ labels: [String: String]) throws -> Bool {
        try LabelSelector(parsing: selector).matches(labels)
    }

    @Test func selectorsAsKubectlReadsThem() throws {
        let writer = ["team": "content", "role": "writing"]
        #expect(try selects("team=content", writer))
        #expect(try selects("team==content,role=writing", writer))
        #expect(try !selects("team=ops", writer))
        #expect(try selects("role!=research", writer))
        #expect(try selects("tier!=gold", writer), "!= holds when the label is absent")
        #expect(try selects("role in (writing, research)", writer))
        #expect(try !selects("role notin (writing)", writer))
        #expect(try selects("role notin (research),team", writer))
        #expect(try selects("!tier", writer) && !selects("!team", writer))
        #expect(try selects("", writer) && selects(" ", [:]))
        for bad in ["role in (", "role in ()", "role in writing", "=x", "team=con tent", "role between (a)", "a,,b", "a)", "!"] {
            #expect(throws: SelectorSyntaxError.self, "\(bad)") { try LabelSelector(parsing: bad) }
        }
    }

    @Test func referencesAndKinds() throws {
        #expect(try ResourceReference(parsing: "ag/writer") == ResourceReference(kind: .agent, name: "writer"))
        #expect(try ResourceReference(parsing: "Workflows/content-pipeline").kind == .workflow)
        #expect(try ResourceReference(parsing: "mp/sim").slashed == "modelprovider/sim")
        #expect(throws: ReferenceSyntaxError.self) { try ResourceReference(parsing: "writer") }
        #expect(throws: ReferenceSyntaxError.self) { try ResourceReference(parsing: "agent/") }
        do {
            _ = try ResourceReference(parsing: "agnets/x")
            Issue.record("agnets is no kind")
        } catch {
            #expect(error.message.contains("(did you mean \"agents\"?)"), "\(error.message)")
        }
    }

    // MARK: Ages and status

    @Test func agesAsKubectlPrintsThem() {
        func age(_ seconds: Int64) -> String { t0.age(at: Timestamp(milliseconds: t0.milliseconds + seconds * 1000)) }
        #expect(age(0) == "0s" && age(-1) == "0s" && age(-5) == "<invalid>")
        #expect(age(119) == "119s" && age(120) == "2m" && age(192) == "3m12s" && age(900) == "15m")
        #expect(age(3 * 3600) == "3h" && age(5 * 3600 + 180) == "5h3m" && age(20 * 3600) == "20h")
        #expect(age(3 * 86400 + 4 * 3600) == "3d4h" && age(40 * 86400) == "40d" && age(800 * 86400) == "2y70d")
        #expect(age(10 * 365 * 86400) == "10y")
        #expect(t0.rfc3339Seconds == "2026-11-18T11:06:40Z")
    }

    func stored(generation: Int) -> StoredResource {
        StoredResource(
            id: ResourceID(kind: "Agent", name: "writer"), manifest: "{}", specHash: "", generation: generation,
            resourceVersion: generation,
            source: "s", file: "a.yaml", line: 1, revision: nil, appliedAt: t0, appliedBy: "me")
    }

    @Test func withoutAControllerTheResourceIsReconciling() {
        let status = ResourceStatus.effective(for: stored(generation: 3), stored: nil)
        #expect(status.observedGeneration == nil)
        #expect(status.conditions.map(\.type) == ["Reconciling"] && status.conditions[0].status == .true)
        #expect(status.conditions[0].reason == "NotObserved")
        #expect(status.conditions[0].message == "no controller has observed generation 3 yet")
        #expect(status.summary(generation: 3) == "InProgress")

        let ready = ResourceStatus(
            conditions: [.init(type: "Ready", status: .true, reason: "Running", message: "pid 42")], observedGeneration: 2, updatedAt: t0)
        #expect(ResourceStatus.effective(for: stored(generation: 2), stored: ready) == ready)
        #expect(ready.summary(generation: 2) == "Current")
        let stale = ResourceStatus.effective(for: stored(generation: 3), stored: ready)
        #expect(stale.conditions.map(\.type) == ["Reconciling", "Ready"] && stale.observedGeneration == 2)
        #expect(stale.conditions[0].message.contains("generation 3") && stale.summary(generation: 3) == "InProgress")
        let stalled = ResourceStatus(
            conditions: [.init(type: "Stalled", status: .true, reason: "CrashLoop", message: "exited 5 times")], observedGeneration: 2,
            updatedAt: t0)
        #expect(stalled.summary(generation: 2) == "Failed")
    }

    @Test func statusGoesWithItsResource() throws {
        let store = InMemoryStateStore()
        let id = ResourceID(kind: "Agent", name: "writer")
        let status = ResourceStatus(conditions: [], observedGeneration: 1, updatedAt: t0)
        #expect(throws: StoreError.self) { try store.write { w throws(StoreError) in try w.putStatus(status, for: id) } }
        try store.write { w throws(StoreError) in
            try w.put(stored(generation: 1))
            try w.putStatus(status, for: id)
        }
        #expect(try store.read { r throws(StoreError) in try r.status(for: id) } == status)
        _ = try DeleteOperation.delete([id], from: store, by: "me", now: t0)
        #expect(try store.read { r throws(StoreError) in try r.status(for: id) } == nil)
    }

    // MARK: Delete

    @Test func deleteIsAllOrNothing() throws {
        let store = InMemoryStateStore()
        let writer = stored(generation: 1)
        var tool = stored(generation: 1)
        tool.id = ResourceID(kind: "Tool", name: "fetch")
        try store.write { w throws(StoreError) in
            try w.put(writer)
            try w.put(tool)
        }
        let ghost = ResourceID(kind: "Agent", name: "ghost")
        do {
            _ = try DeleteOperation.delete([writer.id, ghost], from: store, by: "me", now: t0)
            Issue.record("deleting a missing resource must fail")
        } catch {
            guard case .notFound(let missing) = error else { throw error }
            #expect(missing == [ghost])
        }
        #expect(store.snapshot.resources.count == 2 && store.snapshot.history.isEmpty && store.snapshot.events.isEmpty)

        let dry = try DeleteOperation.delete([writer.id], from: store, dryRun: true, by: "me", now: t0)
        #expect(dry.deleted.map(\.id) == [writer.id] && dry.historyNumber == nil && store.snapshot.resources.count == 2)

        let outcome = try DeleteOperation.delete(
            [writer.id, ghost, tool.id, writer.id], from: store, ignoreNotFound: true, by: "me", now: t0)
        #expect(outcome.deleted.map(\.id) == [writer.id, tool.id] && outcome.missing == [ghost] && outcome.historyNumber == 1)
        #expect(store.snapshot.resources.isEmpty)
        let record = try #require(store.snapshot.history.last)
        #expect(record.source == "delete" && record.summary == "Deleted: 2" && record.appliedBy == "me")
        #expect(try JSONParser.parse(record.plan, file: "plan")["changes"]?.elements?.count == 2)
        #expect(store.snapshot.events.map(\.reason) == ["Deleted", "Deleted"])

        let nothing = try DeleteOperation.delete([ghost], from: store, ignoreNotFound: true, by: "me", now: t0)
        #expect(nothing.deleted.isEmpty && nothing.historyNumber == nil && store.snapshot.history.count == 1)
    }
}
