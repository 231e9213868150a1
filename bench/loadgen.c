/*
 * loadgen.c: the WebSocket fan-out load generator of bench/fanout.py (and a trivial
 * broadcast server to check it against).
 *
 * The bench compiles this file at run time (cc -O2) into a temporary directory; no binary
 * is kept. One thread, one epoll set: N subscriber connections and one publisher, all
 * WebSocket clients written here from RFC 6455 (handshake with a checked
 * Sec-WebSocket-Accept, masked client frames, unmasked server frames parsed incrementally).
 *
 *   loadgen client --port P [--proto plain|centrifugo] [--n N] [--sub-path /sub]
 *                  [--pub-path /pub] [--token JWT] [--channel bench] [--pad 240]
 *   loadgen serve  --port P [--drop-every K] [--dup-every K] [--delay-us D]
 *   loadgen selftest
 *
 * client: connects N subscribers (Centrifugo: connect with the token, subscribe to the
 * channel, wait for the subscribe reply; plain: the upgrade alone) and the publisher, then
 * sends probe messages until every subscriber has the latest one (so no subscriber is
 * still being registered when a phase starts). Then it reads commands, one a line, on
 * stdin, while it keeps serving every socket (pings are answered between phases too):
 *
 *   burst  M LIMIT_S            publish M messages as fast as the server takes them
 *   window W SECONDS LIMIT_S    closed loop: at most W messages in flight; a message is
 *                               done when every subscriber has it; publish for SECONDS
 *   rate   R SECONDS LIMIT_S [SPIN]
 *                               R messages per second for SECONDS (SPIN 1: poll without
 *                               sleeping, so a wake-up is not counted as latency)
 *   quit
 *
 * Each message is {"bm":SEQ,"t":NS,"pad":"xx.."} with SEQ counting up across the run and
 * NS the CLOCK_MONOTONIC time it was framed. A subscriber finds the marker "bm": in each
 * frame's payload (a frame may carry several messages, as Centrifugo's newline-separated
 * pushes do), checks SEQ against the next one it expects (a higher one: the ones between
 * were lost; a lower one: a duplicate), and puts receive time - NS (one clock read per
 * recv) in a histogram (1 us buckets below 100 ms, 1 ms above). Every command prints one
 * JSON line on stdout with the counts, the percentiles and this process's CPU time
 * (getrusage) over the phase, so the bench can show the generator is not the limit.
 *
 * serve: a minimal broadcast server (plain protocol; /pub publishes, any other path
 * subscribes) that frames each message once and writes everything it read in one pass
 * with one write per subscriber. Faults on demand, to prove the checks see them: drop
 * every K-th message for the first subscriber, send every K-th twice to the second, hold
 * every message D us. On SIGTERM it prints what it injected as one JSON line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MARK "\"bm\":"
#define MARK_LEN 5
#define PROBE "\"probe\":"
#define PROBE_LEN 8
#define RBUF_MIN (256 * 1024)
#define MAX_EVENTS 1024

/* -- small utilities ---------------------------------------------------------------------- */

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, errno ? strerror(errno) : "error");
    printf("{\"event\":\"error\",\"what\":\"%s\"}\n", what);
    fflush(stdout);
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng32(void) { /* xorshift64*: mask keys and handshake nonces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

struct buf {
    char *p;
    size_t len, cap, off; /* off: bytes already consumed from the front (output buffers) */
};

static void buf_reserve(struct buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t n = b->cap ? b->cap : 4096;
    while (n < b->len + extra) n *= 2;
    char *p = realloc(b->p, n);
    if (!p) die("out of memory");
    b->p = p;
    b->cap = n;
}

static void buf_append(struct buf *b, const void *d, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* -- SHA-1 (FIPS 180-4) and base64, for Sec-WebSocket-Accept ------------------------------ */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    size_t total = ((len + 1 + 8 + 63) / 64) * 64;
    unsigned char *m = calloc(total, 1);
    if (!m) die("out of memory");
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
                   (uint32_t)m[off + 4 * i + 2] << 8 | (uint32_t)m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) {
                f = (b & c) | (~b & d);
                k = 0x5A827999u;
            } else if (i < 40) {
                f = b ^ c ^ d;
                k = 0x6ED9EBA1u;
            } else if (i < 60) {
                f = (b & c) | (b & d) | (c & d);
                k = 0x8F1BBCDCu;
            } else {
                f = b ^ c ^ d;
                k = 0xCA62C1D6u;
            }
            uint32_t t = rol32(a, 5) + f + e + k + w[i];
            e = d;
            d = c;
            c = rol32(b, 30);
            b = a;
            a = t;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
    free(m);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

