public import OrlCore
import OrlRuntime

#if canImport(Glibc)
    import Glibc
#endif

/// What `-f` named, once directories are expanded: files to read, or what standard
/// input held (read at once, since it can be read only once).
public enum ManifestInput: Sendable {
    case file(String)
    case read(ManifestFile)
}

/// Why manifests could not be read at all: the user named something that is not there
/// or cannot be read. These end the command with exit code 2.
public struct SourceError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "\(path): \(reason)" }
}

/// Reads the `-f` arguments: files, directories (walked recursively for .yaml, .yml and
/// .json, in byte order of their paths, skipping hidden entries such as .git) and `-`
/// for standard input.
public struct FileSystemSource: Sendable {
    /// What diagnostics call standard input.
    public static let standardInputName = "<stdin>"

    public var maxFileBytes: Int
    /// What `-` reads: these bytes when given (a command run in process has its own
    /// standard input), else the process's descriptor 0.
    public var standardInput: [UInt8]?

    /// The working directory of the command, taken on its thread when the source is made:
    /// files are read on every core (`ManifestParsing.parallelMap`), by threads that need
    /// not share the command's directory (a command run in process has a directory of its
    /// own), so a relative path is opened against this one, not the reading thread's.
    public let workingDirectory: String

    public init(maxFileBytes: Int, standardInput: [UInt8]? = nil) {
        self.maxFileBytes = maxFileBytes
        self.standardInput = standardInput
        workingDirectory = Self.currentDirectory()
    }

    /// Where `path` (as `-f` named it, and as diagnostics show it) is on any thread.
    public func location(of path: String) -> String {
        path.hasPrefix("/") || workingDirectory.isEmpty ? path : workingDirectory + "/" + path
    }

    private static func currentDirectory() -> String {
        guard let buffer = getcwd(nil, 0) else { return "" }
        defer { free(buffer) }
        return String(cString: buffer)
    }

    /// The files the arguments name, in order, each once. Reading them is left to the
    /// caller, so that it can read on every core.
    public func inputs(_ arguments: [String]) throws(SourceError) -> [ManifestInput] {
        try listed(arguments, stamped: false).inputs
    }

    /// `inputs`, each file with its stamp (`FileStamp`; nil for standard input and for what
    /// is no longer a regular file), taken relative to its directory so that the kernel
    /// looks up one name rather than the whole path, on every core: a stamp is a system
    /// call per file, most of what a re-apply with nothing changed costs.
    public func stampedInputs(_ arguments: [String]) throws(SourceError) -> (inputs: [ManifestInput], stamps: [FileStamp?]) {
        try listed(arguments, stamped: true)
    }

    private func listed(_ arguments: [String], stamped: Bool) throws(SourceError) -> (inputs: [ManifestInput], stamps: [FileStamp?]) {
        var inputs: [ManifestInput] = []
        var stamps: [FileStamp?] = []
        var seen = Set<String>()
        var readStandardInput = false
        for argument in arguments {
            if argument == "-" {
                guard !readStandardInput else { continue }
                readStandardInput = true
                inputs.append(.read(ManifestFile(path: Self.standardInputName, bytes: try standardInputBytes())))
                if stamped { stamps.append(nil) }
                continue
            }
            let found = try expand(argument, stamped: stamped)
            if arguments.count == 1 {
                // One path names each file once: only several can name one twice.
                inputs = found.paths.map { .file($0) }
                stamps = found.stamps
                continue
            }
            for (i, path) in found.paths.enumerated() where seen.insert(path).inserted {
                inputs.append(.file(path))
                if stamped { stamps.append(found.stamps[i]) }
            }
        }
        return (inputs, stamps)
    }

    /// Size, modification and change times in nanoseconds, inode and device: what
    /// changes when a file's content may have. Nil when it is not a regular file.
    static func stamp(_ info: stat) -> FileStamp? {
        guard (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return FileStamp(
            size: Int64(info.st_size),
            mtime: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
            ctime: Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec),
            inode: Int64(bitPattern: UInt64(info.st_ino)), device: Int64(bitPattern: UInt64(info.st_dev)))
    }

    public func read(_ input: ManifestInput) throws(SourceError) -> ManifestFile {
        switch input {
        case .read(let file): file
        case .file(let path): try readFile(path)
        }
    }

