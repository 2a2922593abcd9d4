/* The CPU backend's ops other than attention and GEMM: OpenMP loops
 * written to vectorise, on f32 rows where every argument is f32 and on
 * rows staged in f32 (lt_cpu_load, lt_cpu_store) where one is bf16. */
#include "config.h"
#include "cpu_impl.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Below this many elements an elementwise op stays on the calling thread:
 * waking the team costs more than the loop. */
#define PAR_MIN 16384
/* The ops that sum over rows into a [C] vector give each thread a range of
 * whole COL_TILEs (a cache line): no two threads write one element or one
 * line, and each column adds its rows in order whatever the team size. */
#define COL_TILE 16
/* rmsnorm_backward's dw keeps this many double sums on the stack. */
#define RMS_DW_COLS 256
/* sum and sum_squares: at most SUM_CHUNKS partial sums of at least
 * SUM_CHUNK_MIN elements. The split depends on n only, so the total is the
 * same bits for any team size. */
#define SUM_CHUNKS 256
#define SUM_CHUNK_MIN 8192
/* rope computes this many (cos, sin) pairs at a time on the stack. */
#define ROPE_BLOCK 64
/* add with a bf16 argument stages this many elements at a time on the stack. */
#define ADD_BLOCK 512

void lt_cpu_memcpy(struct lt_cpu_ctx *c, void *restrict dst, const void *restrict src,
		   size_t bytes)
{
	if (bytes < 4 * (size_t)PAR_MIN * sizeof(float) || c->threads == 1) {
		memcpy(dst, src, bytes);
		return;
	}
	/* A few 64-byte aligned pieces per thread, each copied once. */
	long pieces = 4L * c->threads;
	size_t step = (bytes / (size_t)pieces + 64) & ~(size_t)63;
#pragma omp parallel for schedule(static) num_threads(c->threads)
	for (long i = 0; i < pieces; i++) {
		size_t lo = (size_t)i * step;
		if (lo < bytes) {
			size_t len = bytes - lo < step ? bytes - lo : step;
			memcpy((char *)dst + lo, (const char *)src + lo, len);
		}
	}
}

/* x[n] = value (rounded once, for a bf16 x) */
void lt_cpu_fill(lt_backend *be, lt_ref x, size_t n, float value)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	struct lt_cpu_vec v = lt_cpu_vec(x, n);
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (v.bf16) {
		uint16_t *restrict h = v.p, bits = lt_bf16_from_f32(value);
#pragma omp parallel for simd schedule(static) num_threads(c->threads) if (parallel: n >= PAR_MIN)
		for (size_t i = 0; i < n; i++)
			h[i] = bits;
	} else {
		float *restrict p = v.p;
#pragma omp parallel for simd schedule(static) num_threads(c->threads) if (parallel: n >= PAR_MIN)
		for (size_t i = 0; i < n; i++)
			p[i] = value;
	}
	lt_cpu_prof_stop(c, "fill", t0);
}

/* dst[n] = src[n], of one type */
void lt_cpu_copy(lt_backend *be, lt_ref dst, lt_ref src, size_t n)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	enum lt_dtype type = lt_buf_type(src.buf);
	LT_ASSERT(lt_buf_type(dst.buf) == type);
	void *d = lt_cpu_bytes(dst, n);
	const void *s = lt_cpu_bytes(src, n);
	if (c->failed || !n)
		return;
	double t0 = lt_cpu_prof_start(c);
	lt_cpu_memcpy(c, d, s, n * lt_dtype_size(type));
	lt_cpu_prof_stop(c, "copy", t0);
}

/* dst[n] = bf16(src[n]), rounded to nearest, ties to even */
static void round_to_bf16(struct lt_cpu_ctx *c, uint16_t *restrict d, const float *restrict s,
			  size_t n)
{
#pragma omp parallel for simd schedule(static) num_threads(c->threads) if (parallel: n >= PAR_MIN)
	for (size_t i = 0; i < n; i++)
		d[i] = lt_bf16_from_f32(s[i]);
}

/* dst[n] = float(src[n]), exact */
static void widen_bf16(struct lt_cpu_ctx *c, float *restrict d, const uint16_t *restrict s,
		       size_t n)
{
#pragma omp parallel for simd schedule(static) num_threads(c->threads) if (parallel: n >= PAR_MIN)
	for (size_t i = 0; i < n; i++)
		d[i] = lt_bf16_to_f32(s[i]);
}

