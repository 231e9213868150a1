/*
 * server.c: a minimal broadcast server (plain protocol; /pub publishes, any other path
 * subscribes) that frames each message once and writes everything it read in one pass
 * with one write per subscriber: the known-good peer that proves the client's counts and
 * latencies. Faults on demand, to prove the checks see them: drop every K-th message for
 * the first subscriber, send every K-th twice to the second, hold every message D us. On
 * SIGTERM it prints what it injected as one JSON line. It uses the client's port option
 * (opt.port) for the port it listens on.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "server.h"
#include "ws.h"

/* -- the trivial broadcast server (for --check) -------------------------------------------- */

struct sconn {
    int fd, open, is_pub, sub_no;
    uint32_t events;
    struct buf in, out;
};

static struct sconn **subs;
static int nsubs, subs_cap;
struct server_opt sopt;
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

int serve_main(void) {
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
