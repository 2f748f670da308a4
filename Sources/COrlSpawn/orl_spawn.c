// Starting agent processes from a multi-threaded controller.
//
// Between fork and execve the child is a copy of one thread of a multi-threaded
// process: another thread may have held the malloc lock, a Swift runtime lock or a
// stdio lock at the moment of the fork, and will never release it in the child. So
// the child only makes async-signal-safe system calls on memory that the parent
// prepared before forking: no malloc, no stdio, no Swift.
//
// Why not posix_spawn: glibc's covers the session, directory, descriptors and
// signals, but has no rlimit action (setting limits from the parent with prlimit after
// the spawn would let the program run unlimited for a moment), and it reports a
// failure as a bare errno, without saying whether the directory, the log file or the
// program was the problem.

#define _GNU_SOURCE
#include "orl_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/// What a child that failed before execve writes to the report pipe. 8 bytes, far
/// below PIPE_BUF, so it is written and read whole.
struct report {
    int step;
    int error;
};

/// Everything the child needs, computed before the fork.
struct child_args {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *directory;
    const char *log_path;
    /// When log_path is NULL: the descriptors to install as 0, 1 and 2.
    const int *stdio;
    const orl_spawn_limits *limits;
    /// NULL: an ordinary child; else the sandbox (the child is the namespace's init).
    const orl_sandbox *sandbox;
    int report_fd;
    /// A sandbox's init writes the program's raw wait status here before it exits
    /// (-1: nowhere), since an init cannot die of the program's signal itself.
    int status_fd;
    /// Upper bound for the close() loop when close_range is not available.
    int max_fd;
    /// A sandbox's init starts the program on this stack (borrowing the init's memory
    /// until the program's execve), mapped by the parent before the clone.
    void *program_stack_top;
    /// >= 0: the sandbox's init, once the program runs, becomes this image (a memfd,
    /// see `init_image`) instead of living on in a copy of the controller.
    int init_exe;
    /// >= 3: a descriptor the program keeps, under the same number (see
    /// orl_spawn_detached); -1: none.
    int inherit_fd;
};

static void report_and_exit(int fd, orl_spawn_step step) __attribute__((noreturn));
static void report_and_exit(int fd, orl_spawn_step step) {
    struct report report = {.step = (int)step, .error = errno == 0 ? EIO : errno};
    ssize_t written;
    do {
        written = write(fd, &report, sizeof report);
    } while (written < 0 && errno == EINTR);
    // _exit, not exit: no atexit handlers or stdio flushing of the parent's state.
    _exit(127);
}

/// Moves `fd` to a descriptor >= 3 (close-on-exec), so that installing 0, 1 and 2
/// cannot overwrite it; the controller may run with some of 0, 1, 2 closed, in which
/// case pipe() and open() hand out those numbers.
static int above_stdio(int fd) {
    if (fd >= 3) return fd;
    return fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

static int set_limit(int resource, long long value) {
    if (value < 0) return 0;
    // Soft and hard: the agent must not be able to raise its own limit again.
    struct rlimit limit = {.rlim_cur = (rlim_t)value, .rlim_max = (rlim_t)value};
    return setrlimit(resource, &limit);
}

// MARK: The sandbox (docs/sandbox.md)

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
struct orl_mount_attr {
    unsigned long long attr_set, attr_clr, propagation, userns_fd;
};

#if defined(__x86_64__)
#define ORL_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ORL_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "the seccomp filter knows x86_64 and aarch64 only"
#endif

#define ORL_DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)
#define ORL_NS_FLAGS                                                                                                      \
    (CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP)

/// What an agent never needs and an escape often does: debugging other processes,
/// mounting, loading kernel code (modules, BPF, kexec), the kernel keyring, new
/// namespaces (unprivileged user namespaces are a large kernel attack surface),
/// perf events, io_uring (which bypasses this filter), clocks and the system log.
/// Denied with EPERM, as the kernel answers an unprivileged caller, so programs that
/// probe for a feature carry on. clone3 gets ENOSYS so that libc falls back to clone,
/// whose flags a classic BPF filter can see (clone3 passes them in memory).
static const struct sock_filter seccomp_program[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ORL_AUDIT_ARCH, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
    // x32 system calls (the same numbers with bit 30 set) would bypass every check below.
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    ORL_DENY(__NR_iopl),
    ORL_DENY(__NR_ioperm),
#endif
    ORL_DENY(__NR_ptrace),
    ORL_DENY(__NR_process_vm_readv),
    ORL_DENY(__NR_process_vm_writev),
    ORL_DENY(__NR_mount),
    ORL_DENY(__NR_umount2),
    ORL_DENY(__NR_pivot_root),
    ORL_DENY(__NR_fsopen),
    ORL_DENY(__NR_fsconfig),
    ORL_DENY(__NR_fsmount),
    ORL_DENY(__NR_fspick),
    ORL_DENY(__NR_move_mount),
    ORL_DENY(__NR_open_tree),
    ORL_DENY(__NR_mount_setattr),
    ORL_DENY(__NR_unshare),
    ORL_DENY(__NR_setns),
    ORL_DENY(__NR_bpf),
    ORL_DENY(__NR_perf_event_open),
    ORL_DENY(__NR_kexec_load),
    ORL_DENY(__NR_kexec_file_load),
    ORL_DENY(__NR_init_module),
    ORL_DENY(__NR_finit_module),
    ORL_DENY(__NR_delete_module),
    ORL_DENY(__NR_keyctl),
    ORL_DENY(__NR_add_key),
    ORL_DENY(__NR_request_key),
    ORL_DENY(__NR_reboot),
    ORL_DENY(__NR_swapon),
    ORL_DENY(__NR_swapoff),
    ORL_DENY(__NR_acct),
    ORL_DENY(__NR_quotactl),
    ORL_DENY(__NR_syslog),
    ORL_DENY(__NR_userfaultfd),
    ORL_DENY(__NR_open_by_handle_at),
    ORL_DENY(__NR_name_to_handle_at),
    ORL_DENY(__NR_settimeofday),
    ORL_DENY(__NR_clock_settime),
    ORL_DENY(__NR_clock_adjtime),
    ORL_DENY(__NR_adjtimex),
    ORL_DENY(__NR_io_uring_setup),
    ORL_DENY(__NR_io_uring_enter),
    ORL_DENY(__NR_io_uring_register),
    ORL_DENY(__NR_lookup_dcookie),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
    // The low 32 bits of the flags (little-endian), where every CLONE_NEW* lives.
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, ORL_NS_FLAGS, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

/// `prefix` + `path` into `out` (PATH_MAX); false when it does not fit.
static int join_path(char *out, const char *prefix, const char *path) {
    size_t a = strlen(prefix), b = strlen(path);
    if (a + b + 1 > 4096) {
        errno = ENAMETOOLONG;
        return 0;
    }
    memcpy(out, prefix, a);
    memcpy(out + a, path, b + 1);
    return 1;
}

/// mkdir -p of `path` (which it modifies temporarily), mode 0755.
static int make_directories(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int failed = mkdir(path, 0755) < 0 && errno != EEXIST;
        *p = '/';
        if (failed) return -1;
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST) return -1;
    return 0;
}

static int make_parent(char *path) {
    char *slash = strrchr(path, '/');
    if (slash == NULL || slash == path) return 0;
    *slash = '\0';
    int result = make_directories(path);
    *slash = '/';
    return result;
}

/// Read-only (and nosuid, nodev) for the mount at `path` and every mount below it.
static int make_read_only(const char *path, int devices) {
    struct orl_mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | (devices ? 0 : MOUNT_ATTR_NODEV)};
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr) == 0) return 0;
    // Kernels before 5.12: the top mount only.
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (devices ? 0 : MS_NODEV);
    return mount(NULL, path, NULL, flags, NULL);
}

