import Foundation
import OrlCore
import OrlPostgres
import OrlTestPostgres
import OrlTestSupport
import Testing

/// What only the PostgreSQL backend has: its URL, its migrations, its failures.
@Suite struct PostgresURLTests {
    @Test func parsesWhatLibpqParses() throws {
        let url = try PostgresURL(
            parsing: "postgresql://orl:s%40cret@db.internal:6432/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=3")
        #expect(url.user == "orl" && url.password == "s@cret")
        #expect(url.host == "db.internal" && url.port == 6432 && url.database == "fleet")
        #expect(url.sslMode == .verifyFull && url.sslRootCertificate == "/etc/ca.pem" && url.connectTimeoutSeconds == 3)
        // The password never appears in what is shown.
        #expect(url.description == "postgres://orl@db.internal:6432/fleet")
        let v6 = try PostgresURL(parsing: "postgres://me@[::1]:5433/db")
        #expect(v6.host == "::1" && v6.port == 5433 && v6.sslMode == .prefer)
        let fromEnvironment = try PostgresURL(parsing: "postgres://db/fleet", environment: ["PGUSER": "ops", "PGPASSWORD": "pw"])
        #expect(fromEnvironment.user == "ops" && fromEnvironment.password == "pw" && fromEnvironment.port == 5432)
    }

    @Test(arguments: [
        ("postgres://me@db/fleet?sslmode=required", "sslmode must be one of"),
        ("postgres://me@db/fleet?ssl=true", "unknown parameter ssl"),
        ("postgres://me@db:99999/fleet", "port"),
        ("postgres://me@db/", "names no database"),
        ("postgres://db/fleet", "names no user"),
        ("postgres://me:hunter2@/fleet", "names no host"),
    ])
    func refusesWhatItCannotHonour(_ text: String, _ expected: String) {
        do {
            _ = try PostgresURL(parsing: text)
            Issue.record("\(text) parsed")
        } catch {
            #expect(error.message.contains(expected), "\(error.message)")
            #expect(!error.message.contains("hunter2"))
        }
    }
}

@Suite(.enabled(if: PostgresCluster.unavailable == nil, "PostgreSQL is not installed; run scripts/install-deps"))
struct PostgresStoreTests {
    @Test func anUnreachableDatabaseIsAClearErrorWithinTheConnectTimeout() throws {
        // A port nothing listens on: refused at once.
        let start = ContinuousClock.now
        do {
            _ = try PostgresStateStore(url: "postgres://orl@127.0.0.1:1/fleet?sslmode=disable&connect_timeout=2")
            Issue.record("opened a database that is not there")
        } catch {
            #expect(error.message.contains("cannot connect to the PostgreSQL state postgres://orl@127.0.0.1:1/fleet"), "\(error.message)")
        }
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func aMissingDatabaseIsNamed() throws {
        let cluster = try PostgresCluster.shared()
        do {
            _ = try PostgresStateStore(url: cluster.url(database: "no_such_database"))
            Issue.record("opened a database that does not exist")
        } catch {
            #expect(error.message.contains("no_such_database"), "\(error.message)")
            #expect(error.message.contains("3D000"), "\(error.message)")
        }
    }

    @Test func migrationsRunOnceEvenWhenProcessesOpenANewDatabaseTogether() throws {
        let url = try PostgresCluster.shared().database("migrate")
        let failures = Failures()
        onThreads(
            (0..<4).map { _ in
                {
                    do { _ = try PostgresStateStore(url: url) } catch { failures.record(error) }
                }
            })
        #expect(failures.all.isEmpty)
        // Reopening an up-to-date database changes nothing.
        let store = try PostgresStateStore(url: url)
        try store.write { s throws(StoreError) in try s.put(stored(agent("writer"))) }
        #expect(try PostgresStateStore(url: url).read { s throws(StoreError) in try s.resource(agent("writer")) } != nil)
    }

    @Test func aNewerSchemaIsRefused() throws {
        let cluster = try PostgresCluster.shared()
        let url = try cluster.database("newer")
        _ = try PostgresStateStore(url: url)
        let name = String(url.split(separator: "/").last!.split(separator: "?").first!)
        try cluster.psql("INSERT INTO schema_migrations (version, summary) VALUES (999, 'from the future')", database: name)
        do {
            _ = try PostgresStateStore(url: url)
            Issue.record("opened a newer schema")
        } catch {
            #expect(error.message.contains("this state was written by a newer orlctl (schema 999); upgrade orlctl"), "\(error.message)")
        }
    }

    /// A connection lost mid-transaction (the server ended it) fails that write, writes
    /// nothing, and the store goes on with a new connection.
    @Test func aConnectionLostMidWriteWritesNothingAndTheNextWriteWorks() throws {
        let cluster = try PostgresCluster.shared()
        let url = try cluster.database("lost")
        let store = try PostgresStateStore(url: url)
        let name = String(url.split(separator: "/").last!.split(separator: "?").first!)
        #expect(throws: StoreError.self) {
            try store.write { s throws(StoreError) in
                try s.put(stored(agent("half")))
                do {
                    try cluster.psql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(name)' AND pid <> pg_backend_pid()")
                } catch {
                    throw StoreError("psql: \(error)")
                }
                try s.put(stored(agent("other-half")))
            }
        }
        #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.isEmpty)
        try store.write { s throws(StoreError) in try s.put(stored(agent("after"))) }
        #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name) == ["after"])
    }

