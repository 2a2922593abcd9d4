/* The TF32 tensor-core GEMM and attention forward (train.matmul = tf32 on
 * NVIDIA devices of compute capability 8.0 and later) against float64
 * references: every GEMM shape of the 110M preset's step in its three
 * layouts, ragged edge sizes in all four layouts with rows on and off 16
 * bytes, strided batches, beta = 0 over NaNs, the TF32 rounding itself,
 * bitwise repeats; the BF16 tensor-core GEMM (bf16 operands, f32 or bf16 C) on the
 * shapes, edges and batches, bitwise repeats (on compute capability 9.0 both the wgmma
 * and the mma.sync kernels); and causal grouped-query attention at several head
 * sizes and ragged lengths, forward against float64 and backward against
 * the CPU backend. On any other device (PoCL in CI) the whole file
 * skips, saying what it found. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "tap.h"

/* 2^-11 for each of the two operand roundings to TF32 (10 stored bits, to
 * nearest), plus fp32 accumulation over k terms, relative to sum |a b|. */
static double tf32_bound(int k)
{
	return 2.0 * ldexp(1.0, -11) + (double)k * ldexp(1.0, -24);
}

static lt_backend *be;

/* The operands of the checks: f32 (the TF32 GEMM), bf16 with an f32 C, or bf16 with a bf16
 * C (both the BF16 tensor-core GEMM, where rows start on 16 bytes). */
enum operands { F32, BF16, BF16_C16 };
static enum operands mode;

/* The bound of the BF16 GEMM, relative to sum |a b|: bf16 products are exact, and the
 * tensor cores add in fp32 but may truncate rather than round each sum: twice fp32's
 * k 2^-24. */
static double bf16_bound(int k)
{
	return (double)k * ldexp(1.0, -23);
}

static const char *mode_name(void)
{
	return mode == F32 ? "TF32" : mode == BF16 ? "BF16" : "BF16, bf16 C,";
}

/* x[0..n) rounded to bf16 values in place. */
static void round_bf16(float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = lt_bf16_to_f32(lt_bf16_from_f32(x[i]));
}

struct problem {
	struct lt_gemm g;
	size_t a_off, b_off, c_off;  /* element offsets into the buffers */
	size_t na, nb, nc;           /* buffer sizes */
	float *a, *b, *c0, *c;
};

static size_t extent(int rows, int cols, int ld, long stride, int batch)
{
	return (size_t)stride * (size_t)(batch - 1) + (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
}

static void fill(float *x, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
	}
}

/* A problem of the given layout and sizes; `skew` > 0 shifts every operand
 * off 16 bytes and pads the leading dimensions by an odd count. */
static int problem_new(struct problem *p, int ta, int tb, int m, int n, int k, int batch,
		       int skew, float beta)
{
	memset(p, 0, sizeof *p);
	struct lt_gemm *g = &p->g;
	*g = (struct lt_gemm){ .trans_a = ta, .trans_b = tb, .m = m, .n = n, .k = k,
			       .alpha = 1.0f, .beta = beta, .batch = batch };
	int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
	g->lda = ac + (skew ? 3 : 0);
	g->ldb = bc + (skew ? 1 : 0);
	g->ldc = n + (skew ? 2 : 0);
	g->stride_a = (long)ar * g->lda + (skew ? 5 : 4);
	g->stride_b = (long)br * g->ldb + (skew ? 7 : 8);
	g->stride_c = (long)m * g->ldc + 3;
	p->a_off = skew ? 1 : 0;
	p->b_off = skew ? 3 : 0;
	p->c_off = skew ? 2 : 0;
	p->na = p->a_off + extent(ar, ac, g->lda, g->stride_a, batch);
	p->nb = p->b_off + extent(br, bc, g->ldb, g->stride_b, batch);
	p->nc = p->c_off + extent(m, n, g->ldc, g->stride_c, batch);
	p->a = malloc(p->na * sizeof(float));
	p->b = malloc(p->nb * sizeof(float));
	p->c0 = malloc(p->nc * sizeof(float));
	p->c = malloc(p->nc * sizeof(float));
	if (!p->a || !p->b || !p->c0 || !p->c)
		return 0;
	fill(p->a, p->na, 1u + (unsigned)m);
	fill(p->b, p->nb, 2u + (unsigned)n);
	fill(p->c0, p->nc, 3u + (unsigned)k);
	if (beta == 0.0f)  /* beta == 0 must not read C */
		for (size_t i = 0; i < p->nc; i++)
			p->c0[i] = NAN;
	if (mode != F32) {
		round_bf16(p->a, p->na);
		round_bf16(p->b, p->nb);
	}
	if (mode == BF16_C16)
		round_bf16(p->c0, p->nc);
	return 1;
}

