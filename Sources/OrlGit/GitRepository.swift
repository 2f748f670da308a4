import CGit2
import Glibc

/// A git object id (SHA-1), as 40 hex digits.
public struct GitObjectID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let hex: String

    /// Nil unless `hex` is 40 hex digits.
    public init?(hex: String) {
        guard hex.utf8.count == 40, hex.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else { return nil }
        self.hex = hex
    }

    init(_ oid: git_oid) {
        // Written straight into the string: a tree walk makes one per file.
        var raw = oid.id
        hex = withUnsafeBytes(of: &raw) { bytes in
            String(unsafeUninitializedCapacity: 40) { out in
                let digits: StaticString = "0123456789abcdef"
                let table = digits.utf8Start
                for (i, byte) in bytes.prefix(20).enumerated() {
                    out[2 * i] = table[Int(byte >> 4)]
                    out[2 * i + 1] = table[Int(byte & 15)]
                }
                return 40
            }
        }
    }

    var oid: git_oid {
        var oid = git_oid()
        _ = git_oid_fromstrn(&oid, hex, hex.utf8.count)
        return oid
    }

    /// The first 7 digits, as `git log --oneline` shows a commit.
    public var short: String { String(hex.prefix(7)) }
    public var description: String { hex }
    public static func < (lhs: GitObjectID, rhs: GitObjectID) -> Bool { lhs.hex < rhs.hex }
}

/// What git could not do, with libgit2's own explanation.
public struct GitError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Credentials for a remote: none for local paths and `file://`; a key file for SSH; a
/// token for HTTPS (sent as the password, with `x-access-token` as the user unless the
/// URL or `username` names one).
public struct GitAuth: Sendable, Hashable {
    public var username: String?
    public var sshPrivateKey: String?
    public var sshPublicKey: String?
    public var sshPassphrase: String?
    public var token: String?

    public init(
        username: String? = nil, sshPrivateKey: String? = nil, sshPublicKey: String? = nil, sshPassphrase: String? = nil,
        token: String? = nil
    ) {
        self.username = username
        self.sshPrivateKey = sshPrivateKey
        self.sshPublicKey = sshPublicKey
        self.sshPassphrase = sshPassphrase
        self.token = token
    }

    public static let none = GitAuth()
}

/// A file of a commit's tree: its path from the repository's root, and its blob.
public struct GitTreeFile: Sendable, Hashable {
    public var path: String
    public var blob: GitObjectID
}

/// A ref as the remote advertises it.
public struct GitRemoteRef: Sendable, Hashable {
    /// `refs/heads/main`.
    public var name: String
    /// The commit (for an annotated tag, the commit it points at).
    public var commit: GitObjectID
}

/// One libgit2 repository. libgit2 objects must not be used from two threads at once:
/// a `GitRepository` is used by one thread at a time (its owner confines it, e.g. to
/// a serial queue). Every call blocks; fetches and remote calls block on the network.
public final class GitRepository {
    private let handle: OpaquePointer
    public let path: String

    /// Why libgit2 cannot be used in this process, or nil once it is loaded and initialised.
    private static let unavailable: String? = orl_git_load().map { String(cString: $0) }

    private static func loadLibrary() throws(GitError) {
        if let unavailable { throw GitError(unavailable) }
    }

    /// Loads and initialises libgit2 on a thread of its own, for a process about to open
    /// a repository (`sync`, `watch`): the dynamic loader binds its fifteen libraries and
    /// libgit2 reads the system's certificates (a third of its start) while the process
    /// parses its arguments and opens the state. The first repository opened waits for it.
    public static func loadInBackground() {
        var thread = pthread_t()
        let started = pthread_create(
            &thread, nil,
            { _ in
                _ = orl_git_load()
                return nil
            }, nil)
        if started == 0 { pthread_detach(thread) }
    }

    /// Whether the library at `soname` could serve as libgit2 here (it loads and has every
    /// function orl calls): nil if so, else why not. Nothing is left loaded.
    public static func checkLibrary(_ soname: String) -> String? {
        guard let message = orl_git_check(soname) else { return nil }
        defer { free(message) }
        return String(cString: message)
    }

