/* Op tests: each backend op against float64 references proven by finite
 * differences, in f32 and in bf16 (every argument that may be bf16 is). */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "op_harness.h"
#include "tap.h"

/* Tolerances (op_harness.h): OH_TOL for an op against its float64
 * reference, OH_BF16_TOL(k) in the bf16 mode for a result that goes
 * through k roundings to bf16. That mode's inputs are bf16 values, and the
 * references read those same values, so what is left is f32 arithmetic
 * and the roundings of results; each check says its k:
 *   0: copies, sum and sum_squares, and the f32 statistics and gradients
 *      (rstd, lse, losses, embedding_backward's dtable, rmsnorm's dw);
 *   1: everything stored once in bf16 -- fill, scale, add, gemm's C,
 *      rmsnorm out and dinp (+=: read, add in f32, round once), rope,
 *      attention out, swiglu, xent's in-place gradient, attention_cached;
 *   2: attention_backward's dqkv, which also reads out rounded to bf16
 *      (through rowsum(dout * out)).
 * A backend against the CPU in the bf16 mode: each is within the largest
 * of these of the reference, so the two within twice it. */
#define BF16_TWIN_TOL (2 * OH_BF16_TOL(2))

/* The number of checks each part makes; tap_done catches a mismatch. Op
 * groups make GROUP_CHECKS in f32; in bf16 all but adamw run (every
 * argument of adamw is f32), with BF16_EXTRA_CHECKS more on mixed types
 * and on results that must be the f32 result rounded, bitwise. */
#define REFERENCE_CHECKS (6 + 2 * ATTN_CONFIGS)
#define GROUP_CHECKS (66 + 9 * (ATTN_CONFIGS + CACHED_CONFIGS))
#define ADAMW_CHECKS 5
#define BF16_EXTRA_CHECKS 5
#define GROUP_CHECKS_BF16 (GROUP_CHECKS - ADAMW_CHECKS + BF16_EXTRA_CHECKS)
#define ATTN_CONFIGS 4

/* Odd sizes, so that no vector width or tile size divides them. */
enum { N_ = 37, C_ = 45, F_ = 29, V_ = 101, ELEMS = 1001 };

static const struct lt_attn_shape attn_configs[ATTN_CONFIGS] = {
	{ .B = 3, .T = 13, .H = 6, .K = 2, .D = 10 },
	{ .B = 2, .T = 11, .H = 6, .K = 6, .D = 6 },
	{ .B = 2, .T = 9, .H = 6, .K = 3, .D = 10 },
	/* more rows than an OpenCL tile (64), grouped heads, float4 rows */
	{ .B = 1, .T = 70, .H = 2, .K = 1, .D = 8 },
};

#define ROPE_THETA 10000.0
#define NORM_EPS 1e-5f

/* ------------------------------------------------------------------ */
/* Host helpers: random inputs, roundings, sums; the end of an op group. */

static double *random_doubles(struct oh_rng *r, size_t n, float lo, float hi)
{
	float *f = oh_random_values(r, n, lo, hi, LT_F32);
	double *d = oh_widened(f, n);
	free(f);
	return d;
}

static float *rounded(const double *x, size_t n)
{
	float *y = oh_floats(n);
	for (size_t i = 0; i < n; i++)
		y[i] = (float)x[i];
	return y;
}

/* x[n] made values of type t: rounded to bf16 (to nearest even) for
 * LT_BF16, as they are for F32. */
static void round_to(float *x, size_t n, enum lt_dtype t)
{
	if (t == LT_BF16)
		for (size_t i = 0; i < n; i++)
			x[i] = lt_bf16_to_f32(lt_bf16_from_f32(x[i]));
}

