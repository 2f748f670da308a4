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
    int report_fd;
    /// Upper bound for the close() loop when close_range is not available.
    int max_fd;
};

static void report_and_exit(int fd, orl_spawn_step step) __attribute__((noreturn));
static void report_and_exit(int fd, orl_spawn_step step) {
    struct report report = {.step = (int)step, .error = errno};
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

    if (chdir(args->directory) < 0) report_and_exit(report_fd, ORL_SPAWN_CHDIR);

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
            if (fd != report_fd) (void)close(fd);
        }
    }

    // Limits last: a low RLIMIT_NOFILE must not make opening the log fail, and
    // RLIMIT_CPU should count the agent's time, not ours.
    if (set_limit(RLIMIT_AS, args->limits->address_space) < 0) report_and_exit(report_fd, ORL_SPAWN_RLIMIT_AS);
    if (set_limit(RLIMIT_NOFILE, args->limits->open_files) < 0) report_and_exit(report_fd, ORL_SPAWN_RLIMIT_NOFILE);
    if (set_limit(RLIMIT_CPU, args->limits->cpu_seconds) < 0) report_and_exit(report_fd, ORL_SPAWN_RLIMIT_CPU);

    // The signal mask survives execve: the agent starts with nothing blocked.
    sigset_t empty;
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) < 0) report_and_exit(report_fd, ORL_SPAWN_SIGNALS);

    execve(args->path, args->argv, args->envp);
    report_and_exit(report_fd, ORL_SPAWN_EXEC);
}

static int spawn(
    const char *path, char *const argv[], char *const envp[], const char *directory, const char *log_path, const int *stdio,
    const orl_spawn_limits *limits, pid_t *pid_out, orl_spawn_step *step_out) {
    *step_out = ORL_SPAWN_OK;

    // The child reports a failure before (or of) execve here; a successful execve
    // closes the write end (O_CLOEXEC), so the parent reads end-of-file. O_CLOEXEC also
    // keeps this pipe out of processes other threads start meanwhile.
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) {
        *step_out = ORL_SPAWN_PIPE;
        return errno;
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
        .limits = limits,
        .report_fd = report[1],
        .max_fd = max_fd,
    };

    // Blocked across fork so that no controller signal handler runs in the child
    // before it has reset the dispositions; the parent restores its mask at once.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = fork();
    if (pid == 0) child(&args);
    int fork_error = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);

    close(report[1]);
    if (pid < 0) {
        close(report[0]);
        *step_out = ORL_SPAWN_FORK;
        return fork_error;
    }

    struct report received;
    ssize_t count;
    do {
        count = read(report[0], &received, sizeof received);
    } while (count < 0 && errno == EINTR);
    int read_error = errno;
    close(report[0]);

    if (count == 0) {
        // End of file: execve succeeded (or the child was killed before it could
        // report, which its exit status will tell).
        *pid_out = pid;
        return 0;
    }

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
    return spawn(path, argv, envp, directory, log_path, NULL, limits, pid_out, step_out);
}

int orl_spawn_stdio(
    const char *path, char *const argv[], char *const envp[], const char *directory, const int stdio[3],
    const orl_spawn_limits *limits, pid_t *pid_out, orl_spawn_step *step_out) {
    return spawn(path, argv, envp, directory, NULL, stdio, limits, pid_out, step_out);
}

int orl_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

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
    }
    return "start";
}
