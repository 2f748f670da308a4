public import OrlJSON

/// A problem found in the user's manifests, with where it is and what to do about it.
///
/// Every check in orl reports `Diagnostic` values rather than throwing, so one run
/// reports every problem at once, sorted by file and line.
public struct Diagnostic: Sendable, Hashable {
    public enum Severity: String, Sendable, Hashable, Comparable {
        case warning
        case error

        public static func < (lhs: Severity, rhs: Severity) -> Bool {
            lhs == .warning && rhs == .error
        }
    }

    /// A pointer to a related place: the other end of a reference, the first
    /// definition of a duplicate, a hop of a cycle.
    public struct Note: Sendable, Hashable {
        public var message: String
        public var location: SourceLocation?

        public init(_ message: String, at location: SourceLocation? = nil) {
            self.message = message
            self.location = location
        }
    }

    public var severity: Severity
    public var code: DiagnosticCode
    public var message: String
    public var location: SourceLocation?
    /// `Kind/name` of the resource the problem belongs to, when there is one.
    public var resource: ResourceID?
    /// Where in the resource the problem is: `spec.steps[2].agent`.
    public var path: ValuePath?
    public var notes: [Note]

    public init(
        _ severity: Severity,
        _ code: DiagnosticCode,
        _ message: String,
        at location: SourceLocation?,
        resource: ResourceID? = nil,
        path: ValuePath? = nil,
        notes: [Note] = []
    ) {
        self.severity = severity
        self.code = code
        self.message = message
        self.location = location
        self.resource = resource
        self.path = path
        self.notes = notes
    }

    public static func error(
        _ code: DiagnosticCode, _ message: String, at location: SourceLocation?,
        resource: ResourceID? = nil, path: ValuePath? = nil, notes: [Note] = []
    ) -> Diagnostic {
        Diagnostic(.error, code, message, at: location, resource: resource, path: path, notes: notes)
    }

    public static func warning(
        _ code: DiagnosticCode, _ message: String, at location: SourceLocation?,
        resource: ResourceID? = nil, path: ValuePath? = nil, notes: [Note] = []
    ) -> Diagnostic {
        Diagnostic(.warning, code, message, at: location, resource: resource, path: path, notes: notes)
    }
}

extension Diagnostic {
    /// The order users read diagnostics in: by file, line and column; problems with no
    /// location last; then by code and message so the order never depends on timing.
    public static func reportOrder(_ a: Diagnostic, _ b: Diagnostic) -> Bool {
        switch (a.location, b.location) {
        case (let la?, let lb?) where la != lb: return la < lb
        case (.some, nil): return true
        case (nil, .some): return false
        default: break
        }
        if a.severity != b.severity { return a.severity > b.severity }
        if a.code != b.code { return a.code.rawValue < b.code.rawValue }
        return a.message < b.message
    }
}

extension Diagnostic {
    /// A value as messages show it: in double quotes, escaped so the message stays on
    /// one line, and shortened when long.
    public static func quoted(_ text: String) -> String { MessageText.quoted(text) }
}

extension Diagnostic {
    /// The message as it stands alone on a line: schema messages speak of a field's
    /// value, so the field's path goes in front of them.
    public var headline: String {
        let subject = code == .schemaInvalid ? path.flatMap { $0.isRoot ? nil : "\($0): " } ?? "" : ""
        return subject + message
    }

    /// Identifies a problem across runs without its line, so that it keeps its identity
    /// when lines are added above it (SARIF alerts; what review calls new, fixed and
    /// still present): code, file, resource, field path and message, hashed with 64-bit
    /// FNV-1a (stable across processes, unlike `Hasher`).
    public var fingerprint: String {
        let parts = [
            code.rawValue, location?.file ?? "", resource?.namespace ?? "", resource?.description ?? "", path?.description ?? "", message,
        ]
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in parts.joined(separator: "\u{0}").utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

extension Array where Element == Diagnostic {
    // Through the buffer, reading only each severity: `contains` and `count(where:)`
    // copy every diagnostic they look at, thousands at each apply of a large fleet.
    public var hasErrors: Bool {
        withUnsafeBufferPointer { buffer in buffer.indices.contains { buffer[$0].severity == .error } }
    }

    /// How many have this severity.
    public func count(of severity: Diagnostic.Severity) -> Int {
        withUnsafeBufferPointer { buffer in
            var count = 0
            for i in buffer.indices where buffer[i].severity == severity { count += 1 }
            return count
        }
    }

    public func sortedForReport() -> [Diagnostic] {
        sorted(by: Diagnostic.reportOrder)
    }
}
