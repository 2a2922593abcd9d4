/* train.micro_batch: the split of a step's sequences into micro-batches,
 * and the largest that fits a rank's memory. */
#include "config.h"

#include "train/micro.h"

#include "model.h"
#include "status.h"
#include "train/layout.h"

/* The sequences of c's optimizer step over all data-parallel ranks. */
static long step_sequences(const struct lt_conf *c)
{
	return (long)c->train.batch * c->train.grad_accum;
}

void lt_micro_batch_set(struct lt_conf *c, int m)
{
	long total = step_sequences(c);
	LT_ASSERT(m > 0 && total % m == 0);
	c->train.batch = m;
	c->train.grad_accum = (int)(total / m);
}

void lt_micro_batch_apply(struct lt_conf *c)
{
	if (c->train.micro_batch > 0 && step_sequences(c) % c->train.micro_batch == 0)
		lt_micro_batch_set(c, c->train.micro_batch);
}

/* Whether micro-batches of m make a layout of `ranks` ranks that the
 * trainer runs: a sequence for each data-parallel rank, the same number
 * each with stages, and a config lt_conf_check accepts (into *out). */
static int allowed(const struct lt_conf *c, int ranks, int m, struct lt_conf *out)
{
	int dp = ranks / (c->dist.tp * c->dist.pp);
	if (dp < 1 || step_sequences(c) % m || m < dp || (c->dist.pp > 1 && m % dp))
		return 0;
	*out = *c;
	lt_micro_batch_set(out, m);
	return lt_conf_check(out) == LT_OK;
}

double lt_micro_batch_need(const struct lt_conf *c, int ranks, int threads)
{
	struct lt_mem_estimate est;
	struct lt_lora lora = { 0 };
	if (lt_conf_lora(c, &lora) != LT_OK)
		lora.rank = 0;
	lt_layout_estimate(c, &lora, ranks, threads, &est);
	return (double)est.total;
}

/* The next divisor of n below m (m > 1), or 0: n's divisors come in
 * pairs (q, n / q) with q <= sqrt(n), so the walk takes sqrt(n) steps. */
static long next_divisor_below(long n, long m)
{
	long best = 0;
	for (long q = 1; q * q <= n; q++) {
		if (n % q)
			continue;
		if (q < m && q > best)
			best = q;
		if (n / q < m && n / q > best)
			best = n / q;
	}
	return best;
}

int lt_micro_batch_fit(const struct lt_conf *c, int ranks, int threads, double have,
		       double margin, int below, double *need)
{
	long total = step_sequences(c);
	struct lt_conf t;
	*need = 0;
	for (long m = below > 0 && below <= total ? below : total + 1;
	     (m = next_divisor_below(total, m)) > 0;) {
		if (!allowed(c, ranks, (int)m, &t))
			continue;
		*need = lt_micro_batch_need(&t, ranks, threads);
		if (*need <= (1 - margin) * have)
			return (int)m;
	}
	return 0;
}
