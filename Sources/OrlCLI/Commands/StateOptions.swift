import ArgumentParser
import Foundation
import OrlCore
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
    func open() throws -> any StateBackend {
        guard let url = postgresURL else { return try openSQLite() }
        do {
            return try PostgresStateStore(url: url, environment: System.environment)
        } catch {
            throw CommandFailure(message: "cannot open the state at \(PostgresURL.redacted(url)): \(error.description)")
        }
    }

    /// The state as the `StateStore` port.
    func openState() throws -> any StateStore { try open() }

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
    var resolvedDirectory: String {
        if let directory { return directory }
        let environment = System.environment
        if let home = environment["ORL_HOME"], !home.isEmpty { return home }
        if let state = environment["XDG_STATE_HOME"], !state.isEmpty { return state + "/orl" }
        return (environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()) + "/.local/state/orl"
    }

    /// Opens the SQLite state: for the commands that need its directory (the controller,
    /// git sync's mirrors and locks, agents' logs), which a PostgreSQL state does not
    /// offer yet; they say so.
    func openStore() throws -> SQLiteStateStore {
        if let url = postgresURL {
            throw CommandFailure(
                message: "this command does not support a PostgreSQL state yet (\(PostgresURL.redacted(url))); "
                    + "every command but controller, watch, sync and logs does (docs/postgres.md)")
        }
        return try openSQLite()
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
