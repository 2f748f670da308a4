import Foundation
import Glibc
import Testing

/// `orlctl secret` in process, against a real state. Values never come back out, so
/// what was stored is proved by sizes and by `unchanged` (the vault compares the new
/// value with the stored one).
@Suite struct SecretCommandTests {
    let work: TemporaryDirectory
    var state: String { work.url.appendingPathComponent("state").path }

    init() throws { work = try TemporaryDirectory() }

    func orlctl(_ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]) async throws -> Orlctl.Result {
        try await Orlctl.call(arguments + ["--state", state], stdin: stdin, in: work.url, environment: environment)
    }

    /// name → size, from `secret list -o json`.
    func sizes(_ extra: [String] = []) async throws -> [String: Int] {
        let result = try await orlctl(["secret", "list", "-o", "json"] + extra)
        #expect(result.status == 0, "\(result.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let items = try #require(json["secrets"] as? [[String: Any]])
        return Dictionary(uniqueKeysWithValues: items.map { ($0["name"] as! String, $0["size"] as! Int) })
    }

    @Test func standardInputLosesExactlyOneTrailingNewline() async throws {
        var r = try await orlctl(["secret", "set", "one"], stdin: "x\n")
        #expect(r.status == 0 && r.stdout == "secret \"one\" created\n" && r.stderr.isEmpty, "\(r)")
        r = try await orlctl(["secret", "set", "two"], stdin: "x\n\n")
        #expect(r.status == 0)
        r = try await orlctl(["secret", "set", "three"], stdin: "x")
        #expect(r.status == 0)
        #expect(try await sizes() == ["one": 1, "two": 2, "three": 1])
        // `echo x` and `printf x` store the same value.
        r = try await orlctl(["secret", "set", "one"], stdin: "x")
        #expect(r.status == 0 && r.stdout == "secret \"one\" unchanged\n", "\(r)")
        r = try await orlctl(["secret", "set", "one"], stdin: "y\n")
        #expect(r.status == 0 && r.stdout == "secret \"one\" updated\n", "\(r)")
    }

    @Test func aFileIsStoredByteForByteAndAnEnvironmentVariableAsIs() async throws {
        try work.write("value.txt", "line one\nline two\n\n")
        var r = try await orlctl(["secret", "set", "from-file", "--from-file", "value.txt"])
        #expect(r.status == 0 && r.stdout == "secret \"from-file\" created\n", "\(r)")
        #expect(try await sizes()["from-file"] == 19)
        // The same bytes through standard input, plus the newline it drops: unchanged.
        r = try await orlctl(["secret", "set", "from-file"], stdin: "line one\nline two\n\n\n")
        #expect(r.stdout == "secret \"from-file\" unchanged\n", "\(r)")

        r = try await orlctl(["secret", "set", "from-env", "--from-env", "MY_TOKEN"], environment: ["MY_TOKEN": "tok-123\n"])
        #expect(r.status == 0, "\(r)")
        #expect(try await sizes()["from-env"] == 8)
        r = try await orlctl(["secret", "set", "from-env", "--from-env", "NOT_SET_ANYWHERE"])
        #expect(r.status == 2 && r.stderr == "orlctl: error: the environment variable NOT_SET_ANYWHERE is not set\n", "\(r)")
        r = try await orlctl(["secret", "set", "x", "--from-file", "missing.txt"])
        #expect(r.status == 2 && r.stderr.contains("cannot read missing.txt: no such file"), "\(r)")
    }

    @Test func badNamesAndValuesAreRefusedAndChangeNothing() async throws {
        var r = try await orlctl(["secret", "set", "Bad_Name"], stdin: "v")
        #expect(r.status == 2 && r.stderr.contains("invalid secret name \"Bad_Name\": use a DNS-1123 label"), "\(r)")
        r = try await orlctl(["secret", "set", "empty"], stdin: "\n")
        #expect(r.status == 2 && r.stderr == "orlctl: error: cannot set secret \"empty\": the value is empty\n", "\(r)")
        r = try await orlctl(["secret", "set", "a", "--from-file", "f", "--from-env", "E"])
        #expect(r.status == 2 && r.stderr.contains("give --from-file or --from-env, not both"), "\(r)")
        #expect(!FileManager.default.fileExists(atPath: state + "/master.key"), "a refused value makes no key")
    }

    @Test func theKeyFileIsPrivateAndAWrongOrExposedKeyIsAClearError() async throws {
        #expect(try await orlctl(["secret", "set", "db-pass"], stdin: "v1").status == 0)
        let keyFile = state + "/master.key"
        let attributes = try FileManager.default.attributesOfItem(atPath: keyFile)
        #expect(attributes[.posixPermissions] as? Int == 0o600 && (attributes[.ownerAccountID] as? NSNumber)?.uint32Value == geteuid())
        let key = try String(contentsOfFile: keyFile, encoding: .utf8)
        #expect(key.hasSuffix("\n") && Data(base64Encoded: String(key.dropLast()))?.count == 32)

        let other = Data((0..<32).map { UInt8($0) }).base64EncodedString()
        var r = try await orlctl(["secret", "set", "db-pass"], stdin: "v2", environment: ["ORL_MASTER_KEY": other])
        #expect(r.status == 2, "\(r)")
        #expect(r.stderr.hasPrefix("orlctl: error: the master key from ORL_MASTER_KEY (key id "), "\(r)")
        #expect(r.stderr.contains("is not the key the vault's secrets were sealed with"), "\(r)")
        // The right key in the environment works as the file does.
        r = try await orlctl(["secret", "set", "db-pass"], stdin: "v1", environment: ["ORL_MASTER_KEY": String(key.dropLast())])
        #expect(r.status == 0 && r.stdout == "secret \"db-pass\" unchanged\n", "\(r)")
        // Listing needs no key at all.
        #expect(try await orlctl(["secret", "list"], environment: ["ORL_MASTER_KEY": other]).status == 0)

        #expect(chmod(keyFile, 0o644) == 0)
        r = try await orlctl(["secret", "set", "db-pass"], stdin: "v2")
        #expect(r.status == 2 && r.stderr.contains("refusing to use \(keyFile): its mode is 0644"), "\(r)")
        #expect(chmod(keyFile, 0o600) == 0)
        #expect(unlink(keyFile) == 0)
        r = try await orlctl(["secret", "set", "db-pass"], stdin: "v2")
        #expect(r.status == 2 && r.stderr.contains("but there is no master key"), "\(r)")
        #expect(!FileManager.default.fileExists(atPath: keyFile), "no new key replaces a lost one")
    }

    @Test func listShowsNamesSizesAndTimesButNeverValues() async throws {
        #expect(try await orlctl(["secret", "set", "b-key"], stdin: "value-of-b").status == 0)
        #expect(try await orlctl(["secret", "set", "a-key", "-n", "team"], stdin: "value-of-a").status == 0)
        var r = try await orlctl(["secret", "list"])
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 2 && lines[0].split(separator: " ", omittingEmptySubsequences: true) == ["NAME", "SIZE", "UPDATED", "BY"])
        #expect(lines[1].hasPrefix("b-key  10    20"), "\(r.stdout)")
        r = try await orlctl(["secret", "list", "-A"])
        #expect(r.stdout.hasPrefix("NAMESPACE  NAME   SIZE  UPDATED"), "\(r.stdout)")
        #expect(r.stdout.contains("\nteam       a-key  10 "), "\(r.stdout)")
        r = try await orlctl(["secret", "list", "-n", "empty"])
        #expect(r.status == 0 && r.stdout.isEmpty && r.stderr == "No secrets found in empty namespace.\n")
        r = try await orlctl(["secret", "list", "-A", "-o", "json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let items = try #require(json["secrets"] as? [[String: Any]])
        #expect(items.map { Set($0.keys) } == Array(repeating: ["namespace", "name", "size", "updatedAt", "updatedBy", "keyId"], count: 2))
        #expect(!r.stdout.contains("value-of"))
    }

    @Test func deleteIsAllOrNothingAndRecorded() async throws {
        for name in ["a", "b"] { #expect(try await orlctl(["secret", "set", name], stdin: "v").status == 0) }
        var r = try await orlctl(["secret", "delete", "a", "nope"])
        #expect(r.status == 1 && r.stdout.isEmpty, "\(r)")
        #expect(r.stderr == "orlctl: error: secret \"nope\" not found\norlctl: nothing was deleted\n")
        #expect(try await sizes().keys.sorted() == ["a", "b"])
        r = try await orlctl(["secret", "delete", "a", "nope", "--ignore-not-found"])
        #expect(r.status == 0 && r.stdout == "secret \"a\" deleted\n", "\(r)")
        r = try await orlctl(["secret", "delete", "b"])
        #expect(r.status == 0 && r.stdout == "secret \"b\" deleted\n", "\(r)")
        #expect(try await sizes().isEmpty)
        r = try await orlctl(["events"])
        #expect(r.stdout.contains("Deleted  secret/b"), "\(r.stdout)")
        #expect(r.stdout.contains("Created  secret/a  set by "), "\(r.stdout)")
    }
}
