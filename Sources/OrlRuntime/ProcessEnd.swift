import COrlSpawn
import Dispatch
import Glibc

/// The end of a process that need not be this one's child (a controller that `orlctl
/// stop` signalled, a command tool's leader), told by its pidfd: the kernel makes it
/// readable when the process ends, so nothing polls.
public enum ProcessEnd {
    private static let queue = DispatchQueue(label: "orl.process-end")

    /// Returns once process `pid` has ended (at once when it has already). Where pidfds
    /// cannot be had (a kernel before 5.3) it looks every 20 ms instead, and then sees a
    /// child of this process end only once it is reaped.
    public static func wait(for pid: Int32) async {
        let fd = orl_pidfd_open(pid)
        guard fd >= 0 else {
            guard errno != ESRCH else { return }
            while kill(pid, 0) == 0 || errno == EPERM { try? await Task.sleep(for: .milliseconds(20)) }
            return
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            // The handler keeps the source alive until it has fired and been cancelled.
            source.setEventHandler {
                source.cancel()
                continuation.resume()
            }
            source.setCancelHandler { close(fd) }
            source.resume()
        }
    }

    /// Blocks the calling thread (never a cooperative one) until process `pid` has ended
    /// or `deadline` has passed; says whether it ended (nil: no pidfd could be had, so
    /// the caller must look for itself).
    @discardableResult
    static func wait(for pid: Int32, until deadline: ContinuousClock.Instant) -> Bool? {
        let fd = orl_pidfd_open(pid)
        guard fd >= 0 else { return errno == ESRCH ? true : nil }
        defer { close(fd) }
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return false }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(min(left / .milliseconds(1), Double(Int32.max)).rounded(.up))
            let ready = poll(&entry, 1, milliseconds)
            if ready > 0 { return true }
            if ready < 0 && errno != EINTR { return false }
        }
    }
}
