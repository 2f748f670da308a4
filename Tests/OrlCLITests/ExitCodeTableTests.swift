import Foundation
import Testing

/// Walks docs/exit-codes.md: each cell of the table is run (in process) against a real
/// state and must exit as it says. A row or cell without a scenario here fails, so the table and
/// the commands cannot drift apart.
@Suite(.serialized) struct ExitCodeTableTests {
    /// `(command, code)` for every cell that is not `—`.
    static func cells() throws -> [(command: String, code: Int32)] {
        let url = Orlctl.packageRoot.appendingPathComponent("docs/exit-codes.md")
        var cells: [(String, Int32)] = []
        for line in try String(contentsOf: url, encoding: .utf8).split(separator: "\n") where line.hasPrefix("| `orlctl ") {
            let columns = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            let command = String(columns[1].dropFirst("`orlctl ".count).dropLast())
            for (code, cell) in zip([Int32(0), 1, 2], columns[2...4]) where cell != "—" { cells.append((command, code)) }
        }
        return cells
    }

    /// Cells whose scenario needs a running fleet, exercised by the tests named.
    static let elsewhere: [String: String] = [
        "approve 0": "AgentRunsTests (a run waiting at its gate)",
        "deny 0": "AgentRunsTests (a run waiting at its gate)",
        "controller stop 0": "FirstHourTests.syncStartsAControllerAsApplyDoes",
        "logs 0": "LogsCommandTests",
    ]

