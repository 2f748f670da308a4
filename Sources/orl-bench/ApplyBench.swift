import ArgumentParser
import Foundation
import OrlCore
import OrlPostgres
import OrlStore
import OrlYAML

/// Applying into the real SQLite store: 10,000 resources into an empty state, then the
/// same set with one change. The plan-and-write phase is timed in process (that is what
/// the targets are about); whole `orlctl apply` processes are timed too, for context.
struct ApplyBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Time apply of N synthetic resources into an empty store, then a one-change re-apply."
    )

    @Option(help: "How many manifests.")
    var count = 10_000

    @Option(help: "How many timed runs of each (the median is reported).")
    var runs = 5

    @Option(help: "The orlctl binary for the end-to-end figures (default: the one next to orl-bench).")
    var orlctl: String?

    @Option(
        help:
            "A PostgreSQL state (postgres://…, a database the bench may empty): measured alternately with SQLite in process, and for the end-to-end figures instead of SQLite."
    )
    var state: String?

    func run() throws {
        let files = SyntheticFleet(count: count).files()
        let changedIndex = files.firstIndex { $0.path.contains("/budget-") }!
        let changed = files.enumerated().map { i, file in
            i == changedIndex ? (file.path, file.text.replacingOccurrences(of: "usd: 25", with: "usd: 30")) : file
        }
        let fleet = try read(files)
        let fleetWithChange = try read(changed)
        let options = ApplyOptions(source: "bench", appliedBy: "orl-bench")
        let clock = ContinuousClock()

        // SQLite, and PostgreSQL when given, one after the other in each run: figures taken
        // under the same load.
        let backends = state.map { ["SQLite (WAL)", "PostgreSQL \(PostgresURL.redacted($0))"] } ?? ["SQLite (WAL)"]
        var first: [[Duration]] = Array(repeating: [], count: backends.count)
        var oneChange = first
        var noChange = first
        var cpu = first
        for _ in 0..<runs {
            for backend in backends.indices {
                let directory = NSTemporaryDirectory() + "orl-bench-apply-\(UUID().uuidString)"
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store: any StateBackend
                if backend == 0 {
                    store = try SQLiteStateStore(directory: directory)
                } else {
                    let postgres = try PostgresStateStore(url: state!)
                    try postgres.importTables([], replace: true)  // empties every table
                    store = postgres
                }
                let cpuStart = Self.cpuTime()
                var start = clock.now
                let created = try ApplyOperation.apply(fleet, to: store, options: options, now: Timestamp(milliseconds: 1))
                first[backend].append(clock.now - start)
                cpu[backend].append(Self.cpuTime() - cpuStart)
                precondition(created.plan.additions == count)
                start = clock.now
                let updated = try ApplyOperation.apply(fleetWithChange, to: store, options: options, now: Timestamp(milliseconds: 2))
                oneChange[backend].append(clock.now - start)
                precondition(updated.plan.updates == 1 && updated.plan.unchanged.count == count - 1)
                start = clock.now
                let same = try ApplyOperation.apply(fleetWithChange, to: store, options: options, now: Timestamp(milliseconds: 3))
                noChange[backend].append(clock.now - start)
                precondition(same.plan.isEmpty)
            }
        }
        for (index, backend) in backends.enumerated() {
            print("apply: \(count) resources into \(backend), plan and write in process, median of \(runs)")
            print(
                "  first apply (\(count) to add):      \(median(first[index]).seconds) s (this process's CPU \(median(cpu[index]).seconds) s)"
            )
            print("  one change (1 to change):          \(median(oneChange[index]).seconds) s")
            print("  no change (nothing written):       \(median(noChange[index]).seconds) s")
        }
        try endToEnd(files, changedIndex)
    }

    private func read(_ files: [(path: String, text: String)]) throws -> Fleet {
        var read = ReadManifests()
        let parser = YAMLParser()
        let reader = ManifestReader()
        for file in files { read.append(reader.read(parser.parse(file.text, file: file.path))) }
        let report = ManifestValidation.validate(read)
        guard report.isValid else {
            throw ValidationError("the synthetic fleet is not valid: \(report.diagnostics.prefix(3).map(\.message))")
        }
        return report.fleet
    }

    /// Whole processes, reading and validating the files too.
    private func endToEnd(_ files: [(path: String, text: String)], _ changedIndex: Int) throws {
        let binary = Orlctl.binary(orlctl)
        guard FileManager.default.isExecutableFile(atPath: binary) else { return }
        let root = NSTemporaryDirectory() + "orl-bench-apply-e2e-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        for file in files {
            let url = URL(fileURLWithPath: root).appendingPathComponent("fleet").appendingPathComponent(file.path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try file.text.write(to: url, atomically: false, encoding: .utf8)
        }
        let fleet = root + "/fleet"
        let state = self.state ?? root + "/state"
        if let url = self.state { try PostgresStateStore(url: url).importTables([], replace: true) }
        let firstApply = try time(binary, ["apply", "-f", fleet, "--state", state, "--no-controller"])
        let changed = URL(fileURLWithPath: fleet).appendingPathComponent(files[changedIndex].path)
        try files[changedIndex].text.replacingOccurrences(of: "usd: 25", with: "usd: 30").write(
            to: changed, atomically: true, encoding: .utf8)
        let oneChange = try time(binary, ["apply", "-f", fleet, "--state", state, "--no-controller"])
        let noChange = try time(binary, ["apply", "-f", fleet, "--state", state, "--no-controller"])
        print("orlctl apply processes (read, validate, audit, plan, write):")
        print(String(format: "  first %.3f s, one change %.3f s, no change %.3f s", firstApply, oneChange, noChange))
    }

    private func time(_ binary: String, _ arguments: [String]) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        let start = DispatchTime.now().uptimeNanoseconds
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("orlctl \(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
        }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    private func median(_ values: [Duration]) -> Duration { values.sorted()[values.count / 2] }

    /// User and system CPU time of this process so far.
    private static func cpuTime() -> Duration {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let micro =
            Int64(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + Int64(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
        return .microseconds(micro)
    }
}
