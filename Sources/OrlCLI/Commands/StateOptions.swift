import ArgumentParser
import Foundation
import OrlCore
import OrlStore

/// `--state DIR`: where orl keeps its SQLite state. Shared by every command that
/// touches state.
struct StateOptions: ParsableArguments {
    @Option(
        name: .customLong("state"),
        help: ArgumentHelp("The state directory (default: $ORL_HOME, else $XDG_STATE_HOME/orl, else ~/.local/state/orl).", valueName: "dir")
    )
    var directory: String?

    /// The directory to use, from the flag, then the environment, as the help says.
    var resolvedDirectory: String {
        if let directory { return directory }
        let environment = System.environment
        if let home = environment["ORL_HOME"], !home.isEmpty { return home }
        if let state = environment["XDG_STATE_HOME"], !state.isEmpty { return state + "/orl" }
        return (environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()) + "/.local/state/orl"
    }

    func openStore() throws -> SQLiteStateStore {
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