void lt_cpu_copy_elems(struct lt_cpu_vec d, size_t doff, struct lt_cpu_vec s, size_t soff,
		       size_t n)
{
	if (d.bf16 == s.bf16) {
		size_t size = d.bf16 ? sizeof(uint16_t) : sizeof(float);
		memcpy((char *)d.p + doff * size, (const char *)s.p + soff * size, n * size);
	} else if (d.bf16) {
		lt_cpu_store(d, doff, n, (const float *)s.p + soff);
	} else {
		lt_cpu_load(s, soff, n, (float *)d.p + doff);
	}
}

/* dst[n] = src[n] converted between f32 and bf16 (a copy within one type) */
void lt_cpu_convert(lt_backend *be, lt_ref dst, lt_ref src, size_t n)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	enum lt_dtype from = lt_buf_type(src.buf), to = lt_buf_type(dst.buf);
	LT_ASSERT(from != LT_I32 && to != LT_I32);
	if (from == to) {
		lt_cpu_copy(be, dst, src, n);
		return;
	}
	void *d = lt_cpu_bytes(dst, n);
	const void *s = lt_cpu_bytes(src, n);
	if (c->failed || !n)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (to == LT_BF16)
		round_to_bf16(c, d, s, n);
	else
		widen_bf16(c, d, s, n);
	lt_cpu_prof_stop(c, "convert", t0);
}

/* x[n] *= s (a bf16 x: widened, multiplied in f32, rounded) */
void lt_cpu_scale(lt_backend *be, lt_ref x, size_t n, float s)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	struct lt_cpu_vec v = lt_cpu_vec(x, n);
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (v.bf16) {
		uint16_t *restrict h = v.p;
#pragma omp parallel for simd schedule(static) num_threads(c->threads) if (parallel: n >= PAR_MIN)
		for (size_t i = 0; i < n; i++)
			h[i] = lt_bf16_from_f32(lt_bf16_to_f32(h[i]) * s);
	} else {
		float *restrict p = v.p;
#pragma omp parallel for simd schedule(static) num_threads(c->threads) if (parallel: n >= PAR_MIN)
		for (size_t i = 0; i < n; i++)
			p[i] *= s;
	}
	lt_cpu_prof_stop(c, "scale", t0);
}

/* y[n] = a[n] + b[n] with some of them bf16: ADD_BLOCK elements at a time,
 * staged in f32 on the stack. y may be a or b: a block is read whole
 * before it is written. */
static void add_staged(struct lt_cpu_ctx *c, struct lt_cpu_vec y, struct lt_cpu_vec a,
		       struct lt_cpu_vec b, size_t n)
{
	size_t blocks = (n + ADD_BLOCK - 1) / ADD_BLOCK;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (n >= PAR_MIN)
	for (size_t k = 0; k < blocks; k++) {
		float ta[ADD_BLOCK], tb[ADD_BLOCK], ty[ADD_BLOCK];
		size_t lo = k * ADD_BLOCK, len = n - lo < ADD_BLOCK ? n - lo : ADD_BLOCK;
		const float *pa = lt_cpu_load(a, lo, len, ta), *pb = lt_cpu_load(b, lo, len, tb);
		float *py = lt_cpu_dest(y, lo, ty);
#pragma omp simd
		for (size_t i = 0; i < len; i++)
			py[i] = pa[i] + pb[i];
		lt_cpu_store(y, lo, len, ty);
	}
}

/* y[n] = a[n] + b[n]; y may be a or b, which an elementwise loop allows
 * (hence no restrict: simd is asserted instead). */
void lt_cpu_add(lt_backend *be, lt_ref y, lt_ref a, lt_ref b, size_t n)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	struct lt_cpu_vec vy = lt_cpu_vec(y, n), va = lt_cpu_vec(a, n), vb = lt_cpu_vec(b, n);
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (vy.bf16 || va.bf16 || vb.bf16) {
		add_staged(c, vy, va, vb, n);
	} else {
		float *py = vy.p;
		const float *pa = va.p, *pb = vb.p;
#pragma omp parallel for simd schedule(static) num_threads(c->threads) if (parallel: n >= PAR_MIN)
		for (size_t i = 0; i < n; i++)
			py[i] = pa[i] + pb[i];
	}
	lt_cpu_prof_stop(c, "add", t0);
}

/* sum of x[i] (or x[i]^2) over [lo, hi) in double, x bf16 */
static double sum_bf16(const uint16_t *restrict x, size_t lo, size_t hi, int squares)
{
	double acc = 0.0;
	if (squares) {
#pragma omp simd reduction(+ : acc)
		for (size_t i = lo; i < hi; i++) {
			double v = lt_bf16_to_f32(x[i]);
			acc += v * v;
		}
	} else {
#pragma omp simd reduction(+ : acc)
		for (size_t i = lo; i < hi; i++)
			acc += lt_bf16_to_f32(x[i]);
	}
	return acc;
}

