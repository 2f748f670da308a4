import Foundation
import Glibc
import OrlCore
import Synchronization
import Testing

@testable import OrlRuntime

@Suite struct StartTests {
    let runtime = ProcessRuntime()

    @Test func environmentIsExactlyTheSpecsAndNothingOfTheController() async throws {
        setenv("ORL_TEST_CONTROLLER_ONLY", "must not leak", 1)
        try await withTemporaryDirectory { directory in
            let environment = [("PATH", "/usr/bin:/bin"), ("A", "1"), ("WITH_SPACES", "two words"), ("EMPTY", "")]
            let process = try runtime.start(spec("sleep", ["30"], in: directory, environment: environment))
            let environ = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(process.pid)/environ"))
            let entries = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            #expect(entries == ["PATH=/usr/bin:/bin", "A=1", "WITH_SPACES=two words", "EMPTY="])
            #expect(await runtime.stop(process, grace: .seconds(30)) == .signaled(signal: SIGTERM))
        }
    }

    @Test func runsInItsDirectoryAndOwnSessionWithOnlyStdioOpen() async throws {
        // A descriptor the controller leaves inheritable must still not reach the agent.
        let leaky = open("/dev/null", O_RDONLY)
        defer { close(leaky) }
        try await withTemporaryDirectory { directory in
            let process = try runtime.start(spec("sleep", ["30"], in: directory))
            #expect(procLink(process.pid, "cwd") == directory)
            #expect(getpgid(process.pid) == process.pid)
            #expect(getsid(process.pid) == process.pid)
            // Eventually: right after execve the dynamic loader briefly has libraries open.
            let onlyStdio = await eventually {
                (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.pid)/fd").sorted()) == ["0", "1", "2"]
            }
            #expect(onlyStdio)
            #expect(procLink(process.pid, "fd/0") == "/dev/null")
            #expect(procLink(process.pid, "fd/1") == "\(directory)/logs/writer.log")
            #expect(procLink(process.pid, "fd/2") == "\(directory)/logs/writer.log")
            #expect(await runtime.stop(process, grace: .seconds(1)) != nil)
        }
    }

    @Test func signalsStartUnblockedAndNotIgnored() async throws {
        // The controller ignores SIGPIPE-like signals and blocks others on some threads;
        // the agent must start clean (SIG_IGN and the mask survive execve).
        let previous = signal(SIGUSR2, SIG_IGN)
        defer { signal(SIGUSR2, previous) }
        try await withTemporaryDirectory { directory in
            let process = try runtime.start(spec("sleep", ["30"], in: directory))
            let status = contents("/proc/\(process.pid)/status").split(separator: "\n")
            #expect(status.contains("SigIgn:\t0000000000000000"))
            #expect(status.contains("SigBlk:\t0000000000000000"))
            _ = await runtime.stop(process, grace: .seconds(1))
        }
    }

    @Test func limitsAreApplied() async throws {
        try await withTemporaryDirectory { directory in
            let limits = ProcessLimits(addressSpace: 1 << 30, openFiles: 64, cpuSeconds: 100)
            let process = try runtime.start(spec("sleep", ["30"], in: directory, limits: limits))
            let lines = contents("/proc/\(process.pid)/limits").split(separator: "\n")
            func limit(_ name: String) -> [Substring]? {
                lines.first { $0.hasPrefix(name) }?.dropFirst(name.count).split(separator: " ").prefix(2).map { $0 }
            }
            #expect(limit("Max address space") == ["1073741824", "1073741824"])
            #expect(limit("Max open files") == ["64", "64"])
            #expect(limit("Max cpu time") == ["100", "100"])
            _ = await runtime.stop(process, grace: .seconds(1))
        }
    }

