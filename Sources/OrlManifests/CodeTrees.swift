import Foundation
import OrlCore
public import OrlGit

/// The read-only trees of a git source's commits that its Agents and Tools run code from:
/// `<state>/code/<source>/<code identity>` (see `CodeOrigin.identity`: commits that
/// change only manifests share a tree). A tree is written under a temporary name and renamed
/// into place, so it is either absent or whole; the apply that names it is what switches
/// agents to it (one transaction for code and manifests). Trees no apply names any more
/// are removed, but for the one applied before, which processes being replaced may
/// still run from.
public struct CodeTrees: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// The commit's tree, written now unless a tree of the same code already is.
    public func materialise(
        _ commit: GitObjectID, manifestsUnder path: String?, from repository: GitRepository
    ) throws(GitError) -> String {
        var prefix = path.map { String($0.drop(while: { $0 == "/" })) } ?? ""
        while prefix.hasPrefix("./") { prefix.removeFirst(2) }
        while prefix.hasSuffix("/") { prefix.removeLast() }
        if prefix == "." { prefix = "" }
        if !prefix.isEmpty { prefix += "/" }
        // The manifests are left out as the tree is walked: only the code is named.
        let files = try repository.files(of: commit, under: nil, extensions: [""], excluding: (path, ManifestParsing.extensions))
        let isManifest = { (file: String) in file.hasPrefix(prefix) && ManifestParsing.extensions.contains(where: { file.hasSuffix($0) }) }
        let identity = CodeOrigin.identity(of: files.map { ($0.path, $0.blob.hex) }, isManifest: isManifest)
        return try materialise(commit, as: String(identity.prefix(32)), from: repository, including: { !isManifest($0) })
    }

    /// A tree holds what its name stands for, the code: the source's manifests are not
    /// written (commits that change only them share the tree, so copies there would be
    /// some earlier commit's; and a monorepo's first sync wrote every manifest again).
    private func materialise(
        _ commit: GitObjectID, as name: String, from repository: GitRepository, including: (String) -> Bool
    ) throws(GitError) -> String {
        let target = directory + "/" + name
        let files = FileManager.default
        if files.fileExists(atPath: target) { return target }
        let partial = directory + "/.partial-" + name
        do {
            try files.createDirectory(atPath: directory, withIntermediateDirectories: true)
            if files.fileExists(atPath: partial) { try Self.remove(partial) }
        } catch {
            throw GitError("cannot prepare \(directory) for the code of \(commit.short): \(error.localizedDescription)")
        }
        try repository.writeTree(of: commit, to: partial, including: including)
        Self.setWritable(partial, false)
        guard rename(partial, target) == 0 else {
            throw GitError("cannot move the code of \(commit.short) into \(target): \(String(cString: strerror(errno)))")
        }
        return target
    }

    /// Removes every tree but `current` and the newest other one (processes being
    /// replaced may still run from it); returns the trees removed.
    @discardableResult
    public func collect(current: String) -> [String] {
        let files = FileManager.default
        let names = ((try? files.contentsOfDirectory(atPath: directory)) ?? []).filter { directory + "/" + $0 != current }
        func modified(_ name: String) -> Double {
            ((try? files.attributesOfItem(atPath: directory + "/" + name)[.modificationDate]) as? Date)?.timeIntervalSince1970 ?? 0
        }
        let newest = names.filter { !$0.hasPrefix(".") }.max { modified($0) < modified($1) }
        var removed: [String] = []
        for name in names.sorted() where name != newest {
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