static void problem_free(struct problem *p)
{
	free(p->a);
	free(p->b);
	free(p->c0);
	free(p->c);
}

static void free_bufs(lt_buf **b, int n)
{
	for (int i = 0; i < n; i++)
		if (b[i])
			lt_buf_free(be, b[i]);
}

/* Writes x[0..n) into buffer b, as bf16 when b is (x holds bf16 values then). */
static void write_values(lt_buf *b, const float *x, size_t n, uint16_t *h)
{
	if (lt_buf_type(b) == LT_BF16) {
		for (size_t i = 0; i < n; i++)
			h[i] = lt_bf16_from_f32(x[i]);
		be->ops->write(be, (lt_ref){ b, 0 }, h, n);
	} else {
		be->ops->write(be, (lt_ref){ b, 0 }, x, n);
	}
}

/* p->c = the backend's result; 0 on a failure (in lt_errmsg). */
static int run_gemm(struct problem *p)
{
	enum lt_dtype ab = mode == F32 ? LT_F32 : LT_BF16, tc = mode == BF16_C16 ? LT_BF16 : LT_F32;
	size_t most = p->na > p->nb ? p->na : p->nb;
	lt_buf *a = NULL, *b = NULL, *c = NULL;
	uint16_t *h = malloc((most > p->nc ? most : p->nc) * sizeof *h);
	int ok = h && lt_buf_new(be, ab, p->na, &a) == LT_OK &&
		 lt_buf_new(be, ab, p->nb, &b) == LT_OK && lt_buf_new(be, tc, p->nc, &c) == LT_OK;
	if (ok) {
		write_values(a, p->a, p->na, h);
		write_values(b, p->b, p->nb, h);
		write_values(c, p->c0, p->nc, h);
		ok = be->ops->sync(be) == LT_OK;
	}
	if (ok) {
		be->ops->gemm(be, &p->g, (lt_ref){ a, p->a_off }, (lt_ref){ b, p->b_off },
			      (lt_ref){ c, p->c_off });
		be->ops->read(be, tc == LT_BF16 ? (void *)h : (void *)p->c, (lt_ref){ c, 0 }, p->nc);
		ok = be->ops->sync(be) == LT_OK;
	}
	for (size_t i = 0; ok && tc == LT_BF16 && i < p->nc; i++)
		p->c[i] = lt_bf16_to_f32(h[i]);
	free_bufs((lt_buf *[]){ a, b, c }, 3);
	free(h);
	return ok;
}

/* The worst |C - R| / bound over C (R in float64), infinity when an
 * element outside C changed; NaN stays NaN (tap_worst). */
