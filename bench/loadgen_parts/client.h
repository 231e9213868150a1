/*
 * client.h: the state ``loadgen client`` shares between its parts: the connections (N
 * subscribers, then the publisher), the options, the run's counters and the phase being
 * measured. One thread owns all of it; the parts are split by what they do:
 *
 *   conn.c     a connection's life: connect, handshake request, hello, writes, close
 *   receive.c  everything a received byte goes through, up to the per-subscriber checks
 *   phase.c    publishing and a phase's accounting (burst, window, rate) and its result
 *   client.c   set-up, the probes, the commands on stdin and the loop
 */
#ifndef LOADGEN_CLIENT_H
#define LOADGEN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum { ST_CONNECTING, ST_HANDSHAKE, ST_HELLO, ST_READY, ST_CLOSED };

struct conn {
    int fd, idx, state, is_pub;
    uint32_t events;
    struct buf in, out;
    char accept[29];
    /* per phase */
    int64_t next_seq;
    uint64_t got, lost, dup, stale;
    int64_t last_probe;
};

extern struct client_opt {
    int port, n, centrifugo, pad;
    const char *sub_path, *pub_path, *token, *channel;
} opt;

extern struct conn *conns; /* n subscribers, then the publisher */
extern struct conn *pub;
extern char *rbuf; /* one receive buffer for every connection */
extern size_t rbuf_cap;
extern char padstr[8192];
extern int probing;
extern int64_t probe_id;
extern uint64_t setup_ready, closed_total, bad_total, pings_total;
extern uint64_t acks_total, errors_total;
extern char first_error[512];

enum { M_IDLE, M_BURST, M_WINDOW, M_RATE };

extern struct phase {
    int mode, spin, timed_out;
    int64_t base, published, completed, target; /* target: -1 while publishing by time */
    int window;
    double rate;
    uint64_t t_start, pub_until, deadline, first_send, last_recv, drain_until;
    uint32_t *cnt;
    size_t cnt_cap;
    uint64_t deliveries, acks, errors, bad0;
    double cpu0;
} P;

/* conn.c */
void conn_close(struct conn *c, const char *why);
void flush_out(struct conn *c);
void send_frame(struct conn *c, int opcode, const char *payload, size_t n);
void send_handshake(struct conn *c);
void start_connect(struct conn *c);
void send_hello(struct conn *c);
void became_ready(struct conn *c);
void note_error(const char *p, size_t n);

/* receive.c */
void poll_once(int timeout_ms);

/* phase.c */
void send_probe(void);
int phase_publish(uint64_t now);
int phase_done(uint64_t now);
void phase_start(int mode, int64_t target, int window, double rate, double seconds,
                 double limit, int spin);
void phase_end(void);

/* client.c */
void on_stdin(void);
int client_main(void);

#endif
