/* The cross-entropy over slices of the vocabulary (xent_part,
 * xent_part_grad) and the embedding ops' negative tokens, on every
 * backend, in f32 and bf16, against float64 references proven by central
 * differences, and each backend other than the CPU against the CPU. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "backend.h"
#include "op_harness.h"
#include "tap.h"

/* Odd sizes; the whole vocabulary V_ is split into the slices below. */
enum { N_ = 37, V_ = 101, C_ = 45, TABLE_ROWS = 23 };
enum { SLICES = 4 };
/* Slice r holds columns [v0, v0 + valid) of the vocabulary in rows of
 * width V: uneven, the third padded (31 real of 37), the fourth all
 * padding (valid 0), as a last rank's slice past the vocabulary. */
static const struct slice {
	int v0, V, valid;
} slices[SLICES] = { { 0, 29, 29 }, { 29, 41, 41 }, { 70, 37, 31 }, { 101, 5, 0 } };

/* Checks: the references (2); per backend: opening it (1), then in each
 * mode the groups split (8), one slice against xent (4) and embedding
 * (4), and for a backend other than the CPU, one per group against it. */
#define REFERENCE_CHECKS 2
#define GROUPS 3
#define MODE_CHECKS (8 + 4 + 4)

/* One check: sync is ok and every sentinel intact; then frees the arrays. */
static void check_sync_and_guards_then_free(struct oh_arrays *a, const char *name,
					    const char *group)
{
	enum lt_status st = a->be->ops->sync(a->be);
	int intact = oh_guards_intact(a);
	tap_ok(st == LT_OK && intact, "%s %s: sync ok (%s), sentinels around every array intact",
	       name, group, st == LT_OK ? "ok" : lt_errmsg());
	oh_arrays_free(a);
}

/* ------------------------------------------------------------------ */
/* float64 references. */

/* part[N,3] of the whole vocabulary's z[N,V] over columns [v0, v0 + valid)
 * as xent_part defines it. */
static void reference_part(double *part, const double *z, const int32_t *targets, int N, int V,
			   const struct slice *s)
{
	for (int n = 0; n < N; n++) {
		const double *x = z + (size_t)n * V + s->v0;
		double mx = -INFINITY, sum = 0;
		for (int c = 0; c < s->valid; c++)
			mx = fmax(mx, x[c]);
		for (int c = 0; c < s->valid; c++)
			sum += exp(x[c] - mx);
		int t = targets[n] - s->v0;
		part[3 * n] = mx;
		part[3 * n + 1] = sum;
		part[3 * n + 2] = targets[n] >= 0 && t >= 0 && t < s->valid ? x[t] : 0;
	}
}

/* 2 checks */
static void prove_references(void)
{
	struct oh_rng r = { .s = 20240607 };
	const int32_t tokens[9] = { 3, -1, 3, 10, 5, -7, 0, 7, 10 };
	oh_prove_xent(&r, V_, "xent gradient N=9 V=101 (ignored targets)");
	oh_prove_embedding(&r, tokens,
			   "embedding_backward N=9 C=7 rows=11 (repeated and negative tokens)");
}

/* ------------------------------------------------------------------ */
/* The backend's ops against the references. */

/* Targets over the whole vocabulary: random, but in every third row each
 * slice's edges and two ignored ones. */
static const int32_t target_edges[][2] = {
	{ 0, 0 }, { 3, V_ - 1 }, { 6, 28 }, { 9, 29 }, { 12, -1 }, { 15, 69 }, { 18, 70 },
	{ 21, -100 }, { 24, 100 },
};
#define TARGET_EDGES ((int)(sizeof target_edges / sizeof target_edges[0]))

/* The slice s of the whole z[N,V_] as its rank holds it: rows of width
 * s->V, the padding columns NaN or 80 (either would show if read). */
static float *slice_of(const float *z, int N, const struct slice *s)
{
	float *h = oh_floats((size_t)N * s->V);
	for (int n = 0; n < N; n++)
		for (int c = 0; c < s->V; c++)
			h[(size_t)n * s->V + c] = c < s->valid ? z[(size_t)n * V_ + s->v0 + c]
							       : c % 2 ? NAN : 80.0f;
	return h;
}

/* The host's half between the two ops, as a model does it: lse[n] from
 * the parts of `count` slices, loss[n] = lse - the target's logit (0 when
 * ignored). */
static void combine(float *lse, float *loss, float *const *part, int count,
		    const int32_t *targets, int N)
{
	for (int n = 0; n < N; n++) {
		float gmax = -INFINITY;
		for (int s = 0; s < count; s++)
			gmax = part[s][3 * n] > gmax ? part[s][3 * n] : gmax;
		double sum = 0, zt = 0;
		for (int s = 0; s < count; s++) {
			if (part[s][3 * n + 1] > 0)
				sum += part[s][3 * n + 1] * exp((double)part[s][3 * n] - gmax);
			zt += part[s][3 * n + 2];
		}
		lse[n] = (float)(gmax + log(sum));
		loss[n] = targets[n] < 0 ? 0.0f : (float)((double)lse[n] - zt);
	}
}

