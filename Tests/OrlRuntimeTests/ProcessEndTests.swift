import Glibc
import OrlCore
import Testing

@testable import OrlRuntime

@Suite struct ProcessEndTests {
    let runtime = ProcessRuntime()

    @Test func theWaitEndsWithTheProcessAndNotBefore() async throws {
        try await withTemporaryDirectory { directory in
            let process = try runtime.start(spec("sleep", ["30"], in: directory))
            // Not ended: the bounded wait runs to its deadline.
            #expect(ProcessEnd.wait(for: process.pid, until: .now + .milliseconds(20)) == false)
            let ended = Task { await ProcessEnd.wait(for: process.pid) }
            #expect(kill(process.pid, SIGTERM) == 0)
            await ended.value
            // Ended, not yet reaped: the pidfd told of its exit, which the status confirms.
            var info = siginfo_t()
            #expect(waitid(P_PID, id_t(process.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0)
            #expect(info._sifields._sigchld.si_pid == process.pid)
            #expect(ProcessEnd.wait(for: process.pid, until: .now + .seconds(30)) == true)
            #expect(await runtime.stop(process, grace: .seconds(1)) == .signaled(signal: SIGTERM))
        }
    }

    @Test func aProcessAlreadyGoneIsWaitedForAtOnce() async throws {
        try await withTemporaryDirectory { directory in
            let process = try runtime.start(spec("true", in: directory))
            #expect(await runtime.stop(process, grace: .seconds(5)) != nil)
            // Reaped: no such process any more.
            await ProcessEnd.wait(for: process.pid)
            #expect(ProcessEnd.wait(for: process.pid, until: .now + .seconds(30)) == true)
        }
    }
}
