import Foundation
import Glibc
import Testing

/// The vault and the controller end to end: which secrets reach agents' environments,
/// what an agent does while one is missing, and that a value shows up nowhere else.
@Suite(.serialized) struct VaultAgentTests {
    typealias Harness = ControllerCommandTests.Harness

    static let dbPass = "dbpass-Q7xV9-distinctive"
    static let rotated = "dbpass-rotated-L5nT1-distinctive"
    static let apiToken = "apitoken-K3mZ8-distinctive"
    static let providerKey = "simkey-P4wR2-distinctive"
    static let values = [dbPass, rotated, apiToken, providerKey]

    /// Agent `a` asks for two secrets and for a provider's key; `b` asks for none. One
    /// policy allows every secret to both. The provider whose key `a` asks for is applied
    /// from another source, so the audit of `a`'s manifests cannot see it: only the
    /// runtime stands between `a` and the key.
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
        metadata: {name: all}
        spec:
          appliesTo: {agents: [a, b]}
          limits: [{window: day, usd: 1}]
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: all}
        spec:
          appliesTo: {agents: [a, b]}
          allow: {secrets: ["*"], models: ["sim/*"]}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: a}
        spec:
          model: sim/small
          secrets: [{name: db-pass}, {name: api-token, env: TOKEN}, {name: upstream-key}]
          runtime:
            command: /bin/sh
            args: [-c, "echo up; exec sleep 1000"]
            env: [{name: VERSION, value: v1}]
            gracePeriod: 2s
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: b}
        spec:
          model: sim/small
          runtime:
            command: /bin/sh
            args: [-c, "echo up; exec sleep 1000"]
            env: [{name: VERSION, value: v1}]
            gracePeriod: 2s

        """

    static let provider = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: upstream}
        spec:
          apiStyle: openai
          baseURL: https://llm.example.com/v1
          apiKeySecret: upstream-key
          models: [{name: big, pricing: {input: 1, output: 2}}]

        """

    func setUp(_ h: Harness) throws {
        try h.work.write("fleet/fleet.yaml", Self.fleet)
        try h.work.write("keys/provider.yaml", Self.provider)
        for source in ["fleet", "keys"] {
            let r = try h.orlctl(["apply", "-f", source])
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        }
    }

    func set(_ h: Harness, _ name: String, _ value: String) throws {
        let r = try Orlctl.run(["secret", "set", name, "--state", h.state], stdin: value + "\n", in: h.work.url)
        #expect(r.status == 0, "\(r.stderr)")
    }

    /// The process's environment, without the PWD that /bin/sh exports itself.
    func environment(_ pid: Int32) throws -> [String: String] {
        let text = try String(contentsOfFile: "/proc/\(pid)/environ", encoding: .utf8)
        var result: [String: String] = [:]
        for entry in text.split(separator: "\0") {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            result[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        result["PWD"] = nil
        return result
    }

    /// Agent `name`'s Ready condition as `get -o json` shows it.
    func ready(_ h: Harness, _ name: String) -> [String: Any]? {
        guard let r = try? h.orlctl(["get", "agent", name, "-o", "json"]),
            let json = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
            let conditions = (json["status"] as? [String: Any])?["conditions"] as? [[String: Any]]
        else { return nil }
        return conditions.first { $0["type"] as? String == "Ready" }
    }

    @Test func agentsGetExactlyTheirAllowedSecretsAndNoValueLeaksAnywhereElse() async throws {
        let h = try Harness()
        try setUp(h)
        try set(h, "db-pass", Self.dbPass)
        try set(h, "upstream-key", Self.providerKey)
        try h.startController()

        // `a` waits for api-token, saying so; `b` needs nothing and runs.
        _ = try await h.waitForAgents(["b"], "before api-token is set")
        #expect(
            await waitUntil(seconds: 30) {
                guard let ready = ready(h, "a") else { return false }
                return ready["status"] as? String == "False" && ready["reason"] as? String == "SecretMissing"
                    && (ready["message"] as? String ?? "").contains("waiting for secret \"api-token\", which is not in the vault")
            }, "\(String(describing: ready(h, "a")))\n\(h.log())")
        #expect(h.agents()["a"] == nil)
        #expect(h.log().contains("not starting Agent/a: waiting for secret \"api-token\""), "\(h.log())")
        #expect(try h.orlctl(["events", "--for", "agent/a"]).stdout.contains("Warning  Waiting"))

        // Setting it starts `a`, with its two secrets and not the provider's key.
        try set(h, "api-token", Self.apiToken)
        let pids = try await h.waitForAgents(["a", "b"], "after api-token is set")
        let own = [
            "ORL_AGENT", "ORL_NAMESPACE", "ORL_MODEL", "ORL_API_URL", "ORL_TOKEN", "OPENAI_BASE_URL", "OPENAI_API_KEY",
            "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "VERSION", "ORL_CODE_DIR", "ORL_STATE_DIR",
        ]
        let a = try environment(pids["a"]!)
        #expect(Set(a.keys) == Set(own + ["DB_PASS", "TOKEN"]), "\(a.keys.sorted())")
        #expect(a["DB_PASS"] == Self.dbPass && a["TOKEN"] == Self.apiToken)
        #expect(!a.values.contains(Self.providerKey))
        let b = try environment(pids["b"]!)
        #expect(Set(b.keys) == Set(own), "\(b.keys.sorted())")

        // A new value restarts the agent that receives it, and only that one.
        try set(h, "db-pass", Self.rotated)
        #expect(
            await waitUntil(seconds: 30) {
                guard let pid = h.agents()["a"], pid.count == 1, pid[0] != pids["a"] else { return false }
                return (try? environment(pid[0]))?["DB_PASS"] == Self.rotated
            }, "\(h.log())")
        #expect(h.agents()["b"] == [pids["b"]!])

        // Nothing a user can ask shows a value.
        var outputs: [String] = []
        var failed: [String] = []
        for command in [
            ["get", "agents", "-o", "json"], ["get", "agents", "-o", "yaml"], ["get", "all", "-o", "wide"], ["describe", "agent/a"],
            ["describe", "agent/b"], ["describe", "modelprovider/upstream"], ["events"], ["events", "-o", "json"],
            ["history", "-o", "json"],
            ["logs", "agent/a"], ["secret", "list", "-o", "json"], ["diff", "-f", "fleet"],
        ] {
            let r = try h.orlctl(command)
            outputs.append("$ \(command.joined(separator: " "))\n\(r.stdout)\(r.stderr)")
            // diff exits 1 only for changes; there are none.
            if r.status != 0 { failed.append("\(command): \(r.stderr)") }
        }
        #expect(failed.isEmpty, "every command ran: \(failed)")
        #expect(outputs[3].contains("Ready") && outputs[6].contains("secret/db-pass"), "the commands ran:\n\(outputs.joined())")
        try await h.stopController()
        outputs.append(h.log())
        let everything = outputs.joined(separator: "\n")
        for value in Self.values { #expect(!everything.contains(value), "\(value) in the output:\n\(everything)") }

        // Nor any file of the state: the database (and its WAL), the logs, the key file.
        let files = try FileManager.default.subpathsOfDirectory(atPath: h.state)
        #expect(files.contains("state.db") && files.contains("logs/default/a.log") && files.contains("master.key"), "\(files)")
        for file in files {
            guard let data = FileManager.default.contents(atPath: h.state + "/" + file) else { continue }
            for value in Self.values { #expect(data.range(of: Data(value.utf8)) == nil, "\(value) in \(file)") }
        }
    }

    @Test func withTheWrongKeyAnAgentWaitsAndSaysWhy() async throws {
        let h = try Harness()
        try setUp(h)
        for (name, value) in [("db-pass", Self.dbPass), ("api-token", Self.apiToken)] { try set(h, name, value) }
        let wrong = Data(repeating: 7, count: 32).base64EncodedString()
        try h.startController(environment: ["ORL_MASTER_KEY": wrong])
        _ = try await h.waitForAgents(["b"], "with the wrong key")
        #expect(
            await waitUntil(seconds: 30) {
                guard let ready = ready(h, "a"), let message = ready["message"] as? String else { return false }
                return ready["reason"] as? String == "SecretUnavailable"
                    && message.contains("cannot read secret \"db-pass\": the master key from ORL_MASTER_KEY (key id ")
                    && message.contains("is not the key the vault's secrets were sealed with")
            }, "\(String(describing: ready(h, "a")))\n\(h.log())")
        #expect(h.agents()["a"] == nil)
        try await h.stopController()
    }
}
