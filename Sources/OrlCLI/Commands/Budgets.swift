import ArgumentParser
import Foundation
import OrlCore
import OrlJSON
import OrlServer
import OrlStore

/// `orlctl budget status`: where every budget stands in its current windows.
struct BudgetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "budget",
        abstract: "Show budgets' spend against their limits.",
        subcommands: [BudgetStatus.self],
        defaultSubcommand: BudgetStatus.self
    )
}

struct BudgetStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each budget's spend, reservations and limit in its current windows.",
        discussion: """
            One row per limit (and, for a perAgent budget, per agent). Spend comes from the \
            ledger; reservations of calls in flight, and refusals, from the running controller \
            (without one, nothing is reserved). A budget is exhausted when its spend reached the \
            limit or it refused a call in this window; with onExceeded: halt its agents are \
            halted until RESETS.

            Exit codes: 0 shown, 2 error.
            """
    )

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    @OptionGroup var state: StateOptions

    func run() async throws {
        let store = try state.open()
        let now = Caller.now
        let statuses: [BudgetMeter.LimitStatus]
        do throws(StoreError) {
            statuses = try store.read { reader throws(StoreError) in
                var meter = BudgetMeter()
                meter.configure(Fleet.applied(try reader.resources(kind: nil, namespace: nil)).fleet)
                for window in [BudgetSpec.Window.day, .month] {
                    let start = window.interval(containing: now).lowerBound
                    for (agent, charge) in try reader.spend(since: start) { meter.restore(agent, window, at: start, charge) }
                }
                return meter.status(now: now)
            }
        } catch {
            throw CommandFailure(message: error.description)
        }
        let live = state.postgresURL == nil ? await Self.live(state.resolvedDirectory) : nil
        let rows = statuses.map { status -> BudgetMeter.LimitStatus in
            var status = status
            if let known = live?[ControllerClient.Key(account: status.account, window: status.window)] {
                status.reserved = known.reserved
                status.exhausted = status.exhausted || known.exhausted
            }
            return status
        }
        switch output {
        case .text:
            guard !rows.isEmpty else { return OrlctlMain.writeStandardError("No budgets are applied.\n") }
            var table = [["BUDGET", "AGENT", "WINDOW", "SPENT", "RESERVED", "LIMIT", "USED", "RESETS", "STATE"]]
            for row in rows {
                table.append([
                    Self.name(row.account.budget), row.account.agent.map { $0.name } ?? "(shared)", row.window.rawValue,
                    Self.amounts(row.spent, of: row.limit), Self.amounts(row.reserved, of: row.limit), Self.limit(row.limit),
                    "\(Int(clamping: row.percentUsed.rounded(.down)))%", row.resetsAt.rfc3339Seconds,
                    row.exhausted ? (row.onExceeded == .halt ? "Exhausted (halted)" : "Exhausted (alert)") : "OK",
                ])
            }
            writeStandardOutput(TextTable.render(table))
            if live == nil { OrlctlMain.writeStandardError("No controller runs: nothing is reserved.\n") }
        case .json:
            let items = rows.map { row in
                JSONValue.object([
                    ("budget", .string(Self.name(row.account.budget))),
                    ("namespace", .string(row.account.budget.namespace)),
                    ("agent", row.account.agent.map { .string($0.name) }),
                    ("window", .string(row.window.rawValue)),
                    ("spent", Self.json(row.spent)),
                    ("reserved", Self.json(row.reserved)),
                    ("limit", .object([("usd", row.limit.usd.map(JSONValue.double)), ("tokens", row.limit.tokens.map(JSONValue.int))])),
                    ("percentUsed", .double((row.percentUsed * 100).rounded() / 100)),
                    ("resetsAt", .string(row.resetsAt.description)),
                    ("onExceeded", .string(row.onExceeded.rawValue)),
                    ("exhausted", .bool(row.exhausted)),
                ])
            }
            writeStandardOutput(JSONValue.object([("budgets", .array(items)), ("controller", .bool(live != nil))]).rendered())
        }
    }

    /// The running controller's reservations and refusals; nil when none runs (or it
    /// cannot be asked, which is said).
    static func live(_ directory: String) async -> [ControllerClient.Key: ControllerClient.Live]? {
        let directory = PIDLock.absolute(directory)
        guard (try? PIDLock.holder(directory)) != nil,
            let url = try? String(contentsOfFile: ControllerRunCommand.apiFile(directory), encoding: .utf8),
            let token = try? String(contentsOfFile: ControllerRunCommand.tokenFile(directory), encoding: .utf8)
        else { return nil }
        do {
            return try await ControllerClient.budgets(
                url: url.trimmingCharacters(in: .whitespacesAndNewlines), token: token.trimmingCharacters(in: .whitespacesAndNewlines))
        } catch {
            OrlctlMain.writeStandardError("orlctl: warning: cannot ask the controller for reservations: \(error)\n")
            return nil
        }
    }

    static func name(_ id: ResourceID) -> String {
        id.namespace == ResourceID.defaultNamespace ? id.name : "\(id.namespace)/\(id.name)"
    }

    /// `$0.83 · 2,410 tok`, with only the metrics the limit has.
    static func amounts(_ charge: Charge, of limit: BudgetSpec.Limit) -> String {
        var parts: [String] = []
        if limit.usd != nil { parts.append(Money.format(charge.usd, decimals: charge.usd > 0 && charge.usd < 0.01 ? 4 : 2)) }
        if limit.tokens != nil { parts.append("\(ResourceRenderer.count(charge.tokens)) tok") }
        return parts.joined(separator: " · ")
    }

    static func limit(_ limit: BudgetSpec.Limit) -> String {
        var parts: [String] = []
        if let usd = limit.usd { parts.append(Money.format(usd)) }
        if let tokens = limit.tokens { parts.append("\(ResourceRenderer.count(tokens)) tok") }
        return parts.joined(separator: " · ")
    }

    static func json(_ charge: Charge) -> JSONValue {
        .object([("usd", .double(charge.usd)), ("tokens", .int(charge.tokens))])
    }
}

