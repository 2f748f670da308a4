import Foundation
import Testing

/// `orlctl test`: the quickstart fleet's own tests pass; a wrong expectation fails with
/// exit 1 and a JUnit failure; a test file that cannot be read is an error.
@Suite struct PolicyTestCommandTests {
    @Test func theQuickstartFleetPassesItsTests() async throws {
        let result = try await Orlctl.call(["test", "-f", "manifests/", "tests/"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.hasSuffix("7 passed, 0 failed\n"), "\(result.stdout)")
    }

    /// examples/ shows policy tests on a fleet of its own (another namespace), and a
    /// change that breaks one of its verdicts fails.
    @Test func theDevTeamExamplePassesItsTestsAndABrokenVerdictFails() async throws {
        let result = try await Orlctl.call(["test", "-f", "examples/dev-team/", "examples/policy-tests/"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.hasSuffix("8 passed, 0 failed\n"), "\(result.stdout)")

        // The reviewer's deny dropped: the verdict a reviewer relies on fails.
        let directory = try TemporaryDirectory()
        for file in try FileManager.default.contentsOfDirectory(atPath: Orlctl.packageRoot.path + "/examples/dev-team") {
            let text = try String(contentsOfFile: Orlctl.packageRoot.path + "/examples/dev-team/" + file, encoding: .utf8)
            try directory.write(
                "fleet/" + file,
                text.replacingOccurrences(
                    of: "    tools: [read-file, search-code, git-diff]\n",
                    with: "    tools: [read-file, search-code, git-diff, apply-patch]\n"
                ).replacingOccurrences(of: "  deny:\n    tools: [apply-patch, run-tests]\n", with: ""))
        }
        let broken = try await Orlctl.call(["test", "-f", directory.url.path + "/fleet", "examples/policy-tests/"])
        #expect(broken.status == 1, "\(broken.stdout)\(broken.stderr)")
        #expect(
            broken.stdout.contains("FAIL  examples/policy-tests/dev-team.yaml:4  the reviewer can look but never change code"),
            "\(broken.stdout)")
    }

    @Test func aWrongExpectationFailsWithJUnit() async throws {
        let directory = try TemporaryDirectory()
        let file = directory.url.appendingPathComponent("t.yaml")
        try """
        tests:
          - agent: writer
            may: {tool: publish-post}
          - diagnostic: budget.missing
            raised: true
        """.write(to: file, atomically: true, encoding: .utf8)
        let junit = directory.url.appendingPathComponent("junit.xml").path
        let result = try await Orlctl.call(["test", "-f", "manifests/", file.path, "--junit", junit])
        #expect(result.status == 1)
        #expect(result.stdout.contains("FAIL  \(file.path):2  agent \"writer\" may use tool \"publish-post\""), "\(result.stdout)")
        #expect(result.stdout.hasSuffix("0 passed, 2 failed\n"), "\(result.stdout)")
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(xml.contains("<testsuites name=\"orlctl test\" tests=\"2\" failures=\"2\">"))
        #expect(
            xml.contains("<failure message=\"it may not: no policy allows it\">") || xml.contains("<failure message=\"it may not"), "\(xml)"
        )

        try "tests:\n  - agent: writer\n    may: {tol: x}\n".write(to: file, atomically: true, encoding: .utf8)
        let bad = try await Orlctl.call(["test", "-f", "manifests/", file.path])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("unknown permission kind \"tol\" (did you mean \"tool\"?)"), "\(bad.stderr)")
    }
}
