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
} orl_spawn_step;

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

/// As orl_spawn, but with `stdio[0]`, `stdio[1]` and `stdio[2]` (the caller's pipes,
/// say) as the child's standard input, output and error instead of /dev/null and a log.
/// The caller closes its copies of the child's ends after the call.
int orl_spawn_stdio(
    const char *path, char *const argv[], char *const envp[], const char *directory, const int stdio[3],
    const orl_spawn_limits *limits, pid_t *pid_out, orl_spawn_step *step_out);

/// pipe2(fds, O_CLOEXEC), which Swift's Glibc module does not show (a GNU extension).
int orl_pipe_cloexec(int fds[2]);

/// What a step was doing, for error messages ("open the log file").
const char *orl_spawn_step_description(orl_spawn_step step);

#ifdef __cplusplus
}
#endif

#endif