/* sum of x[i] (or x[i]^2) over n in double, in a split fixed by n alone. */
static double sum_fixed(struct lt_cpu_ctx *c, struct lt_cpu_vec xv, size_t n, int squares)
{
	const float *restrict x = xv.p;
	double part[SUM_CHUNKS], total = 0.0;
	size_t chunks = (n + SUM_CHUNK_MIN - 1) / SUM_CHUNK_MIN;
	if (chunks > SUM_CHUNKS)
		chunks = SUM_CHUNKS;
	if (!chunks)
		return 0.0;
	size_t step = (n + chunks - 1) / chunks;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (chunks > 1)
	for (size_t k = 0; k < chunks; k++) {
		size_t lo = k * step < n ? k * step : n;
		size_t hi = n - lo < step ? n : lo + step;
		double acc = 0.0;
		if (xv.bf16) {
			acc = sum_bf16(xv.p, lo, hi, squares);
		} else if (squares) {
#pragma omp simd reduction(+ : acc)
			for (size_t i = lo; i < hi; i++)
				acc += (double)x[i] * x[i];
		} else {
#pragma omp simd reduction(+ : acc)
			for (size_t i = lo; i < hi; i++)
				acc += x[i];
		}
		part[k] = acc;
	}
	for (size_t k = 0; k < chunks; k++)
		total += part[k];
	return total;
}

/* out[0] = sum of x[i]^2 over n */
void lt_cpu_sum_squares(lt_backend *be, lt_ref out, lt_ref x, size_t n)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	float *o = lt_cpu_at(out, 1);
	struct lt_cpu_vec p = lt_cpu_vec(x, n);
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	*o = (float)sum_fixed(c, p, n, 1);
	lt_cpu_prof_stop(c, "sum_squares", t0);
}

/* out[0] = sum of x[i] over n */
void lt_cpu_sum(lt_backend *be, lt_ref out, lt_ref x, size_t n)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	float *o = lt_cpu_at(out, 1);
	struct lt_cpu_vec p = lt_cpu_vec(x, n);
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	*o = (float)sum_fixed(c, p, n, 0);
	lt_cpu_prof_stop(c, "sum", t0);
}

/* Rows of width C that fit in what follows r in its buffer. */
static size_t rows_in(lt_ref r, int C)
{
	LT_ASSERT(r.buf && r.off <= lt_buf_elems(r.buf) && C > 0);
	return (lt_buf_elems(r.buf) - r.off) / (size_t)C;
}

/* out[N,C] = table[tokens[n], :], zeros for a token < 0 */
void lt_cpu_embedding_forward(lt_backend *be, lt_ref out, lt_ref tokens, lt_ref table, int N,
			      int C)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && C > 0);
	struct lt_cpu_vec o = lt_cpu_vec(out, (size_t)N * C), tab = lt_cpu_vec(table, (size_t)C);
	const int32_t *tok = lt_cpu_ids(tokens, (size_t)N);
	size_t V = rows_in(table, C), row = (size_t)C * (o.bf16 ? sizeof(uint16_t) : sizeof(float));
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
#pragma omp parallel for schedule(static) num_threads(c->threads) if (parallel: (size_t)N * C >= PAR_MIN)
	for (int n = 0; n < N; n++) {
		LT_ASSERT(tok[n] < 0 || (size_t)tok[n] < V);
		if (tok[n] < 0)  /* another slice's token: zeros, in either type */
			memset((char *)o.p + (size_t)n * row, 0, row);
		else if (o.bf16 == tab.bf16)  /* a row of one type: its bytes */
			memcpy((char *)o.p + (size_t)n * row, (const char *)tab.p + (size_t)tok[n] * row,
			       row);
		else
			lt_cpu_copy_elems(o, (size_t)n * C, tab, (size_t)tok[n] * C, (size_t)C);
	}
	lt_cpu_prof_stop(c, "embedding_forward", t0);
}

/* Columns [*c0, *c1) of C for thread id of nt: whole COL_TILEs, in order. */
static void col_range(int C, int id, int nt, int *c0, int *c1)
{
	long tiles = (C + COL_TILE - 1) / COL_TILE;
	*c0 = (int)(tiles * id / nt) * COL_TILE;
	*c1 = (int)(tiles * (id + 1) / nt) * COL_TILE;
	if (*c1 > C)
		*c1 = C;
}

