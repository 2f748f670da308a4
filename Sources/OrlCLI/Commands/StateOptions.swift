import ArgumentParser
import Foundation
import OrlCore
import OrlDaemon
import OrlPostgres
import OrlStore

/// `--state DIR` or `--state postgres://…`: where orl keeps its state, a SQLite database
/// in a directory (the default) or a PostgreSQL database (docs/postgres.md). Shared by
/// every command that touches state.
struct StateOptions: ParsableArguments {
    @Option(
        name: .customLong("state"),
        help: ArgumentHelp(
            "The state directory (default: $ORL_HOME, else $XDG_STATE_HOME/orl, else ~/.local/state/orl), "
                + "or a PostgreSQL URL postgres://USER@HOST:PORT/DATABASE?sslmode=MODE (default: $ORL_STATE_URL when set).",
            valueName: "dir|url")
    )
    var directory: String?

    /// The PostgreSQL URL when the state is in PostgreSQL: `--state postgres://…`, else
    /// ORL_STATE_URL unless `--state` names a directory.
    var postgresURL: String? {
        if let directory { return PostgresURL.isPostgres(directory) ? directory : nil }
        guard let url = System.environment["ORL_STATE_URL"], !url.isEmpty else { return nil }
        return url
    }

    /// The state as messages name it: its directory, or its URL without a password.
    var label: String { postgresURL.map(PostgresURL.redacted) ?? resolvedDirectory }

    /// Opens the state whichever its backend, with every port: the one way commands open
    /// a state (a SQLite directory or a PostgreSQL database), so that none of them depends
    /// on which.
    /// `connections`: how many connections a PostgreSQL state's pool may open (a
    /// controller's services share one pool).
    func open(connections: Int = 4) throws -> any StateBackend {
        guard let url = postgresURL else { return try openSQLite() }
        do {
            return try PostgresStateStore(url: PostgresURL(parsing: url, environment: System.environment), maxConnections: connections)
        } catch {
            throw CommandFailure(message: "cannot open the state at \(PostgresURL.redacted(url)): \(error.description)")
        }
    }

    /// The state as the `StateStore` port.
    func openState() throws -> any StateStore { try open() }

    /// The state as a daemon's services, and commands that follow it, open it again;
    /// `backend` is what `open` returned. A SQLite state's connections open the database
    /// `backend` opened (or made): one removed meanwhile stays removed.
    func daemonState(_ backend: any StateBackend) -> DaemonState {
        if let postgres = backend as? PostgresStateStore { return .postgres(postgres) }
        let directory = PIDLock.absolute(resolvedDirectory)
        return .sqlite(directory: directory) { () throws(StoreError) in try SQLiteStateStore(existing: directory) }
    }

    /// Where the state's master key comes from: `ORL_MASTER_KEY`, else (SQLite only)
    /// the state directory's master.key.
    var masterKeys: MasterKeySource {
        if let url = postgresURL { return MasterKeySource(sharedState: PostgresURL.redacted(url), environment: System.environment) }
        return MasterKeySource(stateDirectory: resolvedDirectory, environment: System.environment)
    }

    /// Tells a controller running on this state's directory that the state changed. A
    /// PostgreSQL state's controllers notice by themselves (no local controller runs on it).
    func wakeController() {
        if postgresURL == nil { ControllerWake.wake(resolvedDirectory) }
    }

    /// The directory to use, from the flag, then the environment, as the help says.
    var resolvedDirectory: String { directory ?? Self.defaultDirectory }

    /// $ORL_HOME, else $XDG_STATE_HOME/orl, else ~/.local/state/orl.
    static var defaultDirectory: String {
        let environment = System.environment
        if let home = environment["ORL_HOME"], !home.isEmpty { return home }
        if let state = environment["XDG_STATE_HOME"], !state.isEmpty { return state + "/orl" }
        return (environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()) + "/.local/state/orl"
    }

    /// Opens the SQLite state, for the commands that read its directory's files (its
    /// size on disk); refused for a PostgreSQL state.
    func openStore() throws -> SQLiteStateStore {
        if let url = postgresURL {
            throw CommandFailure(message: "this command needs a SQLite state directory, not \(PostgresURL.redacted(url))")
        }
        return try openSQLite()
    }

    /// The directory of this machine's own files: agents' logs and working directories,
    /// the controller's PID lock, API URL and token, git sources' mirrors and locks.
    /// A SQLite state keeps them in its directory. A PostgreSQL state is shared by
    /// machines that each keep their own: `--data-dir`, else $ORL_DATA_DIR, else
    /// `<default state directory>/postgres/HOST-PORT-DATABASE` (one per database, apart
    /// from a SQLite state's files). Absolute; created (0700) when `create`.
    func localDirectory(_ dataDirectory: String?, create: Bool = false) throws -> String {
        guard let url = postgresURL else {
            if dataDirectory != nil {
                throw CommandFailure(message: "--data-dir is for a PostgreSQL state; a SQLite state keeps its files in its directory")
            }
            return PIDLock.absolute(resolvedDirectory)
        }
        let chosen: String
        if let dataDirectory, !dataDirectory.isEmpty {
            chosen = dataDirectory
        } else if let fromEnvironment = System.environment["ORL_DATA_DIR"], !fromEnvironment.isEmpty {
            chosen = fromEnvironment
        } else {
            let parsed: PostgresURL
            do {
                parsed = try PostgresURL(parsing: url, environment: System.environment)
            } catch {
                throw CommandFailure(message: "cannot open the state at \(PostgresURL.redacted(url)): \(error.description)")
            }
            let name = "\(parsed.host)-\(parsed.port)-\(parsed.database)".map {
                $0.isLetter || $0.isNumber || "-._".contains($0) ? $0 : "_"
            }
            chosen = Self.defaultDirectory + "/postgres/" + String(name)
        }
        let directory = PIDLock.absolute(chosen)
        if create {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw CommandFailure(message: "cannot create the data directory \(directory): \(error.localizedDescription)")
            }
        }
        return directory
    }

    private func openSQLite() throws -> SQLiteStateStore {
        do {
            let store = try SQLiteStateStore(directory: resolvedDirectory)
            if let exposure = SQLiteStateStore.exposure(of: resolvedDirectory) {
                OrlctlMain.writeStandardError("orlctl: warning: \(exposure)\n")
            }
            return store
        } catch {
            throw CommandFailure(message: "cannot open the state in \(resolvedDirectory): \(error.description)")
        }
    }
}

/// `--data-dir DIR`: where this machine keeps its own files when the state is in
/// PostgreSQL (`StateOptions.localDirectory`).
struct DataDirectoryOption: ParsableArguments {
    @Option(
        name: .customLong("data-dir"),
        help: ArgumentHelp(
            "With a PostgreSQL state: this machine's directory for agents' logs and working directories, the controller's lock "
                + "and token, and git mirrors (default: $ORL_DATA_DIR, else <default state directory>/postgres/HOST-PORT-DATABASE).",
            valueName: "dir"))
    var path: String?
}

/// Who is applying and when, as the history records it.
enum Caller {
    /// `alice@build-7`: the user and the host, like git's committer identity.
    static var identity: String {
        let environment = System.environment
        let user = environment["USER"] ?? environment["LOGNAME"] ?? NSUserName()
        return "\(user)@\(ProcessInfo.processInfo.hostName)"
    }

    static var now: Timestamp {
        Timestamp(milliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded()))
    }
}
