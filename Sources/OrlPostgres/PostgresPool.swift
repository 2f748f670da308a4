import Dispatch
import Glibc
import Logging
import OrlCore
import PostgresNIO
import Synchronization

/// Connections to one PostgreSQL database, for callers that block.
///
/// The store's ports are synchronous (as SQLite's calls are), so this pool is too: a
/// caller leases a connection, runs queries on it and waits for each on its own thread,
/// while the I/O runs on the pool's own event loop (one NIO thread, never the cooperative
/// pool's). Waiting cannot deadlock: the loop that completes a query is one no caller
/// runs on (NIO's `wait` checks that), whichever thread the caller is (the CLI's, a
/// store executor's, or the cooperative pool's, where a block costs what a SQLite call
/// costs). postgres-nio's `PostgresClient` pools only for async callers (its `run()`
/// must be a running task), hence this small blocking pool over `PostgresConnection`.
///
/// At most `maxConnections` are open; idle ones are kept and reused; one that failed is
/// closed and dropped, never handed out again. Every wait is bounded: a lease by
/// `leaseTimeout`, a connect by the URL's connect_timeout, a query by `queryTimeout`
/// (after which the connection is closed, which fails the query and makes the server roll
/// its transaction back).
final class PostgresPool: Sendable {
    let url: PostgresURL
    let queryTimeout: Duration
    let leaseTimeout: Duration
    private let configuration: PostgresConnection.Configuration
    private let group: MultiThreadedEventLoopGroup
    private let slots: DispatchSemaphore
    private let idle = Mutex<[PooledConnection]>([])
    private let nextID = Atomic<Int>(1)
    private let logger = Logger(label: "orl.postgres")

    init(url: PostgresURL, maxConnections: Int = 4, queryTimeout: Duration = .seconds(30), leaseTimeout: Duration = .seconds(30))
        throws(StoreError)
    {
        self.url = url
        self.queryTimeout = queryTimeout
        self.leaseTimeout = leaseTimeout
        var configuration = PostgresConnection.Configuration(
            host: url.host, port: url.port, username: url.user, password: url.password, database: url.database,
            tls: try Self.tls(url))
        configuration.options.connectTimeout = .seconds(Int64(url.connectTimeoutSeconds))
        let seconds = max(1, queryTimeout.wholeMilliseconds / 1000)
        // The server bounds what the client bounds too, so that a client gone mid-transaction
        // (killed, partitioned) does not hold the write lock until TCP gives up.
        configuration.options.additionalStartupParameters = [
            ("application_name", url.applicationName),
            ("statement_timeout", "\(seconds)s"),
            ("lock_timeout", "\(seconds)s"),
            ("idle_in_transaction_session_timeout", "\(seconds * 2)s"),
            ("TimeZone", "UTC"),
        ]
        self.configuration = configuration
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.slots = DispatchSemaphore(value: maxConnections)
    }

    deinit {
        for pooled in idle.withLock({ $0 }) { _ = pooled.connection.close() as EventLoopFuture<Void> }
        try? group.syncShutdownGracefully()
    }

    /// Runs `body` on a leased connection, returned to the pool afterwards (closed instead
    /// when `body` left it broken).
    func withConnection<T>(intent: String, _ body: (PostgresSession) throws(StoreError) -> T) throws(StoreError) -> T {
        guard slots.wait(timeout: .now() + .milliseconds(Int(leaseTimeout.wholeMilliseconds))) == .success else {
            throw StoreError(
                "cannot \(intent): every connection to the PostgreSQL state \(url) stayed busy for \(leaseTimeout.wholeMilliseconds / 1000)s"
            )
        }
        defer { slots.signal() }
        // An idle connection the server closed meanwhile (a restart, an idle timeout) is dropped.
        let pooled: PooledConnection
        if let reused = reusedConnection() { pooled = reused } else { pooled = PooledConnection(try connect(intent: intent)) }
        let session = PostgresSession(pooled, pool: self)
        defer {
            if session.isBroken || pooled.connection.isClosed {
                PostgresPool.close(pooled.connection)
            } else {
                idle.withLock { $0.append(pooled) }
            }
        }
        return try body(session)
    }