    /// The library this process loads for git.
    public static let librarySoname = String(cString: orl_git_soname())

    private init(_ handle: OpaquePointer, path: String) {
        self.handle = handle
        self.path = path
    }

    deinit { git_repository_free(handle) }

    /// Opens the bare mirror at `path`, creating it (and its parent directories) when
    /// missing. Owner validation is off for the open: the mirror is orl's own, in the
    /// state directory, which a service user may have created for another.
    public static func mirror(at path: String) throws(GitError) -> GitRepository {
        try loadLibrary()
        _ = orl_git_set_owner_validation(0)
        defer { _ = orl_git_set_owner_validation(1) }
        var repository: OpaquePointer?
        if git_repository_open_bare(&repository, path) == 0, let repository {
            return GitRepository(repository, path: path)
        }
        try check(git_repository_init(&repository, path, 1), "cannot create the git mirror \(path)")
        return GitRepository(repository!, path: path)
    }

    /// Opens the repository that holds `path` (its work tree, a directory in it, or its
    /// `.git`; a bare repository too), with owner validation on: it is the user's.
    public static func open(_ path: String) throws(GitError) -> GitRepository {
        try loadLibrary()
        var repository: OpaquePointer?
        try check(git_repository_open_ext(&repository, path, 0, nil), "cannot open the git repository \(path)")
        return GitRepository(repository!, path: path)
    }

    // MARK: Remotes

    /// The commit the remote's ref points at, asked of the remote in one round trip (as
    /// `git ls-remote`); nothing is downloaded. `ref` is a branch (`main`), a tag, a full
    /// ref name (`refs/heads/main`), or nil for the remote's default branch (its HEAD).
    public func remoteRef(url: String, ref: String?, auth: GitAuth) throws(GitError) -> GitRemoteRef {
        try Self.checkLocalPath(url)
        let remote = try anonymousRemote(url)
        defer { git_remote_free(remote) }
        let advertised: [(name: String, oid: GitObjectID, symref: String?)] = try Self.withCredentials(auth) {
            (callbacks: inout git_remote_callbacks) throws(GitError) in
            try Self.check(git_remote_connect(remote, GIT_DIRECTION_FETCH, &callbacks, nil, nil), "cannot reach \(url)")
            defer { git_remote_disconnect(remote) }
            var heads: UnsafeMutablePointer<UnsafePointer<git_remote_head>?>?
            var count = 0
            try Self.check(git_remote_ls(&heads, &count, remote), "cannot list the refs of \(url)")
            var advertised: [(name: String, oid: GitObjectID, symref: String?)] = []
            for i in 0..<count {
                guard let head = heads?[i]?.pointee else { continue }
                advertised.append((String(cString: head.name), GitObjectID(head.oid), head.symref_target.map { String(cString: $0) }))
            }
            return advertised
        }
        let wanted: [String]
        if let ref {
            wanted = ref.hasPrefix("refs/") ? [ref] : ["refs/heads/\(ref)", "refs/tags/\(ref)"]
        } else if let head = advertised.first(where: { $0.name == "HEAD" }) {
            // The default branch, by name when the remote says which it is, so that
            // the mirror fetches a branch rather than a detached HEAD.
            if let target = head.symref { return GitRemoteRef(name: target, commit: head.oid) }
            return GitRemoteRef(name: "HEAD", commit: head.oid)
        } else {
            throw GitError("\(url) has no HEAD (an empty repository?); name a branch with --ref")
        }
        for name in wanted {
            // An annotated tag is advertised twice; `^{}` is the commit it tags.
            if let peeled = advertised.first(where: { $0.name == name + "^{}" }) { return GitRemoteRef(name: name, commit: peeled.oid) }
            if let found = advertised.first(where: { $0.name == name }) { return GitRemoteRef(name: name, commit: found.oid) }
        }
        let branches = advertised.map(\.name).filter { $0.hasPrefix("refs/heads/") }.map { String($0.dropFirst(11)) }
        let known = branches.isEmpty ? "it has no branches" : "its branches: \(branches.prefix(10).joined(separator: ", "))"
        throw GitError("\(url) has no ref \"\(ref ?? "HEAD")\"; \(known)")
    }

