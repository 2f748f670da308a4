import OrlCore
import Synchronization

extension Dashboard {
    // MARK: Fleet

    struct AgentRow {
        var id: ResourceID
        var phase: String
        var restarts: Int
        var pid: Int32?
        var spend: Charge
    }

    /// The agent's phase as `orlctl get agents` shows it: the Ready condition's first word.
    static func phase(_ status: ResourceStatus?) -> String {
        guard let ready = status?.condition(ResourceStatus.ready), let head = ready.message.split(separator: ":", maxSplits: 1).first
        else { return "Pending" }
        return String(head)
    }

    static func startOfDay(_ now: Timestamp) -> Timestamp { Timestamp(milliseconds: now.milliseconds - now.milliseconds % 86_400_000) }

    func agentRows(now: Timestamp) throws -> [AgentRow] {
        try store.read { reader throws(StoreError) in
            let agents = try reader.resources(kind: .agent, namespace: nil)
            var supervision: [ResourceID: SupervisionRecord] = [:]
            for record in try reader.allSupervision() { supervision[record.agent] = record }
            let spend = try reader.spend(since: Self.startOfDay(now))
            return try agents.map { agent throws(StoreError) in
                let record = supervision[agent.id]
                return AgentRow(
                    id: agent.id, phase: Self.phase(try reader.status(for: agent.id)), restarts: record?.restarts ?? 0,
                    pid: record?.process?.pid, spend: spend[agent.id] ?? Charge(usd: 0, tokens: 0))
            }
        }
    }

    func pendingApprovals() throws -> [(run: RunRecord, step: StepRecord)] {
        try store.readRuns { reader throws(StoreError) in
            var out: [(RunRecord, StepRecord)] = []
            for run in try reader.runs(namespace: nil, workflow: nil, limit: 500) where run.phase == .running {
                for step in try reader.steps(of: run.id) where step.state == .waitingApproval { out.append((run, step)) }
            }
            return out
        }
    }

    func decisionForm(run: RunRecord, step: StepRecord, csrf: String) -> String {
        let runID = HTML.escape(run.id.rawValue)
        let stepID = HTML.escape(step.id)
        return """
            <form class="inline" method="post" action="/ui/runs/\(HTML.path(run.id.rawValue))/decide" data-run="\(runID)" data-step="\(stepID)">\
            <input type="hidden" name="csrf" value="\(HTML.escape(csrf))"><input type="hidden" name="step" value="\(stepID)">\
            <input type="text" name="reason" placeholder="reason" aria-label="reason">\
            <button class="approve" name="decision" value="approve">Approve</button>\
            <button class="deny" name="decision" value="deny">Deny</button></form>
            """
    }

    func fleetPage(csrf: String, now: Timestamp) throws -> String {
        let agents = try agentRows(now: now)
        let approvals = try pendingApprovals()
        let running = agents.filter { $0.phase == AgentPhase.running.rawValue }.count
        let failing = agents.filter { $0.phase == AgentPhase.crashLoopBackOff.rawValue }.count
        let spend = agents.reduce(0.0) { $0 + $1.spend.usd }
        let cards = """
            <div class="grid"><div class="card">Agents<b id="agent-count">\(agents.count)</b></div>\
            <div class="card">Running<b>\(running)</b></div><div class="card">Crash-looping<b>\(failing)</b></div>\
            <div class="card">Waiting approvals<b>\(approvals.count)</b></div><div class="card">Spent today<b>\(HTML.usd(spend))</b></div></div>
            """
        let approvalRows = approvals.map { run, step in
            [
                "<a href=\"/ui/runs/\(HTML.path(run.id.rawValue))\">\(HTML.escape(run.id.rawValue))</a>",
                HTML.escape(run.workflow.name), HTML.escape(step.id), HTML.time(step.readyAt ?? step.startedAt),
                HTML.time(step.deadline), decisionForm(run: run, step: step, csrf: csrf),
            ]
        }
        let agentRows = agents.map { row in
            [
                HTML.escape(row.id.namespace),
                "<a href=\"/ui/agents/\(HTML.path(row.id.namespace))/\(HTML.path(row.id.name))\">\(HTML.escape(row.id.name))</a>",
                HTML.pill(row.phase), String(row.restarts), row.pid.map { String($0) } ?? "–", HTML.usd(row.spend.usd),
                String(row.spend.tokens),
            ]
        }
        return HTML.page(
            title: "Fleet", active: "fleet", csrf: csrf,
            """
            <h1>Fleet</h1>\(cards)
            <h2>Waiting for approval</h2>
            \(HTML.table(["Run", "Workflow", "Step", "Waiting since", "Times out", "Decide"], approvalRows, empty: "No approval waits."))
            <h2>Agents</h2>
            <div id="fleet">\(HTML.table(["Namespace", "Agent", "Phase", "Restarts", "PID", "Spent today", "Tokens today"], agentRows, empty: "No agents applied."))</div>
            """)
    }