static double dot(const double *a, const double *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static int same_bits(const void *a, const void *b, size_t n_elems)
{
	return memcmp(a, b, n_elems * 4) == 0;
}

/* The tolerance of attention's f32 log-sum-exps: OH_TOL, or where bf16 attention runs on TF32
 * tensor cores (an NVIDIA device, backend.h's exception), one rounding of the scaled
 * queries to TF32, 2^-11, besides. */
static double lse_tolerance(lt_backend *be, enum lt_dtype t)
{
	struct lt_device_info info;
	be->ops->info(be, &info);
	if (t == LT_BF16 && strstr(info.bf16, "attention on the TF32 tensor cores"))
		return 0x1p-11 + OH_TOL;
	return OH_TOL;
}

/* Ends an op group: two checks (sync is ok, no write strayed outside an
 * array), then frees the group's arrays. name: the backend and mode. */
static void check_sync_and_guards_then_free(struct oh_arrays *a, const char *name,
					    const char *group)
{
	enum lt_status st = a->be->ops->sync(a->be);
	tap_ok(st == LT_OK, "%s %s: sync returns ok (got %s%s%s)", name, group,
	       lt_status_str(st), st == LT_OK ? "" : ": ", st == LT_OK ? "" : lt_errmsg());
	tap_ok(oh_guards_intact(a), "%s %s: sentinels around every array intact", name, group);
	oh_arrays_free(a);
}

/* ------------------------------------------------------------------ */
/* float64 references. */

/* For each b < g->batch, over i < m, j < n:
 *   c[b][i*ldc + j] = alpha * sum_p opA[i][p] * opB[p][j] + beta * c[b][i*ldc + j]
 * with opA[i][p] = a[b][i*lda + p], or a[b][p*lda + i] when trans_a (b likewise),
 * X[b] = X + b * stride_x; beta == 0 ignores c. Other elements of c are untouched. */
static void reference_gemm(const struct lt_gemm *g, const double *a, const double *b, double *c)
{
	for (int bt = 0; bt < g->batch; bt++) {
		const double *ab = a + bt * g->stride_a, *bb = b + bt * g->stride_b;
		double *cb = c + bt * g->stride_c;
		for (long i = 0; i < g->m; i++)
			for (long j = 0; j < g->n; j++) {
				double s = 0;
				for (long p = 0; p < g->k; p++) {
					double x = g->trans_a ? ab[p * g->lda + i] : ab[i * g->lda + p];
					double y = g->trans_b ? bb[j * g->ldb + p] : bb[p * g->ldb + j];
					s += x * y;
				}
				double *cij = &cb[(long)i * g->ldc + j];
				*cij = (double)g->alpha * s + (g->beta == 0 ? 0 : (double)g->beta * *cij);
			}
	}
}

/* inp[N,C], w[C] -> rstd[N] = 1/sqrt(mean(inp[n,:]^2) + eps), out[N,C] = inp * rstd[n] * w[c] */
static void reference_rmsnorm_forward(double *out, double *rstd, const double *inp, const double *w,
				      int N, int C, double eps)
{
	for (int n = 0; n < N; n++) {
		const double *x = inp + (size_t)n * C;
		double r = 1 / sqrt(dot(x, x, C) / C + eps);
		rstd[n] = r;
		for (int c = 0; c < C; c++)
			out[(size_t)n * C + c] = x[c] * r * w[c];
	}
}

/* dout[N,C], inp[N,C], w[C], rstd[N] -> dinp[N,C] += dL/dinp, dw[C] += dL/dw */
static void reference_rmsnorm_backward(double *dinp, double *dw, const double *dout, const double *inp,
				       const double *w, const double *rstd, int N, int C)
{
	for (int n = 0; n < N; n++) {
		const double *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
		double r = rstd[n], s = 0;
		for (int c = 0; c < C; c++)
			s += dy[c] * w[c] * x[c];
		for (int c = 0; c < C; c++) {
			dinp[(size_t)n * C + c] += r * w[c] * dy[c] - r * r * r / C * x[c] * s;
			dw[c] += dy[c] * x[c] * r;
		}
	}
}

/* qkv[B*T, (H+2K)*D], inv_freq[D/2]: rotates the H query and K key heads of
 * row n in place by angle (pos0 + n % T) * inv_freq[i] on pairs (i, i + D/2);
 * inverse != 0 rotates by minus that angle. Value heads are untouched. */
static void reference_rope(double *qkv, const double *inv_freq, const struct lt_attn_shape *s, int inverse)
{
	int W = (s->H + 2 * s->K) * s->D, half = s->D / 2;
	for (int n = 0; n < s->B * s->T; n++)
		for (int h = 0; h < s->H + s->K; h++) {
			double *x = qkv + (size_t)n * W + (size_t)h * s->D;
			for (int i = 0; i < half; i++) {
				double a = (s->pos0 + n % s->T) * inv_freq[i] * (inverse ? -1 : 1);
				double x1 = x[i], x2 = x[i + half];
				x[i] = x1 * cos(a) - x2 * sin(a);
				x[i + half] = x2 * cos(a) + x1 * sin(a);
			}
		}
}

/* The scaled causal scores of query (b, t, head h) against keys 0..t of its
 * kv head, as probabilities p[t+1]; returns the log-sum-exp. */
static double reference_attention_row(double *p, const double *qkv, const struct lt_attn_shape *s, int b,
				      int t, int h)
{
	int W = (s->H + 2 * s->K) * s->D, kvh = h / (s->H / s->K);
	const double *q = qkv + (size_t)(b * s->T + t) * W + (size_t)h * s->D;
	double scale = 1 / sqrt((double)s->D), mx = -INFINITY, sum = 0;
	for (int j = 0; j <= t; j++) {
		const double *k = qkv + (size_t)(b * s->T + j) * W + (size_t)(s->H + kvh) * s->D;
		p[j] = dot(q, k, s->D) * scale;
		mx = fmax(mx, p[j]);
	}
	for (int j = 0; j <= t; j++)
		sum += exp(p[j] - mx);
	double lse = mx + log(sum);
	for (int j = 0; j <= t; j++)
		p[j] = exp(p[j] - lse);
	return lse;
}

/* qkv[B*T, (H+2K)*D] -> out[B*T, H*D], lse[B, H, T]: causal softmax
 * attention, scale 1/sqrt(D), query head h reading kv head h / (H/K). */
static void reference_attention_forward(double *out, double *lse, const double *qkv,
					const struct lt_attn_shape *s)
{
	int W = (s->H + 2 * s->K) * s->D, D = s->D;
	double *p = oh_doubles(s->T);
	for (int b = 0; b < s->B; b++)
		for (int h = 0; h < s->H; h++)
			for (int t = 0; t < s->T; t++) {
				int kvh = h / (s->H / s->K);
				size_t row = (size_t)(b * s->H + h) * s->T + t;
				lse[row] = reference_attention_row(p, qkv, s, b, t, h);
				double *o = out + (size_t)(b * s->T + t) * s->H * D + (size_t)h * D;
				for (int d = 0; d < D; d++)
					o[d] = 0;
				for (int j = 0; j <= t; j++) {
					const double *v = qkv + (size_t)(b * s->T + j) * W +
							  (size_t)(s->H + s->K + kvh) * D;
					for (int d = 0; d < D; d++)
						o[d] += p[j] * v[d];
				}
			}
	free(p);
}

/* dout[B*T, H*D], qkv[B*T, (H+2K)*D] -> dqkv[B*T, (H+2K)*D] = dL/dqkv of the
 * attention above (overwritten) */
static void reference_attention_backward(double *dqkv, const double *dout, const double *qkv,
					 const struct lt_attn_shape *s)
{
	int W = (s->H + 2 * s->K) * s->D, D = s->D;
	double scale = 1 / sqrt((double)D);
	double *p = oh_doubles(s->T), *dp = oh_doubles(s->T);
	memset(dqkv, 0, (size_t)s->B * s->T * W * sizeof(double));
	for (int b = 0; b < s->B; b++)
		for (int h = 0; h < s->H; h++)
			for (int t = 0; t < s->T; t++) {
				int kvh = h / (s->H / s->K);
				size_t qrow = (size_t)(b * s->T + t) * W;
				const double *q = qkv + qrow + (size_t)h * D;
				const double *dy = dout + (size_t)(b * s->T + t) * s->H * D + (size_t)h * D;
				double *dq = dqkv + qrow + (size_t)h * D, delta = 0;
				reference_attention_row(p, qkv, s, b, t, h);
				for (int j = 0; j <= t; j++) {
					size_t row = (size_t)(b * s->T + j) * W;
					dp[j] = dot(dy, qkv + row + (size_t)(s->H + s->K + kvh) * D, D);
					delta += p[j] * dp[j];
				}
				for (int j = 0; j <= t; j++) {
					size_t row = (size_t)(b * s->T + j) * W;
					const double *k = qkv + row + (size_t)(s->H + kvh) * D;
					double *dk = dqkv + row + (size_t)(s->H + kvh) * D;
					double *dv = dqkv + row + (size_t)(s->H + s->K + kvh) * D;
					double ds = p[j] * (dp[j] - delta) * scale;
					for (int d = 0; d < D; d++) {
						dq[d] += ds * k[d];
						dk[d] += ds * q[d];
						dv[d] += p[j] * dy[d];
					}
				}
			}
	free(p);
	free(dp);
}

/* The key (kind 0) or value (kind 1) of kv head kvh at position j of
 * sequence b when decoding: cached[B, K, S, D] before pos0, else the new
 * row j - pos0 of qkv[B*T, (H+2K)*D]. */
static const double *reference_cached_row(const double *cached, const double *qkv, int S,
					  const struct lt_attn_shape *s, int b, int kvh, int j,
					  int kind)
{
	if (j < s->pos0)
		return cached + (((size_t)b * s->K + kvh) * S + j) * s->D;
	size_t row = (size_t)b * s->T + (j - s->pos0);
	return qkv + row * (size_t)(s->H + 2 * s->K) * s->D + (size_t)(s->H + kind * s->K + kvh) * s->D;
}

/* qkv[B*T, (H+2K)*D] new rows at positions pos0.., kc and vc[B, K, S, D]
 * holding positions 0..pos0-1 -> out[B*T, H*D]: causal attention of each
 * new query over positions 0 .. pos0 + t, scale 1/sqrt(D). */
static void reference_attention_cached(double *out, const double *qkv, const double *kc,
				       const double *vc, int S, const struct lt_attn_shape *s)
{
	int D = s->D, L = s->pos0 + s->T;
	double scale = 1 / sqrt((double)D), *p = oh_doubles(L);
	for (int b = 0; b < s->B; b++)
		for (int h = 0; h < s->H; h++)
			for (int t = 0; t < s->T; t++) {
				int kvh = h / (s->H / s->K), last = s->pos0 + t;
				const double *q = qkv + ((size_t)b * s->T + t) * (size_t)(s->H + 2 * s->K) * s->D +
						  (size_t)h * D;
				double mx = -INFINITY, sum = 0;
				for (int j = 0; j <= last; j++) {
					const double *k = reference_cached_row(kc, qkv, S, s, b, kvh, j, 0);
					p[j] = dot(q, k, D) * scale;
					mx = fmax(mx, p[j]);
				}
				for (int j = 0; j <= last; j++)
					sum += (p[j] = exp(p[j] - mx));
				double *o = out + ((size_t)b * s->T + t) * s->H * D + (size_t)h * D;
				for (int d = 0; d < D; d++)
					o[d] = 0;
				for (int j = 0; j <= last; j++) {
					const double *v = reference_cached_row(vc, qkv, S, s, b, kvh, j, 1);
					for (int d = 0; d < D; d++)
						o[d] += p[j] / sum * v[d];
				}
			}
	free(p);
}

static double sigmoid(double x)
{
	return 1 / (1 + exp(-x));
}

/* h[N, 2F] (gate | up) -> out[N, F] = silu(gate) * up */
static void reference_swiglu_forward(double *out, const double *h, int N, int F)
{
	for (int n = 0; n < N; n++)
		for (int f = 0; f < F; f++) {
			double g = h[(size_t)n * 2 * F + f], u = h[(size_t)n * 2 * F + F + f];
			out[(size_t)n * F + f] = g * sigmoid(g) * u;
		}
}

/* dout[N, F], h[N, 2F] -> dh[N, 2F] = dL/dh (overwritten) */
static void reference_swiglu_backward(double *dh, const double *dout, const double *h, int N, int F)
{
	for (int n = 0; n < N; n++)
		for (int f = 0; f < F; f++) {
			double g = h[(size_t)n * 2 * F + f], u = h[(size_t)n * 2 * F + F + f];
			double sg = sigmoid(g), dy = dout[(size_t)n * F + f];
			dh[(size_t)n * 2 * F + f] = dy * u * sg * (1 + g * (1 - sg));
			dh[(size_t)n * 2 * F + F + f] = dy * g * sg;
		}
}

/* The distillation loss (backend.h's distill) in float64: losses[n] as
 * xent's, kl[n] = T^2 KL(softmax(teacher / T) || softmax(logits / T)), both
 * 0 for an ignored target; grad[N,V] (if not NULL) = grad_scale * (alpha
 * (softmax - onehot) + (1 - alpha) T (softmax(logits / T) - softmax(teacher
 * / T))), zero rows for ignored targets. Written from the definitions
 * (log-softmaxes), not from the backends' sums. */
static void reference_distill(double *losses, double *kl, double *grad, const double *logits,
			      const double *teacher, const int32_t *targets, int N, int V,
			      double alpha, double T, double grad_scale)
{
	oh_ref_xent(losses, grad, logits, targets, N, V, grad_scale * alpha);
	for (int n = 0; n < N; n++) {
		const double *z = logits + (size_t)n * V, *y = teacher + (size_t)n * V;
		double zm = -INFINITY, ym = -INFINITY, zs = 0, ys = 0, sum = 0;
		for (int v = 0; v < V; v++) {
			zm = fmax(zm, z[v] / T);
			ym = fmax(ym, y[v] / T);
		}
		for (int v = 0; v < V; v++) {
			zs += exp(z[v] / T - zm);
			ys += exp(y[v] / T - ym);
		}
		for (int v = 0; v < V; v++) {
			double logp = y[v] / T - ym - log(ys), logq = z[v] / T - zm - log(zs);
			sum += exp(logp) * (logp - logq);
			if (grad && targets[n] >= 0)
				grad[(size_t)n * V + v] += grad_scale * (1 - alpha) * T *
							   (exp(logq) - exp(logp));
		}
		kl[n] = targets[n] < 0 ? 0 : T * T * sum;
	}
}

/* One AdamW step (struct lt_adamw) over p[n], m[n], v[n] with grad[n]. */
static void reference_adamw(double *p, double *m, double *v, const double *grad, size_t n,
			    const struct lt_adamw *hp)
{
	double b1 = hp->beta1, b2 = hp->beta2;
	double c1 = 1 - pow(b1, hp->step), c2 = 1 - pow(b2, hp->step);
	for (size_t i = 0; i < n; i++) {
		double g = grad[i] * (double)hp->grad_scale;
		m[i] = b1 * m[i] + (1 - b1) * g;
		v[i] = b2 * v[i] + (1 - b2) * g * g;
		double mhat = m[i] / c1, vhat = v[i] / c2;
		p[i] -= (double)hp->lr * (mhat / (sqrt(vhat) + (double)hp->eps) +
					  (double)hp->weight_decay * p[i]);
	}
}

static float *rope_inv_freq(int D)
{
	float *f = oh_floats(D / 2);
	for (int i = 0; i < D / 2; i++)
		f[i] = (float)pow(ROPE_THETA, -2.0 * i / D);
	return f;
}

static size_t qkv_width(const struct lt_attn_shape *s)
{
	return (size_t)(s->H + 2 * s->K) * s->D;
}

static void describe(char *dst, size_t cap, const struct lt_attn_shape *s)
{
	snprintf(dst, cap, "B=%d T=%d H=%d K=%d D=%d", s->B, s->T, s->H, s->K, s->D);
}

/* ------------------------------------------------------------------ */
/* The references' backward passes against central differences of their
 * forward passes, each through a random projection L = sum(proj * out). */

struct rmsnorm_problem {
	int N, C;
	double eps;
	double *inp, *w, *proj, *out, *rstd;
};

static double rmsnorm_projected_loss(void *ctx)
{
	struct rmsnorm_problem *p = ctx;
	reference_rmsnorm_forward(p->out, p->rstd, p->inp, p->w, p->N, p->C, p->eps);
	return dot(p->proj, p->out, (size_t)p->N * p->C);
}

static void prove_rmsnorm_reference(struct oh_rng *r)
{
	int N = N_, C = C_;
	size_t NC = (size_t)N * C;
	struct rmsnorm_problem p = { .N = N, .C = C, .eps = NORM_EPS,
		.inp = random_doubles(r, NC, -2, 2), .w = random_doubles(r, C, -1.5f, 1.5f),
		.proj = random_doubles(r, NC, -1, 1), .out = oh_doubles(NC),
		.rstd = oh_doubles(N) };
	double *dinp = oh_doubles(NC), *dw = oh_doubles(C);
	rmsnorm_projected_loss(&p);
	reference_rmsnorm_backward(dinp, dw, p.proj, p.inp, p.w, p.rstd, N, C);
	oh_check_gradient(p.inp, dinp, NC, rmsnorm_projected_loss, &p,
			  "rmsnorm_backward dinp N=%d C=%d", N, C);
	oh_check_gradient(p.w, dw, C, rmsnorm_projected_loss, &p, "rmsnorm_backward dw N=%d C=%d",
			  N, C);
	free(p.inp); free(p.w); free(p.proj); free(p.out); free(p.rstd);
	free(dinp); free(dw);
}

struct rope_problem {
	const struct lt_attn_shape *s;
	const double *inv_freq;
	double *qkv, *proj, *out;
};

static double rope_projected_loss(void *ctx)
{
	struct rope_problem *p = ctx;
	size_t n = (size_t)p->s->B * p->s->T * qkv_width(p->s);
	memcpy(p->out, p->qkv, n * sizeof(double));
	reference_rope(p->out, p->inv_freq, p->s, 0);
	return dot(p->proj, p->out, n);
}

static void prove_rope_reference(struct oh_rng *r, const struct lt_attn_shape *s)
{
	size_t n = (size_t)s->B * s->T * qkv_width(s);
	float *f = rope_inv_freq(s->D);
	double *inv_freq = oh_widened(f, s->D / 2);
	struct rope_problem p = { .s = s, .inv_freq = inv_freq, .qkv = random_doubles(r, n, -1, 1),
		.proj = random_doubles(r, n, -1, 1), .out = oh_doubles(n) };
	double *analytic = oh_doubles(n);
	char shape[96];
	memcpy(analytic, p.proj, n * sizeof(double));
	reference_rope(analytic, inv_freq, s, 1);
	describe(shape, sizeof shape, s);
	oh_check_gradient(p.qkv, analytic, n, rope_projected_loss, &p,
			  "rope backward (inverse rotation) %s", shape);
	free(f); free(inv_freq); free(p.qkv); free(p.proj); free(p.out); free(analytic);
}

struct attention_problem {
	const struct lt_attn_shape *s;
	double *qkv, *proj, *out, *lse;
};

static double attention_projected_loss(void *ctx)
{
	struct attention_problem *p = ctx;
	reference_attention_forward(p->out, p->lse, p->qkv, p->s);
	return dot(p->proj, p->out, (size_t)p->s->B * p->s->T * p->s->H * p->s->D);
}

static void prove_attention_reference(struct oh_rng *r, const struct lt_attn_shape *s)
{
	size_t rows = (size_t)s->B * s->T, n = rows * qkv_width(s), nout = rows * s->H * s->D;
	struct attention_problem p = { .s = s, .qkv = random_doubles(r, n, -2, 2),
		.proj = random_doubles(r, nout, -1, 1), .out = oh_doubles(nout),
		.lse = oh_doubles((size_t)s->B * s->H * s->T) };
	double *analytic = oh_doubles(n);
	char shape[96];
	reference_attention_backward(analytic, p.proj, p.qkv, s);
	describe(shape, sizeof shape, s);
	oh_check_gradient(p.qkv, analytic, n, attention_projected_loss, &p,
			  "attention_backward dqkv %s", shape);
	free(p.qkv); free(p.proj); free(p.out); free(p.lse); free(analytic);
}

struct swiglu_problem {
	int N, F;
	double *h, *proj, *out;
};

static double swiglu_projected_loss(void *ctx)
{
	struct swiglu_problem *p = ctx;
	reference_swiglu_forward(p->out, p->h, p->N, p->F);
	return dot(p->proj, p->out, (size_t)p->N * p->F);
}

static void prove_swiglu_reference(struct oh_rng *r)
{
	int N = N_, F = F_;
	size_t nh = (size_t)N * 2 * F;
	struct swiglu_problem p = { .N = N, .F = F, .h = random_doubles(r, nh, -4, 4),
		.proj = random_doubles(r, (size_t)N * F, -1, 1), .out = oh_doubles((size_t)N * F) };
	double *analytic = oh_doubles(nh);
	reference_swiglu_backward(analytic, p.proj, p.h, N, F);
	oh_check_gradient(p.h, analytic, nh, swiglu_projected_loss, &p,
			  "swiglu_backward dh N=%d F=%d", N, F);
	free(p.h); free(p.proj); free(p.out); free(analytic);
}

struct distill_problem {
	int N, V;
	double alpha, T, grad_scale;
	const int32_t *targets;
	double *logits, *teacher, *losses, *kl;
};

/* L = grad_scale * sum of (alpha losses + (1 - alpha) kl), whose gradient
 * distill writes */
static double distill_scaled_loss(void *ctx)
{
	struct distill_problem *p = ctx;
	double s = 0;
	reference_distill(p->losses, p->kl, NULL, p->logits, p->teacher, p->targets, p->N, p->V,
			  p->alpha, p->T, 0);
	for (int n = 0; n < p->N; n++)
		s += p->alpha * p->losses[n] + (1 - p->alpha) * p->kl[n];
	return p->grad_scale * s;
}

static void prove_distill_reference(struct oh_rng *r)
{
	int N = 9, V = V_;
	int32_t targets[9] = { 0, 17, -1, V_ - 1, 42, 42, -100, 3, 88 };
	size_t nl = (size_t)N * V;
	struct distill_problem p = { .N = N, .V = V, .alpha = 0.3, .T = 2.5, .grad_scale = 0.7,
		.targets = targets, .logits = random_doubles(r, nl, -4, 4),
		.teacher = random_doubles(r, nl, -6, 6), .losses = oh_doubles(N),
		.kl = oh_doubles(N) };
	double *analytic = oh_doubles(nl);
	reference_distill(p.losses, p.kl, analytic, p.logits, p.teacher, targets, N, V, p.alpha,
			  p.T, p.grad_scale);
	oh_check_gradient(p.logits, analytic, nl, distill_scaled_loss, &p,
			  "distill gradient N=%d V=%d alpha=0.3 T=2.5 grad_scale=0.7 (ignored "
			  "targets)", N, V);
	free(p.logits); free(p.teacher); free(p.losses); free(p.kl); free(analytic);
}

static void prove_references(void)
{
	struct oh_rng r = { .s = 20240611 };
	const int32_t tokens[9] = { 3, 0, 3, 10, 5, 3, 0, 7, 10 };
	oh_prove_embedding(&r, tokens, "embedding_backward dtable N=%d C=%d V=%d (repeated tokens)",
			   9, 7, 11);
	prove_rmsnorm_reference(&r);
	for (int i = 0; i < ATTN_CONFIGS; i++)
		prove_rope_reference(&r, &attn_configs[i]);
	for (int i = 0; i < ATTN_CONFIGS; i++)
		prove_attention_reference(&r, &attn_configs[i]);
	prove_swiglu_reference(&r);
	oh_prove_xent(&r, V_, "xent gradient N=%d V=%d grad_scale=0.3 (ignored targets)", 9, V_);
	prove_distill_reference(&r);
}

/* ------------------------------------------------------------------ */
/* The backend's ops against the references. */

/* Whether got[n] holds, bitwise, want[n] rounded to bf16 (widened). */
static int equals_rounded(const float *got, const float *want, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float w = lt_bf16_to_f32(lt_bf16_from_f32(want[i]));
		if (memcmp(&got[i], &w, sizeof w) != 0)
			return 0;
	}
	return 1;
}

