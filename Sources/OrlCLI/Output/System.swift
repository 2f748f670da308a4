import Glibc

enum System {
    /// Whether the command's standard output is a terminal.
    static var standardOutputIsTerminal: Bool { CommandContext.current.standardOutputIsTerminal }

    /// The command's environment (the process's for the binary).
    static var environment: [String: String] { CommandContext.current.environment }

    static func environment(_ name: String) -> String? { CommandContext.current.environment[name] }

    /// The process's environment as `ProcessInfo.processInfo.environment` gives it (each
    /// entry decoded as UTF-8, split at its first "=", entries without one left out, a
    /// later duplicate winning), read from `environ` without starting `ProcessInfo`, which
    /// copies the arguments and instantiates its locked state at every command's start.
    static func processEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        let start: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = environ
        guard var entry = start else { return environment }
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let delimiter = text.firstIndex(of: "=") {
                environment[String(text[..<delimiter])] = String(text[text.index(after: delimiter)...])
            }
            entry += 1
        }
        return environment
    }
}