static double worst_error(const struct problem *p)
{
	const struct lt_gemm *g = &p->g;
	double worst = 0, bound = mode == F32 ? tf32_bound(g->k) : bf16_bound(g->k);
	double stored = mode == BF16_C16 ? ldexp(1.0, -8) : 0; /* C's rounding to bf16 */
	size_t nc = p->nc - p->c_off;
	char *inside = calloc(nc, 1);
	if (!inside)
		return INFINITY;
	for (int bat = 0; bat < g->batch; bat++) {
		const float *A = p->a + p->a_off + (size_t)bat * (size_t)g->stride_a;
		const float *B = p->b + p->b_off + (size_t)bat * (size_t)g->stride_b;
		size_t cb = (size_t)bat * (size_t)g->stride_c;
#pragma omp parallel for reduction(max : worst) schedule(dynamic)
		for (int m = 0; m < g->m; m++)
			for (int n = 0; n < g->n; n++) {
				double s = 0, mag = 0;
				for (int k = 0; k < g->k; k++) {
					double x = g->trans_a ? A[(size_t)k * g->lda + m]
							      : A[(size_t)m * g->lda + k];
					double y = g->trans_b ? B[(size_t)n * g->ldb + k]
							      : B[(size_t)k * g->ldb + n];
					s += x * y;
					mag += fabs(x * y);
				}
				size_t i = cb + (size_t)m * g->ldc + (size_t)n;
				double c0 = p->c0[p->c_off + i];
				double want = g->alpha * s + (g->beta == 0.0f ? 0 : g->beta * c0);
				double tol = bound * mag * fabs(g->alpha) +
					     (g->beta == 0.0f ? 0 : ldexp(1.0, -23) * fabs(g->beta * c0)) +
					     stored * fabs(want) + 1e-30;
				double e = fabs((double)p->c[p->c_off + i] - want) / tol;
				if (e != e)
					e = INFINITY;
				if (e > worst)
					worst = e;
				inside[i] = 1;
			}
	}
	for (size_t i = 0; i < nc; i++)
		if (!inside[i] && memcmp(&p->c[p->c_off + i], &p->c0[p->c_off + i], sizeof(float)))
			worst = INFINITY;
	for (size_t i = 0; i < p->c_off; i++)
		if (memcmp(&p->c[i], &p->c0[i], sizeof(float)))
			worst = INFINITY;
	free(inside);
	return worst;
}

/* Runs and checks one problem; returns its worst error ratio (<= 1 is right). */
static double check_one(int ta, int tb, int m, int n, int k, int batch, int skew, float beta)
{
	struct problem p;
	double e = INFINITY;
	if (problem_new(&p, ta, tb, m, n, k, batch, skew, beta) && run_gemm(&p))
		e = worst_error(&p);
	problem_free(&p);
	return e;
}

/* The 110M preset's GEMMs: (out, in) of each linear layer, tokens M. */
static const int layers[][2] = { { 2304, 768 }, { 768, 768 }, { 4096, 768 },
				 { 768, 2048 }, { 32000, 768 } };
#define N_LAYERS ((int)(sizeof layers / sizeof layers[0]))

static void check_model_shapes(void)
{
	static const char *names[3] = { "forward x.W^T (NT)", "input gradient dout.W (NN)",
					 "weight gradient dout^T.x (TN)" };
	for (int form = 0; form < 3; form++) {
		double worst = 0;
		char where[64] = "";
		for (int l = 0; l < N_LAYERS; l++) {
			int out = layers[l][0], in = layers[l][1];
			int M = out > 10000 ? 64 : 256;  /* tokens: the float64 check is the cost */
			double e = form == 0 ? check_one(0, 1, M, out, in, 1, 0, 0.0f)
				 : form == 1 ? check_one(0, 0, M, in, out, 1, 0, 1.0f)
					     : check_one(1, 0, out, in, M, 1, 0, 1.0f);
			if (!(e <= worst)) {
				worst = e;
				snprintf(where, sizeof where, "%dx%d layer", out, in);
			}
		}
		tap_ok(worst <= 1.0, "110M shapes, %s: worst error %.3f of the %s bound (at the %s)",
		       names[form], worst, mode_name(), where[0] ? where : "-");
	}
}