    // MARK: Agent

    func agentPage(_ id: ResourceID, csrf: String, now: Timestamp) throws -> String {
        let (stored, all, events, supervision) = try store.read { reader throws(StoreError) in
            (
                try reader.resource(id), try reader.resources(kind: nil, namespace: id.namespace), try reader.events(for: id, limit: 30),
                try reader.supervision(for: id)
            )
        }
        let day = CivilDate(daysSinceEpoch: Int(now.milliseconds / 86_400_000))
        let monthStart = CivilDate(year: day.year, month: day.month, day: 1)
        let days = try store.dailySpend(since: monthStart.midnight, agent: id)
        let today: Charge? = days[day.daysSinceEpoch]
        let month: Charge? = days.values.reduce(Charge(usd: 0, tokens: 0)) { Charge(usd: $0.usd + $1.usd, tokens: $0.tokens + $1.tokens) }
        guard let stored else { throw DashboardError(message: "\(id) is not applied") }
        let fleet = Fleet.applied(all).fleet
        let permissions = PolicyEngine(fleet).permissions(of: id)
        let credentials = CredentialSecrets(fleet)
        let spec = fleet.resource(.agent, id.name, namespace: id.namespace)?.agent
        var decisions: [[String]] = []
        if let spec {
            for model in [spec.model.value.description] {
                let d = permissions.decide(.model, model)
                decisions.append([
                    "model", HTML.escape(model), d.isAllowed ? "<span class=\"good\">allowed</span>" : "<span class=\"bad\">denied</span>",
                    HTML.escape(d.reason),
                ])
            }
            for tool in spec.tools.map(\.value) {
                let d = permissions.decide(.tool, tool)
                decisions.append([
                    "tool", HTML.escape(tool), d.isAllowed ? "<span class=\"good\">allowed</span>" : "<span class=\"bad\">denied</span>",
                    HTML.escape(d.reason),
                ])
            }
            for secret in spec.secrets.map(\.name.value) {
                let d = credentials.decide(SecretID(namespace: id.namespace, name: secret), permissions)
                decisions.append([
                    "secret", HTML.escape(secret),
                    d.isAllowed ? "<span class=\"good\">allowed</span>" : "<span class=\"bad\">denied</span>", HTML.escape(d.reason),
                ])
            }
        }
        let rules = permissions.rules.map { rule in
            [
                HTML.escape(rule.effect.rawValue), HTML.escape(rule.kind.rawValue), "<code>\(HTML.escape(rule.pattern))</code>",
                HTML.escape(rule.policy.name),
            ]
        }
        let eventRows = events.map { [HTML.time($0.time), HTML.escape($0.reason), HTML.escape($0.message)] }
        return HTML.page(
            title: id.name, active: "fleet", csrf: csrf,
            """
            <h1>Agent \(HTML.escape(id.namespace))/\(HTML.escape(id.name))</h1>
            <p>Generation \(stored.generation), applied \(HTML.time(stored.appliedAt)) by \(HTML.escape(stored.appliedBy)) from <code>\(HTML.escape(stored.source))</code>.
            Restarts: \(supervision?.restarts ?? 0). PID: \(supervision?.process.map { String($0.pid) } ?? "–").</p>
            <h2>Spend</h2>
            \(HTML.table(["Window", "USD", "Tokens"], [["today (UTC)", HTML.usd(today?.usd ?? 0), String(today?.tokens ?? 0)], ["this month", HTML.usd(month?.usd ?? 0), String(month?.tokens ?? 0)]], empty: ""))
            <h2>Effective permissions</h2>
            <p class="muted">Policies: \(permissions.policies.isEmpty ? "none (the agent may do nothing)" : permissions.policies.map { HTML.escape($0.name) }.joined(separator: ", "))</p>
            \(HTML.table(["Kind", "Asked for", "Decision", "Why"], decisions, empty: "The agent asks for nothing."))
            <h2>Rules</h2>
            \(HTML.table(["Effect", "Kind", "Pattern", "Policy"], rules, empty: "No policy selects this agent."))
            <h2>Events</h2>
            \(HTML.table(["Time", "Reason", "Message"], eventRows, empty: "No events."))
            """)
    }

