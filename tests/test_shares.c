/* Tests of the batch split of --balance auto (lt_shares_split): shares in
 * proportion to speed, the minimum each rank gets, and an even split; and
 * its later comparisons (lt_shares_rebalance): a new split only when it pays
 * at two comparisons in a row. */
#include "config.h"
#include "dist/shares.h"

#include <math.h>
#include <stdio.h>

#include "tap.h"

/* Whether counts[parts] sum to n, each >= min_each, and no item could move
 * from one part (above its minimum) to another to bring them nearer their
 * ideal shares: (count - ideal) differs by at most one between them. */
static int split_is_fair(size_t n, const double *w, int parts, size_t min_each,
			 const size_t *counts)
{
	double total = 0;
	size_t sum = 0;
	for (int i = 0; i < parts; i++)
		total += w[i];
	for (int i = 0; i < parts; i++) {
		double over_i = (double)counts[i] - (double)n * w[i] / total;
		sum += counts[i];
		if (counts[i] < min_each)
			return 0;
		for (int j = 0; j < parts && counts[i] > min_each; j++)
			if (over_i - ((double)counts[j] - (double)n * w[j] / total) > 1 + 1e-9)
				return 0;
	}
	return sum == n;
}

int main(void)
{
	tap_plan(13);
	size_t c[4];

	/* a GPU rank 12x as fast as a CPU rank: 64 * 52.3 / 675.4 = 4.96 -> 5 */
	double gpu_cpu[2] = { 623.1, 52.3 };
	lt_shares_split(64, gpu_cpu, 2, 1, c);
	tap_ok(c[0] == 59 && c[1] == 5, "64 sequences at 623.1 and 52.3 seq/s: %zu + %zu (59 + 5)",
	       c[0], c[1]);

	double even[3] = { 1, 1, 1 };
	lt_shares_split(10, even, 3, 1, c);
	tap_ok(c[0] == 4 && c[1] == 3 && c[2] == 3, "10 over 3 equal ranks: %zu + %zu + %zu (4 + 3 + 3)",
	       c[0], c[1], c[2]);

	/* a rank far too slow for one sequence still gets its minimum, taken
	 * from the rank furthest above its ideal */
	double slow[3] = { 1000, 1, 500 };
	lt_shares_split(9, slow, 3, 1, c);
	tap_ok(c[0] == 5 && c[1] == 1 && c[2] == 3 && split_is_fair(9, slow, 3, 1, c),
	       "9 at speeds 1000, 1, 500: %zu + %zu + %zu (5 + 1 + 3)", c[0], c[1], c[2]);

	/* fair for many random-ish speeds and sizes */
	int fair = 1;
	for (int t = 0; t < 200 && fair; t++) {
		double w[4];
		for (int i = 0; i < 4; i++)
			w[i] = 1 + (double)((t * 37 + i * 101) % 97);
		size_t n = 8 + (size_t)(t % 61);
		lt_shares_split(n, w, 4, 1, c);
		fair = split_is_fair(n, w, 4, 1, c);
		if (!fair)
			tap_diag("case %d: n %zu -> %zu %zu %zu %zu", t, n, c[0], c[1], c[2], c[3]);
	}
	tap_ok(fair, "200 splits over 4 ranks: each sums to n and no move of one item makes it fairer");

	/* exactly the minimum for everybody */
	double any[4] = { 5, 1, 9, 2 };
	lt_shares_split(8, any, 4, 2, c);
	tap_ok(c[0] == 2 && c[1] == 2 && c[2] == 2 && c[3] == 2,
	       "8 over 4 ranks with a minimum of 2: %zu %zu %zu %zu", c[0], c[1], c[2], c[3]);

	/* later comparisons: a move needs two in a row that call for it */
	double before, after;
	size_t four[2] = { 4, 4 }, proposed[2];
	struct lt_shares_balance bal = { proposed, 0 };
	double same[2] = { 50, 50 };
	int move = lt_shares_rebalance(&bal, 8, same, 2, 1, four, 0.03, c, &before, &after);
	tap_ok(!move && !bal.pending && c[0] == 4 && c[1] == 4 && before == after &&
	       fabs(before - 0.08) < 1e-12,
	       "equal speeds keep an even split: %zu + %zu, %g s before and after", c[0], c[1],
	       before);

	/* one rank twice as fast: 4 + 4 takes 4 / 1 s, 5 + 3 takes 3 s */
	double twice[2] = { 2, 1 };
	move = lt_shares_rebalance(&bal, 8, twice, 2, 1, four, 0.03, c, &before, &after);
	tap_ok(!move && bal.pending && c[0] == 5 && c[1] == 3 && before == 4.0 && after == 3.0,
	       "a rank twice as fast: %zu + %zu (%g s -> %g s) is proposed, not taken", c[0], c[1],
	       before, after);
	move = lt_shares_rebalance(&bal, 8, twice, 2, 1, four, 0.03, c, &before, &after);
	tap_ok(move && !bal.pending && c[0] == 5 && c[1] == 3,
	       "and taken when the next comparison measures the same");

	/* a rank fast for a moment: the next comparison finds the other one
	 * faster, where the proposal would be slower than staying */
	double flipped[2] = { 1, 2 };
	bal.pending = 0;
	move = lt_shares_rebalance(&bal, 8, twice, 2, 1, four, 0.03, c, &before, &after);
	int first = move;
	move = lt_shares_rebalance(&bal, 8, flipped, 2, 1, four, 0.03, c, &before, &after);
	tap_ok(!first && !move && bal.pending && c[0] == 3 && c[1] == 5,
	       "speeds that swap between comparisons move nothing (3 + 5 proposed next)");

	/* 5% apart over 50: 24 + 26 takes 24.76 s against 25 s, under 3% less */
	size_t halves[2] = { 25, 25 };
	double near[2] = { 1.0, 1.05 };
	bal.pending = 0;
	move = lt_shares_rebalance(&bal, 50, near, 2, 1, halves, 0.03, c, &before, &after);
	move |= lt_shares_rebalance(&bal, 50, near, 2, 1, halves, 0.03, c, &before, &after);
	tap_ok(!move && !bal.pending && c[0] == 24 && c[1] == 26 && before == 25.0 &&
	       fabs(after - 26 / 1.05) < 1e-12,
	       "a 1%% shorter step does not pay with a 3%% threshold: %zu + %zu, %g s -> %g s",
	       c[0], c[1], before, after);
	move = lt_shares_rebalance(&bal, 50, near, 2, 1, halves, 0.005, c, &before, &after);
	move |= lt_shares_rebalance(&bal, 50, near, 2, 1, halves, 0.005, c, &before, &after) * 2;
	tap_ok(move == 2, "and pays with a 0.5%% threshold, at the second comparison");

	/* dealing each part's items of a step over its micro-batches */
	int dealt = 1;
	for (int t = 0; t < 300 && dealt; t++) {
		int parts = 1 + t % 5, rounds = 1 + t % 7;
		size_t per_round = (size_t)parts + (size_t)(t % 13), shares[5], got[5] = { 0 };
		double w[5];
		for (int i = 0; i < parts; i++)
			w[i] = 1 + (double)((t * 31 + i * 17) % 23);
		lt_shares_split(per_round * (size_t)rounds, w, parts, (size_t)rounds, shares);
		for (int a = 0; a < rounds && dealt; a++) {
			size_t round = 0;
			for (int i = 0; i < parts; i++) {
				size_t k = lt_shares_rows_in(shares, i, a, rounds);
				dealt &= k >= 1 && k >= shares[i] / (size_t)rounds &&
					 k <= (shares[i] + (size_t)rounds - 1) / (size_t)rounds;
				got[i] += k;
				round += k;
			}
			dealt &= round == per_round;
		}
		for (int i = 0; i < parts; i++)
			dealt &= got[i] == shares[i];
		if (!dealt)
			tap_diag("case %d: %d parts, %d rounds of %zu", t, parts, rounds, per_round);
	}
	tap_ok(dealt, "300 deals of step shares over micro-batches: each micro-batch full, each "
	       "share whole, each part floor or ceil of its share / micro-batches in each");
	/* 7 + 7 + 6 over 2 micro-batches of 10: rank 0's extra in the first,
	 * rank 1's in the second */
	size_t s3[3] = { 7, 7, 6 };
	tap_ok(lt_shares_rows_in(s3, 0, 0, 2) == 4 && lt_shares_rows_in(s3, 1, 0, 2) == 3 &&
	       lt_shares_rows_in(s3, 2, 0, 2) == 3 && lt_shares_rows_in(s3, 0, 1, 2) == 3 &&
	       lt_shares_rows_in(s3, 1, 1, 2) == 4 && lt_shares_rows_in(s3, 2, 1, 2) == 3,
	       "7 + 7 + 6 over 2 micro-batches: 4 3 3, then 3 4 3");
	return tap_done();
}
