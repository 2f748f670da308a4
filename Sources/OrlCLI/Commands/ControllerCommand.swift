import ArgumentParser
import Dispatch
import Foundation
import OrlController
import OrlCore
import OrlDaemon
import OrlPostgres
import OrlRuntime
import OrlServer
import OrlStore

#if canImport(Glibc)
    import Glibc
#endif

/// `orlctl controller`: runs the controller in the foreground, or stops the one that runs.
struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Run the controller that makes agent processes match the applied Agents.",
        subcommands: [ControllerRunCommand.self, StopController.self, NodeGuardCommand.self],
        defaultSubcommand: ControllerRunCommand.self
    )
}

struct ControllerRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the controller in the foreground (the default).",
        discussion: """
            One controller runs per state directory (<state>/controller.lock holds its PID); \
            with a PostgreSQL state, per data directory (--data-dir), and the controller \
            sees changes made by any machine through the database (docs/postgres.md). \
            Events go to standard error, one line each (--log-format json: one \
            JSON object each); agents' lifecycle events are also kept in the state, for orlctl \
            events and describe. --detach runs it in the background. SIGTERM or SIGINT stops every agent \
            gracefully, then the controller exits 0. Agents outlive a controller that is \
            killed; the next one adopts them.

            Exit codes: 0 stopped by a signal, 2 error (another controller runs, unreadable state).
            """
    )

    @OptionGroup var state: StateOptions
    @OptionGroup var dataDirectory: DataDirectoryOption

    enum LogFormat: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    @Option(help: "How events are written to standard error: text (one line each) or json (one object per line).")
    var logFormat: LogFormat = .text

    @Flag(
        help: """
            Start the controller in the background, in a session of its own, with its events \
            in <state>/logs/controller.log; return once it holds the lock and serves its API.
            """)
    var detach = false

    @Option(
        help: ArgumentHelp(
            """
            The loopback address of the API and model gateway agents call (ORL_API_URL, \
            OPENAI_BASE_URL). By default the port of the previous run, so that adopted agents \
            keep reaching it, else one the system chooses.
            """, valueName: "host:port"))
    var listen: String?

    @Option(
        help: ArgumentHelp(
            """
            Also serve GET /metrics (Prometheus) on this address, without the operator token, \
            for a scraper on a trusted network (on the API address it needs the token). \
            Traces go to OTEL_EXPORTER_OTLP_ENDPOINT when it is set (docs/observability.md).
            """, valueName: "host:port"))
    var metricsListen: String?

    @Option(
        help: ArgumentHelp(
            "Rotate an agent's log (and the detached controller's own) when it is larger than this many bytes.", valueName: "bytes"))
    var logMaxBytes = 10 * 1024 * 1024

    @Option(help: ArgumentHelp("How many rotated logs to keep per agent (<name>.log.1 is the newest).", valueName: "n"))
    var logKeep = 3

    @OptionGroup var node: NodeOptions

    /// How often the logs are looked at for rotation.
    static let logRotationInterval: Duration = .seconds(10)

    func validate() throws {
        if let listen, Self.address(listen) == nil {
            throw ValidationError("--listen must be HOST:PORT, e.g. 127.0.0.1:7420, not \(listen)")
        }
        if let metricsListen, Self.address(metricsListen) == nil {
            throw ValidationError("--metrics-listen must be HOST:PORT, e.g. 0.0.0.0:9464, not \(metricsListen)")
        }
        if logMaxBytes < 1 { throw ValidationError("--log-max-bytes must be 1 or more") }
        if logKeep < 0 { throw ValidationError("--log-keep must be 0 or more") }
        try node.validate()
    }

    /// How long `--detach` waits for the controller to be ready.
    static let detachTimeout: Duration = .seconds(10)

    func run() async throws {
        // Connections, agents' pipes and logs all take descriptors: the default soft
        // limit is what a crowd of idle connections once exhausted.
        ConnectionGuard.raiseDescriptorLimit()
        let directory = try state.localDirectory(dataDirectory.path, create: state.postgresURL != nil)
        if detach {
            let arguments =
                [
                    "--log-format", logFormat.rawValue, "--log-max-bytes", String(logMaxBytes), "--log-keep", String(logKeep),
                ] + (listen.map { ["--listen", $0] } ?? []) + (metricsListen.map { ["--metrics-listen", $0] } ?? []) + node.arguments
            _ = try state.open()
            return try await Self.startDetached(
                stateDirectory: directory, state: state.postgresURL, arguments: arguments, report: { writeStandardOutput($0) })
        }
        // Started by --detach: whoever started it waits to hear that it is ready, or why
        // it cannot be.
        let readiness = Readiness.inherited()
        do {
            try await runInForeground(directory: directory, readiness: readiness)
        } catch {
            readiness?.failed((error as? CommandFailure)?.message ?? "\(error)")
            throw error
        }
    }

    private func runInForeground(directory: String, readiness: Readiness.Reporter?) async throws {
        // A PostgreSQL state's services share one pool: the gateway's reservations, the
        // agents' API and the controller's writes each hold a connection at a time.
        let backend = try state.open(connections: 16)
        let lock = try node.lock(directory)
        defer { lock.release() }
        try node.checkCoexistence(directory: directory, store: backend)
        var configuration = Daemon.Configuration(stateDirectory: directory)
        let nodeGuard = try node.configure(&configuration, state: state.postgresURL ?? directory)
        defer { nodeGuard?.close() }
        configuration.listen = listen.flatMap(Self.address)
        configuration.metricsListen = metricsListen.flatMap(Self.address)
        configuration.logMaxBytes = logMaxBytes
        configuration.logKeep = logKeep
        configuration.logRotationInterval = Self.logRotationInterval
        configuration.identity = "\(Caller.identity) (dashboard)"
        configuration.onListening = { _ in readiness?.ready() }
        let log = Self.sink(logFormat)
        // `backend` made a SQLite state if it was missing; a state removed meanwhile stays
        // removed (the daemon then stops).
        let daemonState = state.daemonState(backend)
        if let postgres = backend as? PostgresStateStore {
            configuration.telemetry = try Self.telemetry(gaugeStore: postgres, log: log)
        } else {
            let gaugeStore: SQLiteStateStore
            do {
                gaugeStore = try SQLiteStateStore(existing: directory)
            } catch {
                throw CommandFailure(message: "cannot open the state in \(directory): \(error.description)")
            }
            configuration.telemetry = try Self.telemetry(gaugeStore: gaugeStore, log: log)
        }
        let daemon = Daemon(configuration: configuration, keys: state.masterKeys, log: log, state: daemonState)
        do {
            try await daemon.run()
        } catch {
            throw CommandFailure(message: error.description)
        }
    }

    /// Metrics always (a few counters and a state read per scrape); spans when
    /// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set.
    static func telemetry(gaugeStore: any StateUpkeep, log: @escaping @Sendable (ControllerEvent) -> Void) throws -> Telemetry {
        var tracer: Tracer?
        do throws(Tracer.ConfigurationError) {
            if var configuration = try Tracer.Configuration.fromEnvironment(ProcessInfo.processInfo.environment) {
                configuration.scopeVersion = Orlctl.version
                tracer = Tracer(configuration: configuration) { message in
                    log(ControllerEvent(time: Controller.systemTime(), reason: .error, message: message))
                }
            }
        } catch {
            throw CommandFailure(message: error.message)
        }
        return Telemetry(tracer: tracer, gauges: { () throws(StoreError) in try gaugeStore.fleetGauges() })
    }

    static func apiFile(_ directory: String) -> String { Daemon.apiFile(directory) }
    static func tokenFile(_ directory: String) -> String { Daemon.tokenFile(directory) }
    static func address(_ text: String) -> (host: String, port: Int)? { Daemon.address(text) }

    /// `--detach`: starts `orlctl controller run` for the same state, detached (not with
    /// Foundation's Process, whose child stays in our process group and is signalled with
    /// it), then waits until it holds the lock and its API listens, or has failed.
    /// `directory` is the local directory (the state's, or a PostgreSQL state's data
    /// directory); `postgresURL` goes to the child in ORL_STATE_URL, never on its command
    /// line (which any user of the machine can read), as its password may be in it.
    static func startDetached(
        stateDirectory directory: String, state postgresURL: String? = nil, arguments extra: [String], report: (String) -> Void
    ) async throws {
        if let pid = try PIDLock.holder(directory) {
            throw CommandFailure(message: "a controller already runs for \(directory) (pid \(pid))")
        }
        let logs = directory + "/logs"
        let logFile = logs + "/controller.log"
        do {
            try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CommandFailure(message: "cannot create \(logs): \(error.localizedDescription)")
        }
        let start = (try? FileManager.default.attributesOfItem(atPath: logFile)[.size] as? Int) ?? 0
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var environment = ProcessInfo.processInfo.environment
        let arguments: [String]
        if let postgresURL {
            environment["ORL_STATE_URL"] = postgresURL
            arguments = ["controller", "run", "--data-dir", directory] + extra
        } else {
            arguments = ["controller", "run", "--state", directory] + extra
        }
        // The child says on this pipe when it holds the lock and its API listens, or why
        // it could not: nothing is looked at again and again meanwhile.
        let ready: (read: Int32, write: Int32)
        do {
            ready = try Readiness.pipe()
        } catch {
            throw CommandFailure(message: "cannot start the controller: \(error.description)")
        }
        environment[Readiness.variable] = String(ready.write)
        let pid: Int32
        do {
            defer { close(ready.write) }
            pid = try ProcessRuntime.spawnDetached(
                path: executable, arguments: arguments, environment: environment.map { "\($0)=\($1)" },
                workingDirectory: FileManager.default.currentDirectoryPath, logFile: logFile, inherit: ready.write)
        } catch {
            close(ready.read)
            throw CommandFailure(message: "cannot start the controller: \(error.description)")
        }
        switch await Readiness.await(ready.read, until: ContinuousClock.now + detachTimeout) {
        case .ready:
            report("controller started (pid \(pid)); logs in \(logFile)\n")
        case .failed(let error):
            // It closed the pipe as it failed, so it exits now (if it has not yet).
            await ProcessEnd.wait(for: pid)
            var status: Int32 = 0
            let exit = waitpid(pid, &status, 0) == pid ? "\(ProcessRuntime.decode(status))" : "ended"
            let said = error.isEmpty ? lastLine(of: logFile, from: start) : error
            throw CommandFailure(message: "the controller \(exit) at once\(said.map { ": \($0)" } ?? "") (log: \(logFile))")
        case .timedOut:
            throw CommandFailure(
                message: "the controller (pid \(pid)) was not ready within \(detachTimeout); it may still run (log: \(logFile))")
        }
    }

    /// The last non-empty line written to the file from `offset` on.
    static func lastLine(of file: String, from offset: Int) -> String? {
        guard let handle = FileHandle(forReadingAtPath: file) else { return nil }
        defer { try? handle.close() }
        try? handle.seek(toOffset: UInt64(offset))
        let data = (try? handle.readToEnd()) ?? Data()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init)
    }

}