    // MARK: Runs

    func runsPage(csrf: String, now: Timestamp) throws -> String {
        let runs = try store.readRuns { reader throws(StoreError) in try reader.runs(namespace: nil, workflow: nil, limit: 200) }
        let rows = runs.map { run in
            [
                "<a href=\"/ui/runs/\(HTML.path(run.id.rawValue))\">\(HTML.escape(run.id.rawValue))</a>",
                HTML.escape(run.workflow.namespace),
                HTML.escape(run.workflow.name), HTML.pill(run.phase.rawValue), HTML.time(run.createdAt), HTML.time(run.endedAt),
                HTML.escape(run.error ?? ""),
            ]
        }
        return HTML.page(
            title: "Runs", active: "runs", csrf: csrf,
            "<h1>Runs</h1>"
                + HTML.table(["Run", "Namespace", "Workflow", "Phase", "Started", "Ended", "Error"], rows, empty: "No runs yet."))
    }

    func runPage(_ text: String, csrf: String, now: Timestamp) throws -> String {
        guard let id = RunID(text) else { throw DashboardError(message: "run \(text) not found") }
        let found = try store.readRuns { reader throws(StoreError) -> (RunRecord, [StepRecord], RunPlan, [StoreEvent])? in
            guard let run = try reader.run(id) else { return nil }
            return (run, try reader.steps(of: id), try reader.plan(of: id), try reader.events(for: run.eventSubject, limit: 100))
        }
        guard let (run, steps, plan, events) = found else { throw DashboardError(message: "run \(text) not found") }
        let stepRows = steps.map { step in
            [
                HTML.escape(step.id), step.agent.map { HTML.escape($0.name) } ?? "<span class=\"muted\">approval</span>",
                "<span class=\"step-state\" data-step=\"\(HTML.escape(step.id))\">\(HTML.pill(step.state.rawValue))</span>",
                String(step.attempt), HTML.time(step.startedAt), HTML.time(step.endedAt),
                HTML.escape(step.error ?? [step.decidedBy.map { "by \($0)" }, step.reason].compactMap { $0 }.joined(separator: ": ")),
                step.state == .waitingApproval && run.phase == .running ? decisionForm(run: run, step: step, csrf: csrf) : "",
            ]
        }
        let eventRows = events.map { [HTML.time($0.time), HTML.escape($0.reason), HTML.escape($0.message)] }
        return HTML.page(
            title: "Run \(run.id.rawValue)", active: "runs", csrf: csrf,
            """
            <h1>Run \(HTML.escape(run.id.rawValue)) <span id="run-phase">\(HTML.pill(run.phase.rawValue))</span></h1>
            <p>Workflow <b>\(HTML.escape(run.workflow.namespace))/\(HTML.escape(run.workflow.name))</b> generation \(run.generation), started \(HTML.time(run.createdAt)) by \(HTML.escape(run.createdBy))\(run.endedAt.map { ", ended \(HTML.time($0))" } ?? "").
            \(run.error.map { "<span class=\"bad\">\(HTML.escape($0))</span>" } ?? "")</p>
            <h2>Graph</h2>\(Self.dag(plan: plan, steps: steps))
            <h2>Steps</h2>\(HTML.table(["Step", "Agent", "State", "Attempt", "Started", "Ended", "Error or decision", ""], stepRows, empty: "No steps."))
            <h2>Events</h2>\(HTML.table(["Time", "Reason", "Message"], eventRows, empty: "No events."))
            """)
    }

