/* The arithmetic of the gradient reduction: ranges, pieces and sums. */
#include "config.h"
#include "dist/reduce.h"

#include <string.h>

/* Elements a thread sums at once. */
#define SUM_CHUNK 2048

void lt_reduce_ranges(size_t numel, int ranks, size_t *off)
{
	size_t blocks = (numel + LT_REDUCE_ALIGN - 1) / LT_REDUCE_ALIGN;
	for (int r = 0; r <= ranks; r++) {
		size_t b = blocks * (size_t)r / (size_t)ranks * LT_REDUCE_ALIGN;
		off[r] = b < numel ? b : numel;
	}
}

size_t lt_reduce_owned(const size_t *off, int r, size_t lo, size_t hi, size_t *from)
{
	size_t a = lo > off[r] ? lo : off[r], b = hi < off[r + 1] ? hi : off[r + 1];
	*from = a;
	return b > a ? b - a : 0;
}

size_t lt_reduce_piece_at(size_t n, int pieces, int j)
{
	return j == pieces ? n
			   : n / LT_REDUCE_ALIGN * (size_t)j / (size_t)pieces * LT_REDUCE_ALIGN;
}

/* Chunk c (of SUM_CHUNK elements) of lt_reduce_sum's work. */
static void sum_chunk(float *const *copies, int count, size_t at, size_t n, float *out, int add,
		      long c)
{
	size_t lo = (size_t)c * SUM_CHUNK, m = n - lo < SUM_CHUNK ? n - lo : SUM_CHUNK;
	float acc[SUM_CHUNK];
	const float *p0 = copies[0] + at + lo;
#pragma omp simd
	for (size_t i = 0; i < m; i++)
		acc[i] = out && add ? out[lo + i] + p0[i] : p0[i];
	for (int r = 1; r < count; r++) {
		const float *p = copies[r] + at + lo;
#pragma omp simd
		for (size_t i = 0; i < m; i++)
			acc[i] += p[i];
	}
	for (int r = 0; !out && r < count; r++)
		memcpy(copies[r] + at + lo, acc, m * sizeof *acc);
	if (out)
		memcpy(out + lo, acc, m * sizeof *acc);
}

void lt_reduce_sum(float *const *copies, int count, size_t at, size_t n, float *out, int add,
		   int threads)
{
	long chunks = (long)((n + SUM_CHUNK - 1) / SUM_CHUNK);
	if (!threads) {
		for (long c = 0; c < chunks; c++)
			sum_chunk(copies, count, at, n, out, add, c);
		return;
	}
#pragma omp parallel for schedule(static)
	for (long c = 0; c < chunks; c++)
		sum_chunk(copies, count, at, n, out, add, c);
}

void lt_reduce_to_owners(const struct lt_reduce_node *node, size_t lo, size_t at, size_t a,
			 size_t b, int add, int threads)
{
	for (int j = 0; j < node->count; j++) {
		int r = node->rank[j];
		size_t x, len = lt_reduce_owned(node->off, r, a, b, &x);
		if (len)
			lt_reduce_sum(node->grads, node->count, at + (x - lo), len,
				      node->shards[j] + (x - node->off[r]), add, threads);
	}
}
