import Foundation
import Testing

/// The dashboard in a real browser: headless Chromium from Debian (scripts/install-deps
/// --test) driven by Selenium's Python client against the real controller. The browser
/// steps are in Fixtures/dashboard/browser_test.py; screenshots go to
/// .build/test-artifacts/dashboard.
@Suite(.serialized) struct DashboardBrowserTests {
    static let script = Orlctl.packageRoot.appendingPathComponent("Tests/OrlCLITests/Fixtures/dashboard/browser_test.py").path
    static let artifacts = Orlctl.packageRoot.appendingPathComponent(".build/test-artifacts/dashboard").path
    static let python =
        (ProcessInfo.processInfo.environment["ORL_MCP_VENV"] ?? (NSHomeDirectory() + "/.cache/orl/mcp-venv")) + "/bin/python"

    static let fleet = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: small, pricing: {input: 0.1, output: 0.1}}]
        ---
        apiVersion: orl.dev/v1
        kind: Budget
        metadata: {name: daily}
        spec:
          appliesTo: {selector: {matchLabels: {fleet: ui}}}
          limits: [{window: day, usd: 5}]
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: ui}
        spec:
          appliesTo: {selector: {matchLabels: {fleet: ui}}}
          allow: {models: ["sim/*"]}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: scout, labels: {fleet: ui}}
        spec:
          model: sim/small
          runtime: {command: /bin/sh, args: [-c, "exec sleep 1000"], gracePeriod: 1s}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: scribe, labels: {fleet: ui}}
        spec:
          model: sim/small
          runtime: {command: /bin/sh, args: [-c, "exec sleep 1000"], gracePeriod: 1s}
        ---
        apiVersion: orl.dev/v1
        kind: Workflow
        metadata: {name: release}
        spec:
          steps:
            - id: gate
              approval: {message: Release it?, timeout: 1h}
        """

    @Test func logInSeeTheFleetApproveAStepAndSeeTheRunFinish() async throws {
        let h = try AgentRunsTests.Harness()
        try h.work.write("fleet.yaml", Self.fleet)
        try h.apply("fleet.yaml")
        try h.startController()
        let apiFile = h.state + "/controller.api"
        #expect(await waitUntil(seconds: 30) { FileManager.default.fileExists(atPath: apiFile) }, "\(h.file("controller.log"))")
        let url = try String(contentsOfFile: apiFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let token = try String(contentsOfFile: h.state + "/controller.token", encoding: .utf8)
        let run = try h.start("release")

        let browser = try Self.python(
            [Self.script, url, token, run, "scout,scribe", Self.artifacts], in: h.work.url)
        print("dashboard screenshots in \(Self.artifacts)")
        #expect(browser.status == 0, "\(browser.stdout)\n\(browser.stderr)\n\(h.file("controller.log"))")

        // The gate was approved in the browser, recorded as `orlctl approve` records it.
        let steps = try h.steps(run)
        #expect(steps["gate"]?["state"] as? String == "Succeeded", "\(steps)")
        let described = try h.orlctl(["describe", "run/\(run)"]).stdout
        #expect(described.contains("looks good") && described.contains("(dashboard)"), "\(described)")
        try h.stopController()
    }

    static func python(_ arguments: [String], in directory: URL) throws -> Orlctl.Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        nonisolated(unsafe) var errData = Data()
        let errThread = Thread { errData = err.fileHandleForReading.readDataToEndOfFile() }
        errThread.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errThread.isFinished { usleep(1000) }
        return Orlctl.Result(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self))
    }
}
