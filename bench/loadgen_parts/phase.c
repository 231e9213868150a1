/*
 * phase.c: one measured phase (burst, window or rate, as the commands name them): its
 * publishing (each message framed with its sequence number and CLOCK_MONOTONIC stamp),
 * when it is done (everything delivered, or 3 s after the last delivery, or its time
 * limit), and its result: one JSON line with the counts, the percentiles and this
 * process's CPU time over the phase.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "hist.h"
#include "ws.h"

struct phase P;
static uint64_t pub_id = 10; /* Centrifugo command ids of publishes (1, 2: connect, subscribe) */
static int64_t global_seq = 0;

/* -- the client: publishing ---------------------------------------------------------------- */

static void publish_one(struct buf *b) {
    char payload[16384];
    int64_t seq = P.base + P.published;
    uint64_t t = now_ns();
    int n;
    if (opt.centrifugo)
        n = snprintf(payload, sizeof payload,
                     "{\"id\":%llu,\"publish\":{\"channel\":\"%s\",\"data\":"
                     "{\"bm\":%lld,\"t\":%llu,\"pad\":\"%s\"}}}",
                     (unsigned long long)pub_id++, opt.channel, (long long)seq,
                     (unsigned long long)t, padstr);
    else
        n = snprintf(payload, sizeof payload, "{\"bm\":%lld,\"t\":%llu,\"pad\":\"%s\"}",
                     (long long)seq, (unsigned long long)t, padstr);
    frame_append(b, 1, payload, (size_t)n, 1);
    if ((size_t)P.published >= P.cnt_cap) {
        size_t cap = P.cnt_cap ? P.cnt_cap * 2 : 65536;
        P.cnt = realloc(P.cnt, cap * sizeof *P.cnt);
        if (!P.cnt) die("out of memory");
        memset(P.cnt + P.cnt_cap, 0, (cap - P.cnt_cap) * sizeof *P.cnt);
        P.cnt_cap = cap;
    }
    if (!P.published) P.first_send = t;
    P.published++;
}

void send_probe(void) {
    char payload[16384];
    int n;
    probe_id++;
    if (opt.centrifugo)
        n = snprintf(payload, sizeof payload,
                     "{\"id\":%llu,\"publish\":{\"channel\":\"%s\",\"data\":"
                     "{\"probe\":%lld,\"pad\":\"%s\"}}}",
                     (unsigned long long)pub_id++, opt.channel, (long long)probe_id, padstr);
    else
        n = snprintf(payload, sizeof payload, "{\"probe\":%lld,\"pad\":\"%s\"}",
                     (long long)probe_id, padstr);
    send_frame(pub, 1, payload, (size_t)n);
}

static int pub_writable(void) { return pub->state == ST_READY && pub->out.off == pub->out.len; }

/* Publishes what the phase allows now; returns the epoll timeout (ms) until it next may. */
int phase_publish(uint64_t now) {
    if (pub->state != ST_READY) return 50;
    if (P.target < 0 && now >= P.pub_until) P.target = P.published; /* time is up */
    if (P.target >= 0 && P.published >= P.target) return P.spin ? 0 : 50;
    if (P.mode == M_BURST) {
        if (!pub_writable()) return 50; /* EPOLLOUT wakes us */
        struct buf *b = &pub->out;
        for (int i = 0; i < 32 && P.published < P.target; i++) publish_one(b);
        flush_out(pub);
        return 0;
    }
    if (P.mode == M_WINDOW) {
        while (P.published - P.completed < P.window && pub_writable()) {
            publish_one(&pub->out);
            flush_out(pub);
        }
        uint64_t left = P.pub_until - now;
        return left > 50000000ull ? 50 : (int)(left / 1000000) + 1;
    }
    if (P.mode == M_RATE) {
        /* Open loop: message i is due at start + i / rate, whatever the server does. */
        uint64_t due = P.t_start + (uint64_t)((double)P.published * 1e9 / P.rate);
        while (due <= now && pub_writable()) {
            publish_one(&pub->out);
            flush_out(pub);
            due = P.t_start + (uint64_t)((double)P.published * 1e9 / P.rate);
        }
        if (P.spin) return 0;
        return due > now ? (int)((due - now) / 1000000) : 0;
    }
    return 1000;
}

