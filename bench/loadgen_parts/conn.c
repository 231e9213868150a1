/*
 * conn.c: one client connection's life, apart from what it receives (receive.c): the
 * non-blocking connect, the upgrade request (its expected Sec-WebSocket-Accept kept to
 * check the answer), Centrifugo's connect and subscribe commands, buffered writes of masked
 * frames under EPOLLOUT, and the close that counts it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "ws.h"

/* -- the client: sockets ------------------------------------------------------------------- */

static void ep_mod(struct conn *c, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)c->idx};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    c->events = events;
}

void conn_close(struct conn *c, const char *why) {
    if (c->state == ST_CLOSED) return;
    fprintf(stderr, "loadgen: connection %d closed: %s\n", c->idx, why);
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_CLOSED;
    closed_total++;
}

void flush_out(struct conn *c) {
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

void send_frame(struct conn *c, int opcode, const char *payload, size_t n) {
    frame_append(&c->out, opcode, payload, n, 1);
    flush_out(c);
}

void send_handshake(struct conn *c) {
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

void start_connect(struct conn *c) {
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

void send_hello(struct conn *c) {
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

void became_ready(struct conn *c) {
    c->state = ST_READY;
    setup_ready++;
}

void note_error(const char *p, size_t n) {
    errors_total++;
    P.errors++;
    if (!first_error[0]) {
        size_t k = n < sizeof first_error - 1 ? n : sizeof first_error - 1;
        for (size_t i = 0; i < k; i++) first_error[i] = (p[i] == '"' || p[i] == '\\') ? '\'' : p[i];
        first_error[k] = 0;
        fprintf(stderr, "loadgen: server error: %s\n", first_error);
    }
}