    /// The run's DAG as inline SVG: a column per depth (longest path from a root), a box
    /// per step coloured by its state, an edge per dependency.
    static func dag(plan: RunPlan, steps: [StepRecord]) -> String {
        let count = plan.steps.count
        guard count > 0 else { return "" }
        var depth = [Int](repeating: 0, count: count)
        // Plans are topologically ordered: a step's dependencies come before it.
        for (index, step) in plan.steps.enumerated() {
            depth[index] = (step.dependencies.map { depth[$0] + 1 }.max() ?? 0)
        }
        var row = [Int](repeating: 0, count: count)
        var filled: [Int: Int] = [:]
        for index in 0..<count {
            row[index] = filled[depth[index], default: 0]
            filled[depth[index], default: 0] += 1
        }
        let state = Dictionary(steps.map { ($0.index, $0.state.rawValue) }, uniquingKeysWith: { a, _ in a })
        let (w, h, gx, gy) = (150, 40, 60, 20)
        let width = ((depth.max() ?? 0) + 1) * (w + gx)
        let height = (filled.values.max() ?? 1) * (h + gy)
        func x(_ i: Int) -> Int { depth[i] * (w + gx) + 10 }
        func y(_ i: Int) -> Int { row[i] * (h + gy) + 10 }
        var svg = "<svg id=\"dag\" width=\"\(width + 20)\" height=\"\(height + 20)\" role=\"img\" aria-label=\"run graph\">"
        for (index, step) in plan.steps.enumerated() {
            for dependency in step.dependencies {
                svg +=
                    "<line x1=\"\(x(dependency) + w)\" y1=\"\(y(dependency) + h / 2)\" x2=\"\(x(index))\" y2=\"\(y(index) + h / 2)\" stroke=\"#8a93a5\"/>"
            }
        }
        let colours = [
            "Succeeded": "#d9f2df", "Running": "#dbe7fb", "Ready": "#fdebc8", "WaitingApproval": "#fdebc8", "Failed": "#f8d7d4",
            "DeadLetter": "#f8d7d4", "Skipped": "#eceef2", "Cancelled": "#eceef2",
        ]
        for (index, step) in plan.steps.enumerated() {
            let s = state[index] ?? "Pending"
            svg +=
                "<g class=\"node\" data-step=\"\(HTML.escape(step.id))\"><rect x=\"\(x(index))\" y=\"\(y(index))\" width=\"\(w)\" height=\"\(h)\" rx=\"5\" fill=\"\(colours[s] ?? "#fff")\" stroke=\"#8a93a5\"/>"
            svg += "<text x=\"\(x(index) + 8)\" y=\"\(y(index) + 16)\">\(HTML.escape(String(step.id.prefix(20))))</text>"
            svg += "<text x=\"\(x(index) + 8)\" y=\"\(y(index) + 32)\" fill=\"#6b7385\">\(HTML.escape(s))</text></g>"
        }
        return svg + "</svg>"
    }

    // MARK: Budgets

