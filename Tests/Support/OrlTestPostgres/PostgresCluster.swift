import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A throwaway PostgreSQL cluster for the tests: one per test process, started on first
/// use, shared by every suite, stopped and removed when the process exits.
///
/// `initdb` in `/tmp/orl-pgtest-PID-RANDOM/data` (as the `postgres` user when the tests
/// run as root: initdb refuses root), `pg_ctl start` on a free loopback port with its
/// socket in the same directory, trust authentication on loopback only, no fsync. Each
/// test gets a database of its own (`database()`), so suites run in parallel. A cluster
/// left by a test process that crashed (its PID is in the directory's name and no longer
/// runs) is stopped and removed by the next one.
public final class PostgresCluster: Sendable {
    public let port: Int
    public let directory: String
    let binaries: String
    private let tlsFiles = Mutex<TLSFiles?>(nil)
    private let hba = Mutex<Void>(())

    /// Why the cluster cannot start here (no PostgreSQL binaries), or nil when it can:
    /// what a test that needs it says when skipped.
    public static let unavailable: String? =
        binaryDirectory() == nil ? "PostgreSQL is not installed (initdb and pg_ctl not found); run scripts/install-deps" : nil

    /// The process's cluster, started on first use.
    public static func shared() throws -> PostgresCluster { try started.get() }

    private static let started: Result<PostgresCluster, ClusterError> = {
        do {
            let cluster = try PostgresCluster.start()
            running = cluster
            atexit { PostgresCluster.running?.stop() }
            return .success(cluster)
        } catch let error as ClusterError {
            return .failure(error)
        } catch {
            return .failure(ClusterError(message: "\(error)"))
        }
    }()

    nonisolated(unsafe) private static var running: PostgresCluster?

    public struct ClusterError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    private init(port: Int, directory: String, binaries: String) {
        self.port = port
        self.directory = directory
        self.binaries = binaries
    }

    /// A new, empty database; returns its URL (`postgres://postgres@127.0.0.1:PORT/NAME`).
    public func database(_ prefix: String = "orl") throws -> String {
        let name = "\(prefix.lowercased().filter { $0.isLetter || $0.isNumber })_\(UInt64.random(in: 0...UInt64.max) % 1_000_000_000_000)"
        try psql("CREATE DATABASE \(name)")
        return url(database: name)
    }

    public func url(database: String) -> String { "postgres://postgres@127.0.0.1:\(port)/\(database)?sslmode=disable" }

