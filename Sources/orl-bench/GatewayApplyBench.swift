import ArgumentParser
import Foundation
import Glibc
import Synchronization

/// The gateway while another process applies a large fleet into the same state: the
/// controller serves the bench agent's calls (forwarded to a built-in upstream, and
/// answered by the simulated provider) while `orlctl apply` processes write 10,000
/// synthetic manifests, re-apply them with changes and delete them, round after round.
/// Each wrk run under that load alternates with one on a quiet state, so the two
/// columns share the machine's load.
struct GatewayApplyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway-apply",
        abstract: "The gateway's latency while `orlctl apply` of N manifests runs in another process, beside a quiet state.",
        discussion: """
            Needs wrk (apt-get install wrk). The synthetic Agents are applied suspended: the figure \
            is about the write lock and the controller's reconcile of the change, not about starting \
            1,667 processes (`orl-bench controller` measures that). Each apply runs in a session of \
            its own, as an operator's shell runs it beside a controller started with --detach or \
            by a service manager: Linux schedules each session as a group of its own (autogroup), \
            so the apply's threads compete with the controller as one group, not thread by \
            thread. --shared-session keeps them in the bench's session, with the controller.
            """
    )

    @Option(help: "How many synthetic manifests each apply writes.")
    var count = 10_000

    @Option(help: "Seconds per wrk run.")
    var duration = 10

    @Option(help: "Connection counts to run, comma-separated.")
    var connections = "1,4"

    @Option(help: "How many times the quiet/under-apply pair is run per connection count.")
    var rounds = 2

    @Option(help: "The orlctl binary (default: the one next to orl-bench).")
    var orlctl: String?

    @Flag(help: "Run the applies in the bench's session, the controller's, rather than in one of their own.")
    var sharedSession = false

    func run() async throws {
        let binary = Orlctl.binary(orlctl)
        guard let wrk = GatewayBench.which("wrk") else { throw ValidationError("wrk is not installed: apt-get install wrk") }
        let root = NSTemporaryDirectory() + "orl-bench-gateway-apply-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (upstreamURL, server) = try await GatewayBench.startUpstream()
        defer { server.cancel() }

        // The fleet the controller serves, then two versions of the synthetic one: B
        // changes every Agent and Budget of A (a third of the resources).
        let state = root + "/state"
        try GatewayBench.fleet(upstream: upstreamURL).write(toFile: root + "/fleet.yaml", atomically: true, encoding: .utf8)
        try GatewayBench.script.write(toFile: root + "/post.lua", atomically: true, encoding: .utf8)
        try Orlctl.run(binary, ["apply", "-f", root + "/fleet.yaml", "--state", state, "--no-controller"])
        for file in SyntheticFleet(count: count).files() {
            let a = file.text.replacingOccurrences(of: "  maxTokensPerCall: 4096\n", with: "  maxTokensPerCall: 4096\n  suspend: true\n")
            let b = a.replacingOccurrences(of: "usd: 25", with: "usd: 30").replacingOccurrences(of: "value: info", with: "value: debug")
            for (version, text) in [("a", a), ("b", b)] {
                let url = URL(fileURLWithPath: root + "/synthetic-" + version).appendingPathComponent(file.path)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try text.write(to: url, atomically: false, encoding: .utf8)
            }
        }

        let controller = try await Orlctl.controller(binary, ["--state", state], directory: state, marker: root)
        defer { controller.stop() }
        let (api, token) = (controller.api, controller.token)

        let applier = Applier(binary: binary, state: state, root: root, ownSession: !sharedSession)
        print("gateway-apply: orlctl controller; `orlctl apply` of \(count) manifests in another process, round after round")
        print("(first apply, re-apply changing \(count / 3), delete); wrk \(duration) s per run, quiet and under apply alternating")
        print(
            sharedSession
                ? "(the applies in the controller's session)" : "(each apply in a session of its own, as from an operator's shell)")
        print("(loop wait: the controller's event loops ready to run but waiting for a CPU, ms per second of the run)")
        print("target                      conns   load      req/s   p50 ms   p99 ms   max ms  CPU ms/req  loop wait  applies")
        for connections in connections.split(separator: ",").compactMap({ Int($0) }) {
            for _ in 0..<rounds {
                let direct = try GatewayBench.wrk(
                    wrk, root: root, url: upstreamURL + "/chat/completions", key: "none", connections: connections, seconds: duration)
                report("upstream direct", connections, "quiet", direct, cpu: nil, wait: nil, applies: nil)
                for (name, model) in [("gateway → upstream", "up/gpt-4o-mini"), ("gateway, simulated", "sim/gpt-4o-mini")] {
                    var pair: [GatewayBench.Figures] = []
                    for loaded in [false, true] {
                        if loaded { applier.start() }
                        let before = GatewayBench.cpuMilliseconds(controller.process.processIdentifier)
                        let waitedBefore = GatewayBench.loopWaitMilliseconds(controller.process.processIdentifier)
                        let figures = try GatewayBench.wrk(
                            wrk, root: root, url: api + "/v1/chat/completions", key: token, connections: connections, seconds: duration,
                            model: model)
                        let cpu =
                            (GatewayBench.cpuMilliseconds(controller.process.processIdentifier) - before) / Double(max(figures.requests, 1))
                        let wait =
                            (GatewayBench.loopWaitMilliseconds(controller.process.processIdentifier) - waitedBefore) / Double(duration)
                        let applies = loaded ? applier.stop() : nil
                        // The quiet run after starts once the controller has taken in the last write.
                        if loaded { try await Self.settle(controller.process.processIdentifier) }
                        report(name, connections, loaded ? "apply" : "quiet", figures, cpu: cpu, wait: wait, applies: applies)
                        if figures.non2xx > 0 { print("  non-2xx: \(figures.non2xx)") }
                        pair.append(figures)
                    }
                    if model.hasPrefix("up/") {
                        print(
                            String(
                                format: "  added over the upstream: quiet p50 %+.3f p99 %+.3f ms; under apply p50 %+.3f p99 %+.3f ms",
                                pair[0].p50 - direct.p50, pair[0].p99 - direct.p99, pair[1].p50 - direct.p50, pair[1].p99 - direct.p99))
                    }
                }
            }
        }
        print("applies done: \(applier.summary())")
        print("target: p99 added under apply < 5 ms")
    }

    /// Returns once the process has used under 4% of a core for a quarter of a second
    /// (15 s at most).
    static func settle(_ pid: Int32) async throws {
        for _ in 0..<60 {
            let before = GatewayBench.cpuMilliseconds(pid)
            try await Task.sleep(for: .milliseconds(250))
            if GatewayBench.cpuMilliseconds(pid) - before < 10 { return }
        }
    }

    private func report(
        _ name: String, _ connections: Int, _ load: String, _ f: GatewayBench.Figures, cpu: Double?, wait: Double?, applies: String?
    ) {
        print(
            name.padding(toLength: 27, withPad: " ", startingAt: 0)
                + String(
                    format: " %5d   %@ %10.0f %8.3f %8.3f %8.3f  %10@  %9@  %@", connections, load, f.rps, f.p50, f.p99, f.max,
                    cpu.map { String(format: "%.3f", $0) } ?? "-", wait.map { String(format: "%.0f", $0) } ?? "-", applies ?? ""))
    }

    /// `orlctl apply`, re-apply with changes and delete, one process after the other on
    /// a thread of its own, from `start` until `stop` (which waits for the process
    /// under way): the cycle goes on where it stopped at the next `start`.
    final class Applier: Sendable {
        let binary: String
        let state: String
        let root: String
        let ownSession: Bool
        private let running = Atomic<Bool>(false)
        private let done = Mutex<(phase: Int, window: [String], all: [String: [Double]])>((0, [], [:]))
        private let finished = DispatchSemaphore(value: 0)

        init(binary: String, state: String, root: String, ownSession: Bool) {
            self.binary = binary
            self.state = state
            self.root = root
            self.ownSession = ownSession
        }

        func start() {
            running.store(true, ordering: .sequentiallyConsistent)
            let thread = Thread { [self] in
                while running.load(ordering: .sequentiallyConsistent) { step() }
                finished.signal()
            }
            thread.start()
            // Let the first process get going before the load is measured.
            Thread.sleep(forTimeInterval: 0.05)
        }

        /// Stops after the process under way; what ran during the window.
        func stop() -> String {
            running.store(false, ordering: .sequentiallyConsistent)
            finished.wait()
            return done.withLock { state in
                defer { state.window = [] }
                return state.window.joined(separator: ",")
            }
        }

        func summary() -> String {
            done.withLock { state in
                state.all.sorted { $0.key < $1.key }.map { name, seconds in
                    let sorted = seconds.sorted()
                    return String(format: "%@ ×%d median %.2f s", name, seconds.count, sorted[sorted.count / 2])
                }.joined(separator: "; ")
            }
        }

        private func step() {
            let phase = done.withLock { $0.phase }
            let (name, arguments): (String, [String]) =
                switch phase % 3 {
                case 0: ("apply", ["apply", "-f", root + "/synthetic-a", "--no-controller"])
                case 1: ("re-apply", ["apply", "-f", root + "/synthetic-b", "--no-controller"])
                default: ("delete", ["delete", "-f", root + "/synthetic-b"])
                }
            let started = DispatchTime.now().uptimeNanoseconds
            guard let status = run([binary] + arguments + ["--state", state]) else { return }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            done.withLock { state in
                state.phase += 1
                state.window.append(status <= 1 ? name : name + "(exit \(status))")
                state.all[name, default: []].append(seconds)
            }
        }

        /// Runs `argv` with its output discarded, in a session of its own when
        /// `ownSession` (`POSIX_SPAWN_SETSID`; Foundation's `Process` keeps its children in
        /// ours); its exit status, 128 plus the signal that ended it, or nil when it could
        /// not be started.
        private func run(_ argv: [String]) -> Int32? {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
            var attributes = posix_spawnattr_t()
            posix_spawnattr_init(&attributes)
            defer { posix_spawnattr_destroy(&attributes) }
            // glibc's POSIX_SPAWN_SETSID, declared only under _GNU_SOURCE, which Swift's
            // Glibc module is not built with.
            let setSessionID: Int16 = 0x80
            if ownSession { posix_spawnattr_setflags(&attributes, setSessionID) }
            let cArgs = argv.map { strdup($0) } + [nil]
            defer { for pointer in cArgs { free(pointer) } }
            var pid: pid_t = 0
            guard posix_spawn(&pid, argv[0], &actions, &attributes, cArgs, environ) == 0 else { return nil }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0, errno == EINTR {}
            return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        }
    }
}