/* dtable[tokens[n], :] += dout[n, :] for every n with tokens[n] >= 0
 * (another slice's token is skipped). Each thread owns a range
 * of columns and walks all rows in order, so repeated tokens never race and
 * add up in the same order for any team size. */
void lt_cpu_embedding_backward(lt_backend *be, lt_ref dtable, lt_ref tokens, lt_ref dout, int N,
			       int C)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && C > 0);
	float *dt = lt_cpu_at(dtable, (size_t)C);
	const int32_t *tok = lt_cpu_ids(tokens, (size_t)N);
	struct lt_cpu_vec d = lt_cpu_vec(dout, (size_t)N * C);
	size_t V = rows_in(dtable, C);
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	for (int n = 0; n < N; n++)
		LT_ASSERT(tok[n] < 0 || (size_t)tok[n] < V);
#pragma omp parallel num_threads(c->threads) if ((size_t)N * C >= PAR_MIN)
	{
		int c0, c1;
		col_range(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
		for (int n = 0; n < N; n++) {
			if (tok[n] < 0)
				continue;
			float *restrict dst = dt + (size_t)tok[n] * C;
			if (d.bf16) {
				const uint16_t *restrict src = (const uint16_t *)d.p + (size_t)n * C;
#pragma omp simd
				for (int j = c0; j < c1; j++)
					dst[j] += lt_bf16_to_f32(src[j]);
			} else {
				const float *restrict src = (const float *)d.p + (size_t)n * C;
#pragma omp simd
				for (int j = c0; j < c1; j++)
					dst[j] += src[j];
			}
		}
	}
	lt_cpu_prof_stop(c, "embedding_backward", t0);
}

/* The staging an op needs for per_thread floats a thread when any of its
 * float arguments is bf16, else none: *stage NULL, and 1. 0 (the failure
 * recorded) when it is refused. */
static int stage_if_bf16(struct lt_cpu_ctx *c, int any_bf16, size_t per_thread, float **stage)
{
	*stage = any_bf16 ? lt_cpu_stage(c, per_thread) : NULL;
	return !any_bf16 || *stage;
}

/* rstd[N] = 1 / sqrt(mean(inp[n,:]^2) + eps); out[N,C] = inp * rstd * w.
 * Staging (bf16): a row of inp, of out, and w, per thread. */
void lt_cpu_rmsnorm_forward(lt_backend *be, lt_ref out, lt_ref rstd, lt_ref inp, lt_ref w, int N,
			    int C, float eps)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && C > 0);
	size_t NC = (size_t)N * C;
	struct lt_cpu_vec o = lt_cpu_vec(out, NC), x = lt_cpu_vec(inp, NC);
	struct lt_cpu_vec pw = lt_cpu_vec(w, (size_t)C);
	float *rs = lt_cpu_at(rstd, (size_t)N), *stage;
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (!stage_if_bf16(c, o.bf16 || x.bf16 || pw.bf16, 3 * (size_t)C, &stage))
		return;
#pragma omp parallel num_threads(c->threads) if (NC >= PAR_MIN)
	{
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), 3 * (size_t)C);
		const float *restrict wr = lt_cpu_load(pw, 0, (size_t)C, lt_cpu_slot(tmp, 2, (size_t)C));
#pragma omp for schedule(static)
		for (int n = 0; n < N; n++) {
			size_t at = (size_t)n * C;
			const float *restrict xr = lt_cpu_load(x, at, (size_t)C, tmp);
			float *restrict orow = lt_cpu_dest(o, at, lt_cpu_slot(tmp, 1, (size_t)C));
			float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
			for (int i = 0; i < C; i++)
				ss += xr[i] * xr[i];
			float r = 1.0f / sqrtf(ss / (float)C + eps);
			rs[n] = r;
#pragma omp simd
			for (int i = 0; i < C; i++)
				orow[i] = xr[i] * r * wr[i];
			lt_cpu_store(o, at, (size_t)C, orow);
		}
	}
	lt_cpu_prof_stop(c, "rmsnorm_forward", t0);
}

/* dw[c0, c1) += sum_n dout * inp * rstd: the thread's columns summed over
 * all rows in order, in double, RMS_DW_COLS at a time (bf16 rows staged on
 * the stack). */
