/*
 * hist.h: the latency histogram of a phase (publish-to-receive times): 1 us buckets below
 * 100 ms, 1 ms buckets above. hist_add runs for every delivery, so it is inline here (as
 * the compiler inlined it when loadgen.c was one file).
 */
#ifndef LOADGEN_HIST_H
#define LOADGEN_HIST_H

#include <stddef.h>
#include <stdint.h>

#define HLIN 100000 /* 1 us buckets up to 100 ms */
#define HLOG 60000  /* then 1 ms buckets up to 60.1 s */
extern uint64_t hist[HLIN + HLOG + 1];
extern uint64_t hist_n;

static inline void hist_add(uint64_t ns) {
    uint64_t us = ns / 1000;
    if (us < HLIN) {
        hist[us]++;
    } else {
        uint64_t ms = (us - HLIN) / 1000;
        hist[HLIN + (ms < HLOG ? ms : HLOG)]++;
    }
    hist_n++;
}

double hist_pct(double q);

#endif
