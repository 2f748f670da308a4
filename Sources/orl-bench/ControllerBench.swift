import ArgumentParser
import COrlSpawn
import Foundation
import Synchronization

/// The controller with real processes: N agents from an empty state to all running,
/// all stopped again, and the controller's CPU while N agents idle. Everything goes
/// through `orlctl` processes, as an operator would drive it.
struct ControllerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Time N agents coming up and going down under orlctl controller, and its idle CPU."
    )

    @Option(help: "How many agents.")
    var agents = 100

    @Option(help: "Seconds to sample the controller's CPU with every agent up.")
    var idleSeconds = 10

    @Option(help: "The orlctl binary (default: the one next to orl-bench).")
    var orlctl: String?

    @Option(help: "Agents' isolation: strict, none, or both (each measured, then compared).")
    var isolation = "both"

    @Option(help: "Rounds per isolation mode (their medians are printed).")
    var rounds = 3

    @Option(help: ArgumentHelp("Keep each round's controller log (JSON lines) in this directory.", valueName: "dir"))
    var keepLogs: String?

    struct Figures {
        /// The `orlctl apply` of the fleet, from its start to its return.
        var apply: Double
        /// From the apply's return to the last agent process up (the controller may have
        /// begun before: its change feed sees the commit before the apply exits).
        var up: Double
        /// From the first agent process to the last: the spawns alone.
        var spawns: Double
        /// From the controller's stop decision (its first Removed event) to the last
        /// process gone (each watched by a pidfd).
        var stop: Double
        /// From the return of the apply that removes them to the last process gone.
        var stopAfterApply: Double
        /// From the stop decision to the controller's last Stopped event (its log, to
        /// the millisecond): the exits reaped and reported.
        var reported: Double
        /// The controller's CPU over each.
        var upCPU: Double
        var downCPU: Double
        var idle: Double
    }

    func validate() throws {
        guard ["strict", "none", "both"].contains(isolation) else { throw ValidationError("--isolation is strict, none or both") }
        guard rounds > 0 else { throw ValidationError("--rounds is at least 1") }
    }

    func run() throws {
        var medians: [(String, Figures)] = []
        // Each round's state (100 agents' directories) is removed after the last round, not
        // after its own: ext4 without a journal checks every inode freed in the last seconds
        // before it hands one out again (`recently_deleted`), which made the next round's
        // directories slow to create and was 15% of the controller's samples, a cost of the
        // benchmark deleting its own state that a fleet does not pay.
        var roots: [String] = []
        defer { for root in roots { try? FileManager.default.removeItem(atPath: root) } }
        for mode in isolation == "both" ? ["none", "strict"] : [isolation] {
            print("controller: \(agents) agents (/bin/sleep, as the Python peer starts), isolation \(mode)")
            var all: [Figures] = []
            for round in 1...rounds {
                let figures = try measure(mode, roots: &roots)
                all.append(figures)
                print(
                    String(
                        format:
                            "  round %d: up %.0f ms after the apply returned (apply %.0f ms, spawns %.0f ms, CPU %.0f ms); "
                            + "stopped %.1f ms after the decision (%.1f ms after the apply returned, reported %.0f ms, CPU %.0f ms); "
                            + "idle %.2f%%",
                        round, figures.up * 1000, figures.apply * 1000, figures.spawns * 1000, figures.upCPU * 1000, figures.stop * 1000,
                        figures.stopAfterApply * 1000, figures.reported * 1000, figures.downCPU * 1000, figures.idle))
            }
            func median(_ value: (Figures) -> Double) -> Double {
                let sorted = all.map(value).sorted()
                return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
            }
            let figures = Figures(
                apply: median(\.apply), up: median(\.up), spawns: median(\.spawns), stop: median(\.stop),
                stopAfterApply: median(\.stopAfterApply), reported: median(\.reported), upCPU: median(\.upCPU), downCPU: median(\.downCPU),
                idle: median(\.idle))
            medians.append((mode, figures))
            print(String(format: "  median of %d rounds:", rounds))
            print(
                String(
                    format:
                        "    empty to all running: %.0f ms after the apply returned (the apply itself %.0f ms); spawns alone %.0f ms; controller CPU %.0f ms",
                    figures.up * 1000, figures.apply * 1000, figures.spawns * 1000, figures.upCPU * 1000))
            print(
                String(
                    format:
                        "    all stopped: %.1f ms after the stop was decided (%.1f ms after the apply returned; the last Stopped event %.0f ms); "
                        + "controller CPU %.0f ms",
                    figures.stop * 1000, figures.stopAfterApply * 1000, figures.reported * 1000, figures.downCPU * 1000))
            print(String(format: "    controller CPU with all up, over %d s: %.2f%%", idleSeconds, figures.idle))
        }
        if medians.count == 2 {
            let (none, strict) = (medians[0].1, medians[1].1)
            // The difference, per agent, is what the sandbox adds to each start (the
            // controller spawns a batch on a few threads, so this is wall time, not CPU).
            let added = (strict.spawns - none.spawns) / Double(agents) * 1000
            print(
                String(
                    format: "  sandbox: %.2f ms added per agent start; strict/none spawn time ratio %.2f", added,
                    strict.spawns / none.spawns))
        }
    }

    private func measure(_ mode: String, roots: inout [String]) throws -> Figures {
        let binary = Orlctl.binary(orlctl)
        let root = NSTemporaryDirectory() + "orl-bench-controller-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        roots.append(root)
        let state = root + "/state"
        try fleet(agents, isolation: mode).write(toFile: root + "/fleet.yaml", atomically: true, encoding: .utf8)
        try "# nothing\n".write(toFile: root + "/empty.yaml", atomically: true, encoding: .utf8)

        // The controller starts on an empty state and waits.
        let controller = Process()
        controller.executableURL = URL(fileURLWithPath: binary)
        controller.arguments = ["controller", "--state", state, "--log-format", "json"]
        let log = root + "/controller.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        controller.standardError = FileHandle(forWritingAtPath: log)
        try Orlctl.run(binary, ["apply", "-f", root + "/empty.yaml", "--state", state, "--source", "bench"])
        try controller.run()
        defer {
            if controller.isRunning {
                controller.terminate()
                controller.waitUntilExit()
            }
        }
        guard wait(until: { FileManager.default.fileExists(atPath: state + "/controller.lock") }, seconds: 10) else {
            throw ValidationError("the controller did not start")
        }
        let pid = controller.processIdentifier
        // Settled: the controller's start-up work is not measured.
        Thread.sleep(forTimeInterval: 0.5)

        // The processes are counted from before the apply starts: the controller sees the
        // commit, and may start the first agents, before the apply has returned.
        let watch = Arrivals()
        let watcher = Thread { [agents] in
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline, !watch.state.withLock({ $0.stop }) {
                let count = Self.children(of: pid).count
                let now = Date()
                let done = watch.state.withLock { watch -> Bool in
                    if count > 0 && watch.first == nil { watch.first = now }
                    if count >= agents { watch.all = now }
                    return watch.all != nil
                }
                if done { return }
                Thread.sleep(forTimeInterval: 0.001)
            }
        }
        watcher.start()
        var start = Date()
        var cpu = cpuSeconds(pid)
        try Orlctl.run(binary, ["apply", "-f", root + "/fleet.yaml", "--state", state, "--source", "bench"], quiet: true)
        var applied = Date()
        guard wait(until: { watch.state.withLock { $0.all != nil } }, seconds: 60) else {
            watch.state.withLock { $0.stop = true }
            throw ValidationError("only \(Self.children(of: pid).count) of \(agents) agents came up")
        }
        let (first, all, _) = watch.state.withLock { $0 }
        var end = all ?? Date()
        let apply = applied.timeIntervalSince(start)
        // Zero when every agent ran before the apply had returned.
        let up = max(0, end.timeIntervalSince(applied))
        let spawns = end.timeIntervalSince(first ?? end)
        let upCPU = cpuSeconds(pid) - cpu

        let before = cpuSeconds(pid)
        Thread.sleep(forTimeInterval: Double(idleSeconds))
        let idle = (cpuSeconds(pid) - before) / Double(idleSeconds) * 100

        // Each agent's end is told by a pidfd: the time the last one ends is exact.
        let exits = Self.children(of: pid).map { orl_pidfd_open($0) }.filter { $0 >= 0 }
        defer { for fd in exits { close(fd) } }
        start = Date()
        cpu = cpuSeconds(pid)
        try Orlctl.run(
            binary,
            [
                "apply", "-f", root + "/empty.yaml", "--state", state, "--source", "bench", "--prune", "--allow-empty", "--max-deletions",
                "\(agents + 10)",
            ])
        applied = Date()
        guard let gone = lastEnd(of: exits, seconds: 60) else {
            throw ValidationError("\(Self.children(of: pid).count) agents still run")
        }
        end = gone
        // The decision is logged to the millisecond, after the apply's commit.
        let decided = firstEvent(in: log, after: start, reasons: ["Removed", "Stopping"]) ?? start
        let downCPU = cpuSeconds(pid) - cpu
        // Every process is gone: the last Stopped event follows (reaped, reported).
        var reported = lastEvent(in: log, after: start, reason: "Stopped", count: agents)
        let reportDeadline = Date().addingTimeInterval(10)
        while reported == nil && Date() < reportDeadline {
            Thread.sleep(forTimeInterval: 0.01)
            reported = lastEvent(in: log, after: start, reason: "Stopped", count: agents)
        }
        if let keepLogs {
            try? FileManager.default.createDirectory(atPath: keepLogs, withIntermediateDirectories: true)
            try? FileManager.default.copyItem(atPath: log, toPath: keepLogs + "/controller-\(mode)-\(UUID().uuidString.prefix(8)).log")
        }

        return Figures(
            apply: apply, up: up, spawns: spawns, stop: end.timeIntervalSince(decided), stopAfterApply: end.timeIntervalSince(applied),
            reported: (reported ?? decided).timeIntervalSince(decided), upCPU: upCPU, downCPU: downCPU, idle: idle)
    }

    /// When the last of the processes behind `fds` (pidfds) ended; nil if one still runs
    /// after `seconds`.
    private func lastEnd(of fds: [Int32], seconds: Double) -> Date? {
        var waiting = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let deadline = Date().addingTimeInterval(seconds)
        var last = Date()
        while !waiting.isEmpty {
            let left = Int32(max(0, deadline.timeIntervalSinceNow) * 1000)
            let ready = poll(&waiting, nfds_t(waiting.count), left)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return nil }
            last = Date()
            waiting = waiting.filter { $0.revents == 0 }.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        }
        return last
    }

    /// The time of the controller's first event of one of `reasons` at or after `time`
    /// (its JSON log; times to the millisecond).
    private func firstEvent(in log: String, after time: Date, reasons: Set<String>) -> Date? {
        guard let text = try? String(contentsOfFile: log, encoding: .utf8) else { return nil }
        let format = ISO8601DateFormatter()
        format.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for line in text.split(separator: "\n") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                let event = object["event"] as? String, reasons.contains(event), let stamp = object["time"] as? String,
                let date = format.date(from: stamp), date.timeIntervalSince(time) >= -0.001
            else { continue }
            return date
        }
        return nil
    }

    /// The time of the `count`th event `reason` at or after `time`; nil before there are as many.
    private func lastEvent(in log: String, after time: Date, reason: String, count: Int) -> Date? {
        guard let text = try? String(contentsOfFile: log, encoding: .utf8) else { return nil }
        let format = ISO8601DateFormatter()
        format.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var seen = 0
        var last: Date?
        for line in text.split(separator: "\n") where line.contains("\"\(reason)\"") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                object["event"] as? String == reason, let stamp = object["time"] as? String,
                let date = format.date(from: stamp), date.timeIntervalSince(time) >= -0.001
            else { continue }
            seen += 1
            last = max(last ?? date, date)
        }
        return seen >= count ? last : nil
    }

    private func fleet(_ count: Int, isolation: String) -> String {
        var text = """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec: {apiStyle: simulated, models: [{name: small, pricing: {input: 0.15, output: 0.6}}]}
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: bench}
            spec: {appliesTo: {selector: {matchLabels: {team: bench}}}, allow: {models: ["sim/*"]}}
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: bench}
            spec: {appliesTo: {selector: {matchLabels: {team: bench}}}, limits: [{window: day, usd: 100}]}

            """
        // `sleep` itself, as the Python peer starts it (bench_spawn.py): a shell in front
        // doubled each agent's own start-up, which is not the controller's work.
        for i in 0..<count {
            text += """
                ---
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: agent-\(i), labels: {team: bench}}
                spec: {model: sim/small, runtime: {command: /bin/sleep, args: ["100000"], gracePeriod: 5s, isolation: \(isolation)}}

                """
        }
        return text
    }

    private func wait(until condition: () -> Bool, seconds: Double, every interval: Double = 0.005) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: interval)
        }
        return condition()
    }

    /// The processes whose parent is `pid` (agents are the controller's children), from
    /// the `children` file of each of its threads: a few small reads, where a scan of
    /// /proc reads hundreds of files at each look.
    private static func children(of pid: Int32) -> [Int32] {
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return threads.flatMap { thread -> [Int32] in
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(thread)/children", encoding: .utf8) else { return [] }
            return text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
    }

    /// User plus system CPU of a process, in seconds.
    private func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
            return 0
        }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// When the first agent process and the last were seen, filled in by a thread of its own.
private final class Arrivals: Sendable {
    let state = Mutex<(first: Date?, all: Date?, stop: Bool)>((nil, nil, false))
}
