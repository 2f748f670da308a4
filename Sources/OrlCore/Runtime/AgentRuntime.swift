/// What it takes to start one agent process: everything is explicit, nothing is
/// inherited from the controller (its environment least of all).
public struct ProcessSpec: Sendable, Hashable {
    public var agent: ResourceID
    /// A path, or a name looked up in `searchPath` (never the controller's PATH).
    public var command: String
    public var arguments: [String]
    /// The whole environment the process gets, in order.
    public var environment: [(name: String, value: String)]
    /// The agent's own writable directory, its current directory.
    public var workingDirectory: String
    /// Where its code is (`CodeOrigin.root`), read-only to it; nil when the apply named none.
    /// Kept apart from `workingDirectory` so that a sandbox can bind each as it should.
    public var codeDirectory: String?
    public var limits: ProcessLimits
    /// Where stdout and stderr go (appended), rotated by size by the runtime.
    public var logFile: String
    /// How long SIGTERM is given before SIGKILL.
    public var gracePeriod: Duration
    /// The sandbox it runs in; nil: unconfined (`isolation: none`).
    public var sandbox: SandboxSpec?

    /// Where a bare command name is looked up when the environment has no PATH (and
    /// the PATH command tools get). Fixed, and never the controller's PATH: what an
    /// agent runs must not depend on how the controller was started.
    public static let defaultSearchPath = "/usr/local/bin:/usr/bin:/bin"

    public init(
        agent: ResourceID, command: String, arguments: [String], environment: [(name: String, value: String)], workingDirectory: String,
        limits: ProcessLimits, logFile: String, gracePeriod: Duration, codeDirectory: String? = nil, sandbox: SandboxSpec? = nil
    ) {
        self.codeDirectory = codeDirectory
        self.sandbox = sandbox
        self.agent = agent
        self.command = command
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.limits = limits
        self.logFile = logFile
        self.gracePeriod = gracePeriod
    }

    public static func == (lhs: ProcessSpec, rhs: ProcessSpec) -> Bool {
        lhs.agent == rhs.agent && lhs.command == rhs.command && lhs.arguments == rhs.arguments
            && lhs.environment.map(\.name) == rhs.environment.map(\.name) && lhs.environment.map(\.value) == rhs.environment.map(\.value)
            && lhs.workingDirectory == rhs.workingDirectory && lhs.codeDirectory == rhs.codeDirectory && lhs.limits == rhs.limits
            && lhs.logFile == rhs.logFile
            && lhs.gracePeriod == rhs.gracePeriod && lhs.sandbox == rhs.sandbox
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(agent)
        hasher.combine(command)
        hasher.combine(arguments)
    }
}

/// What confines a process under `isolation: strict` (docs/sandbox.md). The runtime
/// derives the file-system view from it and the launch: the host's system directories
/// and the program's own (its interpreter's, its arguments') read-only, the working
/// directory writable, the state directory hidden, a private /tmp, /proc and /dev.
public struct SandboxSpec: Sendable, Hashable {
    /// Hidden entirely, but for the working directory and read-only paths inside it.
    public var stateDirectory: String
    /// Writable (the working directory).
    public var writable: [String]
    /// Offered read-only besides what the runtime derives.
    public var readOnly: [String]
    /// The port orl's API listens on inside the sandbox, at 127.0.0.1; nil: no way
    /// out at all (a command tool).
    public var apiPort: Int?
    /// Bytes of memory (cgroup), else the address space (rlimit).
    public var memory: Int?
    /// Processes at once (cgroup pids), else RLIMIT_NPROC.
    public var pids: Int?
    /// Cores (cgroup cpu quota); not enforced without one.
    public var cpu: Double?
    /// The unprivileged uid and gid the program runs as: nobody.
    public var uid: UInt32 = 65534
    public var gid: UInt32 = 65534

    public init(
        stateDirectory: String, writable: [String], readOnly: [String] = [], apiPort: Int? = nil, memory: Int? = nil, pids: Int? = nil,
        cpu: Double? = nil
    ) {
        self.stateDirectory = stateDirectory
        self.writable = writable
        self.readOnly = readOnly
        self.apiPort = apiPort
        self.memory = memory
        self.pids = pids
        self.cpu = cpu
    }
}

/// rlimits applied to the process before it runs its program; nil leaves the limit as
/// the controller has it.
public struct ProcessLimits: Sendable, Hashable {
    /// RLIMIT_AS, bytes.
    public var addressSpace: Int?
    /// RLIMIT_NOFILE.
    public var openFiles: Int?
    /// RLIMIT_CPU, seconds.
    public var cpuSeconds: Int?

