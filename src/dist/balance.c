/* --balance auto: when the ranks compare their speeds, and what they do
 * with them. */
#include "config.h"
#include "dist/balance.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/shares.h"

/* How much shorter a step new shares must promise to be taken. */
#define BALANCE_GAIN 0.03

/* This rank's seconds per sequence in the steps since the ranks last
 * compared them, and when they compare next. */
struct lt_balancer {
	lt_dist *dist;
	int rank, ranks;
	size_t items, min_each;
	int every;
	double *per_seq;          /* [cap] */
	int n, cap;
	long next;                /* the step after which the ranks compare next (0: never) */
	long skip;                /* a step not measured: the first, or the first on new shares */
	int compared;             /* comparisons so far */
	int recheck;              /* comparisons due one step apart, after a move */
	int since_move;           /* comparisons since the last move (moved: 0) */
	struct lt_shares_balance split;
};

enum lt_status lt_balancer_new(lt_dist *d, size_t items, size_t min_each, int every, long step,
			       lt_balancer **out)
{
	lt_balancer *b = calloc(1, sizeof *b);
	*out = NULL;
	if (b) {
		b->ranks = lt_dist_size(d);
		b->cap = every > 1 ? every : 1;
		b->per_seq = malloc((size_t)b->cap * sizeof *b->per_seq);
		b->split.proposed = malloc((size_t)b->ranks * sizeof *b->split.proposed);
	}
	if (!b || !b->per_seq || !b->split.proposed) {
		lt_balancer_free(b);
		lt_errmsg_set("cannot allocate the speeds of --balance auto");
		return LT_ERR_NOMEM;
	}
	b->dist = d;
	b->rank = lt_dist_rank(d);
	b->items = items;
	b->min_each = min_each;
	b->every = every;
	b->skip = step + 1;
	b->next = step + 2;
	b->since_move = 3;  /* no move yet: no checks after one to print */
	*out = b;
	return LT_OK;
}

void lt_balancer_free(lt_balancer *b)
{
	if (!b)
		return;
	free(b->per_seq);
	free(b->split.proposed);
	free(b);
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The median of x[n] (n >= 1), sorting x. */
static double median_of(double *x, int n)
{
	qsort(x, (size_t)n, sizeof *x, by_value);
	return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* The line on the shares: each rank's sequences and measured speed, and
 * the forward + backward time per step before and after a move (after <
 * 0: the shares stay). */
static void describe_shares(const lt_balancer *b, const size_t *rows, const double *speed,
			    double before, double after, char *line, size_t cap)
{
	size_t len = (size_t)snprintf(line, cap, "balance: sequences per rank of each step of %zu:",
				      b->items);
	for (int i = 0; i < b->ranks && len < cap; i++)
		len += (size_t)snprintf(line + len, cap - len, "%s rank %d %zu (measured %.1f seq/s)",
					i ? ";" : "", i, rows[i], speed[i]);
	if (len < cap && after >= 0)
		snprintf(line + len, cap - len,
			 "; forward + backward %.0f ms/step before, %.0f ms expected", 1e3 * before,
			 1e3 * after);
	else if (len < cap)
		snprintf(line + len, cap - len, "; forward + backward %.0f ms/step, shares kept",
			 1e3 * before);
}

/* The ranks compare their seconds per sequence, each the median of its
 * steps since the last comparison. Shares in proportion to speed are
 * taken when they promise a step at least BALANCE_GAIN shorter and the
 * shares the previous comparison called for still do at the new speeds
 * (lt_shares_rebalance): a difference must last over two comparisons, so
 * that a rank slow for a moment moves no sequences. */
static enum lt_status compare_speeds(lt_balancer *b, long step, double compute_s, size_t *rows,
				     int *moved, char *line, size_t cap)
{
	int n = b->ranks;
	double seqs = (double)rows[b->rank];
	double mine = fmax(b->n ? median_of(b->per_seq, b->n) : compute_s / seqs, 1e-9);
	/* each rank's sequences per second, and the shares they call for */
	double *speed = malloc((size_t)n * (sizeof(double) + sizeof(size_t)));
	if (!speed) {
		lt_errmsg_set("cannot allocate the rank speeds");
		return LT_ERR_NOMEM;
	}
	size_t *called = (size_t *)(speed + n);
	b->n = 0;
	b->compared++;
	mine = 1.0 / mine;
	enum lt_status st = lt_dist_allgather(b->dist, &mine, speed, sizeof mine,
					      "the speed exchange of --balance auto");
	double before, after;
	*moved = st == LT_OK && lt_shares_rebalance(&b->split, b->items, speed, n, b->min_each, rows,
						    BALANCE_GAIN, called, &before, &after);
	if (*moved) {
		memcpy(rows, called, (size_t)n * sizeof *rows);
		b->skip = step + 1;
		/* speeds measured on the old shares may not hold on the new
		 * (a rank's cost per sequence changes with its share): check
		 * them over the two steps after the first on them, then again
		 * after one more */
		if (b->every > 0) {
			b->next = step + 3;
			b->recheck = 1;
		}
	}
	/* the line comes with each move and the two checks after it, and with
	 * the first decision either way */
	b->since_move = *moved ? 0 : b->since_move + 1;
	if (st == LT_OK && (b->since_move <= 2 || b->compared == 2))
		describe_shares(b, rows, speed, before, *moved ? after : -1, line, cap);
	free(speed);
	return st;
}

/* This rank's seconds per sequence are kept (not those of the run's first
 * step or the first on new shares, which warm caches and allocations),
 * and the ranks compare them after the second and third steps, then every
 * `every` steps, and three and four steps after a move. */
enum lt_status lt_balancer_after(lt_balancer *b, long step, double compute_s, size_t *rows,
				 int *moved, char *line, size_t cap)
{
	double seqs = (double)rows[b->rank];
	*moved = 0;
	if (cap)
		line[0] = '\0';
	if (step != b->skip && b->n < b->cap)
		b->per_seq[b->n++] = compute_s / seqs;
	if (step != b->next)
		return LT_OK;
	int soon = b->compared == 0 || b->recheck > 0;
	if (b->recheck > 0)
		b->recheck--;
	b->next = soon ? step + 1 : b->every > 0 ? step + b->every : 0;
	return compare_speeds(b, step, compute_s, rows, moved, line, cap);
}
