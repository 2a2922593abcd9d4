/* Batch shares: splits in proportion to speed, the deal over rounds, and
 * --balance auto's two-comparison rule. */
#include "config.h"
#include "dist/shares.h"

#include <math.h>
#include <string.h>

#include "status.h"

/* The part whose count is furthest below (sign 1) or, among those above
 * min_each, furthest above (sign -1) its ideal share n * weights[i] /
 * total; the lowest index on ties. */
static int furthest_from_ideal(size_t n, const double *weights, double total,
			       const size_t *counts, int parts, size_t min_each, int sign)
{
	int best = -1;
	double best_gap = 0;
	for (int i = 0; i < parts; i++) {
		double gap = sign * ((double)n * weights[i] / total - (double)counts[i]);
		if ((sign > 0 || counts[i] > min_each) && (best < 0 || gap > best_gap)) {
			best_gap = gap;
			best = i;
		}
	}
	return best;
}

void lt_shares_split(size_t n, const double *weights, int parts, size_t min_each, size_t *counts)
{
	double total = 0;
	size_t given = 0;
	LT_ASSERT(n >= (size_t)parts * min_each);
	for (int i = 0; i < parts; i++)
		total += weights[i];
	for (int i = 0; i < parts; i++) {
		counts[i] = (size_t)floor((double)n * weights[i] / total);
		counts[i] = counts[i] < min_each ? min_each : counts[i];
		given += counts[i];
	}
	for (; given < n; given++)
		counts[furthest_from_ideal(n, weights, total, counts, parts, min_each, 1)]++;
	for (; given > n; given--)
		counts[furthest_from_ideal(n, weights, total, counts, parts, min_each, -1)]--;
}

size_t lt_shares_rows_in(const size_t *counts, int i, int a, int rounds)
{
	size_t before = 0, r = (size_t)rounds;
	for (int k = 0; k < i; k++)
		before += counts[k] % r;
	/* part i's remainders are the units [before, before + counts[i] % r) of
	 * the deal, and unit u goes to round u % rounds */
	size_t first = before % r, extra = counts[i] % r;
	return counts[i] / r + (((size_t)a + r - first) % r < extra);
}

/* The time of the slowest of parts doing counts[i] items at speed[i]. */
static double slowest_part(const size_t *counts, const double *speed, int parts)
{
	double most = 0;
	for (int i = 0; i < parts; i++)
		most = fmax(most, (double)counts[i] / speed[i]);
	return most;
}

int lt_shares_rebalance(struct lt_shares_balance *b, size_t n, const double *speed, int parts,
			size_t min_each, const size_t *now, double gain, size_t *counts,
			double *before, double *after)
{
	lt_shares_split(n, speed, parts, min_each, counts);
	*before = slowest_part(now, speed, parts);
	*after = slowest_part(counts, speed, parts);
	int pays = *after < (1.0 - gain) * *before;
	int confirmed = b->pending && slowest_part(b->proposed, speed, parts) < (1.0 - gain) * *before;
	b->pending = pays && !confirmed;
	if (b->pending)
		memcpy(b->proposed, counts, (size_t)parts * sizeof *counts);
	return pays && confirmed;
}