    /// Fetches the remote's `ref` into the same ref of this (bare mirror) repository
    /// and returns the commit it now points at. Objects already here are not fetched
    /// again; tags are not fetched.
    @discardableResult
    public func fetch(url: String, ref: String, auth: GitAuth) throws(GitError) -> GitObjectID {
        let remote = try anonymousRemote(url)
        defer { git_remote_free(remote) }
        let local = ref == "HEAD" ? "refs/orl/HEAD" : ref
        try Self.withCredentials(auth) { (callbacks: inout git_remote_callbacks) throws(GitError) in
            var options = git_fetch_options()
            git_fetch_options_init(&options, UInt32(GIT_FETCH_OPTIONS_VERSION))
            options.callbacks = callbacks
            options.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE
            options.update_fetchhead = 0
            let refspec = strdup("+\(ref):\(local)")
            defer { free(refspec) }
            var strings: [UnsafeMutablePointer<CChar>?] = [refspec]
            try strings.withUnsafeMutableBufferPointer { buffer throws(GitError) in
                var specs = git_strarray(strings: buffer.baseAddress, count: 1)
                try Self.check(git_remote_fetch(remote, &specs, &options, "orl fetch"), "cannot fetch \(ref) from \(url)")
            }
        }
        var oid = git_oid()
        try Self.check(git_reference_name_to_id(&oid, handle, local), "the fetch of \(ref) from \(url) left no \(local)")
        return GitObjectID(oid)
    }

    /// The file system path of a local remote (`/srv/git/fleet.git`, `../fleet`,
    /// `file:///srv/git/fleet.git`); nil for `https://`, `ssh://` and `user@host:path`.
    static func localPath(of url: String) -> String? {
        if url.hasPrefix("file://") { return String(url.dropFirst("file://".count)) }
        if url.contains("://") { return nil }
        if let colon = url.firstIndex(of: ":"), !url[..<colon].contains("/") { return nil }
        return url
    }

    /// A local remote that does not exist, said plainly: libgit2 would call a missing
    /// path an "unsupported URL protocol".
    private static func checkLocalPath(_ url: String) throws(GitError) {
        guard let path = localPath(of: url), access(path, F_OK) != 0 else { return }
        throw GitError("cannot reach \(url): no such directory")
    }

    private func anonymousRemote(_ url: String) throws(GitError) -> OpaquePointer {
        var remote: OpaquePointer?
        try Self.check(git_remote_create_anonymous(&remote, handle, url), "\(url) is not a git remote")
        return remote!
    }

    /// Runs `body` with remote callbacks that offer `auth`; the C strings they point at
    /// live until it returns.
    private static func withCredentials<T>(
        _ auth: GitAuth, _ body: (inout git_remote_callbacks) throws(GitError) -> T
    ) throws(GitError) -> T {
        let strings = [auth.username, auth.sshPrivateKey, auth.sshPublicKey, auth.sshPassphrase, auth.token].map { $0.map { strdup($0) } }
        defer { for s in strings { free(s ?? nil) } }
        let payload = UnsafeMutablePointer<orl_git_auth>.allocate(capacity: 1)
        defer { payload.deallocate() }
        payload.initialize(
            to: orl_git_auth(
                username: strings[0].map { UnsafePointer($0!) }, ssh_private_key: strings[1].map { UnsafePointer($0!) },
                ssh_public_key: strings[2].map { UnsafePointer($0!) }, ssh_passphrase: strings[3].map { UnsafePointer($0!) },
                token: strings[4].map { UnsafePointer($0!) }, key_attempts: 0, token_attempts: 0))
        var callbacks = git_remote_callbacks()
        git_remote_init_callbacks(&callbacks, UInt32(GIT_REMOTE_CALLBACKS_VERSION))
        callbacks.credentials = orl_git_credentials
        callbacks.payload = UnsafeMutableRawPointer(payload)
        return try body(&callbacks)
    }