static void check_edges(void)
{
	static const int sizes[] = { 1, 17, 130 };
	for (int layout = 0; layout < 4; layout++)
		for (int skew = 0; skew < 2; skew++) {
			int ta = layout >> 1, tb = layout & 1;
			double worst = 0;
			for (int i = 0; i < 27; i++) {
				int m = sizes[i / 9], n = sizes[(i / 3) % 3], k = sizes[i % 3];
				worst = tap_worst(worst, check_one(ta, tb, m, n, k, 1, skew,
								    i % 2 ? 0.5f : 0.0f));
			}
			worst = tap_worst(worst, check_one(ta, tb, 129, 257, 33, 1, skew, 0.0f));
			tap_ok(worst <= 1.0,
			       "edges %c%c (m, n, k in {1, 17, 130} and 129x257x33), rows %s 16 "
			       "bytes: worst error %.3f of the %s bound", ta ? 'T' : 'N',
			       tb ? 'T' : 'N', skew ? "off" : "on", worst, mode_name());
		}
}

static void check_batches(void)
{
	for (int skew = 0; skew < 2; skew++) {
		double worst = 0;
		for (int layout = 0; layout < 4; layout++)
			worst = tap_worst(worst, check_one(layout >> 1, layout & 1, 96, 80, 72, 3,
							   skew, 0.25f));
		tap_ok(worst <= 1.0, "3 strided batches, every layout, rows %s 16 bytes: worst error "
		       "%.3f of the %s bound", skew ? "off" : "on", worst, mode_name());
	}
}

/* A = 1 + 2^-12 rounds to 1 in TF32: C = sum of 8 products is 8 exactly
 * there, and 8 + 2^-9 in fp32 (CLBlast). */
static void check_rounding(void)
{
	struct problem p;
	int ok = problem_new(&p, 0, 1, 16, 8, 8, 1, 0, 0.0f);
	for (size_t i = 0; ok && i < p.na; i++)
		p.a[i] = 1.0f + ldexpf(1.0f, -12);
	for (size_t i = 0; ok && i < p.nb; i++)
		p.b[i] = 1.0f;
	ok = ok && run_gemm(&p);
	float tf32 = ok ? p.c[0] : NAN;
	lt_backend_set_matmul(be, LT_MATMUL_FP32);
	ok = ok && run_gemm(&p);
	float fp32 = ok ? p.c[0] : NAN;
	lt_backend_set_matmul(be, LT_MATMUL_TF32);
	tap_ok(tf32 == 8.0f && fp32 == 8.0f + ldexpf(1.0f, -9),
	       "operands are rounded to TF32 with it and not without: %.9g and %.9g (want 8 and "
	       "%.9g)", (double)tf32, (double)fp32, 8.0 + ldexp(1.0, -9));
	problem_free(&p);
}

static void check_repeat(void)
{
	struct problem p, q;
	int ok = problem_new(&p, 0, 1, 512, 2304, 768, 1, 0, 0.0f) && run_gemm(&p) &&
		 problem_new(&q, 0, 1, 512, 2304, 768, 1, 0, 0.0f) && run_gemm(&q);
	tap_ok(ok && !memcmp(p.c, q.c, p.nc * sizeof(float)),
	       "a 512x2304x768 GEMM gives the same bits twice");
	problem_free(&p);
	problem_free(&q);
}

/* GEMMs with bf16 operands run on the BF16 tensor cores whatever train.matmul (bf16
 * values are exact there), with an f32 or a bf16 C: the shapes, edges and batches again,
 * and the same bits twice. */
static void check_bf16_operands(void)
{
	lt_backend_set_matmul(be, LT_MATMUL_FP32);
	for (mode = BF16; mode <= BF16_C16; mode++) {
		if (mode == BF16)
			check_model_shapes();
		check_edges();
		check_batches();
	}
	mode = BF16;
	struct problem p, q;
	int ok = problem_new(&p, 1, 0, 768, 2304, 512, 1, 0, 1.0f) && run_gemm(&p) &&
		 problem_new(&q, 1, 0, 768, 2304, 512, 1, 0, 1.0f) && run_gemm(&q);
	tap_ok(ok && !memcmp(p.c, q.c, p.nc * sizeof(float)),
	       "a 768x2304x512 BF16 GEMM (TN) gives the same bits twice");
	problem_free(&p);
	problem_free(&q);
	mode = F32;
	struct lt_device_info info;
	be->ops->info(be, &info);
	lt_backend_set_matmul(be, LT_MATMUL_TF32);
	tap_ok(strstr(info.bf16, "BF16 tensor cores") != NULL,
	       "bf16 GEMMs use the BF16 tensor cores: %s", info.bf16);
}