    @Test func stdoutAndStderrAreAppendedToTheLogAndStdinIsEmpty() async throws {
        try await withTemporaryDirectory { directory in
            let agent = shell("echo out; echo err >&2; read line; echo read=$?", in: directory)
            try "earlier\n".write(toFile: "\(directory)/logs-placeholder", atomically: false, encoding: .utf8)
            let first = try runtime.start(agent)
            #expect(await eventually { runtime.exitStatus(first) != nil })
            let second = try runtime.start(agent)
            #expect(await eventually { runtime.exitStatus(second) != nil })
            #expect(contents(agent.logFile) == "out\nerr\nread=1\nout\nerr\nread=1\n")
            var info = stat()
            #expect(stat(agent.logFile, &info) == 0 && info.st_mode & 0o777 == 0o600)
        }
    }

    @Test func aBareNameIsSearchedInTheAgentsPathOnly() async throws {
        try await withTemporaryDirectory { directory in
            let bin = "\(directory)/bin"
            try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
            try "#!/bin/sh\necho found me\n".write(toFile: "\(bin)/my-agent", atomically: false, encoding: .utf8)
            chmod("\(bin)/my-agent", 0o755)

            let found = spec("my-agent", in: directory, environment: [("PATH", "/nonexistent:\(bin)")])
            let process = try runtime.start(found)
            #expect(await eventually { runtime.exitStatus(process) == .exited(code: 0) })
            #expect(contents(found.logFile) == "found me\n")

            // The controller's PATH has it, the agent's environment has none: not found.
            let controllerPath = String(cString: getenv("PATH"))
            setenv("PATH", "\(bin):\(controllerPath)", 1)
            defer { setenv("PATH", controllerPath, 1) }
            let error = #expect(throws: RuntimeError.self) { try runtime.start(spec("my-agent", in: directory, environment: [])) }
            #expect(
                error?.message
                    == "cannot start agent Agent/writer: my-agent: No such file or directory (searched /usr/local/bin:/usr/bin:/bin, "
                    + "the default search path, as the agent's environment sets no PATH)")

            // A relative path is the agent's working directory's.
            let relative = try runtime.start(spec("bin/my-agent", in: directory))
            #expect(await eventually { runtime.exitStatus(relative) == .exited(code: 0) })
        }
    }

    @Test func aMissingProgramFailsStartWithAClearMessage() async throws {
        try await withTemporaryDirectory { directory in
            let missing = #expect(throws: RuntimeError.self) { try runtime.start(spec("python3-not-installed", in: directory)) }
            #expect(
                missing?.message
                    == "cannot start agent Agent/writer: python3-not-installed: No such file or directory (searched /usr/bin:/bin, "
                    + "the PATH of the agent's environment)")

            var logIsADirectory = spec("sleep", ["1"], in: directory)
            logIsADirectory.logFile = directory
            let unopenable = #expect(throws: RuntimeError.self) { try runtime.start(logIsADirectory) }
            #expect(unopenable?.message == "cannot start agent Agent/writer: cannot open the log file \(directory): Is a directory")

            var negative = spec("sleep", ["1"], in: directory)
            negative.limits.openFiles = -1
            let invalid = #expect(throws: RuntimeError.self) { try runtime.start(negative) }
            #expect(invalid?.message.contains("the limit openFiles is -1; it must not be negative") == true)

            let absent = #expect(throws: RuntimeError.self) { try runtime.start(spec("/opt/none/agent", in: directory)) }
            #expect(absent?.message.hasPrefix("cannot start agent Agent/writer: /opt/none/agent: No such file or directory") == true)

            try "no shebang here\n".write(toFile: "\(directory)/script", atomically: false, encoding: .utf8)
            chmod("\(directory)/script", 0o755)
            let noShebang = #expect(throws: RuntimeError.self) { try runtime.start(spec("./script", in: directory)) }
            #expect(
                noShebang?.message == "cannot start agent Agent/writer: \(directory)/./script: Exec format error (a script needs a #! line)"
            )

            var gone = spec("sleep", ["1"], in: "\(directory)/gone")
            gone.logFile = "\(directory)/logs/gone.log"
            let badDirectory = #expect(throws: RuntimeError.self) { try runtime.start(gone) }
            #expect(
                badDirectory?.message
                    == "cannot start agent Agent/writer: cannot change to the working directory \(directory)/gone: No such file or directory"
            )
        }
    }

    @Test func theLogDirectoryIsMadeWhenMissingAndOneThatCannotBeIsNamed() async throws {
        try await withTemporaryDirectory { directory in
            // Two levels missing for the first start; the second finds them.
            var first = spec("sleep", ["30"], in: directory, name: "first")
            first.logFile = "\(directory)/logs/deep/first.log"
            var second = spec("sleep", ["30"], in: directory, name: "second")
            second.logFile = "\(directory)/logs/deep/second.log"
            let processes = [try runtime.start(first), try runtime.start(second)]
            #expect(procLink(processes[0].pid, "fd/1") == first.logFile)
            #expect(procLink(processes[1].pid, "fd/1") == second.logFile)
            var info = stat()
            #expect(stat("\(directory)/logs/deep", &info) == 0 && info.st_mode & 0o777 == 0o700)

            // A file where a directory of the path should be: named as before.
            try "".write(toFile: "\(directory)/file", atomically: false, encoding: .utf8)
            var blocked = spec("sleep", ["30"], in: directory, name: "blocked")
            blocked.logFile = "\(directory)/file/sub/blocked.log"
            let error = #expect(throws: RuntimeError.self) { try runtime.start(blocked) }
            #expect(
                error?.message
                    == "cannot start agent Agent/blocked: cannot create the log directory \(directory)/file/sub: Not a directory")
            for process in processes { _ = await runtime.stop(process, grace: .seconds(1)) }
        }
    }

    @Test func startsOneAfterAnotherOnOneThreadEachRunAfterAFailedOne() async throws {
        // A thread keeps the child's stack from one spawn to the next: each start, after
        // one that failed in the child too, runs its own program in its own directory.
        try await withTemporaryDirectory { directory in
            var processes: [(ProcessSpec, ProcessIdentity)] = []
            for index in 0..<6 {
                if index == 3 {
                    var gone = shell("exit 0", in: "\(directory)/gone", name: "gone")
                    gone.logFile = "\(directory)/logs/gone.log"
                    #expect(throws: RuntimeError.self) { try runtime.start(gone) }
                }
                let agent = shell("echo started-\(index) $$; exec sleep 30", in: directory, name: "agent-\(index)")
                processes.append((agent, try runtime.start(agent)))
            }
            for (index, (agent, process)) in processes.enumerated() {
                #expect(await waitForLog(agent, containing: "started-\(index) \(process.pid)"))
                #expect(procLink(process.pid, "cwd") == directory)
            }
            for (_, process) in processes { _ = await runtime.stop(process, grace: .seconds(1)) }
        }
    }

    @Test func startTimeIdentifiesTheProcess() async throws {
        try await withTemporaryDirectory { directory in
            let process = try runtime.start(spec("sleep", ["30"], in: directory))
            #expect(runtime.isRunning(process))
            let impostor = ProcessIdentity(pid: process.pid, startTime: process.startTime + 1)
            #expect(!runtime.isRunning(impostor))
            // Stopping the impostor must not touch the real process.
            _ = await runtime.stop(impostor, grace: .milliseconds(100))
            #expect(runtime.isRunning(process))
            #expect(runtime.exitStatus(process) == nil)
            _ = await runtime.stop(process, grace: .seconds(1))
        }
    }

    @Test func exitStatusReportsTheCodeOnceExitedAndKeepsIt() async throws {
        try await withTemporaryDirectory { directory in
            let process = try runtime.start(shell("exit 3", in: directory))
            #expect(await eventually { runtime.exitStatus(process) != nil })
            #expect(runtime.exitStatus(process) == .exited(code: 3))
            #expect(!runtime.isRunning(process))
            #expect(await runtime.stop(process, grace: .seconds(1)) == .exited(code: 3))
        }
    }
}

