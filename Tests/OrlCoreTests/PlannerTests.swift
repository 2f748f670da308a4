import Foundation
import OrlCore
import OrlJSON
import Testing

@Suite struct PlannerTests {
    let options = ApplyOptions(source: "cli:manifests", prune: true, appliedBy: "tester")
    let t0 = Timestamp(milliseconds: 1_795_000_000_000)

    func fleet(_ yaml: String) throws -> Fleet {
        let report = validate(yaml)
        try #require(report.isValid, "\(report.diagnostics.map(\.message))")
        return report.fleet
    }

    @Test func firstApplyCreatesEverythingThenNothingChanges() throws {
        let store = InMemoryStateStore()
        let first = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0)
        #expect(first.plan.summary == "Plan: 10 to add, 0 to change, 0 to prune (0 unchanged).")
        #expect(first.applyNumber == 1)
        #expect(first.plan.changes.map(\.id.kind).first == "ModelProvider")
        let again = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0)
        #expect(again.plan.summary == "Plan: 0 to add, 0 to change, 0 to prune (10 unchanged).")
        #expect(again.applyNumber == nil)
        #expect(store.snapshot.history.count == 1, "a no-op apply writes nothing")
        #expect(store.snapshot.events.count == 10)
    }

    @Test func reformattingIsNoChange() throws {
        let store = InMemoryStateStore()
        _ = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0)
        let reformatted =
            baseFleet
            .replacingOccurrences(of: "pricing: {input: 0.15, output: 0.6}", with: "pricing:\n        output: 0.60\n        input: 0.150")
        let plan = try ApplyOperation.apply(fleet(reformatted), to: store, options: options, now: t0).plan
        #expect(plan.isEmpty)
    }

    @Test func oneFieldChangeIsOneUpdateWithTheField() throws {
        let store = InMemoryStateStore()
        _ = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0)
        let changed = baseFleet.replacingOccurrences(of: "limits: [{window: day, usd: 10}]", with: "limits: [{window: day, usd: 12}]")
        let outcome = try ApplyOperation.apply(fleet(changed), to: store, options: options, now: t0)
        #expect(outcome.plan.summary == "Plan: 0 to add, 1 to change, 0 to prune (9 unchanged).")
        let change = try #require(outcome.plan.changes.first)
        #expect(change.id == ResourceID(kind: "Budget", name: "daily"))
        #expect(
            change.fields.map { "\($0.kind) \($0.path) \($0.before ?? "") → \($0.after ?? "")" } == [
                "changed spec.limits[window=day].usd 10 → 12"
            ])
        #expect(change.specChanged && change.desired?.generation == 2 && change.desired?.resourceVersion == 2)
    }

    @Test func labelsChangeTheVersionNotTheGeneration() throws {
        let store = InMemoryStateStore()
        _ = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0)
        let relabelled = baseFleet.replacingOccurrences(
            of: "metadata: {name: daily}", with: "metadata: {name: daily, labels: {tier: gold}}")
        let change = try #require(ApplyOperation.apply(fleet(relabelled), to: store, options: options, now: t0).plan.changes.first)
        #expect(!change.specChanged)
        #expect(change.desired?.generation == 1 && change.desired?.resourceVersion == 2)
    }

    @Test func pruneRemovesOnlyWhatThisSourceOwns() throws {
        let store = InMemoryStateStore()
        _ = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0)
        let other = ApplyOptions(source: "cli:elsewhere", prune: true, appliedBy: "tester")
        let extra = "apiVersion: orl.dev/v1\nkind: Tool\nmetadata: {name: lonely}\nspec: {type: command, command: {command: x}}\n"
        _ = try ApplyOperation.apply(fleet(extra), to: store, options: other, now: t0)
        // The first source drops its Budget: only that is pruned, never the other source's tool.
        let withoutBudget = baseFleet.replacingOccurrences(
            of:
                "---\napiVersion: orl.dev/v1\nkind: Budget\nmetadata: {name: daily}\nspec:\n  appliesTo: {selector: {matchLabels: {team: content}}, agents: [publisher]}\n  limits: [{window: day, usd: 10}]\n",
            with: "")
        let report = validate(withoutBudget)
        let plan = try ApplyOperation.apply(report.fleet, to: store, options: options, now: t0).plan
        #expect(plan.changes.map { "\($0.action) \($0.id)" } == ["prune Budget/daily"])
        #expect(store.snapshot.resources[ResourceID(kind: "Tool", name: "lonely")] != nil)
    }

    @Test func withoutPruneNothingIsDeleted() throws {
        let store = InMemoryStateStore()
        _ = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0)
        var noPrune = options
        noPrune.prune = false
        let plan = try ApplyOperation.apply(fleet(supportFleet), to: store, options: noPrune, now: t0).plan
        #expect(plan.prunes == 0)
    }

    @Test func pruningEverythingNeedsAllowEmpty() throws {
        let store = InMemoryStateStore()
        _ = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0)
        #expect(throws: ApplyError.self) { try ApplyOperation.apply(Fleet([]), to: store, options: options, now: t0) }
        #expect(store.snapshot.resources.count == 10, "a refused plan writes nothing")
        var allow = options
        allow.allowEmpty = true
        allow.maxDeletions = 100
        let plan = try ApplyOperation.apply(Fleet([]), to: store, options: allow, now: t0).plan
        #expect(plan.prunes == 10)
        #expect(store.snapshot.resources.isEmpty)
    }

    @Test func maxDeletionsStopsABigPrune() throws {
        let store = InMemoryStateStore()
        _ = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0)
        var limited = options
        limited.maxDeletions = 3
        let onlyProvider =
            "apiVersion: orl.dev/v1\nkind: ModelProvider\nmetadata: {name: sim}\nspec: {apiStyle: simulated, models: [{name: small, pricing: {input: 0.15, output: 0.6}}]}\n"
        do {
            _ = try ApplyOperation.apply(validate(onlyProvider).fleet, to: store, options: limited, now: t0)
            Issue.record("expected a refusal")
        } catch {
            #expect(error.description.contains("prunes 9 resources, more than --max-deletions 3"))
        }
        #expect(store.snapshot.resources.count == 10)
        #expect(store.snapshot.history.count == 1)
    }

    @Test func dryRunWritesNothing() throws {
        let store = InMemoryStateStore()
        let outcome = try ApplyOperation.apply(fleet(baseFleet), to: store, options: options, now: t0, dryRun: true)
        #expect(outcome.plan.additions == 10)
        #expect(store.snapshot.resources.isEmpty && store.snapshot.history.isEmpty)
    }

    @Test func secretLikeValuesAreMasked() throws {
        let store = InMemoryStateStore()
        let withEnv = baseFleet.replacingOccurrences(
            of: "  runtime: {command: python3}\n  tools: [web-search]",
            with: "  runtime: {command: python3, env: [{name: SEARCH_API_KEY, value: abc123}]}\n  tools: [web-search]")
        _ = try ApplyOperation.apply(fleet(withEnv), to: store, options: options, now: t0)
        let rotated = withEnv.replacingOccurrences(of: "value: abc123", with: "value: def456")
        let change = try #require(ApplyOperation.apply(fleet(rotated), to: store, options: options, now: t0).plan.changes.first)
        #expect(change.fields.map(\.before) == ["(sensitive)"] && change.fields.map(\.after) == ["(sensitive)"])
        let back = try ApplyOperation.apply(fleet(withEnv), to: store, options: options, now: t0, dryRun: true).plan
        #expect(!PlanJSON.render(back).rendered().contains("abc123") && !PlanJSON.render(back).rendered().contains("def456"))
    }

    @Test(arguments: [
        ("password", true), ("Authorization", true), ("X-Api-Key", true), ("client_secret", true), ("token", true),
        ("accessToken", true), ("bot_token", true), ("apiKey", true), ("secret", true),
        ("tokens", false), ("maxTokens", false), ("maxTokensPerCall", false), ("apiKeySecret", false), ("credentialSecret", false),
        ("secrets", false),
    ])
    func credentialKeys(_ key: String, _ sensitive: Bool) {
        #expect(Sensitivity.isSensitive(key: key) == sensitive)
    }

    @Test func budgetTokensAreNotMasked() throws {
        let store = InMemoryStateStore()
        let withTokens = baseFleet.replacingOccurrences(
            of: "limits: [{window: day, usd: 10}]", with: "limits: [{window: day, usd: 10, tokens: 5000}]")
        _ = try ApplyOperation.apply(fleet(withTokens), to: store, options: options, now: t0)
        let more = withTokens.replacingOccurrences(of: "tokens: 5000", with: "tokens: 6000")
        let change = try #require(ApplyOperation.apply(fleet(more), to: store, options: options, now: t0).plan.changes.first)
        #expect(change.fields.map { "\($0.path) \($0.before ?? "") → \($0.after ?? "")" } == ["spec.limits[window=day].tokens 5000 → 6000"])
    }

    @Test func canonicalTimestamps() {
        #expect(Timestamp(milliseconds: 0).description == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp(milliseconds: 1_795_000_000_123).description == "2026-11-18T11:06:40.123Z")
        #expect(Timestamp(milliseconds: 951_782_400_000).description == "2000-02-29T00:00:00.000Z")
    }
}
