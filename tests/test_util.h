/*
 * test_util.h: the tiny harness every test program shares.
 *
 * A test prints one line per case ("PASS name" / "FAIL name: why"), draws its
 * random inputs from a seed it prints (set MARLIN_TEST_SEED to replay), and
 * ends with test_finish(), which prints "N passed, N failed" and returns the
 * exit code.
 */
#ifndef MARLIN_TEST_UTIL_H
#define MARLIN_TEST_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int test_passed_count;
static int test_failed_count;
static uint64_t test_rng_state;

/* Records one case; `fmt` describes the case (and why it failed). */
static inline void test_check(int ok, const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    printf(ok ? "PASS " : "FAIL ");
    vprintf(fmt, args);
    printf("\n");
    va_end(args);
    fflush(stdout);
    if (ok) test_passed_count++;
    else test_failed_count++;
}

/* Seeds the generator from MARLIN_TEST_SEED or the clock, and prints the seed. */
static inline uint64_t test_seed(const char* test_name) {
    const char* env = getenv("MARLIN_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    printf("%s: seed %llu (replay with MARLIN_TEST_SEED=%llu)\n", test_name,
           (unsigned long long)seed, (unsigned long long)seed);
    test_rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    return seed;
}

/* splitmix64: small, fast, good enough for test data. */
static inline uint64_t test_rand_u64(void) {
    uint64_t z = (test_rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* Uniform in [0, bound). */
static inline int test_rand_int(int bound) { return (int)(test_rand_u64() % (uint64_t)bound); }
/* Uniform in [-1, 1). */
static inline float test_rand_uniform(void) { return (float)((test_rand_u64() >> 40) * (2.0 / 16777216.0) - 1.0); }
/* Standard normal (Box-Muller). */
static inline float test_rand_normal(void) {
    double u1 = ((test_rand_u64() >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (test_rand_u64() >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Prints the closing line and returns the process exit code. */
static inline int test_finish(void) {
    printf("%d passed, %d failed\n", test_passed_count, test_failed_count);
    return test_failed_count == 0 ? 0 : 1;
}

#endif /* MARLIN_TEST_UTIL_H */
