import ArgumentParser
import OrlCore
import OrlGit
import OrlJSON
import OrlManifests

/// Sync rounds for people (`sync --once` output, `watch` log lines) and for machines.
enum SyncRenderer {
    /// Prints what `sync --once` did and ends the command with its exit code.
    static func finish(_ report: SyncReport, configuration: GitSourceConfiguration) throws {
        let name = Diagnostic.quoted(report.source)
        let at = report.head.map { " at \($0.short)" } ?? ""
        switch report.outcome {
        case .suspended:
            OrlctlMain.writeStandardError(
                "orlctl: source \(name) is suspended; nothing was fetched or applied (orlctl resume source/\(report.source))\n")
        case .upToDate:
            writeStandardOutput("source \(name) is up to date\(at).\n")
        case .waiting(let until):
            writeStandardOutput(
                "source \(name)\(at) failed before; it is tried again after \(until.rfc3339Seconds) or when the head moves.\n")
        case .applied(let outcome):
            let was = report.drift ? ": put back what changed out of band" : report.previous.map { ", was \(SourceSync.short($0))" } ?? ""
            writeStandardOutput(
                "source \(name)\(at)\(was)\n" + PlanRenderer.text(outcome, dryRun: false, style: TextStyle.forStandardOutput()))
        case .invalid(let validation, let files):
            writeStandardOutput(DiagnosticRenderer.text(validation, files: files, color: TextStyle.forStandardOutput().enabled))
            OrlctlMain.writeStandardError("orlctl: nothing was applied: source \(name)\(at) has errors; fix them in git first\n")
            throw ExitCode(ExitStatus.findings.rawValue)
        case .refused(let message):
            OrlctlMain.writeStandardError("orlctl: nothing was applied: \(message)\n")
            throw ExitCode(ExitStatus.findings.rawValue)
        case .failed(let message), .unreachable(let message):
            throw CommandFailure(message: "source \(name)\(at): \(message)")
        }
    }

    static func exitStatus(_ report: SyncReport) -> ExitStatus {
        switch report.outcome {
        case .invalid, .refused: .findings
        case .failed, .unreachable: .failure
        case .suspended, .upToDate, .waiting, .applied: .clean
        }
    }

    /// `{"source": ..., "head": ..., "result": ..., "plan": ...}`.
    static func json(_ report: SyncReport) -> JSONValue {
        var result: String
        var message: String?
        var plan: JSONValue?
        var applyNumber: Int?
        var diagnostics: JSONValue?
        switch report.outcome {
        case .suspended: result = "suspended"
        case .upToDate: result = "up-to-date"
        case .waiting(let until):
            result = "waiting"
            message = "tried again after \(until.rfc3339Seconds) or when the head moves"
        case .applied(let outcome):
            result = "applied"
            plan = PlanJSON.render(outcome.plan)
            applyNumber = outcome.applyNumber
        case .invalid(let validation, _):
            result = "invalid"
            message = report.record?.message
            diagnostics = .array(validation.diagnostics.map(DiagnosticRenderer.json))
        case .refused(let text):
            result = "refused"
            message = text
        case .failed(let text):
            result = "failed"
            message = text
        case .unreachable(let text):
            result = "unreachable"
            message = text
        }
        return .object([
            ("source", .string(report.source)),
            ("head", report.head.map { .string($0.hex) }),
            ("previous", report.previous.map { .string($0) }),
            ("result", .string(result)),
            ("drift", report.drift ? .bool(true) : nil),
            ("message", message.map { .string($0) }),
            ("applyNumber", applyNumber.map { .int($0) }),
            ("plan", plan),
            ("diagnostics", diagnostics),
        ])
    }

    /// The watcher's line for a round worth reporting: one that changed something or
    /// failed (and the first of a suspension); nil otherwise.
    static func logLine(_ report: SyncReport) -> String? {
        let source = "source \(report.source)"
        let head = report.head?.short ?? "?"
        switch report.outcome {
        case .upToDate, .waiting:
            return nil
        case .suspended:
            return "\(source): suspended; not syncing until resumed"
        case .applied(let outcome):
            let was = report.drift ? " again (drift)" : report.previous.map { " (was \(SourceSync.short($0)))" } ?? ""
            if outcome.plan.isEmpty { return "\(source): \(head) applied\(was): no changes" }
            let number = outcome.applyNumber.map { " as #\($0)" } ?? ""
            return "\(source): \(head) applied\(number)\(was): \(outcome.plan.summary)"
        case .invalid:
            return "\(source): \(head) not applied: \(report.record?.message ?? "the manifests have errors")"
        case .refused(let message):
            return "\(source): \(head) not applied: \(message)"
        case .failed(let message):
            return "\(source): \(head) not applied: \(message)"
        case .unreachable(let message):
            return "\(source): \(message)"
        }
    }

    /// `watch --verbose`'s line for a round that `logLine` leaves out: the head is the
    /// applied revision, or one that failed and waits for its backoff.
    static func quietLine(_ report: SyncReport) -> String? {
        let source = "source \(report.source)"
        let head = report.head?.short ?? "?"
        switch report.outcome {
        case .upToDate:
            return "\(source): up to date at \(head)"
        case .waiting(let until):
            return "\(source): \(head) failed before; tried again after \(until.rfc3339Seconds) or when the head moves"
        case .suspended, .applied, .invalid, .refused, .failed, .unreachable:
            return nil
        }
    }

    /// A timestamped line on standard error, as the controller writes its events.
    static func log(_ line: String) {
        OrlctlMain.writeStandardError("\(Caller.now.rfc3339Seconds) \(line)\n")
    }
}
