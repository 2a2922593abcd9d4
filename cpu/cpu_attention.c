/* The CPU backend's causal grouped-query attention: per (batch, head) work
 * on per-thread score tiles, with OpenBLAS sgemm for the products; a bf16
 * argument's head is staged in f32 around that work. */
#include "config.h"
#include "cpu_impl.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

/* Query rows per score tile. A tile of rows [r0, r1) needs key columns
 * [0, r1) only, so tiling skips most of the masked upper triangle; the
 * scratch is two ATT_ROWS x T tiles per thread. */
#ifndef ATT_ROWS
#define ATT_ROWS 64
#endif

/* The backend's attention scratch, grown first to two tiles of rows x cols
 * per thread (on the calling thread, outside any parallel region); thread
 * i's tiles start 2 * i tiles in. NULL, with the failure recorded, when the
 * memory is refused. */
static float *scratch_tiles(struct lt_cpu_ctx *c, size_t rows, size_t cols)
{
	size_t need = (size_t)c->threads * 2 * rows * cols;
	if (need > c->att_scratch_n) {
		free(c->att_scratch);
		c->att_scratch_n = 0;
		size_t bytes = (need * sizeof(float) + 63) & ~(size_t)63;
		c->att_scratch = aligned_alloc(64, bytes);
		if (!c->att_scratch) {
			char msg[128];
			snprintf(msg, sizeof msg, "attention: cannot allocate %zu bytes of scratch",
				 bytes);
			lt_cpu_fail(c, LT_ERR_NOMEM, msg);
			return NULL;
		}
		c->att_scratch_n = need;
	}
	return c->att_scratch;
}

/* The scratch of a whole-sequence op: tiles of min(T, ATT_ROWS) x T. */
static float *scratch(struct lt_cpu_ctx *c, int T)
{
	return scratch_tiles(c, T < ATT_ROWS ? (size_t)T : ATT_ROWS, (size_t)T);
}

/* rows x D elements of one head of x, from element off, rows ld apart, as
 * f32: x's own (*ldp = ld) when x is f32, else widened into tmp (*ldp = D). */
static const float *head_in(struct lt_cpu_vec x, size_t off, int ld, int rows, int D,
			    float *tmp, int *ldp)
{
	*ldp = ld;
	if (!x.bf16)
		return (const float *)x.p + off;
	for (int t = 0; t < rows; t++)
		lt_cpu_load(x, off + (size_t)t * ld, (size_t)D, tmp + (size_t)t * D);
	*ldp = D;
	return tmp;
}

/* Where an op computes one head of x (from element off, rows ld apart) in
 * f32: x's own when it is f32, else tmp (*ldp = D), which head_store then
 * rounds into x. */
static float *head_out(struct lt_cpu_vec x, size_t off, int ld, int D, float *tmp, int *ldp)
{
	*ldp = x.bf16 ? D : ld;
	return x.bf16 ? tmp : (float *)x.p + off;
}

/* The rows x D elements of tmp rounded into x's head at off, rows ld apart,
 * when x is bf16; nothing when it is f32. */
static void head_store(struct lt_cpu_vec x, size_t off, int ld, int rows, int D,
		       const float *tmp)
{
	if (!x.bf16)
		return;
	for (int t = 0; t < rows; t++)
		lt_cpu_store(x, off + (size_t)t * ld, (size_t)D, tmp + (size_t)t * D);
}

/* Per-thread staging of `heads` heads of rows x D floats when any is set,
 * else none (*stage NULL). 0 (the failure recorded) when refused. */
static int stage_heads(struct lt_cpu_ctx *c, int any_bf16, size_t heads, size_t rows, int D,
		       float **stage)
{
	*stage = any_bf16 ? lt_cpu_stage(c, heads * rows * (size_t)D) : NULL;
	return !any_bf16 || *stage;
}

/* Checks the shape and returns the packed row width (H + 2K) * D. */
static size_t check_shape(const struct lt_attn_shape *s)
{
	LT_ASSERT(s->B >= 0 && s->T > 0 && s->H > 0 && s->K > 0 && s->D > 0 && s->pos0 >= 0);
	LT_ASSERT(s->H % s->K == 0);
	return (size_t)(s->H + 2 * s->K) * s->D;
}

