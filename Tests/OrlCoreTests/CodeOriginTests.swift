import OrlCore
import OrlJSON
import Testing

/// Where an agent's relative paths resolve, and what a new code revision does to its launch.
@Suite struct CodeOriginTests {
    let origin = CodeOrigin(root: "/state/code/app/abc", source: "git:app", revision: "c0ffee")

    @Test func commandsWithASlashAndArgumentsThatAreFilesOfTheSourceResolve() {
        let files: Set<String> = ["/state/code/app/abc/agent.py", "/state/code/app/abc/conf"]
        let (command, arguments) = origin.resolve(
            command: "./bin/run", arguments: ["-u", "agent.py", "./conf", "missing.py", "--root=x", "/abs", "https://x/y", "word"],
            exists: { files.contains($0) })
        #expect(command == "/state/code/app/abc/bin/run")
        #expect(
            arguments == [
                "-u", "/state/code/app/abc/agent.py", "/state/code/app/abc/conf", "missing.py", "--root=x", "/abs", "https://x/y", "word",
            ])
        #expect(origin.resolve(command: "python3", arguments: [], exists: { _ in true }).command == "python3")
        #expect(origin.resolve(command: "/usr/bin/python3", arguments: [], exists: { _ in true }).command == "/usr/bin/python3")
    }

    @Test func theCodeIdentityIgnoresTheSourcesManifestsOnly() {
        let manifests = { (path: String) in path.hasPrefix("fleet/") && path.hasSuffix(".yaml") }
        let base = [("agent.py", "b1"), ("fleet/agent.yaml", "m1"), ("fleet/notes.txt", "n1")]
        let manifestEdit = [("agent.py", "b1"), ("fleet/agent.yaml", "m2"), ("fleet/notes.txt", "n1")]
        let codeEdit = [("agent.py", "b2"), ("fleet/agent.yaml", "m1"), ("fleet/notes.txt", "n1")]
        let otherEdit = [("agent.py", "b1"), ("fleet/agent.yaml", "m1"), ("fleet/notes.txt", "n2")]
        let identity = { (files: [(String, String)]) in
            CodeOrigin.identity(of: files.map { (path: $0.0, blob: $0.1) }, isManifest: manifests)
        }
        #expect(identity(base) == identity(manifestEdit))
        #expect(identity(base) != identity(codeEdit))
        #expect(identity(base) != identity(otherEdit))
    }
}
