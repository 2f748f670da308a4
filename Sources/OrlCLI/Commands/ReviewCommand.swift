import ArgumentParser
import Foundation
import OrlCore
import OrlGit
import OrlJSON
import OrlManifests
import OrlPostgres
import OrlStore

enum ReviewOutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text
    case markdown
    case json
    case sarif
}

/// `orlctl review`: what a pull request of manifest and policy changes does, from git
/// objects alone (no checkout).
struct ReviewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "review",
        abstract: "Review a change of manifests between two revisions: plan, permissions, budgets, audit.",
        discussion: """
            Reads both revisions' manifests from git objects (no checkout) and reports the \
            resource plan from base to head, each agent's effective permissions gained and \
            lost with the Policy change that caused it, approval gates added and removed, \
            budget changes, and the audit's problems new in head, fixed in head and still \
            present. -o markdown is fit to paste as a pull request comment; -o sarif is head's \
            problems for code scanning, each marked new or unchanged.

            By default base is where head forked from --base (git diff A...B), so a branch \
            behind main does not show main's newer changes reversed; --no-merge-base compares \
            with --base itself. A path missing in a revision is an empty fleet. A head whose \
            manifests cannot all be read is not reviewed: its errors are printed (exit 2).

            Escalations: a permission gained (or an approval gate dropped), a budget loosened \
            (raised, removed, an agent left uncapped, halt → alert), a Tool gaining a \
            capability or risk, an agent moved to another provider or a dearer model.

            Spend ceiling: what the fleet can spend at worst per day and per month as its \
            halting Budgets cap it, before and after.

            Projected spend: what the fleet is projected to spend in an average month, before \
            and after, per agent and per scheduled workflow: each schedule's runs a month (from \
            its cron expressions) times what a run can spend (every attempt of every step at \
            its maxTokens, at the dearer of its model's prices). With --state, each agent's \
            tokens of the last 30 days in that state's ledger are priced at the agent's model \
            in each revision, and an agent's projection is the larger of the two figures. \
            Without --state the review reads git objects alone and is deterministic.

            --max-cost-increase fails the check when either the ceiling or the projection rises \
            by more than the amount a month (or loses its bound: an agent left uncapped, a \
            scheduled step without maxTokens).

            Exit codes: 0 head brings no new error, 1 it does (and, with \
            --fail-on-escalation, when anything escalates; with --max-cost-increase, when the \
            ceiling or the projection rises by more), 2 error.
            """
    )

    @Option(help: ArgumentHelp("The git repository (a work tree, a directory in it, or a bare repository).", valueName: "path"))
    var repo = "."

    @Option(help: ArgumentHelp("The revision the change starts from (e.g. origin/main, a commit).", valueName: "rev"))
    var base: String

    @Option(help: ArgumentHelp("The revision with the change (e.g. HEAD, the pull request's commit).", valueName: "rev"))
    var head = "HEAD"

    @Option(help: ArgumentHelp("The directory of the repository that holds the manifests (default: all of it).", valueName: "dir"))
    var path: String?

    @Option(name: [.short, .long], help: "Output format: text, markdown, json or sarif.")
    var output: ReviewOutputFormat = .text

    @Flag(
        help: "Exit 1 when anything escalates: a permission gained, an approval gate dropped, a budget loosened, a tool or model escalated."
    )
    var failOnEscalation = false

    @Option(
        help: ArgumentHelp(
            "Exit 1 when the monthly spend ceiling (as the Budgets cap it) or the projected monthly spend rises by more than this many dollars, or loses its bound.",
            valueName: "usd"))
    var maxCostIncrease: Double?

    @Option(
        help: ArgumentHelp(
            "A state whose ledger (the last 30 days) the spend projection prices at each revision's models, a directory or postgres://… (default: none; the review reads git alone).",
            valueName: "dir|url"))
    var state: String?

    /// How far back the ledger's tokens are read for the projection.
    static let observedDays = 30

    @Flag(
        inversion: .prefixedNo,
        help: "Compare head with where it forked from --base (git diff A...B), not with --base's tip.")
    var mergeBase = true

    func run() async throws {
        let manifests = GitManifests()
        let baseID: GitObjectID
        let headID: GitObjectID
        let before: (report: ValidationReport, files: Int)
        let after: (report: ValidationReport, files: Int)
        var forked = false
        do {
            let repository = try GitRepository.open(repo)
            let tip = try repository.resolve(base)
            headID = try repository.resolve(head)
            baseID = mergeBase ? (try repository.mergeBase(tip, headID) ?? tip) : tip
            forked = baseID != tip
            // One reader for both: files the change did not touch are parsed once.
            // A path missing in a revision is an empty fleet: the first pull request
            // adds it, another deletes it.
            before = try manifests.read(repository, commit: baseID, under: path, missingIsEmpty: true)
            after = try manifests.read(repository, commit: headID, under: path, missingIsEmpty: true)
        } catch {
            throw CommandFailure(message: error.description)
        }
        keepUntilExit(before.report)
        keepUntilExit(after.report)
        guard after.report.fleet.isComplete else {
            // A permission diff on a partial fleet would call what the unread documents
            // grant or deny changes: the errors are the review.
            switch output {
            case .text, .markdown:
                writeStandardOutput(DiagnosticRenderer.text(after.report, files: after.files, color: TextStyle.forStandardOutput().enabled))
            case .json: writeStandardOutput(DiagnosticRenderer.json(after.report, files: after.files))
            case .sarif: writeStandardOutput(SARIFRenderer.render(after.report, baseline: [:]))
            }
            throw CommandFailure(
                message:
                    "\(head) (\(headID.short)) has manifests that cannot be read (see above); fix them first: nothing is reviewed on a partial fleet"
            )
        }
        let review = Review.compare(base: before.report, head: after.report, observed: try observedUsage())
        let revisions = ReviewRenderer.Revisions(
            base: base, baseID: baseID.short, head: head, headID: headID.short, path: path, mergeBase: forked)
        switch output {
        case .text: writeStandardOutput(ReviewRenderer.text(review, revisions, style: TextStyle.forStandardOutput()))
        case .markdown: writeStandardOutput(ReviewRenderer.markdown(review, revisions))
        case .json: writeStandardOutput(ReviewRenderer.json(review, base: baseID.hex, head: headID.hex).rendered())
        case .sarif:
            var baseline: [String: String] = [:]
            for d in review.newDiagnostics { baseline[d.fingerprint] = "new" }
            for d in review.remainingDiagnostics { baseline[d.fingerprint] = "unchanged" }
            writeStandardOutput(SARIFRenderer.render(after.report, baseline: baseline, extra: ReviewRenderer.sarifEscalations(review)))
        }
        if let limit = maxCostIncrease {
            var over = false
            if let spend = review.spend, spend.exceeds(limit) {
                OrlctlMain.writeStandardError(
                    "orlctl review: the worst-case spend change, \(spend.increaseDescription), is more than --max-cost-increase \(Money.format(limit))\n"
                )
                over = true
            }
            if let projection = review.projection, projection.exceeds(limit) {
                OrlctlMain.writeStandardError(
                    "orlctl review: the projected spend change, \(projection.increaseDescription), is more than --max-cost-increase \(Money.format(limit)) a month\n"
                )
                over = true
            }
            if over { throw ExitCode(ExitStatus.findings.rawValue) }
        }
        if review.newErrors > 0 || (failOnEscalation && review.escalations > 0) { throw ExitCode(ExitStatus.findings.rawValue) }
    }

    /// The tokens each agent spent in the last `observedDays` days of `--state`'s ledger
    /// (its daily roll-ups too); nil without --state. An absent state is an error, not an
    /// empty ledger: a typo must not make the projection quietly ignore the ledger.
    func observedUsage() throws -> ObservedUsage? {
        guard let state else { return nil }
        let isPostgres = PostgresURL.isPostgres(state)
        guard isPostgres || FileManager.default.fileExists(atPath: state + "/state.db") else {
            throw CommandFailure(message: "--state \(state): no orl state there (no state.db)")
        }
        let store: any StateBackend = try StateOptions.parse(["--state", state]).open()
        let since = Timestamp(milliseconds: Caller.now.milliseconds - Int64(Self.observedDays) * 86_400_000)
        let calls: [LedgerEntry]
        let days: [LedgerDay]
        do {
            (calls, days) = try store.usage(LedgerQuery(since: since, limit: Int.max))
        } catch {
            throw CommandFailure(
                message: "cannot read the ledger in \(isPostgres ? PostgresURL.redacted(state) : state): \(error.description)")
        }
        var tokens: [ResourceID: TokenUsage] = [:]
        func add(_ agent: ResourceID, _ usage: TokenUsage) {
            var total = tokens[agent] ?? TokenUsage(prompt: 0, completion: 0)
            total.prompt = total.prompt.saturatingAdding(usage.prompt)
            total.completion = total.completion.saturatingAdding(usage.completion)
            tokens[agent] = total
        }
        for call in calls { add(call.agent, call.usage) }
        for day in days { add(day.agent, day.usage) }
        return ObservedUsage(tokens: tokens, days: Double(Self.observedDays))
    }
}
