import Foundation
import OrlCore
import OrlJSON
import OrlStore
import OrlYAML
import Testing

/// `get`, `describe`, `delete`, `history` and `events` run in process against a real
/// temporary state the demo fleet was applied to.
@Suite(.serialized) struct StateVerbsTests {
    let work: TemporaryDirectory
    var state: String { work.url.appendingPathComponent("state").path }
    var fleet: URL { work.url.appendingPathComponent("fleet") }

    init() throws {
        work = try TemporaryDirectory()
        try FileManager.default.copyItem(at: Orlctl.packageRoot.appendingPathComponent("manifests"), to: fleet)
    }

    func orlctl(_ arguments: [String]) async throws -> Orlctl.Result {
        try await Orlctl.call(arguments + ["--state", state], in: work.url)
    }

    func applied() async throws {
        let apply = try await orlctl(["apply", "-f", "fleet"])
        try #require(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
    }

    func edit(_ file: String, _ old: String, _ new: String) throws {
        let url = fleet.appendingPathComponent(file)
        let text = try String(contentsOf: url, encoding: .utf8)
        #expect(text.contains(old), "\(file) has no \(old)")
        try text.replacingOccurrences(of: old, with: new).write(to: url, atomically: true, encoding: .utf8)
    }

    /// AGE is the last column, which is not padded: replacing its value (`45s`, `3m12s`,
    /// however long the test waited for its turn) keeps every other column in place.
    func withoutAges(_ table: String) -> String {
        table.replacing(/(?m)  [0-9][0-9smhdy]*$/, with: "  Xs")
    }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    // MARK: get

    @Test func getTables() async throws {
        try await applied()
        let agents = try await orlctl(["get", "agents"])
        #expect(agents.status == 0, "\(agents.stderr)")
        try expectGolden(withoutAges(agents.stdout), "get-agents.txt")
        for spelling in ["agent", "Agent", "ag", "AGENTS"] {
            #expect(withoutAges(try await orlctl(["get", spelling]).stdout) == withoutAges(agents.stdout), "\(spelling)")
        }
        try expectGolden(withoutAges(try await orlctl(["get", "all"]).stdout), "get-all.txt")

        let all = try await orlctl(["get", "budgets", "-A"])
        #expect(all.stdout.hasPrefix("NAMESPACE  NAME          SCOPE     LIMITS"), "\(all.stdout)")
        #expect(all.stdout.contains("default    publisher     perAgent  day: $0.50, 200k tokens; month: $5, 2M tokens  halt"))

        let wide = try await orlctl(["get", "agent", "writer", "-o", "wide"])
        let lines = wide.stdout.split(separator: "\n")
        // AGE is as wide as its value (`9s` or `100s`).
        #expect(
            lines.first?.contains(#/GENERATION  PHASE  PID  RESTARTS  AGE +STARTED  LAST-EXIT  ISOLATION  SOURCE /#) == true
                && lines.first?.hasSuffix("  FILE") == true, "\(wide.stdout)")
        #expect(lines.count == 2 && lines[1].hasSuffix("fleet/agents/writer.yaml:2"), "\(wide.stdout)")
        #expect(lines[1].contains("files:/"))

        let names = try await orlctl(["get", "tools", "-o", "name"])
        #expect(
            names.stdout == "tool/fetch-page\ntool/notify-slack\ntool/publish-post\ntool/read-draft\ntool/web-search\ntool/write-draft\n")
        let slashed = try await orlctl(["get", "wf/content-pipeline", "mp/sim", "-o", "name"])
        #expect(slashed.stdout == "workflow/content-pipeline\nmodelprovider/sim\n")