extension ControllerRunCommand {
    /// Where events go: standard error, one line each, in the format asked for.
    static func sink(_ format: LogFormat) -> @Sendable (ControllerEvent) -> Void {
        switch format {
        case .text: { event in OrlctlMain.writeStandardError(event.textLine + "\n") }
        case .json: { event in OrlctlMain.writeStandardError(event.jsonLine + "\n") }
        }
    }
}

struct StopController: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Stop the controller of a state directory (or of a PostgreSQL state's --data-dir), and so its agents.",
        discussion: "Exit codes: 0 stopped, 1 no controller runs, 2 error."
    )

    @OptionGroup var state: StateOptions
    @OptionGroup var dataDirectory: DataDirectoryOption

    @Option(help: ArgumentHelp("Stop node NAME's controller (controller --node NAME) rather than the lone one.", valueName: "name"))
    var node: String?

    func run() async throws {
        // A node's lock is in its own directory (docs/nodes.md).
        let directory = try state.localDirectory(dataDirectory.path) + (node.map { "/nodes/" + $0 } ?? "")
        guard let pid = try PIDLock.holder(directory) else {
            OrlctlMain.writeStandardError("orlctl: no controller runs for \(directory)\n")
            throw ExitCode(ExitStatus.findings.rawValue)
        }
        guard kill(pid, SIGTERM) == 0 else {
            throw CommandFailure(message: "cannot signal the controller (pid \(pid)): \(String(cString: strerror(errno)))")
        }
        // Its lock goes with it: the kernel drops an flock when the last descriptor on it
        // closes. Looked at again after its end only in case a process it started kept
        // one (none should: the lock's descriptor is close-on-exec).
        await ProcessEnd.wait(for: pid)
        try await PIDLock.waitUntilFree(directory)
    }
}