static void rmsnorm_dw_cols(float *dwp, struct lt_cpu_vec dy, struct lt_cpu_vec x,
			    const float *rs, int N, int C, int c0, int c1)
{
	for (int b0 = c0; b0 < c1; b0 += RMS_DW_COLS) {
		int wd = c1 - b0 < RMS_DW_COLS ? c1 - b0 : RMS_DW_COLS;
		double acc[RMS_DW_COLS];
		float tx[RMS_DW_COLS], ty[RMS_DW_COLS];
		for (int j = 0; j < wd; j++)
			acc[j] = 0.0;
		for (int n = 0; n < N; n++) {
			size_t at = (size_t)n * C + b0;
			const float *restrict xr = lt_cpu_load(x, at, (size_t)wd, tx);
			const float *restrict gy = lt_cpu_load(dy, at, (size_t)wd, ty);
			float r = rs[n];
#pragma omp simd
			for (int j = 0; j < wd; j++)
				acc[j] += (double)(gy[j] * xr[j] * r);
		}
		for (int j = 0; j < wd; j++)
			dwp[b0 + j] += (float)acc[j];
	}
}

/* dinp[N,C] += r w dout - (r^3 / C) inp sum_c(dout w inp);
 * dw[C] += sum_n dout * inp * rstd. Staging (bf16): a row of inp, dout and
 * dinp, and w, per thread. */
void lt_cpu_rmsnorm_backward(lt_backend *be, lt_ref dinp, lt_ref dw, lt_ref dout, lt_ref inp,
			     lt_ref w, lt_ref rstd, int N, int C)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && C > 0);
	size_t NC = (size_t)N * C, CC = (size_t)C;
	struct lt_cpu_vec dx = lt_cpu_vec(dinp, NC), dy = lt_cpu_vec(dout, NC);
	struct lt_cpu_vec x = lt_cpu_vec(inp, NC), pw = lt_cpu_vec(w, CC);
	float *dwp = lt_cpu_at(dw, CC), *stage;
	const float *rs = lt_cpu_at(rstd, (size_t)N);
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (!stage_if_bf16(c, dx.bf16 || dy.bf16 || x.bf16 || pw.bf16, 4 * CC, &stage))
		return;
#pragma omp parallel num_threads(c->threads) if (NC >= PAR_MIN)
	{
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), 4 * CC);
		const float *restrict wr = lt_cpu_load(pw, 0, CC, lt_cpu_slot(tmp, 3, CC));
		/* No barrier after the rows: dw reads dout, inp and rstd only. */
#pragma omp for schedule(static) nowait
		for (int n = 0; n < N; n++) {
			size_t at = (size_t)n * C;
			const float *restrict xr = lt_cpu_load(x, at, CC, tmp);
			const float *restrict gy = lt_cpu_load(dy, at, CC, lt_cpu_slot(tmp, 1, CC));
			float *restrict gx = lt_cpu_dest_of(dx, at, CC, lt_cpu_slot(tmp, 2, CC));
			float r = rs[n], dot = 0.0f;
#pragma omp simd reduction(+ : dot)
			for (int i = 0; i < C; i++)
				dot += gy[i] * wr[i] * xr[i];
			float k = r * r * r * dot / (float)C;
#pragma omp simd
			for (int i = 0; i < C; i++)
				gx[i] += r * wr[i] * gy[i] - k * xr[i];
			lt_cpu_store(dx, at, CC, gx);
		}
		int c0, c1;
		col_range(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
		rmsnorm_dw_cols(dwp, dy, x, rs, N, C, c0, c1);
	}
	lt_cpu_prof_stop(c, "rmsnorm_backward", t0);
}

/* x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin over cnt pairs. */
static void rotate_pairs(float *restrict x1, float *restrict x2, const float *restrict cs,
			 const float *restrict sn, int cnt)
{
#pragma omp simd
	for (int i = 0; i < cnt; i++) {
		float u = x1[i], v = x2[i];
		x1[i] = u * cs[i] - v * sn[i];
		x2[i] = v * cs[i] + u * sn[i];
	}
}

/* Rotates the query and key heads of qkv[B*T, (H+2K)*D] in place by the
 * angle pos * inv_freq[i] on the pairs (i, i + D/2), pos = pos0 + t for
 * the row of position t; backward rotates by
 * minus the angle. Positions are the outer loop so each (cos, sin) is
 * computed once per position, as Hugging Face does it: the angle in float,
 * then cosf/sinf. */
