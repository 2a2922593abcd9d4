/* The CPU backend's causal grouped-query attention: per (batch, head) work
 * on per-thread score tiles, with OpenBLAS sgemm for the products. */
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
 * columns [0, i]; zeroes both up to column r1. dO and O rows are ld apart. */
LT_CPU_HOT static void grad_rows(float *P, float *dS, int T, int r0, int r1, const float *dO,
				 const float *O, int ld, int D, const float *lse)
{
	for (int i = r0; i < r1; i++) {
		float *restrict pr = P + (size_t)(i - r0) * T;
		float *restrict sr = dS + (size_t)(i - r0) * T;
		const float *restrict yr = dO + (size_t)i * ld;
		const float *restrict orow = O + (size_t)i * ld;
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
 * S = Q K^T / sqrt(D) masked causally, P = softmax(S), O = P V. */
void lt_cpu_attention_forward(lt_backend *be, lt_ref out, lt_ref lse, lt_ref qkv,
			      const struct lt_attn_shape *s)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	size_t W = check_shape(s);
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D, G = s->H / s->K;
	int HD = H * D;
	LT_ASSERT(s->pos0 == 0);
	float *o = lt_cpu_at(out, (size_t)B * T * HD), *l = lt_cpu_at(lse, (size_t)B * H * T);
	const float *x = lt_cpu_at(qkv, (size_t)B * T * W);
	if (c->failed || !B)
		return;
	double t0 = lt_cpu_prof_start(c);
	float *work = scratch(c, T);
	if (!work)
		return;
	size_t tile = (size_t)(T < ATT_ROWS ? T : ATT_ROWS) * T;
	float scale = (float)(1.0 / sqrt((double)D));

#pragma omp parallel num_threads(c->threads)
	{
		float *S = work + (size_t)omp_get_thread_num() * 2 * tile;
#pragma omp for schedule(static)
		for (int bh = 0; bh < B * H; bh++) {
			int b = bh / H, h = bh % H, kv = h / G;
			const float *q = x + (size_t)b * T * W + (size_t)h * D;
			const float *k = x + (size_t)b * T * W + (size_t)(H + kv) * D;
			const float *v = x + (size_t)b * T * W + (size_t)(H + K + kv) * D;
			float *ob = o + (size_t)b * T * HD + (size_t)h * D;
			float *lb = l + (size_t)bh * T;
			for (int r0 = 0; r0 < T; r0 += ATT_ROWS) {
				int r1 = T - r0 < ATT_ROWS ? T : r0 + ATT_ROWS, rows = r1 - r0;
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r1, D, scale,
					    q + (size_t)r0 * W, (int)W, k, (int)W, 0.0f, S, T);
				softmax_rows(S, T, r0, r1, 0, lb);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, r1, 1.0f,
					    S, T, v, (int)W, 0.0f, ob + (size_t)r0 * HD, HD);
			}
		}
	}
	lt_cpu_prof_stop(c, "attention_forward", t0);
}

/* dqkv[B*T, (H+2K)*D] (overwritten) from dout[B*T, H*D], out, lse, qkv.
 * Each (b, kv head) is one thread's: it owns that head's dK and dV and
 * the dQ of its G query heads, so nothing races. Per tile of query rows,
 * P is recomputed from Q, K and lse, then
 *   dV += P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO * O)),
 *   dQ = scale dS K,  dK += scale dS^T Q. */
void lt_cpu_attention_backward(lt_backend *be, lt_ref dqkv, lt_ref dout, lt_ref out, lt_ref lse,
			       lt_ref qkv, const struct lt_attn_shape *s)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	size_t W = check_shape(s);
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D, G = s->H / s->K;
	int HD = H * D;
	LT_ASSERT(s->pos0 == 0);
	float *dx = lt_cpu_at(dqkv, (size_t)B * T * W);
	const float *dy = lt_cpu_at(dout, (size_t)B * T * HD);
	const float *o = lt_cpu_at(out, (size_t)B * T * HD);
	const float *l = lt_cpu_at(lse, (size_t)B * H * T);
	const float *x = lt_cpu_at(qkv, (size_t)B * T * W);
	if (c->failed || !B)
		return;
	double t0 = lt_cpu_prof_start(c);
	float *work = scratch(c, T);
	if (!work)
		return;
	size_t tile = (size_t)(T < ATT_ROWS ? T : ATT_ROWS) * T;
	float scale = (float)(1.0 / sqrt((double)D));