    /// One statement on a leased connection, for async callers (the gateway's budget
    /// reservations): the calling task waits for the answer, no thread does. No task holds
    /// a slot: the query starts where the slot was taken (the caller's thread when one is
    /// free at once, else the dispatch thread that waited for one) and the lease ends on the
    /// event loop when the answer comes, before the task is resumed. A held slot so never
    /// waits for a cooperative thread, which a blocking caller of `withConnection` may be
    /// holding while it waits for a slot. The same bounds as `withConnection` and `wait`.
    func query(_ sql: String, _ binds: [PostgresValue], intent: String) async throws(StoreError) -> [PostgresRandomAccessRow] {
        var bindings = PostgresBindings(capacity: binds.count)
        for value in binds { value.bind(into: &bindings) }
        let query = PostgresQuery(unsafeSQL: sql, binds: bindings)
        let outcome: Result<[PostgresRandomAccessRow], StoreError> = await withCheckedContinuation { continuation in
            let resumed = Mutex(false)
            // Once: gives the connection back (or closes it), frees the slot, resumes the task.
            let finish: @Sendable (Result<[PostgresRandomAccessRow], StoreError>, PooledConnection?) -> Void = { result, pooled in
                guard
                    resumed.withLock({ done in
                        defer { done = true }
                        return !done
                    })
                else { return }
                if let pooled {
                    pooled.unwatch()
                    if case .failure(let error) = result, PostgresSession.breaks(pooled.connection, error) {
                        PostgresPool.close(pooled.connection)
                    } else {
                        self.idle.withLock { $0.append(pooled) }
                    }
                }
                self.slots.signal()
                continuation.resume(returning: result)
            }
            let run: @Sendable (PooledConnection) -> Void = { pooled in
                let connection = pooled.connection
                // What a lease leaves unsettled is a read's COMMIT, whose failure matters only
                // if the connection failed, which fails this statement too.
                pooled.deferred.withLock { $0.removeAll() }
                let timeout = self.queryTimeout + .seconds(5)
                let timer = connection.closeFuture.eventLoop.scheduleTask(in: .milliseconds(timeout.wholeMilliseconds)) {
                    PostgresPool.close(connection)
                    finish(
                        .failure(
                            StoreError(
                                "cannot \(intent): the PostgreSQL state \(self.url) did not answer within \(timeout.wholeMilliseconds / 1000)s (nothing was written)"
                            )), pooled)
                }
                pooled.watch {
                    timer.cancel()
                    finish(.failure(StoreError("cannot \(intent): \(Self.describe(ConnectionClosed()))")), pooled)
                }
                let future: EventLoopFuture<PostgresQueryResult> = connection.query(query, logger: self.logger)
                future.whenComplete { result in
                    timer.cancel()
                    switch result {
                    case .success(let answer): finish(.success(answer.rows.map(PostgresRandomAccessRow.init)), pooled)
                    case .failure(let error): finish(.failure(StoreError("cannot \(intent): \(Self.describe(error))")), pooled)
                    }
                }
            }
            // Leased, the query starts from here (or from the thread that waited for the
            // slot), never from a task that would need a cooperative thread to go on.
            let start: @Sendable () -> Void = {
                if let reused = self.reusedConnection() {
                    run(reused)
                } else {
                    let id = self.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
                    let connecting: EventLoopFuture<PostgresConnection> = PostgresConnection.connect(
                        on: self.group.next(), configuration: self.configuration, id: id, logger: self.logger)
                    connecting.whenComplete { result in
                        switch result {
                        case .success(let connection): run(PooledConnection(connection))
                        case .failure(let error):
                            finish(
                                .failure(
                                    StoreError(
                                        "cannot \(intent): cannot connect to the PostgreSQL state \(self.url): \(Self.describe(error))")),
                                nil)
                        }
                    }
                }
            }
            if self.slots.wait(timeout: .now()) == .success {
                start()
            } else {
                let deadline = DispatchTime.now() + .milliseconds(Int(self.leaseTimeout.wholeMilliseconds))
                DispatchQueue.global().async {
                    guard self.slots.wait(timeout: deadline) == .success else {
                        continuation.resume(
                            returning: .failure(
                                StoreError(
                                    "cannot \(intent): every connection to the PostgreSQL state \(self.url) stayed busy for \(self.leaseTimeout.wholeMilliseconds / 1000)s"
                                )))
                        return
                    }
                    start()
                }
            }
        }
        return try outcome.get()
    }

    /// An idle connection; one the server closed meanwhile (a restart, an idle timeout) is dropped.
    private func reusedConnection() -> PooledConnection? {
        var reused = idle.withLock { $0.popLast() }
        while let stale = reused, stale.connection.isClosed { reused = idle.withLock { $0.popLast() } }
        return reused
    }

    /// Closes a connection and keeps it until it is closed: postgres-nio asserts (in debug
    /// builds) that a connection is closed before it goes, and closing takes a turn of its
    /// event loop.
    static func close(_ connection: PostgresConnection) {
        (connection.close() as EventLoopFuture<Void>).whenComplete { _ in _ = connection }
    }

