import ArgumentParser
import Testing

@testable import OrlCLI

/// `apply`, `diff`, `validate` and `sync` are parsed as roots of their own before the whole
/// command tree is built (`OrlctlMain.direct`): what they parse must be the tree's command,
/// field for field, and whatever they do not take (usage errors, help, a completion request)
/// must end as the tree ends it.
@Suite struct DirectParseTests {
    static let valid: [[String]] = [
        ["sync", "--once", "--repo", "/srv/git/fleet"],
        ["sync", "--repo", "fleet", "--once", "--path", "fleet", "--name", "bench", "--prune", "--max-deletions", "10", "--no-controller"],
        ["sync", "--once", "--repo", "ssh://git@example.com/fleet.git", "--ref", "main", "--ssh-key", "/k", "--full", "-o", "json"],
        ["sync", "--once", "--repo=/r", "--allow-rewind", "--allow-empty", "--force-conflicts", "--state", "/tmp/st", "--output", "text"],
        ["apply", "-f", "fleet"],
        ["apply", "-f", "a", "--filename", "b", "-f", "-", "--source", "mine", "--state", "/tmp/st", "--prune", "--dry-run"],
        ["apply", "--max-deletions", "3", "--allow-empty", "--force-conflicts", "-o", "json", "--no-controller", "--full", "-f=x"],
        ["apply", "-f", "fleet", "--state", "postgres://orl@localhost:5432/orl?sslmode=disable", "--output=text"],
        ["diff", "-f", "fleet"],
        ["diff", "-f", "a", "-f", "b", "--prune", "--full", "--output", "json", "--source", "s", "--state", "/tmp/st"],
        ["validate", "-f", "fleet"],
        ["validate", "--filename", "a", "-f", "-", "--strict", "-o", "sarif"],
        ["validate", "-f", "/nonexistent", "--output", "json"],
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
        ["apply"],
        ["apply", "-f"],
        ["apply", "-f", "x", "--bogus"],
        ["apply", "-f", "x", "--max-deletions", "many"],
        ["apply", "-f", "x", "-o", "yaml"],
        ["apply", "-f", "x", "extra"],
        ["apply", "--help"],
        ["apply", "-f", "x", "-h"],
        ["apply", "help"],
        ["apply", "--version"],
        ["apply", "-f", "x", "--version"],
        ["apply", "--generate-completion-script", "bash"],
        ["apply", "--generate-completion-script"],
        ["apply", "--experimental-dump-help"],
        ["diff"],
        ["diff", "-f", "x", "--dry-run"],
        ["diff", "--help"],
        ["diff", "-f", "x", "--version"],
        ["validate"],
        ["validate", "-f", "x", "-o", "yaml"],
        ["validate", "-f", "x", "--prune"],
        ["validate", "-h"],
        ["validate", "help"],
        ["validate", "-f", "x", "--generate-completion-script", "zsh"],
        ["help", "apply"],
        ["--generate-completion-script", "bash"],
    ]

    static func dumped(_ value: Any) -> String {
        var text = ""
        dump(value, to: &text)
        return text
    }

    @Test(arguments: valid) func aValidCommandIsTheTreesCommand(_ arguments: [String]) throws {
        // Taken by the direct parse, not by falling back.
        let direct = try #require(OrlctlMain.direct(arguments))
        let tree = try OrlCLI.Orlctl.parseAsRoot(arguments)
        #expect(type(of: direct) == type(of: tree))
        #expect(Self.dumped(direct) == Self.dumped(tree))
        #expect(Self.dumped(try OrlctlMain.parse(arguments)) == Self.dumped(tree))
    }

    @Test(arguments: refused) func whatTheDirectParseRefusesEndsAsInTheTree(_ arguments: [String]) {
        #expect(OrlctlMain.direct(arguments) == nil)
        func outcome(_ parse: () throws -> any ParsableCommand) -> String {
            do {
                return "parsed " + Self.dumped(try parse())
            } catch {
                return "\(OrlCLI.Orlctl.exitCode(for: error).rawValue) \(OrlCLI.Orlctl.fullMessage(for: error))"
            }
        }
        #expect(outcome { try OrlctlMain.parse(arguments) } == outcome { try OrlCLI.Orlctl.parseAsRoot(arguments) })
    }

    /// A command parsed on its own says `orlctl` in its usage, as under the tree.
    @Test func theCommandsNameOrlctlAsTheirSuperCommand() {
        for command in [Apply.self, Diff.self, Validate.self, Sync.self] as [any ParsableCommand.Type] {
            #expect(command.configuration._superCommandName == "orlctl")
            #expect(command.helpMessage().contains("USAGE: orlctl \(command.configuration.commandName!) "))
        }
    }
}
