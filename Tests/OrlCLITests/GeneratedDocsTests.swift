import Foundation
import Testing

/// The references in docs/ are generated (scripts/gen-docs); they must be what the
/// generator makes of the product as it is now.
@Suite struct GeneratedDocsTests {
    @Test func generatedReferencesAreUpToDate() async throws {
        let result = try await Orlctl.call(["generate-docs", "--check", "--root", Orlctl.packageRoot.path])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }

    @Test func referencesCoverEveryFieldCommandAndRoute() throws {
        let docs = Orlctl.packageRoot.appendingPathComponent("docs/reference")
        let manifests = try String(contentsOf: docs.appendingPathComponent("manifests.md"), encoding: .utf8)
        for field in ["`spec.runtime.restartPolicy`", "`spec.steps[].retry.attempts`", "`spec.limits[].usd`", "`metadata.name`"] {
            #expect(manifests.contains(field), "\(field)")
        }
        #expect(manifests.contains("`\"Always\"`"), "defaults are listed")
        let cli = try String(contentsOf: docs.appendingPathComponent("cli.md"), encoding: .utf8)
        for command in ["## orlctl apply", "## orlctl secret set", "## orlctl version", "--max-deletions"] {
            #expect(cli.contains(command), "\(command)")
        }
        #expect(!cli.contains("generate-docs"), "hidden commands stay hidden")
        let openAPI = try String(contentsOf: docs.appendingPathComponent("openapi.json"), encoding: .utf8)
        #expect(openAPI.contains("\"/v1/chat/completions\"") && openAPI.contains("\"/webhook\""))
    }

    @Test func manPagesAndCompletionsAreGeneratedFromTheCommands() async throws {
        let directory = try TemporaryDirectory()
        let man = directory.url.appendingPathComponent("man1").path
        let completions = directory.url.appendingPathComponent("completions").path
        let result = try await Orlctl.call([
            "generate-docs", "--check", "--root", Orlctl.packageRoot.path, "--man", man, "--completions", completions,
        ])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let pages = try FileManager.default.contentsOfDirectory(atPath: man)
        for page in ["orlctl.1", "orlctl-apply.1", "orlctl-secret-set.1", "orlctl-version.1"] { #expect(pages.contains(page), "\(page)") }
        #expect(!pages.contains { $0.contains("generate-docs") })
        let apply = try String(contentsOfFile: man + "/orlctl-apply.1", encoding: .utf8)
        #expect(apply.contains(".TH \"ORLCTL-APPLY\" \"1\"") && apply.contains("\\-\\-max\\-deletions"))
        let bash = try String(contentsOfFile: completions + "/orlctl.bash", encoding: .utf8)
        #expect(bash.contains("complete") && bash.contains("apply"))
        #expect(FileManager.default.fileExists(atPath: completions + "/_orlctl"))
        #expect(FileManager.default.fileExists(atPath: completions + "/orlctl.fish"))
    }

    @Test func versionNamesTheBuildsCommit() async throws {
        let result = try await Orlctl.call(["version", "-o", "json"])
        #expect(result.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(object["version"] as? String == "0.1.0")
        let commit = try #require(object["commit"] as? String)
        // A build without git (a tarball, or the sandboxed build of this machine) says
        // "unknown"; one from a clone names the 40-hex commit.
        #expect(commit == "unknown" || (commit.count == 40 && commit.allSatisfy(\.isHexDigit)), "\(commit)")
        // The scripts' builds (scripts/build-env) take both from the header it writes.
        let header = Orlctl.packageRoot.appendingPathComponent("Sources/COrlBuildInfo/orl_build_commit.h")
        if let written = try? String(contentsOf: header, encoding: .utf8) {
            let lines = written.split(separator: "\n")
            let built = lines.first { $0.hasPrefix("#define ORL_GENERATED_COMMIT ") }?.split(separator: "\"").dropFirst().first ?? ""
            #expect(commit == (built.isEmpty ? "unknown" : String(built)), "\(written)")
            let dirty: Bool = lines.contains("#define ORL_GENERATED_DIRTY 1")
            #expect(object["dirty"] as? Bool == dirty, "\(written)")
        }
        #expect(object["dirty"] is Bool)
        let text = try await Orlctl.call(["version"])
        #expect(text.stdout.hasPrefix("orlctl 0.1.0 (commit \(commit)"))
    }
}

/// `scripts/install` puts the binary, its man pages and completions under a prefix.
@Suite struct InstallScriptTests {
    @Test func installsBinaryManPagesAndCompletionsUnderThePrefix() throws {
        let prefix = try TemporaryDirectory()
        let process = Process()
        process.executableURL = Orlctl.packageRoot.appendingPathComponent("scripts/install")
        process.currentDirectoryURL = Orlctl.packageRoot
        var environment = ProcessInfo.processInfo.environment
        environment["PREFIX"] = prefix.url.path
        environment["ORLCTL"] = Orlctl.binary.path
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(said)")
        #expect(said.contains("installed orlctl 0.1.0"))
        let root = prefix.url.path
        for file in [
            "bin/orlctl", "share/man/man1/orlctl.1", "share/man/man1/orlctl-apply.1", "share/bash-completion/completions/orlctl",
            "share/zsh/site-functions/_orlctl", "share/fish/vendor_completions.d/orlctl.fish",
        ] {
            #expect(FileManager.default.fileExists(atPath: "\(root)/\(file)"), "\(file)")
        }
        #expect(FileManager.default.isExecutableFile(atPath: "\(root)/bin/orlctl"))
    }
}