    func budgetsPage(csrf: String, now: Timestamp) throws -> String {
        let status = budgets(now)
        let rows = status.map { s in
            let limit = [s.limit.usd.map { HTML.usd($0) }, s.limit.tokens.map { "\($0) tokens" }].compactMap { $0 }.joined(separator: " / ")
            let spent = "\(HTML.usd(s.spent.usd)) / \(s.spent.tokens) tokens"
            let bar = Self.bar(percent: s.percentUsed)
            return [
                HTML.escape(s.account.budget.namespace + "/" + s.account.budget.name),
                s.account.agent.map { HTML.escape($0.name) } ?? "shared",
                HTML.escape(s.window.rawValue), limit, spent, "\(HTML.usd(s.reserved.usd)) / \(s.reserved.tokens)",
                bar, HTML.time(s.resetsAt),
                s.exhausted ? "<span class=\"bad\">exhausted (\(HTML.escape(s.onExceeded.rawValue)))</span>" : "OK",
            ]
        }
        // Spend per UTC day over two weeks, against the day-window USD limits.
        let since = Timestamp(milliseconds: Self.startOfDay(now).milliseconds - 13 * 86_400_000)
        let spend = try spendPerDay(since: since, now: now)
        let first = Int(since.milliseconds / 86_400_000)
        let days = (0..<14).map { spend[first + $0]?.usd ?? 0 }
        let limits = Set(status.filter { $0.window == .day }.compactMap(\.limit.usd)).sorted()
        return HTML.page(
            title: "Budgets", active: "budgets", csrf: csrf,
            """
            <h1>Budgets</h1>
            \(HTML.table(["Budget", "Account", "Window", "Limit", "Spent", "Reserved", "Used", "Resets", "State"], rows, empty: "No budgets applied."))
            <h2>Spend per day (UTC), last 14 days</h2>\(Self.chart(days: days, limits: limits, since: since))
            """)
    }

    /// The fleet's spend per day from `since` on. Days before yesterday no longer change
    /// (a call is in the ledger by the end of the next day; retention only rolls their
    /// rows up), so they are summed once and kept: a page load sums the last two days'
    /// rows, not two weeks of them.
    func spendPerDay(since: Timestamp, now: Timestamp) throws(StoreError) -> [Int: Charge] {
        let from = Int(since.milliseconds / 86_400_000)
        let open = max(Int(now.milliseconds / 86_400_000) - 1, from)
        let cached = closedDays.withLock { cache -> [Int: Charge]? in
            guard let cache, cache.from <= from, cache.until == open else { return nil }
            return cache.spend.filter { $0.key >= from }
        }
        var days: [Int: Charge]
        if let cached {
            days = cached
        } else {
            days = try store.dailySpend(
                since: since, until: Timestamp(milliseconds: Int64(open) * 86_400_000), agent: nil)
            let closed = days
            closedDays.withLock { $0 = ClosedDays(from: from, until: open, spend: closed) }
        }
        for (day, charge) in try store.dailySpend(since: Timestamp(milliseconds: Int64(open) * 86_400_000), until: nil, agent: nil) {
            days[day] = charge
        }
        return days
    }

    static func bar(percent: Double) -> String {
        let p = max(0, min(100, percent.isFinite ? percent : 0))
        let colour = p >= 100 ? "#b3261e" : p >= 80 ? "#d08a00" : "#1e7b34"
        return
            "<svg width=\"104\" height=\"12\"><rect x=\"2\" y=\"1\" width=\"100\" height=\"10\" fill=\"#eceef2\"/><rect x=\"2\" y=\"1\" width=\"\(Int(p))\" height=\"10\" fill=\"\(colour)\"/></svg> \(Int(percent.isFinite ? percent : 0))%"
    }

