internal import Crypto
public import OrlJSON

/// One text per value: sorted keys, no insignificant space, numbers in their shortest
/// form (`0.60` and `0.6` are one number). What the store keeps and what "changed"
/// means, so reformatting YAML never shows up as a change.
public enum CanonicalJSON {
    public static func encode(_ node: Node) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        write(node, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// SHA-256 of the canonical form, in hex.
    public static func hash(_ node: Node) -> String {
        var out: [UInt8] = []
        write(node, to: &out)
        return hex(SHA256.hash(data: out))
    }

    /// A whole manifest's canonical text, with where its `spec` is in it: keys are
    /// sorted, so the spec is one contiguous run of the manifest's bytes, and its hash
    /// needs no second encoding (nor any work when the manifest did not change).
    ///
    /// Its hashes are taken when it is made: an apply makes the canonical forms on every
    /// core while it parses, and the index, the desired set and the plan then read the
    /// hashes on one thread (a first apply of 100,000 manifests hashed each text twice
    /// and each spec once there).
    public struct Manifest: Sendable {
        public let text: String
        /// SHA-256 of `text`, in hex (`textHash(text)`).
        public let hash: String
        /// SHA-256 of the canonical `spec`, in hex.
        public let specHash: String

        init(bytes: [UInt8], spec: Range<Int>?) {
            text = String(decoding: bytes, as: UTF8.self)
            hash = CanonicalJSON.hex(SHA256.hash(data: bytes))
            specHash = bytes.withUnsafeBytes { bytes in
                guard let spec else { return CanonicalJSON.hex(SHA256.hash(data: Array("null".utf8))) }
                return CanonicalJSON.hex(SHA256.hash(data: UnsafeRawBufferPointer(rebasing: bytes[spec])))
            }
        }
    }

    public static func manifest(_ document: Node) -> Manifest {
        var out: [UInt8] = []
        out.reserveCapacity(2048)
        var spec: Range<Int>?
        if case .object(let members) = document.value {
            out.append(UInt8(ascii: "{"))
            for (i, position) in order(members).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                quote(members[position].key, into: &out)
                out.append(UInt8(ascii: ":"))
                let start = out.count
                write(members[position].value, to: &out)
                if members[position].key == "spec" { spec = start..<out.count }
            }
            out.append(UInt8(ascii: "}"))
        } else {
            write(document, to: &out)
        }
        return Manifest(bytes: out, spec: spec)
    }

    /// SHA-256 of a text's UTF-8 bytes, in hex: a stored manifest's hash.
    public static func textHash(_ text: String) -> String {
        var text = text
        return text.withUTF8 { hex(SHA256.hash(data: UnsafeRawBufferPointer($0))) }
    }

    /// SHA-256 of bytes, in hex: a manifest file's content hash.
    public static func bytesHash(_ bytes: [UInt8]) -> String {
        hex(SHA256.hash(data: bytes))
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in digest {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Positions of the members in byte order of their UTF-8 keys, like every canonical
    /// JSON scheme. Positions, not members: copying members costs a retain per field.
    private static func order(_ members: [Node.Member]) -> [Int] {
        // Keys written in order are common enough to check first.
        if zip(members, members.dropFirst()).allSatisfy({ $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            return Array(members.indices)
        }
        return members.indices.sorted { members[$0].key.utf8.lexicographicallyPrecedes(members[$1].key.utf8) }
    }

    private static func write(_ node: Node, to out: inout [UInt8]) {
        switch node.value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let n):
            if let i = n.integer {
                out.append(contentsOf: String(i).utf8)
            } else if n.double.isFinite {
                out.append(contentsOf: String(n.double).utf8)
            } else {
                // JSON has no infinities; YAML's .inf and .nan are kept as strings.
                quote(n.text, into: &out)
            }
        case .string(let s): quote(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                write(item, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, position) in order(members).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                quote(members[position].key, into: &out)
                out.append(UInt8(ascii: ":"))
                write(members[position].value, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    private static func quote(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { bytes in
            // Most strings need no escaping: copy them whole.
            guard bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
                out.append(contentsOf: bytes)
                return
            }
            for byte in bytes {
                switch byte {
                case UInt8(ascii: "\""): out.append(contentsOf: #"\""#.utf8)
                case UInt8(ascii: "\\"): out.append(contentsOf: #"\\"#.utf8)
                case UInt8(ascii: "\n"): out.append(contentsOf: #"\n"#.utf8)
                case UInt8(ascii: "\r"): out.append(contentsOf: #"\r"#.utf8)
                case UInt8(ascii: "\t"): out.append(contentsOf: #"\t"#.utf8)
                case 0..<0x20:
                    let digits = Array("0123456789abcdef".utf8)
                    out.append(contentsOf: #"\u00"#.utf8)
                    out.append(digits[Int(byte >> 4)])
                    out.append(digits[Int(byte & 0xF)])
                default: out.append(byte)
                }
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
