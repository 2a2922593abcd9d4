/* The arithmetic of the gradient reduction, on plain numbers and arrays:
 * the ranges of the flat buffer that the ranks own, the piece of a bucket
 * that each of a node's ranks sums, and the sum of the node's copies of a
 * bucket into every copy or into the owners' shards. Every rank computes
 * the same ranges and pieces, and every element is summed in the same
 * order (copy 0, 1, ...) whoever sums it.
 *
 * Ownership: the functions fill or add into arrays the caller owns. */
#ifndef LT_REDUCE_H
#define LT_REDUCE_H

#include <stddef.h>

/* Range boundaries and pieces fall on multiples of this many elements. */
#define LT_REDUCE_ALIGN 16

/* off[ranks + 1]: rank r owns [off[r], off[r + 1]) of numel elements,
 * equal ranges of LT_REDUCE_ALIGN-element blocks (some empty when there
 * are fewer blocks than ranks). */
void lt_reduce_ranges(size_t numel, int ranks, size_t *off);
/* The length of the part of [lo, hi) in rank r's range of off, which
 * starts at *from. */
size_t lt_reduce_owned(const size_t *off, int r, size_t lo, size_t hi, size_t *from);
/* Where piece j of `pieces` equal pieces of n elements starts (on
 * LT_REDUCE_ALIGN; j = pieces gives n). */
size_t lt_reduce_piece_at(size_t n, int pieces, int j);

/* The sum over copies[count] of their elements [at, at + n): into out[n]
 * (added to what it holds when add), or, with out NULL, back into every
 * copy; on OpenMP's threads when `threads`, else on the calling thread
 * alone, outside OpenMP (whose first parallel region would bind a thread
 * of ours to one of its places). */
void lt_reduce_sum(float *const *copies, int count, size_t at, size_t n, float *out, int add,
		   int threads);

/* A node's ranks as the sum into owners sees them. */
struct lt_reduce_node {
	float *const *grads;   /* [count] each rank's copy of the gradients, laid out alike */
	float *const *shards;  /* [count] each rank's shard: the sum of its range of off */
	const int *rank;       /* [count] each one's job rank, its range in off */
	const size_t *off;     /* [ranks + 1] the ranges (lt_reduce_ranges) */
	int count;
};
/* The sum of flat elements [a, b) of the bucket that starts at flat
 * element lo, whose copy starts at element at of every rank's grads, over
 * the node's copies into each owner's shard (added to what the shard
 * holds when add). */
void lt_reduce_to_owners(const struct lt_reduce_node *node, size_t lo, size_t at, size_t a,
			 size_t b, int add, int threads);

#endif
