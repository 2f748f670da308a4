import Foundation
import OrlServer
import Testing

/// Every number an agent can send the API, at its extremes: each is clamped or refused
/// with a 400, and the server keeps answering. A trap here stops the controller, and
/// with it every agent's gateway (`POST /v1/tasks/next?wait=1e16` once did).
@Suite(.serialized) struct ExtremeInputTests {
    static let extremes = [
        "1e16", "1e308", "1e309", "-1e308", "9223372036854775807", "9223372036854775808", "18446744073709551616",
        "-9223372036854775808", "-1", "-0", "0", "1e-320", "nan", "NaN", "inf", "-inf", "infinity", "0x7fffffffffffffff",
        "", "%00", "1.7976931348623157e308", "4.9e-324",
    ]

    @Test func pollWaitsAtTheExtremesAreClampedOrRefused() async throws {
        // The longest poll is short here: a huge wait is that, not a trap nor a hang.
        let longest = Duration.milliseconds(100)
        let h = try AgentAPIServerTests.Harness(longestPoll: longest)
        try await h.start()
        for wait in Self.extremes {
            let answer = try await h.post("/v1/tasks/next?wait=\(wait)")
            #expect([204, 400].contains(answer.status), "wait=\(wait): \(answer.status)")
            if answer.status == 400 { #expect(h.error(answer.json).message.contains("wait must be")) }
            // The poll was clamped: what it waited is what the API chose, read rather than
            // timed (a loaded machine stretches a poll's wall time, never its wait).
            #expect(h.waiters.longestWait <= longest, "wait=\(wait): waited \(h.waiters.longestWait)")
        }
        // The huge waits did wait, as long as the longest poll lets them.
        #expect(h.waiters.longestWait > .zero)
        #expect(try await h.post("/v1/tasks/next?wait=0").status == 204)
        await h.stop()
    }

    @Test func taskPathsAndBodiesAtTheExtremesAreRefused() async throws {
        let h = try AgentAPIServerTests.Harness()
        try await h.start()
        for attempt in ["9223372036854775807", "9223372036854775808", "-1", "0", "1e308", "nan"] {
            let answer = try await h.post("/v1/tasks/0000000000000/x/\(attempt)/heartbeat")
            #expect([400, 404].contains(answer.status), "attempt \(attempt): \(answer.status)")
        }
        _ = try h.startRun("relay")
        let first = try await h.post("/v1/tasks/next?wait=0")
        let task = try #require(first.json["task"] as? String)
        for body in [
            #"{"error": "x", "retry": 1e308}"#, #"{"error": 1e400}"#, #"{"output": 1e400}"#, #"{"output": -1e400}"#,
            #"{"output": 123456789012345678901234567890}"#, #"{"output": [1e308, -1e308, 4.9e-324]}"#,
        ] {
            let answer = try await h.post("/v1/tasks/\(task)/heartbeat", body)
            #expect(answer.status < 500, "\(body): \(answer.status)")
        }
        let done = try await h.post("/v1/tasks/\(task)/complete", #"{"output": {"n": 1e308, "m": 123456789012345678901234567890}}"#)
        #expect(done.status == 200, "\(done.json)")
        #expect(try await h.post("/v1/tasks/next?wait=0").status == 204)
        await h.stop()
    }

    @Test func chatTokenBoundsAtTheExtremesAreHeldOrRefused() async throws {
        let h = try AgentAPIServerTests.Harness()
        try await h.start()
        for field in ["max_tokens", "max_completion_tokens"] {
            for value in ["9223372036854775807", "9223372036854775808", "1e308", "-9223372036854775808", "0", "1.5", "1e400"] {
                let body = #"{"model": "sim/small", "messages": [{"role": "user", "content": "hi"}], "\#(field)": \#(value)}"#
                let answer = try await h.post("/v1/chat/completions", body)
                #expect([200, 400].contains(answer.status), "\(field)=\(value): \(answer.status) \(answer.json)")
            }
        }
        #expect(try await h.post("/v1/tasks/next?wait=0").status == 204)
        await h.stop()
    }
}
