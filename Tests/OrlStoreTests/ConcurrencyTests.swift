import Foundation
import OrlCore
import OrlJSON
import OrlTestSupport
import Testing

@testable import OrlStore

/// Two `SQLiteStateStore` instances on one file are two connections, as two `orlctl`
/// processes would have; a child `sqlite3` process is a real second process.
@Suite(.serialized) struct ConcurrencyTests {
    static let counter = ResourceID(kind: "Budget", name: "counter")

    @Test func twoConnectionsWritingAtOnceLoseNoWrite() throws {
        try withStateDirectory { directory in
            let stores = [try SQLiteStateStore(directory: directory), try SQLiteStateStore(directory: directory)]
            try stores[0].write { s throws(StoreError) in try s.put(stored(Self.counter, generation: 0)) }
            let failures = Failures()
            onThreads(
                stores.map { store in
                    {
                        for _ in 0..<100 {
                            do {
                                // Read-modify-write: only serialized transactions keep every increment.
                                try store.write { writer throws(StoreError) in
                                    let current = try writer.resource(Self.counter)!
                                    try writer.put(stored(Self.counter, generation: current.generation + 1))
                                }
                            } catch {
                                failures.record(error)
                            }
                        }
                    }
                })
            #expect(failures.all.isEmpty)
            #expect(try stores[1].read { s throws(StoreError) in try s.resource(Self.counter) }?.generation == 200)
        }
    }

    @Test func threadsSharingOneStoreTakeTurns() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            try store.write { s throws(StoreError) in try s.put(stored(Self.counter, generation: 0)) }
            let failures = Failures()
            let increment: @Sendable () -> Void = {
                for _ in 0..<50 {
                    do {
                        try store.write { writer throws(StoreError) in
                            let current = try writer.resource(Self.counter)!
                            try writer.put(stored(Self.counter, generation: current.generation + 1))
                        }
                        _ = try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }
                    } catch {
                        failures.record(error)
                    }
                }
            }
            onThreads([increment, increment, increment])
            #expect(failures.all.isEmpty)
            #expect(try store.read { s throws(StoreError) in try s.resource(Self.counter) }?.generation == 150)
        }
    }

    @Test func aWriterWaitsForAnotherConnectionsWriteThenSeesIt() throws {
        try withStateDirectory { directory in
            let first = try SQLiteStateStore(directory: directory)
            let second = try SQLiteStateStore(directory: directory)
            let holding = DispatchSemaphore(value: 0)
            let failures = Failures()
            let waited = Locked<Duration>(.zero)
            let sawFirst = Locked(false)
            onThreads([
                {
                    do {
                        try first.write { writer throws(StoreError) in
                            try writer.put(stored(agent("first")))
                            holding.signal()
                            // Time passing on purpose: the other writer must be seen to wait
                            // (SQLite's busy handler says nothing while it waits).
                            Thread.sleep(forTimeInterval: 0.3)
                        }
                    } catch {
                        failures.record(error)
                    }
                },
                {
                    holding.wait()
                    let clock = ContinuousClock()
                    let start = clock.now
                    do {
                        let seen = try second.write { writer throws(StoreError) in
                            try writer.put(stored(agent("second")))
                            return try writer.resource(agent("first")) != nil
                        }
                        sawFirst.withLock { $0 = seen }
                    } catch {
                        failures.record(error)
                    }
                    waited.withLock { $0 = clock.now - start }
                },
            ])
            #expect(failures.all.isEmpty)
            #expect(sawFirst.withLock { $0 })
            #expect(milliseconds(waited.withLock { $0 }) >= 200)
            #expect(
                try first.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name) == ["first", "second"])
        }
    }

    @Test func aWriterGivesUpAfterTheBusyTimeoutWithAClearErrorAndStaysUsable() throws {
        try withStateDirectory { directory in
            let first = try SQLiteStateStore(directory: directory)
            let impatient = try SQLiteStateStore(directory: directory, busyTimeout: .milliseconds(50))
            let holding = DispatchSemaphore(value: 0)
            let answered = DispatchSemaphore(value: 0)
            let failures = Failures()
            onThreads([
                {
                    do {
                        // Held until the impatient writer has its answer, which its 50 ms
                        // busy timeout gives long before 5 s.
                        try first.write { _ throws(StoreError) in
                            holding.signal()
                            if answered.wait(timeout: .now() + 5) == .timedOut {
                                failures.record(StoreError("the impatient write still waited after 5 s"))
                            }
                        }
                    } catch {
                        failures.record(error)
                    }
                },
                {
                    holding.wait()
                    defer { answered.signal() }
                    do throws(StoreError) {
                        try impatient.write { s throws(StoreError) in try s.put(stored(agent("impatient"))) }
                        failures.record(StoreError("the write did not time out"))
                    } catch {
                        if !error.message.contains("stayed locked") { failures.record(error) }
                    }
                },
            ])
            #expect(failures.all.isEmpty)
            try impatient.write { s throws(StoreError) in try s.put(stored(agent("later"))) }
            #expect(try first.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name) == ["later"])
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/sqlite3")))
    func aWriterWaitsForAnotherProcesssWriteTransaction() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let marker = directory + "/locked"
            // The child takes the write lock, adds a resource, says so, holds the lock
            // for 400 ms, then commits.
            let child = Process()
            child.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
            child.arguments = [store.path]
            let script = Pipe()
            child.standardInput = script
            child.standardOutput = FileHandle.nullDevice
            try child.run()
            script.fileHandleForWriting.write(
                Data(
                    """
                    BEGIN IMMEDIATE;
                    INSERT INTO resources (kind, namespace, name, manifest, spec_hash, generation, resource_version,
                        source, file, line, revision, applied_at, applied_by)
                    VALUES ('Agent', 'default', 'from-child', '{}', '', 1, 1, 'child', 'f', 1, NULL, 0, 'child');
                    .shell touch '\(marker)'
                    .shell sleep 0.4
                    COMMIT;

                    """.utf8))
            try script.fileHandleForWriting.close()
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(20)
            while !FileManager.default.fileExists(atPath: marker) && clock.now < deadline { Thread.sleep(forTimeInterval: 0.005) }
            try #require(FileManager.default.fileExists(atPath: marker))

            let start = clock.now
            let sawChild = try store.write { writer throws(StoreError) in
                try writer.put(stored(agent("from-test")))
                return try writer.resource(agent("from-child")) != nil
            }
            let waited = clock.now - start
            child.waitUntilExit()
            #expect(child.terminationStatus == 0)
            #expect(sawChild)
            #expect(milliseconds(waited) >= 200)
            #expect(try store.read { s throws(StoreError) in try s.inventory(source: "child") } == [agent("from-child")])
        }
    }
}
