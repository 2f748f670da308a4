import ArgumentParser
import Foundation
import OrlMeasure
import OrlPostgres

#if canImport(Glibc)
    import Glibc
#endif

/// Whole `orlctl` processes over N synthetic manifests, each figure beside its floor,
/// measured alternately in one run: `apply` with nothing changed and with one manifest
/// changed (against a no-op upsert of N rows by Python's sqlite3), `apply --full` for
/// comparison, `validate`'s time, CPU and peak memory (against PyYAML + jsonschema over
/// the same files, ../shared/peer-bench/validate_py_orl.py), and `orlctl --version`
/// against /bin/true.
struct IncrementalBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "incremental",
        abstract: "Time re-applies, validate's memory and start-up, each beside its floor."
    )

    @Option(help: "How many manifests (comma-separated for a curve, e.g. 1000,10000,100000).")
    var count = "10000"

    @Option(help: "How many timed runs of each (the median is reported).")
    var runs = 5

    @Option(help: "The orlctl binary (default: the one next to orl-bench).")
    var orlctl: String?

    @Option(help: "The peers' scripts (../shared/peer-bench), for the PyYAML + jsonschema floor.")
    var peerBench = "../shared/peer-bench"

    @Flag(help: "Skip the floors.")
    var noFloors = false

    @Option(
        help:
            "A PostgreSQL state (postgres://…, a database the bench may empty): re-applies into it are measured too, alternately with SQLite, beside psql's no-op upserts."
    )
    var state: String?

    func run() throws {
        let binary = Orlctl.binary(orlctl)
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw ValidationError("no orlctl at \(binary)") }
        let counts = count.split(separator: ",").compactMap { Int($0) }
        print("incremental: whole processes, median of \(runs) (wall / CPU user+system / peak RSS)")
        startUp(binary)
        for n in counts { try measure(n, binary) }
    }

    private func startUp(_ binary: String) {
        var orl: [Measurement] = []
        var floor: [Measurement] = []
        for _ in 0..<max(runs, 20) {
            orl.append(Measurement.run([binary, "--version"]))
            floor.append(Measurement.run(["/bin/true"]))
        }
        print("  start-up: orlctl --version \(Measurement.median(orl).wallText) | floor /bin/true \(Measurement.median(floor).wallText)")
    }

    private func measure(_ n: Int, _ binary: String) throws {
        let root = NSTemporaryDirectory() + "orl-bench-incremental-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let files = SyntheticFleet(count: n).files()
        for file in files {
            let url = URL(fileURLWithPath: root).appendingPathComponent("fleet").appendingPathComponent(file.path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try file.text.write(to: url, atomically: false, encoding: .utf8)
        }
        let fleet = root + "/fleet"
        let state = root + "/state"
        let changedIndex = files.firstIndex { $0.path.contains("/budget-") }!
        let changedPath = fleet + "/" + files[changedIndex].path
        let apply = [binary, "apply", "-f", fleet, "--state", state, "--no-controller"]
        print("\(n) manifests:")

        var validate: [Measurement] = []
        var python: [Measurement] = []
        let schemas = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../schemas").standardized.path
        let peer = peerBench + "/validate_py_orl.py"
        let floors = !noFloors && FileManager.default.fileExists(atPath: peer) && n <= 20_000
        for _ in 0..<runs {
            validate.append(Measurement.run([binary, "validate", "-f", fleet]))
            if floors { python.append(Measurement.run(["/usr/bin/env", "python3", peer, schemas, fleet])) }
        }
        let v = Measurement.median(validate)
        print(
            "  validate:                 \(v.text), \(String(format: "%.1f", v.cpu / Double(n) * 1e6)) µs CPU per manifest"
                + (floors ? " | floor PyYAML + jsonschema \(Measurement.floor(python, { $0.text }))" : ""))

        let first = Measurement.run(apply)
        guard first.status == 0 else { throw ValidationError("the first apply exited \(first.status)") }
        print("  first apply:              \(first.text), \(String(format: "%.1f", first.cpu / Double(n) * 1e6)) µs CPU per manifest")

        let sqlite = root + "/floor.py"
        try Self.sqliteFloor.write(toFile: sqlite, atomically: true, encoding: .utf8)
        var noChange: [Measurement] = []
        var oneChange: [Measurement] = []
        var full: [Measurement] = []
        var floor: [Measurement] = []
        if !noFloors { _ = Measurement.run(["/usr/bin/env", "python3", sqlite, root + "/floor.db", String(n), "init"]) }
        for run in 0..<runs {
            noChange.append(Measurement.run(apply))
            try files[changedIndex].text.replacingOccurrences(of: "usd: 25", with: "usd: \(30 + run)").write(
                toFile: changedPath, atomically: true, encoding: .utf8)
            oneChange.append(Measurement.run(apply))
            full.append(Measurement.run(apply + ["--full"]))
            if !noFloors { floor.append(Measurement.run(["/usr/bin/env", "python3", sqlite, root + "/floor.db", String(n)])) }
        }
        guard noChange.allSatisfy({ $0.status == 0 }), oneChange.allSatisfy({ $0.status == 0 }) else {
            throw ValidationError("an apply failed")
        }
        let floorText = noFloors ? "" : " | floor: Python sqlite3 no-op upsert of \(n) rows \(Measurement.floor(floor, { $0.wallText }))"
        print("  apply, nothing changed:   \(Measurement.median(noChange).text)\(floorText)")
        print("  apply, one file changed:  \(Measurement.median(oneChange).text)")
        print("  apply --full, no change:  \(Measurement.median(full).text)")
        if let url = self.state {
            try postgres(n, binary, fleet: fleet, changedPath: changedPath, changedText: files[changedIndex].text, url: url)
        }
    }

    /// Re-applies into PostgreSQL and into SQLite, one after the other in each run, beside
    /// psql processes upserting one row and N rows that are already there (nothing written):
    /// a client's floor for a statement and for a pass over N rows.
    private func postgres(_ n: Int, _ binary: String, fleet: String, changedPath: String, changedText: String, url: String) throws {
        try PostgresStateStore(url: url).importTables([], replace: true)  // empties every table
        let directory = NSTemporaryDirectory() + "orl-bench-incremental-pg-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sqliteApply = [binary, "apply", "-f", fleet, "--state", directory, "--no-controller"]
        let postgresApply = [binary, "apply", "-f", fleet, "--state", url, "--no-controller"]
        for apply in [sqliteApply, postgresApply] {
            let first = Measurement.run(apply)
            guard first.status == 0 else { throw ValidationError("the first apply exited \(first.status)") }
        }
        let psql = ["/usr/bin/env", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c"]
        let table = "orl_bench_floor"
        let upsert =
            "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, manifest = excluded.manifest WHERE \(table).hash <> excluded.hash"
        let setUp = Measurement.run(
            psql + [
                "CREATE TABLE IF NOT EXISTS \(table) (name TEXT PRIMARY KEY, hash TEXT NOT NULL, manifest TEXT NOT NULL); "
                    + "INSERT INTO \(table) SELECT 'r' || i, 'h' || i, repeat('x', 700) FROM generate_series(1, \(n)) AS i \(upsert)"
            ])
        guard setUp.status == 0 else { throw ValidationError("psql could not set up the floor's table in \(PostgresURL.redacted(url))") }
        defer { _ = Measurement.run(psql + ["DROP TABLE IF EXISTS \(table)"]) }
        var sqlite: [Measurement] = []
        var postgres: [Measurement] = []
        var sqliteSame: [Measurement] = []
        var postgresSame: [Measurement] = []
        var oneRow: [Measurement] = []
        var allRows: [Measurement] = []
        for run in 0..<runs {
            try changedText.replacingOccurrences(of: "usd: 25", with: "usd: \(40 + run)").write(
                toFile: changedPath, atomically: true, encoding: .utf8)
            sqlite.append(Measurement.run(sqliteApply))
            postgres.append(Measurement.run(postgresApply))
            oneRow.append(Measurement.run(psql + ["INSERT INTO \(table) VALUES ('r1', 'h1', repeat('x', 700)) \(upsert)"]))
            allRows.append(
                Measurement.run(
                    psql + ["INSERT INTO \(table) SELECT 'r' || i, 'h' || i, repeat('x', 700) FROM generate_series(1, \(n)) AS i \(upsert)"]
                ))
            sqliteSame.append(Measurement.run(sqliteApply))
            postgresSame.append(Measurement.run(postgresApply))
        }
        guard (sqlite + postgres + sqliteSame + postgresSame + oneRow + allRows).allSatisfy({ $0.status == 0 }) else {
            throw ValidationError("an apply or a psql failed")
        }
        print("  PostgreSQL (\(PostgresURL.redacted(url))), alternately with SQLite:")
        print("    one file changed, PostgreSQL: \(Measurement.median(postgres).text)")
        print("    one file changed, SQLite:     \(Measurement.median(sqlite).text)")
        print("    nothing changed, PostgreSQL:  \(Measurement.median(postgresSame).text)")
        print("    nothing changed, SQLite:      \(Measurement.median(sqliteSame).text)")
        print("    floor: psql no-op upsert of 1 row \(Measurement.floor(oneRow, { $0.text }))")
        print("    floor: psql no-op upsert of \(n) rows \(Measurement.floor(allRows, { $0.text }))")
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ")
        print("    load average: \(load ?? "?")")
    }

    /// The floor of a no-change apply: a process that opens the database and upserts N
    /// rows that are already there (nothing written), in one transaction.
    static let sqliteFloor = """
        import sqlite3, sys
        db, n = sys.argv[1], int(sys.argv[2])
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE IF NOT EXISTS r(name TEXT PRIMARY KEY, hash TEXT NOT NULL, manifest TEXT NOT NULL)")
        rows = [("r%d" % i, "h%d" % i, "x" * 700) for i in range(n)]
        c.execute("BEGIN IMMEDIATE")
        c.executemany("INSERT INTO r VALUES (?,?,?) ON CONFLICT(name) DO UPDATE SET hash=excluded.hash, manifest=excluded.manifest WHERE r.hash != excluded.hash", rows)
        c.execute("COMMIT")
        """
}

/// One child process: wall time, its CPU time and its peak resident memory (wait4).
struct Measurement {
    var wall: Double
    var cpu: Double
    var maxRSSKiB: Int
    var status: Int32

    var wallText: String { String(format: "%.1f ms", wall * 1000) }
    var text: String {
        String(format: "%.1f ms wall, %.1f ms CPU, %.1f MiB peak", wall * 1000, cpu * 1000, Double(maxRSSKiB) / 1024)
    }

    /// Measured alone, from outside (`MeasuredCommand`), with its output discarded; a
    /// command that cannot be measured counts as a failure (status -1).
    static func run(_ argv: [String]) -> Measurement {
        guard let measured = try? MeasuredCommand.run(argv) else { return Measurement(wall: 0, cpu: 0, maxRSSKiB: 0, status: -1) }
        return Measurement(
            wall: measured.wallSeconds, cpu: measured.cpuSeconds, maxRSSKiB: measured.peakKiB,
            status: measured.status < 128 ? measured.status : -1)
    }

    /// A floor's median, or why there is none: a peer that fails at once (python3 without
    /// PyYAML or jsonschema on PATH, no psql) would otherwise pass for a fast floor.
    static func floor(_ values: [Measurement], _ text: (Measurement) -> String) -> String {
        if let failed = values.first(where: { $0.status != 0 }) {
            return "failed (exit \(failed.status): is the peer's tool on PATH? python3 needs ../shared/peer-bench/setup.sh's venv)"
        }
        return text(median(values))
    }

    static func median(_ values: [Measurement]) -> Measurement {
        let sorted = values.sorted { $0.wall < $1.wall }
        var m = sorted[sorted.count / 2]
        m.cpu = values.map(\.cpu).sorted()[values.count / 2]
        m.maxRSSKiB = values.map(\.maxRSSKiB).sorted()[values.count / 2]
        return m
    }
}
