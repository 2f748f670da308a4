internal import Crypto

/// HMAC-SHA256 in hex, and a comparison that takes the same time wherever two strings
/// differ: the dashboard's session cookies and form tokens, derived from the operator token.
public enum MessageAuthentication {
    public static func hex(key: String, message: String) -> String {
        CanonicalJSON.hex(HMAC<SHA256>.authenticationCode(for: Array(message.utf8), using: SymmetricKey(data: Array(key.utf8))))
    }

    public static func equal(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for (p, q) in zip(x, y) { difference |= p ^ q }
        return difference == 0
    }
}
