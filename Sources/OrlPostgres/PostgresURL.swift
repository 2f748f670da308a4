public import OrlCore

/// Where a PostgreSQL state is: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE?PARAMS`,
/// as libpq reads it (`postgresql://` too). Parameters: `sslmode` (disable, prefer,
/// require, verify-ca, verify-full), `sslrootcert` (a PEM file of trusted roots),
/// `connect_timeout` (seconds), `application_name`. Anything else is refused rather than
/// ignored, as libpq does: a misspelt `sslmode` must not silently mean plain text.
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    public enum SSLMode: String, Sendable, Hashable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public var user: String
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String
    public var sslMode: SSLMode
    public var sslRootCertificate: String?
    public var connectTimeoutSeconds: Int
    public var applicationName: String

    /// Whether `text` names a PostgreSQL state rather than a directory.
    public static func isPostgres(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    /// Parses the URL; `environment` supplies PGPASSWORD (and PGUSER) when the URL names none,
    /// as libpq does, so that passwords need not be on a command line.
    public init(parsing text: String, environment: [String: String] = [:]) throws(StoreError) {
        func bad(_ why: String) -> StoreError {
            StoreError("invalid PostgreSQL state URL \(PostgresURL.redacted(text)): \(why)")
        }
        var rest: Substring
        if text.hasPrefix("postgres://") {
            rest = text.dropFirst("postgres://".count)
        } else if text.hasPrefix("postgresql://") {
            rest = text.dropFirst("postgresql://".count)
        } else {
            throw bad("it must start with postgres://")
        }
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var user = environment["PGUSER"].flatMap { $0.isEmpty ? nil : $0 }
        var password = environment["PGPASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                user = try Self.decode(userInfo[..<colon], bad)
                password = try Self.decode(userInfo[userInfo.index(after: colon)...], bad)
            } else if !userInfo.isEmpty {
                user = try Self.decode(userInfo, bad)
            }
        }
        var host = String(rest)
        var port = 5432
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { throw bad("an IPv6 host must be closed by ]") }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                guard let number = Int(after.dropFirst()), (1...65535).contains(number) else { throw bad("the port is not a number") }
                port = number
            } else if !after.isEmpty {
                throw bad("unexpected \(after) after the host")
            }
            host = String(host[host.index(after: host.startIndex)..<close])
        } else if let colon = host.lastIndex(of: ":") {
            guard let number = Int(host[host.index(after: colon)...]), (1...65535).contains(number) else {
                throw bad("the port is not a number from 1 to 65535")
            }
            port = number
            host = String(host[..<colon])
        }
        guard !host.isEmpty else { throw bad("it names no host") }
        let database = try Self.decode(path, bad)
        guard !database.isEmpty else { throw bad("it names no database (postgres://USER@HOST:PORT/DATABASE)") }
        guard let user, !user.isEmpty else { throw bad("it names no user (postgres://USER@HOST/DATABASE, or PGUSER)") }

        var sslMode = SSLMode.prefer
        var rootCertificate: String?
        var connectTimeout = 10
        var applicationName = "orlctl"
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = try Self.decode(parts[0], bad)
            let value = parts.count > 1 ? try Self.decode(parts[1], bad) : ""
            switch key {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw bad("sslmode must be one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", ")), not \(value)")
                }
                sslMode = mode
            case "sslrootcert": rootCertificate = value
            case "connect_timeout":
                guard let seconds = Int(value), seconds > 0 else { throw bad("connect_timeout must be a number of seconds above 0") }
                connectTimeout = seconds
            case "application_name": applicationName = value
            default:
                throw bad("unknown parameter \(key) (known: sslmode, sslrootcert, connect_timeout, application_name)")
            }
        }
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.database = database
        self.sslMode = sslMode
        self.sslRootCertificate = rootCertificate
        self.connectTimeoutSeconds = connectTimeout
        self.applicationName = applicationName
    }

    /// The URL without its password: what messages and `describe state` show.
    public var description: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "postgres://\(user)@\(hostPart):\(port)/\(database)"
    }

    /// `text` with any password replaced by `***`, for an error about a URL that did not parse.
    public static func redacted(_ text: String) -> String {
        guard let colonSlash = text.firstIndex(of: ":"), text[colonSlash...].hasPrefix("://") else { return text }
        let start = text.index(colonSlash, offsetBy: 3)
        guard let at = text[start...].lastIndex(of: "@") else { return text }
        let userInfo = text[start..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":***" + String(text[at...])
    }

    private static func decode(_ text: Substring, _ bad: (String) -> StoreError) throws(StoreError) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                throw bad("a % escape must be followed by two hex digits")
            }
            bytes.append(high << 4 | low)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
