internal import Crypto
import OrlJSON

/// GitHub-style push webhooks, as `orlctl watch --webhook` receives them: the signature
/// check (`X-Hub-Signature-256`, an HMAC-SHA256 of the body with the shared secret) and
/// whether a delivery is a push to the ref being watched. Pure: the HTTP server is an
/// adapter's.
public enum GitWebhook {
    /// What a delivery asks for.
    public enum Event: Sendable, Hashable {
        /// GitHub's test delivery when a hook is created.
        case ping
        /// A push: the ref it moved (`refs/heads/main`), the commit it moved to, and the
        /// repository's default branch.
        case push(ref: String, after: String?, defaultBranch: String?)
        /// Any other event: acknowledged and ignored.
        case other(String)
    }

    /// `sha256=` and the hex HMAC-SHA256 of `body` keyed with `secret`.
    public static func signature(_ body: [UInt8], secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(secret.utf8)))
        return "sha256="
            + mac.map { byte in
                let hex = String(byte, radix: 16)
                return byte < 16 ? "0" + hex : hex
            }.joined()
    }

    /// Whether the `X-Hub-Signature-256` header proves the body came from someone who
    /// holds the secret. Compared in constant time, so the check leaks nothing of the
    /// expected value; a missing or malformed header is not valid.
    public static func isValid(signature header: String?, body: [UInt8], secret: String) -> Bool {
        guard let header, !secret.isEmpty else { return false }
        let expected = Array(signature(body, secret: secret).utf8)
        let given = Array(header.lowercased().utf8)
        guard given.count == expected.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(given, expected) { difference |= a ^ b }
        return difference == 0
    }

    /// Reads the delivery: the `X-GitHub-Event` header and, for a push, the JSON body.
    public static func event(named name: String?, body: [UInt8]) throws(WebhookError) -> Event {
        switch name {
        case "ping":
            return .ping
        case "push":
            let root: Node
            do {
                root = try JSONParser.parse(bytes: body, file: "<webhook>")
            } catch {
                throw WebhookError("the push payload is not JSON: \(error.message)")
            }
            guard let ref = root["ref"]?.string else { throw WebhookError("the push payload has no \"ref\"") }
            return .push(ref: ref, after: root["after"]?.string, defaultBranch: root["repository"]?["default_branch"]?.string)
        case let other?:
            return .other(other)
        case nil:
            throw WebhookError("no X-GitHub-Event header; is this a GitHub-style webhook?")
        }
    }

    /// Whether a push moved the ref a source watches: `ref` as `--ref` takes it (a branch,
    /// a tag or a full name), or nil for the default branch.
    public static func moves(_ event: Event, watched ref: String?) -> Bool {
        guard case .push(let pushed, _, let defaultBranch) = event else { return false }
        guard let ref else { return defaultBranch.map { pushed == "refs/heads/" + $0 } ?? true }
        if ref.hasPrefix("refs/") { return pushed == ref }
        return pushed == "refs/heads/" + ref || pushed == "refs/tags/" + ref
    }
}

public struct WebhookError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
