import Foundation
import Glibc
import OrlCore
import Testing

@testable import OrlRuntime

@Suite struct LogRotationTests {
    let runtime = ProcessRuntime()

    @Test func rotatesBySizeKeepingNumberedCopies() async throws {
        try await withTemporaryDirectory { directory in
            let log = "\(directory)/agent.log"
            #expect(try runtime.rotateLog(log, maxBytes: 10, keep: 2) == false)  // no log yet

            try "small\n".write(toFile: log, atomically: false, encoding: .utf8)
            #expect(try runtime.rotateLog(log, maxBytes: 10, keep: 2) == false)

            for generation in ["first", "second", "third"] {
                try "\(generation) generation of output\n".write(toFile: log, atomically: false, encoding: .utf8)
                #expect(try runtime.rotateLog(log, maxBytes: 10, keep: 2))
                #expect(contents(log).isEmpty)
            }
            #expect(contents("\(log).1") == "third generation of output\n")
            #expect(contents("\(log).2") == "second generation of output\n")
            #expect(!FileManager.default.fileExists(atPath: "\(log).3"))
            #expect(!FileManager.default.fileExists(atPath: "\(log).1.tmp"))
        }
    }

    @Test func aRunningAgentKeepsWritingAtTheStartOfTheTruncatedLog() async throws {
        try await withTemporaryDirectory { directory in
            let agent = shell("i=0; while :; do echo line $i; i=$((i+1)); sleep 0.01; done", in: directory)
            let process = try runtime.start(agent)
            #expect(await eventually { contents(agent.logFile).count > 200 })
            #expect(try runtime.rotateLog(agent.logFile, maxBytes: 100, keep: 1))
            let rotatedSize = contents("\(agent.logFile).1").count
            #expect(rotatedSize > 200)
            #expect(await eventually { contents(agent.logFile).contains("\n") })
            _ = await runtime.stop(process, grace: .seconds(1))

            // O_APPEND: no hole of NULs where the old offset was; the file is only new lines.
            let after = try Data(contentsOf: URL(fileURLWithPath: agent.logFile))
            // (Not compared by size with the rotated file: on a loaded machine more may be
            // written between the rotation and the stop than before it.)
            let text = String(decoding: after, as: UTF8.self)
            #expect(!after.contains(0))
            #expect(text.hasPrefix("line "))
            #expect(!text.hasPrefix("line 0\n"), "the log was not truncated")
        }
    }
}

@Suite struct ProcStatTests {
    @Test func parsesAfterTheLastParenthesisOfTheCommandName() {
        let fields = (4...52).map(String.init)  // fields 4 onward; field 22 is "22"
        let line = "4242 (evil) S (name) " + "S " + fields.joined(separator: " ") + "\n"
        let stat = ProcStat(parsing: Array(line.utf8))
        #expect(stat == ProcStat(parsing: Array(("4242 (x) S " + fields.joined(separator: " ")).utf8)))
        #expect(stat?.state == UInt8(ascii: "S"))
        #expect(stat?.processGroup == 5)
        #expect(stat?.session == 6)
        #expect(stat?.startTime == 22)
        #expect(ProcStat(parsing: Array("4242 (truncated".utf8)) == nil)
    }

    @Test func theGroupScanParsesAsTheFullParserDoes() {
        let fields = (4...52).map(String.init)
        let line = "4242 (evil) S (name) " + "S " + fields.joined(separator: " ") + "\n"
        #expect(ProcStat.liveGroup(in: ArraySlice(line.utf8)) == 5)
        let zombie = "4242 (x) Z " + fields.joined(separator: " ")
        #expect(ProcStat.liveGroup(in: ArraySlice(zombie.utf8)) == nil)
        #expect(ProcStat.liveGroup(in: ArraySlice("4242 (truncated".utf8)) == nil)
        #expect(ProcStat.liveGroup(in: ArraySlice("4242 (x) S 1".utf8)) == nil)
        #expect(ProcStat.liveGroups().contains(getpgrp()))
    }

    @Test func readsThisProcess() {
        let stat = ProcStat.read(getpid())
        #expect(stat?.isAlive == true)
        #expect(stat?.processGroup == getpgrp())
        #expect(ProcStat.read(-1) == nil)
    }

    @Test func decodesWaitStatuses() {
        #expect(ProcessRuntime.decode(3 << 8) == .exited(code: 3))
        #expect(ProcessRuntime.decode(SIGKILL) == .signaled(signal: SIGKILL))
        #expect(ProcessRuntime.decode(SIGSEGV | 0x80) == .signaled(signal: SIGSEGV))  // core dumped
    }
}
