import Foundation
import OrlCore
import OrlJSON
import Testing

/// Which secrets reach an agent's environment, and what the reconciler does while one
/// is missing: the core of the vault's wiring, without processes.
@Suite struct AgentSecretsTests {
    static let fleet = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          apiKeySecret: sim-key
          models: [{name: small, pricing: {input: 0.1, output: 0.1}}]
        ---
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: search}
        spec:
          type: http
          http: {url: "https://search.example.com/q", credentialSecret: search-token}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: worker}
        spec:
          model: sim/small
          tools: [search]
          secrets: [{name: db-pass}, {name: api-token, env: TOKEN}, {name: other-one}]
          runtime: {command: /bin/true, env: [{name: MODE, value: test}]}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: everything}
        spec:
          appliesTo: {agents: [worker]}
          allow: {secrets: ["*"], tools: [search], models: ["sim/*"]}
        """

    let context = AgentLaunch.Context(stateDirectory: "/state", apiURL: "http://127.0.0.1:1")

    func launch(
        _ yaml: String = fleet, _ lookup: (SecretID) throws(VaultError) -> SecretValue?
    ) throws -> AgentLaunch.Launch {
        let report = validate(yaml)
        let agent = try #require(report.fleet.resource(.agent, "worker", namespace: "default"))
        let launch = AgentLaunch.launch(
            agent, permissions: PolicyEngine(report.fleet).permissions(of: agent.id), credentials: CredentialSecrets(report.fleet),
            context: context, secretValue: lookup)
        return try #require(launch)
    }

    /// Every secret the agent could name, with a value, so only the rules decide.
    static func everything(_ id: SecretID) -> SecretValue? { SecretValue(value: "value-of-\(id.name)", version: "v1") }

    func secretsSpec(_ entries: String) -> String {
        Self.fleet.replacingOccurrences(
            of: "secrets: [{name: db-pass}, {name: api-token, env: TOKEN}, {name: other-one}]", with: "secrets: \(entries)")
    }

    @Test func providerKeysAndToolCredentialsNeverReachAnAgentWhateverItsPolicies() throws {
        let yaml = secretsSpec("[{name: db-pass}, {name: sim-key}, {name: search-token}]")
        let launch = try launch(yaml, Self.everything)
        let env = launch.process(token: "t").environment.map { "\($0.name)=\($0.value)" }
        #expect(
            env == [
                "MODE=test", "DB_PASS=value-of-db-pass", "ORL_AGENT=worker", "ORL_NAMESPACE=default", "ORL_MODEL=sim/small",
                "ORL_API_URL=http://127.0.0.1:1",
                "OPENAI_BASE_URL=http://127.0.0.1:1/v1", "ANTHROPIC_BASE_URL=http://127.0.0.1:1", "ORL_STATE_DIR=/state", "ORL_TOKEN=t",
                "OPENAI_API_KEY=t",
                "ANTHROPIC_API_KEY=t",
            ])
        #expect(launch.withheldSecrets == ["sim-key", "search-token"])
        #expect(launch.waiting == nil)
        // The audit says so before anything runs, pointing at who uses the secret.
        let diagnostics = validate(yaml).diagnostics.filter { $0.code == .permSecretReserved }
        #expect(
            diagnostics.map(\.message) == [
                "agent \"worker\" may not read secret \"sim-key\": it is the API key of ModelProvider/sim, which only orl presents",
                "agent \"worker\" may not read secret \"search-token\": it is the credential of Tool/search, which only orl presents",
            ])
        #expect(diagnostics.first?.notes.first?.message == "ModelProvider/sim uses it here")
        #expect(diagnostics.first?.notes.first?.location?.line == 6)
        #expect(!validate(yaml).diagnostics.contains { $0.code == .permSecretDenied })
    }

    @Test func aSecretCannotTakeOverOrlsOwnVariables() throws {
        let launch = try launch(secretsSpec("[{name: db-pass, env: ORL_TOKEN}]"), Self.everything)
        #expect(launch.process(token: "t").environment.filter { $0.name == "ORL_TOKEN" }.map(\.value) == ["t"])
        #expect(launch.withheldSecrets == ["db-pass"])
    }

    @Test func aMissingSecretMakesTheAgentWaitNamingItAndTheFix() throws {
        let launch = try launch { id in id.name == "other-one" ? nil : Self.everything(id) }
        #expect(launch.missingSecrets == ["other-one"])
        #expect(launch.process.environment.contains { $0.name == "TOKEN" && $0.value == "value-of-api-token" })
        #expect(
            launch.waiting
                == .init(
                    reason: "SecretMissing",
                    message: "waiting for secret \"other-one\", which is not in the vault (orlctl secret set other-one)"))
        let none = try self.launch { _ in nil }
        #expect(
            none.waiting?.message
                == "waiting for secrets \"db-pass\", \"api-token\", \"other-one\", which are not in the vault (orlctl secret set db-pass)")
    }

    @Test func aSecretThatCannotBeOpenedMakesTheAgentWaitWithTheVaultsReason() throws {
        let launch = try launch { _ throws(VaultError) in throw VaultError(.wrongKey, "the master key from ORL_MASTER_KEY is wrong") }
        #expect(launch.waiting?.reason == "SecretUnavailable")
        #expect(launch.waiting?.message == "cannot read secret \"db-pass\": the master key from ORL_MASTER_KEY is wrong")
    }

    @Test func theLaunchHashCoversASecretsVersionNotItsValue() throws {
        let a = try launch(Self.fleet, Self.everything)
        let sameVersion = try launch { id in SecretValue(value: "another value", version: "v1") }
        #expect(sameVersion.hash == a.hash, "the value itself is not hashed")
        let rotated = try launch { id in SecretValue(value: "value-of-\(id.name)", version: id.name == "db-pass" ? "v2" : "v1") }
        #expect(rotated.hash != a.hash, "a new version restarts the agent")
    }

    @Test func aWaitingAgentIsNotStartedAndARunningOneNotRestarted() throws {
        let ready = try launch(Self.fleet, Self.everything)
        let waiting = try launch { id in id.name == "db-pass" ? nil : Self.everything(id) }
        let now = Timestamp(milliseconds: 1_800_000_000_000)

        let pending = Reconciler.decide(AgentIntent(launch: waiting, restartPolicy: .always), AgentObservation(), now: now, random: 0)
        #expect(pending.action == .none && pending.phase == .pending && pending.reason == "SecretMissing")
        #expect(pending.message.hasPrefix("waiting for secret \"db-pass\""))

        let process = ProcessIdentity(pid: 42, startTime: 1)
        let up = Reconciler.recordStart(process, launchHash: ready.hash, of: AgentObservation(), at: now)
        let kept = Reconciler.decide(AgentIntent(launch: waiting, restartPolicy: .always), up, now: now, random: 0)
        #expect(kept.action == .none && kept.phase == .running)
        #expect(kept.message == "pid 42 is running; not restarted: \(waiting.waiting!.message)")

        // Once it exits it waits too; a hold still stops it.
        let exited = Reconciler.recordExit(.exited(code: 1), of: up, at: now)
        let later = Timestamp(milliseconds: now.milliseconds + 600_000)
        #expect(
            Reconciler.decide(AgentIntent(launch: waiting, restartPolicy: .always), exited, now: later, random: 0).reason == "SecretMissing"
        )
        let held = Reconciler.decide(AgentIntent(launch: waiting, restartPolicy: .always, hold: .suspendedByUser), up, now: now, random: 0)
        #expect(held.action == .stop(process))

        // When the secret is set, it starts.
        #expect(
            Reconciler.decide(AgentIntent(launch: ready, restartPolicy: .always), AgentObservation(), now: now, random: 0).action == .start)
    }

    @Test func anUnreadableProviderOrToolWithholdsEverySecretOfItsNamespace() throws {
        let broken = Self.fleet.replacingOccurrences(of: "apiStyle: simulated", with: "apiStyle: simulated\n  bogus: 1")
        let report = validate(broken)
        #expect(report.fleet.unreadable.contains(ResourceID(kind: "ModelProvider", name: "sim")))
        let credentials = CredentialSecrets(report.fleet)
        #expect(credentials.reservation(of: SecretID(name: "db-pass"))?.contains("cannot be read") == true)
        #expect(credentials.reservation(of: SecretID(namespace: "elsewhere", name: "db-pass")) == nil)
    }
}