    // MARK: Objects

    /// The commit `revision` names (`main`, `HEAD~2`, a hex id, `origin/main`), peeled
    /// from a tag when it names one.
    public func resolve(_ revision: String) throws(GitError) -> GitObjectID {
        var object: OpaquePointer?
        try Self.check(git_revparse_single(&object, handle, revision), "\(path) has no revision \"\(revision)\"")
        defer { git_object_free(object) }
        var commit: OpaquePointer?
        try Self.check(git_object_peel(&commit, object, GIT_OBJECT_COMMIT), "\"\(revision)\" is not a commit")
        defer { git_object_free(commit) }
        return GitObjectID(git_object_id(commit).pointee)
    }

    /// Whether the commit is here (fetched before).
    public func hasCommit(_ id: GitObjectID) -> Bool {
        var oid = id.oid
        var commit: OpaquePointer?
        guard git_commit_lookup(&commit, handle, &oid) == 0 else {
            git_error_clear()
            return false
        }
        git_commit_free(commit)
        return true
    }

    /// Whether `commit` has `ancestor` in its history (a commit does not descend from
    /// itself). Both must be here.
    /// The best common ancestor of two commits (`git merge-base A B`); nil when they
    /// share no history.
    public func mergeBase(_ a: GitObjectID, _ b: GitObjectID) throws(GitError) -> GitObjectID? {
        var x = a.oid
        var y = b.oid
        var out = git_oid()
        let result = git_merge_base(&out, handle, &x, &y)
        if result == GIT_ENOTFOUND.rawValue {
            git_error_clear()
            return nil
        }
        try Self.check(result, "cannot find the merge base of \(a.short) and \(b.short)")
        return GitObjectID(out)
    }

    public func isDescendant(_ commit: GitObjectID, of ancestor: GitObjectID) throws(GitError) -> Bool {
        var a = commit.oid
        var b = ancestor.oid
        let result = git_graph_descendant_of(handle, &a, &b)
        try Self.check(result, "cannot tell whether \(commit.short) descends from \(ancestor.short)")
        return result == 1
    }

    /// The files of the commit's tree under `directory` (the whole tree when nil or
    /// empty) whose names end with one of `extensions`, in byte order of their paths,
    /// skipping hidden entries (names starting with `.`) and symbolic links, as a
    /// directory walk of a checkout would. Only tree objects are read.
    /// With `missingIsEmpty`, a directory the commit does not have holds no files (a
    /// review of the first pull request, or of one that deletes the fleet); otherwise it
    /// is an error (a sync of a mistyped path). `excluding`: files under that directory
    /// (the whole tree when nil or empty) whose names end with one of its extensions are
    /// left out as the walk meets them (a git source's code beside its manifests: ten
    /// thousand manifests are not made into paths only to be dropped).
    public func files(
        of commit: GitObjectID, under directory: String?, extensions: [String], missingIsEmpty: Bool = false,
        excluding excluded: (directory: String?, extensions: [String])? = nil
    ) throws(GitError) -> [GitTreeFile] {
        let filter = Filter(
            extensions: extensions, excludedUnder: excluded.map { Self.relative($0.directory).map { $0 + "/" } ?? "" },
            excludedExtensions: excluded?.extensions.map { Array($0.utf8) } ?? [])
        var oid = commit.oid
        var commitObject: OpaquePointer?
        try Self.check(git_commit_lookup(&commitObject, handle, &oid), "cannot read commit \(commit.short)")
        defer { git_commit_free(commitObject) }
        var root: OpaquePointer?
        try Self.check(git_commit_tree(&root, commitObject), "cannot read the tree of commit \(commit.short)")
        defer { git_tree_free(root) }
        var files: [GitTreeFile] = []
        guard let prefix = Self.relative(directory) else {
            try walk(root!, prefix: "", filter: filter, into: &files)
            return Self.ordered(files)
        }
        do {
            var entry: OpaquePointer?
            guard git_tree_entry_bypath(&entry, root, prefix) == 0 else {
                git_error_clear()
                if missingIsEmpty { return [] }
                throw GitError("commit \(commit.short) has no directory \(prefix)")
            }
            defer { git_tree_entry_free(entry) }
            guard git_tree_entry_type(entry) == GIT_OBJECT_TREE else {
                throw GitError("\(prefix) is not a directory in commit \(commit.short)")
            }
            var tree: OpaquePointer?
            try Self.check(git_tree_lookup(&tree, handle, git_tree_entry_id(entry)), "cannot read \(prefix) in commit \(commit.short)")
            defer { git_tree_free(tree) }
            try walk(tree!, prefix: prefix + "/", filter: filter, into: &files)
        }
        return Self.ordered(files)
    }