    /// The manifest files a path names: itself, or the files below it, in byte order of
    /// their paths; with their stamps when `stamped` (else none).
    private func expand(_ path: String, stamped: Bool) throws(SourceError) -> (paths: [String], stamps: [FileStamp?]) {
        var info = stat()
        guard stat(path, &info) == 0 else { throw SourceError(path: path, reason: Self.errnoText()) }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: break
        case S_IFREG: return ([path], stamped ? [Self.stamp(info)] : [])
        // A FIFO would block the read forever, a device never end: refused by name, as
        // inside directories they are skipped.
        default: throw SourceError(path: path, reason: Self.notRegular(info.st_mode))
        }
        var walk = Walk()
        try walk.directory(path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path, stamped: stamped)
        let order = Self.byteOrder(walk.paths)
        let paths = order.map { walk.paths[$0] }
        guard stamped else { return (paths, []) }
        let stamps = self.stamps(walk)
        return (paths, order.map { stamps[$0] })
    }

    /// What a walk found, in the order it met it: each file's path, the directory it is in
    /// (an index into `directories`) and, for what the directory's entry did not say was a
    /// regular file, the stamp its `stat` gave.
    private struct Walk {
        var paths: [String] = []
        var directories: [String] = []
        var directoryOf: [Int32] = []
        var known: [Int: FileStamp?] = [:]

        mutating func directory(_ directory: String, stamped: Bool) throws(SourceError) {
            guard let handle = opendir(directory) else { throw SourceError(path: directory, reason: FileSystemSource.errnoText()) }
            defer { closedir(handle) }
            let index = Int32(directories.count)
            directories.append(directory)
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name.hasPrefix(".") { continue }
                let path = directory == "/" ? "/" + name : directory + "/" + name
                // The entry's type from the directory itself spares a stat per file; only
                // links and file systems that do not say are asked.
                var type = Int32(entry.pointee.d_type)
                var known: stat?
                if type != Int32(DT_DIR) && type != Int32(DT_REG) {
                    var info = stat()
                    guard stat(path, &info) == 0 else { throw SourceError(path: path, reason: FileSystemSource.errnoText()) }
                    known = info
                    type =
                        switch info.st_mode & S_IFMT {
                        case S_IFDIR: Int32(DT_DIR)
                        case S_IFREG: Int32(DT_REG)
                        default: Int32(DT_UNKNOWN)
                        }
                }
                switch type {
                case Int32(DT_DIR):
                    try self.directory(path, stamped: stamped)
                case Int32(DT_REG) where ManifestParsing.extensions.contains(where: { name.hasSuffix($0) }):
                    if stamped, let known { self.known[paths.count] = FileSystemSource.stamp(known) }
                    paths.append(path)
                    directoryOf.append(index)
                default:
                    continue
                }
            }
        }
    }

    /// The stamps of what `walk` found, in its order: each file's taken relative to its
    /// directory, opened once per run of its files, on every core (in contiguous runs, so
    /// that a thread opens each directory about once). Four runs a core, which the threads
    /// take as they are free (`parallelMap`): one whose core the machine's other work has
    /// taken leaves the rest to the others, where a run a core made the caller wait for it.
    /// A directory is opened by where it is (`location`), since the threads need not
    /// share the caller's working directory.
    private func stamps(_ walk: Walk) -> [FileStamp?] {
        let count = walk.paths.count
        let runs = min(WorkerPool.processorCount * 4, max(1, count / 256))
        let parts = ManifestParsing.parallelMap(runs, minimumPerWorker: 1) { run -> [FileStamp?] in
            let range = (count * run / runs)..<(count * (run + 1) / runs)
            var stamps: [FileStamp?] = []
            stamps.reserveCapacity(range.count)
            // The directory open now, and where its files' names start in their paths.
            var open: (directory: Int32, descriptor: Int32, nameStart: Int) = (-1, -1, 0)
            defer { if open.descriptor >= 0 { close(open.descriptor) } }
            for i in range {
                if !walk.known.isEmpty, let known = walk.known[i] {
                    stamps.append(known)
                    continue
                }
                let directory = walk.directoryOf[i]
                if directory != open.directory {
                    if open.descriptor >= 0 { close(open.descriptor) }
                    let path = walk.directories[Int(directory)]
                    open = (
                        directory, Glibc.open(location(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC), path == "/" ? 1 : path.utf8.count + 1
                    )
                }
                guard open.descriptor >= 0 else {
                    stamps.append(nil)
                    continue
                }
                var info = stat()
                let status = walk.paths[i].withCString { fstatat(open.descriptor, $0 + open.nameStart, &info, 0) }
                stamps.append(status == 0 ? Self.stamp(info) : nil)
            }
            return stamps
        }
        return parts.count == 1 ? parts[0] : Array(parts.joined())
    }

    /// The positions of `paths` in order of their UTF-8 bytes, as `lexicographicallyPrecedes`
    /// would put them, at a fraction of the cost: the bytes laid end to end once and
    /// compared with memcmp, so that no comparison retains a string.
    static func byteOrder(_ paths: [String]) -> [Int] {
        guard paths.count > 1 else { return Array(paths.indices) }
        var bytes: [UInt8] = []
        var offsets = [0]
        offsets.reserveCapacity(paths.count + 1)
        for path in paths {
            bytes += path.utf8
            offsets.append(bytes.count)
        }
        return bytes.withUnsafeBufferPointer { buffer in
            offsets.withUnsafeBufferPointer { offsets in
                Array(paths.indices).sorted { a, b in
                    let (la, lb) = (offsets[a + 1] - offsets[a], offsets[b + 1] - offsets[b])
                    let c = memcmp(buffer.baseAddress! + offsets[a], buffer.baseAddress! + offsets[b], min(la, lb))
                    return c != 0 ? c < 0 : la < lb
                }
            }
        }
    }

    private func readFile(_ path: String) throws(SourceError) -> ManifestFile {
        // Non-blocking, so that a FIFO swapped in after the check cannot block the open;
        // what was opened is checked again.
        let descriptor = open(location(of: path), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard descriptor >= 0 else { throw SourceError(path: path, reason: Self.errnoText()) }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw SourceError(path: path, reason: Self.errnoText()) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw SourceError(path: path, reason: Self.notRegular(info.st_mode)) }
        if Int(info.st_size) > maxFileBytes {
            return ManifestFile(path: path, bytes: [], oversizedBy: Int(info.st_size))
        }
        return ManifestFile(path: path, bytes: try readAll(descriptor: descriptor, path: path, sizeHint: Int(info.st_size)))
    }

    private func standardInputBytes() throws(SourceError) -> [UInt8] {
        let path = Self.standardInputName
        guard let bytes = standardInput else { return try readAll(descriptor: 0, path: path) }
        guard bytes.count <= maxFileBytes else { throw SourceError(path: path, reason: Self.tooLarge(maxFileBytes)) }
        return bytes
    }

    /// Reads to the end, straight into the result: a regular file's size is known, so
    /// one read of exactly that (plus one byte to see the end) usually does it.
    private func readAll(descriptor: Int32, path: String, sizeHint: Int = 64 * 1024) throws(SourceError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(sizeHint, 0) + 1)
        var filled = 0
        while true {
            if filled == bytes.count { bytes.append(contentsOf: repeatElement(0, count: bytes.count)) }
            let count = bytes.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress! + filled, $0.count - filled) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SourceError(path: path, reason: Self.errnoText())
            }
            if count == 0 {
                bytes.removeLast(bytes.count - filled)
                return bytes
            }
            filled += count
            // Standard input has no size to check up front.
            if filled > maxFileBytes {
                throw SourceError(path: path, reason: Self.tooLarge(maxFileBytes))
            }
        }
    }

    private static func tooLarge(_ limit: Int) -> String {
        "larger than the \(limit / (1 << 20)) MiB limit for a manifest file"
    }

    private static func notRegular(_ mode: mode_t) -> String {
        let what =
            switch mode & S_IFMT {
            case S_IFIFO: "a FIFO"
            case S_IFCHR: "a character device"
            case S_IFBLK: "a block device"
            case S_IFSOCK: "a socket"
            default: "not a regular file"
            }
        return "\(what), not a manifest file; name a regular file, a directory, or - for standard input"
    }

    fileprivate static func errnoText() -> String {
        switch errno {
        case ENOENT: "no such file or directory"
        case EACCES: "permission denied"
        default: String(cString: strerror(errno)).lowercased()
        }
    }
}