/// Binds host `path` (under /oldroot) at the same path under /newroot.
static int bind_host(const char *path, int writable) {
    char source[4096], target[4096];
    if (!join_path(source, "/oldroot", path) || !join_path(target, "/newroot", path)) return -1;
    struct stat info;
    if (lstat(source, &info) < 0) return errno == ENOENT ? 0 : -1;
    if (S_ISLNK(info.st_mode)) {
        char link[4096];
        ssize_t length = readlink(source, link, sizeof link - 1);
        if (length < 0) return -1;
        link[length] = '\0';
        if (make_parent(target) < 0) return -1;
        if (symlink(link, target) < 0 && errno != EEXIST) return -1;
        return 0;
    }
    if (S_ISDIR(info.st_mode)) {
        if (make_directories(target) < 0) return -1;
    } else {
        if (make_parent(target) < 0) return -1;
        int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd < 0 && errno != EEXIST && errno != EROFS) return -1;
        if (fd >= 0) close(fd);
    }
    if (mount(source, target, NULL, MS_BIND | MS_REC, NULL) < 0) return -1;
    if (!writable) return make_read_only(target, 0);
    return mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV, NULL);
}

static int mount_tmpfs(const char *target, const char *options, unsigned long flags) {
    char path[4096];
    if (!join_path(path, "/newroot", target)) return -1;
    if (make_directories(path) < 0) return -1;
    return mount("tmpfs", path, "tmpfs", MS_NOSUID | flags, options);
}

/// A /dev with the harmless character devices only (no disks, no /dev/mem).
static int make_dev(void) {
    // Not nodev: the devices bound below must work.
    if (mount_tmpfs("/dev", "mode=0755,size=64k", 0) < 0) return -1;
    static const char *const devices[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"};
    for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
        char source[4096], target[4096];
        if (!join_path(source, "/oldroot", devices[i]) || !join_path(target, "/newroot", devices[i])) return -1;
        int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0666);
        if (fd < 0) return -1;
        close(fd);
        if (mount(source, target, NULL, MS_BIND, NULL) < 0) {
            if (errno == ENOENT) continue;
            return -1;
        }
    }
    static const char *const links[][2] = {
        {"/proc/self/fd", "/newroot/dev/fd"},
        {"/proc/self/fd/0", "/newroot/dev/stdin"},
        {"/proc/self/fd/1", "/newroot/dev/stdout"},
        {"/proc/self/fd/2", "/newroot/dev/stderr"},
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        if (symlink(links[i][0], links[i][1]) < 0) return -1;
    }
    if (mount_tmpfs("/dev/shm", "mode=1777,size=64m", MS_NODEV) < 0) return -1;
    return 0;
}