    /// Runs SQL as the superuser, in `database`.
    public func psql(_ sql: String, database: String = "postgres") throws {
        try Self.run(
            binaries + "/psql",
            ["-X", "-q", "-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql],
            asPostgres: false)
    }

    // MARK: TLS

    /// The certificates of the cluster's TLS: the CA that signed the server's certificate
    /// (made for `localhost` only, so that `127.0.0.1` fails a hostname check), and a CA that
    /// signed nothing the server shows.
    public struct TLSFiles: Sendable {
        public let authority: String
        public let otherAuthority: String
    }

    /// Turns TLS on (once per process; a reload, so connections without TLS go on working):
    /// a CA and a server certificate made with `openssl` in the cluster's directory.
    public func enableTLS() throws -> TLSFiles {
        try tlsFiles.withLock { (files: inout TLSFiles?) throws -> TLSFiles in
            if let files { return files }
            let tls = directory + "/tls"
            guard mkdir(tls, 0o755) == 0 || errno == EEXIST else { throw ClusterError(message: "cannot create \(tls): \(errno)") }
            let openssl = "/usr/bin/openssl"
            let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            for name in ["ca", "other-ca"] {
                try Self.run(
                    openssl,
                    ["req", "-x509"] + curve + [
                        "-keyout", "\(tls)/\(name).key", "-out", "\(tls)/\(name).pem", "-days", "2", "-subj", "/CN=orl test \(name)",
                    ],
                    asPostgres: false)
            }
            try Self.run(
                openssl, ["req"] + curve + ["-keyout", "\(tls)/server.key", "-out", "\(tls)/server.csr", "-subj", "/CN=localhost"],
                asPostgres: false)
            try "subjectAltName=DNS:localhost\n".write(toFile: "\(tls)/server.ext", atomically: true, encoding: .utf8)
            try Self.run(
                openssl,
                [
                    "x509", "-req", "-in", "\(tls)/server.csr", "-CA", "\(tls)/ca.pem", "-CAkey", "\(tls)/ca.key", "-CAcreateserial",
                    "-out", "\(tls)/server.pem", "-days", "2", "-extfile", "\(tls)/server.ext",
                ], asPostgres: false)
            // The server refuses a key anyone but its owner can read, and runs as postgres.
            chmod("\(tls)/server.key", 0o600)
            if getuid() == 0, let user = getpwnam("postgres") {
                chown("\(tls)/server.key", user.pointee.pw_uid, user.pointee.pw_gid)
            }
            try psql("ALTER SYSTEM SET ssl_cert_file = '\(tls)/server.pem'")
            try psql("ALTER SYSTEM SET ssl_key_file = '\(tls)/server.key'")
            try psql("ALTER SYSTEM SET ssl = on")
            try psql("SELECT pg_reload_conf()")
            // The server reloads its settings after the call returns.
            try waitUntil("TLS on") { connects(database: "postgres", sslmode: "require") }
            let made = TLSFiles(authority: "\(tls)/ca.pem", otherAuthority: "\(tls)/other-ca.pem")
            files = made
            return made
        }
    }

    /// A new database that the server lets no one reach without TLS (`hostnossl … reject`
    /// in pg_hba.conf), so that a command that works on it proves its connection was
    /// encrypted. Returns its name.
    public func tlsOnlyDatabase(_ prefix: String = "tls") throws -> String {
        _ = try enableTLS()
        let url = try database(prefix)
        let name = String(url.split(separator: "/").last!.split(separator: "?").first!)
        try hba.withLock { (_: inout Void) throws in
            let path = directory + "/data/pg_hba.conf"
            let current = try String(contentsOfFile: path, encoding: .utf8)
            let rules = "hostnossl \(name) all 127.0.0.1/32 reject\nhostnossl \(name) all ::1/128 reject\n"
            try (rules + current).write(toFile: path, atomically: false, encoding: .utf8)
            try psql("SELECT pg_reload_conf()")
            try waitUntil("\(name) refusing connections without TLS") { !connects(database: name, sslmode: "disable") }
        }
        return name
    }

    /// Whether psql (libpq) connects to `database` with `sslmode`.
    private func connects(database: String, sslmode: String) -> Bool {
        let conninfo = "host=127.0.0.1 port=\(port) user=postgres dbname=\(database) sslmode=\(sslmode)"
        return (try? Self.run(binaries + "/psql", ["-X", "-q", "-d", conninfo, "-c", "SELECT 1"], asPostgres: false)) != nil
    }

    /// A reload takes effect a moment after it is asked for: waits (10 s at most) for its effect.
    private func waitUntil(_ what: String, _ condition: () -> Bool) throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() {
            guard ContinuousClock.now < deadline else { throw ClusterError(message: "the cluster's reload did not take effect: \(what)") }
            usleep(20_000)
        }
    }

    // MARK: Starting and stopping

    private static func start() throws -> PostgresCluster {
        guard let binaries = binaryDirectory() else { throw ClusterError(message: unavailable ?? "PostgreSQL is not installed") }
        removeStale()
        let directory = "/tmp/orl-pgtest-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(directory, 0o755) == 0 else { throw ClusterError(message: "cannot create \(directory): \(errno)") }
        if getuid() == 0, let user = getpwnam("postgres") {
            // initdb refuses root: the cluster's directory belongs to postgres.
            chown(directory, user.pointee.pw_uid, user.pointee.pw_gid)
        }
        let data = directory + "/data"
        do {
            try run(
                binaries + "/initdb", ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"],
                asPostgres: true)
            var lastError: (any Error)?
            for _ in 0..<5 {
                let port = try freePort()
                do {
                    try run(
                        binaries + "/pg_ctl",
                        [
                            "-D", data, "-l", directory + "/server.log", "-w", "-t", "60", "-o",
                            "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                                + "-c full_page_writes=off -c max_connections=200", "start",
                        ], asPostgres: true)
                    return PostgresCluster(port: port, directory: directory, binaries: binaries)
                } catch {
                    lastError = error  // the port was taken meanwhile, most likely: another one
                }
            }
            throw lastError ?? ClusterError(message: "pg_ctl start failed")
        } catch {
            let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
            try? FileManager.default.removeItem(atPath: directory)
            throw ClusterError(message: "cannot start a PostgreSQL cluster: \(error)\n\(log)")
        }
    }