/* Turns the score rows [r0, r1) of a tile (row stride ld, already scaled)
 * into probabilities over the causal columns [0, shift + i], zeroes the
 * masked columns up to shift + r1, and writes each row's log-sum-exp to
 * lse[i] (unless lse is NULL). Row i is the query at position shift + i. */
LT_CPU_HOT static void softmax_rows(float *S, int ld, int r0, int r1, int shift, float *lse)
{
	for (int i = r0; i < r1; i++) {
		float *restrict row = S + (size_t)(i - r0) * ld;
		int n = shift + i + 1;
		float mx = lt_cpu_max(row, n);
		float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
		for (int j = 0; j < n; j++) {
			float e = lt_cpu_expf(row[j] - mx);
			row[j] = e;
			sum += e;
		}
		float inv = 1.0f / sum;
#pragma omp simd
		for (int j = 0; j < n; j++)
			row[j] *= inv;
		for (int j = n; j < shift + r1; j++)
			row[j] = 0.0f;
		if (lse)
			lse[i] = mx + logf(sum);
	}
}

/* Turns the tile rows [r0, r1) of scaled scores S into P = exp(S - lse)
 * and of dP = dO V^T into dS = P (dP - rowsum(dO * O)), over the causal
 * columns [0, i]; zeroes both up to column r1. dO rows are ldy apart, O
 * rows ldo. */
LT_CPU_HOT static void grad_rows(float *P, float *dS, int T, int r0, int r1, const float *dO,
				 int ldy, const float *O, int ldo, int D, const float *lse)
{
	for (int i = r0; i < r1; i++) {
		float *restrict pr = P + (size_t)(i - r0) * T;
		float *restrict sr = dS + (size_t)(i - r0) * T;
		const float *restrict yr = dO + (size_t)i * ldy;
		const float *restrict orow = O + (size_t)i * ldo;
		float li = lse[i], di = 0.0f;
		int n = i + 1;
#pragma omp simd reduction(+ : di)
		for (int d = 0; d < D; d++)
			di += yr[d] * orow[d];
#pragma omp simd
		for (int j = 0; j < n; j++) {
			float p = lt_cpu_expf(pr[j] - li);
			pr[j] = p;
			sr[j] = p * (sr[j] - di);
		}
		for (int j = n; j < r1; j++) {
			pr[j] = 0.0f;
			sr[j] = 0.0f;
		}
	}
}

/* out[B*T, H*D], lse[B,H,T] from qkv[B*T, (H+2K)*D]: for each (b, h),
 * S = Q K^T / sqrt(D) masked causally, P = softmax(S), O = P V. Staging
 * (bf16): the head's Q, K, V and O per thread. */
void lt_cpu_attention_forward(lt_backend *be, lt_ref out, lt_ref lse, lt_ref qkv,
			      const struct lt_attn_shape *s)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	size_t W = check_shape(s);
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D, G = s->H / s->K;
	int HD = H * D;
	LT_ASSERT(s->pos0 == 0);
	struct lt_cpu_vec o = lt_cpu_vec(out, (size_t)B * T * HD), x = lt_cpu_vec(qkv, (size_t)B * T * W);
	float *l = lt_cpu_at(lse, (size_t)B * H * T), *stage;
	if (c->failed || !B)
		return;
	double t0 = lt_cpu_prof_start(c);
	float *work = scratch(c, T);
	size_t hs = (size_t)T * D;
	if (!work || !stage_heads(c, o.bf16 || x.bf16, 4, (size_t)T, D, &stage))
		return;
	size_t tile = (size_t)(T < ATT_ROWS ? T : ATT_ROWS) * T;
	float scale = (float)(1.0 / sqrt((double)D));