static int build_root(const orl_sandbox *sandbox) {
    // Nothing mounted here propagates back to the host.
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return -1;
    // A scratch root, as bubblewrap does: the host moves to /oldroot, whence every
    // bind takes its source, and the new root is assembled in /newroot.
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") < 0) return -1;
    if (mkdir("/tmp/newroot", 0755) < 0 || mkdir("/tmp/oldroot", 0755) < 0) return -1;
    if (mount("tmpfs", "/tmp/newroot", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0) return -1;
    if (chdir("/tmp") < 0) return -1;
    if (syscall(SYS_pivot_root, ".", "oldroot") < 0) return -1;
    if (chdir("/") < 0) return -1;

    for (int i = 0; i < sandbox->mount_count; i++) {
        const orl_mount *entry = &sandbox->mounts[i];
        int result = 0;
        switch (entry->kind) {
        case ORL_MOUNT_READONLY: result = bind_host(entry->path, 0); break;
        case ORL_MOUNT_WRITABLE: result = bind_host(entry->path, 1); break;
        // Writable for now, so that deeper binds can make their mount points in it;
        // made read-only once the tree is complete.
        case ORL_MOUNT_HIDDEN: result = mount_tmpfs(entry->path, "mode=0755,size=64k", MS_NODEV); break;
        case ORL_MOUNT_TMPFS: result = mount_tmpfs(entry->path, "mode=1777,size=256m", MS_NODEV); break;
        default: errno = EINVAL; result = -1;
        }
        if (result < 0) return -1;
    }
    if (make_dev() < 0) return -1;
    if (make_directories((char[]){"/newroot/proc"}) < 0) return -1;
    // This process is PID 1 of the new PID namespace: this /proc shows its processes only.
    if (mount("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) return -1;

    // Into the new root; the host's tree is detached and out of reach.
    if (chdir("/newroot") < 0) return -1;
    if (syscall(SYS_pivot_root, ".", ".") < 0) return -1;
    if (umount2(".", MNT_DETACH) < 0) return -1;
    if (chdir("/") < 0) return -1;
    for (int i = 0; i < sandbox->mount_count; i++) {
        if (sandbox->mounts[i].kind != ORL_MOUNT_HIDDEN) continue;
        if (mount(NULL, sandbox->mounts[i].path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0) return -1;
    }
    if (mount(NULL, "/dev", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID, NULL) < 0) return -1;
    if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0) return -1;
    return 0;
}

/// Loopback up; with an API port, the listener on 127.0.0.1:port sent to the parent.
static int build_network(const orl_sandbox *sandbox, int report_fd) {
    int control = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (control < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    memcpy(request.ifr_name, "lo", 3);
    if (ioctl(control, SIOCGIFFLAGS, &request) < 0) return -1;
    request.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(control, SIOCSIFFLAGS, &request) < 0) return -1;
    close(control);
    (void)sethostname("orl-agent", 9);
    if (sandbox->api_port <= 0) return 0;

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listener < 0) return -1;
    int one = 1;
    (void)setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)sandbox->api_port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0) return -1;
    if (listen(listener, 512) < 0) return -1;

    struct report ok = {.step = ORL_SPAWN_OK, .error = 0};
    struct iovec vector = {.iov_base = &ok, .iov_len = sizeof ok};
    union {
        char buffer[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control_message;
    memset(&control_message, 0, sizeof control_message);
    struct msghdr message = {
        .msg_iov = &vector, .msg_iovlen = 1, .msg_control = control_message.buffer, .msg_controllen = sizeof control_message.buffer};
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &listener, sizeof(int));
    ssize_t sent;
    do {
        sent = sendmsg(report_fd, &message, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent != (ssize_t)sizeof ok) return -1;
    close(listener);
    return 0;
}

static int join_cgroups(const orl_sandbox *sandbox) {
    if (sandbox->cgroup_procs == NULL) return 0;
    for (char *const *file = sandbox->cgroup_procs; *file != NULL; file++) {
        int fd = open(*file, O_WRONLY | O_CLOEXEC);
        if (fd < 0) return -1;
        ssize_t written = write(fd, "0", 1);
        close(fd);
        if (written != 1) return -1;
    }
    return 0;
}

static void drop_privileges(const orl_sandbox *sandbox, int report_fd) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) report_and_exit(report_fd, ORL_SPAWN_PRIVILEGES);
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) report_and_exit(report_fd, ORL_SPAWN_PRIVILEGES);
    }
    (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    // Raw system calls: glibc's setuid family would try to signal the controller's
    // other threads, which do not exist in this copy of it.
    gid_t gid = (gid_t)sandbox->gid;
    uid_t uid = (uid_t)sandbox->uid;
    if (syscall(SYS_setgroups, 0, NULL) < 0) report_and_exit(report_fd, ORL_SPAWN_PRIVILEGES);
    if (syscall(SYS_setresgid, gid, gid, gid) < 0) report_and_exit(report_fd, ORL_SPAWN_PRIVILEGES);
    // From uid 0 to another: the kernel clears the permitted and effective sets.
    if (syscall(SYS_setresuid, uid, uid, uid) < 0) report_and_exit(report_fd, ORL_SPAWN_PRIVILEGES);
    if (uid != 0 && syscall(SYS_setresuid, 0, 0, 0) == 0) {
        errno = EPERM;
        report_and_exit(report_fd, ORL_SPAWN_PRIVILEGES);
    }
    struct sock_fprog program = {
        .len = (unsigned short)(sizeof seccomp_program / sizeof seccomp_program[0]),
        .filter = (struct sock_filter *)seccomp_program,
    };
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) < 0) report_and_exit(report_fd, ORL_SPAWN_SECCOMP);
}

static void exec_program(const struct child_args *args, int report_fd) __attribute__((noreturn));

// MARK: The sandbox's init as an image of its own
//
// A sandbox's PID 1 only reaps until the program ends. Living on as a copy of the
// controller (a fork), it cost a copy of the controller's page tables at every start
// and their teardown at every stop, the bulk of a sandboxed start's CPU. Instead the
// controller starts the sandbox with vfork semantics (the child borrows the
// controller's memory while it builds the namespaces and starts the program, itself
// with vfork semantics), and the child then executes this: a few instructions, from
// a sealed memfd made once per controller, so no page of the controller is copied at
// all. No file on disk and no helper binary: the code is assembled into this library.
//
// The image: reap every child (orphans of the namespace come to PID 1); when PID 2,
// the program, has ended, write its raw wait status on descriptor 3 (the status
// pipe, or nothing) and exit with it (a signal N as 128+N); with no child left,
// exit 127. Its name (`comm`) is argv[0]. Signals stay blocked, as the spawn left
// them: an init ignores those it has no handler for anyway.

