/* Training tests of the engine: the loss of a tiny byte-level model goes
 * down on a small corpus, two runs with one seed are bitwise equal, a
 * finite-difference check of the whole model's gradient, the backward's
 * gradient hook, and the memory
 * estimate against the measured peak RSS; the worst-error measures keep a
 * NaN (a NaN fails the checks). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend.h"
#include "grad_helpers.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "tap.h"

static const struct lt_model_config tiny_bytes = {
	.vocab_size = 256, .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
	.ffn_dim = 160, .max_seq = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};

static char *read_corpus(long *len)
{
	const char *srcdir = getenv("top_srcdir");
	char path[4096];
	snprintf(path, sizeof path, "%s/tests/data/tiny_corpus.txt", srcdir ? srcdir : ".");
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	*len = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)*len);
	if (buf && fread(buf, 1, (size_t)*len, f) != (size_t)*len) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

/* Fills B windows of T+1 bytes at seeded random offsets: tokens then targets. */
static void draw_batch(struct lt_rng *r, const char *text, long len, int B, int T, int32_t *tok,
		       int32_t *tgt)
{
	for (int b = 0; b < B; b++) {
		long at = (long)lt_rng_below(r, (uint64_t)(len - T - 1));
		for (int t = 0; t < T; t++) {
			tok[b * T + t] = (unsigned char)text[at + t];
			tgt[b * T + t] = (unsigned char)text[at + t + 1];
		}
	}
}

/* What a training run reports besides its parameters. */
struct run_losses {
	double first;  /* the first step's loss */
	double tail;   /* the mean loss of the last 10 steps */
	double val;    /* the mean loss of 4 batches of the held-out text, after */
};

/* The corpus's last tenth is held out: training draws from the rest. */
static long train_part(long len)
{
	return len - len / 10;
}

/* The mean loss of 4 batches of windows of the held-out text (the same
 * windows for every run). */
static double held_out_loss(lt_model *m, const char *text, long len, int B, int T)
{
	int32_t tok[8 * 64], tgt[8 * 64];
	struct lt_rng r;
	lt_rng_seed(&r, 1, 8);
	double sum = 0;
	for (int b = 0; b < 4; b++) {
		double loss;
		long n;
		draw_batch(&r, text + train_part(len), len - train_part(len), B, T, tok, tgt);
		if (lt_model_forward(m, tok, tgt, 0.0f, &loss, &n) != LT_OK)
			return NAN;
		sum += loss / n;
	}
	return sum / 4;
}

/* Trains `steps` steps from seed in a precision; fills *out and copies
 * the final parameters into params_out if given; NANs on failure. */
static void train(lt_backend *be, const char *text, long len, int steps, uint64_t seed,
		  enum lt_precision precision, float **params_out, struct run_losses *out)
{
	const int B = 8, T = 64;
	lt_model *m = NULL;
	lt_optim *o = NULL;
	int32_t tok[8 * 64], tgt[8 * 64];
	struct lt_optim_config oc = { .lr = 3e-3f, .min_lr = 3e-4f, .warmup_steps = 20,
				      .total_steps = steps, .schedule = LT_SCHED_COSINE, .beta1 = 0.9f,
				      .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f };
	*out = (struct run_losses){ NAN, NAN, NAN };
	if (lt_model_new(be, &tiny_bytes, &m) != LT_OK ||
	    lt_model_set_precision(m, precision) != LT_OK || lt_model_init(m, seed) != LT_OK ||
	    lt_model_plan(m, B, T) != LT_OK || lt_optim_new(m, 0, lt_model_num_params(m), &o) != LT_OK)
		goto out;
	struct lt_rng r;
	lt_rng_seed(&r, seed, 7);
	double sum = 0;
	for (int step = 1; step <= steps; step++) {
		double loss, norm;
		long n;
		draw_batch(&r, text, train_part(len), B, T, tok, tgt);
		lt_model_zero_grads(m);
		if (lt_model_forward(m, tok, tgt, 1.0f / (B * T), &loss, &n) != LT_OK ||
		    lt_model_backward(m) != LT_OK || lt_optim_step(o, &oc, step, &norm) != LT_OK)
			goto out;
		if (step == 1)
			out->first = loss / n;
		if (step > steps - 10)
			sum += loss / n;
	}
	out->tail = sum / 10;
	out->val = held_out_loss(m, text, len, B, T);
	if (params_out) {
		*params_out = malloc(lt_model_num_params(m) * sizeof(float));
		be->ops->read(be, *params_out, lt_model_params(m), lt_model_num_params(m));
	}
out:
	lt_optim_free(o);
	lt_model_free(m);
}

