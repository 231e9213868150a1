/*
 * loadgen.c: the WebSocket fan-out load generator of bench/fanout.py (and a trivial
 * broadcast server to check it against).
 *
 * The bench compiles this file and the .c files of loadgen_parts/ at run time (cc -O2) into
 * a temporary directory; no binary is kept. One thread, one epoll set: N subscriber
 * connections and one publisher, all WebSocket clients written here from RFC 6455
 * (handshake with a checked Sec-WebSocket-Accept, masked client frames, unmasked server
 * frames parsed incrementally).
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
 *
 * This file is the command line; the parts, in loadgen_parts/, are split by concept:
 *
 *   util.{h,c}     constants, the clock, CPU time, the PRNG, buffers (shared by every mode)
 *   ws.{h,c}       RFC 6455 by hand: SHA-1, base64, Sec-WebSocket-Accept, frames; selftest
 *   hist.{h,c}     the latency histogram
 *   client.{h,c}   the client's state, set-up, probes, commands on stdin and its loop
 *   conn.c         a client connection's life: connect, handshake, hello, writes, close
 *   receive.c      the receive path: frames parsed, sequences checked, latencies taken
 *   phase.c        publishing and a phase's accounting and JSON result
 *   server.{h,c}   the trivial broadcast server, with its injected faults
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "loadgen_parts/client.h"
#include "loadgen_parts/server.h"
#include "loadgen_parts/ws.h"

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
