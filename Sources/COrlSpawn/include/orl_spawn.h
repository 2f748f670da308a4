#ifndef ORL_SPAWN_H
#define ORL_SPAWN_H

#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The step of starting a process that failed, reported with its errno.
typedef enum {
    ORL_SPAWN_OK = 0,
    ORL_SPAWN_PIPE,           ///< parent: creating the error-report pipe
    ORL_SPAWN_FORK,           ///< parent: fork
    ORL_SPAWN_SETSID,         ///< child: new session and process group
    ORL_SPAWN_CHDIR,          ///< child: working directory
    ORL_SPAWN_OPEN_LOG,       ///< child: opening the log file
    ORL_SPAWN_OPEN_DEVNULL,   ///< child: opening /dev/null for stdin
    ORL_SPAWN_DUP,            ///< child: installing fds 0, 1, 2
    ORL_SPAWN_RLIMIT_AS,      ///< child: setrlimit(RLIMIT_AS)
    ORL_SPAWN_RLIMIT_NOFILE,  ///< child: setrlimit(RLIMIT_NOFILE)
    ORL_SPAWN_RLIMIT_CPU,     ///< child: setrlimit(RLIMIT_CPU)
    ORL_SPAWN_SIGNALS,        ///< child: resetting the signal mask
    ORL_SPAWN_EXEC,           ///< child: execve
    ORL_SPAWN_NAMESPACES,     ///< parent: clone into new namespaces
    ORL_SPAWN_CGROUP,         ///< sandbox: joining the agent's cgroups
    ORL_SPAWN_MOUNTS,         ///< sandbox: building the private file-system view
    ORL_SPAWN_NETWORK,        ///< sandbox: loopback and the API listener inside
    ORL_SPAWN_PRIVILEGES,     ///< sandbox: uid, gid, capabilities, no_new_privs
    ORL_SPAWN_SECCOMP,        ///< sandbox: installing the seccomp filter
    ORL_SPAWN_INIT,           ///< sandbox: starting the program under the namespace's init
    ORL_SPAWN_RLIMIT_NPROC,   ///< child: setrlimit(RLIMIT_NPROC)
} orl_spawn_step;

/// One entry of a sandbox's file-system view, applied in order (the caller sorts
/// them so that a deeper path comes after the one it lies in).
typedef enum {
    ORL_MOUNT_READONLY = 0,  ///< the host path, bound read-only at the same path (a symlink is recreated)
    ORL_MOUNT_WRITABLE = 1,  ///< the host path, bound read-write at the same path
    ORL_MOUNT_HIDDEN = 2,    ///< an empty read-only tmpfs over the path (what lies below it is not visible)
    ORL_MOUNT_TMPFS = 3,     ///< an empty writable tmpfs (mode 1777), such as /tmp
} orl_mount_kind;

typedef struct {
    int kind;          ///< orl_mount_kind
    const char *path;  ///< absolute, normalised (no "..", no trailing slash)
} orl_mount;

/// The sandbox a process is started in (see docs/sandbox.md). The process becomes
/// PID 2 of a new PID namespace, under a minimal init (PID 1) that reaps and exits
/// with the program's status (a signal N as 128+N); new mount, network, IPC and UTS
/// namespaces; a root built from `mounts` alone on a tmpfs, /proc of its own, a
/// minimal /dev; only loopback; `uid` and `gid` with no supplementary groups, every
/// capability dropped, no_new_privs and a seccomp filter. Needs the caller to be root
/// (CAP_SYS_ADMIN): the mounts are made with the caller's privileges, so host paths
/// that are not world-traversable can still be offered read-only.
typedef struct {
    unsigned int uid;
    unsigned int gid;
    const orl_mount *mounts;
    int mount_count;
    /// > 0: a TCP socket listening on 127.0.0.1:api_port inside the network namespace
    /// is handed back in `listener_out` (the caller serves orl's API on it).
    int api_port;
    /// NULL-terminated cgroup.procs files the process joins ("0" is written to each).
    char *const *cgroup_procs;
    /// RLIMIT_NPROC, or negative to leave it.
    long long processes;
} orl_sandbox;

