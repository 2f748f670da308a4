internal import CMalloc

/// glibc's allocator, tuned for the commands that read a whole fleet and end.
public enum Allocator {
    /// The allocator's arenas get their room in one step. A command runs on a thread of
    /// the concurrency pool, whose arena glibc extends page by page, an `mprotect` each
    /// (1,400 in a re-apply of 10,000 files, a twentieth of its CPU); with a top pad the
    /// arena is made writable once. Large blocks stay in the arenas (not a mapping each,
    /// unmapped when freed and faulted in again). Untouched room costs no memory; for
    /// one-shot commands only: long-running ones keep glibc's defaults.
    public static func reserveRoomForAOneShotCommand() {
        _ = mallopt(M_TOP_PAD, 16 << 20)
        _ = mallopt(M_MMAP_THRESHOLD, 32 << 20)
    }
}