/* bf16 only: scale and add (also in place) give their f32 results rounded
 * once, bitwise; add with mixed types (y f32 from bf16 a and b, exact; y
 * bf16 from f32 a and bf16 b, rounded once): 2 checks */
static void check_bf16_elementwise_bits(struct oh_arrays *a, struct oh_rng *r, const float *x,
					const float *y, lt_ref ax, lt_ref by, const char *name)
{
	lt_backend *be = a->be;
	const size_t n = ELEMS;
	float *want = oh_floats(n), *xf = oh_random_values(r, n, -1, 1.2f, LT_F32);
	lt_ref sx = oh_values(a, LT_BF16, x, n), ya = oh_values(a, LT_BF16, x, n);
	lt_ref sum = oh_array(a, LT_BF16, n);
	be->ops->scale(be, sx, n, -1.7f);
	be->ops->add(be, sum, ax, by, n);
	be->ops->add(be, ya, ya, by, n);
	float *got_s = oh_read_floats(a, sx, n), *got_sum = oh_read_floats(a, sum, n);
	float *got_in = oh_read_floats(a, ya, n);
	int ok = 1;
	for (size_t i = 0; i < n; i++)
		want[i] = x[i] * -1.7f;
	ok &= equals_rounded(got_s, want, n);
	for (size_t i = 0; i < n; i++)
		want[i] = x[i] + y[i];
	ok &= equals_rounded(got_sum, want, n) && equals_rounded(got_in, want, n);
	tap_ok(ok, "%s scale, add and add in place give the f32 result of the widened inputs "
	       "rounded once, bitwise (n=%zu)", name, n);

	lt_ref y32 = oh_array(a, LT_F32, n), af = oh_values(a, LT_F32, xf, n);
	lt_ref y16 = oh_array(a, LT_BF16, n);
	be->ops->add(be, y32, ax, by, n);
	be->ops->add(be, y16, af, by, n);
	float *got32 = oh_read_floats(a, y32, n), *got16 = oh_read_floats(a, y16, n);
	ok = same_bits(got32, want, n);
	for (size_t i = 0; i < n; i++)
		want[i] = xf[i] + y[i];
	ok &= equals_rounded(got16, want, n);
	tap_ok(ok, "%s add with mixed types: f32 y = bf16 a + bf16 b exactly, bf16 y = f32 a + bf16 b "
	       "rounded once, bitwise (n=%zu)", name, n);
	free(want); free(xf); free(got_s); free(got_sum); free(got_in); free(got32); free(got16);
}