@Suite struct StopTests {
    let runtime = ProcessRuntime()

    @Test func aChildThatHandlesSigtermExitsWithinGrace() async throws {
        try await withTemporaryDirectory { directory in
            let agent = shell("trap 'echo bye; exit 7' TERM; echo ready; while :; do sleep 0.05; done", in: directory)
            let process = try runtime.start(agent)
            #expect(await waitForLog(agent, containing: "ready"))
            let clock = ContinuousClock()
            let started = clock.now
            // Exiting with its own code proves it was not killed; and long before the grace ended.
            #expect(await runtime.stop(process, grace: .seconds(30)) == .exited(code: 7))
            #expect(clock.now - started < .seconds(29))
            #expect(contents(agent.logFile).hasSuffix("bye\n"))
            #expect(!runtime.isRunning(process))
        }
    }

    @Test func aChildThatIgnoresSigtermIsKilledAfterGrace() async throws {
        try await withTemporaryDirectory { directory in
            let agent = shell("trap '' TERM; echo ready; while :; do sleep 0.05; done", in: directory)
            let process = try runtime.start(agent)
            #expect(await waitForLog(agent, containing: "ready"))
            let clock = ContinuousClock()
            let started = clock.now
            #expect(await runtime.stop(process, grace: .milliseconds(500)) == .signaled(signal: SIGKILL))
            let elapsed = clock.now - started
            // Never before the grace; the upper bound only guards against waiting forever
            // (generous: on 2 loaded cores, other suites' blocking waits delay this task).
            #expect(elapsed >= .milliseconds(500) && elapsed < .seconds(60))
            #expect(!runtime.isRunning(process))
        }
    }

