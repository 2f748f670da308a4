import ArgumentParser
import Foundation

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

    struct Figures {
        /// From the start of the `orlctl apply` (the apply's own time included).
        var up: Double
        var down: Double
        /// From the apply's return (the controller may have begun before it: its change
        /// feed sees the commit).
        var upAfterApply: Double
        var downAfterApply: Double
        /// From the controller's first event of the change (its decision: the first
        /// start, or the first stop) to the last process up or gone.
        var upAfterDecision: Double?
        var downAfterDecision: Double?
        /// The controller's CPU over each.
        var upCPU: Double
        var downCPU: Double
        var idle: Double
    }

    func validate() throws {
        guard ["strict", "none", "both"].contains(isolation) else { throw ValidationError("--isolation is strict, none or both") }
    }

    func run() throws {
        var results: [(String, Figures)] = []
        for mode in isolation == "both" ? ["none", "strict"] : [isolation] {
            let figures = try measure(mode)
            results.append((mode, figures))
            print("controller: \(agents) agents (/bin/sh then sleep), isolation \(mode), measured from the apply to the processes")
            print(String(format: "  empty to all running:  %.3f s (%.3f s after the apply returned)", figures.up, figures.upAfterApply))
            if let decided = figures.upAfterDecision {
                print(String(format: "    from the first start to all running: %.3f s; controller CPU %.3f s", decided, figures.upCPU))
            }
            print(String(format: "  all stopped again:     %.3f s (%.3f s after the apply returned)", figures.down, figures.downAfterApply))
            if let decided = figures.downAfterDecision {
                print(String(format: "    from the stop decision to all gone: %.3f s; controller CPU %.3f s", decided, figures.downCPU))
            }
            print(String(format: "  controller CPU with all up, over %d s: %.2f%%", idleSeconds, figures.idle))
        }
        if results.count == 2 {
            let (none, strict) = (results[0].1, results[1].1)
            // The difference, per agent, is what the sandbox adds to each start (the
            // controller spawns a batch on a few threads, so this is wall time, not CPU).
            let added = (strict.up - none.up) / Double(agents) * 1000
            print(String(format: "  sandbox: %.2f ms added per agent start; strict/none start time ratio %.2f", added, strict.up / none.up))
        }
    }

    private func measure(_ mode: String) throws -> Figures {
        let binary = Orlctl.binary(orlctl)
        let root = NSTemporaryDirectory() + "orl-bench-controller-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
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

        var start = Date()
        var cpu = cpuSeconds(pid)
        try Orlctl.run(binary, ["apply", "-f", root + "/fleet.yaml", "--state", state, "--source", "bench"])
        var applied = Date()
        guard wait(until: { children(of: pid).count == agents }, seconds: 60) else {
            throw ValidationError("only \(children(of: pid).count) of \(agents) agents came up")
        }
        var end = Date()
        let up = end.timeIntervalSince(start)
        let upAfterApply = end.timeIntervalSince(applied)
        let upAfterDecision = firstEvent(in: log, after: start, reasons: ["Started"]).map { end.timeIntervalSince($0) }
        let upCPU = cpuSeconds(pid) - cpu

        let before = cpuSeconds(pid)
        Thread.sleep(forTimeInterval: Double(idleSeconds))
        let idle = (cpuSeconds(pid) - before) / Double(idleSeconds) * 100

        start = Date()
        cpu = cpuSeconds(pid)
        try Orlctl.run(
            binary,
            [
                "apply", "-f", root + "/empty.yaml", "--state", state, "--source", "bench", "--prune", "--allow-empty", "--max-deletions",
                "\(agents + 10)",
            ])
        applied = Date()
        guard wait(until: { children(of: pid).isEmpty }, seconds: 60) else {
            throw ValidationError("\(children(of: pid).count) agents still run")
        }
        end = Date()
        let down = end.timeIntervalSince(start)
        let downAfterDecision = firstEvent(in: log, after: start, reasons: ["Removed", "Stopping"]).map { end.timeIntervalSince($0) }

        return Figures(
            up: up, down: down, upAfterApply: upAfterApply, downAfterApply: end.timeIntervalSince(applied),
            upAfterDecision: upAfterDecision,
            downAfterDecision: downAfterDecision, upCPU: upCPU, downCPU: cpuSeconds(pid) - cpu, idle: idle)
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
        for i in 0..<count {
            text += """
                ---
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: agent-\(i), labels: {team: bench}}
                spec: {model: sim/small, runtime: {command: /bin/sh, args: [-c, "exec sleep 100000"], gracePeriod: 5s, isolation: \(isolation)}}

                """
        }
        return text
    }

    private func wait(until condition: () -> Bool, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.005)
        }
        return condition()
    }

    /// Live processes whose parent is `pid` (agents are the controller's children).
    private func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { child in
            guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 2 && fields[0] != "Z" && Int32(fields[1]) == pid
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