/* Each slice's parts against the reference (the valid-0 one exactly),
 * the combined losses, the gradient of the real columns concatenated,
 * exact zeros where there must be, sync and sentinels: 8 checks. */
static const char *test_split(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	const int N = N_, V = V_;
	const float grad_scale = 1.0f / N_;
	struct oh_xent x = { .N = N, .V = V, .grad_scale = grad_scale, .fixed = target_edges,
		.n_fixed = TARGET_EDGES };
	lt_backend *be = a->be;
	const char *name = a->name;
	size_t nl = (size_t)N * V;
	oh_xent_new(r, t, &x);
	float *part[SLICES], *got_grad = oh_floats(nl);
	double *want_part = oh_doubles(3 * (size_t)N);
	lt_ref rt = oh_ids(a, x.targets, N), rz[SLICES];

	for (int s = 0; s < SLICES; s++) {
		const struct slice *sl = &slices[s];
		float *h = slice_of(x.z, N, sl);
		rz[s] = oh_values(a, t, h, (size_t)N * sl->V);
		lt_ref rp = oh_array(a, LT_F32, 3 * (size_t)N);
		be->ops->xent_part(be, rp, rz[s], rt, N, sl->V, sl->valid, sl->v0);
		part[s] = oh_read_floats(a, rp, 3 * (size_t)N);
		free(h);
		if (sl->valid) {
			reference_part(want_part, x.zd, x.targets, N, V, sl);
			oh_check_close(OH_TOL, part[s], want_part, 3 * (size_t)N,
				       "%s xent_part slice [%d, %d) in rows of %d (%d padding): "
				       "max, sum of exponentials, target logit", name, sl->v0,
				       sl->v0 + sl->valid, sl->V, sl->V - sl->valid);
			continue;
		}
		int exact = 1;
		for (int n = 0; n < N; n++)
			exact &= part[s][3 * n] == -INFINITY && part[s][3 * n + 1] == 0.0f &&
				 part[s][3 * n + 2] == 0.0f;
		tap_ok(exact, "%s xent_part with valid = 0 (v0=%d, V=%d): (-inf, 0, 0) in every row",
		       name, sl->v0, sl->V);
	}

	float lse[N_], loss[N_];
	combine(lse, loss, part, SLICES, x.targets, N);
	oh_check_close(OH_TOL, loss, x.want_loss, (size_t)N,
		       "%s losses combined from %d slices' parts", name, SLICES);

	lt_ref rl = oh_values(a, LT_F32, lse, (size_t)N);
	int zeros = 1;
	for (int s = 0; s < SLICES; s++) {
		const struct slice *sl = &slices[s];
		be->ops->xent_part_grad(be, rz[s], rl, rt, N, sl->V, sl->valid, sl->v0, grad_scale);
		float *g = oh_read_floats(a, rz[s], (size_t)N * sl->V);
		for (int n = 0; n < N; n++)
			for (int c = 0; c < sl->V; c++) {
				float v = g[(size_t)n * sl->V + c];
				if (c < sl->valid)
					got_grad[(size_t)n * V + sl->v0 + c] = v;
				if (c >= sl->valid || x.targets[n] < 0)
					zeros &= v == 0.0f;
			}
		free(g);
	}
	oh_check_close(oh_tol(t, 1), got_grad, x.want_grad, nl,
		       "%s xent_part_grad of %d slices, real columns concatenated, grad_scale=1/%d",
		       name, SLICES, N);
	tap_ok(zeros, "%s xent_part_grad: padding columns, the valid-0 slice and ignored rows "
	       "exactly 0", name);
	check_sync_and_guards_then_free(a, name, "xent_part over slices");
	for (int s = 0; s < SLICES; s++)
		free(part[s]);
	free(got_grad); free(want_part);
	oh_xent_free(&x);
	return "xent_part and xent_part_grad over 4 slices";
}

/* One slice of the whole vocabulary (v0 0, valid V) against xent: losses,
 * gradient, max and target logit exactly the row's, sync: 4 checks. */