/* The loss falls in fp32 (300 steps). bf16 from the same seed ends within
 * 1.5% of fp32's held-out loss after 100 steps, while the model still
 * learns what generalises: by 300 steps it has memorised the 2 KiB of
 * training text, and the held-out loss of two runs that differ in any
 * rounding (fp32 at another thread count as much as bf16) scatters by
 * 10% and more. */
static void check_loss_goes_down(lt_backend *be, const char *text, long len)
{
	struct run_losses f, h;
	train(be, text, len, 300, 42, LT_PRECISION_FP32, NULL, &f);
	/* ln(256) = 5.55 at the start; 300 steps of 512 bytes learn the
	 * corpus's words to well under 1 nat per byte. */
	tap_ok(isfinite(f.tail) && f.tail < 1.0,
	       "300 steps of a tiny byte model: loss %.3f -> %.3f (last 10 steps), threshold 1.0",
	       f.first, f.tail);
	train(be, text, len, 100, 42, LT_PRECISION_FP32, NULL, &f);
	train(be, text, len, 100, 42, LT_PRECISION_BF16, NULL, &h);
	double rel = fabs(h.val - f.val) / f.val;
	tap_ok(isfinite(f.val) && isfinite(h.val) && rel <= 0.015 && h.val != f.val,
	       "100 steps in bf16: held-out loss %.4f against fp32's %.4f, %.2f%% apart (<= 1.5%%, "
	       "and not 0: bf16 ran); training loss %.3f -> %.3f", h.val, f.val, 100 * rel, h.first,
	       h.tail);
}

static void check_same_seed_same_run(lt_backend *be, const char *text, long len)
{
	float *a = NULL, *b = NULL;
	struct run_losses ignored;
	train(be, text, len, 12, 5, LT_PRECISION_FP32, &a, &ignored);
	train(be, text, len, 12, 5, LT_PRECISION_FP32, &b, &ignored);
	size_t n = 0;
	lt_model *m = NULL;
	if (lt_model_new(be, &tiny_bytes, &m) == LT_OK)
		n = lt_model_num_params(m);
	lt_model_free(m);
	tap_ok(a && b && n && !memcmp(a, b, n * sizeof *a),
	       "two 12-step runs with one seed give bitwise equal parameters");
	free(a);
	free(b);
}

/* The loss as a double for the model's current parameters. */
static double loss_at(lt_model *m, const int32_t *tok, const int32_t *tgt)
{
	double loss;
	long n;
	if (lt_model_forward(m, tok, tgt, 0.0f, &loss, &n) != LT_OK)
		return NAN;
	return loss / n;
}

/* The relative error of a central difference against the analytic
 * projection (relative to 1e-3 at least); NaN when either is NaN. */
static double direction_error(double numeric, double analytic)
{
	return fabs(numeric - analytic) / fmax(fabs(analytic), 1e-3);
}

/* The largest |got - want| of the first n elements, against the largest
 * |want|; NaN when either holds a NaN (tap_worst keeps it). */
