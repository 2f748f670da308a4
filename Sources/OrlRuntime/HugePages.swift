import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Transparent huge pages for the heap of a command that reads a whole fleet and ends.
///
/// A re-apply of 10,000 files touches about 20 MB of fresh heap, which the kernel maps a
/// 4 KiB page at a time: 5,000 page faults, a fifth of the process's CPU. Where the system
/// gives huge pages to the programs that ask for them (`madvise` in
/// /sys/kernel/mm/transparent_hugepage/enabled, the default of Debian and most others), an
/// advised heap is mapped 2 MiB at a time. glibc asks on its own only when its
/// `glibc.malloc.hugetlb` tunable was in the environment when the process started, so the
/// heaps are advised here instead, each once, by the threads that allocate from them.
///
/// The heaps advised are glibc's thread arenas: each a reservation of 64 MiB (its
/// HEAP_MAX_SIZE on 64-bit) aligned to 64 MiB, made writable as the arena grows, so the
/// advice given to the whole reservation holds for what it grows into. One is advised only
/// when /proc/self/maps shows that layout around the calling thread's allocations; any
/// other allocator, or another layout, is left as it is. The main arena (the `[heap]` that
/// `brk` grows and trims under the caller) is not advised: the commands run on other threads.
public enum HugePages {
    /// `looked`: the reservations looked at, and how often (`lookLimit` once advised).
    private static let state = Mutex<(wanted: Bool, looked: [UInt: Int])>((false, [:]))
    /// A reservation whose layout was not found is looked at once more, at a later call:
    /// /proc/self/maps, read while other threads map and unmap, can miss a line. After
    /// that (the main arena, another allocator) a call costs an allocation and a lock.
    private static let lookLimit = 2

    /// From now on, `adviseThisThreadsHeap` advises. For one-shot commands only: a daemon's
    /// heaps stay in small pages, which it gives back as it frees them.
    public static func want() { state.withLock { $0.wanted = true } }

    /// Advises the arena the calling thread allocates from, once, if `want` was called.
    /// Cheap when there is nothing to do: an allocation and a lock (see `lookLimit`).
    public static func adviseThisThreadsHeap() {
        guard state.withLock({ $0.wanted }) else { return }
        guard let probe = malloc(1) else { return }
        let address = UInt(bitPattern: probe)
        free(probe)
        let reservation = address & ~(arenaReservationSize - 1)
        let look = state.withLock { state -> Bool in
            guard state.looked[reservation, default: 0] < lookLimit else { return false }
            state.looked[reservation, default: 0] += 1
            return true
        }
        guard look, let maps = try? readProcFile("/proc/self/maps"), let range = arenaReservation(holding: address, maps: maps),
            madvise(UnsafeMutableRawPointer(bitPattern: range.lowerBound), Int(range.count), MADV_HUGEPAGE) == 0
        else { return }
        state.withLock { $0.looked[reservation] = lookLimit }
    }

    /// glibc's HEAP_MAX_SIZE on 64-bit Linux: each thread arena's reservation, and its alignment.
    static let arenaReservationSize: UInt = 64 << 20

    /// The 64 MiB reservation holding `address` by `maps` (/proc/self/maps' text): anonymous
    /// mappings, one after the other, from a 64 MiB boundary to the next, the first of them
    /// holding `address`. Nil for anything else (the main arena, a file, a hole).
    static func arenaReservation(holding address: UInt, maps: String) -> Range<UInt>? {
        var mappings: [(range: Range<UInt>, anonymous: Bool)] = []
        for line in maps.split(separator: "\n") {
            // start-end perms offset dev inode [name]
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5 else { continue }
            let bounds = fields[0].split(separator: "-")
            guard bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16), start < end
            else { continue }
            let named = fields.count == 6 && !fields[5].allSatisfy(\.isWhitespace)
            mappings.append((start..<end, fields[4] == "0" && !named))
        }
        guard let first = mappings.firstIndex(where: { $0.range.contains(address) }) else { return nil }
        let start = mappings[first].range.lowerBound
        guard mappings[first].anonymous, start % arenaReservationSize == 0 else { return nil }
        let end = start + arenaReservationSize
        var reached = start
        for mapping in mappings[first...] {
            guard reached < end, mapping.anonymous, mapping.range.lowerBound == reached else { break }
            reached = mapping.range.upperBound
        }
        return reached == end ? start..<end : nil
    }

    /// A /proc file's text: it reads as empty to `stat`, so it is read until its end.
    private static func readProcFile(_ path: String) throws(ProcFileError) -> String {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw ProcFileError(code: errno) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = read(descriptor, &buffer, buffer.count)
            if count > 0 {
                bytes += buffer[0..<count]
            } else if count == 0 {
                return String(decoding: bytes, as: UTF8.self)
            } else if errno != EINTR {
                throw ProcFileError(code: errno)
            }
        }
    }

    private struct ProcFileError: Error {
        var code: Int32
    }
}