// (Defining ORL_NO_INIT_IMAGE builds the forked init only, to test that path.)
#if defined(__x86_64__) && !defined(ORL_NO_INIT_IMAGE)
#define ORL_INIT_IMAGE 1
#define ORL_ELF_MACHINE EM_X86_64
__asm__(
    ".pushsection .text\n"
    ".p2align 4\n"
    ".globl orl_sandbox_init_code\n"
    ".hidden orl_sandbox_init_code\n"
    ".globl orl_sandbox_init_code_end\n"
    ".hidden orl_sandbox_init_code_end\n"
    "orl_sandbox_init_code:\n"
    "    movl $157, %eax\n"          // prctl(PR_SET_NAME, argv[0])
    "    movl $15, %edi\n"
    "    movq 8(%rsp), %rsi\n"
    "    syscall\n"
    "    subq $16, %rsp\n"           // the wait status at (%rsp)
    "1:  movl $61, %eax\n"           // wait4(-1, &status, 0, NULL)
    "    movq $-1, %rdi\n"
    "    movq %rsp, %rsi\n"
    "    xorl %edx, %edx\n"
    "    xorl %r10d, %r10d\n"
    "    syscall\n"
    "    cmpq $-4, %rax\n"           // EINTR
    "    je 1b\n"
    "    testq %rax, %rax\n"
    "    js 4f\n"                    // ECHILD: nothing left to wait for
    "    cmpq $2, %rax\n"            // the program is PID 2
    "    jne 1b\n"
    "2:  movl $1, %eax\n"            // write(3, &status, 4)
    "    movl $3, %edi\n"
    "    movq %rsp, %rsi\n"
    "    movl $4, %edx\n"
    "    syscall\n"
    "    cmpq $-4, %rax\n"
    "    je 2b\n"
    "    movl (%rsp), %ecx\n"
    "    movl %ecx, %edi\n"
    "    andl $0x7f, %edi\n"
    "    jz 3f\n"
    "    addl $128, %edi\n"          // killed by signal N: 128+N
    "    jmp 5f\n"
    "3:  movl %ecx, %edi\n"          // exited: its code
    "    shrl $8, %edi\n"
    "    andl $0xff, %edi\n"
    "    jmp 5f\n"
    "4:  movl $127, %edi\n"
    "5:  movl $231, %eax\n"          // exit_group(code)
    "    syscall\n"
    "    hlt\n"
    "orl_sandbox_init_code_end:\n"
    ".popsection\n");
extern const unsigned char orl_sandbox_init_code[] __attribute__((visibility("hidden")));
extern const unsigned char orl_sandbox_init_code_end[] __attribute__((visibility("hidden")));
#endif

#ifndef SYS_execveat
#define SYS_execveat 322
#endif

static char *const init_argv[] = {"orl-sandbox", NULL};
static char *const init_envp[] = {NULL};

#ifdef ORL_INIT_IMAGE
#include <elf.h>
#include <sys/mman.h>

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#ifndef SYS_memfd_create
#define SYS_memfd_create 319
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif

static int probe_entry(void *argument) {
    int fd = *(const int *)argument;
    syscall(SYS_execveat, fd, "", init_argv, init_envp, AT_EMPTY_PATH);
    _exit(126);
}

/// Whether the image really runs here (a host may forbid executing memfds:
/// vm.memfd_noexec, a security module): it is executed once, with nothing to reap.
static int probe_init_image(int fd) {
    size_t stack_size = 64 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return 0;
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = clone(probe_entry, (char *)stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &fd);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    munmap(stack, stack_size);
    if (pid < 0) return 0;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return 0;
    }
    return (status & 0x7f) == 0 && ((status >> 8) & 0xff) == 127;
}

static int init_image_fd = -1;
static pthread_once_t init_image_once = PTHREAD_ONCE_INIT;

