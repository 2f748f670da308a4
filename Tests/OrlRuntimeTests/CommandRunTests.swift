import Foundation
import OrlCore
import Testing

@testable import OrlRuntime

/// Command tools run to completion: the input on stdin, exactly the given argv (no
/// shell), their output read back, and nothing left running afterwards.
@Suite struct CommandRunTests {
    func invocation(
        _ command: String, _ arguments: [String], in directory: String, input: String = "", timeout: Duration = .seconds(20),
        maxOutputBytes: Int = 1 << 20
    ) -> CommandInvocation {
        CommandInvocation(
            command: command, arguments: arguments, environment: ["PATH": "/usr/bin:/bin", "ORL_TOOL": "t"], workingDirectory: directory,
            input: Array(input.utf8), timeout: timeout, maxOutputBytes: maxOutputBytes)
    }

    @Test func theInputGoesInAndTheOutputComesBack() async throws {
        try await withTemporaryDirectory { directory in
            let outcome = try await ProcessRuntime().run(
                invocation("/bin/sh", ["-c", "cat; echo; pwd; echo \"$ORL_TOOL\"; echo oops >&2"], in: directory, input: #"{"a": 1}"#))
            #expect(outcome.exit == .exited(code: 0))
            #expect(String(decoding: outcome.stdout, as: UTF8.self) == "{\"a\": 1}\n\(directory)\nt\n")
            #expect(String(decoding: outcome.stderr, as: UTF8.self) == "oops\n")
            #expect(!outcome.truncated)
        }
    }

    @Test func argumentsAreAnArgvListNotAShellLine() async throws {
        try await withTemporaryDirectory { directory in
            let marker = directory + "/pwned"
            let outcome = try await ProcessRuntime().run(invocation("printf", ["%s", "x; touch \(marker)"], in: directory))
            #expect(String(decoding: outcome.stdout, as: UTF8.self) == "x; touch \(marker)")
            #expect(!FileManager.default.fileExists(atPath: marker))
        }
    }

    @Test func aFailureIsItsExitAndWhatItSaid() async throws {
        try await withTemporaryDirectory { directory in
            let outcome = try await ProcessRuntime().run(invocation("/bin/sh", ["-c", "echo no such draft >&2; exit 3"], in: directory))
            #expect(outcome.exit == .exited(code: 3))
            #expect(String(decoding: outcome.stderr, as: UTF8.self) == "no such draft\n")
            let missing = await #expect(throws: RuntimeError.self) {
                try await ProcessRuntime().run(invocation("no-such-tool-anywhere", [], in: directory))
            }
            #expect(missing?.message.contains("No such file or directory") == true)
        }
    }

    @Test func pastItsTimeoutTheWholeGroupIsKilled() async throws {
        try await withTemporaryDirectory { directory in
            let pids = directory + "/pids"
            let clock = ContinuousClock()
            let started = clock.now
            // A child in the background, and the tool itself, both asleep for a minute.
            let outcome = try await ProcessRuntime().run(
                invocation(
                    "/bin/sh", ["-c", "sleep 60 & echo $! > \(pids); echo $$ >> \(pids); wait"], in: directory, timeout: .seconds(1)))
            #expect(outcome.exit == nil, "timed out")
            #expect(clock.now - started < .seconds(30))
            let written = try String(contentsOfFile: pids, encoding: .utf8).split(separator: "\n").compactMap { Int32($0) }
            #expect(written.count == 2)
            for pid in written {
                #expect(await eventually { kill(pid, 0) != 0 }, "pid \(pid) outlived the call")
            }
        }
    }

    @Test func aToolThatExitsTakesWhatItLeftBehindWithIt() async throws {
        try await withTemporaryDirectory { directory in
            let pids = directory + "/pids"
            // The background child closes its output, so the call ends when the tool exits.
            let outcome = try await ProcessRuntime().run(
                invocation("/bin/sh", ["-c", "sleep 60 >/dev/null 2>&1 & echo $! > \(pids); echo done"], in: directory))
            #expect(outcome.exit == .exited(code: 0))
            #expect(String(decoding: outcome.stdout, as: UTF8.self) == "done\n")
            let pid = try #require(Int32(try String(contentsOfFile: pids, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(await eventually { kill(pid, 0) != 0 }, "the background child outlived the call")
        }
    }

    @Test func outputBeyondTheLimitIsDroppedAndSaid() async throws {
        try await withTemporaryDirectory { directory in
            let outcome = try await ProcessRuntime().run(
                invocation("/bin/sh", ["-c", "head -c 100000 /dev/zero"], in: directory, maxOutputBytes: 1000))
            #expect(outcome.exit == .exited(code: 0))
            #expect(outcome.stdout.count == 1000 && outcome.truncated)
        }
    }

    @Test func aToolThatIgnoresItsInputDoesNotHurtTheCaller() async throws {
        try await withTemporaryDirectory { directory in
            // Exits at once without reading: writing the rest of the input hits EPIPE.
            let big = String(repeating: "x", count: 4 << 20)
            let outcome = try await ProcessRuntime().run(invocation("/bin/true", [], in: directory, input: big))
            #expect(outcome.exit == .exited(code: 0))
        }
    }
}
