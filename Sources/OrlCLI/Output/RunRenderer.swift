import Foundation
import OrlCore
import OrlJSON

/// A run with what `runs`, `describe run` and `run --wait` show of it.
struct RunView {
    var run: RunRecord
    var plan: RunPlan
    var steps: [StepRecord]
    var attempts: [AttemptRecord] = []
    var events: [StoreEvent] = []
    /// The ledger's spend against each step.
    var spend: [String: Charge] = [:]
    /// The Ready condition of the agents of steps that wait for them (Ready or Running),
    /// when their process is not running: why a step does not move.
    var agentConditions: [ResourceID: ResourceStatus.Condition] = [:]

    /// Running, or WaitingApproval while a gate waits; else the phase.
    var status: String {
        run.phase == .running && steps.contains(where: { $0.state == .waitingApproval }) ? "WaitingApproval" : run.phase.rawValue
    }

    var succeeded: Int { steps.count { $0.state == .succeeded } }
}

/// Text and JSON for runs.
enum RunRenderer {
    // MARK: Lists

    static func table(_ views: [RunView], now: Timestamp, allNamespaces: Bool) -> String {
        var rows = [(allNamespaces ? ["NAMESPACE"] : []) + ["RUN", "WORKFLOW", "STATUS", "STEPS", "TRIGGER", "STARTED", "DURATION"]]
        for view in views {
            let run = view.run
            rows.append(
                (allNamespaces ? [run.workflow.namespace] : []) + [
                    run.id.rawValue, run.workflow.name, view.status, "\(view.succeeded)/\(view.steps.count)", run.trigger.name,
                    run.createdAt.age(at: now), run.createdAt.age(at: run.endedAt ?? now),
                ])
        }
        return TextTable.render(rows)
    }

    static func approvalsTable(_ pending: [(view: RunView, step: StepRecord)], now: Timestamp, allNamespaces: Bool) -> String {
        var rows = [(allNamespaces ? ["NAMESPACE"] : []) + ["RUN", "WORKFLOW", "STEP", "WAITING", "TIMEOUT", "MESSAGE"]]
        for (view, step) in pending {
            let gate = approval(of: step, in: view.plan)
            rows.append(
                (allNamespaces ? [view.run.workflow.namespace] : []) + [
                    view.run.id.rawValue, view.run.workflow.name, step.id, step.startedAt.map { $0.age(at: now) } ?? "-",
                    step.deadline.map { "\(now.age(at: $0)) (\(gate?.onTimeout.rawValue ?? "deny"))" } ?? "-",
                    gate?.message.map(oneLine) ?? "",
                ])
        }
        return TextTable.render(rows)
    }

    /// Tool calls waiting for approval (`orlctl approve call/ID`).
    static func callApprovalsTable(_ calls: [ToolApproval], now: Timestamp, allNamespaces: Bool) -> String {
        var rows = [(allNamespaces ? ["NAMESPACE"] : []) + ["CALL", "AGENT", "TOOL", "WAITING", "TIMEOUT", "ARGUMENTS"]]
        for call in calls {
            let arguments = oneLine(call.arguments)
            rows.append(
                (allNamespaces ? [call.agent.namespace] : []) + [
                    call.reference, call.agent.name, call.tool, call.requestedAt.age(at: now), "\(now.age(at: call.expiresAt)) (deny)",
                    arguments.count > 60 ? String(arguments.prefix(59)) + "…" : arguments,
                ])
        }
        return TextTable.render(rows)
    }

    static func callApprovalJSON(_ call: ToolApproval) -> JSONValue {
        .object([
            ("call", .string(call.reference)), ("namespace", .string(call.agent.namespace)), ("agent", .string(call.agent.name)),
            ("tool", .string(call.tool)), ("arguments", .string(call.arguments)), ("requestedAt", .string(call.requestedAt.description)),
            ("deadline", .string(call.expiresAt.description)),
        ])
    }

    // MARK: Describe