    /// A directory of the tree as a path from its top, without slashes around it; nil for
    /// the top itself (nil, empty, "/" or ".").
    private static func relative(_ directory: String?) -> String? {
        var prefix = directory.map { String($0.drop(while: { $0 == "/" })) } ?? ""
        while prefix.hasPrefix("./") { prefix.removeFirst(2) }
        while prefix.hasSuffix("/") { prefix.removeLast() }
        return prefix.isEmpty || prefix == "." ? nil : prefix
    }

    /// git keeps a tree's entries in the order of their names, a directory's name as if
    /// it ended in "/": the walk yields paths in byte order already, unless the tree was
    /// written by something other than git.
    private static func ordered(_ files: [GitTreeFile]) -> [GitTreeFile] {
        let ordered = zip(files, files.dropFirst()).allSatisfy { precedes($0.path, $1.path) }
        return ordered ? files : files.sorted { precedes($0.path, $1.path) }
    }

    /// Byte order of two paths.
    public static func precedes(_ a: String, _ b: String) -> Bool {
        var a = a
        var b = b
        return a.withUTF8 { x in
            b.withUTF8 { y in
                let common = min(x.count, y.count)
                let order = common == 0 ? 0 : memcmp(x.baseAddress!, y.baseAddress!, common)
                return order != 0 ? order < 0 : x.count < y.count
            }
        }
    }

    /// What a walk found under one directory (a subtree at a prefix, with a filter): a
    /// subtree git stores under the same id holds the same files, so the next walk takes
    /// them from here rather than reading the subtree again. Keyed by the subtree's id
    /// and prefix; kept while one of the last two walks with the filter used it (a review
    /// alternates two revisions), with the directories under it.
    private struct Listing: Hashable {
        var tree: GitObjectID
        var prefix: String
    }
    private struct Listed {
        var files: [GitTreeFile]
        /// The directories right under it, for a later walk that reads it again because
        /// one of them changed.
        var children: [Listing]
    }
    private typealias Listings = (current: [Listing: Listed], previous: [Listing: Listed])
    private var listings: [Filter: Listings] = [:]

    /// Which files a walk lists: names ending with one of `extensions`, but those under
    /// `excludedUnder` (a prefix ending in "/", or "" for the whole tree) whose names end
    /// with one of `excludedExtensions`.
    private struct Filter: Hashable {
        var extensions: [String]
        var excludedUnder: String?
        var excludedExtensions: [[UInt8]]

        /// Whether a file named `name` (`length` bytes) in a directory where `excluding`
        /// holds is left out, read from libgit2's bytes: no string is made of a name that
        /// ends with an extension's bytes, a dot first, after an ASCII byte (the string's
        /// `hasSuffix`, which compares characters, then agrees: no character joins an
        /// ASCII one and a dot). Other names that end with those bytes are asked as strings.
        func excludes(_ name: UnsafePointer<CChar>, length: Int, excluding: Bool) -> Bool {
            guard excluding else { return false }
            var other = false
            for suffix in excludedExtensions where suffix.count <= length {
                guard memcmp(name + (length - suffix.count), suffix, suffix.count) == 0 else { continue }
                if suffix.first == UInt8(ascii: "."), suffix.count < length, UInt8(bitPattern: name[length - suffix.count - 1]) < 0x80 {
                    return true
                }
                other = true
            }
            guard other else { return false }
            let text = String(cString: name)
            return excludedExtensions.contains { text.hasSuffix(String(decoding: $0, as: UTF8.self)) }
        }
    }