static double table_error(const float *got, const float *want, size_t n)
{
	double worst = 0, scale = 0;
	for (size_t i = 0; i < n; i++)
		scale = tap_worst(scale, fabs(want[i]));
	for (size_t i = 0; i < n; i++)
		worst = tap_worst(worst, fabs((double)got[i] - want[i]) / scale);
	return worst;
}

/* The error measures of the checks below cannot pass a NaN: one NaN among
 * the directions, or in either table, makes the worst error NaN. */
static void check_error_measures_keep_nan(void)
{
	double worst = 0;
	const double numeric[3] = { 1.0, NAN, 0.5 }, analytic[3] = { 1.001, 2.0, 0.5 };
	for (int i = 0; i < 3; i++)
		worst = tap_worst(worst, direction_error(numeric[i], analytic[i]));
	float want[4] = { 1, -2, 3, 0.5f }, got[4] = { 1, -2, 3, 0.5f };
	double same = table_error(got, want, 4);
	got[2] = NAN;
	double nan_got = table_error(got, want, 4);
	got[2] = 3;
	want[1] = NAN;
	double nan_want = table_error(got, want, 4);
	tap_ok(isnan(worst) && isnan(direction_error(1.0, NAN)) && same == 0 && isnan(nan_got) &&
		       isnan(nan_want),
	       "the worst errors keep a NaN: directions %g, a NaN analytic %g; tables: alike %g, "
	       "a NaN got %g, a NaN want %g", worst, direction_error(1.0, NAN), same, nan_got,
	       nan_want);
}

/* Central differences of the whole model's loss along random directions
 * agree with the analytic gradient's projection. */
static void check_gradient_by_finite_differences(lt_backend *be, int head_dim)
{
	struct lt_model_config c = tiny_bytes;
	c.head_dim = head_dim;
	c.vocab_size = 37;
	c.dim = 24;
	c.ffn_dim = 40;
	c.max_seq = 9;
	const int B = 2, T = 9, N = B * T;
	lt_model *m = NULL;
	int32_t tok[18], tgt[18];
	struct lt_rng r;
	lt_rng_seed(&r, 99, 0);
	for (int i = 0; i < N; i++) {
		tok[i] = (int32_t)lt_rng_below(&r, 37);
		tgt[i] = (int32_t)lt_rng_below(&r, 37);
	}
	if (lt_model_new(be, &c, &m) != LT_OK || lt_model_init(m, 3) != LT_OK ||
	    lt_model_plan(m, B, T) != LT_OK) {
		tap_ok(0, "finite-difference gradient check: model setup failed");
		lt_model_free(m);
		return;
	}
	size_t P = lt_model_num_params(m);
	float *p0 = malloc(P * sizeof *p0), *g = malloc(P * sizeof *g), *dir = malloc(P * sizeof *dir);
	float *p = malloc(P * sizeof *p);
	/* Larger weights than the 0.02 init make every path matter. */
	lt_rng_fill_normal(p0, P, 0.3f, 11, 0);
	be->ops->write(be, lt_model_params(m), p0, P);
	double loss;
	long n;
	lt_model_zero_grads(m);
	lt_model_forward(m, tok, tgt, 1.0f / N, &loss, &n);
	lt_model_backward(m);
	be->ops->read(be, g, lt_model_grads(m), P);
	double worst = 0;
	for (int trial = 0; trial < 4; trial++) {
		lt_rng_fill_normal(dir, P, 1.0f, 500 + trial, 0);
		double norm = 0, analytic = 0;
		for (size_t i = 0; i < P; i++)
			norm += (double)dir[i] * dir[i];
		norm = sqrt(norm);
		for (size_t i = 0; i < P; i++) {
			dir[i] = (float)(dir[i] / norm);
			analytic += (double)dir[i] * g[i];
		}
		const double h = 1e-2;
		double f[2];
		for (int s = 0; s < 2; s++) {
			for (size_t i = 0; i < P; i++)
				p[i] = p0[i] + (float)((s ? -h : h) * dir[i]);
			be->ops->write(be, lt_model_params(m), p, P);
			f[s] = loss_at(m, tok, tgt);
		}
		double numeric = (f[0] - f[1]) / (2 * h);
		worst = tap_worst(worst, direction_error(numeric, analytic));
		tap_diag("direction %d: analytic %.6g, central difference %.6g", trial, analytic, numeric);
	}
	/* float32 forward passes limit the difference quotient to ~1e-3. */
	tap_ok(worst < 2e-2, "whole-model gradient vs central differences (head size %d): worst "
	       "relative error %.2e (<= 2e-2)", lt_model_config_head_dim(&c), worst);
	free(p0);
	free(g);
	free(dir);
	free(p);
	lt_model_free(m);
}

