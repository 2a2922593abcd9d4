/* GEMMs whose weight is of another type than the activations (the frozen
 * base of train.lora_base): the core's q8_0 and q4_0 codec against GGUF's
 * own quantizer, bitwise, and y = x W^T and dx = dy W on every backend with
 * W in q8_0, q4_0, bf16 or f32 blocks against a float64 reference over the
 * dequantized weight, and the OpenCL backend against the CPU's, with weights
 * large enough that the backends convert them in several panels. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "io/gguf.h"
#include "rng.h"
#include "tap.h"

/* n values: normal, with exact zeros, whole-zero blocks, ties of the
 * largest magnitude of both signs and a few large ones. */
static void draw_values(float *x, size_t n, uint64_t seed)
{
	lt_rng_fill_normal(x, n, 1.0f, seed, 1);
	for (size_t i = 0; i < n; i += 97)
		x[i] = 0.0f;
	for (size_t i = 64; i + 32 <= n && i < 96; i++)
		x[i] = 0.0f;
	if (n >= 160) {
		x[128] = 3.0f;
		x[129] = -3.0f;
		x[150] = 1e4f;
	}
}

/* The core's codec makes GGUF's blocks bitwise, and reads them back as
 * GGUF's dequantizer does. */
static void check_codec(enum lt_dtype type, uint32_t gguf_type)
{
	enum { N = 32 * 300 };
	static float x[N], mine_back[N], theirs_back[N];
	static unsigned char mine[N / 32 * 34], theirs[N / 32 * 34];
	size_t bytes = lt_dtype_bytes(type, N);
	draw_values(x, N, 7);
	lt_dtype_quantize(type, x, mine, N);
	enum lt_status st = lt_gguf_quantize(gguf_type, x, N, theirs, bytes);
	if (st == LT_OK)
		st = lt_gguf_dequantize(gguf_type, theirs, bytes, theirs_back, N);
	lt_dtype_dequantize(type, mine, mine_back, N);
	tap_ok(st == LT_OK && !memcmp(mine, theirs, bytes) &&
	       !memcmp(mine_back, theirs_back, sizeof mine_back),
	       "%s: %d values quantize to GGUF's own %zu bytes and dequantize as GGUF does",
	       lt_dtype_name(type), N, bytes);
}

struct problem {
	int M, R, K;         /* x[M, K], W[R, K] */
	enum lt_dtype wt;    /* W's type */
	enum lt_dtype xt;    /* x's (and dy's) type */
	float *x, *dy, *w;   /* the operands as floats (w dequantized) */
	void *wq;            /* W as the buffer holds it */
};

static void widen_if_bf16(float *v, size_t n, enum lt_dtype t)
{
	for (size_t i = 0; t == LT_BF16 && i < n; i++)
		v[i] = lt_bf16_to_f32(lt_bf16_from_f32(v[i]));
}

/* W drawn and put in its type; w[] what it stands for. */
static void make_problem(struct problem *p)
{
	size_t nw = (size_t)p->R * p->K;
	p->x = malloc((size_t)p->M * p->K * sizeof *p->x);
	p->dy = malloc((size_t)p->M * p->R * sizeof *p->dy);
	p->w = malloc(nw * sizeof *p->w);
	p->wq = malloc(nw * 4);
	lt_rng_fill_normal(p->x, (size_t)p->M * p->K, 1.0f, 11, 2);
	lt_rng_fill_normal(p->dy, (size_t)p->M * p->R, 1.0f, 11, 3);
	widen_if_bf16(p->x, (size_t)p->M * p->K, p->xt);
	widen_if_bf16(p->dy, (size_t)p->M * p->R, p->xt);
	draw_values(p->w, nw, 13);
	if (lt_dtype_is_block(p->wt)) {
		lt_dtype_quantize(p->wt, p->w, p->wq, nw);
		lt_dtype_dequantize(p->wt, p->wq, p->w, nw);
	} else if (p->wt == LT_BF16) {
		for (size_t i = 0; i < nw; i++)
			((uint16_t *)p->wq)[i] = lt_bf16_from_f32(p->w[i]);
		widen_if_bf16(p->w, nw, LT_BF16);
	} else {
		memcpy(p->wq, p->w, nw * sizeof *p->w);
	}
	/* the backends convert W to x's type before they multiply */
	widen_if_bf16(p->w, nw, p->xt);
}

