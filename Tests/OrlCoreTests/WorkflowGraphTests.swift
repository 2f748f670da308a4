import Foundation
import OrlCore
import OrlJSON
import OrlYAML
import Testing

@Suite struct WorkflowGraphTests {
    /// A graph from `step: deps` pairs, e.g. `["a": [], "b": ["a"]]` in order.
    func graph(_ steps: [(String, [String])]) throws -> WorkflowGraph {
        let yaml =
            "steps:\n"
            + steps.map { id, deps in "  - {id: \(id), agent: x, dependsOn: [\(deps.joined(separator: ", "))]}" }.joined(separator: "\n")
        let node = try #require(YAMLParser().parse(yaml, file: "wf.yaml").documents.first?.root)
        return WorkflowGraph(try NodeDecoder.decode(WorkflowSpec.self, from: node))
    }

    func ids(_ g: WorkflowGraph, _ indices: [Int]) -> [String] { indices.map { g.steps[$0].id.value } }

    @Test func topologicalOrderPutsDependenciesFirst() throws {
        let g = try graph([("publish", ["approve"]), ("approve", ["a", "b"]), ("a", ["research"]), ("b", ["research"]), ("research", [])])
        let order = ids(g, try #require(g.topologicalOrder()))
        for (step, deps) in [("publish", ["approve"]), ("approve", ["a", "b"]), ("a", ["research"]), ("b", ["research"])] {
            for dep in deps { #expect(order.firstIndex(of: dep)! < order.firstIndex(of: step)!) }
        }
        #expect(g.cycles().isEmpty)
        #expect(ids(g, g.roots) == ["research"])
    }

    @Test func diamondAncestors() throws {
        let g = try graph([("r", []), ("a", ["r"]), ("b", ["r"]), ("j", ["a", "b"]), ("x", [])])
        let ancestors = try #require(g.ancestors())
        let j = g.index["j"]!
        #expect(["r", "a", "b"].allSatisfy { ancestors[j].contains(g.index[$0]!) })
        #expect(!ancestors[j].contains(g.index["x"]!))
        #expect(!ancestors[g.index["a"]!].contains(g.index["b"]!))
    }

    @Test func everyCycleIsReportedOnceWithItsPath() throws {
        // Two separate cycles and an acyclic tail hanging off one of them.
        let g = try graph([("a", ["c"]), ("b", ["a"]), ("c", ["b"]), ("d", ["c"]), ("x", ["y"]), ("y", ["x"])])
        let cycles = g.cycles().map { ids(g, $0) }
        #expect(cycles == [["a", "b", "c", "a"], ["x", "y", "x"]])
        #expect(g.topologicalOrder() == nil)
        #expect(g.ancestors() == nil)
    }

    @Test func shortestCycleIsShown() throws {
        // a→b→a and a→b→c→a share a component; the two-step one is the clearer report.
        let g = try graph([("a", ["b", "c"]), ("b", ["a"]), ("c", ["b"])])
        #expect(g.cycles().map { ids(g, $0) } == [["a", "b", "a"]])
    }

    @Test func selfLoop() throws {
        let g = try graph([("a", ["a"])])
        #expect(g.cycles().map { ids(g, $0) } == [["a", "a"]])
    }

    @Test func longChainIsLinear() throws {
        // 5,000 steps in a chain: recursion would overflow, quadratic work would crawl.
        let steps = (0..<5_000).map { i in ("s\(i)", i == 0 ? [] : ["s\(i - 1)"]) }
        let g = try graph(steps)
        #expect(g.cycles().isEmpty)
        #expect(g.topologicalOrder()?.count == 5_000)
    }
}

@Suite struct ValueTests {
    @Test(arguments: [("30s", 30_000), ("10m", 600_000), ("1h30m", 5_400_000), ("500ms", 500), ("1d", 86_400_000)])
    func durations(_ text: String, _ milliseconds: Int) throws {
        let d = try #require(DurationValue(text))
        #expect(d.duration == .milliseconds(milliseconds))
    }

    @Test(arguments: ["", "10", "m", "10x", "1.5h", "-1s"])
    func badDurations(_ text: String) {
        #expect(DurationValue(text) == nil)
    }

    @Test func quantities() {
        #expect(ByteQuantity("512Mi")?.bytes == 512 << 20)
        #expect(ByteQuantity("2G")?.bytes == 2_000_000_000)
        #expect(ByteQuantity("100")?.bytes == 100)
        #expect(ByteQuantity("1Zi") == nil)
    }

    @Test func modelRefKeepsSlashesInTheModel() {
        let ref = ModelRef("vllm/meta-llama/Llama-3.1-8B-Instruct")
        #expect(ref?.provider == "vllm")
        #expect(ref?.model == "meta-llama/Llama-3.1-8B-Instruct")
        #expect(ModelRef("nomodel") == nil)
        #expect(ModelRef("/x") == nil)
    }

    @Test func valuePathRendering() {
        let path = ValuePath([.key("spec"), .key("steps"), .index(2), .key("agent")])
        #expect(path.description == "spec.steps[2].agent")
        #expect(path.jsonPointer == "/spec/steps/2/agent")
        let odd = ValuePath([.key("metadata"), .key("labels"), .key("app.kubernetes.io/name")])
        #expect(odd.description == #"metadata.labels["app.kubernetes.io/name"]"#)
        #expect(odd.jsonPointer == "/metadata/labels/app.kubernetes.io~1name")
    }

    @Test func suggestions() {
        #expect(Suggestion.closest(to: "modle", among: ["model", "runtime"]) == "model")
        #expect(Suggestion.closest(to: "Allways", among: ["Always", "OnFailure", "Never"]) == "Always")
        #expect(Suggestion.closest(to: "xyz", among: ["model", "runtime"]) == nil)
        #expect(Suggestion.closest(to: "agnet", among: ["Agent"]) == "Agent")
    }

    @Test func labelSelectors() {
        let selector = LabelSelector(
            matchLabels: ["team": "content"],
            matchExpressions: [
                .init(key: "tier", operator: .in, values: ["gold", "silver"]), .init(key: "legacy", operator: .doesNotExist),
            ])
        #expect(selector.matches(["team": "content", "tier": "gold"]))
        #expect(!selector.matches(["team": "content", "tier": "bronze"]))
        #expect(!selector.matches(["team": "content", "tier": "gold", "legacy": "yes"]))
        #expect(!selector.matches(["tier": "gold"]))
    }
}

@Suite struct NodeDecoderTests {
    struct Labeled: Decodable {
        var labels: [String: String]
        var optional: [String: String]?
    }

    func node(_ yaml: String) throws -> Node {
        try #require(YAMLParser().parse(yaml, file: "x.yaml").documents.first?.root)
    }

    @Test func stringMaps() throws {
        let value = try NodeDecoder.decode(Labeled.self, from: node("labels: {a: x, b: 'y'}"))
        #expect(value.labels == ["a": "x", "b": "y"])
        #expect(value.optional == nil)
    }

    @Test func aNonStringInAMapIsReportedAtItsPlace() throws {
        #expect {
            try NodeDecoder.decode(Labeled.self, from: node("labels:\n  a: x\n  b: 3\n"))
        } throws: { error in
            guard let error = error as? NodeDecodingError else { return false }
            return error.path.description == "labels.b" && error.location.line == 3 && error.location.column == 6
                && error.message == "expected string, got integer"
        }
    }

    @Test func missingRequiredField() throws {
        #expect {
            try NodeDecoder.decode(Labeled.self, from: node("optional: {}"))
        } throws: { error in
            (error as? NodeDecodingError)?.message == #"missing required field "labels""#
        }
    }
}
