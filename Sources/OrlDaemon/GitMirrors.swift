import Foundation
import OrlCore
import OrlRuntime

/// The bare mirrors git sources fetch into (`<state>/git/<name>.git`): every fetch adds a
/// pack, and a force-push leaves objects no branch reaches. libgit2 has no garbage
/// collector, so git's own does the work (repack, prune); it is built to run beside
/// fetches into the same repository, as git runs `gc --auto` after its own fetches.
public enum GitMirrors {
    /// One mirror's size before and after, or why it was not collected.
    public struct Collected: Sendable, Hashable {
        public var name: String
        public var path: String
        public var bytesBefore: Int
        public var bytesAfter: Int
        public var error: String?

        public var freed: Int { max(0, bytesBefore - bytesAfter) }
    }

    public struct Report: Sendable, Hashable {
        public var mirrors: [Collected] = []
        /// No `git` on PATH: nothing was collected.
        public var gitMissing = false

        public var freed: Int { mirrors.map(\.freed).reduce(0, +) }
    }

    /// Collects every mirror under `directory`: `thorough` runs a full `git gc` (what a
    /// user asks for with `orlctl gc`); otherwise `git gc --auto`, which only repacks
    /// once git's thresholds are passed (what the controller runs every hour).
    /// Blocks until git has finished: call it from a thread of its own.
    public static func collect(in directory: String, thorough: Bool, environment: [String: String]) -> Report {
        var report = Report()
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".git") }.sorted()
        guard !names.isEmpty else { return report }
        guard let git = executable("git", path: environment["PATH"]) else {
            report.gitMissing = true
            return report
        }
        var env = ["PATH": environment["PATH"] ?? "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0"]
        env["HOME"] = environment["HOME"]
        for name in names {
            let path = directory + "/" + name
            var mirror = Collected(
                name: String(name.dropLast(4)), path: path, bytesBefore: DiskUsage.bytes(at: path), bytesAfter: 0)
            let arguments = ["--git-dir=" + path, "gc", "--quiet"] + (thorough ? [] : ["--auto"])
            do throws(RuntimeError) {
                let outcome = try ProcessRuntime.runToCompletion(
                    CommandInvocation(
                        command: git, arguments: arguments, environment: env, workingDirectory: path, input: [],
                        timeout: .seconds(600), maxOutputBytes: 64 << 10))
                if outcome.exit?.succeeded != true {
                    let detail = String(decoding: outcome.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    mirror.error =
                        "git gc \(outcome.exit.map(\.description) ?? "ran past its timeout")" + (detail.isEmpty ? "" : ": \(detail)")
                }
            } catch {
                mirror.error = error.description
            }
            mirror.bytesAfter = DiskUsage.bytes(at: path)
            report.mirrors.append(mirror)
        }
        return report
    }

    static func executable(_ name: String, path: String?) -> String? {
        for directory in (path ?? "/usr/bin:/bin").split(separator: ":") where !directory.isEmpty {
            let candidate = directory + "/" + name
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

/// Space on disk, as `du` counts it (allocated blocks, links not followed).
public enum DiskUsage {
    /// A file's or a whole directory's bytes; a SQLite database counts its `-wal` and
    /// `-shm` files with it. 0 when the path does not exist.
    public static func bytes(at path: String) -> Int {
        var info = stat()
        guard lstat(path, &info) == 0 else { return 0 }
        var total = Int(info.st_blocks) * 512
        if info.st_mode & S_IFMT == S_IFDIR {
            if let enumerator = FileManager.default.enumerator(atPath: path) {
                while let relative = enumerator.nextObject() as? String {
                    if lstat(path + "/" + relative, &info) == 0 { total += Int(info.st_blocks) * 512 }
                }
            }
        } else if path.hasSuffix(".db") {
            for suffix in ["-wal", "-shm"] where lstat(path + suffix, &info) == 0 { total += Int(info.st_blocks) * 512 }
        }
        return total
    }

    /// `512 B`, `1.5 KiB`, `3.2 MiB`.
    public static func human(_ n: Int) -> String {
        switch n {
        case ..<1024: "\(n) B"
        case ..<(1 << 20): String(format: "%.1f KiB", Double(n) / 1024)
        case ..<(1 << 30): String(format: "%.1f MiB", Double(n) / Double(1 << 20))
        default: String(format: "%.1f GiB", Double(n) / Double(1 << 30))
        }
    }
}