    private func walk(_ tree: OpaquePointer, prefix: String, filter: Filter, into files: inout [GitTreeFile]) throws(GitError) {
        var cache = listings[filter] ?? ([:], [:])
        var used: [Listing: Listed] = [:]
        let top = Listing(tree: GitObjectID(git_tree_id(tree).pointee), prefix: prefix)
        if !Self.reuse(top, cache, into: &files, used: &used) {
            let start = files.count
            let children = try walk(tree, prefix: prefix, filter: filter, into: &files, cache: cache, used: &used)
            used[top] = Listed(files: Array(files[start...]), children: children)
        }
        cache.previous = cache.current
        cache.current = used
        listings[filter] = cache
    }

    /// Appends what an earlier walk found under `key`, and keeps it and the directories
    /// under it for the next walks; false when no walk kept it.
    private static func reuse(_ key: Listing, _ cache: Listings, into files: inout [GitTreeFile], used: inout [Listing: Listed]) -> Bool {
        guard let known = cache.current[key] ?? cache.previous[key] else { return false }
        files += known.files
        func keep(_ key: Listing, _ listed: Listed) {
            used[key] = listed
            for child in listed.children where used[child] == nil {
                if let below = cache.current[child] ?? cache.previous[child] { keep(child, below) }
            }
        }
        keep(key, known)
        return true
    }

    /// Walks `tree`, taking unchanged subtrees from `cache`; returns the directories
    /// right under it.
    private func walk(
        _ tree: OpaquePointer, prefix: String, filter: Filter, into files: inout [GitTreeFile], cache: Listings,
        used: inout [Listing: Listed]
    ) throws(GitError) -> [Listing] {
        var children: [Listing] = []
        let excluding = filter.excludedUnder.map { prefix.hasPrefix($0) } ?? false
        for i in 0..<git_tree_entrycount(tree) {
            guard let entry = git_tree_entry_byindex(tree, i), let bytes = git_tree_entry_name(entry) else { continue }
            if bytes.pointee == CChar(UInt8(ascii: ".")) { continue }
            let type = git_tree_entry_type(entry)
            if type == GIT_OBJECT_BLOB, filter.excludes(bytes, length: strlen(bytes), excluding: excluding) { continue }
            let name = String(cString: bytes)
            let id = git_tree_entry_id(entry)!
            switch type {
            case GIT_OBJECT_TREE:
                let key = Listing(tree: GitObjectID(id.pointee), prefix: prefix + name + "/")
                children.append(key)
                if Self.reuse(key, cache, into: &files, used: &used) { continue }
                var subtree: OpaquePointer?
                try Self.check(git_tree_lookup(&subtree, handle, id), "cannot read the directory \(prefix)\(name)")
                defer { git_tree_free(subtree) }
                let start = files.count
                let below = try walk(subtree!, prefix: key.prefix, filter: filter, into: &files, cache: cache, used: &used)
                used[key] = Listed(files: Array(files[start...]), children: below)
            case GIT_OBJECT_BLOB where git_tree_entry_filemode(entry) != GIT_FILEMODE_LINK:
                if filter.extensions.contains(where: { name.hasSuffix($0) }) {
                    files.append(GitTreeFile(path: prefix + name, blob: GitObjectID(id.pointee)))
                }
            default:
                continue
            }
        }
        return children
    }