static void base64(const unsigned char *in, size_t n, char *out) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = 0;
}

/* The Sec-WebSocket-Accept value for a key: base64(SHA-1(key + GUID)), 28 characters. */
static void ws_accept(const char *key, char out[29]) {
    char joined[128];
    int n = snprintf(joined, sizeof joined, "%s%s", key, WS_GUID);
    unsigned char digest[20];
    sha1((const unsigned char *)joined, (size_t)n, digest);
    base64(digest, 20, out);
}

/* A header's value in an HTTP head (case-insensitive name), copied into out. */
static int header_value(const char *head, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            const char *e = strstr(v, "\r\n");
            size_t len = e ? (size_t)(e - v) : strlen(v);
            while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
            if (len >= cap) return 0;
            memcpy(out, v, len);
            out[len] = 0;
            return 1;
        }
    }
    return 0;
}

/* -- frames -------------------------------------------------------------------------------- */

/* Appends one frame (FIN set); masked with a fresh key when a client sends it. */
static void frame_append(struct buf *b, int opcode, const char *payload, size_t n, int masked) {
    unsigned char head[14];
    size_t h = 0;
    head[h++] = (unsigned char)(0x80 | opcode);
    unsigned char mbit = masked ? 0x80 : 0;
    if (n < 126) {
        head[h++] = (unsigned char)(mbit | n);
    } else if (n < 65536) {
        head[h++] = mbit | 126;
        head[h++] = (unsigned char)(n >> 8);
        head[h++] = (unsigned char)n;
    } else {
        head[h++] = mbit | 127;
        for (int i = 7; i >= 0; i--) head[h++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    unsigned char key[4] = {0, 0, 0, 0};
    if (masked) {
        uint32_t k = rng32();
        memcpy(key, &k, 4);
        memcpy(head + h, key, 4);
        h += 4;
    }
    buf_reserve(b, h + n);
    memcpy(b->p + b->len, head, h);
    unsigned char *dst = (unsigned char *)b->p + b->len + h;
    if (masked)
        for (size_t i = 0; i < n; i++) dst[i] = (unsigned char)payload[i] ^ key[i & 3];
    else
        memcpy(dst, payload, n);
    b->len += h + n;
}

/* Parses one frame header at p (avail bytes). Returns the header size, 0 if incomplete;
 * sets *len, *op, *fin and the mask key (masked: 1). */
static size_t frame_head(const unsigned char *p, size_t avail, uint64_t *len, int *op, int *fin,
                         int *masked, unsigned char key[4]) {
    if (avail < 2) return 0;
    *fin = p[0] >> 7;
    *op = p[0] & 0x0f;
    *masked = p[1] >> 7;
    uint64_t n = p[1] & 0x7f;
    size_t h = 2;
    if (n == 126) {
        if (avail < 4) return 0;
        n = (uint64_t)p[2] << 8 | p[3];
        h = 4;
    } else if (n == 127) {
        if (avail < 10) return 0;
        n = 0;
        for (int i = 0; i < 8; i++) n = n << 8 | p[2 + i];
        h = 10;
    }
    if (*masked) {
        if (avail < h + 4) return 0;
        memcpy(key, p + h, 4);
        h += 4;
    }
    *len = n;
    return h;
}

/* -- the client: state --------------------------------------------------------------------- */

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

static struct {
    int port, n, centrifugo, pad;
    const char *sub_path, *pub_path, *token, *channel;
} opt = {0, 100, 0, 240, "/sub", "/pub", "", "bench"};

static struct conn *conns; /* n subscribers, then the publisher */
static struct conn *pub;
static int ep;
static char *rbuf;
static size_t rbuf_cap;
static char padstr[8192];
static uint64_t pub_id = 10; /* Centrifugo command ids of publishes (1, 2: connect, subscribe) */
static int64_t global_seq = 0;
static int probing = 0;
static int64_t probe_id = 0;
static uint64_t setup_ready = 0, closed_total = 0, bad_total = 0, pings_total = 0;
static uint64_t acks_total = 0, errors_total = 0;
static char first_error[512];

#define HLIN 100000 /* 1 us buckets up to 100 ms */
#define HLOG 60000  /* then 1 ms buckets up to 60.1 s */
static uint64_t hist[HLIN + HLOG + 1];
static uint64_t hist_n;

static void hist_add(uint64_t ns) {
    uint64_t us = ns / 1000;
    if (us < HLIN) {
        hist[us]++;
    } else {
        uint64_t ms = (us - HLIN) / 1000;
        hist[HLIN + (ms < HLOG ? ms : HLOG)]++;
    }
    hist_n++;
}

/* The q-quantile in ms (the upper edge of its bucket); -1 without samples. */
static double hist_pct(double q) {
    if (!hist_n) return -1;
    uint64_t rank = (uint64_t)(q * (double)hist_n);
    if (rank >= hist_n) rank = hist_n - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HLIN + HLOG + 1; i++) {
        seen += hist[i];
        if (seen > rank) return i < HLIN ? (i + 1) / 1000.0 : 100.0 + (double)(i - HLIN + 1);
    }
    return -1;
}

enum { M_IDLE, M_BURST, M_WINDOW, M_RATE };

static struct phase {
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

/* -- the client: sockets ------------------------------------------------------------------- */

static void ep_mod(struct conn *c, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)c->idx};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    c->events = events;
}