#pragma omp parallel num_threads(c->threads)
	{
		float *S = work + (size_t)omp_get_thread_num() * 2 * tile;
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), 4 * hs);
#pragma omp for schedule(static)
		for (int bh = 0; bh < B * H; bh++) {
			int b = bh / H, h = bh % H, kv = h / G, lq, lk, lv, lo;
			size_t xb = (size_t)b * T * W, at = (size_t)b * T * HD + (size_t)h * D;
			const float *q = head_in(x, xb + (size_t)h * D, (int)W, T, D, tmp, &lq);
			const float *k = head_in(x, xb + (size_t)(H + kv) * D, (int)W, T, D,
						 lt_cpu_slot(tmp, 1, hs), &lk);
			const float *v = head_in(x, xb + (size_t)(H + K + kv) * D, (int)W, T, D,
						 lt_cpu_slot(tmp, 2, hs), &lv);
			float *ob = head_out(o, at, HD, D, lt_cpu_slot(tmp, 3, hs), &lo);
			float *lb = l + (size_t)bh * T;
			for (int r0 = 0; r0 < T; r0 += ATT_ROWS) {
				int r1 = T - r0 < ATT_ROWS ? T : r0 + ATT_ROWS, rows = r1 - r0;
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r1, D, scale,
					    q + (size_t)r0 * lq, lq, k, lk, 0.0f, S, T);
				softmax_rows(S, T, r0, r1, 0, lb);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, r1, 1.0f,
					    S, T, v, lv, 0.0f, ob + (size_t)r0 * lo, lo);
			}
			head_store(o, at, HD, T, D, ob);
		}
	}
	lt_cpu_prof_stop(c, "attention_forward", t0);
}

/* What the per-head work of attention_backward reads and writes. */
struct att_bwd {
	struct lt_cpu_vec dx, dy, o, x;  /* dqkv, dout, out, qkv */
	const float *l;                  /* lse */
	int T, H, K, D, W, HD;
	float scale;
};

/* Query head h of sequence b: its dQ (overwritten), and its share of dK
 * and dV (added), from K, V (rows lk, lv apart) and dK, dV (ldk, ldv) in
 * f32, on the thread's tiles P and dS and staging tmp (4 heads, NULL when
 * every argument is f32). Per tile of query rows, P is recomputed from Q,
 * K and lse, then
 *   dV += P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO * O)),
 *   dQ = scale dS K,  dK += scale dS^T Q. */
static void backward_head(const struct att_bwd *a, int b, int h, const float *k, int lk,
			  const float *v, int lv, float *dk, int ldk, float *dv, int ldv, float *P,
			  float *dS, float *tmp)
{
	int T = a->T, D = a->D, W = a->W, HD = a->HD, lq, lo, ly, ldq;
	size_t hs = (size_t)T * D, base = (size_t)b * T * W + (size_t)h * D;
	size_t at = (size_t)b * T * HD + (size_t)h * D;
	const float *q = head_in(a->x, base, W, T, D, tmp, &lq);
	const float *ob = head_in(a->o, at, HD, T, D, lt_cpu_slot(tmp, 1, hs), &lo);
	const float *dob = head_in(a->dy, at, HD, T, D, lt_cpu_slot(tmp, 2, hs), &ly);
	float *dq = head_out(a->dx, base, W, D, lt_cpu_slot(tmp, 3, hs), &ldq);
	const float *lb = a->l + ((size_t)b * a->H + h) * T;
	float scale = a->scale;
	for (int r0 = 0; r0 < T; r0 += ATT_ROWS) {
		int r1 = T - r0 < ATT_ROWS ? T : r0 + ATT_ROWS, rows = r1 - r0;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r1, D, scale,
			    q + (size_t)r0 * lq, lq, k, lk, 0.0f, P, T);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r1, D, 1.0f,
			    dob + (size_t)r0 * ly, ly, v, lv, 0.0f, dS, T);
		grad_rows(P, dS, T, r0, r1, dob, ly, ob, lo, D, lb);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, D, rows, 1.0f, P, T,
			    dob + (size_t)r0 * ly, ly, 1.0f, dv, ldv);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, r1, scale, dS, T,
			    k, lk, 0.0f, dq + (size_t)r0 * ldq, ldq);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, D, rows, scale, dS, T,
			    q + (size_t)r0 * lq, lq, 1.0f, dk, ldk);
	}
	head_store(a->dx, base, W, T, D, dq);
}

/* Key/value head kv of sequence b: its dK and dV (overwritten) and the dQ
 * of its G query heads, on the thread's tiles P, dS and staging tmp (8
 * heads, NULL when every argument is f32). */