    @Test func theWholeGroupIsStopped() async throws {
        try await withTemporaryDirectory { directory in
            // The grandchild ignores SIGTERM, so only the SIGKILL to the group ends it,
            // after its parent (the leader) has already exited.
            let agent = shell("(trap '' TERM; exec sleep 30) & echo $! > grandchild; echo ready; wait", in: directory)
            let process = try runtime.start(agent)
            #expect(await waitForLog(agent, containing: "ready"))
            let grandchild = try #require(Int32(contents("\(directory)/grandchild").trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(ProcStat.read(grandchild)?.isAlive == true)
            // The leader dies of SIGTERM (or, on a very loaded machine, of the SIGKILL after
            // the grace); either way the grandchild that ignores SIGTERM must be gone too.
            let exit = await runtime.stop(process, grace: .milliseconds(500))
            #expect(exit == .signaled(signal: SIGTERM) || exit == .signaled(signal: SIGKILL))
            #expect(ProcStat.read(grandchild)?.isAlive != true)
            #expect(!ProcStat.groupHasLiveMembers(process.pid))
        }
    }

    /// A batch is signalled at once and each process reported as it is gone: those that
    /// end on SIGTERM long before the one that waits for its SIGKILL.
    @Test func aBatchIsSignalledAtOnceAndEachReportedAsItEnds() async throws {
        try await withTemporaryDirectory { directory in
            let quick = (0..<5).map { shell("echo ready; exec sleep 30", in: directory + "/quick\($0)") }
            let stubborn = shell("trap '' TERM; echo ready; while :; do sleep 0.05; done", in: directory + "/stubborn")
            var processes: [ProcessIdentity] = []
            for agent in quick + [stubborn] {
                try FileManager.default.createDirectory(atPath: agent.workingDirectory, withIntermediateDirectories: true)
                processes.append(try runtime.start(agent))
            }
            for agent in quick + [stubborn] { #expect(await waitForLog(agent, containing: "ready")) }
            let reports = Mutex<[(ProcessIdentity, ProcessExit?)]>([])
            await runtime.stop(processes.map { ($0, $0 == processes.last ? .milliseconds(300) : .seconds(30)) }) { ended in
                reports.withLock { $0 += ended.map { ($0.process, $0.exit) } }
            }
            let reported = reports.withLock { $0 }
            #expect(reported.count == 6)
            #expect(reported.last?.0 == processes.last)
            #expect(reported.last?.1 == .signaled(signal: SIGKILL))
            #expect(reported.dropLast().allSatisfy { $0.1 == .signaled(signal: SIGTERM) })
            #expect(processes.allSatisfy { !runtime.isRunning($0) })
        }
    }

    /// The SIGTERM sent where the stop is decided is the only one: the stop that follows
    /// waits for the process (an agent may take a second SIGTERM as "hurry").
    @Test func aStopAfterTerminateSendsNoSecondSigterm() async throws {
        try await withTemporaryDirectory { directory in
            let agent = shell(
                "n=0; trap 'n=$((n+1)); echo term $n' TERM; echo ready; while [ $n -eq 0 ]; do sleep 0.05; done; sleep 0.5; echo count $n; exit 7",
                in: directory)
            let process = try runtime.start(agent)
            #expect(await waitForLog(agent, containing: "ready"))
            runtime.terminate(process)
            #expect(await runtime.stop(process, grace: .seconds(30)) == .exited(code: 7))
            let log = contents(agent.logFile)
            #expect(log.contains("term 1\n") && log.contains("count 1\n") && !log.contains("term 2"), "\(log)")
        }
    }

    @Test func cancellingStopSkipsTheRestOfTheGrace() async throws {
        try await withTemporaryDirectory { directory in
            let agent = shell("trap '' TERM; echo ready; while :; do sleep 0.05; done", in: directory)
            let process = try runtime.start(agent)
            #expect(await waitForLog(agent, containing: "ready"))
            let clock = ContinuousClock()
            let started = clock.now
            let stopping = Task { await runtime.stop(process, grace: .seconds(30)) }
            #expect(await eventually { clock.now - started > .milliseconds(50) })
            stopping.cancel()
            #expect(await stopping.value == .signaled(signal: SIGKILL))
            // Far below the 30 s grace: the cancellation cut it short.
            #expect(clock.now - started < .seconds(20))
        }
    }

    @Test func neverSignalsTheControllerOrInit() async throws {
        // Identities as a damaged state store could hold them; each would be a disaster.
        let controller = try #require(ProcStat.read(getpid()))
        #expect(await runtime.stop(ProcessIdentity(pid: getpid(), startTime: controller.startTime), grace: .zero) == nil)
        let initProcess = try #require(ProcStat.read(1))
        #expect(await runtime.stop(ProcessIdentity(pid: 1, startTime: initProcess.startTime), grace: .zero) == nil)
        #expect(await runtime.stop(ProcessIdentity(pid: 0, startTime: 0), grace: .zero) == nil)
        #expect(ProcStat.read(1)?.isAlive == true)
    }

    @Test func stopIsIdempotent() async throws {
        try await withTemporaryDirectory { directory in
            let process = try runtime.start(spec("sleep", ["30"], in: directory))
            #expect(await runtime.stop(process, grace: .seconds(30)) == .signaled(signal: SIGTERM))
            #expect(await runtime.stop(process, grace: .seconds(30)) == .signaled(signal: SIGTERM))
            #expect(runtime.exitStatus(process) == .signaled(signal: SIGTERM))
            #expect(!runtime.isRunning(process))
        }
    }

    @Test func aNewRuntimeAdoptsAProcessStartedByAnEarlierOne() async throws {
        try await withTemporaryDirectory { directory in
            let earlier = ProcessRuntime()
            let process = try earlier.start(spec("sleep", ["30"], in: directory))

            let adopting = ProcessRuntime()
            #expect(adopting.isRunning(process))
            #expect(adopting.exitStatus(process) == nil)
            // Not its child: the exit code is unknowable, reported as signal 0.
            #expect(await adopting.stop(process, grace: .seconds(30)) == .signaled(signal: 0))
            #expect(!adopting.isRunning(process))
            #expect(adopting.exitStatus(process) == .signaled(signal: 0))
            // The real parent still reaps it, with its real status.
            #expect(earlier.exitStatus(process) == .signaled(signal: SIGTERM))
        }
    }
}

/// Processes of a state that no record names, found by their environment.
@Suite struct UnrecordedTests {
    @Test func agentsOfTheStateThatNoRecordNamesAreFoundOnceEach() async throws {
        try await withTemporaryDirectory { directory in
            let state = directory + "/state"
            func agent(_ name: String, state: String, extra: [(name: String, value: String)] = []) -> ProcessSpec {
                // The agent's child (same session) must not count as a second process.
                spec(
                    "/bin/sh", ["-c", "sleep 30 & echo ready; wait"], in: directory, name: name,
                    environment: [
                        ("PATH", "/usr/bin:/bin"), ("ORL_AGENT", name), ("ORL_NAMESPACE", "default"), (AgentLaunch.stateVariable, state),
                    ] + extra)
            }
            let earlier = ProcessRuntime()
            let a = try earlier.start(agent("a", state: state))
            let b = try earlier.start(agent("b", state: state))
            let tool = try earlier.start(agent("tool", state: state, extra: [("ORL_TOOL", "t")]))
            let other = try earlier.start(agent("other", state: directory + "/another-state"))
            defer { for process in [a, b, tool, other] { kill(-process.pid, SIGKILL) } }
            for name in ["a", "b"] { #expect(await waitForLog(agent(name, state: state), containing: "ready")) }

            let later = ProcessRuntime()
            let found = later.unrecorded(marks: [AgentLaunch.stateVariable: state], recorded: [b])
            let names: [String] = found.map(\.agent.name)
            let processes: [ProcessIdentity] = found.map(\.process)
            #expect(names == ["a"], "\(found)")
            #expect(processes == [a], "\(found)")
            let all: Set<ProcessIdentity> = Set(later.unrecorded(marks: [AgentLaunch.stateVariable: state], recorded: []).map(\.process))
            #expect(all == [a, b])
            // Every mark must be held (a node's, say, beside the state's).
            #expect(later.unrecorded(marks: [AgentLaunch.stateVariable: state, "ORL_NODE": "n1"], recorded: []).isEmpty)
            // The runtime that started them knows them for its own.
            #expect(earlier.unrecorded(marks: [AgentLaunch.stateVariable: state], recorded: []).isEmpty)
            // A recorded PID with another start time is another process.
            let reused = ProcessIdentity(pid: a.pid, startTime: a.startTime + 1)
            #expect(later.unrecorded(marks: [AgentLaunch.stateVariable: state], recorded: [reused]).contains { $0.process == a })
        }
    }
}

/// Ends announced rather than looked for: a pidfd per watched process.
@Suite(.timeLimit(.minutes(1))) struct WatchTests {
    let runtime = ProcessRuntime()

    /// Returns once `onExit` was called.
    func watched(_ process: ProcessIdentity, by runtime: ProcessRuntime) async -> Bool {
        let watching = Mutex<Bool>(false)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ok = runtime.watch(process) { continuation.resume() }
            watching.withLock { $0 = ok }
        }
        return watching.withLock { $0 }
    }