int phase_done(uint64_t now) {
    if (now >= P.deadline) {
        P.timed_out = 1;
        return 1;
    }
    if (P.target < 0 || P.published < P.target) return 0;
    if (P.completed >= P.published) return 1;
    /* Everything sent but not everything arrived: give up 3 s after the last delivery (the
     * missing ones are counted as lost). */
    uint64_t last = P.last_recv > P.first_send ? P.last_recv : P.first_send;
    if (P.drain_until < last + 3000000000ull) P.drain_until = last + 3000000000ull;
    return now >= P.drain_until;
}

void phase_start(int mode, int64_t target, int window, double rate, double seconds,
                 double limit, int spin) {
    memset(hist, 0, sizeof hist);
    hist_n = 0;
    P.mode = mode;
    P.spin = spin;
    P.timed_out = 0;
    P.base = global_seq;
    P.published = P.completed = 0;
    P.target = target;
    P.window = window;
    P.rate = rate;
    P.t_start = now_ns();
    P.pub_until = P.t_start + (uint64_t)(seconds * 1e9);
    P.deadline = P.t_start + (uint64_t)(limit * 1e9);
    P.first_send = P.last_recv = P.drain_until = 0;
    P.deliveries = P.acks = P.errors = 0;
    P.bad0 = bad_total;
    if (P.cnt) memset(P.cnt, 0, P.cnt_cap * sizeof *P.cnt);
    for (int i = 0; i < opt.n; i++) {
        struct conn *c = &conns[i];
        c->next_seq = P.base;
        c->got = c->lost = c->dup = c->stale = 0;
    }
    P.cpu0 = cpu_seconds();
}

static const char *mode_name(int m) {
    return m == M_BURST ? "burst" : m == M_WINDOW ? "window" : m == M_RATE ? "rate" : "idle";
}

void phase_end(void) {
    double cpu = cpu_seconds() - P.cpu0;
    uint64_t t_end = now_ns();
    int64_t final = P.base + P.published;
    uint64_t lost = 0, dup = 0, stale = 0, got_min = UINT64_MAX, got_max = 0;
    int live = 0;
    for (int i = 0; i < opt.n; i++) {
        struct conn *c = &conns[i];
        if (c->next_seq < final) c->lost += (uint64_t)(final - c->next_seq);
        lost += c->lost;
        dup += c->dup;
        stale += c->stale;
        if (c->got < got_min) got_min = c->got;
        if (c->got > got_max) got_max = c->got;
        live += c->state == ST_READY;
    }
    double active = P.first_send && P.last_recv > P.first_send
                        ? (double)(P.last_recv - P.first_send) / 1e9
                        : 0;
    double wall = (double)(t_end - P.t_start) / 1e9;
    printf("{\"event\":\"result\",\"mode\":\"%s\",\"n\":%d,\"window\":%d,\"rate\":%.3f,"
           "\"published\":%lld,\"completed\":%lld,\"deliveries\":%llu,\"expected\":%llu,"
           "\"lost\":%llu,\"dup\":%llu,\"stale\":%llu,\"bad\":%llu,\"got_min\":%llu,"
           "\"got_max\":%llu,\"live\":%d,\"closed\":%llu,\"timed_out\":%s,"
           "\"active_s\":%.6f,\"wall_s\":%.6f,\"delivered_per_s\":%.1f,"
           "\"min_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,"
           "\"samples\":%llu,\"acks\":%llu,\"errors\":%llu,\"pings\":%llu,"
           "\"lg_cpu_s\":%.6f,\"lg_cpu\":%.4f}\n",
           mode_name(P.mode), opt.n, P.window, P.rate, (long long)P.published,
           (long long)P.completed, (unsigned long long)P.deliveries,
           (unsigned long long)P.published * (unsigned long long)opt.n,
           (unsigned long long)lost, (unsigned long long)dup, (unsigned long long)stale,
           (unsigned long long)(bad_total - P.bad0), (unsigned long long)(opt.n ? got_min : 0),
           (unsigned long long)got_max, live, (unsigned long long)closed_total,
           P.timed_out ? "true" : "false", active, wall,
           active > 0 ? (double)P.deliveries / active : 0.0, hist_pct(0.0), hist_pct(0.5), hist_pct(0.9),
           hist_pct(0.99), hist_pct(0.999), hist_pct(1.0), (unsigned long long)hist_n,
           (unsigned long long)P.acks, (unsigned long long)P.errors,
           (unsigned long long)pings_total, cpu, wall > 0 ? cpu / wall : 0.0);
    fflush(stdout);
    global_seq = final;
    P.mode = M_IDLE;
}
