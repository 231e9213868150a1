/*
 * ws.h: WebSocket (RFC 6455) written here, for the client and the check server alike: the
 * handshake's arithmetic (SHA-1, base64, Sec-WebSocket-Accept), a header lookup, and
 * frames (one appended to a buffer, masked or not; one frame header parsed).
 */
#ifndef LOADGEN_WS_H
#define LOADGEN_WS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

void base64(const unsigned char *in, size_t n, char *out);
void ws_accept(const char *key, char out[29]);
int header_value(const char *head, const char *name, char *out, size_t cap);
void frame_append(struct buf *b, int opcode, const char *payload, size_t n, int masked);
size_t frame_head(const unsigned char *p, size_t avail, uint64_t *len, int *op, int *fin,
                  int *masked, unsigned char key[4]);

/* loadgen selftest: SHA-1, the RFC 6455 accept example, a masked frame parsed back. */
int selftest_main(void);

#endif