static void free_problem(struct problem *p)
{
	free(p->x);
	free(p->dy);
	free(p->w);
	free(p->wq);
}

/* A buffer of type t holding the floats v[n] (rounded where bf16). */
static lt_buf *upload(lt_backend *be, enum lt_dtype t, const float *v, size_t n)
{
	lt_buf *b = NULL;
	if (lt_buf_new(be, t, n, &b) != LT_OK)
		return NULL;
	if (t == LT_BF16) {
		uint16_t *h = malloc(n * sizeof *h);
		for (size_t i = 0; i < n; i++)
			h[i] = lt_bf16_from_f32(v[i]);
		be->ops->write(be, (lt_ref){ b, 0 }, h, n);
		free(h);
	} else {
		be->ops->write(be, (lt_ref){ b, 0 }, v, n);
	}
	return b;
}

/* y[M, R] = x W^T and dx[M, K] = dy W on backend be, into y and dx (f32). */
static enum lt_status run_backend(lt_backend *be, const struct problem *p, float *y, float *dx)
{
	size_t nw = (size_t)p->R * p->K;
	lt_buf *w = NULL, *x = upload(be, p->xt, p->x, (size_t)p->M * p->K);
	lt_buf *dy = upload(be, p->xt, p->dy, (size_t)p->M * p->R), *ob = NULL, *od = NULL;
	enum lt_status st = x && dy ? lt_buf_new(be, p->wt, nw, &w) : LT_ERR_NOMEM;
	if (st == LT_OK && (st = lt_buf_new(be, LT_F32, (size_t)p->M * p->R, &ob)) == LT_OK)
		st = lt_buf_new(be, LT_F32, (size_t)p->M * p->K, &od);
	if (st == LT_OK) {
		/* f32 results of bf16 activations: the model's head does the same */
		struct lt_gemm fwd = { .trans_b = 1, .m = p->M, .n = p->R, .k = p->K, .alpha = 1.0f,
				       .lda = p->K, .ldb = p->K, .ldc = p->R, .batch = 1 };
		struct lt_gemm bwd = { .m = p->M, .n = p->K, .k = p->R, .alpha = 1.0f,
				       .lda = p->R, .ldb = p->K, .ldc = p->K, .batch = 1 };
		be->ops->write(be, (lt_ref){ w, 0 }, p->wq, nw);
		be->ops->gemm(be, &fwd, (lt_ref){ x, 0 }, (lt_ref){ w, 0 }, (lt_ref){ ob, 0 });
		be->ops->gemm(be, &bwd, (lt_ref){ dy, 0 }, (lt_ref){ w, 0 }, (lt_ref){ od, 0 });
		be->ops->read(be, y, (lt_ref){ ob, 0 }, (size_t)p->M * p->R);
		be->ops->read(be, dx, (lt_ref){ od, 0 }, (size_t)p->M * p->K);
		st = be->ops->sync(be);
	}
	lt_buf_free(be, x);
	lt_buf_free(be, dy);
	lt_buf_free(be, w);
	lt_buf_free(be, ob);
	lt_buf_free(be, od);
	return st;
}

/* The float64 products over the dequantized weight. */
static void reference(const struct problem *p, double *y, double *dx)
{
	for (int i = 0; i < p->M; i++) {
		for (int r = 0; r < p->R; r++) {
			double s = 0;
			for (int k = 0; k < p->K; k++)
				s += (double)p->x[(size_t)i * p->K + k] * p->w[(size_t)r * p->K + k];
			y[(size_t)i * p->R + r] = s;
		}
		for (int k = 0; k < p->K; k++)
			dx[(size_t)i * p->K + k] = 0;
		for (int r = 0; r < p->R; r++) {
			double d = p->dy[(size_t)i * p->R + r];
			for (int k = 0; k < p->K; k++)
				dx[(size_t)i * p->K + k] += d * p->w[(size_t)r * p->K + k];
		}
	}
}

/* Each backend against the reference, and the OpenCL one against the CPU's
 * (when both are there). */
