/*
 * client.c: ``loadgen client``: its state (client.h), the set-up (at most 64 connections
 * being opened at once, the publisher last), the probes that make sure every subscriber
 * is registered before a phase starts, the commands read on stdin between phases, and the
 * loop that runs a phase or waits for the next command while every socket is served.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "client.h"

struct client_opt opt = {0, 100, 0, 240, "/sub", "/pub", "", "bench"};
struct conn *conns;
struct conn *pub;
char padstr[8192];
int probing = 0;
int64_t probe_id = 0;
uint64_t setup_ready = 0, closed_total = 0, bad_total = 0, pings_total = 0;
uint64_t acks_total = 0, errors_total = 0;
char first_error[512];

/* -- the client: commands and the loop ----------------------------------------------------- */

static char cmdbuf[4096];
static size_t cmdlen;
static int quit_requested, stdin_eof;

static void run_command(char *line) {
    char what[32];
    double a = 0, b = 0, c = 0, d = 0;
    int k = sscanf(line, "%31s %lf %lf %lf %lf", what, &a, &b, &c, &d);
    if (k < 1) return;
    if (!strcmp(what, "quit")) {
        quit_requested = 1;
    } else if (!strcmp(what, "burst") && k >= 3) {
        phase_start(M_BURST, (int64_t)a, 0, 0, 0, b, 0);
    } else if (!strcmp(what, "window") && k >= 4) {
        phase_start(M_WINDOW, -1, (int)a, 0, b, c, 0);
    } else if (!strcmp(what, "rate") && k >= 4) {
        phase_start(M_RATE, -1, 0, a, b, c, k >= 5 && d != 0);
    } else {
        printf("{\"event\":\"error\",\"what\":\"unknown command\"}\n");
        fflush(stdout);
    }
}

/* Reads stdin; runs one complete command line if idle. EOF: quit. */
void on_stdin(void) {
    if (cmdlen < sizeof cmdbuf - 1) {
        ssize_t r = read(0, cmdbuf + cmdlen, sizeof cmdbuf - 1 - cmdlen);
        if (r == 0) { /* the bench is gone or done: finish the queued commands, then quit */
            stdin_eof = 1;
            epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
        }
        if (r > 0) cmdlen += (size_t)r;
    }
}

static void next_command(void) {
    char *nl = memchr(cmdbuf, '\n', cmdlen);
    if (!nl && stdin_eof) quit_requested = 1;
    if (!nl || P.mode != M_IDLE) return;
    *nl = 0;
    run_command(cmdbuf);
    size_t used = (size_t)(nl - cmdbuf) + 1;
    memmove(cmdbuf, nl + 1, cmdlen - used);
    cmdlen -= used;
}

int client_main(void) {
    raise_nofile();
    rng_state ^= now_ns() ^ ((uint64_t)getpid() << 32);
    int padn = opt.pad < (int)sizeof padstr - 1 ? opt.pad : (int)sizeof padstr - 1;
    memset(padstr, 'x', (size_t)padn);
    padstr[padn] = 0;
    ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    conns = calloc((size_t)opt.n + 1, sizeof *conns);
    if (!conns) die("out of memory");
    for (int i = 0; i <= opt.n; i++) {
        conns[i].idx = i;
        conns[i].state = -1;
        conns[i].last_probe = -1;
    }
    pub = &conns[opt.n];
    pub->is_pub = 1;
    rbuf_cap = RBUF_MIN;
    rbuf = malloc(rbuf_cap);

    /* Set-up: at most 64 connections being opened at once, the publisher last. */
    uint64_t t0 = now_ns(), setup_deadline = t0 + 120000000000ull;
    double cpu0 = cpu_seconds();
    int started = 0;
    while (setup_ready < (uint64_t)opt.n + 1) {
        while (started <= opt.n && (uint64_t)started - setup_ready < 64)
            start_connect(&conns[started++]);
        if (closed_total || now_ns() > setup_deadline) {
            printf("{\"event\":\"error\",\"what\":\"set-up failed: %llu of %d connections "
                   "ready, %llu closed\",\"server_error\":\"%s\"}\n",
                   (unsigned long long)setup_ready, opt.n + 1, (unsigned long long)closed_total,
                   first_error);
            fflush(stdout);
            return 2;
        }
        poll_once(50);
    }
    uint64_t t_conn = now_ns();
    /* Probes until every subscriber has the latest one (bounded: 30 s). */
    probing = 1;
    uint64_t probe_deadline = now_ns() + 30000000000ull, last_probe_at = 0;
    int all = 0;
    while (!all) {
        uint64_t now = now_ns();
        if (now > probe_deadline || closed_total) {
            printf("{\"event\":\"error\",\"what\":\"probes did not reach every subscriber\"}\n");
            fflush(stdout);
            return 2;
        }
        if (now - last_probe_at > 200000000ull) {
            send_probe();
            last_probe_at = now;
        }
        poll_once(10);
        all = 1;
        for (int i = 0; i < opt.n && all; i++) all = conns[i].last_probe == probe_id;
    }
    probing = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    set_nonblock(0);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) die("epoll_ctl stdin");
    printf("{\"event\":\"ready\",\"n\":%d,\"connect_s\":%.3f,\"probe_s\":%.3f,\"probes\":%lld,"
           "\"lg_cpu_s\":%.3f}\n",
           opt.n, (double)(t_conn - t0) / 1e9, (double)(now_ns() - t_conn) / 1e9,
           (long long)probe_id, cpu_seconds() - cpu0);
    fflush(stdout);

    while (!quit_requested) {
        int timeout = 1000;
        if (P.mode != M_IDLE) {
            uint64_t now = now_ns();
            timeout = phase_publish(now);
            if (phase_done(now)) {
                phase_end();
                continue;
            }
            uint64_t left = P.deadline > now ? (P.deadline - now) / 1000000 + 1 : 0;
            if ((uint64_t)timeout > left) timeout = (int)left;
        } else {
            next_command();
            if (P.mode != M_IDLE) continue;
        }
        if (!quit_requested) poll_once(timeout);
    }
    for (int i = 0; i <= opt.n; i++)
        if (conns[i].state != ST_CLOSED && conns[i].state >= 0) close(conns[i].fd);
    printf("{\"event\":\"bye\",\"closed\":%llu,\"errors\":%llu,\"acks\":%llu}\n",
           (unsigned long long)closed_total, (unsigned long long)errors_total,
           (unsigned long long)acks_total);
    fflush(stdout);
    return 0;
}