/* The loss of B sequences of tok/tgt and its gradient, read into g[P]. */
static double loss_and_grads(lt_model *m, const int32_t *tok, const int32_t *tgt, int B, int T,
			     float *g)
{
	lt_backend *be = lt_model_backend(m);
	double loss = NAN;
	long n;
	lt_model_zero_grads(m);
	if (lt_model_plan(m, B, T) != LT_OK ||
	    lt_model_forward(m, tok, tgt, 1.0f / (float)(B * T), &loss, &n) != LT_OK ||
	    lt_model_backward(m) != LT_OK)
		return NAN;
	be->ops->read(be, g, lt_model_grads(m), lt_model_num_params(m));
	return loss;
}

/* The LM head over chunks of 4 rows (18 = 4+4+4+4+2) against the whole
 * batch at once: the same losses, logits and gradients up to the order of
 * the head's weight-gradient sums (a loss of 1e-6 relative at most). */
static void check_head_chunks(lt_backend *be)
{
	struct lt_model_config c = tiny_bytes;
	c.vocab_size = 37;
	c.dim = 24;
	c.ffn_dim = 40;
	c.max_seq = 9;
	const int B = 2, T = 9, N = B * T, V = 37;
	int32_t tok[18], tgt[18];
	for (int i = 0; i < N; i++) {
		tok[i] = (int32_t)(i * 7 % V);
		tgt[i] = i == 5 ? -1 : (int32_t)(i * 13 % V);
	}
	lt_model *m[2] = { NULL, NULL };
	float *g[2] = { NULL, NULL }, *lg[2] = { NULL, NULL };
	double loss[2] = { NAN, NAN };
	int ok = 1;
	for (int k = 0; k < 2; k++) {
		size_t P;
		ok = ok && lt_model_new(be, &c, &m[k]) == LT_OK && lt_model_init(m[k], 5) == LT_OK;
		if (!ok)
			break;
		lt_model_set_head_rows(m[k], k ? 4 : 0);
		P = lt_model_num_params(m[k]);
		g[k] = malloc(P * sizeof *g[k]);
		lg[k] = malloc((size_t)N * V * sizeof *lg[k]);
		ok = g[k] && lg[k];
		if (ok) {
			loss[k] = loss_and_grads(m[k], tok, tgt, B, T, g[k]);
			ok = lt_model_read_logits(m[k], 0, N, lg[k]) == LT_OK;
		}
	}
	double dg = 0, dl = 0;
	if (ok) {
		size_t P = lt_model_num_params(m[0]);
		double *want = malloc(P * sizeof *want), *lw = malloc((size_t)N * V * sizeof *lw);
		for (size_t i = 0; want && i < P; i++)
			want[i] = g[0][i];
		for (size_t i = 0; lw && i < (size_t)N * V; i++)
			lw[i] = lg[0][i];
		dg = want ? tap_rel_l2_f(g[1], want, (long)P) : NAN;
		dl = lw ? tap_rel_l2_f(lg[1], lw, (long)N * V) : NAN;
		free(want);
		free(lw);
	}
	tap_ok(ok && fabs(loss[1] - loss[0]) <= 1e-6 * fabs(loss[0]) && dg <= 1e-6 && dl <= 1e-6,
	       "LM head in chunks of 4 rows: loss %.9g vs %.9g, gradients rel L2 %.2e, logits %.2e "
	       "(<= 1e-6)", loss[1], loss[0], dg, dl);
	for (int k = 0; k < 2; k++) {
		lt_model_free(m[k]);
		free(g[k]);
		free(lg[k]);
	}
}

