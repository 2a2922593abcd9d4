/* The CPU bodies of the cross-entropy over a slice of the vocabulary
 * (backend.h's xent_part and xent_part_grad): a row's max, sum of
 * exponentials and target logit over the slice's real columns, and the
 * gradient from the whole vocabulary's logsumexp. */
#include "config.h"
#include "cpu_impl.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>

/* Below this many logits the ops stay on the calling thread. */
#define VXENT_PAR_MIN 16384

/* part[3] of the row x[valid]: its max m, the sum of exp(x - m) (float
 * sums of LT_CPU_XENT_BLOCK exponentials added in double, as xent's row),
 * and the target's logit x[t] (0 unless 0 <= t < valid). */
static LT_CPU_HOT void part_row(float *restrict part, const float *restrict x, int valid, int t)
{
	if (valid == 0) {
		part[0] = -INFINITY;
		part[1] = 0.0f;
		part[2] = 0.0f;
		return;
	}
	float mx = lt_cpu_max(x, valid);
	double total = 0.0;
	for (int j0 = 0; j0 < valid; j0 += LT_CPU_XENT_BLOCK) {
		int j1 = valid - j0 < LT_CPU_XENT_BLOCK ? valid : j0 + LT_CPU_XENT_BLOCK;
		float s = 0.0f;
#pragma omp simd reduction(+ : s)
		for (int j = j0; j < j1; j++)
			s += lt_cpu_expf(x[j] - mx);
		total += s;
	}
	part[0] = mx;
	part[1] = (float)total;
	part[2] = t >= 0 && t < valid ? x[t] : 0.0f;
}

/* part[N,3] from the slice logits[N,V] (real columns c < valid) and
 * targets[N] in the whole vocabulary, the slice starting at v0. Staging
 * (bf16 logits): a row per thread. */
void lt_cpu_xent_part(lt_backend *be, lt_ref part, lt_ref logits, lt_ref targets, int N, int V,
		      int valid, int v0)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && V > 0 && valid >= 0 && valid <= V && v0 >= 0);
	size_t VV = (size_t)V;
	float *p = lt_cpu_at(part, 3 * (size_t)N), *stage = NULL;
	struct lt_cpu_vec z = lt_cpu_vec(logits, (size_t)N * VV);
	const int32_t *tgt = lt_cpu_ids(targets, (size_t)N);
	if (c->failed || N == 0)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (z.bf16 && !(stage = lt_cpu_stage(c, VV)))
		return;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (parallel: (size_t)N * V >= VXENT_PAR_MIN)
	for (int n = 0; n < N; n++) {
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), VV);
		/* Only the real columns are read (and staged). */
		const float *row = lt_cpu_load(z, (size_t)n * VV, (size_t)valid, tmp);
		int t = tgt[n] < 0 ? -1 : tgt[n] - v0;
		part_row(p + 3 * (size_t)n, row, valid, t);
	}
	lt_cpu_prof_stop(c, "xent_part", t0);
}

/* x[V] = grad_scale (exp(x - lse) - onehot(t)) in the columns < valid, 0
 * beyond them; a zero row when ignored. */
static LT_CPU_HOT void grad_row(float *restrict x, int V, int valid, int t, float lse,
				float grad_scale, int ignored)
{
	int real = ignored ? 0 : valid;
#pragma omp simd
	for (int j = 0; j < real; j++)
		x[j] = grad_scale * lt_cpu_expf(x[j] - lse);
	for (int j = real; j < V; j++)
		x[j] = 0.0f;
	if (!ignored && t >= 0 && t < valid)
		x[t] -= grad_scale;
}

/* logits[N,V] = the gradient of the slice, in place, from lse[N] and
 * targets[N]. Staging (bf16 logits): a row per thread, rounded back once. */
void lt_cpu_xent_part_grad(lt_backend *be, lt_ref logits, lt_ref lse, lt_ref targets, int N,
			   int V, int valid, int v0, float grad_scale)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && V > 0 && valid >= 0 && valid <= V && v0 >= 0);
	size_t VV = (size_t)V;
	const float *l = lt_cpu_at(lse, (size_t)N);
	float *stage = NULL;
	struct lt_cpu_vec z = lt_cpu_vec(logits, (size_t)N * VV);
	const int32_t *tgt = lt_cpu_ids(targets, (size_t)N);
	if (c->failed || N == 0)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (z.bf16 && !(stage = lt_cpu_stage(c, VV)))
		return;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (parallel: (size_t)N * V >= VXENT_PAR_MIN)
	for (int n = 0; n < N; n++) {
		size_t at = (size_t)n * VV;
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), VV);
		int ignored = tgt[n] < 0;
		/* An ignored row is all written, so nothing of it is read. */
		float *row = ignored ? lt_cpu_dest(z, at, tmp)
				     : lt_cpu_dest_of(z, at, (size_t)valid, tmp);
		grad_row(row, V, valid, ignored ? -1 : tgt[n] - v0, l[n], grad_scale, ignored);
		lt_cpu_store(z, at, VV, row);
	}
	lt_cpu_prof_stop(c, "xent_part_grad", t0);
}