static void backward_kv(const struct att_bwd *a, int b, int kv, float *P, float *dS, float *tmp)
{
	int T = a->T, D = a->D, W = a->W, H = a->H, K = a->K, G = H / K, lk, lv, ldk, ldv;
	size_t hs = (size_t)T * D, base = (size_t)b * T * W;
	size_t ko = base + (size_t)(H + kv) * D, vo = base + (size_t)(H + K + kv) * D;
	const float *k = head_in(a->x, ko, W, T, D, tmp, &lk);
	const float *v = head_in(a->x, vo, W, T, D, lt_cpu_slot(tmp, 1, hs), &lv);
	float *dk = head_out(a->dx, ko, W, D, lt_cpu_slot(tmp, 2, hs), &ldk);
	float *dv = head_out(a->dx, vo, W, D, lt_cpu_slot(tmp, 3, hs), &ldv);
	for (int t = 0; t < T; t++)
		for (int d = 0; d < D; d++) {
			dk[(size_t)t * ldk + d] = 0.0f;
			dv[(size_t)t * ldv + d] = 0.0f;
		}
	for (int h = kv * G; h < (kv + 1) * G; h++)
		backward_head(a, b, h, k, lk, v, lv, dk, ldk, dv, ldv, P, dS,
			      lt_cpu_slot(tmp, 4, hs));
	head_store(a->dx, ko, W, T, D, dk);
	head_store(a->dx, vo, W, T, D, dv);
}

/* dqkv[B*T, (H+2K)*D] (overwritten) from dout[B*T, H*D], out, lse, qkv.
 * Each (b, kv head) is one thread's: it owns that head's dK and dV and
 * the dQ of its G query heads, so nothing races (backward_kv). Staging
 * (bf16): 8 heads per thread. */
void lt_cpu_attention_backward(lt_backend *be, lt_ref dqkv, lt_ref dout, lt_ref out, lt_ref lse,
			       lt_ref qkv, const struct lt_attn_shape *s)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	size_t W = check_shape(s);
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D, HD = H * D;
	size_t NW = (size_t)B * T * W, NO = (size_t)B * T * HD;
	LT_ASSERT(s->pos0 == 0);
	struct att_bwd a = {
		.dx = lt_cpu_vec(dqkv, NW), .dy = lt_cpu_vec(dout, NO), .o = lt_cpu_vec(out, NO),
		.x = lt_cpu_vec(qkv, NW), .l = lt_cpu_at(lse, (size_t)B * H * T),
		.T = T, .H = H, .K = K, .D = D, .W = (int)W, .HD = HD,
		.scale = (float)(1.0 / sqrt((double)D)),
	};
	float *stage;
	if (c->failed || !B)
		return;
	double t0 = lt_cpu_prof_start(c);
	float *work = scratch(c, T);
	int any_bf16 = a.dx.bf16 || a.dy.bf16 || a.o.bf16 || a.x.bf16;
	if (!work || !stage_heads(c, any_bf16, 8, (size_t)T, D, &stage))
		return;
	size_t tile = (size_t)(T < ATT_ROWS ? T : ATT_ROWS) * T;

#pragma omp parallel num_threads(c->threads)
	{
		float *P = work + (size_t)omp_get_thread_num() * 2 * tile, *dS = P + tile;
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), 8 * (size_t)T * D);
#pragma omp for schedule(static)
		for (int bk = 0; bk < B * K; bk++)
			backward_kv(&a, bk / K, bk % K, P, dS, tmp);
	}
	lt_cpu_prof_stop(c, "attention_backward", t0);
}

/* Copies the new rows' key and value heads of qkv[B*T, W] to positions
 * pos0 .. pos0+T-1 of kc and vc[B, K, S, D] (rounded or widened where their
 * types differ): a work-shared loop over (b, kv head), called inside a
 * parallel region. */
