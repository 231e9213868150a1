/*
 * receive.c: what the client does with what it receives, kept in one file so that the
 * compiler inlines the whole path into the epoll loop, as it did when loadgen.c was one
 * file: one recv per readable socket into one shared buffer, the handshake answer
 * checked, frames parsed incrementally (pings answered, a close counted), and each
 * subscriber's markers checked against the sequence it expects (lost, duplicated, stale)
 * with the message's latency in the histogram.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "client.h"
#include "hist.h"
#include "ws.h"

char *rbuf;
size_t rbuf_cap;

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

void poll_once(int timeout_ms) {
    struct epoll_event evs[MAX_EVENTS];
    int k = epoll_wait(ep, evs, MAX_EVENTS, timeout_ms);
    if (k < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < k; i++) {
        uint32_t id = evs[i].data.u32;
        if (id == UINT32_MAX) on_stdin();
        else on_event(&conns[id], evs[i].events);
    }
}
