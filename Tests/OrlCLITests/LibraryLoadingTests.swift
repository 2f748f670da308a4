import Foundation
import OrlGit
import Testing

/// libgit2 is opened when a repository first is, and SQLite when a state database is,
/// not at every start of `orlctl`.
@Suite struct LibraryLoadingTests {
    @Test func theLibraryOrlWasBuiltAgainstServes() {
        #expect(GitRepository.librarySoname.hasPrefix("libgit2.so.1."))
        #expect(GitRepository.checkLibrary(GitRepository.librarySoname) == nil)
    }

    @Test func aMissingLibraryIsNamedInTheError() throws {
        let message = try #require(GitRepository.checkLibrary("libgit2.so.0.0-not-installed"))
        #expect(message.hasPrefix("cannot load libgit2.so.0.0-not-installed (libgit2 1."), "\(message)")
        #expect(message.contains("which git sources need"), "\(message)")
    }

    @Test func aLibraryWithoutLibgit2sFunctionsIsRefused() throws {
        // zlib loads, but is not libgit2.
        let message = try #require(GitRepository.checkLibrary("libz.so.1"))
        #expect(message.hasPrefix("libz.so.1 has no git_libgit2_init"), "\(message)")
    }

    /// The dynamic loader's own account (LD_DEBUG=libs) of what the binary loads: neither
    /// library for `--version` or `validate`, both for `sync`.
    @Test(.timeLimit(.minutes(2))) func onlyCommandsThatUseGitOrAStateLoadTheirLibraries() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")

        let version = try Orlctl.run(["--version"], environment: ["LD_DEBUG": "libs"])
        #expect(version.status == 0)
        #expect(version.stderr.contains("libc.so"), "LD_DEBUG reports the loads: \(version.stderr.prefix(500))")
        #expect(!version.stderr.contains("libgit2"), "\(version.stderr)")
        #expect(!version.stderr.contains("libsqlite3"), "\(version.stderr)")

        let validate = try Orlctl.run(
            ["validate", "-f", repo.root.appendingPathComponent("fleet").path], environment: ["LD_DEBUG": "libs"])
        #expect(validate.status == 0, "\(validate.stderr)")
        #expect(!validate.stderr.contains("libgit2"))
        #expect(!validate.stderr.contains("libsqlite3"))

        let sync = try Orlctl.run(
            ["sync", "--once", "--repo", repo.root.path, "--path", "fleet", "--state", repo.state], in: repo.directory.url,
            environment: ["LD_DEBUG": "libs"])
        #expect(sync.status == 0, "\(sync.stderr.suffix(2000))")
        #expect(sync.stderr.contains(GitRepository.librarySoname))
        #expect(sync.stderr.contains("libsqlite3.so.0"))
    }
}
