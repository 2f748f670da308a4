import Foundation

enum System {
    /// Whether the command's standard output is a terminal.
    static var standardOutputIsTerminal: Bool { CommandContext.current.standardOutputIsTerminal }

    /// The command's environment (the process's for the binary).
    static var environment: [String: String] { CommandContext.current.environment }

    static func environment(_ name: String) -> String? { CommandContext.current.environment[name] }

    static func processEnvironment() -> [String: String] { ProcessInfo.processInfo.environment }
}