void lt_cpu_rope(lt_backend *be, lt_ref qkv, lt_ref inv_freq, const struct lt_attn_shape *s,
		 int backward)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D;
	LT_ASSERT(B >= 0 && T > 0 && H > 0 && K > 0 && D > 0 && H % K == 0 && D % 2 == 0 &&
		  s->pos0 >= 0);
	int half = D / 2, heads = H + K;
	size_t W = (size_t)(H + 2 * K) * D;
	struct lt_cpu_vec x = lt_cpu_vec(qkv, (size_t)B * T * W);
	const float *f = lt_cpu_at(inv_freq, (size_t)half);
	float sgn = backward ? -1.0f : 1.0f;
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
#pragma omp parallel for schedule(static) num_threads(c->threads) if (parallel: (size_t)B * T * W >= PAR_MIN)
	for (int t = 0; t < T; t++) {
		float cs[ROPE_BLOCK], sn[ROPE_BLOCK], t1[ROPE_BLOCK], t2[ROPE_BLOCK];
		for (int i0 = 0; i0 < half; i0 += ROPE_BLOCK) {
			int cnt = half - i0 < ROPE_BLOCK ? half - i0 : ROPE_BLOCK;
			for (int i = 0; i < cnt; i++) {
				float a = (float)(s->pos0 + t) * f[i0 + i];
				cs[i] = cosf(a);
				sn[i] = sgn * sinf(a);
			}
			for (int b = 0; b < B; b++) {
				size_t row = ((size_t)b * T + t) * W;
				if (!x.bf16) {
					for (int hd = 0; hd < heads; hd++) {
						float *x1 = (float *)x.p + row + (size_t)hd * D + i0;
						rotate_pairs(x1, x1 + half, cs, sn, cnt);
					}
					continue;
				}
				for (int hd = 0; hd < heads; hd++) {
					size_t at = row + (size_t)hd * D + i0;
					float *x1 = lt_cpu_dest_of(x, at, (size_t)cnt, t1);
					float *x2 = lt_cpu_dest_of(x, at + half, (size_t)cnt, t2);
					rotate_pairs(x1, x2, cs, sn, cnt);
					lt_cpu_store(x, at, (size_t)cnt, x1);
					lt_cpu_store(x, at + half, (size_t)cnt, x2);
				}
			}
		}
	}
	lt_cpu_prof_stop(c, "rope", t0);
}

/* One row of swiglu_forward: o[F] = silu(g[F]) * u[F]. */
LT_CPU_HOT static void swiglu_fwd_row(float *restrict o, const float *restrict g,
				      const float *restrict u, int F)
{
#pragma omp simd
	for (int i = 0; i < F; i++) {
		float sg = 1.0f / (1.0f + lt_cpu_expf(-g[i]));
		o[i] = g[i] * sg * u[i];
	}
}

/* out[N,F] = silu(gate) * up, from h[N,2F] = [gate | up]. Staging (bf16):
 * a row of h and of out per thread. */
void lt_cpu_swiglu_forward(lt_backend *be, lt_ref out, lt_ref h, int N, int F)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && F > 0);
	size_t FF = (size_t)F;
	struct lt_cpu_vec o = lt_cpu_vec(out, (size_t)N * F), ph = lt_cpu_vec(h, (size_t)N * 2 * F);
	float *stage;
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (!stage_if_bf16(c, o.bf16 || ph.bf16, 3 * FF, &stage))
		return;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (parallel: (size_t)N * F >= PAR_MIN)
	for (int n = 0; n < N; n++) {
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), 3 * FF);
		const float *g = lt_cpu_load(ph, (size_t)n * 2 * F, 2 * FF, tmp);
		float *orow = lt_cpu_dest(o, (size_t)n * F, lt_cpu_slot(tmp, 2, FF));
		swiglu_fwd_row(orow, g, g + F, F);
		lt_cpu_store(o, (size_t)n * F, FF, orow);
	}
	lt_cpu_prof_stop(c, "swiglu_forward", t0);
}

