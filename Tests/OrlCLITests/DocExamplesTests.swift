import Foundation
import OrlCore
import OrlJSON
import OrlYAML
import Testing

/// The documentation cannot drift from the product: every `$ command` in a ```console
/// block of README.md and docs/ is run, in order, against a fresh state per page, and
/// its output must be the one shown; every ```yaml block must parse, and every orl
/// manifest in one must pass the schemas. New pages are picked up by themselves.
@Suite struct DocExamplesTests {
    static let root = Orlctl.packageRoot

    /// README.md and every Markdown page under docs/.
    static func pages() -> [String] {
        var pages = ["README.md"]
        let docs = root.appendingPathComponent("docs")
        if let walker = FileManager.default.enumerator(atPath: docs.path) {
            for case let path as String in walker where path.hasSuffix(".md") { pages.append("docs/" + path) }
        }
        return pages.sorted()
    }

    struct Block {
        var language: String
        var line: Int
        var lines: [String]
        /// `<!-- fresh state -->` just before the block: its commands start from an empty state.
        var freshState = false
    }

    static let freshStateMarker = "<!-- fresh state -->"

    static func blocks(in text: String) -> [Block] {
        var blocks: [Block] = []
        var current: Block?
        var previous = ""
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            defer { if current == nil, !line.trimmingCharacters(in: .whitespaces).isEmpty { previous = String(line) } }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if var block = current {
                if trimmed == "```" {
                    blocks.append(block)
                    current = nil
                } else {
                    // Blocks indented under a list item keep their text relative to the fence.
                    block.lines.append(String(line))
                    current = block
                }
            } else if trimmed.hasPrefix("```") {
                current = Block(
                    language: String(trimmed.dropFirst(3)), line: index + 1, lines: [],
                    freshState: previous.trimmingCharacters(in: .whitespaces) == Self.freshStateMarker)
            }
        }
        return blocks.map { block in
            let indent = block.lines.filter { !$0.isEmpty }.map { $0.prefix { $0 == " " }.count }.min() ?? 0
            var unindented = block
            unindented.lines = block.lines.map { String($0.dropFirst(min(indent, $0.count))) }
            return unindented
        }
    }

    /// One `$ command` and the output shown after it.
    struct Step {
        var command: String
        var line: Int
        var expected: [String]
    }

    static func steps(_ block: Block) -> [Step] {
        var steps: [Step] = []
        for (offset, line) in block.lines.enumerated() {
            if line.hasPrefix("$ ") {
                steps.append(Step(command: String(line.dropFirst(2)), line: block.line + 1 + offset, expected: []))
            } else if !steps.isEmpty {
                steps[steps.count - 1].expected.append(line)
            }
        }
        return steps
    }

    static var pagesWithTranscripts: [String] {
        pages().filter { page in
            let text = (try? String(contentsOf: root.appendingPathComponent(page), encoding: .utf8)) ?? ""
            return blocks(in: text).contains { $0.language == "console" }
        }
    }

    @Test(arguments: pagesWithTranscripts)
    func transcriptsShowTheRealOutput(_ page: String) throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent(page), encoding: .utf8)
        let work = try TemporaryDirectory()
        // The page's commands run where the repository's examples are, as a reader's would.
        for name in ["manifests", "examples", "schemas", "docs", "scripts"] {
            try FileManager.default.createSymbolicLink(
                at: work.url.appendingPathComponent(name), withDestinationURL: Self.root.appendingPathComponent(name))
        }
        var state = work.url.appendingPathComponent("state").path
        var states = [state]
        // A page that starts a controller must not leave it running.
        defer {
            for state in states where FileManager.default.fileExists(atPath: state + "/controller.lock") {
                _ = try? Self.run("orlctl controller stop", in: work.url, state: state)
            }
        }
        // Run ids differ from the page's: once an output shows one, later commands that
        // name the page's id get the real one.
        var ids: [String: String] = [:]
        for (number, block) in Self.blocks(in: text).enumerated() where block.language == "console" {
            if block.freshState {
                state = work.url.appendingPathComponent("state-\(number)").path
                states.append(state)
            }
            for step in Self.steps(block) {
                let command = ids.reduce(step.command) { $0.replacingOccurrences(of: $1.key, with: $1.value) }
                let actual = try Self.run(command, in: work.url, state: state)
                for (shown, real) in zip(Self.runIDs(step.expected), Self.runIDs(actual)) where ids[shown] == nil { ids[shown] = real }
                let normalise = { (lines: [String]) in lines.map { Self.normalise($0, work: work.url.path, state: state) } }
                if let mismatch = Self.mismatch(expected: normalise(step.expected), actual: normalise(actual)) {
                    Issue.record(
                        """
                        \(page):\(step.line): `$ \(step.command)` printed something else (\(mismatch)). Real output:
                        \(actual.joined(separator: "\n"))
                        """)
                }
            }
        }
    }

    /// Runs a command line with sh, orlctl first on the PATH, standard error merged into
    /// standard output in order.
    static func run(_ command: String, in directory: URL, state: String) throws -> [String] {
        let result = try ShellRun.run(
            command + " 2>&1", in: directory,
            environment: [
                "PATH": Orlctl.binary.deletingLastPathComponent().path + ":"
                    + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"),
                "ORL_HOME": state, "ORL_NO_CONTROLLER": "1", "NO_COLOR": "1", "COLUMNS": "100",
                // Commits made by a page's commands get the same ids on every run.
                "GIT_AUTHOR_NAME": "alice", "GIT_AUTHOR_EMAIL": "alice@example.com", "GIT_AUTHOR_DATE": "2026-11-21T12:00:00Z",
                "GIT_COMMITTER_NAME": "alice", "GIT_COMMITTER_EMAIL": "alice@example.com", "GIT_COMMITTER_DATE": "2026-11-21T12:00:00Z",
                "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
            ])
        var lines = result.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    static func runIDs(_ lines: [String]) -> [String] {
        lines.flatMap { $0.matches(of: Self.runID).map { String($0.output) } }
    }

    static var runID: Regex<Substring> { /\b(?=[0-9a-z]*[0-9])(?=[0-9a-z]*[a-z])[0-9a-z]{13}\b/ }

    /// Times, ages, ids, pids, the user and the temporary paths differ from run to run;
    /// column padding follows them, so runs of spaces count as one.
    static func normalise(_ line: String, work: String, state: String) -> String {
        var line = line
        for (path, name) in [(state, "<state>"), (work, "/src"), (root.path, "/src"), (root.resolvingSymlinksInPath().path, "/src")] {
            line = line.replacingOccurrences(of: path, with: name)
        }
        line = line.replacingOccurrences(of: DocCaller.identity, with: "alice@build-7")
        line = line.replacing(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/, with: "<time>")
        line = line.replacing(Self.runID, with: "<id>")
        line = line.replacing(/\b(\d+d)?(\d+h)?(\d+m)?(\d+(\.\d+)?m?s)?\b/) { match in
            match.output.0.isEmpty || match.output.0.allSatisfy(\.isNumber) ? String(match.output.0) : "<age>"
        }
        line = line.replacing(/pid \d+/, with: "pid <pid>")
        line = line.replacing(/[ ]{2,}/, with: " ")
        while line.last == " " { line.removeLast() }
        return line
    }

    /// nil when `actual` matches; a line that is `...` matches any lines, and a line that
    /// ends in ` ...` matches any line it begins.
    static func mismatch(expected: [String], actual: [String]) -> String? {
        func matches(_ e: Int, _ a: Int) -> Bool {
            if e == expected.count { return a == actual.count }
            let pattern = expected[e].trimmingCharacters(in: .whitespaces)
            if pattern == "..." {
                return (a...actual.count).contains { matches(e + 1, $0) }
            }
            guard a < actual.count else { return false }
            let line = expected[e]
            let fits = line.hasSuffix(" ...") ? actual[a].hasPrefix(String(line.dropLast(4))) : actual[a] == line
            return fits && matches(e + 1, a + 1)
        }
        guard !matches(0, 0) else { return nil }
        for (index, line) in expected.enumerated() where line.trimmingCharacters(in: .whitespaces) != "..." {
            let bare = line.hasSuffix(" ...") ? String(line.dropLast(4)) : line
            if !actual.contains(where: { $0.hasPrefix(bare) }) { return "no line like: \(line) (expected line \(index + 1))" }
        }
        return "the lines differ in number or order"
    }

    static var pagesWithYAML: [String] {
        pages().filter { page in
            let text = (try? String(contentsOf: root.appendingPathComponent(page), encoding: .utf8)) ?? ""
            return blocks(in: text).contains { $0.language == "yaml" }
        }
    }

    /// Families of problems a snippet must not have; references to resources that are
    /// defined elsewhere (ref.*, perm.*, budget.*) are not the snippet's to resolve.
    static let snippetFamilies = ["file.", "yaml.", "resource.", "schema.", "dag.", "trigger.", "name.", "duplicate."]

    @Test(arguments: pagesWithYAML)
    func yamlSnippetsAreValid(_ page: String) throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent(page), encoding: .utf8)
        for block in Self.blocks(in: text) where block.language == "yaml" {
            for problem in Self.problems(inSnippet: block.lines, file: "\(page):\(block.line)") {
                Issue.record("\(page), the yaml block at line \(block.line): \(problem)")
            }
        }
    }

    /// What is wrong with a YAML snippet itself: its syntax, and for orl manifests the
    /// schemas, names and DAGs.
    static func problems(inSnippet lines: [String], file: String) -> [String] {
        let document = YAMLParser().parse(lines.joined(separator: "\n") + "\n", file: file)
        let report = ManifestValidation.validate([document])
        let orl = lines.contains { $0.hasPrefix("apiVersion: orl.dev/") }
        return report.diagnostics.filter { diagnostic in
            let code = diagnostic.code.rawValue
            return diagnostic.severity == .error
                && (code.hasPrefix("yaml.") || code.hasPrefix("file.") || (orl && Self.snippetFamilies.contains { code.hasPrefix($0) }))
        }.map { "\($0.code.rawValue): \($0.message)" }
    }

    @Test func snippetCheckCatchesWhatTheManifestsWouldFailOn() {
        let agent = [
            "apiVersion: orl.dev/v1", "kind: Agent", "metadata:", "  name: a", "spec:", "  model: sim/small", "  runtime:",
            "    command: x",
        ]
        #expect(Self.problems(inSnippet: agent, file: "ok.yaml").isEmpty)
        #expect(Self.problems(inSnippet: agent + ["  colour: red"], file: "bad.yaml").contains { $0.hasPrefix("schema.") })
        #expect(Self.problems(inSnippet: ["a: [1, 2"], file: "syntax.yaml").contains { $0.hasPrefix("yaml.") })
        #expect(Self.problems(inSnippet: ["on: [push]", "jobs: {}"], file: "ci.yaml").isEmpty)
    }

    /// Pages other branches are writing, linked from the index before they land.
    static let pendingPages: Set<String> = []

    /// Every relative link of README.md and docs/ leads to a file that exists, and a link
    /// to a heading (`page.md#heading`) to a heading that exists, as GitHub names it.
    @Test func linksLeadSomewhere() throws {
        for page in Self.pages() {
            let text = try String(contentsOf: Self.root.appendingPathComponent(page), encoding: .utf8)
            let prose = Self.withoutCode(text)
            for match in prose.matches(of: /\]\(([^)\s]+)\)/) {
                let target = String(match.output.1)
                if target.hasPrefix("http://") || target.hasPrefix("https://") || target.hasPrefix("mailto:") { continue }
                let parts = target.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                let directory = (page as NSString).deletingLastPathComponent
                let file =
                    parts[0].isEmpty ? page : ((directory as NSString).appendingPathComponent(parts[0]) as NSString).standardizingPath
                if Self.pendingPages.contains(file) { continue }
                let url = Self.root.appendingPathComponent(file)
                guard FileManager.default.fileExists(atPath: url.path) else {
                    Issue.record("\(page): the link \(target) leads nowhere")
                    continue
                }
                if parts.count == 2, file.hasSuffix(".md") {
                    let headings = Self.anchors(try String(contentsOf: url, encoding: .utf8))
                    #expect(headings.contains(parts[1]), "\(page): no heading #\(parts[1]) in \(file)")
                }
            }
        }
    }

    /// The text outside fenced blocks and code spans.
    static func withoutCode(_ text: String) -> String {
        var out: [String] = []
        var fenced = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingCharacters(in: .whitespaces).hasPrefix("```") {
                fenced.toggle()
                continue
            }
            if !fenced { out.append(String(line).replacing(/`[^`]*`/, with: "")) }
        }
        return out.joined(separator: "\n")
    }

    /// GitHub's anchors: headings lower-cased, punctuation dropped, spaces as hyphens; and
    /// explicit `<a id="...">` anchors.
    static func anchors(_ text: String) -> Set<String> {
        var anchors = Set(text.matches(of: /<a id="([^"]+)"><\/a>/).map { String($0.output.1) })
        var fenced = false
        for line in text.split(separator: "\n") {
            if line.hasPrefix("```") { fenced.toggle() }
            guard !fenced, line.hasPrefix("#") else { continue }
            let title = line.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces).lowercased()
            anchors.insert(
                String(title.compactMap { $0 == " " ? "-" : ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") ? $0 : nil }))
        }
        return anchors
    }

    @Test func normalisingKeepsWhatMatters() {
        let line = Self.normalise(
            "1m7ztfz8dm0yv  content-pipeline  2026-11-21T19:49:21Z  5m  3d4h  $0.50  200k tokens  pid 1234", work: "/tmp/w",
            state: "/tmp/w/s")
        #expect(line == "<id> content-pipeline <time> <age> <age> $0.50 200k tokens pid <pid>")
        #expect(Self.mismatch(expected: ["a", "...", "d"], actual: ["a", "b", "c", "d"]) == nil)
        #expect(Self.mismatch(expected: ["a b ..."], actual: ["a b c"]) == nil)
        #expect(Self.mismatch(expected: ["a", "c"], actual: ["a", "b"]) != nil)
    }
}

/// `sh -c`, for the transcripts' command lines (pipes and redirections included).
enum ShellRun {
    static func run(_ command: String, in directory: URL, environment: [String: String]) throws -> String {
        let process = Process()
        // A command that never ends (a watch, a controller in the foreground) fails the
        // page after a minute rather than hanging the tests.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["--kill-after=5", "60", "/bin/sh", "-c", command]
        process.currentDirectoryURL = directory
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

/// The identity apply records (user@host), as orlctl computes it.
enum DocCaller {
    static var identity: String {
        let environment = ProcessInfo.processInfo.environment
        let user = environment["USER"] ?? environment["LOGNAME"] ?? NSUserName()
        return "\(user)@\(ProcessInfo.processInfo.hostName)"
    }
}
