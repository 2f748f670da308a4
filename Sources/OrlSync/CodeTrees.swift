import Foundation
public import OrlGit

/// The read-only trees of a git source's commits that its Agents and Tools run code from:
/// `<state>/code/<source>/<commit>`. A tree is written under a temporary name and renamed
/// into place, so it is either absent or whole; the apply that names it is what switches
/// agents to it (one transaction for code and manifests). Trees no apply names any more
/// are removed, but for the one applied before, which processes being replaced may
/// still run from.
public struct CodeTrees: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public func path(of commit: GitObjectID) -> String { directory + "/" + commit.hex }

    /// The commit's tree, written now unless it already is.
    public func materialise(_ commit: GitObjectID, from repository: GitRepository) throws(GitError) -> String {
        let target = path(of: commit)
        let files = FileManager.default
        if files.fileExists(atPath: target) { return target }
        let partial = directory + "/.partial-" + commit.hex
        do {
            try files.createDirectory(atPath: directory, withIntermediateDirectories: true)
            if files.fileExists(atPath: partial) { try Self.remove(partial) }
        } catch {
            throw GitError("cannot prepare \(directory) for the code of \(commit.short): \(error.localizedDescription)")
        }
        try repository.writeTree(of: commit, to: partial)
        Self.setWritable(partial, false)
        guard rename(partial, target) == 0 else {
            throw GitError("cannot move the code of \(commit.short) into \(target): \(String(cString: strerror(errno)))")
        }
        return target
    }

    /// Removes every tree but those of `keeping`; returns the commits removed.
    @discardableResult
    public func collect(keeping: Set<String>) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var removed: [String] = []
        for name in names.sorted() where !keeping.contains(name) {
            if (try? Self.remove(directory + "/" + name)) != nil { removed.append(name) }
        }
        return removed
    }

    /// Directories read-only (so files cannot be added or removed) and files without write
    /// permission; links are left alone (their targets are not the tree's to change).
    static func setWritable(_ root: String, _ writable: Bool) {
        let files = FileManager.default
        var paths = [root]
        if let enumerator = files.enumerator(atPath: root) {
            while let relative = enumerator.nextObject() as? String { paths.append(root + "/" + relative) }
        }
        for path in paths {
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT != S_IFLNK else { continue }
            let isDirectory = info.st_mode & S_IFMT == S_IFDIR
            let executable = isDirectory || info.st_mode & 0o100 != 0
            let mode: mode_t = (writable ? 0o200 : 0) | 0o444 | (executable ? 0o111 : 0)
            chmod(path, mode)
        }
    }

    static func remove(_ path: String) throws {
        setWritable(path, true)
        try FileManager.default.removeItem(atPath: path)
    }
}
