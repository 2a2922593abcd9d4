/* The exact gradient sum of deterministic runs, in 128-bit fixed point. */
#include "config.h"
#include "dist/exact_sum.h"

#include <math.h>
#include <stdlib.h>

/* Fixed-point scale: 2^80; a sequence's gradient element must stay below
 * 2^100 / 2^80 = 2^20 in magnitude. */
#define FIX_ONE 0x1p80
#define FIX_LIMIT 0x1p100
/* Elements per partial sum of the fixed-order sum of squares. */
#define NORM_BLOCK 65536

struct lt_exact_sum {
	__int128 *acc;  /* [n] */
	size_t n;
	int inexact;    /* an element was out of range */
};

enum lt_status lt_exact_sum_new(size_t n, lt_exact_sum **out)
{
	lt_exact_sum *s = calloc(1, sizeof *s);
	*out = NULL;
	if (!s || !(s->acc = calloc(n ? n : 1, sizeof *s->acc))) {
		free(s);
		lt_errmsg_set("cannot allocate %.1f MiB for the exact gradient sum of "
			      "--deterministic", (double)n * 16 / 1048576.0);
		return LT_ERR_NOMEM;
	}
	s->n = n;
	*out = s;
	return LT_OK;
}

void lt_exact_sum_free(lt_exact_sum *s)
{
	if (!s)
		return;
	free(s->acc);
	free(s);
}

size_t lt_exact_sum_bytes(const lt_exact_sum *s) { return s->n * sizeof *s->acc; }

void lt_exact_sum_add(lt_exact_sum *s, const float *g)
{
	__int128 *acc = s->acc;
	long n = (long)s->n;
	int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
	for (long i = 0; i < n; i++) {
		double v = (double)g[i] * FIX_ONE;
		if (fabs(v) < FIX_LIMIT)
			acc[i] = (__int128)((unsigned __int128)acc[i] + (unsigned __int128)(__int128)v);
		else
			bad = 1;
	}
	s->inexact |= bad;
}

double lt_exact_sum_squares(const float *x, size_t n)
{
	size_t nb = (n + NORM_BLOCK - 1) / NORM_BLOCK;
	double *part = malloc((nb ? nb : 1) * sizeof *part), total = 0;
	if (!part)
		return NAN;
#pragma omp parallel for schedule(static)
	for (long b = 0; b < (long)nb; b++) {
		size_t lo = (size_t)b * NORM_BLOCK, hi = lo + NORM_BLOCK < n ? lo + NORM_BLOCK : n;
		double sq = 0;
		for (size_t i = lo; i < hi; i++)
			sq += (double)x[i] * x[i];
		part[b] = sq;
	}
	for (size_t b = 0; b < nb; b++)
		total += part[b];
	free(part);
	return total;
}

int lt_exact_sum_take(lt_exact_sum *s, float *g)
{
	__int128 *acc = s->acc;
	long n = (long)s->n;
	int bad = s->inexact;
#pragma omp parallel for schedule(static)
	for (long i = 0; i < n; i++) {
		g[i] = (float)((double)acc[i] / FIX_ONE);
		acc[i] = 0;
	}
	s->inexact = 0;
	return bad;
}

enum lt_status lt_exact_sum_allreduce(lt_exact_sum *s, lt_dist *d, float *g, double *norm)
{
	double bad = s->inexact;
	enum lt_status st;
	if ((st = lt_dist_allreduce(d, &bad, 1, LT_DIST_F64, LT_DIST_MAX,
				    "the agreement on gradient range")) != LT_OK ||
	    (st = lt_dist_allreduce(d, s->acc, s->n, LT_DIST_I128, LT_DIST_SUM,
				    "the exact gradient all-reduce")) != LT_OK)
		return st;
	lt_exact_sum_take(s, g);
	*norm = bad > 0 ? INFINITY : sqrt(lt_exact_sum_squares(g, s->n));
	return LT_OK;
}
