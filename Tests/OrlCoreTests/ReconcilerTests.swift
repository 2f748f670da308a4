import Foundation
import OrlCore
import OrlJSON
import Testing

@Suite struct ReconcilerTests {
    let context = AgentLaunch.Context(stateDirectory: "/var/lib/orl", apiURL: "http://127.0.0.1:7420")
    let t0 = Timestamp(milliseconds: 1_800_000_000_000)

    func launch(_ yaml: String = baseFleet, agent: String = "researcher", vault: [String: String] = [:]) throws -> AgentLaunch.Launch {
        let report = validate(yaml)
        let resource = try #require(report.fleet.resource(.agent, agent, namespace: "default"), "\(report.diagnostics.map(\.message))")
        let permissions = PolicyEngine(report.fleet).permissions(of: resource.id)
        return try #require(
            AgentLaunch.launch(
                resource, permissions: permissions, credentials: CredentialSecrets(report.fleet), context: context,
                secretValue: { vault[$0.name].map { SecretValue(value: $0, version: "v-\($0.count)") } }))
    }

    func at(_ seconds: Double) -> Timestamp { Timestamp(milliseconds: t0.milliseconds + Int64(seconds * 1000)) }

    @Test func theEnvironmentIsExactlyWhatIsDeclaredAllowedAndOrls() throws {
        let researcher = [
            "name: researcher",
            "  labels: {team: content}",
            "spec:",
            "  model: sim/small",
            "  secrets: [{name: search-key}, {name: admin-token}, {name: not-in-vault}]",
            "  runtime:",
            "    command: python3",
            "    args: [agent.py]",
            "    env: [{name: LOG_LEVEL, value: debug}, {name: ORL_TOKEN, value: forged}, {name: OPENAI_BASE_URL, value: https://api.openai.com/v1}]",
            "    resources: {memory: 256Mi, openFiles: 64, cpuTime: 1h}",
        ].joined(separator: "\n")
        let yaml =
            baseFleet
            .replacingOccurrences(
                of: "name: researcher\n  labels: {team: content}\nspec:\n  model: sim/small\n  runtime: {command: python3}",
                with: researcher
            )
            .replacingOccurrences(
                of: "allow: {tools: [web-search], models: [\"sim/*\"]",
                with: "allow: {secrets: [search-key, not-in-vault], tools: [web-search], models: [\"sim/*\"]")
        #expect(yaml.contains("admin-token") && yaml.contains("secrets: [search-key"), "the fixture edits must apply")
        let launch = try launch(yaml, vault: ["search-key": "s3cr3t", "admin-token": "root"])
        let env = launch.process(token: "orl-token-1").environment.map { "\($0.name)=\($0.value)" }
        #expect(
            env == [
                "LOG_LEVEL=debug", "SEARCH_KEY=s3cr3t", "ORL_AGENT=researcher", "ORL_NAMESPACE=default", "ORL_MODEL=sim/small",
                "ORL_API_URL=http://127.0.0.1:7420", "OPENAI_BASE_URL=http://127.0.0.1:7420/v1",
                "ANTHROPIC_BASE_URL=http://127.0.0.1:7420", "ORL_STATE_DIR=/var/lib/orl", "ORL_TOKEN=orl-token-1",
                "OPENAI_API_KEY=orl-token-1",
                "ANTHROPIC_API_KEY=orl-token-1",
            ])
        #expect(launch.withheldSecrets == ["admin-token"])
        #expect(launch.missingSecrets == ["not-in-vault"])
        #expect(launch.process.limits == ProcessLimits(addressSpace: 256 << 20, openFiles: 64, cpuSeconds: 3600))
        #expect(launch.process.workingDirectory == "/var/lib/orl/agents/default/researcher")
        #expect(launch.process.logFile == "/var/lib/orl/logs/default/researcher.log")
        #expect(launch.process.arguments == ["agent.py"])
    }

    @Test func theLaunchHashFollowsWhatShapesTheProcess() throws {
        let a = try launch()
        #expect(try launch().hash == a.hash)
        let relabelled = baseFleet.replacingOccurrences(
            of: "name: researcher\n  labels: {team: content}", with: "name: researcher\n  labels: {team: content, tier: gold}")
        #expect(try launch(relabelled).hash == a.hash, "labels do not restart the process")
        let newCommand = baseFleet.replacingOccurrences(
            of: "model: sim/small\n  runtime: {command: python3}\n  tools: [web-search]",
            with: "model: sim/small\n  runtime: {command: python3.12}\n  tools: [web-search]")
        #expect(try launch(newCommand).hash != a.hash)
    }

    @Test func startsWhatShouldRunAndRestartsWhatChanged() throws {
        let intent = AgentIntent(launch: try launch(), restartPolicy: .always)
        #expect(Reconciler.decide(intent, AgentObservation(), now: t0, random: 0).action == .start)
        let process = ProcessIdentity(pid: 4242, startTime: 99)
        let up = Reconciler.recordStart(process, launchHash: intent.launch.hash, of: AgentObservation(), at: t0)
        let steady = Reconciler.decide(intent, up, now: at(5), random: 0)
        #expect(steady.action == .none && steady.phase == .running)
        var stale = up
        stale.launchHash = "an older spec"
        #expect(Reconciler.decide(intent, stale, now: at(5), random: 0).action == .restart(process))
    }

    @Test func suspendedHaltedAndRemovedAgentsAreStopped() throws {
        let process = ProcessIdentity(pid: 7, startTime: 1)
        let up = AgentObservation(process: process, running: true, launchHash: "h")
        var intent = AgentIntent(launch: try launch(), restartPolicy: .always, hold: .suspended)
        #expect(Reconciler.decide(intent, up, now: t0, random: 0).action == .stop(process))
        #expect(Reconciler.decide(intent, AgentObservation(), now: t0, random: 0).phase == .suspended)
        #expect(Reconciler.decide(intent, up, now: t0, random: 0).reason == "SuspendedInSpec")
        intent.hold = .suspendedByUser
        let byUser = Reconciler.decide(intent, up, now: t0, random: 0)
        #expect(byUser.action == .stop(process) && byUser.phase == .suspended && byUser.reason == "SuspendedByUser")
        let stillHeld = Reconciler.decide(intent, AgentObservation(), now: t0, random: 0)
        #expect(stillHeld.action == .none && stillHeld.reason == "SuspendedByUser")
        intent.hold = .halted(reason: "BudgetExceeded", message: "Budget/daily is spent until 2026-11-22T00:00:00Z")
        let halted = Reconciler.decide(intent, up, now: t0, random: 0)
        #expect(halted.action == .stop(process) && halted.phase == .halted && halted.reason == "BudgetExceeded")
        #expect(Reconciler.decide(nil, up, now: t0, random: 0).action == .stop(process))
    }

    @Test func crashesBackOffExponentiallyToTheCap() throws {
        let intent = AgentIntent(launch: try launch(), restartPolicy: .always)
        var observed = Reconciler.recordStart(
            ProcessIdentity(pid: 1, startTime: 1), launchHash: intent.launch.hash, of: AgentObservation(), at: t0)
        var now = t0
        var waits: [Int64] = []
        for crash in 1...10 {
            now = Timestamp(milliseconds: now.milliseconds + 100)
            observed = Reconciler.recordExit(.exited(code: 1), of: observed, at: now)
            let waiting = Reconciler.decide(intent, observed, now: now, random: 0)
            #expect(waiting.action == .none && waiting.phase == .crashLoopBackOff, "crash \(crash)")
            let until = try #require(waiting.requeueAt)
            waits.append(until.milliseconds - now.milliseconds)
            #expect(Reconciler.decide(intent, observed, now: until, random: 0).action == .start)
            observed = Reconciler.recordStart(
                ProcessIdentity(pid: Int32(crash + 1), startTime: 1), launchHash: intent.launch.hash, of: observed, at: until)
            now = until
        }
        #expect(waits == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000])
        #expect(observed.restarts == 10)
    }

    @Test func aCleanExitUnderAlwaysBacksOffToo() throws {
        // An agent that exits 0 at once must not be restarted in a hot loop.
        let intent = AgentIntent(launch: try launch(), restartPolicy: .always)
        var observed = Reconciler.recordStart(
            ProcessIdentity(pid: 1, startTime: 1), launchHash: intent.launch.hash, of: AgentObservation(), at: t0)
        observed = Reconciler.recordExit(.exited(code: 0), of: observed, at: at(0.05))
        observed = Reconciler.recordStart(ProcessIdentity(pid: 2, startTime: 1), launchHash: intent.launch.hash, of: observed, at: at(1.05))
        observed = Reconciler.recordExit(.exited(code: 0), of: observed, at: at(1.1))
        let waiting = Reconciler.decide(intent, observed, now: at(1.1), random: 0)
        #expect(waiting.phase == .crashLoopBackOff && waiting.requeueAt == at(3.1))
    }

    @Test func stayingUpForgivesEarlierCrashes() throws {
        let intent = AgentIntent(launch: try launch(), restartPolicy: .always)
        var observed = AgentObservation(
            process: ProcessIdentity(pid: 1, startTime: 1), running: true, launchHash: intent.launch.hash, startedAt: t0, crashes: 6)
        observed = Reconciler.recordExit(.signaled(signal: 9), of: observed, at: at(601))
        #expect(observed.crashes == 1)
        #expect(Reconciler.decide(intent, observed, now: at(601), random: 0).requeueAt == at(602))
    }

    @Test(arguments: [
        (AgentSpec.RestartPolicy.never, ProcessExit.exited(code: 1), "Failed"),
        (.never, .exited(code: 0), "Completed"),
        (.onFailure, .exited(code: 0), "Completed"),
    ])
    func policiesThatDoNotRestart(_ policy: AgentSpec.RestartPolicy, _ exit: ProcessExit, _ reason: String) throws {
        let intent = AgentIntent(launch: try launch(), restartPolicy: policy)
        let ended = AgentObservation(
            process: ProcessIdentity(pid: 1, startTime: 1), running: false, launchHash: intent.launch.hash, lastExit: exit, exitedAt: t0,
            crashes: 1)
        let decision = Reconciler.decide(intent, ended, now: at(3600), random: 0)
        #expect(decision.action == .none && decision.phase == .stopped && decision.reason == reason)
        // A new spec deserves a new run, whatever the policy.
        var older = ended
        older.launchHash = "previous"
        #expect(Reconciler.decide(intent, older, now: at(1), random: 0).action == .start)
    }

    @Test func onFailureRestartsFailures() throws {
        let intent = AgentIntent(launch: try launch(), restartPolicy: .onFailure)
        let failed = AgentObservation(
            process: ProcessIdentity(pid: 1, startTime: 1), launchHash: intent.launch.hash, lastExit: .exited(code: 2), exitedAt: t0,
            crashes: 1)
        #expect(Reconciler.decide(intent, failed, now: at(1), random: 0).action == .start)
    }

    @Test func aFailedStartBacksOffLikeACrashButANewSpecStartsAtOnce() throws {
        let intent = AgentIntent(launch: try launch(), restartPolicy: .always)
        let failed = Reconciler.recordFailedStart(launchHash: intent.launch.hash, of: AgentObservation(), at: t0)
        #expect(failed.process == nil && failed.lastExit == .exited(code: 127) && failed.crashes == 1)
        let waiting = Reconciler.decide(intent, failed, now: t0, random: 0)
        #expect(waiting.action == .none && waiting.phase == .crashLoopBackOff && waiting.requeueAt == at(1))
        var changed = failed
        changed.launchHash = "the spec before the fix"
        #expect(Reconciler.decide(intent, changed, now: t0, random: 0).action == .start)
    }

    @Test func jitterSpreadsRestartsWithinItsShare() {
        let policy = BackoffPolicy.standard
        #expect(policy.delay(afterCrashes: 3, random: 0) == .seconds(4))
        #expect(policy.delay(afterCrashes: 3, random: 0.5) == .milliseconds(4_400))
        #expect(policy.delay(afterCrashes: 3, random: 0.999) <= .milliseconds(4_800))
        #expect(policy.delay(afterCrashes: 40, random: 0.999) == .seconds(300), "the cap holds with jitter")
    }
}