static void make_init_image(void) {
    size_t code_size = (size_t)(orl_sandbox_init_code_end - orl_sandbox_init_code);
    const unsigned long long base = 0x400000;
    struct {
        Elf64_Ehdr header;
        Elf64_Phdr load;
        Elf64_Phdr stack;
        unsigned char code[256];
    } image;
    if (code_size > sizeof image.code) return;
    memset(&image, 0, sizeof image);
    size_t code_offset = offsetof(__typeof__(image), code);
    size_t total = code_offset + code_size;
    memcpy(image.header.e_ident, ELFMAG, SELFMAG);
    image.header.e_ident[EI_CLASS] = ELFCLASS64;
    image.header.e_ident[EI_DATA] = ELFDATA2LSB;
    image.header.e_ident[EI_VERSION] = EV_CURRENT;
    image.header.e_ident[EI_OSABI] = ELFOSABI_SYSV;
    image.header.e_type = ET_EXEC;
    image.header.e_machine = ORL_ELF_MACHINE;
    image.header.e_version = EV_CURRENT;
    image.header.e_entry = base + code_offset;
    image.header.e_phoff = offsetof(__typeof__(image), load);
    image.header.e_ehsize = sizeof(Elf64_Ehdr);
    image.header.e_phentsize = sizeof(Elf64_Phdr);
    image.header.e_phnum = 2;
    image.load.p_type = PT_LOAD;
    image.load.p_flags = PF_R | PF_X;
    image.load.p_vaddr = image.load.p_paddr = base;
    image.load.p_filesz = image.load.p_memsz = total;
    image.load.p_align = 0x1000;
    // A stack that is not executable.
    image.stack.p_type = PT_GNU_STACK;
    image.stack.p_flags = PF_R | PF_W;
    image.stack.p_align = 16;
    memcpy(image.code, orl_sandbox_init_code, code_size);

    int fd = (int)syscall(SYS_memfd_create, "orl-sandbox", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (fd < 0 && errno == EINVAL) fd = (int)syscall(SYS_memfd_create, "orl-sandbox", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return;
    size_t done = 0;
    while (done < total) {
        ssize_t written = write(fd, (const unsigned char *)&image + done, total - done);
        if (written < 0 && errno == EINTR) continue;
        if (written <= 0) {
            close(fd);
            return;
        }
        done += (size_t)written;
    }
    // Sealed: nothing, not even this process, can change what every sandbox executes.
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0 || !probe_init_image(fd)) {
        close(fd);
        return;
    }
    init_image_fd = fd;
}

/// The init image's descriptor, or -1 where it cannot be had (then the init is a copy
/// of the controller, as a fork makes it).
static int init_image(void) {
    pthread_once(&init_image_once, make_init_image);
    return init_image_fd;
}
#else
static int init_image(void) { return -1; }
#endif

/// What the program's start needs: it runs on the init's stack's neighbour.
struct program_start {
    const struct child_args *args;
    int report_fd;
};

static int program_entry(void *argument) {
    const struct program_start *start = argument;
    exec_program(start->args, start->report_fd);
    return 127;
}

/// The init becomes the init image: descriptor 3 is the status pipe, nothing else
/// stays open (the report socket closes with the exec: the parent's end-of-file).
static void become_init_image(const struct child_args *args, int report_fd) __attribute__((noreturn));
static void become_init_image(const struct child_args *args, int report_fd) {
    // Above 3, so that installing the status pipe as 3 cannot overwrite them.
    int exe = fcntl(args->init_exe, F_DUPFD_CLOEXEC, 4);
    int report = fcntl(report_fd, F_DUPFD_CLOEXEC, 4);
    if (exe < 0 || report < 0) report_and_exit(report_fd, ORL_SPAWN_INIT);
    int status_fd = args->status_fd;
    if (status_fd == 3) {
        if (fcntl(3, F_SETFD, 0) < 0) report_and_exit(report, ORL_SPAWN_INIT);
    } else if (status_fd >= 0) {
        // dup2 onto another number clears close-on-exec on the copy.
        if (dup2(status_fd, 3) < 0) report_and_exit(report, ORL_SPAWN_INIT);
    } else {
        (void)close(3);
    }
    (void)close(0);
    (void)close(1);
    (void)close(2);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 4U, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
#endif
    {
        for (int fd = 4; fd < args->max_fd; fd++) {
            if (fd != exe && fd != report) (void)close(fd);
        }
    }
    syscall(SYS_execveat, exe, "", init_argv, init_envp, AT_EMPTY_PATH);
    report_and_exit(report, ORL_SPAWN_INIT);
}

/// The sandbox's PID 1: builds the namespaces' contents, starts the program as PID 2,
/// then only reaps (orphans come to it) until the program exits, and exits with its
/// status; leaving, it takes the rest of the namespace with it (the kernel kills every
/// process in a PID namespace whose init exits).
static void sandbox_init(const struct child_args *args, int report_fd) __attribute__((noreturn));
static void sandbox_init(const struct child_args *args, int report_fd) {
    const orl_sandbox *sandbox = args->sandbox;
    if (join_cgroups(sandbox) < 0) report_and_exit(report_fd, ORL_SPAWN_CGROUP);
    if (build_network(sandbox, report_fd) < 0) report_and_exit(report_fd, ORL_SPAWN_NETWORK);
    // The directories made for mount points must be traversable by the agent's uid,
    // whatever umask orlctl runs with (077, so that the state stays private).
    mode_t umask_before = umask(022);
    if (build_root(sandbox) < 0) report_and_exit(report_fd, ORL_SPAWN_MOUNTS);
    umask(umask_before);

    // vfork's semantics: the program borrows this process's memory until its execve
    // (or its exit after reporting a failure), so none of it is copied for it.
    struct program_start start = {.args = args, .report_fd = report_fd};
    pid_t program = clone(program_entry, args->program_stack_top, CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
    if (program < 0) report_and_exit(report_fd, ORL_SPAWN_INIT);
    // The program has called execve, or has failed and said why on the report socket;
    // either way it is reaped below, its status written (a quick program may even
    // have ended already: it waits as a zombie).
    int status;
    if (args->init_exe >= 0) become_init_image(args, report_fd);

    // A copy of the controller (forked) serves as the init.
    // Nothing of the controller's stays open here (the report socket included: the
    // program's execve is what the parent waits for), but for the status pipe.
    int status_fd = args->status_fd;
#ifdef SYS_close_range
    int closed = status_fd < 0 ? (int)syscall(SYS_close_range, 0U, ~0U, 0U)
                 : status_fd == 0 ? (int)syscall(SYS_close_range, 1U, ~0U, 0U)
                                  : ((int)syscall(SYS_close_range, 0U, (unsigned)status_fd - 1U, 0U) < 0
                                        ? -1
                                        : (int)syscall(SYS_close_range, (unsigned)status_fd + 1U, ~0U, 0U));
    if (closed < 0)
#endif
    {
        for (int fd = 0; fd < args->max_fd; fd++) {
            if (fd != status_fd) (void)close(fd);
        }
    }
    // What `ps` and `top` show for it (its command line stays the controller's).
    (void)prctl(PR_SET_NAME, "orl-sandbox", 0, 0, 0);
    // Signals stay blocked (as the parent left them): an init ignores those it has no
    // handler for anyway, and the program gets the controller's signals itself, being
    // in the same process group.
    int code = 127;
    while (1) {
        pid_t reaped = (pid_t)syscall(SYS_wait4, -1, &status, 0, NULL);
        if (reaped < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (reaped == program) {
            code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f);
            if (status_fd >= 0) {
                ssize_t written;
                do {
                    written = write(status_fd, &status, sizeof status);
                } while (written < 0 && errno == EINTR);
            }
            break;
        }
    }
    _exit(code);
}

static void exec_program(const struct child_args *args, int report_fd) {
    // Limits last: a low RLIMIT_NOFILE must not make opening the log fail, and
    // RLIMIT_CPU should count the agent's time, not ours.
    if (set_limit(RLIMIT_AS, args->limits->address_space) < 0) report_and_exit(report_fd, ORL_SPAWN_RLIMIT_AS);
    if (set_limit(RLIMIT_NOFILE, args->limits->open_files) < 0) report_and_exit(report_fd, ORL_SPAWN_RLIMIT_NOFILE);
    if (set_limit(RLIMIT_CPU, args->limits->cpu_seconds) < 0) report_and_exit(report_fd, ORL_SPAWN_RLIMIT_CPU);
    if (args->sandbox != NULL) {
        if (set_limit(RLIMIT_NPROC, args->sandbox->processes) < 0) report_and_exit(report_fd, ORL_SPAWN_RLIMIT_NPROC);
        drop_privileges(args->sandbox, report_fd);
        if (chdir(args->directory) < 0) report_and_exit(report_fd, ORL_SPAWN_CHDIR);
    }

    // The signal mask survives execve: the agent starts with nothing blocked.
    sigset_t empty;
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) < 0) report_and_exit(report_fd, ORL_SPAWN_SIGNALS);

    execve(args->path, args->argv, args->envp);
    report_and_exit(report_fd, ORL_SPAWN_EXEC);
}