    static func describe(_ view: RunView, now: Timestamp) -> String {
        let run = view.run
        var out = ""
        func field(_ label: String, _ value: String) { out += (label + ":").padding(toLength: 20) + value + "\n" }
        field("Run", run.id.rawValue)
        field("Workflow", "\(run.workflow.name) (generation \(run.generation))")
        field("Namespace", run.workflow.namespace)
        field("Status", view.status)
        switch run.trigger {
        case .manual: field("Trigger", "manual, by \(run.createdBy)")
        case .schedule(let cron, let slot): field("Trigger", "schedule \(Diagnostic.quoted(cron)), slot \(slot.rfc3339Seconds)")
        }
        field("Started", "\(run.createdAt.rfc3339Seconds) (\(run.createdAt.age(at: now)) ago)")
        field("Ended", run.endedAt.map { "\($0.rfc3339Seconds) (after \(run.createdAt.age(at: $0)))" } ?? "<none>")
        if let error = run.error { field("Error", error) }
        let inputs = (try? JSONParser.parse(run.input, file: "<run>"))?.members ?? []
        if inputs.isEmpty {
            field("Input", "<none>")
        } else {
            out += "Input:\n"
            for member in inputs { out += "  \(member.key): \(member.value.string ?? CanonicalJSON.encode(member.value))\n" }
        }
        out += "Steps:\n"
        var rows = [["STEP", "STATE", "ATTEMPTS", "AGENT", "STARTED", "ENDED", "TOKENS", "USD", "ERROR"]]
        for step in view.steps {
            let planned = view.plan.steps[step.index]
            let spent = view.spend[step.id] ?? .zero
            rows.append([
                step.id, step.state.rawValue, planned.isApprovalGate ? "-" : "\(step.attempt)/\(planned.attempts)",
                step.agent?.name ?? (planned.isApprovalGate ? "<approval>" : "<unassigned>"), step.startedAt?.rfc3339Seconds ?? "-",
                step.endedAt?.rfc3339Seconds ?? "-",
                String(spent.tokens), spent.usd > 0 ? Money.format(spent.usd, decimals: 6) : "-", step.error.map(oneLine) ?? "",
            ])
        }
        out += TextTable.render(rows, indent: 2)
        // What routes, loops, fallbacks and planners decided, and the value that decided it.
        let decided = view.steps.filter { !view.plan.steps[$0.index].isApprovalGate && $0.reason != nil }
        if !decided.isEmpty {
            out += "Decisions:\n"
            for step in decided { out += "  \(step.id): \(oneLine(step.reason!))\n" }
        }
        let stuck = view.steps.compactMap { step -> (StepRecord, ResourceStatus.Condition)? in
            guard step.state == .ready || step.state == .running, let agent = step.agent, let condition = view.agentConditions[agent]
            else { return nil }
            return (step, condition)
        }
        if !stuck.isEmpty {
            out += "Waiting for Agents:\n"
            for (step, condition) in stuck {
                out += "  \(step.id): agent \(step.agent!.name) is not running (\(condition.reason)): \(oneLine(condition.message))\n"
            }
        }
        let waiting = view.steps.filter { $0.state == .waitingApproval }
        if !waiting.isEmpty {
            out += "Pending Approval:\n"
            for step in waiting {
                let gate = approval(of: step, in: view.plan)
                out += "  \(step.id): \(gate?.message.map(oneLine) ?? "approve or deny")\n"
                if let deadline = step.deadline {
                    out +=
                        "    waiting since \(step.startedAt?.rfc3339Seconds ?? "?"); \(gate?.onTimeout == .approve ? "approved" : "denied") at \(deadline.rfc3339Seconds) unless decided\n"
                }
                out += "    orlctl approve run/\(run.id) --step \(step.id)   (or deny)\n"
            }
        }
        // What a failed or retried step went through: its attempts and their errors.
        let inspected = Set(view.steps.filter { $0.state == .deadLetter || $0.attempt > 1 }.map(\.id))
        let attempts = view.attempts.filter { inspected.contains($0.step) }
        if !attempts.isEmpty {
            out += "Attempts:\n"
            var rows = [["STEP", "ATTEMPT", "OUTCOME", "STARTED", "ENDED", "ERROR"]]
            for a in attempts {
                rows.append([
                    a.step, String(a.attempt), a.outcome.rawValue, a.startedAt.rfc3339Seconds, a.endedAt?.rfc3339Seconds ?? "-",
                    a.error.map(oneLine) ?? "",
                ])
            }
            out += TextTable.render(rows, indent: 2)
        }
        out += ResourceRenderer.eventsSection(view.events, now: now)
        return out
    }

    // MARK: JSON

    static func json(_ view: RunView) -> JSONValue {
        let run = view.run
        var slot: (cron: String, slot: Timestamp)?
        if case .schedule(let cron, let at) = run.trigger { slot = (cron, at) }
        return .object([
            ("id", .string(run.id.rawValue)),
            ("namespace", .string(run.workflow.namespace)),
            ("workflow", .string(run.workflow.name)),
            ("generation", .int(run.generation)),
            ("phase", .string(run.phase.rawValue)),
            ("status", .string(view.status)),
            ("trigger", .string(run.trigger.name)),
            ("cron", slot.map { .string($0.cron) }),
            ("slot", slot.map { .string($0.slot.description) }),
            ("input", (try? JSONParser.parse(run.input, file: "<run>")).map(JSONValue.init) ?? .object([])),
            ("createdAt", .string(run.createdAt.description)),
            ("createdBy", .string(run.createdBy)),
            ("endedAt", run.endedAt.map { .string($0.description) }),
            ("error", run.error.map { .string($0) }),
            (
                "steps",
                .array(
                    view.steps.map { step in
                        let planned = view.plan.steps[step.index]
                        let spent = view.spend[step.id] ?? .zero
                        return .object([
                            ("id", .string(step.id)),
                            ("state", .string(step.state.rawValue)),
                            ("agent", step.agent.map { .string($0.name) }),
                            ("approval", planned.isApprovalGate ? .bool(true) : nil),
                            ("attempt", .int(step.attempt)),
                            ("attempts", .int(planned.attempts)),
                            ("startedAt", step.startedAt.map { .string($0.description) }),
                            ("endedAt", step.endedAt.map { .string($0.description) }),
                            ("error", step.error.map { .string($0) }),
                            ("decidedBy", step.decidedBy.map { .string($0) }),
                            ("reason", step.reason.map { .string($0) }),
                            ("tokens", .int(spent.tokens)),
                            ("costUSD", .double(spent.usd)),
                        ])
                    })
            ),
        ])
    }

    static func approvalJSON(_ view: RunView, _ step: StepRecord) -> JSONValue {
        let gate = approval(of: step, in: view.plan)
        return .object([
            ("run", .string(view.run.id.rawValue)),
            ("namespace", .string(view.run.workflow.namespace)),
            ("workflow", .string(view.run.workflow.name)),
            ("step", .string(step.id)),
            ("message", gate?.message.map { .string($0) }),
            ("requestedAt", step.startedAt.map { .string($0.description) }),
            ("deadline", step.deadline.map { .string($0.description) }),
            ("onTimeout", gate.map { .string($0.onTimeout.rawValue) }),
        ])
    }

    // MARK: Helpers

    static func approval(of step: StepRecord, in plan: RunPlan) -> (message: String?, onTimeout: WorkflowSpec.Approval.OnTimeout)? {
        guard case .approval(let message, _, let onTimeout) = plan.steps[step.index].executor else { return nil }
        return (message, onTimeout)
    }

    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}
