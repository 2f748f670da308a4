import CYAML
public import OrlCore
import OrlJSON

/// Reads manifest files: YAML streams of one or more documents, into located values.
///
/// - Every value and every mapping key keeps its file, line and column (1-based).
/// - Plain scalars are resolved by the YAML 1.2 core schema: `yes`, `on` and `no`
///   are strings; quoted scalars are always strings; the standard `!!` tags apply.
/// - Duplicate keys are reported at each repetition, merge keys (`<<`) are applied,
///   and size, nesting and alias expansion are limited so that no input can make a
///   parse (or anything walking its result) take unbounded time or memory.
/// - Problems become diagnostics, never thrown errors: the documents that could be
///   read are returned next to what went wrong in the others. A document with an
///   error is left out, except for duplicate keys (the first value is kept so later
///   checks still see the document). A syntax error or a limit ends the file: the
///   documents before it stay. A file that is not UTF-8 text is not read at all.
///
/// A parser holds only its limits and each `parse` call owns its libyaml parser, so
/// one parser may be used from several threads at once.
public struct YAMLParser: Sendable {
    public struct Limits: Sendable, Hashable {
        /// Larger files are not parsed at all.
        public var maxFileBytes: Int
        /// Collections nested deeper than this stop the reading of the file.
        public var maxDepth: Int
        /// How many nodes aliases may add to one file, each alias counting as a full
        /// copy of its anchor; beyond it the reading of the file stops. The budget is
        /// per file rather than per document so that a file of many small alias bombs
        /// is stopped as surely as one big one.
        public var maxAliasExpansion: Int
        /// How many bytes of text (keys and scalars) one file may expand to, aliases
        /// counted in full; beyond it the reading of the file stops. The node limit
        /// alone let one 3 MB string aliased a thousand times through.
        public var maxExpandedBytes: Int
        /// After this many problems in one file the reading of the file stops, with
        /// one more diagnostic that says so.
        public var maxDiagnostics: Int

        public init(
            maxFileBytes: Int = 4 << 20, maxDepth: Int = 100, maxAliasExpansion: Int = 100_000,
            maxDiagnostics: Int = 100, maxExpandedBytes: Int = 16 << 20
        ) {
            self.maxFileBytes = maxFileBytes
            self.maxExpandedBytes = maxExpandedBytes
            self.maxDepth = maxDepth
            self.maxAliasExpansion = maxAliasExpansion
            self.maxDiagnostics = maxDiagnostics
        }
    }

    public var limits: Limits

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Parses a file's bytes, which must be UTF-8. `file` names the file in every
    /// location, as the user should see it.
    public func parse(_ bytes: some Collection<UInt8>, file: String) -> ParsedSource {
        if let parsed = bytes.withContiguousStorageIfAvailable({ parse(buffer: $0, file: file) }) {
            return parsed
        }
        return Array(bytes).withUnsafeBufferPointer { parse(buffer: $0, file: file) }
    }

    /// Parses text that is already in memory, such as standard input or a test fixture.
    public func parse(_ text: String, file: String) -> ParsedSource {
        var text = text
        return text.withUTF8 { parse(buffer: $0, file: file) }
    }

    private func parse(buffer: UnsafeBufferPointer<UInt8>, file: String) -> ParsedSource {
        guard buffer.count <= limits.maxFileBytes else {
            let message =
                "file is \(buffer.count) bytes, over the limit of \(limits.maxFileBytes) bytes for a manifest file; "
                + "split it into smaller files"
            return ParsedSource(diagnostics: [.error(.yamlLimit, message, at: .file(file))])
        }
        // libyaml skips a UTF-8 byte order mark but counts it as a column of the first line.
        let hasByteOrderMark = buffer.count >= 3 && buffer[0] == 0xEF && buffer[1] == 0xBB && buffer[2] == 0xBF
        let buffer = hasByteOrderMark ? UnsafeBufferPointer(rebasing: buffer.dropFirst(3)) : buffer
        guard let start = buffer.baseAddress, !buffer.isEmpty else { return ParsedSource() }

        var builder = DocumentBuilder(file: file, limits: limits)
        // libyaml keeps a pointer to the parser inside the parser, so it must not move:
        // give it a fixed stack slot rather than a Swift variable.
        return withUnsafeTemporaryAllocation(of: yaml_parser_t.self, capacity: 1) { slot in
            let parser = slot.baseAddress!
            guard yaml_parser_initialize(parser) == 1 else {
                return ParsedSource(diagnostics: [.error(.yamlLimit, "out of memory starting to read the file", at: .file(file))])
            }
            defer { yaml_parser_delete(parser) }
            // Manifests are UTF-8; do not let libyaml guess UTF-16 from the first bytes.
            yaml_parser_set_encoding(parser, YAML_UTF8_ENCODING)
            yaml_parser_set_input_string(parser, start, buffer.count)

            var event = yaml_event_t()
            while true {
                guard yaml_parser_parse(parser, &event) == 1 else {
                    let error = LibYAMLError(parser.pointee, input: buffer, file: file)
                    if error.rejectsWholeFile {
                        // libyaml decodes its input ahead of the parser in 16 KiB chunks, so
                        // how many documents come before a bad byte is an accident of
                        // buffering: a file that is not UTF-8 text is not read at all.
                        return ParsedSource(diagnostics: [error.diagnostic])
                    }
                    // libyaml cannot resume after a syntax error: the documents read so
                    // far stay, the broken one and any later ones are lost.
                    return ParsedSource(documents: builder.documents, diagnostics: builder.diagnostics + [error.diagnostic])
                }
                let isEnd = event.type == YAML_STREAM_END_EVENT
                builder.handle(event)
                yaml_event_delete(&event)
                if isEnd || builder.isStopped { break }
            }
            return ParsedSource(documents: builder.documents, diagnostics: builder.diagnostics)
        }
    }
}