/* train.recompute = block against none on backend `spec` in a precision:
 * the same loss and gradient bits over two accumulated micro-batches. */
static void check_recompute(const char *spec, enum lt_precision precision)
{
	const char *pname = precision == LT_PRECISION_BF16 ? "bf16" : "fp32";
	lt_backend *be = NULL;
	if (lt_backend_new(spec, 2, &be) != LT_OK) {
		tap_skip("recompute on %s: the backend cannot start here: %s", spec, lt_errmsg());
		return;
	}
	struct lt_model_config c = tiny_bytes;
	c.max_seq = 16;
	const int B = 3, T = 16, N = B * T;
	int32_t tok[48], tgt[48];
	for (int i = 0; i < N; i++) {
		tok[i] = (int32_t)(i * 37 % 256);
		tgt[i] = (int32_t)(i * 91 % 256);
	}
	lt_model *m[2] = { NULL, NULL };
	float *g[2] = { NULL, NULL };
	double loss[2][2];
	int ok = 1;
	size_t P = 0;
	for (int k = 0; k < 2 && ok; k++) {
		ok = lt_model_new(be, &c, &m[k]) == LT_OK && lt_model_init(m[k], 8) == LT_OK &&
		     lt_model_set_precision(m[k], precision) == LT_OK;
		if (!ok)
			break;
		lt_model_set_recompute(m[k], k ? LT_RECOMPUTE_BLOCK : LT_RECOMPUTE_NONE);
		P = lt_model_num_params(m[k]);
		ok = (g[k] = malloc(P * sizeof *g[k])) != NULL && lt_model_plan(m[k], B, T) == LT_OK;
		lt_model_zero_grads(m[k]);
		for (int micro = 0; micro < 2 && ok; micro++) {
			long n;
			tok[micro] ^= 1;
			ok = lt_model_forward(m[k], tok, tgt, 0.5f / N, &loss[k][micro], &n) == LT_OK &&
			     lt_model_backward(m[k]) == LT_OK;
			tok[micro] ^= 1;
		}
		if (ok)
			be->ops->read(be, g[k], lt_model_grads(m[k]), P);
		ok = ok && be->ops->sync(be) == LT_OK;
	}
	size_t differ = 0;
	for (size_t i = 0; ok && i < P; i++)
		differ += memcmp(&g[0][i], &g[1][i], sizeof(float)) != 0;
	tap_ok(ok && !memcmp(loss[0], loss[1], sizeof loss[0]) && differ == 0,
	       "%s, %s: recompute = block gives the losses (%.9g, %.9g) and all %zu gradients of "
	       "recompute = none bitwise (%zu differ)", spec, pname, ok ? loss[1][0] : NAN,
	       ok ? loss[1][1] : NAN, P, differ);
	for (int k = 0; k < 2; k++) {
		lt_model_free(m[k]);
		free(g[k]);
	}
	lt_backend_free(be);
}

/* A smaller batch after a larger one keeps the activation buffers and
 * gives the same bits as a model planned for it from the start; a larger
 * one than the first allocates. */
