public import OrlJSON

/// One document of a manifest file (a file holds several, separated by `---`).
public struct SourceDocument: Sendable {
    public var file: String
    /// 0-based position of the document in its file.
    public var index: Int
    public var root: Node

    public init(file: String, index: Int, root: Node) {
        self.file = file
        self.index = index
        self.root = root
    }
}

/// What a parser makes of one file: the documents it could read and every problem it
/// found. A document that could not be built is left out (a duplicate key alone keeps
/// it, with the first value); a limit or an encoding error stops the rest of the file.
public struct ParsedSource: Sendable {
    public var documents: [SourceDocument]
    public var diagnostics: [Diagnostic]

    public init(documents: [SourceDocument] = [], diagnostics: [Diagnostic] = []) {
        self.documents = documents
        self.diagnostics = diagnostics
    }
}
