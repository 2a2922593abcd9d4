/* The exact gradient sum of deterministic runs: each sequence's gradient,
 * converted to a 128-bit fixed-point integer (80 fraction bits), is added
 * into a sum. Integer addition does not depend on order, so the sum over
 * any sequences on any number of ranks, and with it every update, is
 * bitwise the same; the sum is rounded to float once, after the ranks'
 * sums are added.
 *
 * Ownership: lt_exact_sum_new gives a sum that lt_exact_sum_free
 * releases; the functions borrow the arrays they are given. */
#ifndef LT_EXACT_SUM_H
#define LT_EXACT_SUM_H

#include <stddef.h>

#include "dist/dist.h"
#include "status.h"

typedef struct lt_exact_sum lt_exact_sum;

/* A sum of n elements, all zero. */
enum lt_status lt_exact_sum_new(size_t n, lt_exact_sum **out);
void lt_exact_sum_free(lt_exact_sum *s);
/* Host bytes the sum holds. */
size_t lt_exact_sum_bytes(const lt_exact_sum *s);

/* Adds g[n] (one sequence's gradient) into the sum. An element of 2^20 or
 * more in magnitude (or not finite) does not fit the fixed point: it is
 * left out and the sum marked as out of range. */
void lt_exact_sum_add(lt_exact_sum *s, const float *g);

/* Writes the sum, rounded, to g[n] and zeroes it for the next step.
 * Returns 1 when an element was out of range since the last take. */
int lt_exact_sum_take(lt_exact_sum *s, float *g);

/* Adds the sums of every rank of d and writes the total, rounded, to g[n]
 * on every rank; then zeroes the sum for the next step. *norm gets the
 * total's norm, summed in an order that does not depend on the thread
 * count, or INFINITY when some rank's sum was out of range. */
enum lt_status lt_exact_sum_allreduce(lt_exact_sum *s, lt_dist *d, float *g, double *norm);

/* The sum of squares of x[n] in blocks of a fixed size, the blocks summed
 * in order: the same bits for any thread count (NAN when the blocks' room
 * cannot be allocated). */
double lt_exact_sum_squares(const float *x, size_t n);

#endif