static void child(const struct child_args *args) __attribute__((noreturn));
static void child(const struct child_args *args) {
    int report_fd = args->report_fd;

    // Signal handlers installed by the controller would run in this half-copied
    // process if a signal arrived now; all signals are blocked (the parent blocked
    // them around fork). Dispositions go back to default so that nothing the
    // controller ignores (SIGPIPE, say) stays ignored in the agent: execve resets
    // handlers but keeps SIG_IGN. The raw system call, because glibc's sigaction
    // refuses signals 32 and 33 (its own), and an ignored 32 inherited from whoever
    // started the controller would otherwise reach agents not built on glibc. An
    // all-zero kernel sigaction is SIG_DFL, no flags, empty mask on every
    // architecture, whatever its layout; 64 bytes covers the largest of them.
    static const unsigned long default_action[8] = {0};
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        (void)syscall(SYS_rt_sigaction, sig, default_action, NULL, (size_t)(NSIG - 1) / 8);
    }

    int moved = above_stdio(report_fd);
    if (moved < 0) report_and_exit(report_fd, ORL_SPAWN_DUP);
    report_fd = moved;

    // A new session (and process group, with this PID as its ID): the agent has no
    // controlling terminal, does not get the controller's terminal or group signals,
    // outlives the controller, and its whole tree can be signalled with kill(-pid).
    if (setsid() < 0) report_and_exit(report_fd, ORL_SPAWN_SETSID);

    if (args->sandbox == NULL && chdir(args->directory) < 0) report_and_exit(report_fd, ORL_SPAWN_CHDIR);

    int in_fd, out_fd, err_fd;
    if (args->log_path != NULL) {
        // O_APPEND: every write lands at the end even after the log is truncated by
        // rotation (without it, writes would continue at the old offset, leaving a hole).
        // O_NOCTTY: a session leader opening a terminal would otherwise acquire it.
        int log_fd = open(args->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (log_fd < 0) report_and_exit(report_fd, ORL_SPAWN_OPEN_LOG);
        log_fd = above_stdio(log_fd);
        if (log_fd < 0) report_and_exit(report_fd, ORL_SPAWN_DUP);

        int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (null_fd < 0) report_and_exit(report_fd, ORL_SPAWN_OPEN_DEVNULL);
        null_fd = above_stdio(null_fd);
        if (null_fd < 0) report_and_exit(report_fd, ORL_SPAWN_DUP);
        in_fd = null_fd;
        out_fd = log_fd;
        err_fd = log_fd;
    } else {
        // The caller's pipes, moved out of 0..2 first so that installing one cannot
        // overwrite another.
        in_fd = above_stdio(args->stdio[0]);
        out_fd = above_stdio(args->stdio[1]);
        err_fd = above_stdio(args->stdio[2]);
        if (in_fd < 0 || out_fd < 0 || err_fd < 0) report_and_exit(report_fd, ORL_SPAWN_DUP);
    }

    // dup2 onto a different descriptor clears close-on-exec on the copy: these three
    // are the only descriptors the program gets.
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) report_and_exit(report_fd, ORL_SPAWN_DUP);

    // Everything else the controller has open (its database, sockets, other agents'
    // logs: descriptors other threads opened without O_CLOEXEC, or between our pipe2
    // and fork) must not leak into the agent. Marking them close-on-exec rather than
    // closing them keeps the report pipe usable until execve succeeds.
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
#endif
    {
        // Kernels before 5.11: close them one by one, up to the descriptor limit
        // read before the fork.
        for (int fd = 3; fd < args->max_fd; fd++) {
            if (fd != report_fd && fd != args->inherit_fd) (void)close(fd);
        }
    }
    // The one descriptor asked for survives the execve (the caller made it >= 3, so the
    // three installed above cannot have replaced it, nor can the report pipe be it).
    if (args->inherit_fd >= 3 && fcntl(args->inherit_fd, F_SETFD, 0) < 0) report_and_exit(report_fd, ORL_SPAWN_DUP);

    if (args->sandbox != NULL) sandbox_init(args, report_fd);
    exec_program(args, report_fd);
}

static int child_entry(void *args) {
    child((const struct child_args *)args);
    return 127;
}

// MARK: The child's stack
//
// Kept per thread from one spawn to the next rather than mapped for each and unmapped
// after: a fresh mapping is faulted in (and zeroed) page by page by the child, and in a
// multi-threaded controller every munmap is a TLB shootdown on the other cores. With
// vfork's semantics nothing runs on it once clone has returned (the child has called
// execve or exited; a forked init has a copy of its own), so the next spawn of the
// thread may use it again. The upper half is a sandbox program's (see `spawn`).

#define ORL_CHILD_STACK (256 * 1024)
#define ORL_CHILD_STACKS (2 * ORL_CHILD_STACK)

static pthread_key_t stack_key;
static int stack_key_made;
static pthread_once_t stack_key_once = PTHREAD_ONCE_INIT;

static void release_stack(void *base) { munmap(base, ORL_CHILD_STACKS); }

static void make_stack_key(void) { stack_key_made = pthread_key_create(&stack_key, release_stack) == 0; }

