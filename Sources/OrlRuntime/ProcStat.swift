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
    ///
    /// Called while a batch of agents exits, on a machine whose /proc may list hundreds
    /// of processes: each stat is read into one reused buffer and only fields 3 and 5
    /// are parsed.
    static func liveGroups() -> Set<Int32> {
        guard let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        var groups: Set<Int32> = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while let entry = readdir(directory) {
            let path: [CChar]? = withUnsafeBytes(of: entry.pointee.d_name) { name in
                let digits = name.prefix(while: { $0 != 0 })
                guard !digits.isEmpty, digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
                return Array("/proc/".utf8CString.dropLast()) + digits.map { CChar(bitPattern: $0) } + Array("/stat".utf8CString)
            }
            guard let path else { continue }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            close(fd)
            guard count > 0, let group = Self.liveGroup(in: buffer[..<count]) else { continue }
            groups.insert(group)
        }
        return groups
    }

    /// Field 5 of a stat line, when field 3 says the process is alive.
    static func liveGroup(in contents: ArraySlice<UInt8>) -> Int32? {
        guard let close = contents.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        var field = 2
        var start = close + 2
        var index = start
        var state: UInt8 = 0
        while index <= contents.endIndex {
            if index == contents.endIndex || contents[index] == UInt8(ascii: " ") {
                field += 1
                if field == 3 {
                    guard index - start == 1 else { return nil }
                    state = contents[start]
                    guard state != UInt8(ascii: "Z") && state != UInt8(ascii: "X") && state != UInt8(ascii: "x") else { return nil }
                } else if field == 5 {
                    return Int32(decimal: contents[start..<index])
                }
                start = index + 1
            }
            index += 1
        }
        return nil
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