    /// A connection of the caller's own, outside the pool (the change signal's LISTEN
    /// session, which must stay open and idle).
    func connectUnpooled() -> EventLoopFuture<PostgresConnection> {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        return PostgresConnection.connect(on: group.next(), configuration: configuration, id: id, logger: logger)
    }

    private func connect(intent: String) throws(StoreError) -> PostgresConnection {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let future = PostgresConnection.connect(on: group.next(), configuration: configuration, id: id, logger: logger)
        do {
            return try future.wait()
        } catch {
            throw StoreError("cannot \(intent): cannot connect to the PostgreSQL state \(url): \(Self.describe(error))")
        }
    }

    /// Waits for `future` at most `queryTimeout`, or until the connection closes, whichever
    /// comes first: a query on a connection the server ended (a restart, an administrator's
    /// pg_terminate_backend, a network cut that TCP noticed) can otherwise stay pending.
    /// On timeout the connection is closed.
    func wait<T: Sendable>(_ future: EventLoopFuture<T>, on pooled: PooledConnection, intent: String) throws(StoreError) -> T {
        let connection = pooled.connection
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<T, any Error>?>(nil)
        pooled.watch {
            outcome.withLock { if $0 == nil { $0 = .failure(ConnectionClosed()) } }
            done.signal()
        }
        defer { pooled.unwatch() }
        future.whenComplete { result in
            outcome.withLock { if $0 == nil { $0 = result } }
            done.signal()
        }
        let timeout = queryTimeout + .seconds(5)
        if done.wait(timeout: .now() + .milliseconds(Int(timeout.wholeMilliseconds))) == .timedOut {
            PostgresPool.close(connection)
            throw StoreError(
                "cannot \(intent): the PostgreSQL state \(url) did not answer within \(timeout.wholeMilliseconds / 1000)s (nothing was written)"
            )
        }
        switch outcome.withLock({ $0 })! {
        case .success(let value): return value
        case .failure(let error): throw StoreError("cannot \(intent): \(Self.describe(error))")
        }
    }

    /// A message a user can act on: the server's own message (and its SQLSTATE) for a
    /// server error, what failed for a connection error.
    static func describe(_ error: any Error) -> String {
        if error is ConnectionClosed { return "the connection was closed (the server ended it, or the network failed)" }
        guard let error = error as? PSQLError else { return "\(error)" }
        if let info = error.serverInfo {
            var text = info[.message] ?? "server error"
            if let detail = info[.detail] { text += " (\(detail))" }
            if let state = info[.sqlState] { text += " [SQLSTATE \(state)]" }
            return text
        }
        switch error.code {
        case .connectionError:
            if let underlying = error.underlying, let tls = describeTLS(underlying) { return tls }
            return "the connection failed: \(error.underlying.map { "\($0)" } ?? "unknown reason")"
        case .serverClosedConnection, .clientClosedConnection, .uncleanShutdown:
            return "the connection was closed (\(error.underlying.map { "\($0)" } ?? "\(error.code)"))"
        case .sslUnsupported:
            return "the server does not support TLS, which sslmode requires"
        case .authMechanismRequiresPassword:
            return "the server asks for a password: give it in the URL or in PGPASSWORD"
        default:
            return "\(error.code)\(error.underlying.map { ": \($0)" } ?? "")"
        }
    }

    /// Why a TLS handshake failed, in the terms of the URL's `sslmode` and `sslrootcert`.
    private static func describeTLS(_ error: any Error) -> String? {
        if let error = error as? NIOSSLExtraError, error == .failedToValidateHostname {
            return "the server's certificate does not name the host of the URL (sslmode=verify-full checks that it does; "
                + "verify-ca checks the certificate only)"
        }
        guard let error = error as? NIOSSLError else { return nil }
        switch error {
        case .handshakeFailed(let reason) where "\(reason)".contains("CERTIFICATE_VERIFY_FAILED"):
            return "the server's certificate is not signed by a CA this client trusts (those of sslrootcert, or the system's when "
                + "the URL names none)"
        case .handshakeFailed(let reason):
            return "the TLS handshake failed: \(reason)"
        default:
            return "TLS failed: \(error)"
        }
    }

