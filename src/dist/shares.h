/* Batch shares: the split of a global batch over ranks in proportion to
 * their speed (--balance), the deal of each rank's share over the
 * micro-batch rounds, and --balance auto's decision to move to a new split.
 * Nothing here exchanges anything: every rank computes the same numbers.
 *
 * Ownership: the functions fill arrays the caller owns; a struct
 * lt_shares_balance borrows its `proposed` array from the caller. */
#ifndef LT_SHARES_H
#define LT_SHARES_H

#include <stddef.h>

/* Splits n items over `parts` in proportion to weights (all > 0): each part
 * gets the floor of its ideal share, at least min_each (n >= parts *
 * min_each); the rest go one each to the parts furthest below their ideal,
 * and an excess made by the minimum comes from those furthest above it:
 * counts[parts]. */
void lt_shares_split(size_t n, const double *weights, int parts, size_t min_each, size_t *counts);

/* Part i's items in round a of `rounds`, when counts[] (each at least
 * `rounds`, together a multiple of it) are dealt over the rounds: each
 * part's count spread evenly, the remainders handed out in part order, one
 * per round in turn, so every round holds the same number of items and
 * each part holds floor or ceil of count / rounds in every round. */
size_t lt_shares_rows_in(const size_t *counts, int i, int a, int rounds);

/* --balance auto's memory between two comparisons of the ranks' speeds:
 * the split the last one called for, until the next confirms it. */
struct lt_shares_balance {
	size_t *proposed;  /* [parts], the caller's */
	int pending;       /* proposed holds a split that paid */
};

/* One comparison, for parts at speed[i] (> 0) items a second that hold
 * now[i] of n items: counts gets the split in proportion to speed
 * (lt_shares_split, min_each each at least), *before and *after the time of
 * the slowest part on now and on counts. Returns 1 when the parts should
 * move to counts: it promises a time at least `gain` shorter (after < (1 -
 * gain) * before), and so, at these speeds, does the split the previous
 * comparison proposed. Otherwise counts, when it pays, is proposed for
 * the next one. */
int lt_shares_rebalance(struct lt_shares_balance *b, size_t n, const double *speed, int parts,
			size_t min_each, const size_t *now, double gain, size_t *counts,
			double *before, double *after);

#endif