    @Test func everyCellOfTheTableHolds() async throws {
        let cells = try Self.cells()
        #expect(cells.count > 50, "the table was not found or not read: \(cells.count) cells")
        let work = try TemporaryDirectory()
        let root = work.url.path
        let state = root + "/state"
        let bad = root + "/not-a-state"
        try "not a database\n".write(toFile: bad, atomically: true, encoding: .utf8)
        func run(_ arguments: [String], state: String = state) async throws -> Orlctl.Result {
            try await Orlctl.call(arguments + ["--state", state])
        }
        let applied = try await run(["apply", "-f", "manifests/"])
        try #require(applied.status == 0, "\(applied.stderr)")
        let created = try await run(["run", "workflow/content-pipeline", "--input", "topic=x"])
        let firstWord: String? = created.stdout.split(separator: " ").first.map(String.init)
        let runID = try #require(firstWord, "\(created.stdout)\(created.stderr)")
        let unknownRun = "run/1m94r223cwn58"

        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        let good = try repo.commit("good")
        try repo.git("checkout", "-q", "-b", "broken")
        try repo.write("fleet/agent.yaml", GitFleet.agent().replacingOccurrences(of: "model: sim/small", with: "model: 42"))
        _ = try repo.commit("broken")
        // Readable, but it brings a new error: review judges it (exit 1) rather than refusing
        // a fleet it cannot read (exit 2).
        try repo.git("checkout", "-q", "-b", "violating", good)
        try repo.write("fleet/agent.yaml", GitFleet.agent().replacingOccurrences(of: "model: sim/small", with: "model: sim/no-such-model"))
        let violating = try repo.commit("violating")
        try repo.git("checkout", "-q", "main")
        let sync = ["sync", "--once", "--repo", repo.root.path, "--path", "fleet"]

        let scenarios: [String: () async throws -> Orlctl.Result] = [
            "validate 0": { try await Orlctl.call(["validate", "-f", "manifests/"]) },
            "validate 1": { try await Orlctl.call(["validate", "-f", "examples/broken"]) },
            "validate 2": { try await Orlctl.call(["validate", "-f", root + "/missing"]) },
            "apply 0": { try await run(["apply", "-f", "manifests/"]) },
            "apply 1": { try await run(["apply", "-f", "examples/broken"]) },
            "apply 2": { try await run(["apply", "-f", "manifests/"], state: bad) },
            "diff 0": { try await run(["diff", "-f", "manifests/"]) },
            "diff 1": { try await run(["diff", "-f", "manifests/"], state: root + "/fresh") },
            "diff 2": { try await run(["diff", "-f", "manifests/"], state: bad) },
            "explain 0": { try await Orlctl.call(["explain", "agent/writer", "-f", "manifests/"]) },
            "explain 1": { try await Orlctl.call(["explain", "agent/writer", "--can", "use", "tool/publish-post", "-f", "manifests/"]) },
            "explain 2": { try await Orlctl.call(["explain", "agent/nobody", "-f", "manifests/"]) },
            "get 0": { try await run(["get", "agents"]) },
            "get 1": { try await run(["get", "agent/nobody"]) },
            "get 2": { try await run(["get", "agents"], state: bad) },
            "describe 0": { try await run(["describe", "agent/writer"]) },
            "describe 1": { try await run(["describe", "agent/nobody"]) },
            "describe 2": { try await run(["describe", "agent/writer"], state: bad) },
            "delete 0": { try await run(["delete", "budget/publisher"]) },
            "delete 1": { try await run(["delete", "agent/nobody"]) },
            "delete 2": { try await run(["delete", "agent/writer"], state: bad) },
            "logs 1": { try await run(["logs", "nobody"]) },
            "logs 2": { try await run(["logs", "writer"], state: bad) },
            "suspend 0": { try await run(["suspend", "writer"]) },
            "suspend 1": { try await run(["suspend", "nobody"]) },
            "suspend 2": { try await run(["suspend", "writer"], state: bad) },
            "resume 0": { try await run(["resume", "writer"]) },
            "resume 1": { try await run(["resume", "nobody"]) },
            "resume 2": { try await run(["resume", "writer"], state: bad) },
            "history 0": { try await run(["history"]) },
            "history 2": { try await run(["history"], state: bad) },
            "events 0": { try await run(["events"]) },
            "events 2": { try await run(["events"], state: bad) },
            "run 0": { try await run(["run", "workflow/content-pipeline", "--input", "topic=y"]) },
            "run 1": { try await run(["run", "workflow/nothing"]) },
            "run 2": { try await run(["run", "workflow/content-pipeline"], state: bad) },
            "runs 0": { try await run(["runs"]) },
            "runs 2": { try await run(["runs"], state: bad) },
            "cancel 0": { try await run(["cancel", runID]) },
            "cancel 1": { try await run(["cancel", unknownRun]) },
            "cancel 2": { try await run(["cancel", runID], state: bad) },
            "approve 1": { try await run(["approve", unknownRun, "--step", "editorial-review"]) },
            "approve 2": { try await run(["approve", runID, "--step", "editorial-review"], state: bad) },
            "deny 1": { try await run(["deny", unknownRun, "--step", "editorial-review"]) },
            "deny 2": { try await run(["deny", runID, "--step", "editorial-review"], state: bad) },
            "budget status 0": { try await run(["budget", "status"]) },
            "budget status 2": { try await run(["budget", "status"], state: bad) },
            "usage 0": { try await run(["usage"]) },
            "usage 2": { try await run(["usage"], state: bad) },
            "secret list 0": { try await run(["secret", "list"]) },
            "secret list 2": { try await run(["secret", "list"], state: bad) },
            "secret delete 0": {
                _ = try await Orlctl.call(["secret", "set", "token", "--from-file", bad, "--state", state])
                return try await run(["secret", "delete", "token"])
            },
            "secret delete 1": { try await run(["secret", "delete", "nothing"]) },
            "secret delete 2": { try await run(["secret", "delete", "nothing"], state: bad) },
            "controller stop 1": { try await run(["controller", "stop"]) },
            "controller stop 2": { try await run(["controller", "stop"], state: bad) },
            "sync --once 0": { try await run(sync + ["--no-controller"], state: repo.state) },
            "sync --once 1": {
                try await run(sync + ["--ref", "broken", "--name", "broken"], state: repo.state)
            },
            "sync --once 2": { try await run(["sync", "--once", "--repo", root + "/no-such-repo"], state: repo.state) },
            "gc 0": { try await run(["gc"]) },
            "gc 2": { try await run(["gc"], state: bad) },
            "review 0": { try await Orlctl.call(["review", "--repo", repo.root.path, "--base", good, "--head", good, "--path", "fleet"]) },
            "review 1": {
                try await Orlctl.call(["review", "--repo", repo.root.path, "--base", good, "--head", violating, "--path", "fleet"])
            },
            "review 2": { try await Orlctl.call(["review", "--repo", root + "/no-such-repo", "--base", good, "--head", good]) },
        ]
        var missing: [String] = []
        var seen = Set<String>()
        for (command, code) in cells {
            let key = "\(command) \(code)"
            seen.insert(key)
            if Self.elsewhere[key] != nil { continue }
            guard let scenario = scenarios[key] else {
                missing.append(key)
                continue
            }
            let result = try await scenario()
            #expect(result.status == code, "orlctl \(key): exited \(result.status)\n\(result.stdout)\(result.stderr)")
        }
        #expect(missing.isEmpty, "cells of docs/exit-codes.md without a scenario: \(missing)")
        let stale = Set(scenarios.keys).union(Self.elsewhere.keys).subtracting(seen)
        #expect(stale.isEmpty, "scenarios for cells docs/exit-codes.md does not have: \(stale.sorted())")
    }
}
