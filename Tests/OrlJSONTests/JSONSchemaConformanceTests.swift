import Foundation
import OrlJSON
import Testing

/// Runs the official JSON-Schema-Test-Suite (draft 2020-12, required tests only) from
/// `$ORL_JSON_SCHEMA_SUITE`, else `<package root>/../shared/conformance/json-schema-test-suite`,
/// with `remotes/` served from disk under `http://localhost:1234/`.
///
/// The suite is not part of the repository: a clone without it skips these tests (and
/// says so), except under CI (`CI=true`), where its absence is a failure.
///
/// Every case must pass except those listed in `exclusions`, each with its reason;
/// an excluded case that starts passing fails too, so the list stays honest.
struct JSONSchemaConformanceTests {
    /// `file: case description: test description` → why it is expected to fail.
    static let exclusions: [String: String] = [:]

    static let suiteRoot: URL = {
        if let path = ProcessInfo.processInfo.environment["ORL_JSON_SCHEMA_SUITE"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        return URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("shared/conformance/json-schema-test-suite")
    }()

    /// Whether the suite is there to run.
    static let available = testFiles.count > 40
    /// CI must run the suite: there, its absence fails `suiteIsPresent` instead of skipping it.
    static let required = ProcessInfo.processInfo.environment["CI"] == "true"
    static let absent: Comment =
        "the JSON Schema Test Suite is not present (set ORL_JSON_SCHEMA_SUITE to a checkout of json-schema-org/JSON-Schema-Test-Suite)"

    static let testFiles: [String] = {
        let directory = suiteRoot.appendingPathComponent("tests/draft2020-12")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".json") }.sorted()
    }()

    /// Every document under `remotes/`, keyed by the URI the suite serves it at.
    static let remotes: SchemaRegistry = {
        var registry = SchemaRegistry()
        let directory = suiteRoot.appendingPathComponent("remotes")
        let enumerator = FileManager.default.enumerator(atPath: directory.path)
        while let relative = enumerator?.nextObject() as? String {
            guard relative.hasSuffix(".json") else { continue }
            let url = directory.appendingPathComponent(relative)
            guard let data = FileManager.default.contents(atPath: url.path),
                let document = try? JSONParser.parse(bytes: [UInt8](data), file: relative)
            else { continue }
            registry.register(document, uri: "http://localhost:1234/" + relative)
        }
        return registry
    }()

    @Test(.enabled(if: available || required, absent))
    func suiteIsPresent() {
        #expect(Self.testFiles.count > 40, "no conformance tests found under \(Self.suiteRoot.path)")
    }

    @Test(.enabled(if: available, absent), arguments: testFiles)
    func conformance(file: String) throws {
        try Self.run("tests/draft2020-12/" + file, exclusions: Self.exclusions)
    }

    /// The suite's optional regex files, which probe ECMA-262 specifics (`\d` is
    /// ASCII-only, `$` does not match before a final newline, code point matching).
    static let optionalRegexFiles = ["ecmascript-regex.json", "non-bmp-regex.json"]

    /// Optional cases expected to fail, as for `exclusions`.
    static let optionalRegexExclusions: [String: String] = [:]

    @Test(.enabled(if: available, absent), arguments: optionalRegexFiles)
    func optionalRegex(file: String) throws {
        try Self.run("tests/draft2020-12/optional/" + file, exclusions: Self.optionalRegexExclusions)
    }

    /// Runs one suite file; case names are `file: case description: test description`.
    static func run(_ path: String, exclusions: [String: String]) throws {
        let file = URL(fileURLWithPath: path).lastPathComponent
        let data = try #require(FileManager.default.contents(atPath: suiteRoot.appendingPathComponent(path).path))
        let document = try JSONParser.parse(bytes: [UInt8](data), file: file)
        var passed = 0
        var total = 0
        for group in document.elements ?? [] {
            let groupName = group["description"]?.string ?? "?"
            let schemaNode = try #require(group["schema"])
            let schema: JSONSchema?
            var compileError: SchemaError?
            do {
                schema = try JSONSchema(
                    schemaNode, registry: remotes, options: JSONSchema.Options(unknownKeywords: .ignore))
            } catch {
                schema = nil
                compileError = error
            }
            for test in group["tests"]?.elements ?? [] {
                total += 1
                let name = "\(file): \(groupName): \(test["description"]?.string ?? "?")"
                let expected = test["valid"]?.bool ?? false
                let data = try #require(test["data"])
                let outcome: Bool?
                if let schema {
                    let valid = schema.isValid(data)
                    let violations = schema.validate(data)
                    // The quick check and the full report must agree.
                    #expect(valid == violations.isEmpty, "\(name): isValid and validate disagree")
                    outcome = valid
                } else {
                    outcome = nil
                }
                let ok = outcome == expected
                if let reason = exclusions[name] {
                    #expect(!ok, "\(name) is excluded (\(reason)) but now passes: remove the exclusion")
                    continue
                }
                if ok {
                    passed += 1
                } else if let compileError {
                    Issue.record("\(name): schema did not compile: \(compileError)")
                } else {
                    Issue.record("\(name): expected \(expected ? "valid" : "invalid")")
                }
            }
        }
        print("conformance \(file): \(passed)/\(total) passed")
    }
}