/* out[B*T, H*D] and lse[B, H, T] of causal grouped-query attention over
 * qkv[B*T, (H+2K)*D], in float64. */
static void attention_reference(const float *qkv, const struct lt_attn_shape *a, double *out,
				double *lse)
{
	int W = (a->H + 2 * a->K) * a->D;
	double scale = 1.0 / sqrt((double)a->D);
	double *p = malloc((size_t)a->T * sizeof *p);
	for (int b = 0; b < a->B; b++)
		for (int h = 0; h < a->H; h++)
			for (int i = 0; i < a->T; i++) {
				const float *q = qkv + ((size_t)b * a->T + i) * W + h * a->D;
				int kv = h / (a->H / a->K);
				double m = -INFINITY, l = 0;
				for (int j = 0; j <= i; j++) {
					const float *k = qkv + ((size_t)b * a->T + j) * W +
							 (a->H + kv) * a->D;
					double d = 0;
					for (int e = 0; e < a->D; e++)
						d += (double)q[e] * k[e];
					p[j] = d * scale;
					m = p[j] > m ? p[j] : m;
				}
				for (int j = 0; j <= i; j++)
					l += p[j] = exp(p[j] - m);
				double *o = out + ((size_t)b * a->T + i) * a->H * a->D + h * a->D;
				for (int e = 0; e < a->D; e++) {
					double y = 0;
					for (int j = 0; j <= i; j++)
						y += p[j] * qkv[((size_t)b * a->T + j) * W +
								(a->H + a->K + kv) * a->D + e];
					o[e] = y / l;
				}
				lse[((size_t)b * a->H + h) * a->T + i] = m + log(l);
			}
	free(p);
}

/* Worst |out - ref| (in units of the largest |v|) and |lse - ref| of one shape. */
static int attention_errors(const struct lt_attn_shape *a, double *e_out, double *e_lse)
{
	size_t W = (size_t)(a->H + 2 * a->K) * a->D, rows = (size_t)a->B * a->T;
	size_t nq = rows * W, no = rows * a->H * a->D, nl = (size_t)a->B * a->H * a->T;
	float *qkv = malloc(nq * sizeof *qkv), *out = malloc(no * sizeof *out);
	float *lse = malloc(nl * sizeof *lse);
	double *ro = malloc(no * sizeof *ro), *rl = malloc(nl * sizeof *rl);
	lt_buf *bq = NULL, *bo = NULL, *bl = NULL;
	int ok = qkv && out && lse && ro && rl && lt_buf_new(be, LT_F32, nq, &bq) == LT_OK &&
		 lt_buf_new(be, LT_F32, no, &bo) == LT_OK && lt_buf_new(be, LT_F32, nl, &bl) == LT_OK;
	if (ok) {
		fill(qkv, nq, 7u + (unsigned)a->T);
		for (size_t i = 0; i < nq; i++)
			qkv[i] *= 2.0f;  /* scores up to about +-D/8: a peaked softmax */
		be->ops->write(be, (lt_ref){ bq, 0 }, qkv, nq);
		be->ops->attention_forward(be, (lt_ref){ bo, 0 }, (lt_ref){ bl, 0 },
					   (lt_ref){ bq, 0 }, a);
		be->ops->read(be, out, (lt_ref){ bo, 0 }, no);
		be->ops->read(be, lse, (lt_ref){ bl, 0 }, nl);
		ok = be->ops->sync(be) == LT_OK;
	}
	if (ok) {
		attention_reference(qkv, a, ro, rl);
		*e_out = *e_lse = 0;
		for (size_t i = 0; i < no; i++)
			*e_out = tap_worst(*e_out, fabs(out[i] - ro[i]) / 2.0);
		for (size_t i = 0; i < nl; i++)
			*e_lse = tap_worst(*e_lse, fabs(lse[i] - rl[i]));
	}
	free_bufs((lt_buf *[]){ bq, bo, bl }, 3);
	free(qkv);
	free(out);
	free(lse);
	free(ro);
	free(rl);
	return ok;
}

