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

    @Test(.enabled(if: access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0, "the kernel has no transparent huge pages"))
    func aThreadsArenaIsAdvisedOnceWanted() {
        // A thread of its own, so that its arena is one glibc makes for it (the test
        // runner's threads may share the main arena).
        let result = Mutex<(before: [Substring], after: [Substring])?>(nil)
        let done = DispatchSemaphore(value: 0)
        let started = tryStartThread {
            let block = malloc(64)!
            let address = UInt(bitPattern: block)
            let before = Self.flags(of: address)
            HugePages.want()
            HugePages.adviseThisThreadsHeap()
            let after = Self.flags(of: address)
            free(block)
            result.withLock { $0 = (before, after) }
            done.signal()
        }
        #expect(started)
        done.wait()
        let flags = result.withLock { $0 }
        #expect(flags?.before.contains("hg") == false)
        #expect(flags?.after.contains("hg") == true)
    }
}
