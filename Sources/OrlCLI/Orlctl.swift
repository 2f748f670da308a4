import ArgumentParser

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `orlctl`: the root command.
struct Orlctl: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "orlctl",
        abstract: "Declarative, GitOps-style control of AI agent fleets.",
        discussion: """
            Exit codes: 0 no change or no problem, 1 changes or violations, 2 error (bad usage, \
            unreadable input).
            """,
        version: version,
        subcommands: [
            Validate.self, Explain.self, Apply.self, Diff.self, Get.self, Describe.self, Delete.self, History.self, Events.self,
            Logs.self, Suspend.self, Resume.self, RunWorkflow.self, Runs.self, Approve.self, Deny.self, Cancel.self,
            SecretCommand.self, McpCommand.self, ControllerCommand.self, BudgetCommand.self, Usage.self, Sync.self, Watch.self,
            ReviewCommand.self, GC.self,
        ]
    )
}

/// Exit codes, the same for every command, as platform engineers expect from diff-like
/// tools: 0 nothing to report, 1 something to report, 2 the command itself failed.
enum ExitStatus: Int32 {
    case clean = 0
    case findings = 1
    case failure = 2
}

/// A command's failure that has already been explained to the user.
struct CommandFailure: Error {
    var message: String
}

public enum OrlctlMain {
    /// Parses the arguments and runs the command, mapping every outcome to orl's exit
    /// codes (ArgumentParser's own usage code, 64, becomes 2).
    public static func run(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) async -> Never {
        // Every file orlctl creates (the database, its WAL, logs, tokens, keys, clones)
        // is its user's alone, whatever the mode of the directory it lands in.
        umask(0o077)
        do {
            var command = try Orlctl.parseAsRoot(arguments)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
            exit(ExitStatus.clean.rawValue)
        } catch let status as ExitCode {
            exit(status.rawValue)
        } catch let failure as CommandFailure {
            writeStandardError("orlctl: error: \(failure.message)\n")
            exit(ExitStatus.failure.rawValue)
        } catch {
            let code = Orlctl.exitCode(for: error)
            if code == .success {
                // --help and --version.
                print(Orlctl.fullMessage(for: error))
                exit(ExitStatus.clean.rawValue)
            }
            writeStandardError(Orlctl.fullMessage(for: error) + "\n")
            exit(ExitStatus.failure.rawValue)
        }
    }

    static func writeStandardError(_ text: String) {
        var text = text
        text.withUTF8 { buffer in _ = write(2, buffer.baseAddress, buffer.count) }
    }
}

/// Keeps `value` alive until the process exits, so it is never freed.
///
/// One-shot commands that read whole fleets end right after printing; freeing ten
/// thousand parsed documents one by one then costs more than all the checks after
/// parsing. Process exit returns the memory at once (clang's -disable-free does the
/// same). Long-running code must never call this.
func keepUntilExit(_ value: some Sendable) {
    _ = Unmanaged.passRetained(Box(value))
}

private final class Box<Value: Sendable>: Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Writes to standard output in one piece (print() through stdio is slow for big output).
func writeStandardOutput(_ text: String) {
    var text = text
    text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(1, buffer.baseAddress! + offset, buffer.count - offset)
            if written <= 0 {
                if errno == EINTR { continue }
                return
            }
            offset += written
        }
    }
}
