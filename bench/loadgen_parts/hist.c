/*
 * hist.c: the histogram's storage (reset by each phase) and its quantiles.
 */
#include "hist.h"

uint64_t hist[HLIN + HLOG + 1];
uint64_t hist_n;

/* The q-quantile in ms (the upper edge of its bucket); -1 without samples. */
double hist_pct(double q) {
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