/* One row of swiglu_backward: dg, du[F] from dy[F], g, u[F]. */
LT_CPU_HOT static void swiglu_bwd_row(float *restrict dg, float *restrict du,
				      const float *restrict dy, const float *restrict g,
				      const float *restrict u, int F)
{
#pragma omp simd
	for (int i = 0; i < F; i++) {
		float sg = 1.0f / (1.0f + lt_cpu_expf(-g[i]));
		dg[i] = dy[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
		du[i] = dy[i] * g[i] * sg;
	}
}

/* dh[N,2F] = [dout * up * silu'(gate) | dout * silu(gate)], from dout[N,F];
 * silu'(x) = s (1 + x (1 - s)), s = sigmoid(x). Staging (bf16): a row of
 * h, of dh and of dout per thread. */
void lt_cpu_swiglu_backward(lt_backend *be, lt_ref dh, lt_ref dout, lt_ref h, int N, int F)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && F > 0);
	size_t FF = (size_t)F, N2F = (size_t)N * 2 * F;
	struct lt_cpu_vec d = lt_cpu_vec(dh, N2F), dy = lt_cpu_vec(dout, (size_t)N * F);
	struct lt_cpu_vec ph = lt_cpu_vec(h, N2F);
	float *stage;
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (!stage_if_bf16(c, d.bf16 || dy.bf16 || ph.bf16, 5 * FF, &stage))
		return;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (parallel: (size_t)N * F >= PAR_MIN)
	for (int n = 0; n < N; n++) {
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), 5 * FF);
		size_t at = (size_t)n * 2 * F;
		const float *g = lt_cpu_load(ph, at, 2 * FF, tmp);
		const float *gy = lt_cpu_load(dy, (size_t)n * F, FF, lt_cpu_slot(tmp, 4, FF));
		float *dg = lt_cpu_dest(d, at, lt_cpu_slot(tmp, 1, 2 * FF));
		swiglu_bwd_row(dg, dg + F, gy, g, g + F, F);
		lt_cpu_store(d, at, 2 * FF, dg);
	}
	lt_cpu_prof_stop(c, "swiglu_backward", t0);
}

/* One row of xent (cpu_impl.h's lt_cpu_xent_row). */
static LT_CPU_HOT float xent_row(float *restrict x, int V, int t, float grad_scale, int write)
{
	float mx = lt_cpu_max(x, V), zt = t >= 0 ? x[t] : 0.0f;
	/* Float sums of LT_CPU_XENT_BLOCK exponentials, added in double; the
	 * exponentials stay in the row when a gradient follows. */
	double total = 0.0;
	for (int j0 = 0; j0 < V; j0 += LT_CPU_XENT_BLOCK) {
		int j1 = V - j0 < LT_CPU_XENT_BLOCK ? V : j0 + LT_CPU_XENT_BLOCK;
		float part = 0.0f;
		if (write) {
#pragma omp simd reduction(+ : part)
			for (int j = j0; j < j1; j++) {
				float e = lt_cpu_expf(x[j] - mx);
				x[j] = e;
				part += e;
			}
		} else {
#pragma omp simd reduction(+ : part)
			for (int j = j0; j < j1; j++)
				part += lt_cpu_expf(x[j] - mx);
		}
		total += part;
	}
	if (write) {
		float k = t >= 0 ? (float)(grad_scale / total) : 0.0f;
#pragma omp simd
		for (int j = 0; j < V; j++)
			x[j] *= k;
		if (t >= 0)
			x[t] -= grad_scale;
	}
	return t >= 0 ? (float)((double)mx + log(total) - zt) : 0.0f;
}

/* xent_row for distill (cpu_distill.c): a plain function, since clang
 * names a target_clones function's dispatcher for its own file only, and
 * another file's call to it would not link. */
float lt_cpu_xent_row(float *restrict x, int V, int t, float grad_scale, int write)
{
	return xent_row(x, V, t, grad_scale, write);
}

/* losses[N] = logsumexp(logits[n,:]) - logits[n, targets[n]] (0 when the
 * target is < 0); with grad_scale != 0, logits[N,V] becomes
 * grad_scale * (softmax - onehot) in place, a zero row when ignored.
 * Staging (bf16 logits): a row per thread, rounded back when written. */
void lt_cpu_xent(lt_backend *be, lt_ref losses, lt_ref logits, lt_ref targets, int N, int V,
		 float grad_scale)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && V > 0);
	float *loss = lt_cpu_at(losses, (size_t)N), *stage;
	struct lt_cpu_vec z = lt_cpu_vec(logits, (size_t)N * V);
	const int32_t *tgt = lt_cpu_ids(targets, (size_t)N);
	int write = grad_scale != 0.0f;
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (!stage_if_bf16(c, z.bf16, (size_t)V, &stage))
		return;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (parallel: (size_t)N * V >= PAR_MIN)
	for (int n = 0; n < N; n++) {
		LT_ASSERT(tgt[n] < V);
		size_t at = (size_t)n * V;
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), (size_t)V);
		float *row = lt_cpu_dest_of(z, at, (size_t)V, tmp);
		loss[n] = xent_row(row, V, tgt[n], grad_scale, write);
		if (write)
			lt_cpu_store(z, at, (size_t)V, row);
	}
	lt_cpu_prof_stop(c, "xent", t0);
}