    static func chart(days: [Double], limits: [Double], since: Timestamp) -> String {
        let (width, height, left, bottom) = (640, 200, 60, 24)
        let top = max(days.max() ?? 0, limits.max() ?? 0, 0.0001) * 1.1
        let step = Double(width - left - 10) / Double(max(days.count - 1, 1))
        func y(_ v: Double) -> Double { Double(height - bottom) - v / top * Double(height - bottom - 10) }
        let points = days.enumerated().map { i, v in "\(Double(left) + Double(i) * step),\(y(v))" }.joined(separator: " ")
        var svg = "<svg id=\"spend-chart\" width=\"\(width)\" height=\"\(height)\" role=\"img\" aria-label=\"spend per day\">"
        svg += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - 10)\" y2=\"\(height - bottom)\" stroke=\"#8a93a5\"/>"
        svg += "<text x=\"4\" y=\"14\">\(HTML.usd(top))</text><text x=\"4\" y=\"\(height - bottom)\">$0</text>"
        for limit in limits {
            svg +=
                "<line x1=\"\(left)\" y1=\"\(y(limit))\" x2=\"\(width - 10)\" y2=\"\(y(limit))\" stroke=\"#b3261e\" stroke-dasharray=\"4 3\"/>"
            svg += "<text x=\"\(width - 120)\" y=\"\(y(limit) - 4)\" fill=\"#b3261e\">limit \(HTML.usd(limit))/day</text>"
        }
        svg += "<polyline fill=\"none\" stroke=\"#2f5fd0\" stroke-width=\"2\" points=\"\(points)\"/>"
        svg +=
            "<text x=\"\(left)\" y=\"\(height - 6)\">\(HTML.escape(String(since.rfc3339Seconds.prefix(10))))</text><text x=\"\(width - 80)\" y=\"\(height - 6)\">today</text>"
        return svg + "</svg>"
    }

    // MARK: Sources, alerts, events

    func sourcesPage(csrf: String, now: Timestamp) throws -> String {
        let sources = try store.read { reader throws(StoreError) in try reader.sources() }
        let rows = sources.map { s in
            [
                HTML.escape(s.name), "<code>\(HTML.escape(s.url))</code>", HTML.escape(s.ref ?? "(default)"),
                "<code>\(HTML.escape(String((s.lastApplied ?? "–").prefix(12))))</code> \(HTML.time(s.lastAppliedAt))",
                "<code>\(HTML.escape(String((s.lastAttempted ?? "–").prefix(12))))</code> \(HTML.time(s.lastAttemptedAt))",
                s.result.map { HTML.pill($0.rawValue) } ?? "–", String(s.failures), s.isSuspended ? "suspended" : "",
                HTML.escape(s.message),
            ]
        }
        return HTML.page(
            title: "Sources", active: "sources", csrf: csrf,
            "<h1>Sources</h1>"
                + HTML.table(
                    ["Source", "URL", "Ref", "Applied", "Attempted", "Result", "Failures", "", "Message"], rows, empty: "No git sources."))
    }

    func alertsPage(csrf: String, now: Timestamp) throws -> String {
        let deliveries = try store.alertDeliveries(limit: 200)
        let rows = deliveries.map { d in
            [
                HTML.escape(d.notification.id), HTML.escape(d.notification.alert.name), HTML.escape(d.notification.type.rawValue),
                HTML.escape("\(d.notification.subject.kind)/\(d.notification.subject.name)"), HTML.pill(d.state.rawValue),
                String(d.attempts),
                HTML.time(d.deliveredAt), HTML.escape(d.lastError ?? ""),
            ]
        }
        return HTML.page(
            title: "Alerts", active: "alerts", csrf: csrf,
            "<h1>Alert deliveries</h1>"
                + HTML.table(
                    ["Id", "Alert", "Event", "About", "State", "Attempts", "Delivered", "Last error"], rows, empty: "Nothing sent yet."))
    }

    func eventsPage(csrf: String, now: Timestamp) throws -> String {
        let events = try store.read { reader throws(StoreError) in try reader.events(for: nil, limit: 300) }
        let rows = events.map { e in
            [
                HTML.time(e.time), e.kind == .warning ? "<span class=\"warn\">Warning</span>" : "Normal",
                e.resource.map { HTML.escape("\($0.kind)/\($0.name)") } ?? "", HTML.escape(e.resource?.namespace ?? ""),
                HTML.escape(e.reason),
                HTML.escape(e.message),
            ]
        }
        return HTML.page(
            title: "Events", active: "events", csrf: csrf,
            "<h1>Events</h1>" + HTML.table(["Time", "Type", "Object", "Namespace", "Reason", "Message"], rows, empty: "No events."))
    }
}
