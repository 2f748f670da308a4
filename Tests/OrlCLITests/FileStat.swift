// Which module declares `stat`'s fields depends on what the compiler loaded first (Glibc's
// or Dispatch's headers); when the other files compiled with this one bring in Dispatch
// first, they are CDispatch's and need its import.
import CDispatch
import Glibc
import OrlCore

/// A file's stamp as `stat` gives it, read here rather than by the walk, for tests that
/// hold the walk's stamps to the files'. In a file of its own, without Foundation: where
/// Foundation (and through it Dispatch) is imported too, the compiler may take `stat`'s
/// fields for Dispatch's declarations and refuse them.
func statStamp(_ path: String) -> FileStamp? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return FileStamp(
        size: Int64(info.st_size), mtime: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
        ctime: Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec),
        inode: Int64(bitPattern: UInt64(info.st_ino)), device: Int64(bitPattern: UInt64(info.st_dev)))
}
