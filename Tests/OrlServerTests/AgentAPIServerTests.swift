import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OrlCore
import OrlJSON
import OrlServer
import OrlStore
import OrlYAML
import Testing

/// The agents' task API over real HTTP on loopback, on a real SQLite state: who may
/// answer what, how a waiting poll learns of a task, and what a model call is
/// attributed to.
@Suite(.serialized) struct AgentAPIServerTests {
    static let fleet = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: small, maxOutputTokens: 10, pricing: {input: 1, output: 1}}]
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: a}
        spec: {model: sim/small, runtime: {command: /bin/true}}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: b}
        spec: {model: sim/small, runtime: {command: /bin/true}}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: all}
        spec:
          appliesTo: {agents: [a, b]}
          allow: {models: ["sim/*"], handoffs: [a, b]}
        ---
        apiVersion: orl.dev/v1
        kind: Workflow
        metadata: {name: relay}
        spec:
          steps:
            - {id: first, agent: a}
            - {id: second, agent: b, dependsOn: [first]}
        ---
        apiVersion: orl.dev/v1
        kind: Workflow
        metadata: {name: pair}
        spec:
          steps:
            - {id: left, agent: a}
            - {id: right, agent: a}
        ---
        apiVersion: orl.dev/v1
        kind: Workflow
        metadata: {name: chain}
        spec:
          steps:
            - {id: one, agent: a}
            - {id: two, agent: a, dependsOn: [one]}
            - {id: three, agent: b, dependsOn: [two]}
        """

    /// Command tools are not what these tests are about.
    struct NoCommands: CommandRunner {
        func run(_ invocation: CommandInvocation) async throws(RuntimeError) -> CommandOutcome {
            throw RuntimeError("no commands here")
        }
    }

    final class Harness: Sendable {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("orl-agent-api-\(UUID().uuidString)").path
        let store: SQLiteStateStore
        let gateway: Gateway
        let api: AgentAPI
        let fleet: Fleet
        let waiters = TaskWaiters()
        /// How many times the API has read the store's change marker.
        let markerReads = Locked(0)
        nonisolated(unsafe) var url = ""
        nonisolated(unsafe) var server: Task<Void, any Error>?

        static let clock: @Sendable () -> Timestamp = { Timestamp(milliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded())) }

        /// `recheck`: how often a waiting poll looks by itself; long, so that only an
        /// announcement can answer it within the tests' polls.
        init(recheck: Duration = .seconds(120), longestPoll: Duration = .seconds(25)) throws {
            store = try SQLiteStateStore(directory: directory)
            let report = ManifestValidation.validate([YAMLParser().parse(AgentAPIServerTests.fleet, file: "fleet.yaml")])
            precondition(report.isValid, "\(report.diagnostics.map(\.message))")
            fleet = report.fleet
            _ = try ApplyOperation.apply(
                report.fleet, to: store, options: ApplyOptions(source: "test", appliedBy: "test"), now: Self.clock())
            gateway = Gateway(store: store, providerKey: { _ in nil }, clock: Self.clock, log: { _ in }, onExhausted: {})
            gateway.update(
                fleet: report.fleet,
                tokens: [Self.agent("a"): AgentToken.digest("token-a"), Self.agent("b"): AgentToken.digest("token-b")],
                now: Self.clock())
            var configuration = AgentAPI.Configuration(stateDirectory: directory)
            configuration.recheckInterval = recheck
            configuration.longestPoll = longestPoll
            configuration.changePollInterval = .milliseconds(20)
            let apiStore = try SQLiteStateStore(directory: directory)
            api = AgentAPI(
                gateway: gateway, store: apiStore, waiters: waiters, commands: NoCommands(), secret: { _ in nil },
                changeMarker: { [markerReads] in
                    defer { markerReads.withLock { $0 += 1 } }
                    return try? apiStore.changeMarker()
                }, configuration: configuration)
        }

        static func agent(_ name: String) -> ResourceID { ResourceID(kind: "Agent", name: name) }

        func start() async throws {
            let started = try await APIServer(gateway: gateway, agents: api, port: 0).start()
            url = started.url
            server = started.task
        }

        /// Returns once `count` polls wait to be woken (a poll looks for its task first:
        /// one that found none and waits is what an announcement must wake).
        func polling(_ count: Int = 1) async throws {
            try await until("\(count) waiting polls") { self.waiters.waitingPolls >= count }
        }

        /// Returns once the API has read the store's change marker: a change committed
        /// after it is one the API announces.
        func watchingTheStore() async throws {
            try await until("a read of the change marker") { self.markerReads.withLock { $0 } > 0 }
        }

        private func until(_ what: String, _ condition: () -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while !condition() {
                guard ContinuousClock.now < deadline else {
                    throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "no \(what) within 30 s"])
                }
                try await Task.sleep(for: .milliseconds(5))
            }
        }

        func stop() async {
            server?.cancel()
            _ = await server?.result
            try? FileManager.default.removeItem(atPath: directory)
        }

        /// Starts a run from another connection, as `orlctl run` does from another process.
        func startRun(_ workflow: String) throws -> RunID {
            let other = try SQLiteStateStore(directory: directory)
            return try RunOperations(store: other).start(
                .init(workflow: ResourceID(kind: "Workflow", name: workflow), by: "test"), now: Self.clock(),
                random: UInt32.random(in: 0...UInt32.max)
            ).id
        }

        func post(
            _ path: String, _ body: String? = nil, token: String? = "token-a", headers: [(String, String)] = [], timeoutSeconds: Int64 = 60
        ) async throws -> (
            status: Int, json: [String: Any]
        ) {
            var request = HTTPClientRequest(url: url + path)
            request.method = .POST
            if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let body { request.body = .bytes(ByteBuffer(string: body)) }
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(timeoutSeconds))
            let bytes = try await response.body.collect(upTo: 1 << 20)
            let json =
                bytes.readableBytes == 0
                ? [:] : (try JSONSerialization.jsonObject(with: Data(Array(bytes.readableBytesView))) as? [String: Any] ?? [:])
            return (Int(response.status.code), json)
        }

        /// Opens `/v1/tasks/stream`: lines are sent with `send`, and the server's lines
        /// come parsed from `lines` (which ends when the response does).
        func stream(token: String = "token-a", wait: String = "20") async throws -> (
            send: AsyncStream<ByteBuffer>.Continuation, lines: StreamLines
        ) {
            let (outbound, send) = AsyncStream<ByteBuffer>.makeStream()
            var request = HTTPClientRequest(url: url + "/v1/tasks/stream?wait=\(wait)")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.body = .stream(outbound, length: .unknown)
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
            #expect(response.status == .ok && response.headers["content-type"].first == "application/x-ndjson")
            let (lines, yield) = AsyncThrowingStream<Data, any Error>.makeStream()
            Task {
                do {
                    var pending = Data()
                    for try await chunk in response.body {
                        pending.append(contentsOf: chunk.readableBytesView)
                        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                            let line = pending[pending.startIndex..<newline]
                            pending = Data(pending[(newline + 1)...])
                            yield.yield(Data(line))
                        }
                    }
                    yield.finish()
                } catch {
                    yield.finish(throwing: error)
                }
            }
            return (send, StreamLines(lines: lines.makeAsyncIterator()))
        }

        /// The server's lines of a stream, parsed.
        struct StreamLines {
            var lines: AsyncThrowingStream<Data, any Error>.AsyncIterator

            mutating func next() async throws -> [String: Any]? {
                guard let line = try await lines.next() else { return nil }
                return try JSONSerialization.jsonObject(with: line) as? [String: Any] ?? [:]
            }
        }

        func error(_ json: [String: Any]) -> (code: String, message: String) {
            let error = json["error"] as? [String: Any] ?? [:]
            return (error["code"] as? String ?? "", error["message"] as? String ?? "")
        }
    }

    @Test func aPollIsAnsweredAtOnceWithoutATaskAndRefusedWithoutAToken() async throws {
        let h = try Harness()
        try await h.start()
        let none = try await h.post("/v1/tasks/next?wait=0")
        #expect(none.status == 204)
        let anonymous = try await h.post("/v1/tasks/next?wait=0", token: nil)
        #expect(anonymous.status == 401 && h.error(anonymous.json).code == "invalid_api_key")
        let stranger = try await h.post("/v1/tasks/next?wait=0", token: "not-a-token")
        #expect(stranger.status == 401)
        let silly = try await h.post("/v1/tasks/next?wait=soon")
        #expect(silly.status == 400 && h.error(silly.json).message.contains("wait must be a number of seconds"))
        await h.stop()
    }

    /// A process its controller is stopping answers the task it holds but is handed no new
    /// one, by a poll or with its completion, nor is a poll that outlived its process (its
    /// token gone): the task waits, Ready, for the agent's next process, its attempt unspent.
    @Test func aProcessBeingStoppedOrGoneIsHandedNoNewTask() async throws {
        // A poll that takes nothing is answered at the end of its wait: 10 s at most here.
        let h = try Harness(longestPoll: .seconds(10))
        try await h.start()
        let run = try h.startRun("chain")
        let one = try await h.post("/v1/tasks/next?wait=0")
        #expect(one.status == 200 && one.json["step"] as? String == "one")
        // b's process waits for work; then its token goes (its process ended) and a new one
        // of b comes.
        async let outlived = h.post("/v1/tasks/next?wait=20", token: "token-b")
        try await h.polling()

        // a's process is being stopped: it completes "one", and "two" is not handed to it.
        h.gateway.stopHandingTasks(to: [AgentToken.digest("token-a")])
        let task = try #require(one.json["task"] as? String)
        let done = try await h.post("/v1/tasks/\(task)/complete?next=0", #"{"output": {}}"#)
        #expect(done.status == 200 && done.json["state"] as? String == "Succeeded", "\(done.json)")
        #expect(done.json["next"] is NSNull, "\(done.json)")
        #expect(try await h.post("/v1/tasks/next?wait=0").status == 204)

        h.gateway.update(
            fleet: h.fleet,
            tokens: [Harness.agent("a"): AgentToken.digest("token-a2"), Harness.agent("b"): AgentToken.digest("token-b2")],
            now: Harness.clock())
        let two = try await h.post("/v1/tasks/next?wait=0", token: "token-a2")
        #expect(two.status == 200 && two.json["task"] as? String == "\(run)/two/1", "\(two.json)")
        // "three" becomes Ready: b's old poll, woken, takes nothing; b's new process gets attempt 1.
        let second = try #require(two.json["task"] as? String)
        #expect(try await h.post("/v1/tasks/\(second)/complete", #"{"output": {}}"#, token: "token-a2").status == 200)
        #expect(try await outlived.status == 204)
        let three = try await h.post("/v1/tasks/next?wait=0", token: "token-b2")
        #expect(three.status == 200 && three.json["task"] as? String == "\(run)/three/1", "\(three.json)")
        await h.stop()
    }

    /// The next step's agent waits in a long poll; the first agent's completion, through
    /// the API, wakes it with its task (the poll's own recheck is two minutes away).
    @Test func aCompletionWakesTheNextStepsAgentsPoll() async throws {
        let h = try Harness()
        try await h.start()
        let run = try h.startRun("relay")
        let first = try await h.post("/v1/tasks/next?wait=0")
        #expect(first.status == 200 && first.json["step"] as? String == "first")
        let task = try #require(first.json["task"] as? String)
        #expect(first.json["idempotencyKey"] as? String == "\(run)/first")

        let asked = ContinuousClock.now
        async let waiting = h.post("/v1/tasks/next?wait=20", token: "token-b")
        try await h.polling()
        let beat = try await h.post("/v1/tasks/\(task)/heartbeat")
        #expect(beat.status == 200 && beat.json["leaseExpiresAt"] is String)
        let done = try await h.post("/v1/tasks/\(task)/complete", #"{"output": {"n": 1}}"#)
        #expect(done.status == 200 && done.json["state"] as? String == "Succeeded", "\(done.json)")
        let second = try await waiting
        // Woken, not answered by its own look at the end of its 20 s.
        #expect(ContinuousClock.now - asked < .seconds(15))
        #expect(second.status == 200 && second.json["step"] as? String == "second", "\(second)")
        #expect((second.json["dependencies"] as? [String: Any])?["first"] as? [String: Int] == ["n": 1])

        // The task is b's: a may not answer it, and an answer to a finished task is refused.
        let secondTask = try #require(second.json["task"] as? String)
        let notYours = try await h.post("/v1/tasks/\(secondTask)/complete", "{}")
        #expect(notYours.status == 403 && h.error(notYours.json).code == "forbidden")
        let late = try await h.post("/v1/tasks/\(task)/complete", "{}")
        #expect(late.status == 409 && h.error(late.json).message.contains("is no longer running"))
        let nowhere = try await h.post("/v1/tasks/0000000000000/x/1/heartbeat")
        #expect(nowhere.status == 404)
        let silent = try await h.post("/v1/tasks/\(secondTask)/fail", "{}", token: "token-b")
        #expect(silent.status == 400 && h.error(silent.json).message.contains("say why the task failed"))
        let failed = try await h.post("/v1/tasks/\(secondTask)/fail", #"{"error": "no", "retry": false}"#, token: "token-b")
        #expect(failed.status == 200 && failed.json["state"] as? String == "DeadLetter")
        await h.stop()
    }

    /// `complete?next=SECONDS`: the answer carries the agent's next task, claimed in the
    /// same transaction (a chain's next step), waited for when none is Ready, or null.
    @Test func aCompletionCarriesTheAgentsNextTask() async throws {
        let h = try Harness()
        try await h.start()
        let run = try h.startRun("chain")
        let one = try await h.post("/v1/tasks/next?wait=0")
        let oneTask = try #require(one.json["task"] as? String)
        #expect(one.json["step"] as? String == "one")
        // A bad wait is refused before anything is written.
        let silly = try await h.post("/v1/tasks/\(oneTask)/complete?next=soon", #"{"output": 1}"#)
        #expect(silly.status == 400 && h.error(silly.json).message.contains("next must be a number of seconds"))

        let done = try await h.post("/v1/tasks/\(oneTask)/complete?next=0", #"{"output": {"n": 1}}"#)
        #expect(done.status == 200 && done.json["state"] as? String == "Succeeded", "\(done.json)")
        let two = try #require(done.json["next"] as? [String: Any], "\(done.json)")
        #expect(two["step"] as? String == "two" && two["task"] as? String == "\(run)/two/1")
        #expect((two["dependencies"] as? [String: Any])?["one"] as? [String: Int] == ["n": 1])
        // Claimed: no poll finds it again.
        #expect(try await h.post("/v1/tasks/next?wait=0").status == 204)

        // The next step is b's: nothing for a.
        let last = try await h.post("/v1/tasks/\(run)/two/1/complete?next=0", #"{"output": 2}"#)
        #expect(last.status == 200 && last.json["next"] is NSNull, "\(last.json)")
        let three = try await h.post("/v1/tasks/next?wait=0", token: "token-b")
        #expect(three.json["step"] as? String == "three")
        // Without `next`, the answer is as before.
        let plain = try await h.post("/v1/tasks/\(run)/three/1/complete", #"{"output": 3}"#, token: "token-b")
        #expect(plain.status == 200 && plain.json["next"] == nil && plain.json["state"] as? String == "Succeeded")

        // Waiting: a run started elsewhere while the completion waits is its next task.
        let relay = try h.startRun("relay")
        let first = try #require(try await h.post("/v1/tasks/next?wait=0").json["task"] as? String)
        let asked = ContinuousClock.now
        async let answer = h.post("/v1/tasks/\(first)/complete?next=20", #"{"output": 4}"#)
        try await h.polling()
        let other = try h.startRun("relay")
        let waited = try await answer
        #expect(ContinuousClock.now - asked < .seconds(15))
        let next = try #require(waited.json["next"] as? [String: Any], "\(waited.json)")
        #expect(next["run"] as? String == other.rawValue && next["step"] as? String == "first", "\(next), not of \(relay)")
        await h.stop()
    }

    /// On `/v1/tasks/stream` the agent's tasks are pushed as they become Ready and
    /// answered on the same request: a completion's answer carries the next task, a bad
    /// line is refused without ending the stream, and the stream ends when no task came
    /// within its wait.
    @Test func aStreamPushesTheAgentsTasksAndTakesTheirAnswers() async throws {
        let h = try Harness()
        try await h.start()
        var (send, received) = try await h.stream(wait: "0.5")
        // Waiting: the run starts after the stream opened.
        let run = try h.startRun("chain")
        let first = try #require(try await received.next())
        let one = try #require(first["next"] as? [String: Any], "\(first)")
        #expect(one["task"] as? String == "\(run)/one/1" && (first["traceparent"] as? String)?.hasPrefix("00-") == true)

        send.yield(ByteBuffer(string: "not json\n"))
        let refused = try #require(try await received.next())
        #expect(refused["status"] as? Int == 400 && refused["task"] is NSNull, "\(refused)")
        send.yield(ByteBuffer(string: #"{"task": "\#(run)/one/1", "heartbeat": true}"# + "\n"))
        let renewed = try #require(try await received.next())
        #expect(renewed["task"] as? String == "\(run)/one/1" && renewed["leaseExpiresAt"] is String, "\(renewed)")

        // Two lines in one write: each gets its answer, in order.
        send.yield(
            ByteBuffer(string: #"{"task": "\#(run)/one/1", "output": {"n": 1}}"# + "\n\n" + #"{"task": "\#(run)/one/1", "output": 9}"#))
        let done = try #require(try await received.next())
        #expect(done["state"] as? String == "Succeeded", "\(done)")
        let two = try #require(done["next"] as? [String: Any], "\(done)")
        #expect(two["task"] as? String == "\(run)/two/1" && (two["dependencies"] as? [String: Any])?["one"] as? [String: Int] == ["n": 1])
        send.yield(ByteBuffer(string: "\n"))
        let again = try #require(try await received.next())
        #expect(again["status"] as? Int == 409 && (again["error"] as? [String: Any])?["code"] as? String == "conflict", "\(again)")

        // The next step is b's: the answer carries none, and the stream ends after its wait.
        send.yield(ByteBuffer(string: #"{"task": "\#(run)/two/1", "output": 2}"# + "\n"))
        let last = try #require(try await received.next())
        #expect(last["state"] as? String == "Succeeded" && last["next"] is NSNull, "\(last)")
        #expect(try await received.next() == nil)
        send.finish()
        let three = try await h.post("/v1/tasks/next?wait=0", token: "token-b")
        #expect(three.json["step"] as? String == "three")

        // Without a valid token nothing is streamed.
        let stranger = try await h.post("/v1/tasks/stream?wait=0", token: "nobody")
        #expect(stranger.status == 401)
        await h.stop()
    }

    /// A stream's completion is made on its event loop only when the store can make it
    /// without waiting: while another process holds the write lock it waits on the
    /// store's queue instead, and is answered once the lock is free, not refused busy.
    @Test func aStreamsCompletionWaitsOutAnotherWriter() async throws {
        let h = try Harness()
        try await h.start()
        var (send, received) = try await h.stream(wait: "0.5")
        let run = try h.startRun("chain")
        let first = try #require(try await received.next())
        #expect((first["next"] as? [String: Any])?["task"] as? String == "\(run)/one/1", "\(first)")

        let other = try SQLiteStateStore(directory: h.directory)
        let locked = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let holder = Thread {
            try? other.write { _ throws(StoreError) in
                locked.signal()
                release.wait()
            }
        }
        holder.start()
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                locked.wait()
                continuation.resume()
            }
        }
        send.yield(ByteBuffer(string: #"{"task": "\#(run)/one/1", "output": {"n": 1}}"# + "\n"))
        release.signal()
        let done = try #require(try await received.next())
        #expect(done["state"] as? String == "Succeeded", "\(done)")
        #expect((done["next"] as? [String: Any])?["task"] as? String == "\(run)/two/1", "\(done)")
        send.finish()
        await h.stop()
    }

    /// A run started by another process (another connection) wakes the polls too.
    @Test func aRunStartedElsewhereWakesAWaitingPoll() async throws {
        let h = try Harness()
        try await h.start()
        // Until the API has read the store once, a change could predate its marker.
        try await h.watchingTheStore()
        let asked = ContinuousClock.now
        async let waiting = h.post("/v1/tasks/next?wait=20")
        try await h.polling()
        _ = try h.startRun("relay")
        let answer = try await waiting
        #expect(ContinuousClock.now - asked < .seconds(15))
        #expect(answer.status == 200 && answer.json["step"] as? String == "first", "\(answer)")
        await h.stop()
    }

    /// Model calls are recorded against the task the agent names, or its only one.
    @Test func modelCallsAreAttributedToTheTaskServed() async throws {
        let h = try Harness()
        try await h.start()
        let run = try h.startRun("pair")
        let chat = #"{"model": "sim/small", "messages": [{"role": "user", "content": "hi"}]}"#
        let left = try await h.post("/v1/tasks/next?wait=0")
        #expect(try await h.post("/v1/chat/completions", chat).status == 200)
        let right = try await h.post("/v1/tasks/next?wait=0")
        #expect(left.json["step"] as? String == "left" && right.json["step"] as? String == "right")
        // Two in flight: a call naming neither is recorded against no step.
        #expect(try await h.post("/v1/chat/completions", chat).status == 200)
        #expect(
            try await h.post("/v1/chat/completions", chat, headers: [("x-orl-run", run.rawValue), ("x-orl-step", "right")]).status == 200)
        // A task the agent does not hold is not taken from its word.
        #expect(
            try await h.post("/v1/chat/completions", chat, headers: [("x-orl-run", run.rawValue), ("x-orl-step", "other")]).status == 200)

        var rows: [LedgerEntry] = []
        for _ in 0..<200 where rows.count < 4 {
            rows = try h.store.read { reader throws(StoreError) in try reader.ledger(LedgerQuery()) }
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(rows.reversed().map { $0.step ?? "-" } == ["left", "-", "right", "-"])
        #expect(rows.allSatisfy { $0.run == nil || $0.run == run.rawValue })
        let spend = try h.store.readRuns { reader throws(StoreError) in try reader.spend(of: run) }
        #expect(spend.keys.sorted() == ["left", "right"] && (spend["left"]?.tokens ?? 0) > 0)
        await h.stop()
    }
}