    private static func tls(_ url: PostgresURL) throws(StoreError) -> PostgresConnection.Configuration.TLS {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let root = url.sslRootCertificate {
            // NIOSSL reports a missing file by its error's name only.
            guard access(root, R_OK) == 0 else {
                throw StoreError("cannot read sslrootcert \(root) of the PostgreSQL state \(url): \(String(cString: strerror(errno)))")
            }
            tls.trustRoots = .file(root)
        }
        switch url.sslMode {
        case .disable: return .disable
        case .allow, .prefer, .require:
            // As libpq: require encrypts without checking the certificate, unless a root
            // certificate is given, which makes it verify-ca.
            tls.certificateVerification = url.sslRootCertificate == nil ? .none : .noHostnameVerification
        case .verifyCA: tls.certificateVerification = .noHostnameVerification
        case .verifyFull: tls.certificateVerification = .fullVerification
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: tls)
        } catch {
            throw StoreError("cannot set up TLS for the PostgreSQL state \(url): \(error)")
        }
        return url.sslMode == .allow || url.sslMode == .prefer ? .prefer(context) : .require(context)
    }
}

/// The connection closed while a query waited for its answer.
struct ConnectionClosed: Error {}

/// A pooled connection, and whom to tell when it closes while a query waits: one callback
/// on its `closeFuture` for its whole life, where one per query would pile up until the
/// connection closes (millions a day on a busy gateway's connections).
final class PooledConnection: Sendable {
    let connection: PostgresConnection
    private let onClose = Mutex<(@Sendable () -> Void)?>(nil)
    /// Statements sent and not waited for (`PostgresSession.send`), oldest first: the
    /// connection answers in order, so they are settled when the next waited statement is.
    let deferred = Mutex<[Deferred]>([])

    struct Deferred: Sendable {
        let future: EventLoopFuture<PostgresQueryResult>
        let intent: String
        /// Sent before a transaction's body ran (its BEGIN, or the COMMIT of the read
        /// before it on this connection): failing with the connection, nothing was done.
        let preamble: Bool
    }

    init(_ connection: PostgresConnection) {
        self.connection = connection
        connection.closeFuture.whenComplete { [weak self] _ in self?.closed() }
    }

    /// Calls `action` if the connection closes before `unwatch`.
    func watch(_ action: @escaping @Sendable () -> Void) {
        onClose.withLock { $0 = action }
        if connection.isClosed { closed() }
    }

    private func closed() {
        // The query's own failure, when it comes first, is the better message.
        connection.closeFuture.eventLoop.scheduleTask(in: .milliseconds(50)) { [weak self] in self?.onClose.withLock { $0 }?() }
    }

    func unwatch() { onClose.withLock { $0 = nil } }
}

/// One leased connection: statements run one after another, in the order sent. Most are
/// waited for; `send` sends one without waiting (the answer comes with the next waited
/// statement's), which saves the caller's thread a wake-up per statement.
final class PostgresSession {
    private let pooled: PooledConnection
    var connection: PostgresConnection { pooled.connection }
    private let pool: PostgresPool
    /// Set when a wait failed or timed out: the connection's state is unknown, so it is
    /// closed rather than returned to the pool.
    private(set) var isBroken = false
    /// Set when a statement failed because one sent before the transaction's body failed
    /// with the connection (`PooledConnection.Deferred.preamble`): nothing was done.
    private(set) var preambleFailed = false
    private let logger = Logger(label: "orl.postgres")

    init(_ pooled: PooledConnection, pool: PostgresPool) {
        self.pooled = pooled
        self.pool = pool
    }

    var url: PostgresURL { pool.url }

    /// Runs one statement and returns its rows.
    @discardableResult
    func query(_ sql: String, _ binds: [PostgresValue] = [], intent: String) throws(StoreError) -> [PostgresRandomAccessRow] {
        try run(sql, binds, intent: intent).rows
    }

    /// Runs one statement; returns how many rows it changed.
    @discardableResult
    func execute(_ sql: String, _ binds: [PostgresValue] = [], intent: String) throws(StoreError) -> Int {
        try run(sql, binds, intent: intent).affected
    }

    /// Sends one statement whose answer the caller does not need, without waiting for it: a
    /// failure is thrown by the next waited statement (which a failed statement's transaction
    /// makes fail too), so a transaction ends with one (its COMMIT) or is rolled back.
    func send(_ sql: String, _ binds: [PostgresValue] = [], intent: String, preamble: Bool = false) throws(StoreError) {
        let future = try start(sql, binds, intent: intent, preamble: preamble)
        pooled.deferred.withLock { $0.append(.init(future: future, intent: intent, preamble: preamble)) }
    }