static void conn_close(struct conn *c, const char *why) {
    if (c->state == ST_CLOSED) return;
    fprintf(stderr, "loadgen: connection %d closed: %s\n", c->idx, why);
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_CLOSED;
    closed_total++;
}

static void flush_out(struct conn *c) {
    while (c->out.off < c->out.len) {
        ssize_t w = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            conn_close(c, strerror(errno));
            return;
        }
        c->out.off += (size_t)w;
    }
    if (c->out.off == c->out.len) {
        c->out.off = c->out.len = 0;
        if (c->state != ST_CONNECTING) ep_mod(c, EPOLLIN);
    } else {
        ep_mod(c, EPOLLIN | EPOLLOUT);
    }
}

static void send_frame(struct conn *c, int opcode, const char *payload, size_t n) {
    frame_append(&c->out, opcode, payload, n, 1);
    flush_out(c);
}

static void send_handshake(struct conn *c) {
    unsigned char nonce[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rng32();
        memcpy(nonce + i, &r, 4);
    }
    char key[32], req[1024];
    base64(nonce, 16, key);
    ws_accept(key, c->accept);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     c->is_pub ? opt.pub_path : opt.sub_path, opt.port, key);
    c->state = ST_HANDSHAKE;
    buf_append(&c->out, req, (size_t)n);
    flush_out(c);
}

static void start_connect(struct conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = fd;
    c->state = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)c->idx};
    c->events = EPOLLOUT;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        die("connect");
}

static void send_hello(struct conn *c) {
    char cmd[8192];
    int n = snprintf(cmd, sizeof cmd, "{\"id\":1,\"connect\":{\"token\":\"%s\"}}", opt.token);
    frame_append(&c->out, 1, cmd, (size_t)n, 1);
    if (!c->is_pub) {
        n = snprintf(cmd, sizeof cmd, "{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}",
                     opt.channel);
        frame_append(&c->out, 1, cmd, (size_t)n, 1);
    }
    c->state = ST_HELLO;
    flush_out(c);
}

static void became_ready(struct conn *c) {
    c->state = ST_READY;
    setup_ready++;
}

static void note_error(const char *p, size_t n) {
    errors_total++;
    P.errors++;
    if (!first_error[0]) {
        size_t k = n < sizeof first_error - 1 ? n : sizeof first_error - 1;
        for (size_t i = 0; i < k; i++) first_error[i] = (p[i] == '"' || p[i] == '\\') ? '\'' : p[i];
        first_error[k] = 0;
        fprintf(stderr, "loadgen: server error: %s\n", first_error);
    }
}

static int64_t parse_int(const char **pp, const char *end) {
    const char *p = *pp;
    int64_t v = 0;
    int any = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        p++;
        any = 1;
    }
    *pp = p;
    return any ? v : -1;
}

