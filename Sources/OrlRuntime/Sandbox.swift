import COrlSpawn
import Glibc
import OrlCore

/// The file-system view and the cgroups of a sandboxed process (docs/sandbox.md),
/// derived from its launch, not from any fixed layout: the host's system directories
/// and the program's own read-only, the working directory writable, the state directory
/// hidden but for them.
struct SandboxPlan {
    var mounts: [(kind: Int32, path: String)]

    /// Directories every program may need; missing ones are left out.
    static let systemPaths = ["/usr", "/etc", "/opt", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]

    /// `program`: the resolved path of the command; `searchPath`: the agent's PATH.
    static func make(
        _ sandbox: SandboxSpec, program: String, arguments: [String], searchPath: String?, workingDirectory: String
    ) -> SandboxPlan {
        let state = normalized(sandbox.stateDirectory)
        let writable = sandbox.writable.map(normalized)
        var readOnly = systemPaths.filter { exists($0) }
        func offer(_ path: String) {
            let path = normalized(path)
            guard path != "/", exists(path) else { return }
            readOnly.append(path)
        }
        // The program, what it really is (a symlink's target), and its interpreter.
        var programs = [program]
        if let first = interpreter(of: program, searchPath: searchPath) {
            programs.append(first)
            if let next = interpreter(of: first, searchPath: searchPath) { programs.append(next) }
        }
        for path in programs {
            offer(installation(path))
            if let real = realPath(path) { offer(installation(real)) }
        }
        for entry in (searchPath ?? ProcessSpec.defaultSearchPath).split(separator: ":") where entry.hasPrefix("/") {
            offer(installation(String(entry) + "/x"))
        }
        // Arguments that name files (a script, a config): their directory.
        for argument in arguments where !argument.isEmpty && !argument.hasPrefix("-") {
            let path = argument.hasPrefix("/") ? argument : join(workingDirectory, argument)
            var info = stat()
            guard argument.hasPrefix("/") || argument.contains("/") || stat(path, &info) == 0 else { continue }
            guard stat(path, &info) == 0 else { continue }
            let isDirectory = info.st_mode & S_IFMT == S_IFDIR
            offer(isDirectory ? path : dirname(path))
            // Through a symlink (a workspace that links the repository's examples, say):
            // where it leads, too.
            if let real = realPath(path) { offer(isDirectory ? real : dirname(real)) }
        }
        for path in sandbox.readOnly { offer(path) }

        // Inside the state directory only what is neither its top (database, keys,
        // tokens), nor its logs, nor agents' working directories (their own is writable).
        readOnly = readOnly.filter { path in
            guard isWithin(path, state) else { return true }
            let relative = path.dropFirst(state.count).split(separator: "/")
            return relative.count >= 2 && relative[0] != "logs" && relative[0] != "agents"
        }
        // Not below a writable directory (it would become read-only), nor twice.
        readOnly = readOnly.filter { path in !writable.contains { isWithin(path, $0) } }
        var entries: [(kind: Int32, path: String)] =
            Array(Set(readOnly)).map { (Int32(ORL_MOUNT_READONLY.rawValue), $0) }
            + writable.map { (Int32(ORL_MOUNT_WRITABLE.rawValue), $0) }
            + [(Int32(ORL_MOUNT_HIDDEN.rawValue), state), (Int32(ORL_MOUNT_TMPFS.rawValue), "/tmp")]
        // Covered by a shallower read-only bind with nothing hidden in between: redundant.
        let hides = entries.filter { $0.kind != Int32(ORL_MOUNT_READONLY.rawValue) }.map(\.path)
        entries = entries.filter { entry in
            guard entry.kind == Int32(ORL_MOUNT_READONLY.rawValue) else { return true }
            return !readOnly.contains { other in
                other != entry.path && isWithin(entry.path, other) && !hides.contains { isWithin($0, other) && isWithin(entry.path, $0) }
            }
        }
        // Shallower first; at the same path, binds before what hides.
        entries.sort { a, b in
            let (da, db) = (depth(a.path), depth(b.path))
            if da != db { return da < db }
            if a.path != b.path { return a.path < b.path }
            return a.kind < b.kind
        }
        return SandboxPlan(mounts: entries)
    }

