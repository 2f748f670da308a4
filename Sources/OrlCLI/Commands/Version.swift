import ArgumentParser
import COrlBuildInfo
import OrlCore
import OrlJSON

#if canImport(Glibc)
    import Glibc
#endif

/// `orlctl version`: what was built, from which commit, for bug reports and fleets of
/// installed binaries (like `kubectl version --client -o json`).
struct Version: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version",
        abstract: "Print orlctl's version and the commit it was built from.",
        discussion: "The commit is \"unknown\" for a build made without git (from a tarball, say)."
    )

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    static var commit: String {
        let commit = String(cString: orl_build_commit())
        return commit.isEmpty ? "unknown" : commit
    }

    func run() async throws {
        let dirty = orl_build_dirty() != 0
        switch output {
        case .text:
            writeStandardOutput("orlctl \(Orlctl.version) (commit \(Self.commit)\(dirty ? ", with uncommitted changes" : ""))\n")
        case .json:
            writeStandardOutput(
                JSONValue.object([
                    ("version", .string(Orlctl.version)), ("commit", .string(Self.commit)), ("dirty", .bool(dirty)),
                    ("apiVersion", .string("orl.dev/v1")),
                ]).rendered())
        }
    }
}

extension OrlctlMain {
    /// `orlctl --version`, as ArgumentParser would print it, without building the
    /// command tree first, and straight to the process's standard output: the process's
    /// `CommandContext` copies the environment into a dictionary, and the task-local that
    /// holds it is a generic type the runtime instantiates by name, checking its
    /// conformances against every one in the binary (half of this answer's own CPU).
    public static func printVersion() -> Never {
        CommandContext.Output.descriptor(1).write("\(Orlctl.version) (commit \(Version.commit))\n")
        exit(ExitStatus.clean.rawValue)
    }
}