static void append_to_cache(struct lt_cpu_vec kc, struct lt_cpu_vec vc, struct lt_cpu_vec x,
			    size_t W, int S, const struct lt_attn_shape *s)
{
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D;
#pragma omp for schedule(static)
	for (int bk = 0; bk < B * K; bk++) {
		int b = bk / K, kv = bk % K;
		size_t at = ((size_t)bk * S + (size_t)s->pos0) * D;
		for (int t = 0; t < T; t++) {
			size_t row = ((size_t)b * T + t) * W;
			lt_cpu_copy_elems(kc, at + (size_t)t * D, x, row + (size_t)(H + kv) * D,
					  (size_t)D);
			lt_cpu_copy_elems(vc, at + (size_t)t * D, x, row + (size_t)(H + K + kv) * D,
					  (size_t)D);
		}
	}
}

/* out[B*T, H*D] from the new rows qkv[B*T, (H+2K)*D] and the caches
 * kcache, vcache[B, K, S, D]: the new keys and values are appended at
 * pos0 .. pos0+T-1, then for each (b, h) and tile of new query rows
 * [r0, r1), S = Q K^T / sqrt(D) over cache positions [0, pos0 + r1),
 * masked causally at pos0 + t, P = softmax(S), O = P V. Staging (bf16):
 * the head's Q and O (T rows), K and V (pos0 + T rows) per thread. */
void lt_cpu_attention_cached(lt_backend *be, lt_ref out, lt_ref qkv, lt_ref kcache,
			     lt_ref vcache, int S, const struct lt_attn_shape *s)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	size_t W = check_shape(s);
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D, G = s->H / s->K, p0 = s->pos0;
	int HD = H * D, L = p0 + T;
	LT_ASSERT(S > 0 && L <= S);
	size_t cache = (size_t)B * K * S * D;
	struct lt_cpu_vec o = lt_cpu_vec(out, (size_t)B * T * HD), x = lt_cpu_vec(qkv, (size_t)B * T * W);
	struct lt_cpu_vec kc = lt_cpu_vec(kcache, cache), vc = lt_cpu_vec(vcache, cache);
	float *stage;
	if (c->failed || !B)
		return;
	double t0 = lt_cpu_prof_start(c);
	size_t rows = T < ATT_ROWS ? (size_t)T : ATT_ROWS;
	float *work = scratch_tiles(c, rows, (size_t)L);
	int any_bf16 = o.bf16 || x.bf16 || kc.bf16 || vc.bf16;
	size_t hs = (size_t)T * D, ls = (size_t)L * D;
	if (!work || !stage_heads(c, any_bf16, 2, (size_t)(T + L), D, &stage))
		return;
	size_t tile = rows * (size_t)L;
	float scale = (float)(1.0 / sqrt((double)D));

#pragma omp parallel num_threads(c->threads)
	{
		float *P = work + (size_t)omp_get_thread_num() * 2 * tile;
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), 2 * (hs + ls));
		append_to_cache(kc, vc, x, W, S, s);
		/* (the implicit barrier of the loop above: every new key is in) */
#pragma omp for schedule(static)
		for (int bh = 0; bh < B * H; bh++) {
			int b = bh / H, h = bh % H, kv = h / G, lq, lk, lv, lo;
			size_t at = (size_t)b * T * HD + (size_t)h * D;
			size_t ck = ((size_t)b * K + kv) * S * D;
			const float *q = head_in(x, (size_t)b * T * W + (size_t)h * D, (int)W, T, D,
						 tmp, &lq);
			const float *k = head_in(kc, ck, D, L, D, lt_cpu_slot(tmp, 1, hs), &lk);
			const float *v = head_in(vc, ck, D, L, D, tmp ? tmp + hs + ls : NULL, &lv);
			float *ob = head_out(o, at, HD, D, tmp ? tmp + hs + 2 * ls : NULL, &lo);
			for (int r0 = 0; r0 < T; r0 += ATT_ROWS) {
				int r1 = T - r0 < ATT_ROWS ? T : r0 + ATT_ROWS, n = r1 - r0;
				int cols = p0 + r1;
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, cols, D, scale,
					    q + (size_t)r0 * lq, lq, k, lk, 0.0f, P, L);
				softmax_rows(P, L, r0, r1, p0, NULL);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, D, cols, 1.0f,
					    P, L, v, lv, 0.0f, ob + (size_t)r0 * lo, lo);
			}
			head_store(o, at, HD, T, D, ob);
		}
	}
	lt_cpu_prof_stop(c, "attention_cached", t0);
}