/// The calling thread's stacks, mapped on its first spawn (unmapped when the thread
/// ends); NULL with errno set. `*kept` says whether the thread keeps it (else the
/// caller unmaps it: no key could be had).
static void *child_stacks(int *kept) {
    pthread_once(&stack_key_once, make_stack_key);
    *kept = 0;
    if (stack_key_made) {
        void *base = pthread_getspecific(stack_key);
        if (base != NULL) {
            *kept = 1;
            return base;
        }
    }
    void *base = mmap(NULL, ORL_CHILD_STACKS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) return NULL;
    if (stack_key_made && pthread_setspecific(stack_key, base) == 0) *kept = 1;
    return base;
}

static int spawn(
    const char *path, char *const argv[], char *const envp[], const char *directory, const char *log_path, const int *stdio,
    const orl_spawn_limits *limits, const orl_sandbox *sandbox, int inherit_fd, pid_t *pid_out, int *listener_out,
    int *status_out, orl_spawn_step *step_out) {
    *step_out = ORL_SPAWN_OK;
    if (listener_out != NULL) *listener_out = -1;
    if (status_out != NULL) *status_out = -1;

    // The child reports a failure before (or of) execve here, and a sandbox's init
    // sends the API listener; a successful execve closes the last copy of the child's
    // end (close-on-exec), so the parent reads end-of-file. A socket pair rather than
    // a pipe, for SCM_RIGHTS; close-on-exec also keeps it out of processes other
    // threads start meanwhile.
    int report[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, report) < 0) {
        *step_out = ORL_SPAWN_PIPE;
        return errno;
    }

    // Close-on-exec: only the init keeps the writing end (it never calls execve).
    int status_pipe[2] = {-1, -1};
    if (sandbox != NULL && status_out != NULL && pipe2(status_pipe, O_CLOEXEC) < 0) {
        int error = errno;
        close(report[0]);
        close(report[1]);
        *step_out = ORL_SPAWN_PIPE;
        return error;
    }

    struct rlimit files;
    int max_fd = 65536;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY && files.rlim_cur < (rlim_t)(1 << 20)) {
        max_fd = (int)files.rlim_cur;
    }
    struct child_args args = {
        .path = path,
        .argv = argv,
        .envp = envp,
        .directory = directory,
        .log_path = log_path,
        .stdio = stdio,
        .inherit_fd = inherit_fd,
        .limits = limits,
        .sandbox = sandbox,
        .report_fd = report[1],
        .status_fd = status_pipe[1],
        .max_fd = max_fd,
    };

    // vfork's semantics (as glibc's posix_spawn): the child borrows the parent's
    // memory, on a stack of its own, and the parent waits until its execve (or exit).
    // A fork copied the page tables of the whole controller for each agent, and the
    // agent's execve then tore them down again: most of the cost of a start. The child
    // writes nothing the parent reads but through the report socket (its dispositions
    // are its own: no CLONE_SIGHAND). A sandbox's init starts its program the same way,
    // on the upper half of the mapping, and then becomes the init image (see
    // `init_image`); where that image cannot run, the init is forked (a copy).
    int init_exe = sandbox != NULL ? init_image() : -1;
    args.init_exe = init_exe;
    int kept;
    void *stack = child_stacks(&kept);
    if (stack == NULL) {
        int error = errno;
        close(report[0]);
        close(report[1]);
        if (status_pipe[0] >= 0) close(status_pipe[0]);
        if (status_pipe[1] >= 0) close(status_pipe[1]);
        *step_out = ORL_SPAWN_FORK;
        return error;
    }
    args.program_stack_top = (char *)stack + ORL_CHILD_STACKS;

    // Blocked across the clone so that no controller signal handler runs in the child
    // before it has reset the dispositions; the parent restores its mask at once.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid;
    // clone, not unshare in the child: the child itself must be PID 1 of the new PID
    // namespace.
    unsigned long namespaces = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
    if (sandbox == NULL || init_exe >= 0) {
        unsigned long flags = CLONE_VM | CLONE_VFORK | SIGCHLD | (sandbox != NULL ? namespaces : 0);
        pid = clone(child_entry, (char *)stack + ORL_CHILD_STACK, (int)flags, &args);
    } else {
        // The init lives on as a copy of the controller. The raw system call, like
        // fork without glibc's handlers.
        pid = (pid_t)syscall(SYS_clone, namespaces | SIGCHLD, 0, 0, 0, 0);
    }
    if (pid == 0) child(&args);
    int fork_error = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (!kept) munmap(stack, ORL_CHILD_STACKS);

    close(report[1]);
    if (status_pipe[1] >= 0) close(status_pipe[1]);
    if (pid < 0) {
        close(report[0]);
        if (status_pipe[0] >= 0) close(status_pipe[0]);
        *step_out = sandbox == NULL ? ORL_SPAWN_FORK : ORL_SPAWN_NAMESPACES;
        return fork_error;
    }

    struct report received;
    ssize_t count;
    int listener = -1;
    while (1) {
        union {
            char buffer[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        struct iovec vector = {.iov_base = &received, .iov_len = sizeof received};
        struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof control.buffer};
        do {
            count = recvmsg(report[0], &message, MSG_CMSG_CLOEXEC | MSG_WAITALL);
        } while (count < 0 && errno == EINTR);
        struct cmsghdr *header = count > 0 ? CMSG_FIRSTHDR(&message) : NULL;
        if (header != NULL && header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS) {
            int fd;
            memcpy(&fd, CMSG_DATA(header), sizeof fd);
            if (listener >= 0) close(listener);
            listener = fd;
        }
        // An OK report is the listener's envelope; anything else ends the reading.
        if (count == (ssize_t)sizeof received && received.step == ORL_SPAWN_OK) continue;
        break;
    }
    int read_error = errno;
    close(report[0]);

    if (count == 0) {
        // End of file: execve succeeded (or the child was killed before it could
        // report, which its exit status will tell).
        *pid_out = pid;
        if (status_out != NULL) *status_out = status_pipe[0];
        if (listener_out != NULL) {
            *listener_out = listener;
        } else if (listener >= 0) {
            close(listener);
        }
        return 0;
    }
    if (listener >= 0) close(listener);
    if (status_pipe[0] >= 0) close(status_pipe[0]);

    // The child failed and exits with 127 at once: reap it here, so a failed start
    // leaves no zombie and the caller never sees its PID.
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (count == (ssize_t)sizeof received) {
        *step_out = (orl_spawn_step)received.step;
        return received.error;
    }
    // A partial report cannot happen for 8 bytes on a pipe; say so if it does.
    *step_out = ORL_SPAWN_FORK;
    return count < 0 ? read_error : EIO;
}

