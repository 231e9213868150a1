/*
 * server.h: ``loadgen serve``, the trivial broadcast server that ``bench/fanout.py --check``
 * tests the client against, and the faults it injects on demand.
 */
#ifndef LOADGEN_SERVER_H
#define LOADGEN_SERVER_H

extern struct server_opt {
    long drop_every, dup_every, delay_us;
} sopt;

int serve_main(void);

#endif