/// `orlctl usage`: what the gateway forwarded, from the ledger.
struct Usage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage",
        abstract: "Show model calls and their cost, from the ledger.",
        discussion: """
            By default a summary per agent and model since the start of the day (UTC); \
            --by-day splits it per UTC day; --calls lists the calls themselves, newest first. \
            --since takes a time (2026-11-21, 2026-11-21T09:00:00Z) or a duration back from \
            now (30m, 24h, 7d).

            Calls older than the ledger's retention (orlctl gc, 62 days by default) are kept \
            as their totals per agent, model and day: the summaries count them (a day rolled \
            up counts whole), --calls cannot list them.

            Exit codes: 0 shown, 2 error.
            """
    )

    @Option(help: ArgumentHelp("Only this agent's calls.", valueName: "name"))
    var agent: String?

    @OptionGroup var namespace: NamespaceOption

    @Option(help: ArgumentHelp("From this time on (default: today, UTC).", valueName: "time|duration"))
    var since: String?

    @Flag(help: "List the calls instead of the summary.")
    var calls = false

    @Flag(help: "Summarise per UTC day, agent and model.")
    var byDay = false

    @Option(help: "With --calls, show at most this many.")
    var limit = 100

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    @OptionGroup var state: StateOptions

    func validate() throws {
        if let since, Self.instant(since, now: Caller.now) == nil {
            throw ValidationError("--since must be a time such as 2026-11-21T09:00:00Z or a duration such as 24h, not \(since)")
        }
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
        if calls && byDay { throw ValidationError("--calls lists calls; --by-day summarises them: use one") }
    }

    func run() async throws {
        let store = try state.open()
        let now = Caller.now
        let start = since.flatMap { Self.instant($0, now: now) } ?? BudgetSpec.Window.day.interval(containing: now).lowerBound
        let who = agent.map { ResourceID(kind: ResourceKind.agent.rawValue, namespace: namespace.namespace, name: $0) }
        let entries: [LedgerEntry]
        let days: [LedgerDay]
        do throws(StoreError) {
            (entries, days) = try store.usage(LedgerQuery(agent: who, since: start, limit: calls ? limit : Int.max))
        } catch {
            throw CommandFailure(message: error.description)
        }
        let rolledUp = days.map(\.calls).reduce(0, +)
        if calls {
            if rolledUp > 0 {
                OrlctlMain.writeStandardError(
                    "\(rolledUp) call\(rolledUp == 1 ? "" : "s") of \(Set(days.map(\.day)).count) day\(Set(days.map(\.day)).count == 1 ? "" : "s") from \(days[0].day) on "
                        + "\(rolledUp == 1 ? "was" : "were") rolled up by retention: only their totals are kept (orlctl usage --by-day).\n")
            }
            switch output {
            case .text:
                guard !entries.isEmpty else { return OrlctlMain.writeStandardError("No calls since \(start.rfc3339Seconds).\n") }
                var table = [["TIME", "AGENT", "MODEL", "PROMPT", "COMPLETION", "USD", "LATENCY", "RUN/STEP", "OUTCOME"]]
                for e in entries {
                    table.append([
                        e.time.rfc3339Seconds, e.agent.name, e.model, String(e.usage.prompt), String(e.usage.completion),
                        Money.format(e.usd, decimals: 6), "\(e.latencyMilliseconds)ms",
                        e.run.map { "\($0)/\(e.step ?? "-")" } ?? "-", e.outcome,
                    ])
                }
                writeStandardOutput(TextTable.render(table))
            case .json:
                writeStandardOutput(
                    JSONValue.object([("since", .string(start.description)), ("calls", .array(entries.map(Self.json)))]).rendered())
            }
            return
        }
        struct Key: Hashable, Comparable {
            var day: String
            var agent: ResourceID
            var model: String
            static func < (a: Key, b: Key) -> Bool { (a.day, a.agent, a.model) < (b.day, b.agent, b.model) }
        }
        var totals: [Key: (calls: Int, usage: TokenUsage, usd: Double)] = [:]
        func add(_ key: Key, calls: Int, usage: TokenUsage, usd: Double) {
            var total = totals[key] ?? (0, TokenUsage(prompt: 0, completion: 0), 0)
            total.calls += calls
            total.usage.prompt = total.usage.prompt.saturatingAdding(usage.prompt)
            total.usage.completion = total.usage.completion.saturatingAdding(usage.completion)
            total.usd += usd
            totals[key] = total
        }
        for e in entries {
            add(Key(day: byDay ? LedgerDay.name(of: e.time) : "", agent: e.agent, model: e.model), calls: 1, usage: e.usage, usd: e.usd)
        }
        // The calls retention rolled up: their day's totals stand for them.
        for d in days {
            add(Key(day: byDay ? d.day : "", agent: d.agent, model: d.model), calls: d.calls, usage: d.usage, usd: d.usd)
        }
        let keys = totals.keys.sorted()
        let count = entries.count + rolledUp
        let sum = entries.reduce(0.0) { $0 + $1.usd } + days.reduce(0.0) { $0 + $1.usd }
        switch output {
        case .text:
            guard count > 0 else { return OrlctlMain.writeStandardError("No calls since \(start.rfc3339Seconds).\n") }
            var table = [(byDay ? ["DAY"] : []) + ["AGENT", "MODEL", "CALLS", "PROMPT", "COMPLETION", "USD"]]
            for key in keys {
                let t = totals[key]!
                table.append(
                    (byDay ? [key.day] : []) + [
                        BudgetStatus.name(key.agent), key.model, String(t.calls), String(t.usage.prompt), String(t.usage.completion),
                        Self.dollars(t.usd),
                    ])
            }
            writeStandardOutput(TextTable.render(table))
            writeStandardOutput("\n\(count) calls since \(start.rfc3339Seconds): \(Self.dollars(sum))\n")
            if rolledUp > 0 {
                writeStandardOutput("(\(rolledUp) of them from the daily totals retention kept, \(days[0].day) on)\n")
            }
        case .json:
            let items = keys.map { key in
                let t = totals[key]!
                return JSONValue.object(
                    (byDay ? [("day", JSONValue.string(key.day))] : []) + [
                        ("agent", .string(key.agent.name)), ("namespace", .string(key.agent.namespace)), ("model", .string(key.model)),
                        ("calls", .int(t.calls)), ("promptTokens", .int(t.usage.prompt)), ("completionTokens", .int(t.usage.completion)),
                        ("usd", .double(t.usd)),
                    ])
            }
            writeStandardOutput(
                JSONValue.object([
                    ("since", .string(start.description)), ("calls", .int(count)), ("rolledUpCalls", .int(rolledUp)),
                    ("usd", .double(sum)), (byDay ? "byDayAgentAndModel" : "byAgentAndModel", .array(items)),
                ]).rendered())
        }
    }

    /// Four decimals, or six for amounts too small to show in four (a call of a cheap model).
    static func dollars(_ usd: Double) -> String { Money.format(usd, decimals: usd > 0 && usd < 0.001 ? 6 : 4) }

    static func json(_ e: LedgerEntry) -> JSONValue {
        .object([
            ("number", .int(e.number)), ("time", .string(e.time.description)), ("agent", .string(e.agent.name)),
            ("namespace", .string(e.agent.namespace)), ("model", .string(e.model)), ("promptTokens", .int(e.usage.prompt)),
            ("completionTokens", .int(e.usage.completion)), ("usd", .double(e.usd)), ("latencyMs", .int(e.latencyMilliseconds)),
            ("requestId", .string(e.requestID)), ("outcome", .string(e.outcome)), ("run", e.run.map(JSONValue.string)),
            ("step", e.step.map(JSONValue.string)),
        ])
    }

    /// `2026-11-21`, `2026-11-21T09:00:00Z` (UTC), or a duration back from `now`.
    static func instant(_ text: String, now: Timestamp) -> Timestamp? {
        if let duration = DurationValue(text) {
            return Timestamp(milliseconds: now.milliseconds.subtractingReportingOverflow(duration.duration.wholeMilliseconds).partialValue)
        }
        let parts = text.split(separator: "T", maxSplits: 1)
        let date = parts[0].split(separator: "-").compactMap { Int($0) }
        guard date.count == 3, (1...9999).contains(date[0]), (1...12).contains(date[1]), (1...31).contains(date[2]) else { return nil }
        var milliseconds = CivilDate(year: date[0], month: date[1], day: date[2]).midnight.milliseconds
        if parts.count == 2 {
            guard parts[1].hasSuffix("Z") else { return nil }
            let time = parts[1].dropLast().split(separator: ":").compactMap { Double($0) }
            guard time.count == 3, time[0] < 24, time[1] < 60, time[2] < 61 else { return nil }
            milliseconds += Int64(((time[0] * 3600 + time[1] * 60 + time[2]) * 1000).rounded())
        }
        return Timestamp(milliseconds: milliseconds)
    }
}