/* fill, copy, scale, add (also in place), sum_squares, sum: 9 checks, and
 * 2 more in bf16 */
static void test_elementwise_ops(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	lt_backend *be = a->be;
	const char *name = a->name;
	const size_t n = ELEMS;
	float *x = oh_random_values(r, n, -1, 1.2f, t), *y = oh_random_values(r, n, -1.5f, 1, t);
	double *want = oh_doubles(n);
	float *got;

	lt_ref dx = oh_array(a, t, n);
	be->ops->fill(be, dx, n, 0.37f);
	got = oh_read_floats(a, dx, n);
	for (size_t i = 0; i < n; i++)
		want[i] = 0.37f;
	oh_check_close(oh_tol(t, 1), got, want, n, "%s fill n=%zu", name, n);
	free(got);

	lt_ref src = oh_values(a, t, x, n), dst = oh_array(a, t, n);
	be->ops->copy(be, dst, src, n);
	got = oh_read_floats(a, dst, n);
	for (size_t i = 0; i < n; i++)
		want[i] = x[i];
	oh_check_close(oh_tol(t, 0), got, want, n, "%s copy n=%zu", name, n);
	free(got);

	lt_ref sx = oh_values(a, t, x, n);
	be->ops->scale(be, sx, n, -1.7f);
	got = oh_read_floats(a, sx, n);
	for (size_t i = 0; i < n; i++)
		want[i] = (double)x[i] * -1.7f;
	oh_check_close(oh_tol(t, 1), got, want, n, "%s scale n=%zu s=-1.7", name, n);
	free(got);

	lt_ref ax = oh_values(a, t, x, n), by = oh_values(a, t, y, n);
	lt_ref sum = oh_array(a, t, n);
	be->ops->add(be, sum, ax, by, n);
	got = oh_read_floats(a, sum, n);
	for (size_t i = 0; i < n; i++)
		want[i] = (double)x[i] + y[i];
	oh_check_close(oh_tol(t, 1), got, want, n, "%s add n=%zu", name, n);
	free(got);

	lt_ref ya = oh_values(a, t, x, n), yb = oh_values(a, t, y, n);
	be->ops->add(be, ya, ya, by, n);
	be->ops->add(be, yb, ax, yb, n);
	float *got_a = oh_read_floats(a, ya, n), *got_b = oh_read_floats(a, yb, n);
	double err = tap_worst(tap_rel_l2_f(got_a, want, (long)n), tap_rel_l2_f(got_b, want, (long)n));
	double tol = t == LT_BF16 ? OH_BF16_TOL(1) : OH_TOL;
	tap_ok(err <= tol, "%s add in place (y is a, then y is b) n=%zu: rel L2 %.3g <= %.3g", name, n,
	       err, tol);
	free(got_a);
	free(got_b);

	double sq = 0, s = 0;
	for (size_t i = 0; i < n; i++) {
		sq += (double)x[i] * x[i];
		s += x[i];
	}
	lt_ref out = oh_array(a, LT_F32, 2);
	be->ops->sum_squares(be, out, ax, n);
	be->ops->sum(be, lt_ref_at(out, 1), ax, n);
	got = oh_read_floats(a, out, 2);
	oh_check_close(oh_tol(t, 0), &got[0], &sq, 1, "%s sum_squares n=%zu", name, n);
	oh_check_close(oh_tol(t, 0), &got[1], &s, 1, "%s sum n=%zu", name, n);
	free(got);

	if (t == LT_BF16)
		check_bf16_elementwise_bits(a, r, x, y, ax, by, name);
	check_sync_and_guards_then_free(a, name, "fill/copy/scale/add/sum_squares/sum");
	free(x); free(y); free(want);
}

/* One gemm call of shape m x n x k on random A, B, C of type t with
 * leading dimensions and batch strides above the minimum; nan_c fills C's
 * m x n blocks with NaN. */
static void check_one_gemm(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t, int m, int n,
			   int k, int ta, int tb, float alpha, float beta, int batch, int nan_c)
{
	lt_backend *be = a->be;
	char name[64];
	oh_label(name, sizeof name, be, t);
	struct lt_gemm g = { .trans_a = ta, .trans_b = tb, .m = m, .n = n, .k = k,
		.alpha = alpha, .beta = beta, .batch = batch };
	int rows_a = ta ? g.k : g.m, cols_a = ta ? g.m : g.k;
	int rows_b = tb ? g.n : g.k, cols_b = tb ? g.k : g.n;
	g.lda = cols_a + 3;
	g.ldb = cols_b + 5;
	g.ldc = g.n + 2;
	g.stride_a = (long)rows_a * g.lda + 11;
	g.stride_b = (long)rows_b * g.ldb + 6;
	g.stride_c = (long)g.m * g.ldc + 7;
	size_t na = (size_t)g.stride_a * (batch - 1) + (size_t)rows_a * g.lda;
	size_t nb = (size_t)g.stride_b * (batch - 1) + (size_t)rows_b * g.ldb;
	size_t nc = (size_t)g.stride_c * (batch - 1) + (size_t)g.m * g.ldc;
	float *A = oh_random_values(r, na, -1, 1, t), *B = oh_random_values(r, nb, -1, 1, t);
	float *C = oh_random_values(r, nc, -1, 1, t);
	if (nan_c)
		for (int bt = 0; bt < batch; bt++)
			for (int i = 0; i < g.m; i++)
				for (int j = 0; j < g.n; j++)
					C[bt * g.stride_c + (long)i * g.ldc + j] = NAN;
	double *dA = oh_widened(A, na), *dB = oh_widened(B, nb), *want = oh_widened(C, nc);
	reference_gemm(&g, dA, dB, want);

	lt_ref ra = oh_values(a, t, A, na), rb = oh_values(a, t, B, nb);
	lt_ref rc = oh_values(a, t, C, nc);
	be->ops->gemm(be, &g, ra, rb, rc);
	float *got = oh_read_floats(a, rc, nc);
	oh_check_close(oh_tol(t, 1), got, want, nc,
		    "%s gemm %c%c m=%d n=%d k=%d alpha=%g beta=%g%s lda=%d ldb=%d ldc=%d batch=%d "
		    "(strides %ld/%ld/%ld; gaps between rows and batches untouched)",
		    name, ta ? 'T' : 'N', tb ? 'T' : 'N', g.m, g.n, g.k, alpha, beta,
		    nan_c ? " over NaN C" : "", g.lda, g.ldb, g.ldc, batch, g.stride_a, g.stride_b,
		    g.stride_c);
	free(A); free(B); free(C); free(dA); free(dB); free(want); free(got);
}

/* four transpose combinations, beta == 0 over NaN, and the few-row
 * products of decoding (a row or four against [out, in] weights, small and
 * wide enough to be split over threads), then the first five again with a
 * long k that the OpenCL backend splits into four slices
 * (LLTRAIN_GEMM_SPLIT_K; the CPU backend ignores it): 20 checks. In bf16, A, B and C
 * are all bf16 (test_dtypes holds the bf16 GEMM with an f32 C). */
static void test_gemm(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	const char *name = a->name;
	for (int ta = 0; ta < 2; ta++)
		for (int tb = 0; tb < 2; tb++)
			check_one_gemm(a, r, t, N_, F_, C_, ta, tb, 0.7f, -0.3f, 3, 0);
	check_one_gemm(a, r, t, N_, F_, C_, 1, 0, -1.25f, 0.0f, 2, 1);
	for (int m = 1; m <= 4; m += 3) {
		check_one_gemm(a, r, t, m, F_, C_, 0, 1, 1.0f, 0.0f, 1, 1);
		check_one_gemm(a, r, t, m, F_, C_, 0, 1, 0.5f, 1.0f, 1, 0);
		check_one_gemm(a, r, t, m, 3001, 67, 0, 1, 1.0f, 0.0f, 1, 1);
		check_one_gemm(a, r, t, m, 3001, 67, 0, 1, -0.7f, 1.0f, 1, 0);
	}
	setenv("LLTRAIN_GEMM_SPLIT_K", "4", 1);
	for (int ta = 0; ta < 2; ta++)
		for (int tb = 0; tb < 2; tb++)
			check_one_gemm(a, r, t, N_, F_, 1024, ta, tb, 0.7f, -0.3f, 1, 0);
	check_one_gemm(a, r, t, N_, F_, 1024, 1, 0, -1.25f, 0.0f, 1, 1);
	unsetenv("LLTRAIN_GEMM_SPLIT_K");
	check_sync_and_guards_then_free(a, name, "gemm");
}

