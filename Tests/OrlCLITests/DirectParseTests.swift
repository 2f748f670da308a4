import ArgumentParser
import Testing

@testable import OrlCLI

/// `orlctl sync` is parsed as a root of its own before the whole command tree is built
/// (`OrlctlMain.parse`): what it parses must be the tree's `Sync`, field for field, and
/// whatever it does not take (usage errors, help, a completion request) must end as the
/// tree ends it.
@Suite struct SyncParseTests {
    static let valid: [[String]] = [
        ["sync", "--once", "--repo", "/srv/git/fleet"],
        ["sync", "--repo", "fleet", "--once", "--path", "fleet", "--name", "bench", "--prune", "--max-deletions", "10", "--no-controller"],
        ["sync", "--once", "--repo", "ssh://git@example.com/fleet.git", "--ref", "main", "--ssh-key", "/k", "--full", "-o", "json"],
        ["sync", "--once", "--repo=/r", "--allow-rewind", "--allow-empty", "--force-conflicts", "--state", "/tmp/st", "--output", "text"],
    ]

    static let refused: [[String]] = [
        ["sync"],
        ["sync", "--repo", "/r"],
        ["sync", "--once"],
        ["sync", "--once", "--repo", "/r", "--bogus"],
        ["sync", "--once", "--repo", "/r", "--name", "Not A Name"],
        ["sync", "--once", "--repo", "/r", "--max-deletions", "-1"],
        ["sync", "--once", "--repo", "/r", "extra"],
        ["sync", "--help"],
        ["sync", "-h"],
        ["sync", "help"],
        ["sync", "--version"],
        ["sync", "--generate-completion-script", "bash"],
    ]

    static func dumped(_ value: Any) -> String {
        var text = ""
        dump(value, to: &text)
        return text
    }

    @Test(arguments: valid) func aValidSyncIsTheTreesSync(_ arguments: [String]) throws {
        // Taken by the direct parse, not by falling back.
        #expect(try Sync.parseAsRoot(Array(arguments.dropFirst())) is Sync)
        let direct = try OrlctlMain.parse(arguments)
        let tree = try OrlCLI.Orlctl.parseAsRoot(arguments)
        #expect(direct is Sync)
        #expect(Self.dumped(direct) == Self.dumped(tree))
    }

    @Test(arguments: refused) func whatTheDirectParseRefusesEndsAsInTheTree(_ arguments: [String]) {
        func outcome(_ parse: () throws -> any ParsableCommand) -> String {
            do {
                return "parsed " + Self.dumped(try parse())
            } catch {
                return "\(OrlCLI.Orlctl.exitCode(for: error).rawValue) \(OrlCLI.Orlctl.fullMessage(for: error))"
            }
        }
        #expect(outcome { try OrlctlMain.parse(arguments) } == outcome { try OrlCLI.Orlctl.parseAsRoot(arguments) })
    }
}