static const char *test_one_slice(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	const int N = N_, V = V_;
	const float grad_scale = 0.7f / N_;
	struct oh_xent x = { .N = N, .V = V, .grad_scale = grad_scale, .fixed = target_edges,
		.n_fixed = TARGET_EDGES };
	lt_backend *be = a->be;
	const char *name = a->name;
	size_t nl = (size_t)N * V;
	oh_xent_new(r, t, &x);
	lt_ref rt = oh_ids(a, x.targets, N), rz = oh_values(a, t, x.z, nl);
	lt_ref rx = oh_values(a, t, x.z, nl);
	lt_ref rp = oh_array(a, LT_F32, 3 * (size_t)N), rxl = oh_array(a, LT_F32, (size_t)N);
	be->ops->xent_part(be, rp, rz, rt, N, V, V, 0);
	be->ops->xent(be, rxl, rx, rt, N, V, grad_scale);
	float *part = oh_read_floats(a, rp, 3 * (size_t)N);
	float *xl = oh_read_floats(a, rxl, (size_t)N);
	float *xg = oh_read_floats(a, rx, nl), lse[N_], loss[N_];
	combine(lse, loss, &part, 1, x.targets, N);
	lt_ref rl = oh_values(a, LT_F32, lse, (size_t)N);
	be->ops->xent_part_grad(be, rz, rl, rt, N, V, V, 0, grad_scale);
	float *g = oh_read_floats(a, rz, nl);

	double *xld = oh_widened(xl, (size_t)N), *xgd = oh_widened(xg, nl);
	oh_check_close(OH_TOL, loss, xld, (size_t)N, "%s one slice: combined losses against xent's",
		       name);
	oh_check_close(oh_tol(t, 1), g, xgd, nl,
		       "%s one slice: xent_part_grad against xent's gradient", name);
	int exact = 1;
	for (int n = 0; n < N; n++) {
		float mx = -INFINITY;
		for (int v = 0; v < V; v++)
			mx = x.z[(size_t)n * V + v] > mx ? x.z[(size_t)n * V + v] : mx;
		exact &= part[3 * n] == mx;
		int tn = x.targets[n];
		exact &= part[3 * n + 2] == (tn < 0 ? 0.0f : x.z[(size_t)n * V + tn]);
	}
	tap_ok(exact, "%s one slice: part's max and target logit are the row's, bitwise", name);
	check_sync_and_guards_then_free(a, name, "xent_part against xent");
	oh_xent_free(&x);
	free(part); free(xl); free(xg); free(g); free(xld); free(xgd);
	return "one slice against xent";
}

/* The embedding's tokens: negative ones, repeats near and far, the first
 * and last rows. */
static const int32_t token_fixes[][2] = {
	{ 0, -1 }, { 5, -2 }, { 6, -2 }, { 17, INT32_MIN }, { N_ - 1, -1000000 },
	{ 3, 7 }, { 11, 7 }, { 29, 7 }, { 12, 0 }, { 13, TABLE_ROWS - 1 },
};
#define TOKEN_FIXES ((int)(sizeof token_fixes / sizeof token_fixes[0]))

/* embedding_forward and _backward with negative tokens: forward against
 * the reference, its rows bitwise (the table's, or zeros), backward into a
 * non-zero table, sync: 4 checks. */
static const char *test_embedding(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	struct oh_embedding e = { .N = N_, .C = C_, .rows = TABLE_ROWS, .fixed = token_fixes,
		.n_fixed = TOKEN_FIXES };
	const int N = N_, C = C_, R = TABLE_ROWS;
	const char *name = a->name;
	oh_embedding_run(a, r, t, &e);
	oh_check_close(OH_TOL, e.out, e.want_out, (size_t)N * C,
		       "%s embedding_forward with 5 negative tokens N=%d C=%d", name, N, C);
	int exact = 1;
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++)
			exact &= e.out[(size_t)n * C + c] ==
				 (e.tokens[n] < 0 ? 0.0f : e.table[(size_t)e.tokens[n] * C + c]);
	tap_ok(exact, "%s embedding_forward: zero rows for negative tokens, the table's rows "
	       "bitwise for the others", name);
	oh_check_close(OH_TOL, e.dtable, e.want_dtable, (size_t)R * C, "%s embedding_backward += "
		       "skipping 5 negative tokens (repeated tokens, non-zero start) N=%d C=%d "
		       "rows=%d", name, N, C, R);
	check_sync_and_guards_then_free(a, name, "embedding with negative tokens");
	oh_embedding_free(&e);
	return "embedding with negative tokens";
}

typedef const char *group_fn(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t);
static group_fn *const groups[GROUPS] = { test_split, test_one_slice, test_embedding };

static const char *run_group(struct oh_arrays *a, struct oh_rng *r, int g, enum lt_dtype t)
{
	return groups[g](a, r, t);
}

/* The groups in both modes; the references before them. */
static const struct oh_suite vocab_suite = {
	.run = run_group,
	.groups = { GROUPS, GROUPS },
	.checks = { MODE_CHECKS, MODE_CHECKS },
	.seed = 424242,
	/* each backend within its tolerance of the reference */
	.twin_tol = { 2 * OH_TOL, 2 * OH_BF16_TOL(1) },
	.counted = "downloads",
	.twin_equal_left_out = 1,
	.prove = prove_references,
	.reference_checks = REFERENCE_CHECKS,
};

int main(void)
{
	return oh_main(&vocab_suite);
}
