import ArgumentParser
import Foundation

/// `orl-bench`: orl's benchmarks, a separate command from the tests. Each prints figures
/// meant to be read beside the peers' (../shared/peer-bench measures those here).
@main
struct OrlBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orl-bench",
        abstract: "Benchmarks for orl (build with -c release).",
        subcommands: [
            ValidateBench.self, AuditBench.self, ApplyBench.self, ControllerBench.self, GatewayBench.self, GatewayApplyBench.self,
            McpBench.self, RunsBench.self,
            ObservabilityBench.self,
            SyncBench.self, IncrementalBench.self, DashboardBench.self, BudgetHammerBench.self, GatewayBackendsBench.self,
            FailoverBench.self,
        ]
    )
}

struct ValidateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Time `orlctl validate` over N synthetic manifests of about 30 lines, all six kinds."
    )

    @Option(help: "How many manifests to generate.")
    var count = 10_000

    @Option(help: "How many timed runs (the median is reported).")
    var runs = 5

    @Option(help: "The orlctl binary to time (default: the one next to orl-bench).")
    var orlctl: String?

    @Option(help: "Keep the generated manifests in this directory instead of a temporary one.")
    var keep: String?

    func run() throws {
        let binary = Orlctl.binary(orlctl)
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ValidationError("no orlctl at \(binary); build it (swift build -c release) or pass --orlctl")
        }
        let directory = keep ?? NSTemporaryDirectory() + "orl-bench-validate-\(getpid())"
        defer { if keep == nil { try? FileManager.default.removeItem(atPath: directory) } }

        let files = SyntheticFleet(count: count).files()
        var lines = 0
        for file in files {
            let url = URL(fileURLWithPath: directory).appendingPathComponent(file.path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try file.text.write(to: url, atomically: false, encoding: .utf8)
            lines += file.text.split(separator: "\n", omittingEmptySubsequences: false).count - 1
        }
        print(
            "validate: \(count) manifests, \(String(format: "%.1f", Double(lines) / Double(count))) lines each on average, 6 kinds, \(ProcessInfo.processInfo.activeProcessorCount) cores"
        )

        // One untimed run warms the page cache and checks the fleet is valid.
        let warm = try time(binary, directory)
        guard warm.status == 0 else {
            throw ValidationError("orlctl validate exited \(warm.status) on the synthetic fleet:\n\(warm.output.prefix(2000))")
        }
        var seconds: [Double] = []
        for _ in 0..<runs { seconds.append(try time(binary, directory).seconds) }
        seconds.sort()
        let median = seconds[seconds.count / 2]
        print(
            String(
                format: "orlctl validate -f DIR: median %.3f s over %d runs (min %.3f, max %.3f)", median, runs, seconds.first!,
                seconds.last!))
        print(String(format: "throughput: %.0f manifests/s", Double(count) / median))
    }

    private func time(_ binary: String, _ directory: String) throws -> (seconds: Double, status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["validate", "-f", directory]
        let pipe = Pipe()
        process.standardOutput = pipe
        let start = DispatchTime.now().uptimeNanoseconds
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return (seconds, process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}