static void check_problem(lt_backend **bes, const char *const *names, int nb, struct problem *p)
{
	size_t ny = (size_t)p->M * p->R, nd = (size_t)p->M * p->K;
	double *ry = malloc(ny * sizeof *ry), *rd = malloc(nd * sizeof *rd);
	float *y[2] = { malloc(ny * 4), malloc(ny * 4) }, *dx[2] = { malloc(nd * 4), malloc(nd * 4) };
	make_problem(p);
	reference(p, ry, rd);
	/* the same operands: f32 sums of exact products in another order */
	double tol = 1e-5;
	for (int b = 0; b < nb; b++) {
		if (!bes[b]) {
			tap_skip("%s: no %s backend", lt_dtype_name(p->wt), names[b]);
			continue;
		}
		enum lt_status st = run_backend(bes[b], p, y[b], dx[b]);
		double ey = tap_rel_l2_f(y[b], ry, (long)ny), ed = tap_rel_l2_f(dx[b], rd, (long)nd);
		tap_ok(st == LT_OK && ey <= tol && ed <= tol,
		       "%s: W[%d, %d] %s, x %s: x W^T and dy W against float64, relative L2 error "
		       "%.1e and %.1e (<= %.0e)%s%s", names[b], p->R, p->K, lt_dtype_name(p->wt),
		       lt_dtype_name(p->xt), ey, ed, tol, st == LT_OK ? "" : ": ",
		       st == LT_OK ? "" : lt_errmsg());
	}
	if (nb == 2 && bes[0] && bes[1]) {
		for (size_t i = 0; i < ny; i++)
			ry[i] = y[0][i];
		for (size_t i = 0; i < nd; i++)
			rd[i] = dx[0][i];
		double ey = tap_rel_l2_f(y[1], ry, (long)ny), ed = tap_rel_l2_f(dx[1], rd, (long)nd);
		tap_ok(ey <= 1e-5 && ed <= 1e-5, "opencl against cpu: W[%d, %d] %s, x %s: relative L2 "
		       "difference %.1e and %.1e (<= 1e-5)", p->R, p->K, lt_dtype_name(p->wt),
		       lt_dtype_name(p->xt), ey, ed);
	} else {
		tap_skip("opencl against cpu: W %s: a backend is missing", lt_dtype_name(p->wt));
	}
	free_problem(p);
	free(ry);
	free(rd);
	for (int i = 0; i < 2; i++) {
		free(y[i]);
		free(dx[i]);
	}
}

int main(void)
{
	static const char *const names[2] = { "cpu", "opencl" };
	lt_backend *bes[2] = { NULL, NULL };
	tap_plan(2 + 7 * 3);
	check_codec(LT_Q8_0, LT_GGUF_Q8_0);
	check_codec(LT_Q4_0, LT_GGUF_Q4_0);
	for (int b = 0; b < 2; b++)
		if (lt_backend_new(names[b], 2, &bes[b]) != LT_OK) {
			tap_diag("no %s backend: %s", names[b], lt_errmsg());
			bes[b] = NULL;
		}
	/* small shapes, and one past LT_GEMM_PANEL_VALUES both ways (several
	 * panels of rows forward, several slabs of columns backward) */
	struct problem ps[] = {
		{ .M = 5, .R = 48, .K = 64, .wt = LT_Q8_0, .xt = LT_F32 },
		{ .M = 5, .R = 48, .K = 64, .wt = LT_Q4_0, .xt = LT_F32 },
		{ .M = 3, .R = 40, .K = 96, .wt = LT_Q4_0, .xt = LT_BF16 },
		{ .M = 3, .R = 40, .K = 96, .wt = LT_BF16, .xt = LT_F32 },
		{ .M = 3, .R = 40, .K = 96, .wt = LT_F32, .xt = LT_BF16 },
		{ .M = 3, .R = 1100, .K = 4096, .wt = LT_Q8_0, .xt = LT_F32 },
		{ .M = 2, .R = 1100, .K = 4096, .wt = LT_Q4_0, .xt = LT_BF16 },
	};
	for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
		check_problem(bes, names, 2, &ps[i]);
	lt_backend_free(bes[0]);
	lt_backend_free(bes[1]);
	return tap_done();
}