    private func start(_ sql: String, _ binds: [PostgresValue], intent: String, preamble: Bool = false) throws(StoreError)
        -> EventLoopFuture<PostgresQueryResult>
    {
        guard !connection.isClosed else {
            isBroken = true
            let earlier = pooled.deferred.withLock { deferred in
                defer { deferred.removeAll() }
                return deferred.first
            }
            preambleFailed = preamble || earlier?.preamble == true
            throw StoreError("cannot \(intent): the connection to the PostgreSQL state \(url) was closed (nothing more was written)")
        }
        var bindings = PostgresBindings(capacity: binds.count)
        for value in binds { value.bind(into: &bindings) }
        return connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger)
    }

    private func run(_ sql: String, _ binds: [PostgresValue], intent: String) throws(StoreError) -> (
        rows: [PostgresRandomAccessRow], affected: Int
    ) {
        let earlier = pooled.deferred.withLock { $0 }
        let future = try start(sql, binds, intent: intent)
        pooled.deferred.withLock { $0.removeAll() }
        var outcome: Result<PostgresQueryResult, StoreError>
        do { outcome = .success(try pool.wait(future, on: pooled, intent: intent)) } catch { outcome = .failure(error) }
        // The statements sent before it were answered before it (or failed with the
        // connection): the first that failed is the cause, and what this one says then
        // (a transaction aborted, a connection gone) only follows from it.
        for statement in earlier {
            let settled: Result<PostgresQueryResult, StoreError>
            do { settled = .success(try pool.wait(statement.future, on: pooled, intent: statement.intent)) } catch {
                settled = .failure(error)
            }
            if case .failure(let error) = settled {
                if Self.breaks(connection, error) {
                    isBroken = true
                    preambleFailed = statement.preamble
                }
                throw error
            }
        }
        switch outcome {
        case .success(let result): return (result.rows.map(PostgresRandomAccessRow.init), result.metadata.rows ?? 0)
        case .failure(let error):
            if Self.breaks(connection, error) { isBroken = true }
            throw error
        }
    }

    /// Whether a failed statement leaves its connection unusable. A server error leaves it
    /// usable (the transaction is rolled back by the caller); a lost or timed-out one does
    /// not. The server ending the session (57P01 an administrator, 57P02 a crash, 57P03
    /// starting up) and connection failures (08xxx) come as server errors too.
    static func breaks(_ connection: PostgresConnection, _ error: StoreError) -> Bool {
        connection.isClosed || !error.message.contains("[SQLSTATE") || error.message.contains("[SQLSTATE 57P")
            || error.message.contains("[SQLSTATE 08")
    }
}

/// A bound parameter: the few types the state's columns hold.
enum PostgresValue {
    case text(String?)
    case int(Int64?)
    case double(Double?)
    case bytes([UInt8]?)
    /// Arrays, for many rows in one statement (`unnest`): a nullable column goes as its
    /// values and a parallel array of null flags.
    case texts([String])
    case ints([Int64])
    case bools([Bool])

    static func int(_ value: Int) -> PostgresValue { .int(Int64(value)) }
    static func int(_ value: Int?) -> PostgresValue { .int(value.map(Int64.init)) }

    func bind(into bindings: inout PostgresBindings) {
        switch self {
        case .text(let value?): bindings.append(value)
        case .int(let value?): bindings.append(value)
        case .double(let value?): bindings.append(value)
        case .bytes(let value?): bindings.append(ByteBuffer(bytes: value))
        case .text(nil): bindings.append(String?.none)
        case .int(nil): bindings.append(Int64?.none)
        case .double(nil): bindings.append(Double?.none)
        case .bytes(nil): bindings.append(ByteBuffer?.none)
        case .texts(let values): bindings.append(values)
        case .ints(let values): bindings.append(values)
        case .bools(let values): bindings.append(values)
        }
    }
}

/// Reading a row's columns by position, as the SQLite store's `Statement` does: a column
/// of another type than the schema says is a corrupt state, reported, not a crash.
extension PostgresRandomAccessRow {
    func text(_ index: Int) throws(StoreError) -> String { try decode(index, String.self) }
    func optionalText(_ index: Int) throws(StoreError) -> String? { try decode(index, String?.self) }
    func int64(_ index: Int) throws(StoreError) -> Int64 { try decode(index, Int64.self) }
    func optionalInt64(_ index: Int) throws(StoreError) -> Int64? { try decode(index, Int64?.self) }
    func int(_ index: Int) throws(StoreError) -> Int { Int(try int64(index)) }
    func double(_ index: Int) throws(StoreError) -> Double { try decode(index, Double.self) }
    func bytes(_ index: Int) throws(StoreError) -> [UInt8] {
        let buffer = try decode(index, ByteBuffer.self)
        return buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []
    }

    private func decode<T: PostgresDecodable>(_ index: Int, _ type: T.Type) throws(StoreError) -> T {
        do {
            return try self[index].decode(T.self)
        } catch {
            throw StoreError("the PostgreSQL state has an unexpected value in column \(self[index].columnName): \(error)")
        }
    }
}