static void check_plan_reuse(lt_backend *be)
{
	struct lt_model_config c = tiny_bytes;
	c.max_seq = 8;
	const int T = 8;
	int32_t tok[4 * 8], tgt[4 * 8];
	for (int i = 0; i < 4 * T; i++) {
		tok[i] = (int32_t)(i * 11 % 256);
		tgt[i] = (int32_t)(i * 5 % 256);
	}
	lt_model *a = NULL, *b = NULL;
	size_t P = 0, held3 = 0, held2 = 0, held4 = 0, peak;
	float *ga = NULL, *gb = NULL;
	if (lt_model_new(be, &c, &a) == LT_OK && lt_model_init(a, 8) == LT_OK &&
	    lt_model_new(be, &c, &b) == LT_OK && lt_model_init(b, 8) == LT_OK) {
		P = lt_model_num_params(a);
		ga = malloc(P * sizeof *ga);
		gb = malloc(P * sizeof *gb);
	}
	if (!ga || !gb) {
		tap_ok(0, "plan reuse: model setup failed");
		tap_ok(0, "plan reuse: model setup failed");
		goto out;
	}
	/* a: 3 sequences, then 2; b: 2 from the start */
	double l3 = loss_and_grads(a, tok, tgt, 3, T, ga);
	be->ops->mem_usage(be, &held3, &peak);
	double la = loss_and_grads(a, tok, tgt, 2, T, ga);
	be->ops->mem_usage(be, &held2, &peak);
	double lb = loss_and_grads(b, tok, tgt, 2, T, gb);
	int same_grads = !memcmp(ga, gb, P * sizeof *ga);
	double l3again = loss_and_grads(a, tok, tgt, 3, T, ga);
	tap_ok(held2 == held3 && la == lb && same_grads && l3again == l3 &&
	       isfinite(l3),
	       "batch 2 after batch 3 keeps the buffers (%zu bytes both) and gives the bits of a "
	       "model planned for 2 (loss %.9g and %.9g); batch 3 again gives %.9g as before",
	       held3, la, lb, l3again);
	lt_model_free(b);
	b = NULL;
	be->ops->mem_usage(be, &held3, &peak);
	double l4 = loss_and_grads(a, tok, tgt, 4, T, ga);
	be->ops->mem_usage(be, &held4, &peak);
	tap_ok(isfinite(l4) && held4 > held3, "batch 4 allocates larger buffers: %zu bytes, from %zu",
	       held4, held3);
out:
	free(ga);
	free(gb);
	lt_model_free(a);
	lt_model_free(b);
}

/* What the gradient hook saw in one backward. */
struct hook_log {
	unsigned char *seen;    /* [P] times each element was passed */
	size_t P;
	int ranges, pauses, pauses_before_first_block, fail_at;
};

/* Whether the fail_at-th call of the hook is this one. */
static enum lt_status log_call(const struct hook_log *h)
{
	int calls = h->ranges + h->pauses;
	return h->fail_at && calls == h->fail_at ? LT_ERR_COMM : LT_OK;
}

static enum lt_status log_range_seen(void *ctx, size_t begin, size_t end)
{
	struct hook_log *h = ctx;
	h->ranges++;
	for (size_t i = begin; i < end && i < h->P; i++)
		h->seen[i]++;
	return log_call(h);
}

static enum lt_status log_pause(void *ctx)
{
	struct hook_log *h = ctx;
	h->pauses++;
	h->pauses_before_first_block += h->ranges == 1;
	return log_call(h);
}

/* lt_model_backward tells its hook of ranges that cover the gradient
 * buffer exactly once (head, each block, embedding), pauses between the
 * ops of each block, and stops with the hook's failure. */