#pragma omp parallel num_threads(c->threads)
	{
		float *P = work + (size_t)omp_get_thread_num() * 2 * tile, *dS = P + tile;
#pragma omp for schedule(static)
		for (int bk = 0; bk < B * K; bk++) {
			int b = bk / K, kv = bk % K;
			size_t base = (size_t)b * T * W;
			const float *k = x + base + (size_t)(H + kv) * D;
			const float *v = x + base + (size_t)(H + K + kv) * D;
			float *dk = dx + base + (size_t)(H + kv) * D;
			float *dv = dx + base + (size_t)(H + K + kv) * D;
			for (int t = 0; t < T; t++)
				for (int d = 0; d < D; d++) {
					dk[(size_t)t * W + d] = 0.0f;
					dv[(size_t)t * W + d] = 0.0f;
				}
			for (int h = kv * G; h < (kv + 1) * G; h++) {
				const float *q = x + base + (size_t)h * D;
				const float *ob = o + (size_t)b * T * HD + (size_t)h * D;
				const float *dob = dy + (size_t)b * T * HD + (size_t)h * D;
				const float *lb = l + ((size_t)b * H + h) * T;
				float *dq = dx + base + (size_t)h * D;
				for (int r0 = 0; r0 < T; r0 += ATT_ROWS) {
					int r1 = T - r0 < ATT_ROWS ? T : r0 + ATT_ROWS, rows = r1 - r0;
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r1, D,
						    scale, q + (size_t)r0 * W, (int)W, k, (int)W, 0.0f, P,
						    T);
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r1, D,
						    1.0f, dob + (size_t)r0 * HD, HD, v, (int)W, 0.0f, dS,
						    T);
					grad_rows(P, dS, T, r0, r1, dob, ob, HD, D, lb);
					cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, D, rows,
						    1.0f, P, T, dob + (size_t)r0 * HD, HD, 1.0f, dv,
						    (int)W);
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, r1,
						    scale, dS, T, k, (int)W, 0.0f, dq + (size_t)r0 * W,
						    (int)W);
					cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, D, rows,
						    scale, dS, T, q + (size_t)r0 * W, (int)W, 1.0f, dk,
						    (int)W);
				}
			}
		}
	}
	lt_cpu_prof_stop(c, "attention_backward", t0);
}

/* Copies the new rows' key and value heads of qkv[B*T, W] to positions
 * pos0 .. pos0+T-1 of kc and vc[B, K, S, D]: a work-shared loop over
 * (b, kv head), called inside a parallel region. */
static void append_to_cache(float *kc, float *vc, const float *x, size_t W, int S,
			    const struct lt_attn_shape *s)
{
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D;
#pragma omp for schedule(static)
	for (int bk = 0; bk < B * K; bk++) {
		int b = bk / K, kv = bk % K;
		size_t at = ((size_t)bk * S + (size_t)s->pos0) * D;
		for (int t = 0; t < T; t++) {
			const float *row = x + ((size_t)b * T + t) * W;
			memcpy(kc + at + (size_t)t * D, row + (size_t)(H + kv) * D, (size_t)D * sizeof(float));
			memcpy(vc + at + (size_t)t * D, row + (size_t)(H + K + kv) * D,
			       (size_t)D * sizeof(float));
		}
	}
}

/* out[B*T, H*D] from the new rows qkv[B*T, (H+2K)*D] and the caches
 * kcache, vcache[B, K, S, D]: the new keys and values are appended at
 * pos0 .. pos0+T-1, then for each (b, h) and tile of new query rows
 * [r0, r1), S = Q K^T / sqrt(D) over cache positions [0, pos0 + r1),
 * masked causally at pos0 + t, P = softmax(S), O = P V. */
void lt_cpu_attention_cached(lt_backend *be, lt_ref out, lt_ref qkv, lt_ref kcache,
			     lt_ref vcache, int S, const struct lt_attn_shape *s)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	size_t W = check_shape(s);
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D, G = s->H / s->K, p0 = s->pos0;
	int HD = H * D, L = p0 + T;
	LT_ASSERT(S > 0 && L <= S);
	size_t cache = (size_t)B * K * S * D;
	float *o = lt_cpu_at(out, (size_t)B * T * HD);
	float *kc = lt_cpu_at(kcache, cache), *vc = lt_cpu_at(vcache, cache);
	const float *x = lt_cpu_at(qkv, (size_t)B * T * W);
	if (c->failed || !B)
		return;
	double t0 = lt_cpu_prof_start(c);
	size_t rows = T < ATT_ROWS ? (size_t)T : ATT_ROWS;
	float *work = scratch_tiles(c, rows, (size_t)L);
	if (!work)
		return;
	size_t tile = rows * (size_t)L;
	float scale = (float)(1.0 / sqrt((double)D));

#pragma omp parallel num_threads(c->threads)
	{
		float *P = work + (size_t)omp_get_thread_num() * 2 * tile;
		append_to_cache(kc, vc, x, W, S, s);
		/* (the implicit barrier of the loop above: every new key is in) */
#pragma omp for schedule(static)
		for (int bh = 0; bh < B * H; bh++) {
			int b = bh / H, h = bh % H, kv = h / G;
			const float *q = x + (size_t)b * T * W + (size_t)h * D;
			const float *k = kc + ((size_t)b * K + kv) * S * D;
			const float *v = vc + ((size_t)b * K + kv) * S * D;
			float *ob = o + (size_t)b * T * HD + (size_t)h * D;
			for (int r0 = 0; r0 < T; r0 += ATT_ROWS) {
				int r1 = T - r0 < ATT_ROWS ? T : r0 + ATT_ROWS, n = r1 - r0;
				int cols = p0 + r1;
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, cols, D, scale,
					    q + (size_t)r0 * W, (int)W, k, D, 0.0f, P, L);
				softmax_rows(P, L, r0, r1, p0, NULL);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, D, cols, 1.0f,
					    P, L, v, D, 0.0f, ob + (size_t)r0 * HD, HD);
			}
		}
	}
	lt_cpu_prof_stop(c, "attention_cached", t0);
}