/// Tells the controller of a state directory, if one runs, that the state changed, so
/// that it reconciles at once. The PID is taken only from a lock that is held, so a
/// stale lock file's PID is never signalled.
enum ControllerWake {
    static func wake(_ directory: String) {
        guard let pid = try? PIDLock.holder(PIDLock.absolute(directory)), pid > 0 else { return }
        _ = kill(pid, SIGUSR1)
    }
}

/// A PID lock: an flock held for a process's life on a file that holds its PID: the
/// controller's `<state>/controller.lock`, a source's lock while it is synced. The
/// descriptor is close-on-exec, so agents never inherit (and so keep) the lock.
struct PIDLock {
    let descriptor: Int32

    static func path(_ directory: String) -> String { directory + "/controller.lock" }

    static func absolute(_ directory: String) -> String {
        let path = directory.hasPrefix("/") ? directory : FileManager.default.currentDirectoryPath + "/" + directory
        return URL(fileURLWithPath: path).standardizedFileURL.path
    }

    static func acquire(_ directory: String) throws -> PIDLock {
        try acquire(file: path(directory), held: { pid in "a controller already runs for \(directory)\(pid)" })
    }

    /// Takes the lock in `file` (any PID lock: sources have theirs); when another
    /// process holds it, fails with `held(" (pid N)")`.
    static func acquire(file: String, held: (String) -> String) throws -> PIDLock {
        let fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw CommandFailure(message: "cannot open \(file): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let pid = readPID(fd).map { " (pid \($0))" } ?? ""
            close(fd)
            throw CommandFailure(message: held(pid))
        }
        let text = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        return PIDLock(descriptor: fd)
    }

    func release() {
        _ = ftruncate(descriptor, 0)
        close(descriptor)
    }

    /// Returns once nobody holds the lock (at once, usually): the wait is the kernel's, a
    /// blocking flock on a thread of Dispatch's, let go at once.
    static func waitUntilFree(_ directory: String) async throws {
        let file = path(directory)
        let fd = open(file, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return }
            throw CommandFailure(message: "cannot open \(file): \(String(cString: strerror(errno)))")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                DispatchQueue.global().async {
                    while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
                    continuation.resume()
                }
            }
        }
        _ = flock(fd, LOCK_UN)
        close(fd)
    }

    /// The PID of the controller holding the lock; nil when none does.
    static func holder(_ directory: String) throws -> Int32? { try holder(file: path(directory)) }

    /// The PID of the process holding the lock in `file`; nil when none does.
    static func holder(file: String) throws -> Int32? {
        let fd = open(file, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw CommandFailure(message: "cannot open \(file): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 {
            _ = flock(fd, LOCK_UN)
            return nil
        }
        return readPID(fd)
    }

    private static func readPID(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
        guard count > 0 else { return nil }
        return Int32(String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