/* forward, backward into a non-zero f32 table: 4 checks; in bf16, a bf16
 * table into an f32 out too (exact): 1 more */
static void test_embedding(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	lt_backend *be = a->be;
	const char *name = a->name;
	/* repeats, near and far; the first and last rows */
	static const int32_t fixed[][2] = {
		{ 3, 42 }, { 11, 42 }, { 29, 42 }, { 12, 0 }, { 13, 0 }, { N_ - 1, V_ - 1 },
	};
	struct oh_embedding e = { .N = N_, .C = C_, .rows = V_, .fixed = fixed,
		.n_fixed = (int)(sizeof fixed / sizeof fixed[0]) };
	oh_embedding_run(a, r, t, &e);
	const int N = N_, C = C_, V = V_;
	size_t NC = (size_t)N * C;
	oh_check_close(oh_tol(t, 0), e.out, e.want_out, NC, "%s embedding_forward N=%d C=%d V=%d",
		       name, N, C, V);
	oh_check_close(oh_tol(t, 0), e.dtable, e.want_dtable, (size_t)V * C,
		       "%s embedding_backward f32 dtable += (non-zero start, repeated tokens) N=%d "
		       "C=%d V=%d", name, N, C, V);
	if (t == LT_BF16) {
		lt_ref rout32 = oh_array(a, LT_F32, NC);
		be->ops->embedding_forward(be, rout32, e.rtok, e.rtable, N, C);
		float *got = oh_read_floats(a, rout32, NC);
		int exact = 1;
		for (int n = 0; n < N; n++)
			exact &= same_bits(got + (size_t)n * C, e.table + (size_t)e.tokens[n] * C,
					   (size_t)C);
		tap_ok(exact, "%s embedding_forward from a bf16 table into an f32 out: the rows "
		       "widened exactly, bitwise", name);
		free(got);
	}
	check_sync_and_guards_then_free(a, name, "embedding");
	oh_embedding_free(&e);
}

/* bf16 only: the forward of f32 inp and bf16 w into a bf16 out, against
 * the reference (1 rounding); and the backward's "+=" into a bf16 dinp
 * (got_dinp, from dinp0) is the same backward into an f32 dinp rounded
 * once, bitwise -- read, add in f32, round -- the arithmetic being the
 * same whatever dinp's type: 2 checks */
static void check_rmsnorm_mixed(struct oh_arrays *a, struct oh_rng *r, lt_ref rw, const float *w,
				lt_ref rdout, lt_ref rinp, lt_ref rr, const float *dinp0,
				const float *got_dinp, const char *name)
{
	lt_backend *be = a->be;
	const int N = N_, C = C_;
	size_t NC = (size_t)N * C;
	float *inp = oh_random_values(r, NC, -2, 2, LT_F32);
	double *inp_d = oh_widened(inp, NC), *w_d = oh_widened(w, C);
	double *want_out = oh_doubles(NC), *want_rstd = oh_doubles(N);
	reference_rmsnorm_forward(want_out, want_rstd, inp_d, w_d, N, C, NORM_EPS);
	lt_ref rin32 = oh_values(a, LT_F32, inp, NC), rout = oh_array(a, LT_BF16, NC);
	lt_ref rrstd = oh_array(a, LT_F32, N);
	be->ops->rmsnorm_forward(be, rout, rrstd, rin32, rw, N, C, NORM_EPS);
	float *got_out = oh_read_floats(a, rout, NC);
	oh_check_close(oh_tol(LT_BF16, 1), got_out, want_out, NC,
		       "%s rmsnorm_forward f32 inp, bf16 w -> bf16 out N=%d C=%d", name, N, C);

	lt_ref rdinp32 = oh_values(a, LT_F32, dinp0, NC), rdw = oh_array(a, LT_F32, C);
	be->ops->fill(be, rdw, C, 0.0f);
	be->ops->rmsnorm_backward(be, rdinp32, rdw, rdout, rinp, rw, rr, N, C);
	float *got32 = oh_read_floats(a, rdinp32, NC);
	tap_ok(equals_rounded(got_dinp, got32, NC),
	       "%s rmsnorm_backward dinp += into bf16 is the f32 dinp's result rounded once, "
	       "bitwise (N=%d C=%d)", name, N, C);
	free(inp); free(inp_d); free(w_d); free(want_out); free(want_rstd); free(got_out);
	free(got32);
}

/* forward out and rstd, backward dinp and dw (+=), determinism: 7 checks,
 * and 2 more in bf16 */
static void test_rmsnorm(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	lt_backend *be = a->be;
	const char *name = a->name;
	const int N = N_, C = C_;
	size_t NC = (size_t)N * C;
	float *inp = oh_random_values(r, NC, -2, 2, t), *w = oh_random_values(r, C, -1.5f, 1.5f, t);
	float *dout = oh_random_values(r, NC, -1, 1, t);
	float *dinp0 = oh_random_values(r, NC, -1, 1, t), *dw0 = oh_random_values(r, C, -1, 1, LT_F32);
	double *dinp_d = oh_widened(inp, NC), *w_d = oh_widened(w, C), *dout_d = oh_widened(dout, NC);
	double *want_out = oh_doubles(NC), *want_rstd = oh_doubles(N);
	double *want_dinp = oh_widened(dinp0, NC), *want_dw = oh_widened(dw0, C);
	reference_rmsnorm_forward(want_out, want_rstd, dinp_d, w_d, N, C, NORM_EPS);
	reference_rmsnorm_backward(want_dinp, want_dw, dout_d, dinp_d, w_d, want_rstd, N, C);

	lt_ref rinp = oh_values(a, t, inp, NC), rw = oh_values(a, t, w, C);
	lt_ref rout = oh_array(a, t, NC), rrstd = oh_array(a, LT_F32, N);
	be->ops->rmsnorm_forward(be, rout, rrstd, rinp, rw, N, C, NORM_EPS);
	float *got_out = oh_read_floats(a, rout, NC), *got_rstd = oh_read_floats(a, rrstd, N);
	oh_check_close(oh_tol(t, 1), got_out, want_out, NC,
		       "%s rmsnorm_forward out N=%d C=%d eps=1e-5", name, N, C);
	oh_check_close(oh_tol(t, 0), got_rstd, want_rstd, N,
		       "%s rmsnorm_forward f32 rstd N=%d C=%d", name, N, C);

	/* The backward reads the reference's rstd, so it is tested on its own. */
	float *rstd = rounded(want_rstd, N);
	lt_ref rr = oh_values(a, LT_F32, rstd, N), rdout = oh_values(a, t, dout, NC);
	lt_ref rdinp[2], rdw[2];
	float *got_dinp[2], *got_dw[2];
	for (int run = 0; run < 2; run++) {
		rdinp[run] = oh_values(a, t, dinp0, NC);
		rdw[run] = oh_values(a, LT_F32, dw0, C);
		be->ops->rmsnorm_backward(be, rdinp[run], rdw[run], rdout, rinp, rw, rr, N, C);
		got_dinp[run] = oh_read_floats(a, rdinp[run], NC);
		got_dw[run] = oh_read_floats(a, rdw[run], C);
	}
	oh_check_close(oh_tol(t, 1), got_dinp[0], want_dinp, NC,
		       "%s rmsnorm_backward dinp += (non-zero start) N=%d C=%d", name, N, C);
	oh_check_close(oh_tol(t, 0), got_dw[0], want_dw, C,
		       "%s rmsnorm_backward f32 dw += (non-zero start) N=%d C=%d", name, N, C);
	tap_ok(same_bits(got_dinp[0], got_dinp[1], NC) && same_bits(got_dw[0], got_dw[1], C),
	       "%s rmsnorm_backward twice gives bitwise identical dinp and dw", name);

	if (t == LT_BF16)
		check_rmsnorm_mixed(a, r, rw, w, rdout, rinp, rr, dinp0, got_dinp[0], name);
	check_sync_and_guards_then_free(a, name, "rmsnorm");
	for (int run = 0; run < 2; run++) {
		free(got_dinp[run]);
		free(got_dw[run]);
	}
	free(inp); free(w); free(dout); free(dinp0); free(dw0); free(dinp_d); free(w_d); free(dout_d);
	free(want_out); free(want_rstd); free(want_dinp); free(want_dw); free(got_out); free(got_rstd);
	free(rstd);
}

/* Whether the value heads of got[B*T, (H+2K)*D] are bitwise those of orig. */
static int value_heads_are_untouched(const float *got, const float *orig, const struct lt_attn_shape *s)
{
	size_t W = qkv_width(s), vstart = (size_t)(s->H + s->K) * s->D, vlen = (size_t)s->K * s->D;
	for (size_t n = 0; n < (size_t)s->B * s->T; n++)
		if (!same_bits(got + n * W + vstart, orig + n * W + vstart, vlen))
			return 0;
	return 1;
}

/* rope forward, inverse, value heads; attention out, lse, dqkv,
 * determinism: 9 checks */