static void on_message(struct conn *c, int64_t seq, uint64_t t, uint64_t t_recv) {
    if (P.mode == M_IDLE || seq < P.base) {
        c->stale++;
        return;
    }
    int64_t i = seq - P.base;
    if (i >= P.published) {
        bad_total++;
        return;
    }
    if (seq < c->next_seq) {
        c->dup++;
        return;
    }
    if (seq > c->next_seq) c->lost += (uint64_t)(seq - c->next_seq);
    c->next_seq = seq + 1;
    c->got++;
    P.deliveries++;
    P.last_recv = t_recv;
    hist_add(t_recv > t ? t_recv - t : 0);
    if (++P.cnt[i] == (uint32_t)opt.n) P.completed++;
}

/* A text or binary message: the subscriber's markers, or the publisher's replies. */
static void on_payload(struct conn *c, const char *p, size_t n, uint64_t t_recv) {
    const char *end = p + n;
    if (opt.centrifugo && n == 2 && p[0] == '{' && p[1] == '}') { /* the server's ping */
        pings_total++;
        send_frame(c, 1, "{}", 2);
        return;
    }
    if (c->state == ST_HELLO) {
        const char *want = c->is_pub ? "\"id\":1," : "\"id\":2,";
        if (memmem(p, n, "\"error\"", 7)) {
            note_error(p, n);
            conn_close(c, "the server refused connect/subscribe");
            return;
        }
        if (memmem(p, n, want, 7)) became_ready(c);
    }
    if (c->is_pub) {
        if (opt.centrifugo) {
            for (const char *q = p; (q = memmem(q, (size_t)(end - q), "\"publish\":", 10)); q += 10) {
                acks_total++;
                P.acks++;
            }
            if (memmem(p, n, "\"error\"", 7)) note_error(p, n);
        }
        return;
    }
    if (probing)
        for (const char *q = p; (q = memmem(q, (size_t)(end - q), PROBE, PROBE_LEN));) {
            q += PROBE_LEN;
            int64_t v = parse_int(&q, end);
            if (v > c->last_probe) c->last_probe = v;
        }
    for (const char *q = p; (q = memmem(q, (size_t)(end - q), MARK, MARK_LEN));) {
        q += MARK_LEN;
        int64_t seq = parse_int(&q, end);
        if (seq < 0 || end - q < 5 || memcmp(q, ",\"t\":", 5) != 0) {
            bad_total++;
            continue;
        }
        q += 5;
        int64_t t = parse_int(&q, end);
        if (t < 0) {
            bad_total++;
            continue;
        }
        on_message(c, seq, (uint64_t)t, t_recv);
    }
}

/* Parses the frames in p[0..n); returns the bytes consumed (the rest is an unfinished frame,
 * kept for the next read). */
static size_t parse_frames(struct conn *c, char *p, size_t n, uint64_t t_recv) {
    size_t off = 0;
    while (off < n && c->state != ST_CLOSED) {
        uint64_t len;
        int op, fin, masked;
        unsigned char key[4];
        size_t h = frame_head((unsigned char *)p + off, n - off, &len, &op, &fin, &masked, key);
        if (!h) break;
        if (n - off < h + len) break;
        char *payload = p + off + h;
        if (masked)
            for (uint64_t i = 0; i < len; i++) payload[i] ^= (char)key[i & 3];
        if (op == 1 || op == 2 || op == 0) {
            on_payload(c, payload, (size_t)len, t_recv);
        } else if (op == 8) {
            char why[160];
            int code = len >= 2 ? ((unsigned char)payload[0] << 8 | (unsigned char)payload[1]) : 0;
            snprintf(why, sizeof why, "close frame from the server, code %d %.*s", code,
                     len > 2 ? (int)(len - 2 < 100 ? len - 2 : 100) : 0, payload + 2);
            conn_close(c, why);
        } else if (op == 9) {
            pings_total++;
            send_frame(c, 10, payload, (size_t)len);
        }
        off += h + (size_t)len;
    }
    return off;
}

