import Foundation
import OrlCore
import OrlJSON
import OrlPostgres
import OrlStore
import OrlTestPostgres
import Testing

/// The commands beyond apply and get on a PostgreSQL state, end to end: runs and their
/// approvals, the vault, usage and budgets, retention, and moving a state between backends.
@Suite(.enabled(if: PostgresCluster.unavailable == nil, "PostgreSQL is not installed; run scripts/install-deps"))
struct PostgresCommandsTests {
    private static let key = MasterKey.generate(origin: "test").base64

    /// `run`, `runs`, `approve`, `deny`, `cancel` and `describe run` on PostgreSQL, with the
    /// agent played through the PostgreSQL store (as the agents' API does).
    @Test func runsAreStartedApprovedDeniedAndCancelled() throws {
        let url = try PostgresCluster.shared().database("runs")
        let work = try TemporaryDirectory()
        try work.write("fleet.yaml", runTestFleet)
        func orlctl(_ arguments: [String]) throws -> Orlctl.Result { try Orlctl.run(arguments + ["--state", url], in: work.url) }
        #expect(try orlctl(["apply", "-f", "fleet.yaml"]).status == 0)
        let player = AgentPlayer(store: try PostgresStateStore(url: url))

        let started = try orlctl(["run", "workflow/publish", "--input", "topic=otters"])
        #expect(started.status == 0, "\(started.stderr)")
        let id = String(try #require(started.stdout.split(separator: "\n").first).dropFirst(4).prefix(13))
        let row = try #require(try orlctl(["runs"]).stdout.split(separator: "\n").first { $0.hasPrefix(id) })
        #expect(row.contains("publish") && row.contains("Running") && row.contains("0/3"))

        let draft = try #require(try player.claim())
        try player.complete(draft, #"{"title": "Otters at play"}"#)
        let pending = try orlctl(["runs", "--pending-approval"])
        #expect(pending.stdout.contains("review") && pending.stdout.contains("Ship it?"), "\(pending.stdout)\(pending.stderr)")
        let typo = try orlctl(["approve", "run/\(id)", "--step", "reveiw"])
        #expect(typo.status == 1 && typo.stderr.contains(#"did you mean "review"?"#))
        let approved = try orlctl(["approve", "run/\(id)", "--step", "review", "--reason", "lgtm"])
        #expect(approved.status == 0 && approved.stdout == "run/\(id) step \"review\" approved\n", "\(approved.stderr)")
        #expect(try orlctl(["deny", "run/\(id)", "--step", "review"]).status == 1)
        try player.complete(try #require(try player.claim()), #"{"url": "https://blog.example/otters"}"#)
        let described = try orlctl(["describe", "run/\(id)"])
        #expect(described.stdout.contains("Status:             Succeeded") && described.stdout.contains("approved by "))

        let denied = String(try orlctl(["run", "workflow/publish", "--input", "topic=eels"]).stdout.dropFirst(4).prefix(13))
        try player.complete(try #require(try player.claim()))
        #expect(try orlctl(["deny", "run/\(denied)", "--step", "review", "--reason", "off-topic"]).status == 0)
        let cancelled = String(try orlctl(["run", "workflow/fan"]).stdout.dropFirst(4).prefix(13))
        #expect(try orlctl(["cancel", "run/\(cancelled)", "--reason", "not today"]).stdout == "run/\(cancelled) cancelled\n")
        #expect(try orlctl(["cancel", "run/\(cancelled)"]).status == 1)

        let listed = try JSONSerialization.jsonObject(with: Data(try orlctl(["runs", "-o", "json"]).stdout.utf8)) as? [String: Any]
        let phases = (listed?["runs"] as? [[String: Any]])?.map { "\($0["id"]!):\($0["phase"]!)" }
        #expect(phases == ["\(cancelled):Cancelled", "\(denied):Failed", "\(id):Succeeded"])
        let events = try orlctl(["events", "--for", "run/\(cancelled)"])
        #expect(events.stdout.contains("Cancelled"), "\(events.stdout)")
    }

    /// A PostgreSQL state's vault opens with ORL_MASTER_KEY only (every machine must use the
    /// same key); set, list, delete and suspend/resume work as on SQLite.
    @Test func secretsNeedTheSharedKeyAndHoldsWork() throws {
        let url = try PostgresCluster.shared().database("vault")
        let work = try TemporaryDirectory()
        #expect(try Orlctl.run(["apply", "-f", Orlctl.packageRoot.appendingPathComponent("manifests").path, "--state", url]).status == 0)
        let noKey = try Orlctl.run(["secret", "set", "api-key", "--state", url], stdin: "s3cret\n", in: work.url)
        #expect(noKey.status == 2 && noKey.stderr.contains("ORL_MASTER_KEY"), "\(noKey.stderr)")
        #expect(!FileManager.default.fileExists(atPath: work.url.appendingPathComponent("master.key").path))
        let keyed = ["ORL_MASTER_KEY": Self.key]
        let set = try Orlctl.run(["secret", "set", "api-key", "--state", url], stdin: "s3cret\n", environment: keyed)
        #expect(set.status == 0 && set.stdout == "secret \"api-key\" created\n", "\(set.stderr)")
        let again = try Orlctl.run(["secret", "set", "api-key", "--state", url], stdin: "s3cret\n", environment: keyed)
        #expect(again.stdout == "secret \"api-key\" unchanged\n", "\(again.stdout)\(again.stderr)")
        let other = MasterKey.generate(origin: "other").base64
        let wrong = try Orlctl.run(["secret", "set", "api-key", "--state", url], stdin: "x\n", environment: ["ORL_MASTER_KEY": other])
        #expect(wrong.status == 2, "\(wrong.stdout)")
        let listed = try Orlctl.run(["secret", "list", "--state", url])
        #expect(listed.status == 0 && listed.stdout.contains("api-key") && !listed.stdout.contains("s3cret"), "\(listed.stderr)")
        #expect(try Orlctl.run(["secret", "delete", "api-key", "--state", url]).status == 0)
        #expect(try Orlctl.run(["secret", "list", "--state", url]).stderr.contains("No secrets"))

        let suspended = try Orlctl.run(["suspend", "agent/writer", "--state", url])
        #expect(suspended.stdout == "agent \"writer\" suspended\n", "\(suspended.stderr)")
        #expect(try Orlctl.run(["suspend", "agent/nobody", "--state", url]).status == 1)
        #expect(try Orlctl.run(["resume", "agent/writer", "--state", url]).stdout == "agent \"writer\" resumed\n")
        let state = try Orlctl.run(["describe", "state", "-o", "json", "--state", url])
        let info = try JSONSerialization.jsonObject(with: Data(state.stdout.utf8)) as? [String: Any]
        let tables = (info?["tables"] as? [[String: Any]])?.compactMap { $0["table"] as? String } ?? []
        #expect(tables.contains("resources") && tables.contains("budget_lines"), "\(state.stdout)\(state.stderr)")
    }

    /// usage, budget status and gc read the same ledger the same way on both backends.
    @Test func usageBudgetsAndRetentionMatchSQLite() throws {
        let sqliteRoot = try TemporaryDirectory()
        let states = [try PostgresCluster.shared().database("usage"), sqliteRoot.url.appendingPathComponent("state").path]
        let now = nowForTests
        let today = now.milliseconds - now.milliseconds % 86_400_000
        var outputs: [[String]] = []
        for state in states {
            #expect(
                try Orlctl.run(["apply", "-f", Orlctl.packageRoot.appendingPathComponent("manifests").path, "--state", state]).status == 0)
            let store: any StateBackend =
                state.hasPrefix("postgres") ? try PostgresStateStore(url: state) : try SQLiteStateStore(directory: state)
            try store.write { writer throws(StoreError) in
                var entries: [LedgerEntry] = []
                for (index, name) in ["writer", "writer", "publisher", "researcher"].enumerated() {
                    entries.append(
                        LedgerEntry(
                            time: Timestamp(milliseconds: today + 1000 * Int64(index + 1)),
                            agent: ResourceID(kind: "Agent", name: name), model: "openai/gpt-4o-mini",
                            usage: TokenUsage(prompt: 1000, completion: 250), usd: 0.125 * Double(index + 1), latencyMilliseconds: 90,
                            requestID: "req-\(index)", outcome: "ok"))
                }
                entries.append(
                    LedgerEntry(
                        time: Timestamp(milliseconds: today - 90 * 86_400_000), agent: ResourceID(kind: "Agent", name: "writer"),
                        model: "openai/gpt-4o-mini", usage: TokenUsage(prompt: 10, completion: 5), usd: 0.5, latencyMilliseconds: 90,
                        requestID: "req-old", outcome: "ok"))
                try writer.append(entries)
            }
            let usage = try Orlctl.run(["usage", "-o", "json", "--state", state])
            #expect(usage.status == 0, "\(usage.stderr)")
            let calls = try Orlctl.run(["usage", "--calls", "-o", "json", "--state", state])
            let budget = try Orlctl.run(["budget", "status", "-o", "json", "--state", state])
            #expect(budget.status == 0, "\(budget.stderr)")
            let gc = try Orlctl.run(["gc", "--state", state])
            #expect(gc.status == 0 && gc.stdout.hasPrefix("Deleted 0 runs, 0 events and 1 ledger row"), "\(gc.stdout)\(gc.stderr)")
            let since = LedgerDay.name(of: Timestamp(milliseconds: today - 120 * 86_400_000))
            let byDay = try Orlctl.run(["usage", "--by-day", "--since", since, "-o", "json", "--state", state])
            outputs.append([usage.stdout, calls.stdout, budget.stdout, byDay.stdout])
        }
        #expect(outputs[0] == outputs[1])
        #expect(outputs[0][0].contains(#""calls": 4"#), "\(outputs[0][0])")
        #expect(outputs[0][2].contains(#""spent": {"#) && outputs[0][2].contains("1.25"), "\(outputs[0][2])")
        #expect(outputs[0][3].contains(#""rolledUpCalls": 1"#), "\(outputs[0][3])")
    }

    /// SQLite → PostgreSQL → SQLite gives the same state: resources, history, events,
    /// runs, the ledger, the vault's ciphertexts; verified per table by the command, and
    /// here by every listing and by the tables themselves.
    @Test func migratingToPostgreSQLAndBackKeepsTheStateWhole() throws {
        let root = try TemporaryDirectory()
        let first = root.url.appendingPathComponent("first").path
        let back = root.url.appendingPathComponent("back").path
        let url = try PostgresCluster.shared().database("migrate")
        let keyed = ["ORL_MASTER_KEY": Self.key]
        try root.write("fleet.yaml", runTestFleet)
        #expect(try Orlctl.run(["apply", "-f", "fleet.yaml", "--state", first], in: root.url).status == 0)
        let player = try AgentPlayer(state: first)
        let run = String(
            try Orlctl.run(["run", "workflow/publish", "--input", "topic=otters", "--state", first]).stdout.dropFirst(4).prefix(13))
        try player.complete(try #require(try player.claim()), #"{"title": "Otters"}"#)
        #expect(try Orlctl.run(["secret", "set", "api-key", "--state", first], stdin: "s3cret\n", environment: keyed).status == 0)
        #expect(try Orlctl.run(["suspend", "agent/worker", "--state", first]).status == 0)
        try SQLiteStateStore(directory: first).write { writer throws(StoreError) in
            try writer.append([
                LedgerEntry(
                    time: nowForTests, agent: ResourceID(kind: "Agent", name: "writer"), model: "openai/gpt-4o-mini",
                    usage: TokenUsage(prompt: 7, completion: 3), usd: 0.0123, latencyMilliseconds: 5, requestID: "r1", outcome: "ok")
            ])
        }

        let there = try Orlctl.run(["state", "migrate", "--from", first, "--to", url])
        #expect(there.status == 0 && there.stdout.contains("every table read back with the same count and hash"), "\(there.stderr)")
        #expect(there.stdout.contains("resources") && there.stdout.contains("secrets"))
        let refused = try Orlctl.run(["state", "migrate", "--from", first, "--to", url])
        #expect(refused.status == 2 && refused.stderr.contains("is not empty"), "\(refused.stderr)")
        #expect(try Orlctl.run(["state", "migrate", "--from", first, "--to", url, "--replace"]).status == 0)
        let home = try Orlctl.run(["state", "migrate", "--from", url, "--to", back, "-o", "json"])
        #expect(home.status == 0, "\(home.stderr)")

        for arguments in [
            ["get", "all", "-o", "json"], ["history", "-o", "json"], ["events", "-o", "json"], ["runs", "-o", "json"],
            ["usage", "--calls", "-o", "json"], ["secret", "list", "-o", "json"],
        ] {
            let before = try Orlctl.run(arguments + ["--state", first], environment: keyed)
            let after = try Orlctl.run(arguments + ["--state", back], environment: keyed)
            #expect(before.status == 0 && before.stdout == after.stdout, "\(arguments): \(before.stdout)\n≠\n\(after.stdout)")
        }
        // The tables themselves, ciphertexts included.
        let original = try SQLiteStateStore(directory: first).exportTables()
        let returned = try SQLiteStateStore(directory: back).exportTables()
        #expect(original.map(\.contentHash) == returned.map(\.contentHash))
        let secrets = try #require(returned.first { $0.name == "secrets" })
        #expect(secrets.rows.count == 1)
        // The run goes on in PostgreSQL: its gate is approved there, and the numbers continue.
        let approved = try Orlctl.run(["approve", "run/\(run)", "--step", "review", "--state", url])
        #expect(approved.status == 0, "\(approved.stderr)")
        // The key opens it on the way back as it did before.
        let set = try Orlctl.run(["secret", "set", "api-key", "--state", back], stdin: "s3cret\n", environment: keyed)
        #expect(set.stdout == "secret \"api-key\" unchanged\n", "\(set.stdout)\(set.stderr)")
    }
}

private var nowForTests: Timestamp { Timestamp(milliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded())) }
