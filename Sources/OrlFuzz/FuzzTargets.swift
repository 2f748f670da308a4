public import OrlCore
import OrlJSON
import OrlYAML

/// What the fuzzers drive, one function per target: each must return for any input,
/// without trapping, hanging or holding memory far beyond the input's size. The
/// libFuzzer driver (`orl-fuzz`, built by `scripts/fuzz`) and the corpus test
/// (`FuzzCorpusTests`) both call these, so the corpus kept in `Tests/FuzzCorpus/`
/// runs in every test pass.
public enum FuzzTargets {
    public static let all: [(name: String, run: @Sendable ([UInt8]) -> Void)] = [
        ("yaml", yaml), ("schema", schema), ("api", api),
    ]

    /// The manifest path: YAML loader, schema validation, decoding, analysis.
    public static func yaml(_ bytes: [UInt8]) {
        let parsed = YAMLParser().parse(bytes, file: "fuzz.yaml")
        _ = ManifestValidation.validate([parsed])
    }

    /// The JSON Schema validator: a schema, a NUL byte, an instance (both JSON). With
    /// no NUL the input is an instance of the bundled Agent schema.
    public static func schema(_ bytes: [UInt8]) {
        guard let nul = bytes.firstIndex(of: 0) else {
            guard let instance = try? JSONParser.parse(bytes: bytes, file: "instance.json") else { return }
            _ = ManifestSchemas.bundled.schema(for: .agent).validate(instance)
            return
        }
        guard let root = try? JSONParser.parse(bytes: Array(bytes[..<nul]), file: "schema.json"),
            let schema = try? JSONSchema(root),
            let instance = try? JSONParser.parse(bytes: Array(bytes[(nul + 1)...]), file: "instance.json")
        else { return }
        _ = schema.isValid(instance)
        _ = schema.validate(instance)
    }

    /// What the API decodes of an agent's request or an upstream's answer: chat
    /// bodies, usage, task paths, the poll's `wait`, streamed events, masking.
    public static func api(_ bytes: [UInt8]) {
        if let chat = try? ModelRequest(body: bytes) {
            _ = chat.upstreamBody(model: "m", maxTokens: Int.max)
            let usage = TokenUsage(prompt: chat.promptBound, completion: chat.maxTokens ?? 0)
            _ = Charge(usd: 0, tokens: usage.total) + Charge(usd: .infinity, tokens: .max)
        }
        if let usage = TokenUsage(body: bytes) { _ = usage.total }
        let text = String(decoding: bytes, as: UTF8.self)
        _ = TaskID(text)
        if let seconds = Double(text) { _ = Duration.seconds(clamping: seconds, atMost: .seconds(25)) }
        _ = DurationValue(text)
        _ = ByteQuantity(text)
        var events = ServerSentEvents()
        _ = events.feed(bytes)
        let mask = CredentialMask(["sk-fuzz/se\u{e9}cret-1"])
        _ = mask.mask(bytes)
        var stream = CredentialMask.Stream(mask)
        let half = bytes.count / 2
        _ = stream.feed(bytes[..<half]) + stream.feed(bytes[half...]) + stream.finish()
    }
}
