import Synchronization

/// A position in a manifest source, 1-based like compilers and editors report it.
///
/// Every parsed value and mapping key carries one, so it is kept trivially copyable
/// (16 bytes, no reference count): the file name is interned once per file and the
/// location holds a pointer to the interned name. Copying a located tree used to
/// retain and release the file name at every node, a fifth of validation's time.
public struct SourceLocation: Sendable, Hashable, Comparable, CustomStringConvertible {
    private var name: InternedFileName.Reference
    private var storedLine: Int32
    private var storedColumn: Int32

    /// The file as the user named it (a path relative to where orlctl ran, `<stdin>`,
    /// or a path inside a git tree); never resolved, so messages echo what the user typed.
    public var file: String {
        get { name.object.name }
        set { name = InternedFileName.intern(newValue) }
    }

    public var line: Int {
        get { Int(storedLine) }
        set { storedLine = Int32(clamping: newValue) }
    }

    public var column: Int {
        get { Int(storedColumn) }
        set { storedColumn = Int32(clamping: newValue) }
    }

    public init(file: String, line: Int, column: Int) {
        self.name = InternedFileName.intern(file)
        self.storedLine = Int32(clamping: line)
        self.storedColumn = Int32(clamping: column)
    }

    /// Another position in the same file: what parsers use for every node, so that the
    /// file name is interned once per file rather than once per value.
    public func at(line: Int, column: Int) -> SourceLocation {
        var location = self
        location.storedLine = Int32(clamping: line)
        location.storedColumn = Int32(clamping: column)
        return location
    }

    /// A location for a whole file, used for problems that have no better position.
    public static func file(_ file: String) -> SourceLocation {
        SourceLocation(file: file, line: 1, column: 1)
    }

    public static func == (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        lhs.name == rhs.name && lhs.storedLine == rhs.storedLine && lhs.storedColumn == rhs.storedColumn
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(storedLine)
        hasher.combine(storedColumn)
    }

    public static func < (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        if lhs.name != rhs.name {
            let (a, b) = (lhs.file, rhs.file)
            if a != b { return a < b }
        }
        return (lhs.storedLine, lhs.storedColumn) < (rhs.storedLine, rhs.storedColumn)
    }

    public var description: String { file + ":" + String(line) + ":" + String(column) }
}

/// A file name, interned for the life of the process: one object per distinct name
/// (compared by its exact code points), never freed, so that a location can point at
/// it without counting references.
final class InternedFileName: Sendable {
    let name: String

    private init(_ name: String) { self.name = name }

    /// A pointer to an interned name; equal pointers mean equal names.
    struct Reference: @unchecked Sendable, Hashable {
        let pointer: UnsafeRawPointer

        var object: InternedFileName { Unmanaged<InternedFileName>.fromOpaque(pointer).takeUnretainedValue() }

        static func == (lhs: Reference, rhs: Reference) -> Bool { lhs.pointer == rhs.pointer }
        func hash(into hasher: inout Hasher) { hasher.combine(pointer) }
    }

    /// Exact (code point) equality: two spellings of one name that Swift's `==` would
    /// equate are still two files.
    private struct Key: Hashable {
        let name: String
        static func == (lhs: Key, rhs: Key) -> Bool { lhs.name.hasSameCodePoints(as: rhs.name) }
        func hash(into hasher: inout Hasher) {
            var name = name
            name.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        }
    }

    private static let table = Mutex<[Key: Reference]>([:])

    static func intern(_ name: String) -> Reference {
        let key = Key(name: name)
        return table.withLock { table in
            if let found = table[key] { return found }
            let reference = Reference(pointer: UnsafeRawPointer(Unmanaged.passRetained(InternedFileName(name)).toOpaque()))
            table[key] = reference
            return reference
        }
    }
}
