import Dispatch
import Glibc
import Synchronization
import Testing

@testable import OrlRuntime

@Suite struct HugePagesTests {
    static let mib: UInt = 1 << 20

    /// /proc/self/maps lines for `[start, end)` with `name` (empty: anonymous).
    static func line(_ start: UInt, _ end: UInt, _ perms: String = "rw-p", inode: String = "0", name: String = "") -> String {
        let hex = { (value: UInt) in String(value, radix: 16) }
        return "\(hex(start))-\(hex(end)) \(perms) 00000000 00:00 \(inode)" + (name.isEmpty ? "" : "                          \(name)")
    }

    @Test func aThreadArenaIsItsWholeAlignedReservation() {
        let base: UInt = 0x7f00_0000_0000
        let maps = [
            Self.line(base - 8 * Self.mib, base - 4 * Self.mib, name: "/usr/lib/libc.so.6"),
            Self.line(base, base + 17 * Self.mib),
            Self.line(base + 17 * Self.mib, base + 64 * Self.mib, "---p"),
            Self.line(base + 64 * Self.mib, base + 72 * Self.mib),
        ].joined(separator: "\n")
        #expect(HugePages.arenaReservation(holding: base + 5 * Self.mib, maps: maps) == base..<(base + 64 * Self.mib))
    }

    @Test func anythingElseIsLeftAsItIs() {
        let base: UInt = 0x7f00_0000_0000
        let heap = Self.line(0x5555_0000_0000, 0x5555_0100_0000, name: "[heap]")
        // The main arena, a file, a mapping off the boundary, a hole, a reservation cut short.
        #expect(HugePages.arenaReservation(holding: 0x5555_0000_1000, maps: heap) == nil)
        let file = Self.line(base, base + 64 * Self.mib, "rw-p", inode: "1234", name: "/data/file")
        #expect(HugePages.arenaReservation(holding: base + 1, maps: file) == nil)
        let offBoundary = Self.line(base + 4096, base + 64 * Self.mib + 4096)
        #expect(HugePages.arenaReservation(holding: base + 8192, maps: offBoundary) == nil)
        let hole = [Self.line(base, base + 8 * Self.mib), Self.line(base + 9 * Self.mib, base + 64 * Self.mib, "---p")]
        #expect(HugePages.arenaReservation(holding: base + 1, maps: hole.joined(separator: "\n")) == nil)
        let short = [Self.line(base, base + 8 * Self.mib), Self.line(base + 8 * Self.mib, base + 32 * Self.mib, "---p")]
        #expect(HugePages.arenaReservation(holding: base + 1, maps: short.joined(separator: "\n")) == nil)
        #expect(HugePages.arenaReservation(holding: base + 1, maps: "") == nil)
    }

    /// The kernel's flags of the mapping holding `address` (/proc/self/smaps' VmFlags).
    static func flags(of address: UInt) -> [Substring] {
        guard let file = fopen("/proc/self/smaps", "r") else { return [] }
        defer { fclose(file) }
        var inside = false
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            let first = text.split(separator: " ", maxSplits: 1).first ?? ""
            let bounds = first.split(separator: "-")
            if bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16) {
                inside = (start..<end).contains(address)
            } else if inside, text.hasPrefix("VmFlags:") {
                return text.dropFirst("VmFlags:".count).split(whereSeparator: \.isWhitespace)
            }
        }
        return []
    }

    /// /proc/self/maps' text.
    static func maps() -> String {
        guard let file = fopen("/proc/self/maps", "r") else { return "" }
        defer { fclose(file) }
        var text = ""
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line { text += String(cString: line) }
        return text
    }

    @Test(.enabled(if: access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0, "the kernel has no transparent huge pages"))
    func aThreadsArenaIsAdvisedOnceWanted() {
        // A thread of its own, so that glibc gives it an arena of its own while the process
        // has fewer than its limit (8 a core); past it, a new thread shares one, which may
        // be the main arena: that one must be left as it is.
        let result = Mutex<(address: UInt, before: [Substring], after: [Substring], threadArena: Bool)?>(nil)
        let done = DispatchSemaphore(value: 0)
        let started = tryStartThread {
            // The chunk the advice's own probe gets back (glibc's per-thread cache hands out
            // the last chunk of a size freed): an arena of several heaps is advised where
            // the thread allocates next, which need not be where an older block lies.
            let block = malloc(1)!
            let address = UInt(bitPattern: block)
            let before = Self.flags(of: address)
            let threadArena = HugePages.arenaReservation(holding: address, maps: Self.maps()) != nil
            free(block)
            HugePages.want()
            // Twice, as a command's threads do (at their start and at each run): a read of
            // /proc/self/maps while the test runner's threads map and unmap can miss the
            // arena's lines, and then the next call looks again.
            HugePages.adviseThisThreadsHeap()
            HugePages.adviseThisThreadsHeap()
            let after = Self.flags(of: address)
            result.withLock { $0 = (address, before, after, threadArena) }
            done.signal()
        }
        #expect(started)
        done.wait()
        guard let flags = result.withLock({ $0 }) else { return }
        #expect(!flags.before.isEmpty && !flags.after.isEmpty)
        if flags.threadArena {
            #expect(flags.after.contains("hg"), "\(String(flags.address, radix: 16)): \(Self.maps())")
        } else {
            #expect(flags.after.contains("hg") == flags.before.contains("hg"))
        }
    }
}