static void test_rope_and_attention(struct oh_arrays *a, struct oh_rng *r,
				    const struct lt_attn_shape *s, enum lt_dtype t)
{
	lt_backend *be = a->be;
	const char *name = a->name;
	char shape[96], group[128];
	size_t rows = (size_t)s->B * s->T, n = rows * qkv_width(s), nout = rows * s->H * s->D;
	size_t nlse = (size_t)s->B * s->H * s->T;
	describe(shape, sizeof shape, s);

	float *inv_freq = rope_inv_freq(s->D);
	double *inv_freq_d = oh_widened(inv_freq, s->D / 2);
	float *x = oh_random_values(r, n, -1, 1, t);
	double *want_fwd = oh_widened(x, n), *want_bwd = oh_widened(x, n);
	reference_rope(want_fwd, inv_freq_d, s, 0);
	reference_rope(want_bwd, inv_freq_d, s, 1);

	lt_ref rfreq = oh_values(a, LT_F32, inv_freq, s->D / 2);
	lt_ref rfwd = oh_values(a, t, x, n), rbwd = oh_values(a, t, x, n);
	be->ops->rope(be, rfwd, rfreq, s, 0);
	be->ops->rope(be, rbwd, rfreq, s, 1);
	float *got_fwd = oh_read_floats(a, rfwd, n), *got_bwd = oh_read_floats(a, rbwd, n);
	oh_check_close(oh_tol(t, 1), got_fwd, want_fwd, n, "%s rope forward %s theta=1e4", name, shape);
	oh_check_close(oh_tol(t, 1), got_bwd, want_bwd, n,
		       "%s rope backward (inverse) %s theta=1e4", name, shape);
	tap_ok(value_heads_are_untouched(got_fwd, x, s) && value_heads_are_untouched(got_bwd, x, s),
	       "%s rope forward and backward leave value heads bitwise untouched %s", name, shape);

	float *qkv = oh_random_values(r, n, -2, 2, t), *dout = oh_random_values(r, nout, -1, 1, t);
	double *qkv_d = oh_widened(qkv, n), *dout_d = oh_widened(dout, nout);
	double *want_out = oh_doubles(nout), *want_lse = oh_doubles(nlse);
	double *want_dqkv = oh_doubles(n);
	reference_attention_forward(want_out, want_lse, qkv_d, s);
	reference_attention_backward(want_dqkv, dout_d, qkv_d, s);

	lt_ref rqkv = oh_values(a, t, qkv, n);
	lt_ref rout = oh_array(a, t, nout), rlse = oh_array(a, LT_F32, nlse);
	be->ops->attention_forward(be, rout, rlse, rqkv, s);
	float *got_out = oh_read_floats(a, rout, nout), *got_lse = oh_read_floats(a, rlse, nlse);
	oh_check_close(oh_tol(t, 1), got_out, want_out, nout, "%s attention_forward out %s", name,
		       shape);
	oh_check_close(lse_tolerance(be, t), got_lse, want_lse, nlse,
		       "%s attention_forward f32 lse[B,H,T] %s", name, shape);

	/* The backward reads the reference's out (rounded to the mode's type)
	 * and lse, so it is tested on its own. */
	float *out = rounded(want_out, nout), *lse = rounded(want_lse, nlse);
	round_to(out, nout, t);
	lt_ref rout_ref = oh_values(a, t, out, nout), rlse_ref = oh_values(a, LT_F32, lse, nlse);
	lt_ref rdout = oh_values(a, t, dout, nout);
	float *got_dqkv[2];
	for (int run = 0; run < 2; run++) {
		lt_ref rdqkv = oh_array(a, t, n);
		be->ops->attention_backward(be, rdqkv, rdout, rout_ref, rlse_ref, rqkv, s);
		got_dqkv[run] = oh_read_floats(a, rdqkv, n);
	}
	oh_check_close(oh_tol(t, 2), got_dqkv[0], want_dqkv, n,
		       "%s attention_backward dqkv (over NaN) %s", name, shape);
	tap_ok(same_bits(got_dqkv[0], got_dqkv[1], n),
	       "%s attention_backward twice gives bitwise identical dqkv %s", name, shape);

	snprintf(group, sizeof group, "rope/attention %s", shape);
	check_sync_and_guards_then_free(a, name, group);
	free(inv_freq); free(inv_freq_d); free(x); free(want_fwd); free(want_bwd); free(got_fwd);
	free(got_bwd); free(qkv); free(dout); free(qkv_d); free(dout_d); free(want_out); free(want_lse);
	free(want_dqkv); free(got_out); free(got_lse); free(out); free(lse);
	free(got_dqkv[0]); free(got_dqkv[1]);
}

/* A decoding step's shape and cache length. */
struct cached_config {
	struct lt_attn_shape s;
	int S;
};

#define CACHED_CONFIGS 4
static const struct cached_config cached_configs[CACHED_CONFIGS] = {
	{ .s = { .B = 2, .T = 3, .H = 6, .K = 2, .D = 10, .pos0 = 5 }, .S = 11 },
	{ .s = { .B = 1, .T = 1, .H = 4, .K = 4, .D = 8, .pos0 = 12 }, .S = 13 },
	/* new rows across a score tile boundary (64 rows), after a cached prefix */
	{ .s = { .B = 2, .T = 67, .H = 4, .K = 1, .D = 6, .pos0 = 9 }, .S = 80 },
	/* one new row after a cache longer than an OpenCL work-group splits (64) */
	{ .s = { .B = 2, .T = 1, .H = 4, .K = 2, .D = 8, .pos0 = 150 }, .S = 160 },
};

/* Whether positions [p0, p1) of cache c[B, K, S, D] hold, bitwise, the
 * key (kind 0) or value (kind 1) heads of the new rows of qkv. */
static int cache_holds_new_rows(const float *c, const float *qkv, int S,
				const struct lt_attn_shape *s, int kind)
{
	for (int b = 0; b < s->B; b++)
		for (int kv = 0; kv < s->K; kv++)
			for (int t = 0; t < s->T; t++) {
				const float *want = qkv + ((size_t)b * s->T + t) * qkv_width(s) +
						    (size_t)(s->H + kind * s->K + kv) * s->D;
				const float *got = c + (((size_t)b * s->K + kv) * S + s->pos0 + t) * s->D;
				if (!same_bits(got, want, (size_t)s->D))
					return 0;
			}
	return 1;
}

/* Whether the cache positions outside [pos0, pos0+T) are bitwise as they
 * were (orig). */
static int cache_rest_is_untouched(const float *c, const float *orig, int S,
				   const struct lt_attn_shape *s)
{
	for (size_t bk = 0; bk < (size_t)s->B * s->K; bk++)
		for (int j = 0; j < S; j++) {
			size_t at = (bk * S + j) * s->D;
			if (j >= s->pos0 && j < s->pos0 + s->T)
				continue;
			if (!same_bits(c + at, orig + at, (size_t)s->D))
				return 0;
		}
	return 1;
}

/* rope at pos0; attention_cached out, cache writes, what it leaves alone,
 * determinism; then from an empty cache: whole sequences in one call equal
 * attention_forward, one token per call equal the reference: 9 checks */
