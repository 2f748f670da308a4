public import OrlCore
import OrlJSON
import OrlRuntime
public import OrlYAML
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A manifest file's name (as the user will see it) and contents, from wherever it was
/// read: a directory, standard input, or a blob of a git tree.
public struct ManifestFile: Sendable {
    public var path: String
    public var bytes: [UInt8]
    /// Set instead of `bytes` when the file is over the size limit: it is reported, not read.
    public var oversizedBy: Int?

    public init(path: String, bytes: [UInt8], oversizedBy: Int? = nil) {
        self.path = path
        self.bytes = bytes
        self.oversizedBy = oversizedBy
    }
}

/// The reading half of the apply pipeline, the same whatever the files come from:
/// each file parsed (YAML) and its documents read into resources, on every core. What
/// needs the whole set (`ManifestValidation`: duplicates, references, DAGs, the audit),
/// then the plan and the apply, come after, in the core.
public struct ManifestParsing: Sendable {
    public var parser = YAMLParser()
    public var reader = ManifestReader()

    public init() {}

    /// The manifest file extensions, for a directory walk or a git tree.
    public static let extensions = [".yaml", ".yml", ".json"]

    public var maxFileBytes: Int { parser.limits.maxFileBytes }

    /// One file's resources and problems.
    public func read(_ file: ManifestFile) -> ReadManifests {
        if let size = file.oversizedBy {
            let limit = parser.limits.maxFileBytes
            var read = ReadManifests(diagnostics: [
                .error(
                    .yamlLimit, "file is \(size) bytes, over the \(limit) byte limit for a manifest file; split it into several files",
                    at: .file(file.path))
            ])
            read.unidentified = 1
            return read
        }
        if McpLock.isLockFile(file.path) {
            do {
                return ReadManifests(mcpLocks: [try JSONParser.parse(bytes: file.bytes, file: file.path)])
            } catch {
                return ReadManifests(diagnostics: [
                    .error(.mcpPinInvalid, "\(McpLock.fileName) is not JSON: \(error.message)", at: error.location)
                ])
            }
        }
        return reader.read(parser.parse(file.bytes, file: file.path))
    }

    /// `body(i)` for every `i` in `0..<count`, on every core (the caller's and the
    /// `WorkerPool`'s), the results in index order, so that "first defined here" always
    /// means first in path order. Blocks until all are done; small inputs run on the
    /// caller's thread.
    ///
    /// Each thread takes the next index not yet taken, so the threads finish together
    /// however their shares of the machine differ: the pool's threads run at a lower
    /// priority, and with fixed shares (every `workers`th index) the caller, done with its
    /// own, waited for theirs while the machine's other work had their core.
    public static func parallelMap<T: Sendable>(_ count: Int, minimumPerWorker: Int = 16, _ body: @Sendable (Int) -> T) -> [T] {
        let workers = min(WorkerPool.processorCount, max(1, count / max(1, minimumPerWorker)))
        if workers == 1 { return (0..<count).map(body) }
        let parts = Mutex<[[(Int, T)]]>([])
        let next = NextIndex()
        withoutActuallyEscaping(body) { body in
            let work = { @Sendable in
                var part: [(Int, T)] = []
                while true {
                    let index = next.take()
                    guard index < count else { break }
                    part.append((index, body(index)))
                }
                parts.withLock { $0.append(part) }
            }
            WorkerPool.shared.run({ work() }, beside: (1..<workers).map { _ in { work() } })
        }
        var slots = [T?](repeating: nil, count: count)
        for part in parts.withLock({ $0 }) {
            for (index, value) in part { slots[index] = value }
        }
        return slots.map { $0! }
    }
}

/// The next index of a `parallelMap` for whichever thread asks first.
private final class NextIndex: Sendable {
    private let value = Atomic<Int>(0)

    func take() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}

extension Fork {
    /// `other` on a thread of the `WorkerPool` beside the caller's (which waits for it at
    /// the end, as `parallelMap`'s callers wait for their workers): a one-shot command's
    /// second core, while the first does what must stay on one thread.
    public static let beside = Fork { other, here in
        withoutActuallyEscaping(other) { other in WorkerPool.shared.run(here, beside: [other]) }
    }
}