static void on_readable(struct conn *c) {
    size_t carry = c->in.len;
    if (rbuf_cap < carry + RBUF_MIN) {
        rbuf_cap = carry + RBUF_MIN;
        rbuf = realloc(rbuf, rbuf_cap);
        if (!rbuf) die("out of memory");
    }
    if (carry) memcpy(rbuf, c->in.p, carry);
    ssize_t r = recv(c->fd, rbuf + carry, rbuf_cap - carry, 0);
    if (r == 0) {
        conn_close(c, "the server closed the connection");
        return;
    }
    if (r < 0) {
        if (errno != EAGAIN && errno != EINTR) conn_close(c, strerror(errno));
        return;
    }
    uint64_t t_recv = now_ns();
    size_t n = carry + (size_t)r, off = 0;
    if (c->state == ST_HANDSHAKE) {
        char *end = memmem(rbuf, n, "\r\n\r\n", 4);
        if (!end) {
            if (n > 16384) conn_close(c, "handshake response too long");
            else {
                c->in.len = 0;
                buf_append(&c->in, rbuf, n);
            }
            return;
        }
        size_t hl = (size_t)(end - rbuf) + 4;
        char head[16385], got[64];
        if (hl > 16384) {
            conn_close(c, "handshake response too long");
            return;
        }
        memcpy(head, rbuf, hl);
        head[hl] = 0;
        if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
            char *eol = strstr(head, "\r\n");
            if (eol) *eol = 0;
            fprintf(stderr, "loadgen: upgrade refused: %s\n", head);
            conn_close(c, "upgrade refused");
            return;
        }
        if (!header_value(head, "Sec-WebSocket-Accept", got, sizeof got) ||
            strcmp(got, c->accept) != 0) {
            conn_close(c, "bad Sec-WebSocket-Accept");
            return;
        }
        off = hl;
        if (opt.centrifugo) send_hello(c);
        else became_ready(c);
    }
    off += parse_frames(c, rbuf + off, n - off, t_recv);
    if (c->state == ST_CLOSED) return;
    c->in.len = 0;
    if (off < n) buf_append(&c->in, rbuf + off, n - off);
}

static void on_event(struct conn *c, uint32_t events) {
    if (c->state == ST_CLOSED) return;
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            errno = err;
            conn_close(c, strerror(err));
            return;
        }
        send_handshake(c);
        return;
    }
    if (events & EPOLLOUT) flush_out(c);
    if (c->state != ST_CLOSED && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(c);
}

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