int orl_spawn(
    const char *path, char *const argv[], char *const envp[], const char *directory, const char *log_path,
    const orl_spawn_limits *limits, pid_t *pid_out, orl_spawn_step *step_out) {
    return spawn(path, argv, envp, directory, log_path, NULL, limits, NULL, -1, pid_out, NULL, NULL, step_out);
}

int orl_spawn_detached(
    const char *path, char *const argv[], char *const envp[], const char *directory, const char *log_path, int inherit_fd,
    pid_t *pid_out, orl_spawn_step *step_out) {
    if (inherit_fd < 3) {
        *step_out = ORL_SPAWN_DUP;
        return EBADF;
    }
    orl_spawn_limits limits = {.address_space = -1, .open_files = -1, .cpu_seconds = -1};
    return spawn(path, argv, envp, directory, log_path, NULL, &limits, NULL, inherit_fd, pid_out, NULL, NULL, step_out);
}

int orl_spawn_stdio(
    const char *path, char *const argv[], char *const envp[], const char *directory, const int stdio[3],
    const orl_spawn_limits *limits, pid_t *pid_out, orl_spawn_step *step_out) {
    return spawn(path, argv, envp, directory, NULL, stdio, limits, NULL, -1, pid_out, NULL, NULL, step_out);
}

int orl_spawn_sandboxed(
    const char *path, char *const argv[], char *const envp[], const char *directory, const char *log_path, const int stdio[3],
    const orl_spawn_limits *limits, const orl_sandbox *sandbox, pid_t *pid_out, int *listener_out, int *status_out,
    orl_spawn_step *step_out) {
    return spawn(
        path, argv, envp, directory, log_path, log_path == NULL ? stdio : NULL, limits, sandbox, -1, pid_out, listener_out,
        status_out, step_out);
}

struct netns_listen {
    pid_t pid;
    int port;
    int fd;
    int error;
};

static void *listen_in_netns(void *argument) {
    struct netns_listen *job = argument;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/net", (int)job->pid);
    int ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) {
        job->error = errno;
        if (ns >= 0) close(ns);
        return NULL;
    }
    close(ns);
    // This thread now lives in the agent's network namespace, and ends right after.
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listener < 0) {
        job->error = errno;
        return NULL;
    }
    int one = 1;
    (void)setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)job->port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 512) < 0) {
        job->error = errno;
        close(listener);
        return NULL;
    }
    job->fd = listener;
    return NULL;
}

int orl_listen_in_netns(pid_t pid, int port) {
    struct netns_listen job = {.pid = pid, .port = port, .fd = -1, .error = 0};
    pthread_t thread;
    int created = pthread_create(&thread, NULL, listen_in_netns, &job);
    if (created != 0) {
        errno = created;
        return -1;
    }
    pthread_join(thread, NULL);
    if (job.fd < 0) errno = job.error;
    return job.fd;
}

int orl_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

int orl_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int orl_affinity_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
}

const char *orl_spawn_step_description(orl_spawn_step step) {
    switch (step) {
    case ORL_SPAWN_OK: return "start";
    case ORL_SPAWN_PIPE: return "create the start-up pipe";
    case ORL_SPAWN_FORK: return "fork";
    case ORL_SPAWN_SETSID: return "create a new session";
    case ORL_SPAWN_CHDIR: return "change to the working directory";
    case ORL_SPAWN_OPEN_LOG: return "open the log file";
    case ORL_SPAWN_OPEN_DEVNULL: return "open /dev/null for stdin";
    case ORL_SPAWN_DUP: return "set up stdin, stdout and stderr";
    case ORL_SPAWN_RLIMIT_AS: return "set the address-space limit (RLIMIT_AS)";
    case ORL_SPAWN_RLIMIT_NOFILE: return "set the open-files limit (RLIMIT_NOFILE)";
    case ORL_SPAWN_RLIMIT_CPU: return "set the CPU-time limit (RLIMIT_CPU)";
    case ORL_SPAWN_SIGNALS: return "reset the signal mask";
    case ORL_SPAWN_EXEC: return "execute the program";
    case ORL_SPAWN_NAMESPACES: return "create the sandbox's namespaces (mount, network, PID, IPC, UTS)";
    case ORL_SPAWN_CGROUP: return "join the sandbox's cgroups";
    case ORL_SPAWN_MOUNTS: return "build the sandbox's file-system view";
    case ORL_SPAWN_NETWORK: return "set up the sandbox's network (loopback and the API listener)";
    case ORL_SPAWN_PRIVILEGES: return "drop privileges (uid, gid, capabilities, no_new_privs)";
    case ORL_SPAWN_SECCOMP: return "install the seccomp filter";
    case ORL_SPAWN_INIT: return "start the program under the sandbox's init";
    case ORL_SPAWN_RLIMIT_NPROC: return "set the process limit (RLIMIT_NPROC)";
    }
    return "start";
}

int orl_read_program_status(int fd, int *status_out) {
    // The init writes before it exits and the caller reads after reaping it, so the
    // bytes are there or never will be: poll rather than block, to be safe.
    struct pollfd ready = {.fd = fd, .events = POLLIN};
    if (poll(&ready, 1, 0) <= 0) return 0;
    int status;
    ssize_t count;
    do {
        count = read(fd, &status, sizeof status);
    } while (count < 0 && errno == EINTR);
    if (count != (ssize_t)sizeof status) return 0;
    *status_out = status;
    return 1;
}
