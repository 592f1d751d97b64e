/* Copied from shared/bench/src/ (our company harness).  Shared timing/statistics helpers for the C benchmarks. */
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* nearest-rank percentile of a sorted array, in microseconds */
static double pct_us(const uint64_t *sorted, size_t n, double p) {
        size_t idx;
        if (n == 0)
                return NAN;
        idx = (size_t)ceil(p * (double)n);
        if (idx < 1)
                idx = 1;
        if (idx > n)
                idx = n;
        return (double)sorted[idx - 1] / 1000.0;
}

static double median_d(double *v, size_t n) {
        size_t i, j;
        for (i = 1; i < n; i++) /* insertion sort, n is tiny */
                for (j = i; j > 0 && v[j - 1] > v[j]; j--) {
                        double t = v[j]; v[j] = v[j - 1]; v[j - 1] = t;
                }
        if (n == 0)
                return NAN;
        return (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/*
 * Print one JSON result line.
 *   samples: per-operation times in ns, pooled over all reps (sorted in place)
 *   rep_median_us / rep_rate: one entry per rep
 *   rate_unit: "calls/s" or "msgs/s"; mbps = median rep rate * payload / 1e6
 */
static void emit_result(const char *bench, const char *impl, const char *bus,
                        size_t payload, size_t per_rep, int reps,
                        uint64_t *samples, size_t n_samples,
                        double *rep_median_us, double *rep_rate,
                        const char *rate_unit, const char *extra_json) {
        double med, p99, mean = 0, rate;
        double *tmp = malloc(sizeof(double) * (size_t)reps);
        size_t i;

        qsort(samples, n_samples, sizeof(uint64_t), cmp_u64);
        for (i = 0; i < n_samples; i++)
                mean += (double)samples[i];
        mean = n_samples ? mean / (double)n_samples / 1000.0 : NAN;
        med = pct_us(samples, n_samples, 0.50);
        p99 = pct_us(samples, n_samples, 0.99);
        memcpy(tmp, rep_rate, sizeof(double) * (size_t)reps);
        rate = median_d(tmp, (size_t)reps);

        printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"bus\":\"%s\",\"payload\":%zu,"
               "\"per_rep\":%zu,\"reps\":%d,\"n\":%zu,"
               "\"median_us\":%.3f,\"p99_us\":%.3f,\"mean_us\":%.3f,\"max_us\":%.3f,"
               "\"rate\":%.1f,\"rate_unit\":\"%s\",\"mbps\":%.3f,",
               bench, impl, bus, payload, per_rep, reps, n_samples,
               med, p99, mean, n_samples ? (double)samples[n_samples - 1] / 1000.0 : NAN,
               rate, rate_unit, rate * (double)payload / 1e6);
        printf("\"rep_median_us\":[");
        for (i = 0; i < (size_t)reps; i++)
                printf("%s%.3f", i ? "," : "", rep_median_us[i]);
        printf("],\"rep_rate\":[");
        for (i = 0; i < (size_t)reps; i++)
                printf("%s%.1f", i ? "," : "", rep_rate[i]);
        printf("]%s%s}\n", extra_json ? "," : "", extra_json ? extra_json : "");
        fflush(stdout);
        free(tmp);
}

/* median of one rep's samples (copy, sort) in microseconds */
static double rep_median(const uint64_t *samples, size_t n) {
        uint64_t *c = malloc(sizeof(uint64_t) * n);
        double m;
        memcpy(c, samples, sizeof(uint64_t) * n);
        qsort(c, n, sizeof(uint64_t), cmp_u64);
        m = pct_us(c, n, 0.5);
        free(c);
        return m;
}
