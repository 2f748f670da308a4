import ArgumentParser
import Foundation
import OrlCore
import OrlJSON
import OrlManifests
import OrlYAML

/// `orlctl test -f manifests/ tests/`: policy unit tests, offline, for CI.
struct TestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Check the verdicts a test file expects of the manifests (policy unit tests, like kyverno test or opa test).",
        discussion: """
            Each test file has a `tests:` list. A test names an agent with may or mayNot \
            ({tool|model|secret|handoff|data-class|egress: NAME}), a workflow with \
            requiresApprovalBefore: STEP (every path to it passes a human approval gate that \
            does not approve itself on timeout), a budget with covers: AGENT, or a diagnostic \
            code with raised: true|false (and optionally resource: Kind/name). namespace: \
            defaults to "default". Nothing is read but the files: no state, no network.

            The manifests' own errors do not stop the tests (a test can expect them); \
            manifests that cannot all be read do (exit 2).

            Exit codes: 0 every test passed, 1 a test failed, 2 error (unreadable manifests or \
            test files). --junit FILE writes JUnit XML for CI.
            """
    )

    @Option(
        name: [.short, .customLong("filename")],
        help: ArgumentHelp("A manifest file or directory. Repeatable.", valueName: "path"))
    var files: [String] = []

    @Argument(help: ArgumentHelp("Test files or directories of them.", valueName: "tests"))
    var tests: [String] = []

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    @Option(help: ArgumentHelp("Also write the results as JUnit XML to this file.", valueName: "file"))
    var junit: String?

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give the manifests with -f PATH (a file or a directory)") }
        guard !tests.isEmpty else { throw ValidationError("give the test files or directories, e.g. orlctl test -f manifests/ tests/") }
    }

    func run() async throws {
        let loader = ManifestLoader(standardInput: CommandContext.current.standardInputBytes)
        let loaded: (report: ValidationReport, files: Int)
        do {
            loaded = try await loader.validate(paths: files, strict: false)
        } catch {
            throw CommandFailure(message: error.description)
        }
        keepUntilExit(loaded.report)
        guard loaded.report.fleet.isComplete else {
            writeStandardOutput(DiagnosticRenderer.text(loaded.report, files: loaded.files, color: false))
            throw CommandFailure(message: "the manifests cannot all be read (see above); no test was run on a partial fleet")
        }

        var cases: [PolicyTestCase] = []
        var problems: [Diagnostic] = []
        do {
            let source = FileSystemSource(maxFileBytes: loader.parsing.maxFileBytes, standardInput: loader.standardInput)
            for input in try source.inputs(tests) {
                let file = try source.read(input)
                let (found, errors) = PolicyTests.cases(from: loader.parsing.parser.parse(file.bytes, file: file.path))
                cases += found
                problems += errors
            }
        } catch {
            throw CommandFailure(message: error.description)
        }
        guard problems.isEmpty else {
            for d in problems { OrlctlMain.writeStandardError((d.location.map { "\($0): " } ?? "") + "error: " + d.headline + "\n") }
            throw CommandFailure(message: "the test files have \(problems.count) error\(problems.count == 1 ? "" : "s"); no test was run")
        }
        guard !cases.isEmpty else { throw CommandFailure(message: "the test files hold no tests") }

        let results = PolicyTests.run(cases, against: loaded.report)
        switch output {
        case .text: writeStandardOutput(Self.text(results))
        case .json: writeStandardOutput(Self.json(results).rendered())
        }
        if let junit {
            do {
                try Self.junit(results).write(toFile: junit, atomically: true, encoding: .utf8)
            } catch {
                throw CommandFailure(message: "cannot write \(junit): \(error.localizedDescription)")
            }
        }
        if results.contains(where: { !$0.passed }) { throw ExitCode(ExitStatus.findings.rawValue) }
    }

    static func text(_ results: [PolicyTestResult]) -> String {
        var out = ""
        for result in results {
            out += "\(result.passed ? "PASS" : "FAIL")  \(result.test.location.file):\(result.test.location.line)  \(result.test.name)\n"
            if !result.passed { out += "      \(result.message)\n" }
        }
        let failed = results.count { !$0.passed }
        out += "\n\(results.count - failed) passed, \(failed) failed\n"
        return out
    }

    static func json(_ results: [PolicyTestResult]) -> JSONValue {
        .object([
            ("passed", .int(results.count { $0.passed })),
            ("failed", .int(results.count { !$0.passed })),
            (
                "tests",
                .array(
                    results.map { r in
                        .object([
                            ("name", .string(r.test.name)), ("passed", .bool(r.passed)), ("message", .string(r.message)),
                            ("file", .string(r.test.location.file)), ("line", .int(r.test.location.line)),
                        ])
                    })
            ),
        ])
    }

    /// One testsuite per test file, as JUnit consumers (GitHub, GitLab, Jenkins) group them.
    static func junit(_ results: [PolicyTestResult]) -> String {
        func escape(_ s: String) -> String {
            s.replacing("&", with: "&amp;").replacing("<", with: "&lt;").replacing(">", with: "&gt;").replacing("\"", with: "&quot;")
        }
        var files: [String] = []
        var byFile: [String: [PolicyTestResult]] = [:]
        for result in results {
            let file = result.test.location.file
            if byFile[file] == nil { files.append(file) }
            byFile[file, default: []].append(result)
        }
        var out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        out += "<testsuites name=\"orlctl test\" tests=\"\(results.count)\" failures=\"\(results.count { !$0.passed })\">\n"
        for file in files {
            let group = byFile[file]!
            out += "  <testsuite name=\"\(escape(file))\" tests=\"\(group.count)\" failures=\"\(group.count { !$0.passed })\">\n"
            for r in group {
                out +=
                    "    <testcase classname=\"\(escape(file))\" name=\"\(escape(r.test.name))\" file=\"\(escape(file))\" line=\"\(r.test.location.line)\""
                if r.passed {
                    out += "/>\n"
                } else {
                    out +=
                        ">\n      <failure message=\"\(escape(r.message))\">\(escape(file)):\(r.test.location.line): \(escape(r.message))</failure>\n    </testcase>\n"
                }
            }
            out += "  </testsuite>\n"
        }
        return out + "</testsuites>\n"
    }
}