/// Resource limits applied in the child just before execve; a negative value leaves
/// that limit as inherited. Soft and hard limits are both set, so the agent cannot
/// raise them again.
typedef struct {
    long long address_space;  ///< RLIMIT_AS, bytes
    long long open_files;     ///< RLIMIT_NOFILE
    long long cpu_seconds;    ///< RLIMIT_CPU, seconds
} orl_spawn_limits;

/// Starts `path` (already resolved: no PATH search) with exactly `argv` and `envp`
/// (both NULL-terminated) in a new session, in `directory`, with stdin from /dev/null
/// and stdout and stderr appended to `log_path` (created 0600 when missing), no other
/// descriptor inherited, default signal dispositions and an empty signal mask.
///
/// Returns 0 and stores the child's PID in `pid_out` once the child has called
/// execve successfully. Otherwise returns the errno of the step that failed and
/// stores that step in `step_out`; a child that failed has already been reaped.
///
/// Safe to call from a multi-threaded process: the child between fork and execve
/// makes only async-signal-safe system calls, on memory prepared before the fork.
/// The caller owns the child and must reap it (waitpid) eventually.
int orl_spawn(
    const char *path, char *const argv[], char *const envp[], const char *directory, const char *log_path,
    const orl_spawn_limits *limits, pid_t *pid_out, orl_spawn_step *step_out);

/// As orl_spawn with no limits, but the program also keeps `inherit_fd` (>= 3, under
/// that number): a daemon's way to tell whoever started it that it is ready.
int orl_spawn_detached(
    const char *path, char *const argv[], char *const envp[], const char *directory, const char *log_path, int inherit_fd,
    pid_t *pid_out, orl_spawn_step *step_out);

/// As orl_spawn, but with `stdio[0]`, `stdio[1]` and `stdio[2]` (the caller's pipes,
/// say) as the child's standard input, output and error instead of /dev/null and a log.
/// The caller closes its copies of the child's ends after the call.
int orl_spawn_stdio(
    const char *path, char *const argv[], char *const envp[], const char *directory, const int stdio[3],
    const orl_spawn_limits *limits, pid_t *pid_out, orl_spawn_step *step_out);

/// As orl_spawn / orl_spawn_stdio (`log_path` NULL: `stdio`), in `sandbox` (NULL: none).
/// `listener_out` gets the API listener (or -1); the returned PID is the namespace's init.
/// `status_out` (if not NULL) gets the reading end of a pipe (close-on-exec) on which
/// the init writes the program's raw wait status (an int) just before it exits: the
/// init's own status can only say 128+N for a program killed by signal N.
int orl_spawn_sandboxed(
    const char *path, char *const argv[], char *const envp[], const char *directory, const char *log_path, const int stdio[3],
    const orl_spawn_limits *limits, const orl_sandbox *sandbox, pid_t *pid_out, int *listener_out, int *status_out,
    orl_spawn_step *step_out);

/// Reads the wait status a sandbox's init wrote on `fd` (see orl_spawn_sandboxed) without
/// blocking; returns 1 and stores it in `status_out`, or 0 if none was written.
int orl_read_program_status(int fd, int *status_out);

/// A TCP socket listening on 127.0.0.1:port inside the network namespace of `pid`
/// (for a sandboxed process adopted from an earlier controller); -1 with errno set.
int orl_listen_in_netns(pid_t pid, int port);

/// pipe2(fds, O_CLOEXEC), which Swift's Glibc module does not show (a GNU extension).
int orl_pipe_cloexec(int fds[2]);

/// pidfd_open(2): a close-on-exec descriptor that becomes readable once `pid` has
/// ended (reaping it is still waitpid's business); -1 with errno set (Linux before 5.3).
int orl_pidfd_open(pid_t pid);

/// The CPUs this thread may run on (sched_getaffinity, a GNU extension): what `taskset`
/// or a container's cpuset left it; 0 when it cannot be told.
int orl_affinity_cpu_count(void);

/// What a step was doing, for error messages ("open the log file").
const char *orl_spawn_step_description(orl_spawn_step step);

#ifdef __cplusplus
}
#endif

#endif
