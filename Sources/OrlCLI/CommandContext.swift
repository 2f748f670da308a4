import Glibc
import Synchronization

/// What a command reads and writes besides its arguments and the files it names: the
/// environment, standard input, output and error. The `orlctl` binary uses its own
/// process's; a command run in process (the tests) is given its own, so that commands
/// run side by side never see each other's output or environment.
public struct CommandContext: Sendable {
    /// Where a command writes text.
    public enum Output: Sendable {
        case descriptor(Int32)
        case capture(OutputCapture)
    }

    /// Where standard input comes from.
    public enum Input: Sendable {
        case descriptor(Int32)
        case bytes([UInt8])
    }

    public var environment: [String: String]
    public var standardInput: Input
    /// Standard input when it was given as bytes (in process); nil when it is a descriptor.
    public var standardInputBytes: [UInt8]? {
        guard case .bytes(let bytes) = standardInput else { return nil }
        return bytes
    }
    public var standardOutput: Output
    public var standardError: Output
    /// Colours and prompts depend on these; captured output is never a terminal.
    public var standardInputIsTerminal: Bool
    public var standardOutputIsTerminal: Bool
    /// Whether this is the `orlctl` process's own context: the process ends when the
    /// command does (so memory need not be freed, see `keepUntilExit`), and its
    /// environment can be read as raw bytes.
    var isProcess: Bool

    /// The process's own descriptors and environment, as `orlctl` runs.
    static let process = CommandContext(
        environment: System.processEnvironment(), standardInput: .descriptor(0), standardOutput: .descriptor(1),
        standardError: .descriptor(2), standardInputIsTerminal: isatty(0) == 1, standardOutputIsTerminal: isatty(1) == 1,
        isProcess: true)

    /// A context for a command run in process: the environment given, standard input
    /// from `standardInput`, both outputs captured.
    public init(environment: [String: String], standardInput: [UInt8] = []) {
        self.init(
            environment: environment, standardInput: .bytes(standardInput), standardOutput: .capture(OutputCapture()),
            standardError: .capture(OutputCapture()), standardInputIsTerminal: false, standardOutputIsTerminal: false,
            isProcess: false)
    }

    init(
        environment: [String: String], standardInput: Input, standardOutput: Output, standardError: Output,
        standardInputIsTerminal: Bool, standardOutputIsTerminal: Bool, isProcess: Bool
    ) {
        self.environment = environment
        self.standardInput = standardInput
        self.standardOutput = standardOutput
        self.standardError = standardError
        self.standardInputIsTerminal = standardInputIsTerminal
        self.standardOutputIsTerminal = standardOutputIsTerminal
        self.isProcess = isProcess
    }

    /// The context of the command running in this task.
    @TaskLocal static var current = CommandContext.process

    /// An environment variable's bytes as they are (the process's environment may hold
    /// bytes that are not UTF-8, which a `String` would repair).
    func environmentBytes(_ name: String) -> [UInt8]? {
        guard isProcess else { return environment[name].map { Array($0.utf8) } }
        guard let value = getenv(name) else { return nil }
        return Array(UnsafeRawBufferPointer(start: value, count: strlen(value)))
    }

    /// Standard input whole, refused past `limit` bytes (it has no size to check up front).
    func readStandardInput(limit: Int = .max) throws(InputError) -> [UInt8] {
        switch standardInput {
        case .bytes(let bytes):
            guard bytes.count <= limit else { throw .tooLarge }
            return bytes
        case .descriptor(let descriptor):
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0 {
                    if errno == EINTR { continue }
                    throw .system(errno)
                }
                if count == 0 { return bytes }
                bytes.append(contentsOf: chunk[0..<count])
                if bytes.count > limit { throw .tooLarge }
            }
        }
    }

    enum InputError: Error {
        case tooLarge
        case system(Int32)
    }
}

/// The bytes a command wrote, kept for whoever ran it in process.
public final class OutputCapture: Sendable {
    private let bytes = Mutex<[UInt8]>([])

    public init() {}

    func append(_ text: String) {
        bytes.withLock { $0.append(contentsOf: text.utf8) }
    }

    public var text: String { bytes.withLock { String(decoding: $0, as: UTF8.self) } }
}

extension CommandContext.Output {
    /// Writes `text` in one piece (print() through stdio is slow for big output).
    func write(_ text: String) {
        switch self {
        case .capture(let capture):
            capture.append(text)
        case .descriptor(let descriptor):
            var text = text
            text.withUTF8 { buffer in
                var offset = 0
                while offset < buffer.count {
                    let written = Glibc.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                    if written <= 0 {
                        if errno == EINTR { continue }
                        return
                    }
                    offset += written
                }
            }
        }
    }
}

/// What a command run in process ended with.
public struct CommandOutcome: Sendable {
    public var status: Int32
    public var standardOutput: String
    public var standardError: String
}
