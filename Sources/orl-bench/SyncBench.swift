import ArgumentParser
import Foundation
import OrlCore
import OrlGit
import OrlStore
import OrlSync

#if canImport(Glibc)
    import Glibc
#endif

/// The GitOps watcher's round against a real repository of N synthetic manifests: the
/// first sync, a poll when the head did not move, and a one-file change synced (ls-remote,
/// fetch, read the changed blob, validate, plan, apply). Rounds run in process, as a
/// watcher runs them; `git ls-remote` and `git fetch` of one commit are timed beside them,
/// as ../shared/peer-bench measures git.
struct SyncBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Time sync rounds of a git repository of N synthetic manifests."
    )

    @Option(help: "How many manifests.")
    var count = 10_000

    @Option(help: "How many timed runs of each (the median is reported).")
    var runs = 5

    func run() async throws {
        let root = NSTemporaryDirectory() + "orl-bench-sync-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let repo = root + "/repo"
        let files = SyntheticFleet(count: count).files()
        for file in files {
            let url = URL(fileURLWithPath: repo).appendingPathComponent("fleet").appendingPathComponent(file.path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try file.text.write(to: url, atomically: false, encoding: .utf8)
        }
        try git(repo, "init", "-q", "-b", "main")
        try git(repo, "add", "-A")
        try git(repo, "commit", "-q", "-m", "fleet")
        let changedIndex = files.firstIndex { $0.path.contains("/budget-") }!
        let changedPath = repo + "/fleet/" + files[changedIndex].path

        let store = try SQLiteStateStore(directory: root + "/state")
        let sync = GitSourceSync(
            configuration: GitSourceConfiguration(
                name: "bench", url: repo, ref: "main", path: "fleet", prune: true, allowRewind: false, maxDeletions: 10,
                allowEmpty: false, auth: .none, appliedBy: "orl-bench", mirror: root + "/state/git/bench.git"),
            store: store, clock: { Timestamp(milliseconds: Int64(Date().timeIntervalSince1970 * 1000)) })
        let clock = ContinuousClock()

        var start = clock.now
        let first = await sync.round(retryFailed: false)
        let firstTime = clock.now - start
        guard case .applied(let outcome) = first.outcome, outcome.plan.additions == count else {
            throw ValidationError("the first sync did not apply the fleet: \(first.outcome)")
        }
        print("sync: a git repository of \(count) manifests, rounds in process, median of \(runs)")
        print("  first sync (fetch \(count) files, parse, validate, apply): \(firstTime.seconds) s")

        // Wall time on a shared machine includes waiting for a core; the process's CPU
        // time (user + system, the round is all it does then) does not.
        var polls: [Duration] = []
        var pollCPU: [Duration] = []
        for _ in 0..<max(runs, 20) {
            start = clock.now
            let cpu = cpuTime()
            let poll = await sync.round(retryFailed: false)
            polls.append(clock.now - start)
            pollCPU.append(cpuTime() - cpu)
            guard case .upToDate = poll.outcome else { throw ValidationError("a poll did something: \(poll.outcome)") }
        }
        print("  no-change poll (ls-remote only): \(median(polls).milliseconds) ms wall, \(median(pollCPU).milliseconds) ms CPU")

        var changes: [Duration] = []
        var changeCPU: [Duration] = []
        var parsed = 0
        for run in 0..<runs {
            let text = files[changedIndex].text.replacingOccurrences(of: "usd: 25", with: "usd: \(30 + run)")
            try text.write(toFile: changedPath, atomically: true, encoding: .utf8)
            try git(repo, "commit", "-q", "-am", "change \(run)")
            start = clock.now
            let cpu = cpuTime()
            let round = await sync.round(retryFailed: false)
            changes.append(clock.now - start)
            changeCPU.append(cpuTime() - cpu)
            guard case .applied(let outcome) = round.outcome, outcome.plan.updates == 1 else {
                throw ValidationError("the one-file change did not apply one update: \(round.outcome)")
            }
            parsed = round.parsed
        }
        print(
            "  one-file change synced (fetch, read, validate, plan, apply; \(parsed) file parsed): \(median(changes).milliseconds) ms wall, \(median(changeCPU).milliseconds) ms CPU"
        )

        // The peers' figures, measured the same way here.
        var lsRemote: [Double] = []
        var fetch: [Double] = []
        let clone = root + "/clone.git"
        try git(root, "clone", "-q", "--bare", repo, clone)
        for run in 0..<runs {
            lsRemote.append(try time(root, ["ls-remote", repo, "refs/heads/main"]))
            try "# \(run)\n".write(toFile: repo + "/fleet/note.yaml", atomically: true, encoding: .utf8)
            try git(repo, "add", "-A")
            try git(repo, "commit", "-q", "-m", "note \(run)")
            fetch.append(try time(clone, ["fetch", "-q", repo, "+refs/heads/main:refs/heads/main"]))
        }
        print(
            String(
                format: "git CLI: ls-remote %.1f ms, fetch of one commit %.1f ms (median)", lsRemote.sorted()[runs / 2] * 1000,
                fetch.sorted()[runs / 2] * 1000))
    }

    private func git(_ directory: String, _ arguments: String...) throws {
        _ = try time(directory, arguments)
    }

    private func time(_ directory: String, _ arguments: [String]) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        process.arguments = ["-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = FileHandle.nullDevice
        let start = DispatchTime.now().uptimeNanoseconds
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("git \(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
        }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    private func median(_ values: [Duration]) -> Duration { values.sorted()[values.count / 2] }

    /// This process's CPU time so far, user and system.
    private func cpuTime() -> Duration {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        func duration(_ t: timeval) -> Duration { .seconds(t.tv_sec) + .microseconds(t.tv_usec) }
        return duration(usage.ru_utime) + duration(usage.ru_stime)
    }
}
