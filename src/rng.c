/* Seeded random numbers for initialisation, data order and sampling. */
#include "config.h"
#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void lt_rng_seed(struct lt_rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed ^ (stream * 0xd1342543de82ef95ULL + 0x2545f4914f6cdd1dULL);
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

uint64_t lt_rng_next(struct lt_rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double lt_rng_uniform(struct lt_rng *r)
{
	return (double)(lt_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t lt_rng_below(struct lt_rng *r, uint64_t n)
{
	/* Rejection keeps the draw unbiased for any n. */
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t x;
	do
		x = lt_rng_next(r);
	while (x >= limit);
	return x % n;
}

double lt_rng_normal(struct lt_rng *r)
{
	double u1 = 1.0 - lt_rng_uniform(r); /* (0, 1]: log never sees 0 */
	double u2 = lt_rng_uniform(r);
	return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void lt_rng_fill_normal(float *x, size_t n, float std, uint64_t seed, uint64_t stream)
{
	const size_t chunk = 1 << 16;
	long nchunks = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static)
	for (long c = 0; c < nchunks; c++) {
		struct lt_rng r;
		lt_rng_seed(&r, seed, stream * 1000003ULL + (uint64_t)c);
		size_t end = ((size_t)c + 1) * chunk < n ? ((size_t)c + 1) * chunk : n;
		for (size_t i = (size_t)c * chunk; i < end; i++)
			x[i] = (float)(std * lt_rng_normal(&r));
	}
}
