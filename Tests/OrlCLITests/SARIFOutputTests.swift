import Foundation
import Testing

/// `validate -o sarif`, checked against what SARIF 2.1.0 and GitHub code scanning need.
@Suite struct SARIFOutputTests {
    static func sarif(_ arguments: [String], in directory: URL = Orlctl.packageRoot) async throws -> (
        status: Int32, log: [String: Any], text: String
    ) {
        let r = try await Orlctl.call(["validate", "-o", "sarif"] + arguments, in: directory)
        #expect(r.stderr.isEmpty, "\(r.stderr)")
        let log = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        return (r.status, log, r.stdout)
    }

    @Test func brokenExamples() async throws {
        let (status, log, text) = try await Self.sarif(["-f", "examples/broken"])
        #expect(status == 1)
        try expectGolden(text, "validate-broken.sarif")

        #expect(log["$schema"] as? String == "https://json.schemastore.org/sarif-2.1.0.json")
        #expect(log["version"] as? String == "2.1.0")
        let runs = try #require(log["runs"] as? [[String: Any]])
        #expect(runs.count == 1)
        let run = runs[0]
        let driver = try #require((run["tool"] as? [String: Any])?["driver"] as? [String: Any])
        #expect(driver["name"] as? String == "orlctl")
        #expect(driver["informationUri"] is String)
        #expect((driver["semanticVersion"] as? String)?.hasPrefix("0.") == true)

        let rules = try #require(driver["rules"] as? [[String: Any]])
        let ids = rules.compactMap { $0["id"] as? String }
        #expect(ids.count == rules.count && Set(ids).count == ids.count, "rule ids are unique")
        for rule in rules {
            #expect((rule["name"] as? String)?.first?.isUppercase == true)
            for key in ["shortDescription", "fullDescription"] {
                #expect(((rule[key] as? [String: Any])?["text"] as? String)?.isEmpty == false, "\(key) of \(rule["id"] ?? "")")
            }
            let help = try #require(rule["help"] as? [String: Any])
            #expect(help["text"] is String && help["markdown"] is String)
            #expect(!(help["text"] as! String).contains("`"), "help.text is plain text")
        }

        let results = try #require(run["results"] as? [[String: Any]])
        #expect(results.count == 11, "one result per diagnostic, as the text output lists them")
        for result in results {
            let ruleId = try #require(result["ruleId"] as? String)
            let index = try #require(result["ruleIndex"] as? Int)
            #expect(ids.indices.contains(index) && ids[index] == ruleId, "ruleIndex points at the rule \(ruleId)")
            #expect(["error", "warning"].contains(result["level"] as? String))
            #expect(((result["message"] as? [String: Any])?["text"] as? String)?.isEmpty == false)
            let locations = try #require(result["locations"] as? [[String: Any]])
            let physical = try #require(locations.first?["physicalLocation"] as? [String: Any])
            let artifact = try #require(physical["artifactLocation"] as? [String: Any])
            let uri = try #require(artifact["uri"] as? String)
            #expect(uri.hasPrefix("examples/broken/") && !uri.contains("\\"))
            #expect(artifact["uriBaseId"] as? String == "%SRCROOT%")
            let region = try #require(physical["region"] as? [String: Any])
            #expect((region["startLine"] as? Int ?? 0) >= 1 && (region["startColumn"] as? Int ?? 0) >= 1)
            let fingerprint = (result["partialFingerprints"] as? [String: String])?["orlDiagnostic/v1"]
            #expect(fingerprint?.count == 16)
        }
        let levels = Set(results.compactMap { $0["level"] as? String })
        #expect(levels == ["error", "warning"])

        // Notes travel in the message (which viewers show) and as related locations.
        let cycle = try #require(results.first { $0["ruleId"] as? String == "dag.cycle" })
        let message = try #require((cycle["message"] as? [String: Any])?["text"] as? String)
        #expect(message.contains("\nnote: \"b\" depends on \"a\" (examples/broken/cycle.yaml:16:19)"), "\(message)")
        #expect((cycle["relatedLocations"] as? [[String: Any]])?.count == 2)
    }

    @Test func cleanFleetHasRulesAndNoResults() async throws {
        let (status, log, _) = try await Self.sarif(["-f", "manifests/"])
        #expect(status == 0)
        let run = try #require((log["runs"] as? [[String: Any]])?.first)
        #expect((run["results"] as? [Any])?.isEmpty == true)
        let driver = try #require((run["tool"] as? [String: Any])?["driver"] as? [String: Any])
        #expect((driver["rules"] as? [Any])?.count ?? 0 > 20, "every known code is a rule, so rule indexes never move")
    }

    /// Fingerprints leave the line out, so an alert keeps its identity when lines are
    /// added above the problem; paths are made relative URIs without `./`.
    @Test func fingerprintsSurviveEditsAbove() async throws {
        let dir = try TemporaryDirectory()
        let tool = "apiVersion: orl.dev/v1\nkind: Tool\nmetadata: {name: t}\nspec: {type: command, command: {command: x}, risk: extreme}\n"
        try dir.write("my tools/t.yaml", tool)
        let before = try await Self.sarif(["-f", "./my tools/t.yaml"], in: dir.url)
        try dir.write("my tools/t.yaml", "# a comment\n# another\n" + tool)
        let after = try await Self.sarif(["-f", "./my tools/t.yaml"], in: dir.url)
        func first(_ log: [String: Any]) throws -> [String: Any] {
            try #require(((log["runs"] as? [[String: Any]])?.first?["results"] as? [[String: Any]])?.first)
        }
        let a = try first(before.log)
        let b = try first(after.log)
        #expect(a["partialFingerprints"] as? [String: String] == b["partialFingerprints"] as? [String: String])
        #expect(before.text.contains(#""uri": "my%20tools/t.yaml""#), "\(before.text)")
        #expect(before.text.contains(#""startLine": 4"#) && after.text.contains(#""startLine": 6"#))
    }
}