    func stop() {
        try? Self.run(binaries + "/pg_ctl", ["-D", directory + "/data", "-m", "immediate", "-w", "stop"], asPostgres: true)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Stops and removes the clusters of test processes that are gone.
    private static func removeStale() {
        guard let binaries = binaryDirectory(), let entries = try? FileManager.default.contentsOfDirectory(atPath: "/tmp") else { return }
        for entry in entries where entry.hasPrefix("orl-pgtest-output-") {
            let parts = entry.split(separator: "-")
            guard parts.count == 5, let pid = Int32(parts[3]), kill(pid, 0) != 0, errno == ESRCH else { continue }
            unlink("/tmp/" + entry)
        }
        for entry in entries where entry.hasPrefix("orl-pgtest-") {
            let parts = entry.split(separator: "-")
            guard parts.count == 4, let pid = Int32(parts[2]), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            let directory = "/tmp/" + entry
            try? run(binaries + "/pg_ctl", ["-D", directory + "/data", "-m", "immediate", "-w", "stop"], asPostgres: true)
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// Where initdb, pg_ctl and psql are: Debian keeps them in /usr/lib/postgresql/VERSION/bin
    /// (the newest wins), off the PATH.
    static func binaryDirectory() -> String? {
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .compactMap(Int.init).sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin" }
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        return (versions + path).first { directory in
            ["initdb", "pg_ctl", "psql"].allSatisfy { access(directory + "/" + $0, X_OK) == 0 }
        }
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClusterError(message: "socket: \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw ClusterError(message: "cannot find a free port: \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34), which Swift's Glibc module
    /// does not import.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    /// Runs a program to its end; as the postgres user when root (runuser). Spawned
    /// directly rather than with Foundation's `Process`, which learns that a child ended
    /// from a descriptor the child inherits: the server that pg_ctl leaves running would
    /// inherit it too, and the wait would never end. Here the child gets standard input,
    /// output and error only.
    private static func run(_ program: String, _ arguments: [String], asPostgres: Bool) throws {
        let command =
            asPostgres && getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--", program] + arguments : [program] + arguments
        // From /tmp: the postgres user may not be able to enter the test's directory.
        let argv = ["/bin/sh", "-c", "cd /tmp && exec \"$@\"", "sh"] + command
        let outputPath = "/tmp/orl-pgtest-output-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Every other descriptor of this process stays out of the child (and of the server),
        // closed in the child only. Marking this process's descriptors close-on-exec instead
        // raced with other threads' spawns: Foundation's `Process` hands its child one end of
        // a socket pair and learns of the child's exit when it closes; made close-on-exec
        // meanwhile, it closed at the child's exec, and Foundation's one monitoring thread
        // then blocked in waitpid on a child still running, hanging every later Process.
        guard let closeFrom = Self.addCloseFrom else {
            throw ClusterError(message: "glibc 2.34 or later is needed (closefrom in posix_spawn)")
        }
        _ = closeFrom(&actions, 3)
        var pid: pid_t = 0
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { for argument in cArguments { free(argument) } }
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else { throw ClusterError(message: "cannot run \(argv[0]): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        let exited = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        guard exited == 0 else {
            throw ClusterError(message: "\((program as NSString).lastPathComponent) failed (\(exited)): \(text)")
        }
    }
}