    /// The idle connections the server ended (a restart, an administrator) after a read and
    /// after a write: the next read and write are run again on a new connection, though a
    /// transaction's BEGIN (and a read's COMMIT) is no longer waited for on its own.
    @Test func connectionsEndedWhileIdleAreReplaced() throws {
        let cluster = try PostgresCluster.shared()
        let url = try cluster.database("idle")
        let store = try PostgresStateStore(url: url)
        let name = String(url.split(separator: "/").last!.split(separator: "?").first!)
        let endSessions = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(name)' AND pid <> pg_backend_pid()"
        try store.write { s throws(StoreError) in try s.put(stored(agent("first"))) }
        #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name) == ["first"])
        try cluster.psql(endSessions)
        #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name) == ["first"])
        try cluster.psql(endSessions)
        try store.write { s throws(StoreError) in try s.put(stored(agent("second"))) }
        try cluster.psql(endSessions)
        try store.write { s throws(StoreError) in try s.put(stored(agent("third"))) }
        #expect(
            try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name) == [
                "first", "second", "third",
            ])
    }

    /// A statement sent without waiting (the resources an apply puts) that the server refuses
    /// fails the write with its own message, not with the "transaction is aborted" of the
    /// statements after it, and writes nothing; the connection goes on.
    @Test func aRefusedRowFailsTheWriteWithItsOwnMessage() throws {
        let cluster = try PostgresCluster.shared()
        let url = try cluster.database("refused")
        let store = try PostgresStateStore(url: url)
        do {
            try store.write { s throws(StoreError) in
                try s.put(stored(agent("fine")))
                // PostgreSQL's text holds no NUL character.
                try s.put(stored(agent("nul"), manifest: "{\"a\":\"\u{0}\"}"))
                try s.append(
                    StoreEvent(time: Timestamp(milliseconds: 1), kind: .normal, resource: agent("fine"), reason: "Applied", message: "m"))
                _ = try s.history(limit: 1)
            }
            Issue.record("a NUL character was stored")
        } catch {
            #expect(error.message.contains("cannot store 2 resources"), "\(error.message)")
            #expect(!error.message.contains("25P02"), "\(error.message)")
        }
        #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.isEmpty)
        try store.write { s throws(StoreError) in try s.put(stored(agent("after"))) }
        #expect(try store.read { s throws(StoreError) in try s.resources(kind: nil, namespace: nil) }.map(\.id.name) == ["after"])
    }
}
