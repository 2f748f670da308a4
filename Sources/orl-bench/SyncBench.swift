import ArgumentParser
import Foundation
import Glibc
import OrlCore
import OrlGit
import OrlManifests
import OrlStore

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The GitOps watcher's round against a real repository of N synthetic manifests: the
/// first sync, a poll when the head did not move, and a one-file commit synced (ls-remote,
/// fetch, read the changed blob, validate, plan, apply) three ways on the same commits, in
/// turns: the watcher's round in process, `orlctl sync --once` as a process (its first
/// round reads the index the state keeps), and the git floor measured the same way,
/// `git fetch` of the commit into a bare clone and `git diff --name-only` of the heads.
/// Then commit to applied through `orlctl watch --webhook`.
struct SyncBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Time sync rounds of a git repository of N synthetic manifests."
    )

    @Option(help: "How many manifests.")
    var count = 10_000

    @Option(help: "How many timed runs of each (the median is reported).")
    var runs = 5

    @Option(help: "The orlctl binary for the webhook latency (default: the one next to orl-bench).")
    var orlctl: String?

    @Option(help: "Only sync this many one-file commits in process after the first sync, then stop (for a profiler).")
    var profileRounds: Int?

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
                allowEmpty: false, auth: { .none }, appliedBy: "orl-bench", mirror: root + "/state/git/bench.git"),
            store: store, clock: { Timestamp(milliseconds: Int64(Date().timeIntervalSince1970 * 1000)) })
        let clock = ContinuousClock()

        var start = clock.now
        let first = await sync.round(retryFailed: false)
        let firstTime = clock.now - start
        if case .invalid(let report, _) = first.outcome {
            throw ValidationError("the synthetic fleet is not valid: \(report.diagnostics.prefix(3).map(\.message))")
        }
        guard case .applied(let outcome) = first.outcome, outcome.plan.additions == count else {
            throw ValidationError("the first sync did not apply the fleet: \(first.record?.message ?? "")")
        }
        if let profileRounds {
            for run in 0..<profileRounds {
                let text = files[changedIndex].text.replacingOccurrences(of: "usd: 25", with: "usd: \(30 + run % 2)")
                try text.write(toFile: changedPath, atomically: true, encoding: .utf8)
                try git(repo, "commit", "-q", "-am", "change \(run)")
                guard case .applied = await sync.round(retryFailed: false).outcome else {
                    throw ValidationError("round \(run) did not apply")
                }
            }
            return
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
        print(
            "  no-change poll (ls-remote, drift fingerprint): \(median(polls).milliseconds) ms wall, \(median(pollCPU).milliseconds) ms CPU"
        )

        // A one-file commit, synced three ways on the same commit, in turns: the watcher's
        // round in process, `orlctl sync --once` in a process of its own (its first round
        // reads the index the state keeps), and the git floor, `git fetch` of the commit
        // into a bare clone and `git diff --name-only` of the two heads.
        let binary = Orlctl.binary(orlctl)
        let hasOrlctl = FileManager.default.isExecutableFile(atPath: binary)
        let cliState = root + "/cli-state"
        let syncOnce = [
            binary, "sync", "--once", "--repo", repo, "--path", "fleet", "--name", "bench", "--prune", "--max-deletions", "10", "--state",
            cliState, "--no-controller",
        ]
        if hasOrlctl {
            let first = Measurement.run(syncOnce)
            guard first.status == 0 else { throw ValidationError("orlctl sync --once exited \(first.status)") }
            print("  first orlctl sync --once (a process, all \(count) files): \(first.text)")
        }
        let clone = root + "/clone.git"
        try git(root, "clone", "-q", "--bare", repo, clone)
        var changes: [Duration] = []
        var changeCPU: [Duration] = []
        var processes: [Measurement] = []
        var floors: [Measurement] = []
        var fetches: [Measurement] = []
        var lsRemotes: [Measurement] = []
        var parsed = 0
        for run in 0..<runs {
            let before = try head(repo)
            let text = files[changedIndex].text.replacingOccurrences(of: "usd: 25", with: "usd: \(30 + run)")
            try text.write(toFile: changedPath, atomically: true, encoding: .utf8)
            try git(repo, "commit", "-q", "-am", "change \(run)")
            let after = try head(repo)
            func inProcess() async throws {
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
            func gitFloor() throws {
                let fetch = Measurement.run(["git", "-C", clone, "fetch", "-q", repo, "+refs/heads/main:refs/heads/main"])
                let diff = Measurement.run(["git", "-C", clone, "diff", "--name-only", before, after])
                guard fetch.status == 0, diff.status == 0 else { throw ValidationError("git fetch or diff failed") }
                fetches.append(fetch)
                floors.append(
                    Measurement(
                        wall: fetch.wall + diff.wall, cpu: fetch.cpu + diff.cpu, maxRSSKiB: max(fetch.maxRSSKiB, diff.maxRSSKiB), status: 0)
                )
                lsRemotes.append(Measurement.run(["git", "ls-remote", repo, "refs/heads/main"]))
            }
            func syncOnceProcess() throws {
                guard hasOrlctl else { return }
                let measured = Measurement.run(syncOnce)
                guard measured.status == 0 else { throw ValidationError("orlctl sync --once exited \(measured.status)") }
                processes.append(measured)
            }
            if run % 2 == 0 {
                try await inProcess()
                try gitFloor()
                try syncOnceProcess()
            } else {
                try syncOnceProcess()
                try gitFloor()
                try await inProcess()
            }
        }
        let floor = Measurement.median(floors)
        print(
            "  one-file change synced in process (the watcher's round: ls-remote, fetch, read, validate, plan, apply; \(parsed) file parsed): \(median(changes).milliseconds) ms wall, \(median(changeCPU).milliseconds) ms CPU"
        )
        if !processes.isEmpty {
            print("  one-file change, orlctl sync --once (a process; the state's index): \(Measurement.median(processes).text)")
        }
        print("  git floor, same commits: fetch + diff --name-only \(floor.text); fetch alone \(Measurement.median(fetches).text)")
        print(
            String(
                format: "  ratio to the floor: in process %.2f× wall, %.2f× CPU",
                seconds(median(changes)) / floor.wall, seconds(median(changeCPU)) / floor.cpu)
                + (processes.isEmpty
                    ? ""
                    : String(
                        format: "; orlctl sync --once %.2f× wall, %.2f× CPU", Measurement.median(processes).wall / floor.wall,
                        Measurement.median(processes).cpu / floor.cpu)))

        try await webhookLatency(repo: repo, root: root, changedPath: changedPath, text: files[changedIndex].text)
        print("git CLI: ls-remote \(Measurement.median(lsRemotes).wallText) (median)")
    }

    private func head(_ repo: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        process.arguments = ["-C", repo, "rev-parse", "HEAD"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Commit to applied through `orlctl watch --webhook`: a commit, a signed push
    /// delivery, and the state polled until the source has applied the commit.
    private func webhookLatency(repo: String, root: String, changedPath: String, text: String) async throws {
        let binary = Orlctl.binary(orlctl)
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            print("  (no orlctl next to orl-bench: webhook latency not measured)")
            return
        }
        let state = root + "/webhook-state"
        let secret = "bench-secret"
        let set = Process()
        set.executableURL = URL(fileURLWithPath: binary)
        set.arguments = ["secret", "set", "hook", "--from-env", "ORL_BENCH_WEBHOOK_SECRET", "--state", state]
        set.environment = ProcessInfo.processInfo.environment.merging(["ORL_BENCH_WEBHOOK_SECRET": secret]) { _, new in new }
        set.standardOutput = FileHandle.nullDevice
        try set.run()
        set.waitUntilExit()
        guard set.terminationStatus == 0 else { throw ValidationError("orlctl secret set exited \(set.terminationStatus)") }
        let watch = Process()
        watch.executableURL = URL(fileURLWithPath: binary)
        watch.arguments = [
            "watch", "--repo", repo, "--path", "fleet", "--name", "hook", "--state", state, "--interval", "1h", "--webhook",
            "127.0.0.1:0", "--webhook-secret", "hook",
        ]
        let log = root + "/watch.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        watch.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try watch.run()
        defer {
            watch.terminate()
            watch.waitUntilExit()
        }
        var url: String?
        while url == nil {
            try await Task.sleep(for: .milliseconds(20))
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            url = text.split(separator: "\n").first { $0.contains("listening on ") }?.split(separator: " ").last.map(String.init)
            guard watch.isRunning else { throw ValidationError("orlctl watch exited: \(text)") }
        }
        let store = try SQLiteStateStore(directory: state)
        func applied() throws -> String? {
            try store.read { reader throws(StoreError) in try reader.source(named: "hook") }?.lastApplied
        }
        let head = try String(contentsOfFile: repo + "/.git/refs/heads/main", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        while try applied() != head { try await Task.sleep(for: .milliseconds(20)) }

        var latencies: [Duration] = []
        let clock = ContinuousClock()
        for run in 0..<runs {
            try text.replacingOccurrences(of: "usd: 25", with: "usd: \(50 + run)").write(
                toFile: changedPath, atomically: true, encoding: .utf8)
            try git(repo, "commit", "-q", "-am", "webhook \(run)")
            let commit = try String(contentsOfFile: repo + "/.git/refs/heads/main", encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines)
            let body = Array(#"{"ref": "refs/heads/main", "after": "\#(commit)", "repository": {"default_branch": "main"}}"#.utf8)
            var request = URLRequest(url: URL(string: url!)!)
            request.httpMethod = "POST"
            request.httpBody = Data(body)
            request.setValue("push", forHTTPHeaderField: "X-GitHub-Event")
            request.setValue(GitWebhook.signature(body, secret: secret), forHTTPHeaderField: "X-Hub-Signature-256")
            let start = clock.now
            let (_, response) = try await URLSession.shared.data(for: request)
            guard (response as? HTTPURLResponse)?.statusCode == 202 else { throw ValidationError("the webhook answered \(response)") }
            while try applied() != commit { try await Task.sleep(for: .milliseconds(5)) }
            latencies.append(clock.now - start)
        }
        print(
            "  commit to applied through the webhook (orlctl watch --webhook, 5 ms polls of the state): \(median(latencies).milliseconds) ms"
        )
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

    private func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// This process's CPU time so far, user and system.
    private func cpuTime() -> Duration {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        func duration(_ t: timeval) -> Duration { .seconds(t.tv_sec) + .microseconds(t.tv_usec) }
        return duration(usage.ru_utime) + duration(usage.ru_stime)
    }
}
