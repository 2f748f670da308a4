/// Standard base64 (RFC 4648, `+/`, `=` padding), for master keys: the core has no
/// Foundation, and a key must be read strictly (a typo is an error, not another key).
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = bytes[i]
            let b1 = i + 1 < bytes.count ? bytes[i + 1] : 0
            let b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
            out.append(i + 1 < bytes.count ? alphabet[Int((b1 & 0x0F) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes, or nil unless `text` is canonical padded base64 (no spaces, no
    /// stray bits in the last character).
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 4 * 3)
        var i = 0
        while i < chars.count {
            let last = i + 4 == chars.count
            let padding = last ? (chars[i + 3] == UInt8(ascii: "=") ? (chars[i + 2] == UInt8(ascii: "=") ? 2 : 1) : 0) : 0
            var quad: [UInt8] = []
            for j in 0..<(4 - padding) {
                let v = values[Int(chars[i + j])]
                guard v != 0xFF else { return nil }
                quad.append(v)
            }
            out.append(quad[0] << 2 | quad[1] >> 4)
            if padding == 2 {
                guard quad[1] & 0x0F == 0 else { return nil }
            } else {
                out.append((quad[1] & 0x0F) << 4 | quad[2] >> 2)
                if padding == 1 {
                    guard quad[2] & 0x03 == 0 else { return nil }
                } else {
                    out.append((quad[2] & 0x03) << 6 | quad[3])
                }
            }
            i += 4
        }
        return out
    }
}