static void send_probe(void) {
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
static int phase_publish(uint64_t now) {
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

static int phase_done(uint64_t now) {
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

static void phase_start(int mode, int64_t target, int window, double rate, double seconds,
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

static void phase_end(void) {
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
static void on_stdin(void) {
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

static void poll_once(int timeout_ms) {
    struct epoll_event evs[MAX_EVENTS];
    int k = epoll_wait(ep, evs, MAX_EVENTS, timeout_ms);
    if (k < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < k; i++) {
        uint32_t id = evs[i].data.u32;
        if (id == UINT32_MAX) on_stdin();
        else on_event(&conns[id], evs[i].events);
    }
}

static int client_main(void) {
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

/* -- the trivial broadcast server (for --check) -------------------------------------------- */

struct sconn {
    int fd, open, is_pub, sub_no;
    uint32_t events;
    struct buf in, out;
};

static struct sconn **subs;
static int nsubs, subs_cap;
static struct {
    long drop_every, dup_every, delay_us;
} sopt;
static uint64_t s_messages, s_dropped, s_duplicated;
static volatile sig_atomic_t s_stop;
struct pending {
    uint64_t due;
    size_t off, len; /* the payload in the pending buffer */
    int bm;          /* carries a "bm": marker (faults apply to those only) */
};
static struct buf s_payloads;
static struct pending *s_pend;
static size_t s_npend, s_pend_cap, s_pend_head;

static void s_on_signal(int sig) {
    (void)sig;
    s_stop = 1;
}

static void s_mod(struct sconn *c, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void s_close(struct sconn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->open = 0;
    if (!c->is_pub)
        for (int i = 0; i < nsubs; i++)
            if (subs[i] == c) subs[i] = NULL;
    c->fd = -1;
}

static void s_flush(struct sconn *c) {
    while (c->out.off < c->out.len) {
        ssize_t w = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            s_close(c);
            return;
        }
        c->out.off += (size_t)w;
    }
    if (c->out.off == c->out.len) {
        c->out.off = c->out.len = 0;
        s_mod(c, EPOLLIN);
    } else {
        s_mod(c, EPOLLIN | EPOLLOUT);
    }
}

/* Sends bytes to a subscriber: straight to the socket when nothing is queued. */
static void s_send(struct sconn *c, const char *p, size_t n) {
    if (c->fd < 0) return;
    if (c->out.off == c->out.len) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            s_close(c);
            return;
        }
        if (w < 0) w = 0;
        p += w;
        n -= (size_t)w;
        if (!n) return;
    }
    buf_append(&c->out, p, n);
    s_mod(c, EPOLLIN | EPOLLOUT);
}

/* Broadcasts every pending message that is due: framed once, one write per subscriber. */
static struct buf s_blob, s_blob0, s_blob1;

static void s_broadcast(uint64_t now) {
    s_blob.len = s_blob0.len = s_blob1.len = 0;
    int faulty = 0;
    while (s_pend_head < s_npend && s_pend[s_pend_head].due <= now) {
        struct pending *m = &s_pend[s_pend_head++];
        const char *p = s_payloads.p + m->off;
        size_t blob_at = s_blob.len;
        frame_append(&s_blob, 1, p, m->len, 0);
        size_t flen = s_blob.len - blob_at;
        int drop = 0, dup = 0;
        if (m->bm) {
            s_messages++;
            drop = sopt.drop_every && s_messages % (uint64_t)sopt.drop_every == 0;
            dup = sopt.dup_every && s_messages % (uint64_t)sopt.dup_every == 0;
        }
        if (sopt.drop_every || sopt.dup_every) {
            faulty = 1;
            if (!drop) buf_append(&s_blob0, s_blob.p + blob_at, flen);
            else if (nsubs > 0 && subs[0]) s_dropped++;
            buf_append(&s_blob1, s_blob.p + blob_at, flen);
            if (dup) {
                buf_append(&s_blob1, s_blob.p + blob_at, flen);
                if (nsubs > 1 && subs[1]) s_duplicated++;
            }
        }
    }
    if (s_pend_head == s_npend) {
        s_pend_head = s_npend = 0;
        s_payloads.len = 0;
    }
    if (!s_blob.len) return;
    for (int i = 0; i < nsubs; i++) {
        if (!subs[i]) continue;
        if (faulty && i == 0) s_send(subs[i], s_blob0.p, s_blob0.len);
        else if (faulty && i == 1) s_send(subs[i], s_blob1.p, s_blob1.len);
        else s_send(subs[i], s_blob.p, s_blob.len);
    }
}

static void s_queue(const char *p, size_t n, uint64_t now) {
    if (s_npend == s_pend_cap) {
        s_pend_cap = s_pend_cap ? s_pend_cap * 2 : 1024;
        s_pend = realloc(s_pend, s_pend_cap * sizeof *s_pend);
        if (!s_pend) die("out of memory");
    }
    struct pending *m = &s_pend[s_npend++];
    m->due = now + (uint64_t)sopt.delay_us * 1000;
    m->off = s_payloads.len;
    m->len = n;
    m->bm = memmem(p, n, MARK, MARK_LEN) != NULL;
    buf_append(&s_payloads, p, n);
}

static void s_readable(struct sconn *c, uint64_t now) {
    buf_reserve(&c->in, RBUF_MIN);
    ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        s_close(c);
        return;
    }
    if (r < 0) return;
    c->in.len += (size_t)r;
    size_t off = 0;
    if (!c->open) {
        char *end = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
        if (!end) {
            if (c->in.len > 16384) s_close(c);
            return;
        }
        size_t hl = (size_t)(end - c->in.p) + 4;
        char head[16385], key[64], acc[29], resp[256];
        if (hl > 16384) {
            s_close(c);
            return;
        }
        memcpy(head, c->in.p, hl);
        head[hl] = 0;
        if (strncmp(head, "GET ", 4) || !header_value(head, "Sec-WebSocket-Key", key, sizeof key)) {
            const char *bad = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
            send(c->fd, bad, strlen(bad), MSG_NOSIGNAL);
            s_close(c);
            return;
        }
        ws_accept(key, acc);
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                         acc);
        c->open = 1;
        c->is_pub = strncmp(head + 4, "/pub", 4) == 0;
        if (!c->is_pub) {
            if (nsubs == subs_cap) {
                subs_cap = subs_cap ? subs_cap * 2 : 1024;
                subs = realloc(subs, (size_t)subs_cap * sizeof *subs);
                if (!subs) die("out of memory");
            }
            c->sub_no = nsubs;
            subs[nsubs++] = c;
        }
        s_send(c, resp, (size_t)n);
        off = hl;
    }
    while (c->fd >= 0 && off < c->in.len) {
        uint64_t len;
        int op, fin, masked;
        unsigned char key[4];
        size_t h = frame_head((unsigned char *)c->in.p + off, c->in.len - off, &len, &op, &fin,
                              &masked, key);
        if (!h || c->in.len - off < h + len) break;
        char *payload = c->in.p + off + h;
        if (masked)
            for (uint64_t i = 0; i < len; i++) payload[i] ^= (char)key[i & 3];
        if ((op == 1 || op == 2) && c->is_pub) s_queue(payload, (size_t)len, now);
        else if (op == 8) {
            s_close(c);
            return;
        } else if (op == 9) {
            struct buf pong = {0};
            frame_append(&pong, 10, payload, (size_t)len, 0);
            s_send(c, pong.p, pong.len);
            free(pong.p);
        }
        off += h + (size_t)len;
    }
    if (c->fd < 0) return;
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
}

static int serve_main(void) {
    raise_nofile();
    signal(SIGTERM, s_on_signal);
    signal(SIGINT, s_on_signal);
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (ls < 0) die("socket");
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(ls, 4096) < 0) die("listen");
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("ready\n");
    fflush(stdout);
    struct epoll_event evs[MAX_EVENTS];
    while (!s_stop) {
        int timeout = s_npend > s_pend_head ? 0 : 1000; /* held messages: poll (exact delay) */
        int k = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        uint64_t now = now_ns();
        for (int i = 0; i < k; i++) {
            struct sconn *c = evs[i].data.ptr;
            if (!c) {
                for (int j = 0; j < 256; j++) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct sconn *nc = calloc(1, sizeof *nc);
                    if (!nc) die("out of memory");
                    nc->fd = fd;
                    nc->events = EPOLLIN;
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            if (c->fd < 0) continue;
            if (evs[i].events & EPOLLOUT) s_flush(c);
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) s_readable(c, now);
        }
        s_broadcast(now);
    }
    printf("{\"event\":\"server\",\"messages\":%llu,\"dropped\":%llu,\"duplicated\":%llu}\n",
           (unsigned long long)s_messages, (unsigned long long)s_dropped,
           (unsigned long long)s_duplicated);
    fflush(stdout);
    return 0;
}

/* -- self-test of the handshake arithmetic ------------------------------------------------- */

static int selftest_main(void) {
    unsigned char d[20];
    char hex[41], acc[29];
    sha1((const unsigned char *)"abc", 3, d);
    for (int i = 0; i < 20; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    int ok = strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0;
    sha1((const unsigned char *)"", 0, d);
    for (int i = 0; i < 20; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    ok &= strcmp(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709") == 0;
    ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc); /* RFC 6455, 1.3 */
    ok &= strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0;
    /* A masked frame parses back to its payload. */
    struct buf b = {0};
    char big[70000];
    memset(big, 'y', sizeof big);
    frame_append(&b, 1, big, sizeof big, 1);
    uint64_t len;
    int op, fin, masked;
    unsigned char key[4];
    size_t h = frame_head((unsigned char *)b.p, b.len, &len, &op, &fin, &masked, key);
    ok &= h == 14 && len == sizeof big && op == 1 && fin && masked;
    for (size_t i = 0; ok && i < len; i++) ok &= (b.p[h + i] ^ (char)key[i & 3]) == 'y';
    free(b.p);
    printf("{\"event\":\"selftest\",\"ok\":%s}\n", ok ? "true" : "false");
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the bench */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fprintf(stderr, "usage: loadgen client|serve|selftest [options]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--n")) opt.n = atoi(v);
        else if (!strcmp(k, "--proto")) opt.centrifugo = !strcmp(v, "centrifugo");
        else if (!strcmp(k, "--sub-path")) opt.sub_path = v;
        else if (!strcmp(k, "--pub-path")) opt.pub_path = v;
        else if (!strcmp(k, "--token")) opt.token = v;
        else if (!strcmp(k, "--channel")) opt.channel = v;
        else if (!strcmp(k, "--pad")) opt.pad = atoi(v);
        else if (!strcmp(k, "--drop-every")) sopt.drop_every = atol(v);
        else if (!strcmp(k, "--dup-every")) sopt.dup_every = atol(v);
        else if (!strcmp(k, "--delay-us")) sopt.delay_us = atol(v);
        else {
            fprintf(stderr, "loadgen: unknown option %s\n", k);
            return 2;
        }
    }
    if (!strcmp(argv[1], "client")) return client_main();
    if (!strcmp(argv[1], "serve")) return serve_main();
    if (!strcmp(argv[1], "selftest")) return selftest_main();
    fprintf(stderr, "loadgen: unknown command %s\n", argv[1]);
    return 2;
}
