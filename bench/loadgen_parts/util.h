/*
 * util.h: what every part of the load generator shares: the markers it looks for in a
 * payload, buffer sizes, the process's one epoll set, the clock and CPU time, a small PRNG
 * and growable byte buffers.
 *
 * now_ns, rng32 and buf_append are inline here because they sit on a message's path and
 * the compiler inlined them when loadgen.c was one file; splitting it must not add calls.
 */
#ifndef LOADGEN_UTIL_H
#define LOADGEN_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define MARK "\"bm\":"
#define MARK_LEN 5
#define PROBE "\"probe\":"
#define PROBE_LEN 8
#define RBUF_MIN (256 * 1024)
#define MAX_EVENTS 1024

extern int ep; /* the epoll set of whichever mode runs (client or serve) */

/* Prints the error (stderr, and as a JSON line for the bench) and exits with status 2. */
__attribute__((noreturn)) void die(const char *what);
double cpu_seconds(void);

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

extern uint64_t rng_state;

static inline uint32_t rng32(void) { /* xorshift64*: mask keys and handshake nonces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

struct buf {
    char *p;
    size_t len, cap, off; /* off: bytes already consumed from the front (output buffers) */
};

void buf_reserve(struct buf *b, size_t extra);

static inline void buf_append(struct buf *b, const void *d, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

void set_nonblock(int fd);
void raise_nofile(void);

#endif