/* AdamW's per-step constants. */
struct adamw_k {
	float b1, b2, omb1, omb2, lr, eps, wd, gs, ibc1, ibc2;
};

/* AdamW on elements [lo, hi). With errno on (the default), sqrtf keeps a
 * loop scalar, which makes this op compute-bound; x86-64 therefore takes
 * SSE2's sqrtps, the same correctly rounded root, in the same order of
 * operations as the scalar tail. */
static void adamw_span(float *restrict p, const float *restrict g, float *restrict m,
		       float *restrict v, size_t lo, size_t hi, const struct adamw_k *k)
{
	size_t i = lo;
#ifdef __SSE2__
	__m128 b1 = _mm_set1_ps(k->b1), b2 = _mm_set1_ps(k->b2), omb1 = _mm_set1_ps(k->omb1);
	__m128 omb2 = _mm_set1_ps(k->omb2), lr = _mm_set1_ps(k->lr), eps = _mm_set1_ps(k->eps);
	__m128 wd = _mm_set1_ps(k->wd), gs = _mm_set1_ps(k->gs), ibc1 = _mm_set1_ps(k->ibc1);
	__m128 ibc2 = _mm_set1_ps(k->ibc2);
	for (; i + 4 <= hi; i += 4) {
		__m128 gi = _mm_mul_ps(_mm_loadu_ps(g + i), gs);
		__m128 mi = _mm_add_ps(_mm_mul_ps(b1, _mm_loadu_ps(m + i)), _mm_mul_ps(omb1, gi));
		__m128 vi = _mm_add_ps(_mm_mul_ps(b2, _mm_loadu_ps(v + i)),
				       _mm_mul_ps(_mm_mul_ps(omb2, gi), gi));
		_mm_storeu_ps(m + i, mi);
		_mm_storeu_ps(v + i, vi);
		__m128 den = _mm_add_ps(_mm_sqrt_ps(_mm_mul_ps(vi, ibc2)), eps);
		__m128 pi = _mm_loadu_ps(p + i);
		__m128 step = _mm_add_ps(_mm_div_ps(_mm_mul_ps(mi, ibc1), den), _mm_mul_ps(wd, pi));
		_mm_storeu_ps(p + i, _mm_sub_ps(pi, _mm_mul_ps(lr, step)));
	}
#endif
	for (; i < hi; i++) {
		float gi = g[i] * k->gs;
		float mi = k->b1 * m[i] + k->omb1 * gi;
		float vi = k->b2 * v[i] + k->omb2 * gi * gi;
		m[i] = mi;
		v[i] = vi;
		p[i] -= k->lr * (mi * k->ibc1 / (sqrtf(vi * k->ibc2) + k->eps) + k->wd * p[i]);
	}
}

/* param[n], m[n], v[n] updated by AdamW from grad[n], as backend.h writes
 * it; the bias corrections are computed once here in double. */
void lt_cpu_adamw(lt_backend *be, lt_ref param, lt_ref grad, lt_ref m, lt_ref v, size_t n,
		  const struct lt_adamw *hp)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(hp->step >= 1);
	float *p = lt_cpu_at(param, n), *pm = lt_cpu_at(m, n), *pv = lt_cpu_at(v, n);
	const float *g = lt_cpu_at(grad, n);
	if (c->failed)
		return;
	double t0 = lt_cpu_prof_start(c);
	struct adamw_k k = {
		.b1 = hp->beta1, .b2 = hp->beta2, .omb1 = 1.0f - hp->beta1, .omb2 = 1.0f - hp->beta2,
		.lr = hp->lr, .eps = hp->eps, .wd = hp->weight_decay, .gs = hp->grad_scale,
		.ibc1 = (float)(1.0 / (1.0 - pow(hp->beta1, hp->step))),
		.ibc2 = (float)(1.0 / (1.0 - pow(hp->beta2, hp->step))),
	};
#pragma omp parallel num_threads(c->threads) if (n >= PAR_MIN)
	{
		/* Even spans of whole 16-element groups, one per thread. */
		size_t groups = (n + 15) / 16, id = (size_t)omp_get_thread_num();
		size_t nt = (size_t)omp_get_num_threads();
		size_t lo = groups * id / nt * 16, hi = groups * (id + 1) / nt * 16;
		adamw_span(p, g, pm, pv, lo < n ? lo : n, hi < n ? hi : n, &k);
	}
	lt_cpu_prof_stop(c, "adamw", t0);
}