    public init(addressSpace: Int? = nil, openFiles: Int? = nil, cpuSeconds: Int? = nil) {
        self.addressSpace = addressSpace
        self.openFiles = openFiles
        self.cpuSeconds = cpuSeconds
    }
}

/// A running process, identified so that a PID reused by another program is never
/// mistaken for it: the PID plus the kernel's start time of that PID.
public struct ProcessIdentity: Sendable, Hashable, Codable, CustomStringConvertible {
    public var pid: Int32
    /// Clock ticks since boot when the process started (field 22 of /proc/PID/stat).
    public var startTime: UInt64

    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    public var description: String { "pid \(pid)" }
}

/// How a process ended.
public enum ProcessExit: Sendable, Hashable, CustomStringConvertible {
    case exited(code: Int32)
    case signaled(signal: Int32)

    public var succeeded: Bool { self == .exited(code: 0) }

    public var description: String {
        switch self {
        case .exited(let code): "exited with code \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}

public struct RuntimeError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The port for agent processes. Processes run in their own session and process group,
/// so stopping one stops everything it started, and they outlive the controller, so a
/// new controller can adopt them.
public protocol AgentRuntime: Sendable {
    /// Starts the process; returns once it runs (or the program could not be started).
    func start(_ spec: ProcessSpec) throws(RuntimeError) -> ProcessIdentity
    /// Whether that exact process (PID and start time) is still running.
    func isRunning(_ process: ProcessIdentity) -> Bool
    /// Reaps the process if it has ended and this runtime started it; nil while it runs.
    /// An adopted process (started by an earlier controller) ends with no status to read:
    /// its exit is reported as `.signaled(0)` once it is gone.
    func exitStatus(_ process: ProcessIdentity) -> ProcessExit?
    /// SIGTERM to the whole group, then SIGKILL after `grace`; returns once all of it is gone.
    func stop(_ process: ProcessIdentity, grace: Duration) async -> ProcessExit?
    /// SIGTERM to the whole group now, where the stop is decided, before the bookkeeping
    /// around it; the `stop` that follows sends no second SIGTERM (an agent may take a
    /// second one as "hurry") and only waits, then kills after the grace period.
    func terminate(_ process: ProcessIdentity)
    /// A process of an earlier controller is taken over (its sandbox's API listener,
    /// which died with that controller, is made again).
    func adopt(_ process: ProcessIdentity)
    /// What confines a process started from `spec`, for describe: one line.
    func confinement(of spec: ProcessSpec) -> String
    /// Why a reaped process ended when a limit of its sandbox ended it.
    func exitNote(_ process: ProcessIdentity) -> String?
    /// Calls `onExit` once the process has ended (it is not reaped: `exitStatus` still
    /// tells how), so that the caller need not keep asking; false when this runtime
    /// cannot watch it, and the caller must look by itself.
    func watch(_ process: ProcessIdentity, onExit: @escaping @Sendable () -> Void) -> Bool
    /// Stops these processes together, each as `stop` does with its own grace period:
    /// every one is signalled at once, and `stopped` is told of those gone at each look.
    func stop(
        _ processes: [(process: ProcessIdentity, grace: Duration)],
        stopped: @escaping @Sendable ([(process: ProcessIdentity, exit: ProcessExit?)]) async -> Void
    ) async
    /// Agent processes whose environment holds every entry of `marks` (the state's, and
    /// the node's where there are nodes, that the controller gives its agents) that run
    /// although no record names them (`recorded`) and this runtime did not start them: a
    /// controller killed between a batch's spawns and the write that records them leaves
    /// such processes. Each is named by the agent its environment says it runs and by the
    /// process the controller would have recorded (its session's leader).
    func unrecorded(marks: [String: String], recorded: Set<ProcessIdentity>) -> [(agent: ResourceID, process: ProcessIdentity)]
}

extension AgentRuntime {
    public func adopt(_ process: ProcessIdentity) {}
    /// Nothing ahead: `stop` signals.
    public func terminate(_ process: ProcessIdentity) {}
    public func unrecorded(marks: [String: String], recorded: Set<ProcessIdentity>) -> [(agent: ResourceID, process: ProcessIdentity)] {
        []
    }
    public func exitNote(_ process: ProcessIdentity) -> String? { nil }
    public func watch(_ process: ProcessIdentity, onExit: @escaping @Sendable () -> Void) -> Bool { false }
    public func stop(
        _ processes: [(process: ProcessIdentity, grace: Duration)],
        stopped: @escaping @Sendable ([(process: ProcessIdentity, exit: ProcessExit?)]) async -> Void
    ) async {
        await withTaskGroup(of: Void.self) { group in
            for (process, grace) in processes {
                group.addTask {
                    let exit = await self.stop(process, grace: grace)
                    await stopped([(process, exit)])
                }
            }
        }
    }
    public func confinement(of spec: ProcessSpec) -> String {
        spec.sandbox == nil ? "none: an ordinary process of the controller's user" : "strict"
    }
}

/// One run of a program to completion, as a `command` Tool is run for an agent: exactly
/// these arguments (no shell), this environment and directory, the input on its
/// standard input, and a timeout after which its whole process group is killed.
public struct CommandInvocation: Sendable, Hashable {
    public var command: String
    public var arguments: [String]
    public var environment: [String: String]
    public var workingDirectory: String
    public var input: [UInt8]
    public var timeout: Duration
    /// Output beyond this many bytes (each of stdout and stderr) is dropped.
    public var maxOutputBytes: Int
    /// The sandbox it runs in (the agent's, without its API); nil: unconfined.
    public var sandbox: SandboxSpec?

    public init(
        command: String, arguments: [String], environment: [String: String], workingDirectory: String, input: [UInt8],
        timeout: Duration, maxOutputBytes: Int = 8 << 20, sandbox: SandboxSpec? = nil
    ) {
        self.sandbox = sandbox
        self.command = command
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.input = input
        self.timeout = timeout
        self.maxOutputBytes = maxOutputBytes
    }
}

/// How a command ran.
public struct CommandOutcome: Sendable, Hashable {
    /// nil when it was killed for running past its timeout.
    public var exit: ProcessExit?
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    /// Some output was dropped (more than `maxOutputBytes`).
    public var truncated: Bool

    public init(exit: ProcessExit?, stdout: [UInt8], stderr: [UInt8], truncated: Bool = false) {
        self.exit = exit
        self.stdout = stdout
        self.stderr = stderr
        self.truncated = truncated
    }
}

/// The port that runs commands to completion (command Tools); `ProcessRuntime`
/// implements it.
public protocol CommandRunner: Sendable {
    /// Throws when the program cannot be started at all (not found, not executable).
    func run(_ invocation: CommandInvocation) async throws(RuntimeError) -> CommandOutcome
}

/// Where the runtime hands the API listener it made inside a sandboxed agent's network
/// namespace: the server accepts on it and serves orl's API (OrlServer's
/// `SandboxBridge`). `release` when the process is gone, so its namespace can go too.
public protocol SandboxListeners: Sendable {
    func serve(listener fd: Int32, for pid: Int32)
    func release(pid: Int32)
}

/// A long-running program orl talks to over its standard input and output (a stdio
/// MCP server): exactly these arguments and environment, in this directory and
/// sandbox, its standard error appended to `logFile`.
public struct StdioInvocation: Sendable, Hashable {
    public var command: String
    public var arguments: [String]
    public var environment: [String: String]
    public var workingDirectory: String
    public var logFile: String
    /// nil: unconfined. Its memory, pids and cpu are the server's cgroup limits.
    public var sandbox: SandboxSpec?
    /// rlimits (address space only where no cgroup limits memory).
    public var limits: ProcessLimits
    /// Names its cgroups (`mcp.NAMESPACE.NAME`): unique among what the runtime starts.
    public var cgroupKey: String

    public init(
        command: String, arguments: [String], environment: [String: String], workingDirectory: String, logFile: String,
        sandbox: SandboxSpec?, limits: ProcessLimits = ProcessLimits(), cgroupKey: String = ""
    ) {
        self.command = command
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.logFile = logFile
        self.sandbox = sandbox
        self.limits = limits
        self.cgroupKey = cgroupKey
    }
}

/// A program started from a `StdioInvocation`, running until it exits or is stopped.
public protocol StdioChild: AnyObject, Sendable {
    var identity: ProcessIdentity { get }
    /// Writes `bytes` to its standard input, whole; false once it no longer reads.
    func write(_ bytes: [UInt8]) async -> Bool
    /// SIGTERM, SIGKILL after `grace`; its exit once it is gone (idempotent).
    func stop(grace: Duration) async -> ProcessExit?
    /// Once it has exited: why, when one of its limits ended it or refused it something.
    var exitNote: String? { get }
}

/// The port that starts stdio servers; `ProcessRuntime` implements it.
public protocol StdioLauncher: Sendable {
    /// Starts the program; `onLine` gets each line it writes on its standard output
    /// (without the newline; a line longer than `maxLineBytes` ends the program), and
    /// `onClose` once that output is closed (it exited, or closed it).
    func launch(
        _ invocation: StdioInvocation, maxLineBytes: Int, onLine: @escaping @Sendable ([UInt8]) -> Void,
        onClose: @escaping @Sendable () -> Void
    ) throws(RuntimeError) -> any StdioChild
    /// What confines a program started from `invocation`, limits included, as
    /// `describe` shows it.
    func confinement(of invocation: StdioInvocation) -> String
}
