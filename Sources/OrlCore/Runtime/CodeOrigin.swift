import Crypto

/// Where an Agent's or a command Tool's code comes from: the directory relative paths in
/// its runtime resolve against. For `orlctl apply -f`, the git work tree holding the
/// manifests (else the directory given); for a git source, the read-only tree of the
/// applied commit that orl materialises under the state directory. The code travels with
/// the manifests: one commit, one apply, one switch.
public struct CodeOrigin: Sendable, Hashable {
    /// The directory, absolute.
    public var root: String
    /// The apply source the resource came from (`files:...`, `git:NAME`).
    public var source: String
    /// The commit, for a git source.
    public var revision: String?

    public init(root: String, source: String, revision: String?) {
        self.root = root
        self.source = source
        self.revision = revision
    }

    /// Whether the resource runs a program from its source: an Agent, a command Tool,
    /// a stdio MCP server.
    public static func hasCode(_ resource: Resource) -> Bool {
        resource.kind == .agent || resource.tool?.command != nil || resource.tool?.mcp?.command != nil
    }

    /// What a git source's code is, for one commit: SHA-256 over the path and blob of each
    /// file but the manifests the source reads (`isManifest`). A commit that changes only
    /// manifests has the code of the one before, so its agents are not restarted for
    /// code; one that changes anything else gets a tree, and a restart, of its own.
    public static func identity(of files: [(path: String, blob: String)], isManifest: (String) -> Bool) -> String {
        var bytes: [UInt8] = []
        for file in files where !isManifest(file.path) {
            bytes += Array(file.path.utf8) + [0] + Array(file.blob.utf8) + [10]
        }
        return SHA256.hash(data: bytes).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// The origin the store records for the resource, if any.
    public init?(_ stored: StoredResource) {
        guard let root = stored.codeRoot else { return nil }
        self.init(root: root, source: stored.source, revision: stored.revision)
    }

    /// A program and its arguments with the paths that name the source's files made
    /// absolute: a `command` with a slash in it (`bin/agent`, `./run.sh`; a bare name is
    /// looked up in PATH as always), and each argument that is a relative path to a file
    /// or directory `exists` finds in the source (`agent.py`, `examples/agents/agent.py`).
    /// Other arguments (flags, words, paths that are not in the source) stay as written.
    public func resolve(command: String, arguments: [String], exists: (String) -> Bool) -> (command: String, arguments: [String]) {
        let command = !command.hasPrefix("/") && command.contains("/") ? join(command) : command
        let arguments = arguments.map { argument in
            guard Self.isRelativePath(argument), exists(join(argument)) else { return argument }
            return join(argument)
        }
        return (command, arguments)
    }

    static func isRelativePath(_ argument: String) -> Bool {
        !argument.isEmpty && !argument.hasPrefix("/") && !argument.hasPrefix("-") && !argument.hasPrefix("~")
            && !argument.contains("://") && !argument.contains("=") && !argument.contains("\n")
    }

    func join(_ relative: String) -> String {
        var path = relative
        while path.hasPrefix("./") { path.removeFirst(2) }
        return root.hasSuffix("/") ? root + path : root + "/" + path
    }
}
