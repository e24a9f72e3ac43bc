/* spawn.h: run one of our programs from a test, capturing its standard output in a file. */
#ifndef BF_TEST_SPAWN_H
#define BF_TEST_SPAWN_H

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Runs prog with args (NULL-terminated, not including argv[0]), standard input from in_path (NULL:
 * inherited); stdout goes to out_path, stderr to out_path too with keep_stderr 2, to the caller's
 * with 1, to /dev/null with 0. Returns the exit status, or -1 if it did not exit normally. */
static inline int bf_spawn_in(const char *prog, const char *const *args, const char *in_path, const char *out_path,
                              int keep_stderr) {
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)prog;
    while (n < 63 && args[n - 1]) {
        argv[n] = (char *)args[n - 1];
        n++;
    }
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (in_path) posix_spawn_file_actions_addopen(&fa, 0, in_path, O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!keep_stderr) posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (keep_stderr == 2) posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int st = -1;
    if (posix_spawn(&pid, prog, &fa, NULL, argv, environ) == 0) waitpid(pid, &st, 0);
    posix_spawn_file_actions_destroy(&fa);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* bf_spawn_in without a standard input of its own. */
static inline int bf_spawn(const char *prog, const char *const *args, const char *out_path, int keep_stderr) {
    return bf_spawn_in(prog, args, NULL, out_path, keep_stderr);
}

/* Starts prog with args (as bf_spawn) in the background, its stdout and stderr into log; its pid,
 * or -1. */
static inline pid_t bf_spawn_bg(const char *prog, const char *const *args, const char *log) {
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)prog;
    while (n < 63 && args[n - 1]) argv[n] = (char *)args[n - 1], n++;
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = -1;
    if (posix_spawn(&pid, prog, &fa, NULL, argv, environ)) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static inline double bf_spawn_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The exit status of pid within seconds, or -1 (then it is killed). */
static inline int bf_spawn_wait(pid_t pid, double seconds) {
    int status = 0;
    for (double t0 = bf_spawn_clock(); bf_spawn_clock() - t0 < seconds; usleep(100000))
        if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* 0 once path exists, -1 if it does not within seconds. */
static inline int bf_wait_file(const char *path, double seconds) {
    struct stat st;
    for (double t0 = bf_spawn_clock(); bf_spawn_clock() - t0 < seconds; usleep(100000))
        if (stat(path, &st) == 0) return 0;
    return -1;
}

/* The whole file as a NUL-terminated string in a static buffer (64 KiB at most). */
static inline char *bf_slurp(const char *path) {
    static char buf[1 << 16];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

/* Runs prog --home DIR/USER rest... (foreground, stdout and stderr into DIR/USER.cli, printed if
 * it fails); its exit status. */
static inline int bf_spawn_user(const char *prog, const char *dir, const char *user, const char *const *rest) {
    const char *args[32] = {"--home", NULL};
    char home[700], out[700];
    snprintf(home, sizeof home, "%s/%s", dir, user);
    snprintf(out, sizeof out, "%s/%s.cli", dir, user);
    args[1] = home;
    int n = 2;
    for (int i = 0; rest[i] && n < 31; i++) args[n++] = rest[i];
    args[n] = NULL;
    int rc = bf_spawn(prog, args, out, 1);
    if (rc) fprintf(stderr, "%s %s: exit %d: %s\n", user, rest[0], rc, bf_slurp(out));
    return rc;
}

#endif