static void test_attention_cached(struct oh_arrays *a, struct oh_rng *r,
				  const struct cached_config *cc, enum lt_dtype t)
{
	lt_backend *be = a->be;
	const char *name = a->name;
	const struct lt_attn_shape *s = &cc->s;
	int S = cc->S, B = s->B, K = s->K, D = s->D;
	char shape[128], group[160];
	describe(shape, sizeof shape, s);
	snprintf(shape + strlen(shape), sizeof shape - strlen(shape), " pos0=%d S=%d", s->pos0, S);
	size_t rows = (size_t)B * s->T, n = rows * qkv_width(s), nout = rows * s->H * D;
	size_t ncache = (size_t)B * K * S * D;

	/* rope honours pos0 */
	float *inv_freq = rope_inv_freq(D);
	double *inv_freq_d = oh_widened(inv_freq, D / 2);
	float *x = oh_random_values(r, n, -1, 1, t);
	double *want_rope = oh_widened(x, n);
	reference_rope(want_rope, inv_freq_d, s, 0);
	lt_ref rfreq = oh_values(a, LT_F32, inv_freq, D / 2), rx = oh_values(a, t, x, n);
	be->ops->rope(be, rx, rfreq, s, 0);
	float *got_rope = oh_read_floats(a, rx, n);
	oh_check_close(oh_tol(t, 1), got_rope, want_rope, n, "%s rope forward at pos0 %s", name, shape);

	/* a cache whose positions before pos0 hold earlier keys and values, and
	 * NaN after, which the op must neither read nor overwrite */
	float *kc0 = oh_random_values(r, ncache, -2, 2, t);
	float *vc0 = oh_random_values(r, ncache, -2, 2, t);
	for (size_t bk = 0; bk < (size_t)B * K; bk++)
		for (int j = s->pos0; j < S; j++)
			for (int d = 0; d < D; d++)
				kc0[(bk * S + j) * D + d] = vc0[(bk * S + j) * D + d] = NAN;
	float *qkv = oh_random_values(r, n, -2, 2, t);
	double *qkv_d = oh_widened(qkv, n), *kc_d = oh_widened(kc0, ncache);
	double *vc_d = oh_widened(vc0, ncache);
	double *want_out = oh_doubles(nout);
	reference_attention_cached(want_out, qkv_d, kc_d, vc_d, S, s);

	lt_ref rqkv = oh_values(a, t, qkv, n);
	float *got_out[2], *got_kc = NULL, *got_vc = NULL;
	for (int run = 0; run < 2; run++) {
		lt_ref rk = oh_values(a, t, kc0, ncache), rv = oh_values(a, t, vc0, ncache);
		lt_ref rout = oh_array(a, t, nout);
		be->ops->attention_cached(be, rout, rqkv, rk, rv, S, s);
		got_out[run] = oh_read_floats(a, rout, nout);
		if (run == 0) {
			got_kc = oh_read_floats(a, rk, ncache);
			got_vc = oh_read_floats(a, rv, ncache);
		}
	}
	oh_check_close(oh_tol(t, 1), got_out[0], want_out, nout,
		       "%s attention_cached out (over NaN) %s", name, shape);
	tap_ok(cache_holds_new_rows(got_kc, qkv, S, s, 0) && cache_holds_new_rows(got_vc, qkv, S, s, 1),
	       "%s attention_cached copies the new keys and values to positions pos0.. %s", name,
	       shape);
	tap_ok(cache_rest_is_untouched(got_kc, kc0, S, s) && cache_rest_is_untouched(got_vc, vc0, S, s),
	       "%s attention_cached leaves the cached prefix and the NaN tail bitwise as they were %s",
	       name, shape);
	tap_ok(same_bits(got_out[0], got_out[1], nout),
	       "%s attention_cached twice gives bitwise identical out %s", name, shape);

	/* From an empty cache: S tokens at once, then one token per call. */
	struct lt_attn_shape whole = *s, step = *s;
	whole.T = S;
	whole.pos0 = 0;
	step.T = 1;
	size_t W = qkv_width(s), nq = (size_t)B * S * W, nfull = (size_t)B * S * s->H * D;
	float *seq = oh_random_values(r, nq, -2, 2, t);
	double *seq_d = oh_widened(seq, nq), *want_full = oh_doubles(nfull);
	double *lse_d = oh_doubles((size_t)B * s->H * S);
	reference_attention_forward(want_full, lse_d, seq_d, &whole);

	lt_ref rseq = oh_values(a, t, seq, nq), rfwd = oh_array(a, t, nfull);
	lt_ref rlse = oh_array(a, LT_F32, (size_t)B * s->H * S);
	lt_ref rk = oh_array(a, t, ncache), rv = oh_array(a, t, ncache);
	lt_ref rall = oh_array(a, t, nfull);
	be->ops->attention_forward(be, rfwd, rlse, rseq, &whole);
	be->ops->attention_cached(be, rall, rseq, rk, rv, S, &whole);
	float *got_fwd = oh_read_floats(a, rfwd, nfull), *got_all = oh_read_floats(a, rall, nfull);
	double *fwd_d = oh_widened(got_fwd, nfull);
	double err = tap_rel_l2_f(got_all, fwd_d, (long)nfull);
	/* f32 results within 1e-6 of each other, each rounded once in bf16 */
	double tol = t == LT_BF16 ? 2 * OH_BF16_U + 1e-6 : 1e-6;
	tap_ok(err <= tol, "%s attention_cached with pos0=0, T=S equals attention_forward: rel L2 "
	       "%.3g <= %.3g (B=%d S=%d)", name, err, tol, B, S);

	/* one token per call: row p of each sequence, gathered into [B, W] */
	float *one = oh_floats((size_t)B * W), *got_steps = oh_floats(nfull);
	lt_ref rone = oh_array(a, t, (size_t)B * W);
	lt_ref rstep = oh_array(a, t, (size_t)B * s->H * D);
	for (int p = 0; p < S; p++) {
		for (int b = 0; b < B; b++)
			memcpy(one + (size_t)b * W, seq + ((size_t)b * S + p) * W, W * sizeof(float));
		oh_write_floats(be, rone, one, (size_t)B * W);
		step.pos0 = p;
		be->ops->attention_cached(be, rstep, rone, rk, rv, S, &step);
		float *o = oh_read_floats(a, rstep, (size_t)B * s->H * D);
		for (int b = 0; b < B; b++)
			memcpy(got_steps + ((size_t)b * S + p) * s->H * D, o + (size_t)b * s->H * D,
			       (size_t)s->H * D * sizeof(float));
		free(o);
	}
	oh_check_close(oh_tol(t, 1), got_steps, want_full, nfull,
		       "%s attention_cached one token per call over %d positions equals causal "
		       "attention of the whole sequence (B=%d)", name, S, B);

	snprintf(group, sizeof group, "attention_cached %s", shape);
	check_sync_and_guards_then_free(a, name, group);
	free(inv_freq); free(inv_freq_d); free(x); free(want_rope); free(got_rope); free(kc0);
	free(vc0); free(qkv); free(qkv_d); free(kc_d); free(vc_d); free(want_out);
	free(got_out[0]); free(got_out[1]); free(got_kc); free(got_vc); free(seq); free(seq_d);
	free(want_full); free(lse_d); free(got_fwd); free(got_all); free(fwd_d); free(one);
	free(got_steps);
}

/* forward, backward: 4 checks */
static void test_swiglu(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	lt_backend *be = a->be;
	const char *name = a->name;
	const int N = N_, F = F_;
	size_t nh = (size_t)N * 2 * F, nf = (size_t)N * F;
	float *h = oh_random_values(r, nh, -4, 4, t), *dout = oh_random_values(r, nf, -1, 1, t);
	double *h_d = oh_widened(h, nh), *dout_d = oh_widened(dout, nf);
	double *want_out = oh_doubles(nf), *want_dh = oh_doubles(nh);
	reference_swiglu_forward(want_out, h_d, N, F);
	reference_swiglu_backward(want_dh, dout_d, h_d, N, F);

	lt_ref rh = oh_values(a, t, h, nh), rout = oh_array(a, t, nf);
	lt_ref rdout = oh_values(a, t, dout, nf), rdh = oh_array(a, t, nh);
	be->ops->swiglu_forward(be, rout, rh, N, F);
	be->ops->swiglu_backward(be, rdh, rdout, rh, N, F);
	float *got_out = oh_read_floats(a, rout, nf), *got_dh = oh_read_floats(a, rdh, nh);
	oh_check_close(oh_tol(t, 1), got_out, want_out, nf, "%s swiglu_forward N=%d F=%d", name, N, F);
	oh_check_close(oh_tol(t, 1), got_dh, want_dh, nh,
		       "%s swiglu_backward dh (over NaN) N=%d F=%d", name, N, F);

	check_sync_and_guards_then_free(a, name, "swiglu");
	free(h); free(dout); free(h_d); free(dout_d); free(want_out); free(want_dh); free(got_out);
	free(got_dh);
}

/* losses and untouched logits at grad_scale 0; losses, in-place gradient
 * and exact zeros for ignored targets otherwise: 7 checks */
static void test_xent(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	/* the first and last columns, two ignored */
	static const int32_t fixed[][2] = { { 0, 0 }, { 1, V_ - 1 }, { 4, -1 }, { 20, -100 } };
	lt_backend *be = a->be;
	const char *name = a->name;
	struct oh_xent x = { .N = N_, .V = V_, .grad_scale = 1.0f / N_, .fixed = fixed,
		.n_fixed = (int)(sizeof fixed / sizeof fixed[0]) };
	oh_xent_new(r, t, &x);
	const int N = N_, V = V_;
	const float grad_scale = 1.0f / N_;
	size_t nl = (size_t)N * V;
	const int32_t *targets = x.targets;
	const float *logits = x.z;

	lt_ref rtargets = oh_ids(a, targets, N);
	lt_ref rlogits = oh_values(a, t, logits, nl), rlosses = oh_array(a, LT_F32, N);
	be->ops->xent(be, rlosses, rlogits, rtargets, N, V, 0.0f);
	float *got_losses = oh_read_floats(a, rlosses, N);
	float *got_logits = oh_read_floats(a, rlogits, nl);
	oh_check_close(oh_tol(t, 0), got_losses, x.want_loss, N,
		       "%s xent grad_scale=0 f32 losses N=%d V=%d (2 ignored)", name, N, V);
	tap_ok(same_bits(got_logits, logits, nl),
	       "%s xent grad_scale=0 leaves logits bitwise unchanged", name);
	free(got_losses);
	free(got_logits);

	lt_ref rgrad = oh_values(a, t, logits, nl), rlosses2 = oh_array(a, LT_F32, N);
	be->ops->xent(be, rlosses2, rgrad, rtargets, N, V, grad_scale);
	got_losses = oh_read_floats(a, rlosses2, N);
	float *got_grad = oh_read_floats(a, rgrad, nl);
	oh_check_close(oh_tol(t, 0), got_losses, x.want_loss, N,
		       "%s xent grad_scale=1/%d f32 losses N=%d V=%d", name, N, N, V);
	oh_check_close(oh_tol(t, 1), got_grad, x.want_grad, nl,
		       "%s xent grad_scale=1/%d in-place gradient N=%d V=%d", name, N, N, V);
	int exact = 1;
	for (int n = 0; n < N; n++) {
		if (targets[n] >= 0)
			continue;
		exact &= got_losses[n] == 0;
		for (int v = 0; v < V; v++)
			exact &= got_grad[(size_t)n * V + v] == 0;
	}
	tap_ok(exact, "%s xent ignored targets (-1, -100) give loss 0 and an all-zero gradient row",
	       name);

	check_sync_and_guards_then_free(a, name, "xent");
	oh_xent_free(&x);
	free(got_losses); free(got_grad);
}

/* distill's losses and kl with the logits untouched at grad_scale 0; its
 * losses, kl, in-place gradient and exact zeros for ignored targets
 * otherwise; with alpha = 1, xent's losses and gradient (bitwise on the
 * CPU, within rounding elsewhere): 10 checks */