        let elsewhere = try await orlctl(["get", "agents", "-n", "ops"])
        #expect(elsewhere.status == 0 && elsewhere.stdout.isEmpty && elsewhere.stderr == "No resources found in ops namespace.\n")
    }

    @Test func getJSONAndYAML() async throws {
        // A credential written inline must not be printed.
        try edit(
            "agents/researcher.yaml", "      - name: LOG_LEVEL\n",
            "      - name: SEARCH_API_KEY\n        value: abc123\n      - name: LOG_LEVEL\n")
        try await applied()
        let list = try json(try await orlctl(["get", "agents", "-o", "json"]).stdout)
        #expect(list["apiVersion"] as? String == "orl.dev/v1" && list["kind"] as? String == "List")
        let items = try #require(list["items"] as? [[String: Any]])
        #expect(items.count == 3)

        let single = try await orlctl(["get", "agent", "researcher", "-o", "json"])
        #expect(!single.stdout.contains("abc123") && single.stdout.contains("(sensitive)"))
        let researcher = try json(single.stdout)
        #expect(researcher["kind"] as? String == "Agent", "one named resource is printed as itself")
        let metadata = try #require(researcher["metadata"] as? [String: Any])
        #expect(metadata["name"] as? String == "researcher" && metadata["namespace"] as? String == "default")
        #expect(metadata["generation"] as? Int == 1 && metadata["resourceVersion"] as? String == "1")
        let annotations = try #require(metadata["annotations"] as? [String: String])
        #expect(annotations["orl.dev/owner"] == "content-platform@example.com")
        #expect(annotations["orl.dev/file"] == "fleet/agents/researcher.yaml:2")
        #expect(annotations["orl.dev/source"]?.hasPrefix("files:/") == true && annotations["orl.dev/applied-by"] != nil)
        #expect((metadata["labels"] as? [String: String]) == ["team": "content", "role": "research"])
        let spec = try #require(researcher["spec"] as? [String: Any])
        #expect(spec["model"] as? String == "sim/gpt-4o-mini" && spec["maxTokensPerCall"] as? Int == 4096)
        let status = try #require(researcher["status"] as? [String: Any])
        #expect(status["observedGeneration"] == nil)
        let conditions = try #require(status["conditions"] as? [[String: String]])
        #expect(conditions.count == 1)
        #expect(conditions.first?["type"] == "Reconciling" && conditions.first?["status"] == "True")
        #expect(conditions.first?["reason"] == "NotObserved")
        #expect(conditions.first?["message"] == "no controller has observed generation 1 yet")

        // YAML is the same document: what it prints parses back to the JSON's value.
        for arguments in [["get", "all"], ["get", "agent", "researcher"], ["get", "wf"]] {
            let yaml = try await orlctl(arguments + ["-o", "yaml"])
            let asJSON = try await orlctl(arguments + ["-o", "json"])
            #expect(yaml.status == 0 && !yaml.stdout.contains("abc123"))
            let parsed = YAMLParser().parse(yaml.stdout, file: "get.yaml")
            #expect(parsed.diagnostics.isEmpty, "\(parsed.diagnostics.map(\.message))")
            let root = try #require(parsed.documents.first?.root)
            #expect(root == (try JSONParser.parse(asJSON.stdout, file: "get.json")), "\(arguments)")
        }
        let yaml = try await orlctl(["get", "wf", "content-pipeline", "-o", "yaml"]).stdout
        #expect(yaml.hasPrefix("apiVersion: orl.dev/v1\nkind: Workflow\nmetadata:\n  name: content-pipeline\n"))
        #expect(yaml.contains("    - cron: 0 7 * * 1-5\n") && yaml.contains("  resourceVersion: \"1\"\n"))
        #expect(yaml.contains("      prompt: |\n        Research the given topic for the given audience."))
    }

    @Test func labelSelectors() async throws {
        try await applied()
        func names(_ selector: String, _ kind: String = "agents") async throws -> String {
            let result = try await orlctl(["get", kind, "-l", selector, "-o", "name"])
            #expect(result.status == 0, "\(selector): \(result.stderr)")
            return result.stdout
        }
        #expect(try await names("role=writing") == "agent/writer\n")
        #expect(try await names("role!=writing") == "agent/publisher\nagent/researcher\n")
        #expect(try await names("role in (writing, research),team") == "agent/researcher\nagent/writer\n")
        #expect(try await names("role notin (writing,research)") == "agent/publisher\n")
        #expect(try await names("team", "budgets") == "budget/content-team\nbudget/publisher\n")
        let none = try await orlctl(["get", "agents", "-l", "!team"])
        #expect(none.status == 0 && none.stdout.isEmpty && none.stderr.contains("No resources found"))
        for bad in ["role in (", "role in writing", "team=a b"] {
            let result = try await orlctl(["get", "agents", "-l", bad])
            #expect(result.status == 2, "\(bad)")
            #expect(result.stderr.contains("selector"), "\(bad): \(result.stderr)")
        }
        #expect(try await orlctl(["get", "agent", "writer", "-l", "team"]).status == 2)
    }

    @Test func notFound() async throws {
        try await applied()
        let typo = try await orlctl(["get", "agent", "wrtier"])
        #expect(typo.status == 1 && typo.stdout.isEmpty)
        #expect(typo.stderr == "orlctl: error: Agent \"wrtier\" not found in namespace \"default\" (did you mean \"writer\"?)\n")
        let partly = try await orlctl(["get", "agents", "writer", "ghost", "-o", "name"])
        #expect(partly.status == 1 && partly.stdout == "agent/writer\n", "found ones are still printed")
        let namespace = try await orlctl(["get", "agent/writer", "-n", "ops"])
        #expect(namespace.status == 1 && namespace.stderr.contains("it is in namespace \"default\" (use -n default)"))
        let kind = try await orlctl(["get", "agnets"])
        #expect(kind.status == 2 && kind.stderr.contains("unknown resource type \"agnets\" (did you mean \"agents\"?)"))
        #expect(try await orlctl(["describe", "agent/ghost"]).status == 1)
    }

    // MARK: describe

    @Test func describeSections() async throws {
        try await applied()
        let page = try await orlctl(["describe", "agent/writer"])
        #expect(page.status == 0, "\(page.stderr)")
        // The events' AGE column is as wide as its value (`9s` or `100s`).
        let text = page.stdout.replacing(/REASON   AGE +MESSAGE/, with: "REASON   AGE  MESSAGE")
        for expected in [
            "Name:               writer\nNamespace:          default\nKind:               Agent\n",
            "Labels:             role=writing\n                    team=content\n",
            "Annotations:        orl.dev/owner: content-platform@example.com\n",
            "File:               fleet/agents/writer.yaml:2\nRevision:           <none>\n",
            "Generation:         1\nResource Version:   1\n",
            "Spec:\n  description: Turns the researcher's brief",
            "  model: sim/gpt-4o\n",
            "  tools:\n    - read-draft\n    - write-draft\n",
            "Status:\n  Summary:              InProgress\n  Observed Generation:  <none>\n  Conditions:\n",
            "    TYPE         STATUS  REASON       MESSAGE                                      LAST-TRANSITION\n",
            "    Reconciling  True    NotObserved  no controller has observed generation 1 yet  ",
            "Events:\n  TYPE    REASON   AGE  MESSAGE\n  Normal  Created  ",
        ] {
            #expect(text.contains(expected), "missing \(expected.debugDescription) in\n\(text)")
        }
        #expect(text.contains("Source:             files:/") && text.contains("Applied:            20"))
        #expect(
            try await orlctl(["describe", "agents", "writer"]).stdout.split(separator: "\n").count == text.split(separator: "\n").count)
        let several = try await orlctl(["describe", "agents"])
        #expect(several.stdout.components(separatedBy: "Name:").count == 4)
    }

    @Test func describeShowsAStoredStatus() async throws {
        try await applied()
        let store = try SQLiteStateStore(directory: state)
        let writer = ResourceID(kind: "Agent", name: "writer")
        let at = Timestamp(milliseconds: 1_795_000_000_000)
        try store.write { w throws(StoreError) in
            try w.putStatus(
                ResourceStatus(
                    conditions: [
                        .init(type: "Ready", status: .false, reason: "Starting", message: "process launched", lastTransitionTime: at),
                        .init(type: "Stalled", status: .true, reason: "CrashLoop", message: "exited 3 times in 1m"),
                    ], observedGeneration: 1, updatedAt: at), for: writer)
        }
        let text = try await orlctl(["describe", "agent/writer"]).stdout
        #expect(text.contains("Status:\n  Summary:              Failed\n  Observed Generation:  1\n"), "\(text)")
        #expect(text.contains("    Ready    False   Starting   process launched      "))
        #expect(text.contains("    Stalled  True    CrashLoop  exited 3 times in 1m  <none>\n"))
        let status = try #require(try json(try await orlctl(["get", "agent", "writer", "-o", "json"]).stdout)["status"] as? [String: Any])
        #expect(status["observedGeneration"] as? Int == 1)
        #expect((status["conditions"] as? [[String: String]])?.first?["lastTransitionTime"] == "2026-11-18T11:06:40Z")

        // A new generation the controller has not seen yet: Reconciling again.
        try edit("agents/writer.yaml", "maxTokensPerCall: 8192", "maxTokensPerCall: 4096")
        try await applied()
        let stale = try await orlctl(["describe", "agent/writer"]).stdout
        #expect(stale.contains("Summary:              InProgress"), "\(stale)")
        #expect(stale.contains("NotObserved  no controller has observed generation 2 yet; the conditions below are for generation 1"))

        // The status goes with its resource.
        #expect(try await orlctl(["delete", "agent/writer"]).status == 0)
        #expect(try store.read { r throws(StoreError) in try r.status(for: writer) } == nil)
    }

    // MARK: delete, history, events

    @Test func deleteByName() async throws {
        try await applied()
        let delete = try await orlctl(["delete", "agent/writer", "tool/write-draft"])
        #expect(delete.status == 0, "\(delete.stderr)")
        #expect(delete.stdout == "agent \"writer\" deleted\ntool \"write-draft\" deleted\n")
        #expect(try await orlctl(["get", "agents", "-o", "name"]).stdout == "agent/publisher\nagent/researcher\n")

        let history = try await orlctl(["history"]).stdout.split(separator: "\n")
        #expect(history.count == 3 && history[0].hasPrefix("NUMBER  TIME"), "\(history)")
        #expect(history[1].hasPrefix("2 ") && history[1].contains("  delete  ") && history[1].hasSuffix("  Deleted: 2"))
        #expect(history[2].hasPrefix("1 ") && history[2].hasSuffix("Plan: 18 to add, 0 to change, 0 to prune (0 unchanged)."))

        let events = try await orlctl(["events", "--limit", "3"]).stdout.split(separator: "\n")
        #expect(events.first?.hasPrefix("LAST SEEN  TYPE    REASON   OBJECT") == true, "\(events)")
        #expect(events.count == 4 && events[1].contains("Deleted  tool/write-draft") && events[2].contains("Deleted  agent/writer"))
        #expect(events[3].contains("Created"))
        let mine = try await orlctl(["events", "--for", "ag/writer"]).stdout.split(separator: "\n")
        #expect(mine.count == 3 && mine[1].contains("Deleted") && mine[1].contains("it was applied from fleet/agents/writer.yaml:2"))
        #expect(mine[2].contains("Created  agent/writer"))

        let dry = try await orlctl(["delete", "agent", "publisher", "--dry-run"])
        #expect(dry.status == 0 && dry.stdout == "agent \"publisher\" deleted (dry run)\n")
        #expect(try await orlctl(["get", "agent", "publisher"]).status == 0)
    }

    @Test func deletingWhatIsNotThereDeletesNothing() async throws {
        try await applied()
        let delete = try await orlctl(["delete", "agent", "writer", "wrtr"])
        #expect(delete.status == 1 && delete.stdout.isEmpty)
        #expect(delete.stderr.contains("orlctl: error: Agent \"wrtr\" not found in namespace \"default\" (did you mean \"writer\"?)\n"))
        #expect(delete.stderr.contains("nothing was deleted"))
        #expect(try await orlctl(["get", "agent", "writer"]).status == 0)
        #expect(try await orlctl(["history"]).stdout.split(separator: "\n").count == 2)
        #expect(!(try await orlctl(["events"]).stdout.contains("Deleted")))

        let ignoring = try await orlctl(["delete", "agent", "writer", "wrtr", "--ignore-not-found", "-o", "json"])
        #expect(ignoring.status == 0)
        let result = try json(ignoring.stdout)
        #expect(result["deleted"] as? Bool == true && result["historyNumber"] as? Int == 2)
        #expect((result["notFound"] as? [[String: String]])?.first?["name"] == "wrtr")
        let again = try await orlctl(["delete", "agent", "writer", "--ignore-not-found"])
        #expect(again.status == 0 && again.stdout.isEmpty)
        #expect(try await orlctl(["delete"]).status == 2)
        #expect(try await orlctl(["delete", "agents"]).status == 2)
    }

    @Test func deleteByFile() async throws {
        try await applied()
        try "apiVersion: orl.dev/v1\nkind: Tool\nmetadata: {name: broken}\nspec: {type: http}\n"
            .write(to: work.url.appendingPathComponent("broken.yaml"), atomically: true, encoding: .utf8)
        let broken = try await orlctl(["delete", "-f", "fleet/tools/drafts.yaml", "-f", "broken.yaml"])
        #expect(broken.status == 1 && broken.stdout.contains("error[schema.invalid]") && broken.stderr.contains("nothing was deleted"))
        #expect(try await orlctl(["get", "tools", "-o", "name"]).stdout.contains("tool/read-draft"))

        let delete = try await orlctl(["delete", "-f", "fleet/tools/drafts.yaml"])
        #expect(delete.status == 0, "\(delete.stdout)\(delete.stderr)")
        #expect(delete.stdout == "tool \"read-draft\" deleted\ntool \"write-draft\" deleted\n")
        #expect(try await orlctl(["history"]).stdout.contains("Deleted: 2"))
        let twice = try await orlctl(["delete", "-f", "fleet/tools/drafts.yaml"])
        #expect(twice.status == 1 && twice.stderr.contains("Tool \"read-draft\" not found"))
        #expect(try await orlctl(["delete", "-f", "fleet", "agent/writer"]).status == 2)

        // Workflows go before the agents and tools they use.
        let all = try await orlctl(["delete", "-f", "fleet", "--ignore-not-found"])
        #expect(all.status == 0 && all.stdout.hasPrefix("workflow \"content-pipeline\" deleted\nbudget "), "\(all.stdout)")
        #expect(try await orlctl(["get", "all"]).stderr == "No resources found in default namespace.\n")
    }

    @Test func historyAndEventsNewestFirst() async throws {
        try await applied()
        try edit("budgets/publisher.yaml", "usd: 0.50", "usd: 0.75")
        try await applied()
        #expect(try await orlctl(["delete", "budget/publisher"]).status == 0)

        let history = try json(try await orlctl(["history", "-o", "json"]).stdout)
        let entries = try #require(history["history"] as? [[String: Any]])
        #expect(entries.map { $0["number"] as? Int } == [3, 2, 1])
        #expect(
            entries.map { $0["summary"] as? String } == [
                "Deleted: 1", "Plan: 0 to add, 1 to change, 0 to prune (17 unchanged).",
                "Plan: 18 to add, 0 to change, 0 to prune (0 unchanged).",
            ])
        let plan = try #require(entries[1]["plan"] as? [String: Any], "the plan is an object, not a string")
        #expect((plan["changes"] as? [[String: Any]])?.first?["name"] as? String == "publisher")
        #expect((entries[0]["plan"] as? [String: Any])?["delete"] as? Int == 1)
        #expect((try json(try await orlctl(["history", "-o", "json", "--limit", "1"]).stdout)["history"] as? [Any])?.count == 1)
        #expect(try await orlctl(["history", "--limit", "0"]).status == 2)

        let events = try #require(
            try json(try await orlctl(["events", "-o", "json", "--for", "budget/publisher"]).stdout)["events"] as? [[String: Any]])
        #expect(events.map { $0["reason"] as? String } == ["Deleted", "Updated", "Created"])
        let numbers = events.compactMap { $0["number"] as? Int }
        #expect(numbers == numbers.sorted(by: >))
        #expect((events[0]["object"] as? [String: String]) == ["kind": "Budget", "namespace": "default", "name": "publisher"])
        let all = try #require(try json(try await orlctl(["events", "-o", "json"]).stdout)["events"] as? [[String: Any]])
        #expect(all.count == 20 && all.first?["reason"] as? String == "Deleted")
    }

    @Test func emptyState() async throws {
        let history = try await orlctl(["history"])
        #expect(history.status == 0 && history.stdout.isEmpty && history.stderr.contains("No history"))
        let events = try await orlctl(["events"])
        #expect(events.status == 0 && events.stdout.isEmpty && events.stderr.contains("No events"))
        let get = try await orlctl(["get", "all", "-o", "json"])
        #expect(get.status == 0)
        #expect((try json(get.stdout)["items"] as? [Any])?.isEmpty == true)
    }
}