/* TF32 scores are off by about 2^-10 of sum |q k| scale, which moves the
 * weights by as much; p and v round by 2^-11 each: 1e-2 of the largest
 * |v| and of the log-sum-exp leaves room, while a wrong fragment or mask
 * is off by tenths. */
#define ATTN_TOL 1e-2

static void check_attention(void)
{
	static const struct lt_attn_shape shapes[] = {
		{ .B = 2, .T = 150, .H = 4, .K = 2, .D = 64 },
		{ .B = 1, .T = 70, .H = 2, .K = 1, .D = 128 },
		{ .B = 3, .T = 33, .H = 3, .K = 3, .D = 32 },
		{ .B = 1, .T = 1, .H = 2, .K = 2, .D = 64 },
		{ .B = 1, .T = 200, .H = 6, .K = 2, .D = 48 },
	};
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const struct lt_attn_shape *a = &shapes[i];
		double eo = INFINITY, el = INFINITY;
		int ok = attention_errors(a, &eo, &el);
		tap_ok(ok && eo <= ATTN_TOL && el <= ATTN_TOL,
		       "attention forward B=%d T=%d H=%d K=%d D=%d: out off by %.2e of max |v|, "
		       "lse by %.2e (<= %g)%s%s", a->B, a->T, a->H, a->K, a->D, eo, el, ATTN_TOL,
		       ok ? "" : ": ", ok ? "" : lt_errmsg());
	}
}

/* dqkv of attention over random qkv and dout on backend b (forward, then backward). */
static int attention_gradient(lt_backend *b, const struct lt_attn_shape *a, const float *qkv,
			      const float *dout, float *dqkv)
{
	size_t W = (size_t)(a->H + 2 * a->K) * a->D, rows = (size_t)a->B * a->T;
	size_t nq = rows * W, no = rows * a->H * a->D, nl = (size_t)a->B * a->H * a->T;
	lt_buf *bq = NULL, *bo = NULL, *bl = NULL, *bd = NULL, *bg = NULL;
	int ok = lt_buf_new(b, LT_F32, nq, &bq) == LT_OK && lt_buf_new(b, LT_F32, no, &bo) == LT_OK &&
		 lt_buf_new(b, LT_F32, nl, &bl) == LT_OK && lt_buf_new(b, LT_F32, no, &bd) == LT_OK &&
		 lt_buf_new(b, LT_F32, nq, &bg) == LT_OK;
	if (ok) {
		lt_ref q = { bq, 0 }, o = { bo, 0 }, l = { bl, 0 }, d = { bd, 0 }, gr = { bg, 0 };
		b->ops->write(b, q, qkv, nq);
		b->ops->write(b, d, dout, no);
		b->ops->attention_forward(b, o, l, q, a);
		b->ops->attention_backward(b, gr, d, o, l, q, a);
		b->ops->read(b, dqkv, gr, nq);
		ok = b->ops->sync(b) == LT_OK;
	}
	lt_backend *keep = be;
	be = b;
	free_bufs((lt_buf *[]){ bq, bo, bl, bd, bg }, 5);
	be = keep;
	return ok;
}

/* The tensor-core backward against the CPU backend's (itself held to float64 and finite
 * differences by test_ops): the relative L2 error of dqkv, and the worst element against
 * the largest, within the TF32 tolerance of the forward. */
