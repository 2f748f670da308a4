import ArgumentParser
import Foundation
import OrlCore
import OrlJSON
import OrlManifests
import OrlRuntime
import OrlServer
import OrlStore

/// `orlctl mcp pin -f DIR`: asks each MCP server (a Tool of type mcp) for its tools and
/// writes their definitions, with a hash each, to `mcp.lock.json` in DIR. Everything
/// else (validate, the audit, explain, review, apply) reads that file and never the
/// servers; the controller refuses a tool whose live definition no longer has its hash.
struct McpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp", abstract: "Pin the tool definitions of MCP servers.", subcommands: [Pin.self])

    struct Pin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pin",
            abstract: "Ask each MCP server for its tools and write mcp.lock.json next to the manifests.",
            discussion: """
                Reads the manifests as validate does, lists the tools of every Tool of type mcp \
                (through its url, or by running its stdio command in the sandbox the controller \
                would run it in, with its credentialSecret from the vault of --state), keeps \
                those spec.mcp.tools exposes, and writes their name, title, description, input \
                and output schemas, annotations and a sha256 hash to mcp.lock.json in the \
                directory given with -f (or the directory of the file). Review the diff and \
                commit it with the manifests: apply stores the pins with each Tool, and the \
                controller refuses a tool whose live definition changed since.

                Exit 0 when the lock file did not change, 1 when it was written with changes, \
                2 when a server could not be reached or the manifests are invalid.
                """)

        @Option(
            name: [.short, .customLong("filename")],
            help: ArgumentHelp("A manifest file or directory. Repeatable; the lock file goes next to the first.", valueName: "path"))
        var files: [String] = []

        @Option(help: ArgumentHelp("Pin only this server (a Tool of type mcp). Repeatable.", valueName: "name"))
        var server: [String] = []

        @OptionGroup var state: StateOptions

        func validate() throws {
            guard !files.isEmpty else { throw ValidationError("give the manifests with -f PATH (a file or a directory)") }
        }

        func run() async throws {
            let report: ValidationReport
            do {
                report = try await ManifestLoader(standardInput: CommandContext.current.standardInputBytes).validate(
                    paths: files, strict: false
                ).report
            } catch {
                throw CommandFailure(message: error.description)
            }
            // Only what keeps the servers from being read stops pinning: references to
            // tools not pinned yet are what pinning fixes.
            let blocking = report.diagnostics.filter { d in
                d.severity == .error && ["file.", "yaml.", "resource.", "schema."].contains { d.code.rawValue.hasPrefix($0) }
            }
            if !blocking.isEmpty {
                OrlctlMain.writeStandardError(DiagnosticRenderer.text(report, files: files.count, color: false))
                throw CommandFailure(message: "fix the errors above before pinning")
            }
            let servers = report.fleet.resources(of: .tool).filter { $0.tool?.type == .mcp }
                .filter { server.isEmpty || server.contains($0.metadata.name) }
            guard !servers.isEmpty else { throw CommandFailure(message: "no Tool of type mcp in \(files.joined(separator: ", "))") }
            let lockPath = Self.lockPath(files[0])
            // Servers not asked this time keep their pins.
            var kept: [ResourceID: [Node]] = [:]
            if let text = try? String(contentsOfFile: lockPath, encoding: .utf8), let old = try? JSONParser.parse(text, file: lockPath) {
                for entry in old["servers"]?.elements ?? [] {
                    guard let name = entry["name"]?.string else { continue }
                    let id = ResourceID(
                        kind: ResourceKind.tool.rawValue, namespace: entry["namespace"]?.string ?? ResourceID.defaultNamespace, name: name)
                    kept[id] = (entry["tools"]?.elements ?? []).map { tool in
                        Node(.object((tool.members ?? []).filter { $0.key != "hash" }), at: tool.location)
                    }
                }
            }
            // stdio servers run here, in the sandbox they would run in under the
            // controller, in a scratch directory of their own that goes afterwards.
            let stdio = McpStdioServers(launcher: ProcessRuntime())
            let upstream = McpUpstream(stdio: stdio)
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("orl-pin-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            // Parsed, not built: an option group's unset options cannot be read otherwise.
            let sources = try ManifestSourceOptions.parse(files.flatMap { ["-f", $0] })
            let origin = CodeOrigin(root: sources.codeRoot, source: sources.resolvedSource, revision: nil)
            // A PostgreSQL state has no directory here: the scratch one stands in for it.
            let stateDirectory = state.postgresURL == nil ? PIDLock.absolute(state.resolvedDirectory) : scratch
            var vault: StateVault?
            for resource in servers {
                guard let spec = resource.tool, let mcp = spec.mcp else { continue }
                var credential: String?
                if let secret = mcp.credentialSecret?.value {
                    if vault == nil {
                        vault = StateVault(store: try state.open(), keys: state.masterKeys)
                    }
                    do {
                        credential = try vault?.value(of: SecretID(namespace: resource.metadata.namespace, name: secret))
                    } catch {
                        throw CommandFailure(message: "reading the credential of \(resource.id): \(error)")
                    }
                    guard credential != nil else {
                        throw CommandFailure(
                            message:
                                "the credential of \(resource.id) (secret \"\(secret)\") is not in the vault of \(state.label)")
                    }
                }
                let directory = "\(scratch)/\(resource.metadata.namespace).\(resource.metadata.name)"
                guard
                    let endpoint = McpUpstream.Endpoint.server(
                        resource.id, spec: spec, origin: mcp.command == nil ? nil : origin, credential: credential,
                        stateDirectory: stateDirectory, workingDirectory: directory + "/work", logFile: directory + "/stderr.log")
                else { throw CommandFailure(message: "\(resource.id) has neither spec.mcp.url nor spec.mcp.command") }
                do {
                    kept[resource.id] = try await upstream.listTools(endpoint).filter { mcp.exposes($0["name"]?.string ?? "") }
                } catch {
                    await stdio.stopAll()
                    throw CommandFailure(message: "listing the tools of \(resource.id): \(error.message)")
                }
            }
            await stdio.stopAll()
            let text = McpLock.render(kept.map { (id: $0.key, tools: $0.value) })
            let before = try? String(contentsOfFile: lockPath, encoding: .utf8)
            if before == text {
                writeStandardOutput("\(lockPath) unchanged (\(servers.count) server\(servers.count == 1 ? "" : "s"))\n")
                return
            }
            do {
                try text.write(toFile: lockPath, atomically: true, encoding: .utf8)
            } catch {
                throw CommandFailure(message: "writing \(lockPath): \(error.localizedDescription)")
            }
            let count = kept.filter { id, _ in servers.contains { $0.id == id } }.values.map(\.count).reduce(0, +)
            writeStandardOutput(
                "\(lockPath) written: \(count) tool\(count == 1 ? "" : "s") of \(servers.count) server\(servers.count == 1 ? "" : "s")\n")
            throw ExitCode(ExitStatus.findings.rawValue)
        }

        /// `mcp.lock.json` in the directory given, or next to the file given.
        static func lockPath(_ path: String) -> String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                return (path.hasSuffix("/") ? path : path + "/") + McpLock.fileName
            }
            let directory = (path as NSString).deletingLastPathComponent
            return (directory.isEmpty ? "." : directory) + "/" + McpLock.fileName
        }
    }
}
