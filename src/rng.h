/* Seeded random numbers: a splitmix64-seeded xoshiro256** stream, uniform
 * and normal draws, and independent sub-streams for parallel fills. */
#ifndef LT_RNG_H
#define LT_RNG_H

#include <stddef.h>
#include <stdint.h>

struct lt_rng {
	uint64_t s[4];
};

/* Seeds a stream from (seed, stream): different stream ids give
 * independent sequences, so parallel work stays reproducible. */
void lt_rng_seed(struct lt_rng *r, uint64_t seed, uint64_t stream);
uint64_t lt_rng_next(struct lt_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double lt_rng_uniform(struct lt_rng *r);
/* Uniform integer in [0, n). */
uint64_t lt_rng_below(struct lt_rng *r, uint64_t n);
/* Standard normal (Box-Muller, one of the pair used). */
double lt_rng_normal(struct lt_rng *r);
/* x[n] = normal(0, std) drawn from sub-streams of (seed, stream) in chunks,
 * in parallel; the result does not depend on the thread count. */
void lt_rng_fill_normal(float *x, size_t n, float std, uint64_t seed, uint64_t stream);

#endif