static void check_gradient_hook(lt_backend *be)
{
	const int B = 2, T = 8;
	lt_model *m = NULL;
	int32_t tok[16], tgt[16];
	for (int i = 0; i < B * T; i++) {
		tok[i] = (int32_t)(i * 7 % 256);
		tgt[i] = (int32_t)(i * 13 % 256);
	}
	if (lt_model_new(be, &tiny_bytes, &m) != LT_OK || lt_model_init(m, 5) != LT_OK ||
	    lt_model_plan(m, B, T) != LT_OK) {
		tap_ok(0, "gradient hook: model setup failed");
		tap_ok(0, "gradient hook: model setup failed");
		lt_model_free(m);
		return;
	}
	struct hook_log h = { .P = lt_model_num_params(m) };
	h.seen = calloc(h.P, 1);
	double loss;
	long n;
	lt_model_set_grad_hook(m, &(struct lt_grad_hook){ .ctx = &h, .ready = log_range_seen,
							   .between_ops = log_pause });
	lt_model_forward(m, tok, tgt, 1.0f / (B * T), &loss, &n);
	enum lt_status st = lt_model_backward(m);
	size_t once = 0;
	for (size_t i = 0; i < h.P; i++)
		once += h.seen[i] == 1;
	tap_ok(st == LT_OK && once == h.P && h.ranges == tiny_bytes.n_layers + 2 &&
		       h.pauses >= 2 * tiny_bytes.n_layers && h.pauses_before_first_block >= 2,
	       "gradient hook: %d ranges cover %zu of %zu elements once, %d pauses (%d inside the "
	       "last block)", h.ranges, once, h.P, h.pauses, h.pauses_before_first_block);
	/* the third call is a pause inside the last block: its failure ends backward */
	struct hook_log f = { .P = h.P, .seen = h.seen, .fail_at = 3 };
	lt_model_set_grad_hook(m, &(struct lt_grad_hook){ .ctx = &f, .ready = log_range_seen,
							   .between_ops = log_pause });
	lt_model_forward(m, tok, tgt, 1.0f / (B * T), &loss, &n);
	st = lt_model_backward(m);
	tap_ok(st == LT_ERR_COMM && f.ranges == 1 && f.pauses == 2,
	       "gradient hook: a failing pause ends backward with its status (%d after %d ranges)",
	       (int)st, f.ranges);
	lt_model_set_grad_hook(m, NULL);
	free(h.seen);
	lt_model_free(m);
}

/* What a lookup function saw, and the embedding gradient it rebuilt. */
struct lookup_log {
	struct hook_copy copy;
	int C, ranges, table_at, count, ascending;
	int32_t rows[64];
};

static enum lt_status log_range(void *ctx, size_t begin, size_t end)
{
	struct lookup_log *h = ctx;
	if (end > begin && begin == 0)
		h->table_at = ++h->ranges;
	else if (end > begin)
		h->ranges++;
	return copy_hook(&h->copy, begin, end);
}

static enum lt_status log_lookup(void *ctx, size_t table, const int32_t *rows, int count,
				 lt_ref grads)
{
	struct lookup_log *h = ctx;
	lt_backend *be = lt_model_backend(h->copy.m);
	float *g = malloc((size_t)count * h->C * sizeof *g);
	if (!g || count > 64)
		return LT_ERR_NOMEM;
	be->ops->read(be, g, grads, (size_t)count * h->C);
	h->count = count;
	h->ascending = 1;
	for (int i = 0; i < count; i++) {
		h->rows[i] = rows[i];
		h->ascending &= i == 0 || rows[i] > rows[i - 1];
		for (int j = 0; j < h->C; j++)
			h->copy.out[table + (size_t)rows[i] * h->C + j] += g[(size_t)i * h->C + j];
	}
	free(g);
	return LT_OK;
}

/* With the lookup apart, backward reports the embedding's range second
 * (right after the output layer), then hands over one row for each
 * distinct token, ascending; the head's part plus those rows is the
 * embedding gradient of a plain backward (to rounding: the adds' order
 * differs), and every other gradient is bitwise the same. */