    /// Where a program is installed: `/x/venv` for `/x/venv/bin/python`, the directory
    /// of anything else.
    static func installation(_ program: String) -> String {
        let directory = dirname(program)
        let last = directory.split(separator: "/").last.map(String.init) ?? ""
        return ["bin", "sbin", "shims", "libexec"].contains(last) ? dirname(directory) : directory
    }

    /// The interpreter on a `#!` line (`env NAME` looked up in the search path).
    static func interpreter(of program: String, searchPath: String?) -> String? {
        let fd = open(program, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = read(fd, &buffer, buffer.count)
        guard count > 2, buffer[0] == UInt8(ascii: "#"), buffer[1] == UInt8(ascii: "!") else { return nil }
        let line = String(decoding: buffer[2..<count].prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let first = words.first else { return nil }
        guard first.hasSuffix("/env") else { return first }
        guard let name = words.dropFirst().first(where: { !$0.hasPrefix("-") && !$0.contains("=") }) else { return first }
        for entry in (searchPath ?? ProcessSpec.defaultSearchPath).split(separator: ":") where entry.hasPrefix("/") {
            let candidate = join(String(entry), name)
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    static func normalized(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == ".." {
                _ = parts.popLast()
                continue
            }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    static func isWithin(_ path: String, _ directory: String) -> Bool {
        directory == "/" || path == directory || path.hasPrefix(directory + "/")
    }

    static func depth(_ path: String) -> Int { path.split(separator: "/").count }

    static func dirname(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// cgroups for a sandbox's memory, pids and cpu: v2 where the unified hierarchy is
/// mounted at /sys/fs/cgroup with the controllers, else v1 controllers mounted at
/// /sys/fs/cgroup/NAME; what neither offers falls back to an rlimit (memory, pids) or
/// is not enforced (cpu), and `describe` says so.
struct SandboxCgroups {
    enum Version: String {
        case v1 = "cgroup v1"
        case v2 = "cgroup v2"
    }

    /// The cgroup.procs files the process joins.
    var procs: [String] = []
    /// Directories to remove once the process is gone.
    var directories: [String] = []
    /// Per limit: how it is enforced.
    var enforcement: [String: String] = [:]
    var memoryByCgroup = false
    var pidsByCgroup = false

    static let root = "/sys/fs/cgroup"

    static func controllersV2() -> Set<String> {
        guard let text = readText(root + "/cgroup.controllers") else { return [] }
        return Set(text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
    }

    static func hasV1(_ controller: String) -> Bool {
        access("\(root)/\(controller)/cgroup.procs", W_OK) == 0
    }

    /// `key` names the agent (`ns.name`); limits are written, directories created.
    static func make(key: String, sandbox: SandboxSpec) -> SandboxCgroups {
        var result = SandboxCgroups()
        let wanted: [(controller: String, needed: Bool)] = [
            ("memory", sandbox.memory != nil), ("pids", sandbox.pids != nil), ("cpu", sandbox.cpu != nil),
        ]
        guard wanted.contains(where: \.needed) else { return result }
        let v2 = controllersV2()
        for (controller, needed) in wanted where needed {
            var directory: String?
            var version: Version?
            if v2.contains(controller) {
                let parent = root + "/orl"
                _ = mkdir(parent, 0o755)
                _ = writeText(root + "/cgroup.subtree_control", "+\(controller)")
                _ = writeText(parent + "/cgroup.subtree_control", "+\(controller)")
                let path = parent + "/" + key
                if result.directories.contains(path) || mkdir(path, 0o755) == 0 || errno == EEXIST {
                    directory = path
                    version = .v2
                }
            } else if hasV1(controller) {
                let parent = "\(root)/\(controller)/orl"
                _ = mkdir(parent, 0o755)
                let path = parent + "/" + key
                if mkdir(path, 0o755) == 0 || errno == EEXIST {
                    directory = path
                    version = .v1
                }
            }
            guard let directory, let version else { continue }
            var ok = false
            switch (controller, version) {
            case ("memory", .v2):
                ok = writeText(directory + "/memory.max", String(sandbox.memory!))
                _ = writeText(directory + "/memory.swap.max", "0")
            case ("memory", .v1):
                ok = writeText(directory + "/memory.limit_in_bytes", String(sandbox.memory!))
                _ = writeText(directory + "/memory.memsw.limit_in_bytes", String(sandbox.memory!))
            case ("pids", _):
                ok = writeText(directory + "/pids.max", String(sandbox.pids!))
            case ("cpu", .v2):
                ok = writeText(directory + "/cpu.max", "\(Int((sandbox.cpu! * 100_000).rounded())) 100000")
            case ("cpu", .v1):
                ok =
                    writeText(directory + "/cpu.cfs_period_us", "100000")
                    && writeText(directory + "/cpu.cfs_quota_us", String(Int((sandbox.cpu! * 100_000).rounded())))
            default:
                break
            }
            guard ok else {
                _ = rmdir(directory)
                continue
            }
            if !result.directories.contains(directory) {
                result.directories.append(directory)
                result.procs.append(directory + "/cgroup.procs")
            }
            result.enforcement[controller] = version.rawValue
            if controller == "memory" { result.memoryByCgroup = true }
            if controller == "pids" { result.pidsByCgroup = true }
        }
        return result
    }

    /// Why the process ended, when a limit ended it: read before the cgroup goes.
    static func containment(in directories: [String]) -> String? {
        var notes: [String] = []
        for directory in directories {
            if let events = readText(directory + "/memory.events"), let count = counter("oom_kill", in: events), count > 0 {
                notes.append("the memory limit was reached (\(count) OOM kill\(count == 1 ? "" : "s"), cgroup v2)")
            } else if let control = readText(directory + "/memory.oom_control"), let count = counter("oom_kill", in: control), count > 0 {
                notes.append("the memory limit was reached (\(count) OOM kill\(count == 1 ? "" : "s"), cgroup v1)")
            } else if let failed = readText(directory + "/memory.failcnt"), let count = Int(failed.trimmed), count > 0 {
                notes.append("the memory limit was reached \(count) times (cgroup v1)")
            }
            if let events = readText(directory + "/pids.events"), let count = counter("max", in: events), count > 0 {
                notes.append("the pids limit refused \(count) fork\(count == 1 ? "" : "s")")
            }
        }
        return notes.isEmpty ? nil : notes.joined(separator: "; ")
    }

    static func remove(_ directories: [String]) {
        for directory in directories { _ = rmdir(directory) }
    }

    private static func counter(_ name: String, in text: String) -> Int? {
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            if words.count == 2, words[0] == name { return Int(words[1]) }
        }
        return nil
    }

    static func readText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(fd, &buffer, buffer.count)
        return count >= 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
    }

    static func writeText(_ path: String, _ text: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return text.withCString { write(fd, $0, strlen($0)) } == text.utf8.count
    }
}

extension String {
    fileprivate var trimmed: String { String(filter { !$0.isWhitespace }) }
}

/// The C view of a plan, alive as long as this is.
final class CSandbox {
    private let paths: CStringArray
    private let procs: CStringArray
    private var mounts: [orl_mount]
    private(set) var value: orl_sandbox

    init(_ sandbox: SandboxSpec, plan: SandboxPlan, cgroups: SandboxCgroups, processes: Int?) {
        paths = CStringArray(plan.mounts.map(\.path))
        procs = CStringArray(cgroups.procs)
        mounts = zip(plan.mounts, paths.pointers).map { entry, pointer in orl_mount(kind: entry.kind, path: pointer) }
        value = orl_sandbox(
            uid: sandbox.uid, gid: sandbox.gid, mounts: nil, mount_count: Int32(plan.mounts.count), api_port: Int32(sandbox.apiPort ?? 0),
            cgroup_procs: nil, processes: Int64(processes ?? -1))
    }

    var isComplete: Bool { paths.isComplete && procs.isComplete }

    func withPointer<T>(_ body: (UnsafePointer<orl_sandbox>) -> T) -> T {
        mounts.withUnsafeBufferPointer { mountBuffer in
            procs.pointers.withUnsafeBufferPointer { procBuffer in
                var copy = value
                copy.mounts = mountBuffer.baseAddress
                copy.cgroup_procs = UnsafePointer(procBuffer.baseAddress)
                return withUnsafePointer(to: copy) { body($0) }
            }
        }
    }
}
