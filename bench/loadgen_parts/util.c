/*
 * util.c: the small utilities of util.h that are out of line (as they were when loadgen.c
 * was one file): errors, CPU time, buffer growth, non-blocking fds, the fd limit.
 */
#define _GNU_SOURCE
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

int ep;
uint64_t rng_state = 0x9E3779B97F4A7C15ull;

void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, errno ? strerror(errno) : "error");
    printf("{\"event\":\"error\",\"what\":\"%s\"}\n", what);
    fflush(stdout);
    exit(2);
}

double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

void buf_reserve(struct buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t n = b->cap ? b->cap : 4096;
    while (n < b->len + extra) n *= 2;
    char *p = realloc(b->p, n);
    if (!p) die("out of memory");
    b->p = p;
    b->cap = n;
}

void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}