static void check_lookup_apart(lt_backend *be, int tied, enum lt_precision precision)
{
	const int B = 2, T = 8;
	struct lt_model_config c = tiny_bytes;
	c.tied = tied;
	lt_model *m = NULL;
	int32_t tok[16], tgt[16], distinct[256] = { 0 };
	int want_rows = 0;
	for (int i = 0; i < B * T; i++) {
		tok[i] = (int32_t)(i * i % 11 * 17);  /* repeats: 11 values at most */
		tgt[i] = (int32_t)(i * 13 % 256);
		want_rows += !distinct[tok[i]]++;
	}
	if (lt_model_new(be, &c, &m) != LT_OK || lt_model_init(m, 7) != LT_OK ||
	    lt_model_set_precision(m, precision) != LT_OK || lt_model_plan(m, B, T) != LT_OK) {
		tap_ok(0, "lookup apart (%s): model setup failed", tied ? "tied" : "untied");
		lt_model_free(m);
		return;
	}
	size_t P = lt_model_num_params(m);
	float *want = malloc(P * sizeof *want), *got = calloc(P, sizeof *got);
	struct lookup_log h = { .copy = { .m = m, .out = got }, .C = c.dim };
	double loss;
	long n;
	read_plain_gradient(be, m, tok, tgt, B, T, want);
	lt_model_zero_grads(m);
	lt_model_set_grad_hook(m, &(struct lt_grad_hook){ .ctx = &h, .ready = log_range,
							   .lookup_ready = log_lookup });
	lt_model_forward(m, tok, tgt, 1.0f / (B * T), &loss, &n);
	enum lt_status st = lt_model_backward(m);
	lt_model_set_grad_hook(m, NULL);
	size_t table = (size_t)c.vocab_size * c.dim, same = 0;
	double worst = table_error(got, want, table);
	for (size_t i = table; i < P; i++)
		same += memcmp(&want[i], &got[i], sizeof *got) == 0;
	int rows_ok = h.count == want_rows && h.ascending;
	for (int i = 0; rows_ok && i < h.count; i++)
		rows_ok = distinct[h.rows[i]] > 0;
	tap_ok(st == LT_OK && h.table_at == 2 && h.ranges == c.n_layers + 2 && rows_ok &&
		       worst < 1e-6 && same == P - table,
	       "lookup apart (%s head, %s): the table reported %s of %d ranges, %d rows for %d distinct tokens "
	       "(ascending: %d), table within %.1e (of its largest) of a plain backward, %zu of %zu others bitwise",
	       tied ? "tied" : "untied", precision == LT_PRECISION_BF16 ? "bf16" : "fp32",
	       h.table_at == 2 ? "second" : "out of place", h.ranges, h.count, want_rows,
	       h.ascending, worst, same, P - table);
	free(want);
	free(got);
	lt_model_free(m);
}

int main(void)
{
	lt_backend *be = NULL;
	long len = 0;
	char *text = read_corpus(&len);
	tap_plan(19);
	if (lt_backend_new("cpu", 0, &be) != LT_OK || !text) {
		printf("Bail out! %s\n", text ? "cannot open the cpu backend" : "cannot read tests/data/tiny_corpus.txt");
		return 1;
	}
	check_error_measures_keep_nan();
	check_gradient_by_finite_differences(be, 0);
	/* heads of 10 against dim / n_heads = 6: attention 40 wide, the residual 24 */
	check_gradient_by_finite_differences(be, 10);
	check_gradient_hook(be);
	check_plan_reuse(be);
	check_head_chunks(be);
	check_recompute("cpu", LT_PRECISION_FP32);
	check_recompute("opencl", LT_PRECISION_FP32);
	check_recompute("cpu", LT_PRECISION_BF16);
	check_recompute("opencl", LT_PRECISION_BF16);
	check_lookup_apart(be, 0, LT_PRECISION_FP32);
	check_lookup_apart(be, 1, LT_PRECISION_FP32);
	check_lookup_apart(be, 0, LT_PRECISION_BF16);
	check_same_seed_same_run(be, text, len);
	check_loss_goes_down(be, text, len);
	tap_ok(be->ops->sync(be) == LT_OK, "backend reports no failure");
	lt_backend_free(be);
	free(text);
	return tap_done();
}
