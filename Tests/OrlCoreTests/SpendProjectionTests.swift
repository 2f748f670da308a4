import Foundation
import OrlCore
import Testing

/// The review's projected monthly spend: schedules × token bounds × prices, and the
/// ledger's recent tokens priced at each revision's models.
@Suite struct SpendProjectionTests {
    /// An average month: 365.2425 / 12 days.
    static let month = 30.436875

    @Test func aScheduleFiresItsAverageNumberOfTimesAMonth() throws {
        func perMonth(_ cron: String) throws -> Double { try CronSchedule(parsing: cron).firingsPerMonth }
        #expect(abs(try perMonth("0 9 * * *") - Self.month) < 1e-9)
        #expect(abs(try perMonth("*/15 * * * *") - 96 * Self.month) < 1e-6)
        // A 400-year cycle is a whole number of weeks: weekdays are exactly 5/7 of days.
        #expect(abs(try perMonth("0 9 * * mon-fri") - Self.month * 5 / 7) < 1e-9)
        #expect(abs(try perMonth("30 2 1 * *") - 1) < 1e-9)
        #expect(abs(try perMonth("0 0 1 1,7 *") - 2.0 / 12) < 1e-9)
        // 97 leap days in 400 years.
        #expect(abs(try perMonth("0 0 29 2 *") - 97.0 / 4_800) < 1e-12)
        // Both day fields restricted: either matches (the 13th, or a Friday).
        let either = try perMonth("0 0 13 * 5")
        #expect(either > Self.month / 7 && either < Self.month / 7 + 1)
    }

    /// The base fleet's pipeline, run every day at 09:00, each agent step bounded.
    static let scheduled =
        baseFleet
        .replacingOccurrences(
            of: "  inputs: [{name: topic}]\n",
            with: "  triggers: [{type: schedule, cron: \"0 9 * * *\"}]\n  inputs: [{name: topic, default: x}]\n"
        )
        .replacingOccurrences(
            of: "    - id: research\n      agent: researcher\n",
            with: "    - id: research\n      agent: researcher\n      maxTokens: 10000\n      retry: {attempts: 2}\n"
        )
        .replacingOccurrences(
            of: "    - id: draft-a\n      agent: writer\n", with: "    - id: draft-a\n      agent: writer\n      maxTokens: 5000\n"
        )
        .replacingOccurrences(
            of: "    - id: draft-b\n      agent: writer\n", with: "    - id: draft-b\n      agent: writer\n      maxTokens: 5000\n"
        )
        .replacingOccurrences(
            of: "    - id: publish\n      agent: publisher\n", with: "    - id: publish\n      agent: publisher\n      maxTokens: 1000\n")

    @Test func scheduledRunsAreProjectedPerWorkflowAndAgent() throws {
        let report = validate(Self.scheduled)
        #expect(report.diagnostics.filter { $0.severity == .error }.isEmpty, "\(report.diagnostics.map(\.message))")
        let projection = SpendProjection(report.fleet)
        // Every attempt at the dearer price ($0.60 per million output tokens).
        let perRun = Double(2 * 10_000 + 5_000 + 5_000 + 1_000) * 0.6 / 1_000_000
        let workflow = try #require(projection.workflows.first)
        #expect(projection.workflows.count == 1 && workflow.workflow.name == "pipeline")
        #expect(abs(workflow.runsPerMonth - Self.month) < 1e-9)
        #expect(abs(workflow.perRun - perRun) < 1e-12)
        #expect(workflow.unboundedSteps.isEmpty && projection.unbounded.isEmpty)
        #expect(abs(projection.month - perRun * Self.month) < 1e-9)
        let byAgent = Dictionary(uniqueKeysWithValues: projection.agents.map { ($0.agent.name, $0.scheduled) })
        #expect(abs(byAgent["researcher"]! - 20_000 * 0.6 / 1_000_000 * Self.month) < 1e-9)
        #expect(abs(byAgent["writer"]! - 10_000 * 0.6 / 1_000_000 * Self.month) < 1e-9)
        #expect(projection.agents.allSatisfy { $0.observed == nil })

        // A manual workflow projects nothing without a ledger.
        #expect(SpendProjection(validate(baseFleet).fleet).month == 0)
    }

    @Test func aChangeThatRaisesATokenBoundRaisesTheProjection() throws {
        let head = Self.scheduled.replacingOccurrences(of: "maxTokens: 10000", with: "maxTokens: 100000")
        let review = Review.compare(base: validate(Self.scheduled), head: validate(head))
        let projection = try #require(review.projection)
        let increase = try #require(projection.monthlyIncrease)
        #expect(abs(increase - 2 * 90_000 * 0.6 / 1_000_000 * Self.month) < 1e-9)
        #expect(projection.exceeds(3) && !projection.exceeds(4))
        #expect(projection.increaseDescription == "+$3.29 a month")
        let researcher = try #require(projection.agentRows.first { $0.id.name == "researcher" })
        #expect(researcher.after > researcher.before)
        #expect(projection.agentRows.filter { $0.id.name != "researcher" }.allSatisfy { $0.before == $0.after })
        #expect(review.spendItems.contains { $0.hasPrefix("projected spend: $0.57 → $3.86 a month, +$3.29 a month (agent \"researcher\"") })
    }

    @Test func aScheduledStepWithNoBoundLeavesTheProjectionUnbounded() throws {
        let head = Self.scheduled.replacingOccurrences(of: "      maxTokens: 1000\n", with: "")
        let projection = try #require(Review.compare(base: validate(Self.scheduled), head: validate(head)).projection)
        #expect(projection.after.unbounded == ["workflow/pipeline step \"publish\""])
        #expect(projection.monthlyIncrease == nil && projection.exceeds(1_000_000))
        #expect(projection.increaseDescription.hasPrefix("unbounded (workflow/pipeline step \"publish\" has no maxTokens)"))
        // Unbounded on both sides is no change of bound.
        let same = try #require(Review.compare(base: validate(head), head: validate(head)).projection)
        #expect(same.monthlyIncrease == 0)
    }

    @Test func theLedgersTokensArePricedAtEachRevisionsModel() throws {
        let dearer = baseFleet.replacingOccurrences(
            of: "      pricing: {input: 0.15, output: 0.6}\n",
            with: "      pricing: {input: 0.15, output: 0.6}\n    - name: large\n      pricing: {input: 3, output: 15}\n")
        let head = dearer.replacingOccurrences(
            of: "  name: writer\n  labels: {team: content}\nspec:\n  model: sim/small",
            with: "  name: writer\n  labels: {team: content}\nspec:\n  model: sim/large")
        #expect(head != dearer && dearer != baseFleet)
        let writer = ResourceID(kind: "Agent", name: "writer")
        let observed = ObservedUsage(tokens: [writer: TokenUsage(prompt: 1_000_000, completion: 1_000_000)], days: 30)
        let projection = try #require(Review.compare(base: validate(dearer), head: validate(head), observed: observed).projection)
        let before = try #require(projection.before.agents.first { $0.agent == writer }?.observed)
        let after = try #require(projection.after.agents.first { $0.agent == writer }?.observed)
        #expect(abs(before - 0.75 * Self.month / 30) < 1e-9)
        #expect(abs(after - 18 * Self.month / 30) < 1e-9)
        #expect(abs(projection.monthlyIncrease! - 17.25 * Self.month / 30) < 1e-9)
        // Without a ledger the same change projects nothing: nothing is scheduled.
        #expect(Review.compare(base: validate(dearer), head: validate(head)).projection?.monthlyIncrease == 0)
    }
}
