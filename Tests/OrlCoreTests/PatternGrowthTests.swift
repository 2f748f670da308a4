import Foundation
import OrlCore
import OrlJSON
import Testing

/// The audit of bounded patterns grows with the expanded steps and edges, never with
/// the paths: a router's branches, a planner's rounds and pool, a loop's rounds each
/// add paths multiplicatively (10 branches × 2^20 choices of sub-tasks per round × ...),
/// yet doubling any one bound at most about doubles the audit's judgements. Counted,
/// not timed, so the bound holds on any machine.
@Suite struct PatternGrowthTests {
    struct Bounds {
        var routes = 10
        var pool = 20
        var poolRounds = 5
        var loopRounds = 3
    }

    static func fleet(_ b: Bounds) -> String {
        var out = """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec: {apiStyle: simulated, models: [{name: small, pricing: {input: 1, output: 1}}]}
            ---
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: lookup}
            spec: {type: command, command: {command: lookup}, dataClasses: [internal, pii]}
            ---
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: send}
            spec: {type: command, command: {command: send}, capabilities: [egress, irreversible]}
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: fleet}
            spec:
              appliesTo: {selector: {matchLabels: {team: bench}}}
              allow: {tools: [lookup, send], models: ["sim/*"], handoffs: ["*"], dataClasses: [internal, pii], egress: [internal, pii]}
              requireApproval: {tools: [send]}
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: fleet}
            spec: {appliesTo: {selector: {matchLabels: {team: bench}}}, limits: [{window: day, usd: 1000000}]}

            """
        for a in 0..<(max(b.routes, b.pool) + 3) {
            out +=
                "---\napiVersion: orl.dev/v1\nkind: Agent\nmetadata: {name: agent-\(a), labels: {team: bench}}\nspec: {model: sim/small, runtime: {command: /bin/true}, tools: [lookup, send]}\n"
        }
        out += "---\napiVersion: orl.dev/v1\nkind: Workflow\nmetadata: {name: patterns}\nspec:\n  steps:\n"
        let branches = (0..<b.routes).map { "b\($0): [route-\($0)]" }.joined(separator: ", ")
        out += "    - {id: classify, agent: agent-0, tools: [lookup], maxTokens: 1000, route: {key: kind, branches: {\(branches)}}}\n"
        for r in 0..<b.routes {
            out += "    - {id: route-\(r), agent: agent-\(r + 1), tools: [lookup], maxTokens: 1000, fallback: [{agent: agent-\(r + 2)}]}\n"
        }
        out += "    - {id: gate, approval: {}, dependsOn: [\((0..<b.routes).map { "route-\($0)" }.joined(separator: ", "))]}\n"
        let workers = (0..<b.pool).map { "agent-\($0 + 1)" }.joined(separator: ", ")
        out +=
            "    - {id: plan, agent: agent-0, dependsOn: [gate], maxTokens: 1000, delegate: {workers: [\(workers)], maxTasks: \(b.pool), maxRounds: \(b.poolRounds), tools: [lookup], maxTokens: 1000}}\n"
        out += "    - {id: write, agent: agent-1, dependsOn: [plan], maxTokens: 1000, inputs: {feedback: {step: review}}}\n"
        out +=
            "    - {id: review, agent: agent-2, dependsOn: [write], maxTokens: 1000, loop: {from: write, maxRounds: \(b.loopRounds), until: {key: ok, equals: true}}}\n"
        out += "    - {id: ok, approval: {}, dependsOn: [review]}\n"
        out += "    - {id: send, agent: agent-3, dependsOn: [ok], tools: [send], maxTokens: 1000}\n"
        return out
    }

    static func work(_ b: Bounds) throws -> (work: Int, steps: Int) {
        let report = validate(fleet(b))
        #expect(report.isValid, "\(report.diagnostics.prefix(3).map(\.message))")
        let workflow = try #require(report.fleet.resources(of: .workflow).first)
        let audit = PolicyAudit.audit(workflow: workflow, in: report.fleet, engine: PolicyEngine(report.fleet))
        #expect(audit.diagnostics.isEmpty, "\(audit.diagnostics.prefix(3).map(\.message))")
        return (audit.work, workflow.workflow!.steps.count)
    }

    @Test func doublingAnyBoundAtMostAboutDoublesTheAuditsWork() throws {
        let base = try Self.work(Bounds())
        #expect(base.steps == 1 + 10 + 10 + 1 + 5 * (1 + 20) + 3 * 2 + 2)
        var doubled: [(String, Bounds)] = []
        var b = Bounds()
        b.routes = 20
        doubled.append(("routes", b))
        b = Bounds()
        b.pool = 40
        doubled.append(("pool", b))
        b = Bounds()
        b.poolRounds = 10
        doubled.append(("pool rounds", b))
        b = Bounds()
        b.loopRounds = 6
        doubled.append(("loop rounds", b))
        for (name, bounds) in doubled {
            let grown = try Self.work(bounds)
            // Each bound's own part at most doubles, and the rest stays: never squared.
            #expect(grown.work <= 2 * base.work, "\(name): \(base.work) → \(grown.work)")
            #expect(grown.work > base.work, "\(name): the audit judges the added steps")
        }
        // Quadrupling a bound grows the work at most fourfold (linear), not 16-fold.
        var four = Bounds()
        four.loopRounds = 12
        four.routes = 40
        let grown = try Self.work(four)
        #expect(grown.work <= 4 * base.work, "\(base.work) → \(grown.work)")
    }
}
