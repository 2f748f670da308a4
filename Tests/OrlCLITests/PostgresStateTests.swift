import Foundation
import OrlTestPostgres
import Testing

/// `orlctl` against a PostgreSQL state, end to end: the real binary, a real server.
@Suite(.enabled(if: PostgresCluster.unavailable == nil, "PostgreSQL is not installed; run scripts/install-deps"))
struct PostgresStateTests {
    /// apply, diff, get, describe, history, events and delete on a PostgreSQL state do what
    /// they do on a SQLite one: the same plans, the same listings.
    @Test func theQuickstartFleetAppliesDiffsAndListsAsOnSQLite() throws {
        let url = try PostgresCluster.shared().database("cli")
        let sqlite = try TemporaryDirectory()
        let copy = try TemporaryDirectory()
        try FileManager.default.copyItem(
            at: Orlctl.packageRoot.appendingPathComponent("manifests"), to: copy.url.appendingPathComponent("manifests"))
        let manifests = copy.url.appendingPathComponent("manifests").path
        let states = [url, sqlite.url.appendingPathComponent("state").path]

        var outputs: [[String]] = []
        for state in states {
            let start = ContinuousClock.now
            let first = try Orlctl.run(["apply", "-f", manifests, "--state", state])
            #expect(first.status == 0, "\(first.stderr)")
            #expect(first.stdout.contains("Plan: 18 to add, 0 to change, 0 to prune (0 unchanged)."))
            #expect(first.stdout.contains("Applied as #1."))
            print(
                "apply of the quickstart fleet into \(state.hasPrefix("postgres") ? "PostgreSQL" : "SQLite"): \(ContinuousClock.now - start)"
            )
            let again = try Orlctl.run(["apply", "-f", manifests, "--state", state])
            #expect(again.status == 0 && again.stdout.contains("No changes. 18 resources up to date."), "\(again.stderr)")
            let diff = try Orlctl.run(["diff", "-f", manifests, "--state", state])
            #expect(diff.status == 0, "\(diff.stderr)")
            // The tables without their AGE column, which differs by the seconds between the applies.
            let table = try Orlctl.run(["get", "agents", "--state", state]).stdout.split(separator: "\n").map {
                $0.split(separator: " ", omittingEmptySubsequences: true).dropLast().joined(separator: " ")
            }
            outputs.append([try Orlctl.run(["get", "all", "-o", "name", "--state", state]).stdout, table.joined(separator: "\n")])
        }
        #expect(outputs[0] == outputs[1])
        #expect(outputs[0][0].split(separator: "\n").count == 18)

        // A change: diff says so (exit 1), apply bumps the generation and records #2.
        let writer = copy.url.appendingPathComponent("manifests/agents/writer.yaml")
        let text = try String(contentsOf: writer, encoding: .utf8)
        try text.replacingOccurrences(of: "maxTokensPerCall: 8192", with: "maxTokensPerCall: 4096").write(
            to: writer, atomically: true, encoding: .utf8)
        let changed = try Orlctl.run(["diff", "-f", manifests, "--state", url])
        #expect(
            changed.status == 1 && changed.stdout.contains("Plan: 0 to add, 1 to change, 0 to prune (17 unchanged)."), "\(changed.stdout)")
        let applied = try Orlctl.run(["apply", "-f", manifests, "--state", url])
        #expect(applied.status == 0 && applied.stdout.contains("Applied as #2."), "\(applied.stdout)\(applied.stderr)")
        let described = try Orlctl.run(["describe", "agent/writer", "--state", url])
        #expect(described.status == 0 && described.stdout.contains("Generation:         2"), "\(described.stdout)")
        #expect(described.stdout.contains("maxTokensPerCall: 4096"))
        let history = try Orlctl.run(["history", "--state", url])
        #expect(history.stdout.split(separator: "\n").count == 3, "\(history.stdout)")
        let events = try Orlctl.run(["events", "--for", "agent/writer", "--state", url])
        #expect(
            events.status == 0 && events.stdout.contains("Updated") && events.stdout.contains("Created"), "\(events.stdout)\(events.stderr)"
        )

        // ORL_STATE_URL names the state when --state does not; delete is all or nothing.
        let deleted = try Orlctl.run(["delete", "agent/writer", "agent/nobody"], environment: ["ORL_STATE_URL": url])
        #expect(deleted.status == 1, "\(deleted.stdout)\(deleted.stderr)")
        #expect(try Orlctl.run(["get", "agent/writer"], environment: ["ORL_STATE_URL": url]).status == 0)
        let deletedOne = try Orlctl.run(["delete", "agent/writer"], environment: ["ORL_STATE_URL": url])
        #expect(deletedOne.status == 0, "\(deletedOne.stderr)")
        let gone = try Orlctl.run(["get", "agent/writer"], environment: ["ORL_STATE_URL": url])
        #expect(gone.status == 1 && gone.stderr.contains("writer"), "\(gone.stderr)")
    }

    /// An unreachable server is an error (exit 2) that names the state, not the password,
    /// and `logs` reads the state (the agent's log is in the data directory).
    @Test func anUnreachableOrUnsupportedStateIsExitTwoWithAClearMessage() throws {
        let down = "postgres://orl:hunter2@127.0.0.1:1/fleet?sslmode=disable&connect_timeout=2"
        for arguments in [["get", "agents"], ["apply", "-f", "manifests"], ["history"]] {
            let result = try Orlctl.run(arguments + ["--state", down])
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("cannot open the state at postgres://orl:***@127.0.0.1:1/fleet"), "\(result.stderr)")
            #expect(result.stderr.contains("cannot connect"), "\(result.stderr)")
            #expect(!result.stderr.contains("hunter2"))
        }
        let url = try PostgresCluster.shared().database("unsupported")
        let logs = try Orlctl.run(["logs", "agent/writer", "--state", url])
        #expect(logs.status == 1 && logs.stderr.contains("not found"), "\(logs.stderr)")
        #expect(try Orlctl.run(["runs", "--state", url]).status == 0)
        let bad = try Orlctl.run(["get", "agents", "--state", "postgres://me@db/fleet?sslmode=sometimes"])
        #expect(bad.status == 2 && bad.stderr.contains("sslmode must be one of"), "\(bad.stderr)")
    }
}
