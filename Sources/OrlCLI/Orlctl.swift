import ArgumentParser
import Glibc
import OrlGit
import OrlManifests
import OrlRuntime

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
        // `--version` says which build, as `orlctl version` does.
        version: "\(version) (commit \(Version.commit))",
        subcommands: [
            Validate.self, Explain.self, Apply.self, Diff.self, Get.self, Describe.self, Delete.self, History.self, Events.self,
            Logs.self, Suspend.self, Resume.self, RunWorkflow.self, Runs.self, Approve.self, Deny.self, Cancel.self,
            SecretCommand.self, McpCommand.self, ControllerCommand.self, Cordon.self, Uncordon.self, BudgetCommand.self, Usage.self,
            Sync.self, Watch.self,
            ReviewCommand.self, GC.self, StateCommand.self, TestCommand.self, Version.self, GenerateDocs.self,
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
    /// What the binary settles before any concurrency starts: `--version` is answered
    /// before the argument parser builds its command tree, which looks types up at run
    /// time and was most of that answer's start-up.
    public static func prepareProcess(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) {
        if arguments == ["--version"] { printVersion() }
        // Compared one by one: `[...].contains(arguments.first)` is an array of optional
        // strings, whose type the runtime instantiates by name at every start, checking its
        // Equatable conformance against every one in the binary.
        if let command = arguments.first, command == "apply" || command == "diff" || command == "sync" {
            Allocator.reserveRoomForAOneShotCommand()
            HugePages.want()
        }
        if let command = arguments.first, command == "sync" || command == "watch" { GitRepository.loadInBackground() }
    }

    /// The `orlctl` binary: runs the command its arguments name with the process's own
    /// descriptors and environment, and exits with its status.
    public static func run(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) async -> Never {
        // Every file orlctl creates (the database, its WAL, logs, tokens, keys, clones)
        // is its user's alone, whatever the mode of the directory it lands in.
        umask(0o077)
        // SIGUSR1 means "the state changed" to a controller or a watch, and whoever changes
        // the state sends it to the PID in their lock as soon as that lock is held, which is
        // before they set up their handler: its default action would end them. Ignored from
        // the start, an early one is dropped (their first pass reads the store anyway).
        // Agents and tools get default dispositions back (COrlSpawn resets them).
        signal(SIGUSR1, SIG_IGN)
        exit(await execute(arguments))
    }

    /// Runs one command in this process with `context` (its environment, standard input,
    /// where its output goes) and returns its exit status. Relative paths are resolved
    /// against the process's working directory, as for the binary. A command that starts
    /// a detached controller starts this process's executable: in process, set
    /// ORL_NO_CONTROLLER=1 or run the binary.
    public static func run(_ arguments: [String], context: CommandContext) async -> CommandOutcome {
        let status = await CommandContext.$current.withValue(context) { await execute(arguments) }
        func text(_ output: CommandContext.Output) -> String {
            if case .capture(let capture) = output { capture.text } else { "" }
        }
        return CommandOutcome(status: status, standardOutput: text(context.standardOutput), standardError: text(context.standardError))
    }

    /// Parses the arguments and runs the command, mapping every outcome to orl's exit
    /// codes (ArgumentParser's own usage code, 64, becomes 2).
    static func execute(_ arguments: [String]) async -> Int32 {
        do {
            if var command = direct(arguments) {
                try await command.run()
                return ExitStatus.clean.rawValue
            }
            var command = try Orlctl.parseAsRoot(arguments)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
            return ExitStatus.clean.rawValue
        } catch let status as ExitCode {
            return status.rawValue
        } catch let failure as CommandFailure {
            writeStandardError("orlctl: error: \(failure.message)\n")
            return ExitStatus.failure.rawValue
        } catch {
            let code = Orlctl.exitCode(for: error)
            if code == .success {
                // --help and --version.
                writeStandardOutput(Orlctl.fullMessage(for: error) + "\n")
                return ExitStatus.clean.rawValue
            }
            writeStandardError(Orlctl.fullMessage(for: error) + "\n")
            return ExitStatus.failure.rawValue
        }
    }

    /// The command the arguments name. The one-shot commands timed against their floors
    /// (`apply`, `diff`, `validate`, and `sync`, one round against `git fetch`) are parsed as
    /// roots of their own first (`direct`); anything else goes through the whole tree.
    static func parse(_ arguments: [String]) throws -> any ParsableCommand {
        if let command = direct(arguments) { return command }
        return try Orlctl.parseAsRoot(arguments)
    }

    /// `apply`, `diff`, `validate` or `sync` parsed as a root of its own, by ArgumentParser as
    /// the tree would: the whole tree is not built and reflected, the arguments are not parsed
    /// again as a request for a completion script (those commands' configurations name
    /// `orlctl` as their super-command), and the command comes back as what it is, not cast
    /// to `AsyncParsableCommand` at run time. Those were most of a one-shot command's
    /// argument parsing, and most of that the runtime's conformance lookups (a scan of the
    /// binary's ~11,600 conformance records per type and protocol). Anything the direct parse
    /// does not take as its command (a usage error, `--help`, `--version`, a completion
    /// request) is nil, so the tree parses it and the messages, help and exit codes are the
    /// tree's (`DirectParseTests`).
    static func direct(_ arguments: [String]) -> (any AsyncParsableCommand)? {
        func parsed<Command: AsyncParsableCommand>(_: Command.Type) -> Command? {
            // A cast to the concrete type compares metadata; no conformance is looked up.
            try? Command.parseAsRoot(Array(arguments.dropFirst())) as? Command
        }
        guard let name = arguments.first else { return nil }
        switch name {
        case "apply": return parsed(Apply.self)
        case "diff": return parsed(Diff.self)
        case "validate": return parsed(Validate.self)
        case "sync": return parsed(Sync.self)
        default: return nil
        }
    }

    static func writeStandardError(_ text: String) {
        CommandContext.current.standardError.write(text)
    }
}

/// Keeps `value` alive until the process exits, so it is never freed.
///
/// One-shot commands that read whole fleets end right after printing; freeing ten
/// thousand parsed documents one by one then costs more than all the checks after
/// parsing. Process exit returns the memory at once (clang's -disable-free does the
/// same). Long-running code must never call this. A command run in process frees it as
/// usual.
func keepUntilExit(_ value: some Sendable) {
    guard CommandContext.current.isProcess else { return }
    _ = Unmanaged.passRetained(Box(value))
}

private final class Box<Value: Sendable>: Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Writes to the command's standard output in one piece.
func writeStandardOutput(_ text: String) {
    CommandContext.current.standardOutput.write(text)
}
