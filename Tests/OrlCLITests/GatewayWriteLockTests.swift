import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The gateway never waits on SQLite: while another process holds the state's write
/// lock (as a large `apply` does for seconds), a running controller still answers its
/// agents' model calls at once, in every API, and writes their ledger rows once the lock
/// is released. A call that wrote, or queued behind a write, would wait out the store's
/// 30 s busy timeout.
@Suite(.serialized) struct GatewayWriteLockTests {
    typealias Harness = ControllerCommandTests.Harness

    /// A process holding `BEGIN IMMEDIATE` on the state until told to let go.
    final class Locker {
        let process = Process()
        let input = Pipe()
        let output = Pipe()

        init(database: String) throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "python3", "-c",
                """
                import sqlite3, sys
                db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
                db.execute("BEGIN IMMEDIATE")
                print("locked", flush=True)
                sys.stdin.readline()
                db.execute("ROLLBACK")
                print("released", flush=True)
                """,
                database,
            ]
            process.standardInput = input
            process.standardOutput = output
            try process.run()
        }

        /// The next line the locker prints (it prints once it holds, or let go of, the lock).
        func line() -> String {
            var bytes: [UInt8] = []
            while true {
                let byte = output.fileHandleForReading.readData(ofLength: 1)
                guard let first = byte.first, first != UInt8(ascii: "\n") else { break }
                bytes.append(first)
            }
            return String(decoding: bytes, as: UTF8.self)
        }

        func release() -> String {
            input.fileHandleForWriting.write(Data("go\n".utf8))
            return line()
        }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    }

    static func post(_ port: Int, _ path: String, token: String, _ body: String) -> String {
        "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    }

    @Test func modelCallsAreAnsweredWhileAnotherProcessHoldsTheWriteLock() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a")])
        try h.startController()
        defer { h.stopControllerAtEnd() }
        let pids = try await h.waitForAgents(["a"], "after start")
        let environ = try String(contentsOfFile: "/proc/\(pids["a"]!)/environ", encoding: .utf8)
        let token = try #require(environ.split(separator: "\0").first { $0.hasPrefix("ORL_TOKEN=") }.map { String($0.dropFirst(10)) })
        let api = try String(contentsOfFile: h.state + "/controller.api", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let port = try #require(Int(api.split(separator: ":").last ?? ""))
        let calls = [
            ("/v1/chat/completions", #"{"model":"sim/small","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#),
            ("/v1/chat/completions", #"{"model":"small","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#),
            ("/v1/responses", #"{"model":"sim/small","input":"hi","max_output_tokens":8}"#),
            ("/v1/messages", #"{"model":"sim/small","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#),
            ("/v1/embeddings", #"{"model":"sim/small","input":"hi"}"#),
        ]
        // The first call before the lock: the agent's token is known to the gateway.
        #expect(RawSocket.status(port: port, Self.post(port, calls[0].0, token: token, calls[0].1), seconds: 10) == 200, "\(h.log())")

        let locker = try Locker(database: h.state + "/state.db")
        try #require(locker.line() == "locked")
        let started = ContinuousClock.now
        calling: for round in 0..<4 {
            for (path, body) in calls {
                let status = RawSocket.status(port: port, Self.post(port, path, token: token, body), seconds: 10)
                #expect(status == 200, "round \(round): \(path) answered \(String(describing: status)) under the lock\n\(h.log())")
                if status != 200 { break calling }
            }
            let models = RawSocket.status(
                port: port, "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\nConnection: close\r\n\r\n", seconds: 10
            )
            #expect(models == 200)
        }
        let took = ContinuousClock.now - started
        // 24 calls under the lock; one that waited on it would take the busy timeout (30 s).
        #expect(took < .seconds(5), "the calls took \(took) while another process held the write lock")
        #expect(locker.release() == "released")

        // The ledger rows, held back by the lock, are written once it is released.
        let expected = 1 + 4 * calls.count
        var seen = 0
        let written = await waitUntil(seconds: 15) {
            guard let usage = try? h.orlctl(["usage", "--calls", "--agent", "a", "-o", "json"]),
                let json = try? JSONSerialization.jsonObject(with: Data(usage.stdout.utf8)) as? [String: Any],
                let rows = json["calls"] as? [Any] ?? json["items"] as? [Any]
            else { return false }
            seen = rows.count
            return seen == expected
        }
        #expect(written, "ledger rows after the lock: \(seen), expected \(expected)")
    }
}
