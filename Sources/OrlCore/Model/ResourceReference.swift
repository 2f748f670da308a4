import OrlJSON

/// What a command line names: `agent/writer`, `agents/writer`, `ag/writer`, or the kind
/// and the name as two words. One parser for get, describe, delete, events and explain.
public struct ResourceReference: Sendable, Hashable {
    public var kind: ResourceKind
    public var name: String

    public init(kind: ResourceKind, name: String) {
        self.kind = kind
        self.name = name
    }

    public func id(namespace: String) -> ResourceID { ResourceID(kind: kind.rawValue, namespace: namespace, name: name) }

    /// `agent/writer`: how kubectl names one resource (`-o name`, `delete` lines).
    public var slashed: String { "\(kind.rawValue.lowercased())/\(name)" }

    /// Parses `KIND/NAME`.
    public init(parsing text: String) throws(ReferenceSyntaxError) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw ReferenceSyntaxError("name the resource as KIND/NAME, e.g. agent/writer; got \(Diagnostic.quoted(text))")
        }
        guard !parts[1].isEmpty else {
            throw ReferenceSyntaxError("\(Diagnostic.quoted(text)) names no resource; use KIND/NAME, e.g. agent/writer")
        }
        self.init(kind: try Self.kind(String(parts[0])), name: String(parts[1]))
    }

    /// Resolves a kind as typed: singular, plural or short, any case.
    public static func kind(_ text: String) throws(ReferenceSyntaxError) -> ResourceKind {
        if let kind = ResourceKind(userInput: text) { return kind }
        let names = ResourceKind.allCases.flatMap { [$0.rawValue.lowercased(), $0.plural] + $0.shortNames }
        let hint = Suggestion.closest(to: text.lowercased(), among: names).map { " (did you mean \(Diagnostic.quoted($0))?)" } ?? ""
        let known = ResourceKind.allCases.map { $0.rawValue.lowercased() }.joined(separator: ", ")
        throw ReferenceSyntaxError("unknown resource type \(Diagnostic.quoted(text))\(hint); known: \(known)")
    }
}

public struct ReferenceSyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
