import Foundation
import Testing

@Suite struct ValidateCommandTests {
    @Test func demoFleetIsValid() async throws {
        let r = try await Orlctl.call(["validate", "-f", "manifests/", "--strict"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.hasPrefix("valid: "))
    }

    @Test(arguments: ["sequential-pipeline", "fan-out-fan-in", "dev-team", "alerts"])
    func examplesAreValid(_ name: String) async throws {
        let r = try await Orlctl.call(["validate", "-f", "examples/\(name)", "--strict"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }

    @Test func brokenExamplesReportEveryProblem() async throws {
        let r = try await Orlctl.call(["validate", "-f", "examples/broken"])
        #expect(r.status == 1)
        #expect(r.stderr.isEmpty)
        try expectGolden(r.stdout, "validate-broken.txt")
    }

    @Test func jsonContract() async throws {
        let r = try await Orlctl.call(["validate", "-f", "examples/broken", "-o", "json"])
        #expect(r.status == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(object["valid"] as? Bool == false)
        #expect(object["resources"] is Int)
        let diagnostics = try #require(object["diagnostics"] as? [[String: Any]])
        #expect(!diagnostics.isEmpty)
        for d in diagnostics {
            #expect(["error", "warning"].contains(d["severity"] as? String))
            #expect((d["code"] as? String)?.contains(".") == true)
            #expect(d["message"] is String)
            #expect(d["file"] is String && d["line"] is Int && d["column"] is Int)
        }
        try expectGolden(r.stdout, "validate-broken.json")
    }

    @Test func readsStandardInput() async throws {
        let manifest =
            "apiVersion: orl.dev/v1\nkind: Tool\nmetadata: {name: t}\nspec: {type: command, command: {command: x}, risk: extreme}\n"
        let r = try await Orlctl.call(["validate", "-f", "-"], stdin: manifest)
        #expect(r.status == 1)
        #expect(r.stdout.hasPrefix("<stdin>:4:"), "\(r.stdout)")
        #expect(r.stdout.contains("error[schema.invalid]: spec.risk:"))
    }

    @Test func walksDirectoriesInOrderSkippingHiddenAndOtherFiles() async throws {
        let dir = try TemporaryDirectory()
        let tool = { (name: String) in
            "apiVersion: orl.dev/v1\nkind: Tool\nmetadata: {name: \(name)}\nspec: {type: command, command: {command: x}}\n"
        }
        try dir.write("b/two.yml", tool("same"))
        try dir.write("a/one.yaml", tool("same"))
        try dir.write(
            "c.json",
            #"{"apiVersion": "orl.dev/v1", "kind": "Tool", "metadata": {"name": "j"}, "spec": {"type": "command", "command": {"command": "x"}}}"#
        )
        try dir.write(".git/ignored.yaml", "not: [valid")
        try dir.write("notes.txt", "not: [valid")
        let r = try await Orlctl.call(["validate", "-f", "."], in: dir.url)
        // a/one.yaml comes first, so the duplicate is reported in b/two.yml.
        #expect(r.status == 1)
        #expect(r.stdout.hasPrefix("./b/two.yml:3:18: error[resource.duplicate]: Tool/same is defined more than once"), "\(r.stdout)")
        #expect(r.stdout.contains("./a/one.yaml:3:18: note: first defined here"))
        #expect(r.stdout.hasSuffix("invalid: 1 error; 3 resources in 3 files\n"), "\(r.stdout)")
    }

    @Test func warningsPassUnlessStrict() async throws {
        let dir = try TemporaryDirectory()
        try dir.write("p.yaml", "apiVersion: orl.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec: {appliesTo: {agents: [nobody]}}\n")
        let relaxed = try await Orlctl.call(["validate", "-f", "p.yaml"], in: dir.url)
        #expect(relaxed.status == 0, "\(relaxed.stdout)")
        #expect(relaxed.stdout.contains("warning[ref.missing]"))
        let strict = try await Orlctl.call(["validate", "-f", "p.yaml", "--strict"], in: dir.url)
        #expect(strict.status == 1)
        #expect(strict.stdout.contains("error[ref.missing]"))
    }

    @Test func oversizedFileIsReportedNotRead() async throws {
        let dir = try TemporaryDirectory()
        try dir.write("big.yaml", "# " + String(repeating: "x", count: 5 << 20) + "\n")
        let r = try await Orlctl.call(["validate", "-f", "big.yaml"], in: dir.url)
        #expect(r.status == 1)
        #expect(r.stdout.contains("big.yaml:1:1: error[yaml.limit]"), "\(r.stdout)")
    }

    @Test func missingPathIsAnErrorOfItsOwn() async throws {
        let r = try await Orlctl.call(["validate", "-f", "manifests/", "-f", "no/such/dir"])
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr == "orlctl: error: no/such/dir: no such file or directory\n")
    }

    @Test(arguments: [["validate"], ["validate", "-f", "x", "-o", "xml"], ["validate", "--bogus"], ["frobnicate"]])
    func usageErrorsExitTwo(_ arguments: [String]) async throws {
        let r = try await Orlctl.call(arguments)
        #expect(r.status == 2, "\(r.stderr)")
        #expect(!r.stderr.isEmpty)
    }

    @Test func helpAndVersionExitZero() async throws {
        let help = try await Orlctl.call(["validate", "--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("--strict"))
        let version = try await Orlctl.call(["--version"])
        #expect(version.status == 0)
        #expect(version.stdout.hasPrefix("0."))
    }
}

/// examples/violations/README.md shows the output users should expect; it must stay true.
@Suite struct ViolationsExampleTests {
    @Test func readmeShowsTheRealOutput() async throws {
        let readme = try String(contentsOf: Orlctl.packageRoot.appendingPathComponent("examples/violations/README.md"), encoding: .utf8)
        let command = "$ orlctl validate -f examples/violations/\n"
        let start = try #require(readme.range(of: "```console\n" + command), "README has no console block for the command")
        let end = try #require(readme.range(of: "\n```", range: start.upperBound..<readme.endIndex))
        let shown = String(readme[start.upperBound..<end.lowerBound]) + "\n"
        let r = try await Orlctl.call(["validate", "-f", "examples/violations/"])
        #expect(r.status == 1)
        #expect(r.stdout == shown, "update the block in examples/violations/README.md")
        // Every rule of the audit is shown on purpose.
        for code in [
            "perm.tool-denied", "perm.tool-undeclared", "perm.model-denied", "perm.secret-denied", "perm.handoff-denied",
            "perm.approval-missing", "perm.dataflow", "budget.missing", "budget.infeasible",
        ] {
            #expect(r.stdout.contains("[\(code)]"), "\(code) is not shown")
        }
    }
}