    /// Writes the commit's whole tree into `directory`, which must not exist: files with
    /// their modes (executable or not), symbolic links as links, submodules left out.
    /// `including`: whether a file (its path from the tree's top) is written; directories
    /// are made whether or not any of their files are.
    public func writeTree(
        of commit: GitObjectID, to directory: String, including: (String) -> Bool = { _ in true }
    ) throws(GitError) {
        var oid = commit.oid
        var commitObject: OpaquePointer?
        try Self.check(git_commit_lookup(&commitObject, handle, &oid), "cannot read commit \(commit.short)")
        defer { git_commit_free(commitObject) }
        var root: OpaquePointer?
        try Self.check(git_commit_tree(&root, commitObject), "cannot read the tree of commit \(commit.short)")
        defer { git_tree_free(root) }
        try writeEntries(root!, at: directory, relative: "", commit: commit, including: including)
    }

    private func writeEntries(
        _ tree: OpaquePointer, at directory: String, relative: String, commit: GitObjectID, including: (String) -> Bool
    ) throws(GitError) {
        guard mkdir(directory, 0o755) == 0 else {
            throw GitError("cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        for i in 0..<git_tree_entrycount(tree) {
            guard let entry = git_tree_entry_byindex(tree, i) else { continue }
            let name = String(cString: git_tree_entry_name(entry))
            // git refuses these names too; a crafted tree must not write outside `directory`.
            guard !name.isEmpty, name != ".", name != "..", name != ".git", !name.contains("/") else { continue }
            let path = directory + "/" + name
            let id = git_tree_entry_id(entry)!
            switch git_tree_entry_type(entry) {
            case GIT_OBJECT_TREE:
                var subtree: OpaquePointer?
                try Self.check(git_tree_lookup(&subtree, handle, id), "cannot read the directory \(name) of commit \(commit.short)")
                defer { git_tree_free(subtree) }
                try writeEntries(subtree!, at: path, relative: relative + name + "/", commit: commit, including: including)
            case GIT_OBJECT_BLOB:
                guard including(relative + name) else { continue }
                let (bytes, _) = try blob(GitObjectID(id.pointee), maxBytes: .max)
                let mode = git_tree_entry_filemode(entry)
                if mode == GIT_FILEMODE_LINK {
                    guard symlink(String(decoding: bytes, as: UTF8.self), path) == 0 else {
                        throw GitError("cannot create the link \(path): \(String(cString: strerror(errno)))")
                    }
                    continue
                }
                let fd = createFile(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0o755 : 0o644)
                guard fd >= 0 else { throw GitError("cannot create \(path): \(String(cString: strerror(errno)))") }
                defer { close(fd) }
                var written = 0
                while written < bytes.count {
                    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
                    guard n > 0 else { throw GitError("cannot write \(path): \(String(cString: strerror(errno)))") }
                    written += n
                }
            default:
                continue
            }
        }
    }

    /// A blob's bytes; when it is larger than `maxBytes`, only its size.
    public func blob(_ id: GitObjectID, maxBytes: Int) throws(GitError) -> (bytes: [UInt8], oversizedBy: Int?) {
        var oid = id.oid
        var blob: OpaquePointer?
        try Self.check(git_blob_lookup(&blob, handle, &oid), "cannot read blob \(id.short)")
        defer { git_blob_free(blob) }
        let size = Int(git_blob_rawsize(blob))
        if size > maxBytes { return ([], size) }
        guard size > 0, let content = git_blob_rawcontent(blob) else { return ([], nil) }
        return (Array(UnsafeRawBufferPointer(start: content, count: size)), nil)
    }

    // MARK: Errors

    private static func check(_ code: Int32, _ what: @autoclosure () -> String) throws(GitError) {
        guard code < 0 else { return }
        var detail = "libgit2 error \(code)"
        if let last = git_error_last(), let message = last.pointee.message {
            detail = String(cString: message)
        }
        git_error_clear()
        throw GitError("\(what()): \(detail)")
    }
}

/// `open(2)`, which `GitRepository.open(_:)` hides inside that type.
private func createFile(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 { open(path, flags, mode) }
