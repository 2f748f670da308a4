import ArgumentParser
import Foundation

/// The `orlctl` the benchmarks drive, as operators would: a process per command.
enum Orlctl {
    /// `--orlctl` if given, else the one built next to orl-bench.
    static func binary(_ given: String?) -> String {
        given
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("orlctl").path
    }

    /// Runs `orlctl ARGUMENTS`, its output discarded (and its standard error too when
    /// `quiet`: warnings a benchmark's fleet draws on purpose); throws unless it exits 0.
    static func run(_ binary: String, _ arguments: [String], quiet: Bool = false) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        if quiet { process.standardError = FileHandle(forWritingAtPath: "/dev/null") }
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("orlctl \(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
        }
    }
}
