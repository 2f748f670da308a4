import OrlCore
import OrlJSON
import Testing

/// A credential an upstream echoes is masked in every form a JSON parser decodes back
/// to it: plain, `\/`, `\u002d`, each character as `\uXXXX` in lower, upper or mixed
/// case hex, surrogate pairs, and split across the chunks of a stream.
@Suite struct CredentialMaskTests {
    static let secret = "sk-live/AbC_123+xyz"

    /// Every way to write the secret inside a JSON string.
    static func forms(of secret: String) -> [String] {
        func escaped(_ scalar: Unicode.Scalar, upper: Bool) -> String {
            let hex = String(scalar.value, radix: 16, uppercase: upper)
            return "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        }
        let scalars = Array(secret.unicodeScalars)
        return [
            secret,
            secret.replacingAll("/", with: "\\/"),
            secret.replacingAll("-", with: "\\u002d"),
            secret.replacingAll("-", with: "\\u002D"),
            scalars.map { escaped($0, upper: false) }.joined(),
            scalars.map { escaped($0, upper: true) }.joined(),
            scalars.enumerated().map { $0.offset % 2 == 0 ? escaped($0.element, upper: $0.offset % 4 == 0) : String($0.element) }.joined(),
            scalars.enumerated().map { i, s in i % 3 == 0 ? String(s) : escaped(s, upper: i % 2 == 0) }.joined()
                .replacingAll("\\u002f", with: "\\/"),
        ]
    }

    @Test func everyEscapedFormIsMaskedAndDecodesToNoSecret() throws {
        let mask = CredentialMask([Self.secret])
        for form in Self.forms(of: Self.secret) {
            let body = #"{"echo": "key=\#(form)!", "\#(form)": 1, "list": ["\#(form)"]}"#
            // The form decodes to the secret: the test would catch a mask that missed it.
            let decoded = try JSONParser.parse(body, file: "t")
            #expect(decoded["echo"]?.string == "key=\(Self.secret)!", "\(form)")
            let masked = mask.mask(body)
            #expect(!masked.contains(Self.secret), "\(form)")
            let parsed = try JSONParser.parse(masked, file: "t")
            #expect(parsed["echo"]?.string == "key=(sensitive)!", "\(form): \(masked)")
            #expect(parsed["list"]?.elements?.first?.string == "(sensitive)")
            #expect(JSONValue(parsed).compactRendered().contains("sensitive") && !JSONValue(parsed).compactRendered().contains(Self.secret))
        }
    }

    @Test func nonASCIISecretsAndSurrogatePairsAreMasked() throws {
        let secret = "clé-🔑-x"
        let mask = CredentialMask([secret])
        for body in [#""clé-🔑-x""#, #""cl\u00e9-\ud83d\udd11-x""#, #""cl\u00E9\u002D\uD83D\uDD11\u002dx""#] {
            let masked = mask.mask(body)
            let value = try JSONParser.parse(masked, file: "t").string
            #expect(value == "(sensitive)", "\(body) -> \(masked)")
        }
    }

    @Test func decodedValuesAreMaskedToo() {
        let mask = CredentialMask([Self.secret])
        let value = JSONValue.object([("a", .string("x\(Self.secret)y")), (Self.secret, .array([.string(Self.secret), .int(1)]))])
        let rendered = mask.mask(value).compactRendered()
        #expect(!rendered.contains(Self.secret) && rendered.contains("x(sensitive)y"))
    }

    /// Split anywhere across two or three chunks, a streamed echo is still masked.
    @Test func aStreamMasksAcrossChunkBoundaries() {
        let mask = CredentialMask([Self.secret])
        for form in Self.forms(of: Self.secret) {
            let text = Array("data: {\"delta\": \"\(form)\"}\n\ndata: [DONE]\n\n".utf8)
            for cut in stride(from: 0, through: text.count, by: 3) {
                var stream = CredentialMask.Stream(mask)
                let second = min(text.count, cut + 7)
                let out = stream.feed(text[..<cut]) + stream.feed(text[cut..<second]) + stream.feed(text[second...]) + stream.finish()
                let string = String(decoding: out, as: UTF8.self)
                #expect(string.contains("(sensitive)") && !string.contains(Self.secret), "\(form) cut at \(cut): \(string)")
            }
        }
    }

    @Test func textWithoutTheSecretIsUnchanged() {
        let mask = CredentialMask([Self.secret, ""])
        for text in ["", "\\", "\\u", "\\u12", "\\uZZZZ", "\\ud800", "sk-live", #"{"a": "\u0041\/\n"}"#] {
            #expect(mask.mask(text) == text)
        }
        #expect(CredentialMask([]).mask("abc") == "abc")
    }
}

extension String {
    fileprivate func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
