/*
 * ws.c: the WebSocket protocol of ws.h, from RFC 6455 and FIPS 180-4 (no library: the
 * generator is one cc command), and ``loadgen selftest``, which checks exactly this
 * arithmetic before the bench trusts a handshake or a frame.
 */
#define _GNU_SOURCE
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

void base64(const unsigned char *in, size_t n, char *out) {
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
void ws_accept(const char *key, char out[29]) {
    char joined[128];
    int n = snprintf(joined, sizeof joined, "%s%s", key, WS_GUID);
    unsigned char digest[20];
    sha1((const unsigned char *)joined, (size_t)n, digest);
    base64(digest, 20, out);
}

/* A header's value in an HTTP head (case-insensitive name), copied into out. */
int header_value(const char *head, const char *name, char *out, size_t cap) {
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
void frame_append(struct buf *b, int opcode, const char *payload, size_t n, int masked) {
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
size_t frame_head(const unsigned char *p, size_t avail, uint64_t *len, int *op, int *fin,
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

/* -- self-test of the handshake arithmetic ------------------------------------------------- */

int selftest_main(void) {
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
