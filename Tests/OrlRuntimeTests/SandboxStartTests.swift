import Foundation
import Glibc
import OrlCore
import Testing

@testable import OrlRuntime

/// Sandboxed starts through the runtime (root only: namespaces, mounts, the uid drop).
@Suite(.enabled(if: geteuid() == 0)) struct SandboxStartTests {
    let runtime = ProcessRuntime()

    func sandboxed(_ script: String, in directory: String) throws -> ProcessSpec {
        let work = directory + "/work"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        var agent = shell(script, in: work)
        agent.sandbox = SandboxSpec(stateDirectory: directory + "/state", writable: [work])
        return agent
    }

    func status(_ pid: Int32, _ field: String) -> String? {
        contents("/proc/\(pid)/status").split(separator: "\n").first { $0.hasPrefix(field + ":") }
            .map { $0.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces) }
    }

    /// The PID orl supervises is the sandbox's init; the program is its only child, PID 2
    /// inside, as uid 65534. The init holds no copy of the controller: it is a tiny image
    /// of its own (where the host lets a memfd run), so a start copies none of the
    /// controller's page tables and a stop tears none down.
    @Test func theProgramRunsUnderATinyInitOfItsOwn() async throws {
        try await withTemporaryDirectory { directory in
            let agent = try sandboxed("echo pid $$; id -u; echo ready; exec sleep 30", in: directory)
            let process = try runtime.start(agent)
            #expect(await waitForLog(agent, containing: "ready"))
            #expect(contents(agent.logFile).hasPrefix("pid 2\n65534\n"), "\(contents(agent.logFile))")
            #expect(contents("/proc/\(process.pid)/comm") == "orl-sandbox\n")
            let children = contents("/proc/\(process.pid)/task/\(process.pid)/children").split(separator: " ")
            #expect(children.count == 1, "\(children)")
            #if arch(x86_64)
                // The controller (this test runner) maps tens of megabytes; the image, a page.
                let size = try #require(status(process.pid, "VmSize")?.split(separator: " ").first.flatMap { Int($0) })
                #expect(size < 1024, "VmSize \(size) kB")
                #expect(procLink(process.pid, "exe")?.contains("memfd:orl-sandbox") == true, "\(procLink(process.pid, "exe") ?? "-")")
                #expect(contents("/proc/\(process.pid)/cmdline") == "orl-sandbox\0")
            #endif
            // The program's end is told as it is, through the init.
            #expect(await runtime.stop(process, grace: .seconds(30)) == .signaled(signal: SIGTERM))
            #expect(!runtime.isRunning(process))
        }
    }

    /// Also for a program that ends at once (before its init has become the image).
    @Test func theProgramsExitCodeIsTheSandboxs() async throws {
        try await withTemporaryDirectory { directory in
            let agent = try sandboxed("echo ready; exit 3", in: directory)
            let process = try runtime.start(agent)
            #expect(await eventually(within: .seconds(20)) { runtime.exitStatus(process) != nil })
            #expect(runtime.exitStatus(process) == .exited(code: 3))
            var quick = try sandboxed("", in: directory)
            (quick.command, quick.arguments) = ("/bin/false", [])
            for _ in 0..<5 {
                let process = try runtime.start(quick)
                #expect(await eventually(within: .seconds(20)) { runtime.exitStatus(process) != nil })
                #expect(runtime.exitStatus(process) == .exited(code: 1))
            }
        }
    }

    /// A program that cannot be executed fails the start with the reason.
    @Test func aProgramThatCannotRunFailsTheStart() async throws {
        try await withTemporaryDirectory { directory in
            var agent = try sandboxed("", in: directory)
            agent.command = directory + "/work/missing"
            agent.arguments = []
            #expect {
                _ = try runtime.start(agent)
            } throws: { error in
                "\(error)".contains("No such file or directory")
            }
        }
    }
}