    @Test func theEndOfAChildIsAnnouncedAndItsStatusIsStillRead() async throws {
        try await withTemporaryDirectory { directory in
            let process = try runtime.start(shell("sleep 0.2; exit 4", in: directory))
            #expect(await watched(process, by: runtime))
            #expect(runtime.exitStatus(process) == .exited(code: 4))
        }
    }

    /// A process another controller started (not this runtime's child) is watched too.
    @Test func theEndOfAnAdoptedProcessIsAnnounced() async throws {
        try await withTemporaryDirectory { directory in
            let earlier = ProcessRuntime()
            let process = try earlier.start(spec("sleep", ["30"], in: directory))
            async let ended = watched(process, by: runtime)
            _ = await earlier.stop(process, grace: .seconds(1))
            #expect(await ended)
        }
    }

    /// A process already gone, or a PID that now names another process, is reported
    /// at once.
    @Test func aProcessAlreadyGoneIsAnnouncedAtOnce() async throws {
        try await withTemporaryDirectory { directory in
            let process = try runtime.start(shell("exit 0", in: directory))
            #expect(await eventually { runtime.exitStatus(process) != nil })
            #expect(await watched(process, by: runtime))
            let running = try runtime.start(spec("sleep", ["30"], in: directory))
            #expect(await watched(ProcessIdentity(pid: running.pid, startTime: running.startTime + 1), by: runtime))
            _ = await runtime.stop(running, grace: .seconds(1))
        }
    }
}
