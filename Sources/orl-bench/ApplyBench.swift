import ArgumentParser
import Foundation
import OrlCore
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

    @Option(help: "A PostgreSQL state (postgres://…, an empty database) for the end-to-end figures, instead of a SQLite one.")
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

        var first: [Duration] = []
        var oneChange: [Duration] = []
        var noChange: [Duration] = []
        for _ in 0..<runs {
            let directory = NSTemporaryDirectory() + "orl-bench-apply-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = try SQLiteStateStore(directory: directory)
            var start = clock.now
            let created = try ApplyOperation.apply(fleet, to: store, options: options, now: Timestamp(milliseconds: 1))
            first.append(clock.now - start)
            precondition(created.plan.additions == count)
            start = clock.now
            let updated = try ApplyOperation.apply(fleetWithChange, to: store, options: options, now: Timestamp(milliseconds: 2))
            oneChange.append(clock.now - start)
            precondition(updated.plan.updates == 1 && updated.plan.unchanged.count == count - 1)
            start = clock.now
            let same = try ApplyOperation.apply(fleetWithChange, to: store, options: options, now: Timestamp(milliseconds: 3))
            noChange.append(clock.now - start)
            precondition(same.plan.isEmpty)
        }
        print("apply: \(count) resources into SQLite (WAL), plan and write in process, median of \(runs)")
        print("  first apply (\(count) to add):      \(median(first).seconds) s")
        print("  one change (1 to change):          \(median(oneChange).seconds) s")
        print("  no change (nothing written):       \(median(noChange).seconds) s")
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
}