static void test_distill(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t)
{
	lt_backend *be = a->be;
	const char *name = a->name;
	const int N = N_, V = V_;
	struct lt_distill_loss d = { .alpha = 0.25f, .temperature = 2.0f, .grad_scale = 0.0f };
	size_t nl = (size_t)N * V;
	int32_t targets[N_];
	for (int n = 0; n < N; n++)
		targets[n] = oh_rng_below(r, V);
	targets[2] = -1;
	targets[30] = -100;
	float *logits = oh_random_values(r, nl, -4, 4, t), *teacher = oh_random_values(r, nl, -6, 6, t);
	double *z = oh_widened(logits, nl), *y = oh_widened(teacher, nl);
	double *want_losses = oh_doubles(N), *want_kl = oh_doubles(N);
	double *want_grad = oh_doubles(nl);
	reference_distill(want_losses, want_kl, want_grad, z, y, targets, N, V, 0.25, 2.0, 1.0 / N);

	lt_ref rtargets = oh_ids(a, targets, N), rteacher = oh_values(a, t, teacher, nl);
	lt_ref rz = oh_values(a, t, logits, nl), rloss = oh_array(a, LT_F32, N);
	lt_ref rkl = oh_array(a, LT_F32, N);
	be->ops->distill(be, rloss, rkl, rz, rteacher, rtargets, N, V, &d);
	float *got_loss = oh_read_floats(a, rloss, N), *got_kl = oh_read_floats(a, rkl, N);
	float *got_z = oh_read_floats(a, rz, nl);
	oh_check_close(oh_tol(t, 0), got_loss, want_losses, N,
		       "%s distill grad_scale=0 losses N=%d V=%d", name, N, V);
	oh_check_close(oh_tol(t, 0), got_kl, want_kl, N, "%s distill grad_scale=0 kl T=2", name);
	tap_ok(same_bits(got_z, logits, nl), "%s distill grad_scale=0 leaves logits bitwise unchanged",
	       name);
	free(got_loss); free(got_kl); free(got_z);

	d.grad_scale = 1.0f / N_;
	rz = oh_values(a, t, logits, nl);
	rloss = oh_array(a, LT_F32, N);
	rkl = oh_array(a, LT_F32, N);
	be->ops->distill(be, rloss, rkl, rz, rteacher, rtargets, N, V, &d);
	got_loss = oh_read_floats(a, rloss, N);
	got_kl = oh_read_floats(a, rkl, N);
	got_z = oh_read_floats(a, rz, nl);
	oh_check_close(oh_tol(t, 0), got_loss, want_losses, N, "%s distill grad_scale=1/%d losses",
		       name, N);
	oh_check_close(oh_tol(t, 0), got_kl, want_kl, N, "%s distill grad_scale=1/%d kl", name, N);
	oh_check_close(oh_tol(t, 1), got_z, want_grad, nl,
		       "%s distill alpha=0.25 T=2 in-place gradient N=%d V=%d", name, N, V);
	int zeros = 1;
	for (int n = 0; n < N; n++)
		for (int v = 0; targets[n] < 0 && v < V; v++)
			zeros &= got_loss[n] == 0 && got_kl[n] == 0 && got_z[(size_t)n * V + v] == 0;
	tap_ok(zeros, "%s distill ignored targets (-1, -100) give 0, 0 and an all-zero row", name);
	free(got_loss); free(got_kl); free(got_z);

	/* alpha = 1: the cross-entropy alone */
	d.alpha = 1.0f;
	lt_ref rx = oh_values(a, t, logits, nl), rxl = oh_array(a, LT_F32, N);
	rz = oh_values(a, t, logits, nl);
	rloss = oh_array(a, LT_F32, N);
	rkl = oh_array(a, LT_F32, N);
	be->ops->xent(be, rxl, rx, rtargets, N, V, d.grad_scale);
	be->ops->distill(be, rloss, rkl, rz, rteacher, rtargets, N, V, &d);
	float *xl = oh_read_floats(a, rxl, N), *xg = oh_read_floats(a, rx, nl);
	got_loss = oh_read_floats(a, rloss, N);
	got_z = oh_read_floats(a, rz, nl);
	int cpu = !strcmp(be->ops->name, "cpu");
	double worst = 0;
	for (size_t i = 0; i < nl; i++) {
		double e = fabs((double)got_z[i] - xg[i]) / (fabs((double)xg[i]) + 1e-3 / V);
		worst = e > worst ? e : worst;
	}
	for (int n = 0; n < N; n++)
		worst = fmax(worst, fabs((double)got_loss[n] - xl[n]) / (fabs((double)xl[n]) + 1e-6));
	tap_ok(cpu ? same_bits(got_loss, xl, N) && same_bits(got_z, xg, nl)
		   : worst <= (t == LT_BF16 ? OH_BF16_TOL(1) : OH_TOL),
	       "%s distill alpha=1 gives xent's losses and gradient (%s; worst rel %.3g)", name,
	       cpu ? "bitwise" : "within rounding", worst);
	free(xl); free(xg); free(got_loss); free(got_z);

	check_sync_and_guards_then_free(a, name, "distill");
	free(logits); free(teacher); free(z); free(y); free(want_losses); free(want_kl);
	free(want_grad);
}

/* three steps with weight decay and grad_scale != 1: 5 checks */
static void test_adamw(struct oh_arrays *a, struct oh_rng *r)
{
	lt_backend *be = a->be;
	const char *name = a->name;
	const size_t n = ELEMS;
	struct lt_adamw hp = { .lr = 0.05f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
		.weight_decay = 0.1f, .grad_scale = 0.5f };
	float *p0 = oh_random_values(r, n, -1, 1, LT_F32);
	float *m0 = oh_random_values(r, n, -0.1f, 0.1f, LT_F32);
	float *v0 = oh_random_values(r, n, 0, 0.01f, LT_F32);
	double *p = oh_widened(p0, n), *m = oh_widened(m0, n), *v = oh_widened(v0, n);

	lt_ref rp = oh_values(a, LT_F32, p0, n), rm = oh_values(a, LT_F32, m0, n);
	lt_ref rv = oh_values(a, LT_F32, v0, n), rg = oh_array(a, LT_F32, n);
	for (hp.step = 5; hp.step <= 7; hp.step++) {
		float *g = oh_random_values(r, n, -1, 1, LT_F32);
		double *gd = oh_widened(g, n);
		oh_write_floats(be, rg, g, n);
		be->ops->adamw(be, rp, rg, rm, rv, n, &hp);
		reference_adamw(p, m, v, gd, n, &hp);
		free(g);
		free(gd);
	}
	float *got_p = oh_read_floats(a, rp, n), *got_m = oh_read_floats(a, rm, n);
	float *got_v = oh_read_floats(a, rv, n);
	/* The update is small next to p, so compare what the steps changed. */
	double *want_change = oh_doubles(n);
	float *got_change = oh_floats(n);
	for (size_t i = 0; i < n; i++) {
		want_change[i] = p[i] - p0[i];
		got_change[i] = (float)((double)got_p[i] - p0[i]);
	}
	oh_check_close(OH_TOL, got_change, want_change, n,
		       "%s adamw steps 5-7 n=%zu lr=0.05 wd=0.1 grad_scale=0.5: change of param", name, n);
	oh_check_close(OH_TOL, got_m, m, n, "%s adamw steps 5-7: m", name);
	oh_check_close(OH_TOL, got_v, v, n, "%s adamw steps 5-7: v", name);

	check_sync_and_guards_then_free(a, name, "adamw");
	free(p0); free(m0); free(v0); free(p); free(m); free(v); free(got_p); free(got_m); free(got_v);
	free(want_change); free(got_change);
}

/* Op groups, by number and in this order, so that one can run on two
 * backends: four, the attention configs, the cached ones, four more; the
 * last, adamw, whose arguments are all f32, only in f32. */
#define OP_GROUPS (8 + ATTN_CONFIGS + CACHED_CONFIGS)

static const char *run_op_group(struct oh_arrays *a, struct oh_rng *r, int g, enum lt_dtype t)
{
	static char what[192];
	switch (g) {
	case 0: test_elementwise_ops(a, r, t); return "fill/copy/scale/add/sum_squares/sum";
	case 1: test_gemm(a, r, t); return "gemm";
	case 2: test_embedding(a, r, t); return "embedding";
	case 3: test_rmsnorm(a, r, t); return "rmsnorm";
	}
	g -= 4;
	if (g < ATTN_CONFIGS) {
		char shape[160];
		test_rope_and_attention(a, r, &attn_configs[g], t);
		describe(shape, sizeof shape, &attn_configs[g]);
		snprintf(what, sizeof what, "rope/attention %s", shape);
		return what;
	}
	g -= ATTN_CONFIGS;
	if (g < CACHED_CONFIGS) {
		test_attention_cached(a, r, &cached_configs[g], t);
		snprintf(what, sizeof what, "attention_cached config %d", g + 1);
		return what;
	}
	g -= CACHED_CONFIGS;
	switch (g) {
	case 0: test_swiglu(a, r, t); return "swiglu";
	case 1: test_xent(a, r, t); return "xent";
	case 2: test_distill(a, r, t); return "distill";
	default: test_adamw(a, r); return "adamw";
	}
}

static void describe_device(lt_backend *be, const char *spec)
{
	struct lt_device_info info;
	memset(&info, 0, sizeof info);
	be->ops->info(be, &info);
	tap_diag("backend '%s': %s, %d compute units", spec, info.name, info.compute_units);
}

int main(void)
{
	static const struct oh_suite suite = {
		.reference_checks = REFERENCE_CHECKS,
		.prove = prove_references,
		.groups = { OP_GROUPS, OP_GROUPS - 1 },
		.checks = { GROUP_CHECKS, GROUP_CHECKS_BF16 },
		.run = run_op_group,
		.seed = 1234567,
		.twin_tol = { OH_TOL, BF16_TWIN_TOL },
		.counted = "downloaded arrays compared",
		.opened = describe_device,
	};
	return oh_main(&suite);
}
