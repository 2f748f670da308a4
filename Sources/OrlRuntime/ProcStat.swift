import Glibc

/// The fields of `/proc/PID/stat` the runtime needs.
struct ProcStat: Equatable {
    /// Field 3: R, S, D, Z (zombie), X (dead), ...
    var state: UInt8
    /// Field 5.
    var processGroup: Int32
    /// Field 6.
    var session: Int32
    /// Field 22: clock ticks after boot when the process started. With the PID, it
    /// identifies a process across PID reuse.
    var startTime: UInt64

    /// Running or able to run; a zombie has exited and only waits to be reaped.
    var isAlive: Bool { state != UInt8(ascii: "Z") && state != UInt8(ascii: "X") && state != UInt8(ascii: "x") }

    /// Parses the contents of a stat file. The second field is the command name in
    /// parentheses, and that name is chosen by the program (prctl, or its file name):
    /// it may contain spaces and parentheses, such as `1234 (a) S (b) S 1 ...`. The
    /// kernel never escapes it, so the only safe split is after the last `)`.
    init?(parsing contents: [UInt8]) {
        guard let close = contents.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = contents[(close + 1)...].split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") })
        // fields[0] is field 3 of the file.
        guard fields.count > 19, fields[0].count == 1,
            let group = Int32(decimal: fields[2]), let session = Int32(decimal: fields[3]),
            let start = UInt64(decimal: fields[19])
        else { return nil }
        self.state = fields[0].first!
        self.processGroup = group
        self.session = session
        self.startTime = start
    }

    /// The stat of `pid`, or nil when there is no such process (or /proc is not readable).
    static func read(_ pid: Int32) -> ProcStat? {
        guard pid > 0, let contents = readSmallFile("/proc/\(pid)/stat") else { return nil }
        return ProcStat(parsing: contents)
    }

    /// Whether any process other than a zombie is in process group `group`.
    ///
    /// `kill(-group, 0)` cannot answer this: it succeeds as long as an unreaped zombie
    /// leader is in the group, and the leader is kept unreaped on purpose while its
    /// group is stopped (the zombie keeps the PID, hence the group ID, from being reused).
    static func groupHasLiveMembers(_ group: Int32) -> Bool {
        guard let directory = opendir("/proc") else { return false }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let pid = withUnsafeBytes(of: entry.pointee.d_name) { name in
                Int32(decimal: name.prefix(while: { $0 != 0 }))
            }
            guard let pid, let stat = read(pid) else { continue }
            if stat.processGroup == group && stat.isAlive { return true }
        }
        return false
    }

    /// The process groups that have a process other than a zombie: one scan of /proc
    /// answers `groupHasLiveMembers` for every group at once.
    static func liveGroups() -> Set<Int32> {
        guard let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        var groups: Set<Int32> = []
        while let entry = readdir(directory) {
            let pid = withUnsafeBytes(of: entry.pointee.d_name) { name in
                Int32(decimal: name.prefix(while: { $0 != 0 }))
            }
            guard let pid, let stat = read(pid), stat.isAlive else { continue }
            groups.insert(stat.processGroup)
        }
        return groups
    }
}

/// Reads a whole file of /proc (or any small file); nil when it cannot be opened.
func readSmallFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var contents: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count >= 0 else { return nil }
        if count == 0 { return contents }
        contents.append(contentsOf: buffer[..<count])
    }
}

extension FixedWidthInteger {
    /// Parses ASCII decimal digits (with an optional leading minus), without going
    /// through String.
    init?(decimal digits: some Collection<UInt8>) {
        var value: Self = 0
        var negative = false
        var sawDigit = false
        for (offset, byte) in digits.enumerated() {
            if offset == 0 && byte == UInt8(ascii: "-") && Self.isSigned {
                negative = true
                continue
            }
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Self(byte - UInt8(ascii: "0")))
            guard !overflow1 && !overflow2 else { return nil }
            value = sum
            sawDigit = true
        }
        guard sawDigit else { return nil }
        self = negative ? 0 - value : value
    }
}

/// The system's description of an errno value ("No such file or directory").
func describeErrno(_ code: Int32) -> String {
    String(cString: strerror(code))
}
