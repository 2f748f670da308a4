import Glibc
public import OrlCore

extension ProcessRuntime {
    /// Rotates an agent's log by size, copy-truncate style: when `path` is larger than
    /// `maxBytes`, `path.1` … `path.(keep-1)` move up one number (the oldest, `path.keep`,
    /// is dropped), the log is copied to `path.1`, and the log is truncated in place.
    /// Returns whether it rotated. `keep` 0 only truncates.
    ///
    /// Why copy and truncate rather than rename: the agent holds the log open as its
    /// stdout and stderr and cannot be told to reopen it (it is any program, and may
    /// have been started by an earlier controller). Its descriptor is O_APPEND, so
    /// after the truncation its next write lands at the new end of the file (offset 0),
    /// not at its old offset (which would leave a sparse hole of the old size).
    ///
    /// The price, inherent to copytruncate: output written between the copy's last read
    /// and the truncation is lost. That window is kept to a single system call here (the
    /// copy reads until end of file and truncates right after, on the same descriptor,
    /// then renames into place), so at most what the agent writes during that
    /// microsecond is lost; nothing is duplicated. A line the agent writes in two
    /// pieces may be split between `path.1` and `path`. Rotation without any loss
    /// needs the output to go through a reader (a pipe to a log process that outlives
    /// the controller, as conmon does for containers); that is left for later.
    ///
    /// Not safe to run twice at once on the same path; the controller calls it from
    /// one timer.
    @discardableResult
    public func rotateLog(_ path: String, maxBytes: Int, keep: Int) throws(RuntimeError) -> Bool {
        func failure(_ action: String) -> RuntimeError {
            RuntimeError("cannot rotate the log \(path): \(action): \(describeErrno(errno))")
        }
        let log = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY)
        guard log >= 0 else {
            if errno == ENOENT { return false }  // the agent has not written anything yet
            throw failure("open")
        }
        defer { close(log) }
        var info = stat()
        guard fstat(log, &info) == 0 else { throw failure("stat") }
        guard info.st_size > maxBytes else { return false }

        guard keep > 0 else {
            guard ftruncate(log, 0) == 0 else { throw failure("truncate") }
            return true
        }
        for number in stride(from: keep - 1, through: 1, by: -1) {
            // rename replaces the next number atomically; a missing file is a gap to skip.
            if rename("\(path).\(number)", "\(path).\(number + 1)") != 0 && errno != ENOENT {
                throw failure("rename \(path).\(number) to \(path).\(number + 1)")
            }
        }

        // Into a temporary first, so that `path.1` is never seen half written.
        let temporary = "\(path).1.tmp"
        let copy = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0o600)
        guard copy >= 0 else { throw failure("create \(temporary)") }
        var copied = false
        defer {
            close(copy)
            if !copied { unlink(temporary) }
        }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(log, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw failure("read") }
            if count == 0 { break }
            var written = 0
            while written < count {
                let result = buffer.withUnsafeBytes { write(copy, $0.baseAddress! + written, count - written) }
                if result < 0 && errno == EINTR { continue }
                guard result > 0 else { throw failure("write \(temporary)") }
                written += result
            }
        }
        // Right after reading end of file: this is the window where output is lost.
        guard ftruncate(log, 0) == 0 else { throw failure("truncate") }
        // From here the temporary holds the only copy of the old output: keep it if the
        // rename fails, and say where it is.
        copied = true
        guard rename(temporary, "\(path).1") == 0 else {
            throw failure("rename \(temporary) to \(path).1 (the rotated output is kept in \(temporary))")
        }
        return true
    }
}
