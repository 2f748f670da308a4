import Foundation
import OrlCore
import OrlJSON
import Testing

@Suite struct GitWebhookTests {
    @Test func theSignatureIsGitHubs() {
        // The example in GitHub's "Validating webhook deliveries".
        let body = Array("Hello, World!".utf8)
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        #expect(GitWebhook.signature(body, secret: "It's a Secret to Everybody") == expected)
        #expect(GitWebhook.isValid(signature: expected, body: body, secret: "It's a Secret to Everybody"))
        #expect(
            GitWebhook.isValid(
                signature: expected.uppercased().replacingOccurrences(of: "SHA256=", with: "sha256="), body: body,
                secret: "It's a Secret to Everybody"))
        #expect(!GitWebhook.isValid(signature: expected, body: body, secret: "another secret"))
        #expect(!GitWebhook.isValid(signature: expected, body: Array("Hello, World?".utf8), secret: "It's a Secret to Everybody"))
        #expect(!GitWebhook.isValid(signature: nil, body: body, secret: "It's a Secret to Everybody"))
        #expect(!GitWebhook.isValid(signature: "sha1=0123", body: body, secret: "It's a Secret to Everybody"))
        #expect(!GitWebhook.isValid(signature: expected, body: body, secret: ""), "an empty secret proves nothing")
    }

    @Test func aPushMovesTheWatchedRefOnly() throws {
        let body = Array(#"{"ref": "refs/heads/main", "after": "abc", "repository": {"default_branch": "main"}}"#.utf8)
        let push = try GitWebhook.event(named: "push", body: body)
        #expect(push == .push(ref: "refs/heads/main", after: "abc", defaultBranch: "main"))
        #expect(GitWebhook.moves(push, watched: nil))
        #expect(GitWebhook.moves(push, watched: "main"))
        #expect(GitWebhook.moves(push, watched: "refs/heads/main"))
        #expect(!GitWebhook.moves(push, watched: "dev"))
        let other = try GitWebhook.event(
            named: "push", body: Array(#"{"ref": "refs/heads/dev", "repository": {"default_branch": "main"}}"#.utf8))
        #expect(!GitWebhook.moves(other, watched: nil))
        #expect(try GitWebhook.event(named: "ping", body: []) == .ping)
        #expect(try GitWebhook.event(named: "issues", body: []) == .other("issues"))
        #expect(!GitWebhook.moves(.ping, watched: nil))
        #expect(throws: WebhookError.self) { try GitWebhook.event(named: "push", body: Array("not json".utf8)) }
        #expect(throws: WebhookError.self) { try GitWebhook.event(named: nil, body: []) }
    }
}
