/* spawn.h: run one of our programs from a test, capturing its standard output in a file. */
#ifndef BF_TEST_SPAWN_H
#define BF_TEST_SPAWN_H

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>

extern char **environ;

/* Runs prog with args (NULL-terminated, not including argv[0]); stdout goes to out_path, stderr to
 * /dev/null unless keep_stderr. Returns the exit status, or -1 if it did not exit normally. */
static inline int bf_spawn(const char *prog, const char *const *args, const char *out_path, int keep_stderr) {
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
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!keep_stderr) posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int st = -1;
    if (posix_spawn(&pid, prog, &fa, NULL, argv, environ) == 0) waitpid(pid, &st, 0);
    posix_spawn_file_actions_destroy(&fa);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
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

#endif