static void check_attention_backward(void)
{
	static const struct lt_attn_shape shapes[] = {
		{ .B = 2, .T = 150, .H = 4, .K = 2, .D = 64 },
		{ .B = 3, .T = 33, .H = 3, .K = 3, .D = 32 },
		{ .B = 1, .T = 200, .H = 6, .K = 2, .D = 48 },
		{ .B = 1, .T = 70, .H = 2, .K = 1, .D = 128 },
	};
	lt_backend *cpu = NULL;
	int have_cpu = lt_backend_new("cpu", 0, &cpu) == LT_OK;
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const struct lt_attn_shape *a = &shapes[i];
		size_t W = (size_t)(a->H + 2 * a->K) * a->D, rows = (size_t)a->B * a->T;
		size_t nq = rows * W, no = rows * a->H * a->D;
		float *qkv = malloc(nq * sizeof *qkv), *dout = malloc(no * sizeof *dout);
		float *got = malloc(nq * sizeof *got), *want = malloc(nq * sizeof *want);
		double num = 0, den = 0, worst = 0, top = 0;
		int ok = have_cpu && qkv && dout && got && want;
		if (ok) {
			fill(qkv, nq, 11u + (unsigned)a->T);
			fill(dout, no, 13u + (unsigned)a->D);
			ok = attention_gradient(be, a, qkv, dout, got) &&
			     attention_gradient(cpu, a, qkv, dout, want);
		}
		for (size_t j = 0; ok && j < nq; j++) {
			double e = fabs((double)got[j] - want[j]);
			num += e * e;
			den += (double)want[j] * want[j];
			worst = tap_worst(worst, e);
			top = fabs(want[j]) > top ? fabs(want[j]) : top;
		}
		double rel = ok ? sqrt(num / den) : INFINITY, peak = ok ? worst / top : INFINITY;
		tap_ok(ok && rel <= ATTN_TOL && peak <= ATTN_TOL,
		       "attention backward B=%d T=%d H=%d K=%d D=%d against the CPU's: dqkv off by "
		       "rel L2 %.2e, worst element %.2e of the largest (<= %g)%s%s", a->B, a->T,
		       a->H, a->K, a->D, rel, peak, ATTN_TOL, ok ? "" : ": ", ok ? "" : lt_errmsg());
		free(qkv);
		free(dout);
		free(got);
		free(want);
	}
	if (cpu)
		lt_backend_free(cpu);
}

int main(void)
{
	struct lt_device_info info;
	if (lt_backend_new("opencl", 0, &be) != LT_OK)
		tap_skip_all("no OpenCL device: %s", lt_errmsg());
	lt_backend_set_matmul(be, LT_MATMUL_TF32);
	be->ops->info(be, &info);
	if (strncmp(info.gemm, "TF32 tensor cores", 17)) {
		char why[512];
		snprintf(why, sizeof why, "the TF32 tensor-core GEMM needs an NVIDIA device of compute "
			 "capability 8.0 or later; %s computes GEMMs with %s", info.name, info.gemm);
		lt_backend_free(be);
		tap_skip_all("%s", why);
	}
	tap_diag("%s: %s", info.name, info.gemm);
	/* Where wgmma takes bf16 operands (LLTRAIN_GEMM_WGMMA=1), the mma.sync kernel is
	 * checked a second time with it turned off. */
	int wgmma = strstr(info.bf16, "wgmma") != NULL;
	tap_plan(3 + 8 + 2 + 1 + 1 + (3 + 8 + 2 + 8 + 2 + 1 + 1) * (1 + wgmma) + 5 + 4);
	check_model_shapes();
	check_edges();
	check_batches();
	check_rounding();
	check_repeat();
	check_bf16_operands();
	if (wgmma) {
		tap_diag("bf16 operands again with LLTRAIN_GEMM_WGMMA=0 (mma.sync)");
		setenv("LLTRAIN_GEMM_WGMMA", "0", 1);
		check_bf16_operands();
		unsetenv("LLTRAIN_GEMM_WGMMA");
	}
	check_attention();
	check_attention_backward();
	be->ops->info(be, &info);
	tap_diag("after the search: %s; attention: %s", info.gemm, info.attention);
	lt_backend_free(be);
	return tap_done();
}
