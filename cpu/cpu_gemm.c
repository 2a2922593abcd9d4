/* The CPU backend's GEMM: one-thread OpenBLAS sgemm calls on tiles of C,
 * the tiles spread over the backend's OpenMP team. OpenBLAS's pthreads
 * build has a thread pool of its own that fights our team for the cores
 * (each side's threads spin while the other's need them), so the backend
 * keeps that build on one thread and threads every GEMM here, whichever
 * build is linked: there is then one team, and one way of splitting. */
#include "config.h"
#include "cpu_impl.h"

#include <omp.h>
#include <stddef.h>
#include <stdio.h>

#include <cblas.h>

/* Each tile (or thread, for a batch of small matrices) gets at least this
 * many multiply-adds, some microseconds' work: a smaller GEMM is split into
 * fewer tiles, down to one on the calling thread. */
#ifndef GEMM_TILE_MIN
#define GEMM_TILE_MIN 262144.0
#endif
/* Tile edges fall on multiples of this many rows or columns of C: whole
 * cache lines of C and whole register blocks of OpenBLAS's kernels. */
#ifndef GEMM_ALIGN
#define GEMM_ALIGN 16
#endif
/* What packing one element of A or B costs, in multiply-adds; it weighs
 * the packing of a tile's rows of A and columns of B, which each tile does
 * for itself, against its arithmetic when choosing the grid. */
#define GEMM_PACK_COST 16.0

/* Elements a batch of rows x cols matrices spans, from the first. */
static size_t gemm_span(int batch, long stride, int rows, int cols, int ld)
{
	if (batch <= 0 || rows <= 0 || cols <= 0)
		return 0;
	return (size_t)stride * (size_t)(batch - 1) + (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
}

/* Start of part i of p over n, in whole GEMM_ALIGN units, the earlier parts
 * the larger; part p starts at n. */
static int part_start(int n, int i, int p)
{
	long units = (n + GEMM_ALIGN - 1) / GEMM_ALIGN;
	long s = units * i / p * GEMM_ALIGN;
	return s < n ? (int)s : n;
}

/* Rows (or columns) in the largest of p parts of n. */
static double part_max(int n, int p)
{
	long units = (n + GEMM_ALIGN - 1) / GEMM_ALIGN;
	double most = (double)((units + p - 1) / p * GEMM_ALIGN);
	return most < n ? most : n;
}

/* The grid of pm x pn tiles over C[m,n] with k-deep products: the most
 * tiles, up to `tiles`, that fit with no part under GEMM_ALIGN wide; among
 * those factorisations, the one whose largest tile costs least. */
static void gemm_grid(int m, int n, int k, int tiles, int *pm, int *pn)
{
	int um = (m + GEMM_ALIGN - 1) / GEMM_ALIGN, un = (n + GEMM_ALIGN - 1) / GEMM_ALIGN;
	double best = -1.0;
	*pm = *pn = 1;
	for (int t = tiles; t > 1 && best < 0; t--)
		for (int i = 1; i <= t; i++) {
			int j = t / i;
			if (i * j != t || i > um || j > un)
				continue;
			double rows = part_max(m, i), cols = part_max(n, j);
			double cost = (rows * cols + GEMM_PACK_COST * (rows + cols)) * k;
			if (best < 0 || cost < best) {
				best = cost;
				*pm = i;
				*pn = j;
			}
		}
}

/* Rows [r0, r1) and columns [c0, c1) of C = alpha op(A) op(B) + beta C,
 * one sgemm on the calling thread. */
static void gemm_tile(const struct lt_gemm *g, const float *a, const float *b, float *c, int r0,
		      int r1, int c0, int c1)
{
	const float *at = a + (g->trans_a ? (size_t)r0 : (size_t)r0 * g->lda);
	const float *bt = b + (g->trans_b ? (size_t)c0 * g->ldb : (size_t)c0);
	cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
		    g->trans_b ? CblasTrans : CblasNoTrans, r1 - r0, c1 - c0, g->k, g->alpha, at,
		    g->lda, bt, g->ldb, g->beta, c + (size_t)r0 * g->ldc + c0, g->ldc);
}

/* Matrices [b0, b0 + nb) of the batch, each a pm x pn grid of tiles: the
 * nb * pm * pn tiles go in order, in even runs, to `team` threads. */
static void gemm_tiles(const struct lt_gemm *g, const float *a, const float *b, float *c, int b0,
		       int nb, int pm, int pn, int team)
{
	long per = (long)pm * pn, tasks = nb * per;
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
	for (long t = 0; t < tasks; t++) {
		long i = b0 + t / per;
		int tm = (int)(t % per / pn), tn = (int)(t % pn);
		gemm_tile(g, a + i * g->stride_a, b + i * g->stride_b, c + i * g->stride_c,
			  part_start(g->m, tm, pm), part_start(g->m, tm + 1, pm),
			  part_start(g->n, tn, pn), part_start(g->n, tn + 1, pn));
	}
}

/* A product of at most this many rows with a matrix of [out, in] weights
 * (B transposed) is computed as matrix-vector products: sgemm would pack
 * all of B on every call, which costs several times the arithmetic when
 * decoding one token at a time; sgemv reads B once. */
#define GEMV_TILE_MIN 32768.0   /* multiply-adds per thread, at least */
#define GEMV_ROWS 4

/* C[m,n] = alpha A[m,k] . B[n,k]^T + beta C for m <= GEMV_ROWS: the columns
 * of C in `team` runs of whole GEMM_ALIGN units, one sgemv per row of A. */
static void gemv_rows(const struct lt_gemm *g, const float *a, const float *b, float *c, int team)
{
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
	for (int p = 0; p < team; p++) {
		int c0 = part_start(g->n, p, team), c1 = part_start(g->n, p + 1, team);
		for (int i = 0; i < g->m && c1 > c0; i++) {
			float *y = c + (size_t)i * g->ldc + c0;
			/* beta 0 must not let a NaN in C through */
			if (g->beta == 0.0f)
				for (int j = 0; j < c1 - c0; j++)
					y[j] = 0.0f;
			cblas_sgemv(CblasRowMajor, CblasNoTrans, c1 - c0, g->k, g->alpha,
				    b + (size_t)c0 * g->ldb, g->ldb, a + (size_t)i * g->lda, 1,
				    g->beta, y, 1);
		}
	}
}

/* C[b][m,n] = alpha * op(A[b])[m,k] . op(B[b])[k,n] + beta * C[b] in f32
 * on the backend's team. The split depends on the shape and the team size
 * alone, so every element of C comes from the same sgemm call each time:
 * bitwise repeatable. */
void lt_cpu_sgemm(struct lt_cpu_ctx *c, const struct lt_gemm *g, const float *pa,
		  const float *pb, float *pc)
{
	if (g->batch == 1 && g->m <= GEMV_ROWS && !g->trans_a && g->trans_b && g->k > 0) {
		double work = (double)g->m * g->n * g->k;
		int team = work / GEMV_TILE_MIN < c->threads ? (int)(work / GEMV_TILE_MIN) : c->threads;
		gemv_rows(g, pa, pb, pc, team > 1 ? team : 1);
		return;
	}
	/* Matrices whose outputs are apart run side by side, sharing the team;
	 * overlapping ones (stride_c 0, say) run in turn, each over the team. */
	int apart = g->stride_c >= (long)(g->m - 1) * g->ldc + g->n;
	int group = apart ? g->batch : 1;
	double work = (double)g->m * g->n * (g->k > 0 ? g->k : 1);
	double most = group * work / GEMM_TILE_MIN;
	int tiles = c->threads / group > 1 ? c->threads / group : 1;
	if (tiles > work / GEMM_TILE_MIN)
		tiles = work / GEMM_TILE_MIN > 1 ? (int)(work / GEMM_TILE_MIN) : 1;
	int pm, pn;
	gemm_grid(g->m, g->n, g->k, tiles, &pm, &pn);
	/* No more threads than tiles, nor than GEMM_TILE_MIN's share of the
	 * work: a batch of small matrices stays on few threads. */
	long tasks = (long)group * pm * pn;
	int team = c->threads;
	if (team > tasks)
		team = (int)tasks;
	if (team > most)
		team = most > 1 ? (int)most : 1;
	for (int i = 0; i < g->batch; i += group)
		gemm_tiles(g, pa, pb, pc, i, group, pm, pn, team);
}

/* ------------------------------------------------------------------ */
/* Which library computes an f32 GEMM. */

/* The rule's bounds: NN products narrower than RULE_NARROW go to oneDNN,
 * and NT ones of more than GEMV_ROWS and fewer than RULE_FEW_ROWS rows
 * that are narrower than RULE_WIDE. */
#define RULE_NARROW 512
#define RULE_FEW_ROWS 128
#define RULE_WIDE 16384

/* Measured with lltrain bench --gemm-shapes (wall GFLOP/s, best of 10
 * calls, OpenBLAS / oneDNN 2.6, the libraries taking turns) at 2 threads
 * on a 2-core AMD EPYC (Zen 3, AVX2, no AVX512) otherwise idle, at the
 * 15M and 110M presets' batches and at --batch 1 --seq 64 and 256, and
 * with the same timing on shapes between them. Both reach 170-195
 * GFLOP/s on large products, so most classes differ by a few per cent:
 * - TN (weight gradients dout^T.x): OpenBLAS, at most 5% slower and often
 *   faster: 15M at 2048 rows gate_up 179 / 142, down 180 / 161, head 183 /
 *   177; 110M gate_up 186 / 172, head 190 / 179; at 16 rows (k) OpenBLAS
 *   is 1.3-1.5x faster.
 * - NT of at most GEMV_ROWS rows (sampling a token; sgemv): OpenBLAS, 15M
 *   at one row qkv 36 / 30, o 47 / 28, down 39 / 27.
 * - NN narrower than 512 (input gradients of models of dim 64 to 480):
 *   oneDNN, at 1 to 2048 rows 0.97-3x (median 1.15x); 15M at 2048 rows qkv
 *   182 / 190, o 177 / 196, gate_up 179 / 188, head (524 rows) 173 / 189;
 *   at 64 rows qkv 152 / 189, o 138 / 184. Wider ones stay: 110M at 2048
 *   rows 0.98-1.02x, and under 256 rows oneDNN is 0.5-0.8x at 1024 to 2048
 *   wide.
 * - NT of 5 to 127 rows (a prompt's forward, evaluation or training of a
 *   few short sequences): oneDNN, which packs less per row than OpenBLAS
 *   on the team's tiles, 0.99-1.3x at 16 to 127 rows and 1.6-2.7x at 5;
 *   15M at 64 rows qkv 148 / 176, o 120 / 129, gate_up 154 / 179, down 151 /
 *   177. At 256 rows 0.94-1.12x, hence the bound; 16384 and more wide (the
 *   head over the vocabulary) 0.89-1.0x at 16 to 256 rows, so those stay.
 * - NT otherwise (the forwards of training): no winner, 0.93-1.05x (15M at
 *   2048 rows qkv 180 / 181, o 186 / 181; 110M at 8192 rows qkv 183 / 189,
 *   o 186 / 177, down 186 / 173), so OpenBLAS stays: its results are
 *   those of lltrain before oneDNN.
 * Batches of more than one matrix (OpenBLAS runs them side by side), TT
 * and k = 0 stay with OpenBLAS, unmeasured. */
enum lt_cpu_gemm_lib lt_cpu_gemm_rule(const struct lt_gemm *g)
{
	if (g->batch != 1 || g->trans_a || g->k == 0)
		return LT_CPU_GEMM_OPENBLAS;
	if (!g->trans_b)
		return g->n < RULE_NARROW ? LT_CPU_GEMM_DNNL : LT_CPU_GEMM_OPENBLAS;
	return g->m > GEMV_ROWS && g->m < RULE_FEW_ROWS && g->n < RULE_WIDE ? LT_CPU_GEMM_DNNL
										 : LT_CPU_GEMM_OPENBLAS;
}

/* The library that computes f32 GEMM g on c: LLTRAIN_CPU_GEMM's, else the
 * rule's. */
static enum lt_cpu_gemm_lib library_of(const struct lt_cpu_ctx *c, const struct lt_gemm *g)
{
	return c->gemm_lib == LT_CPU_GEMM_AUTO ? lt_cpu_gemm_rule(g) : c->gemm_lib;
}

void lt_cpu_gemm_describe(struct lt_cpu_ctx *c, char *out, size_t cap)
{
	char dnnl[32];
	lt_cpu_dnnl_version(dnnl, sizeof dnnl);
	if (c->gemm_lib == LT_CPU_GEMM_OPENBLAS)
		snprintf(out, cap, "OpenBLAS SGEMM (LLTRAIN_CPU_GEMM=openblas)");
	else if (!lt_cpu_dnnl_has(c, LT_F32))
		snprintf(out, cap, "OpenBLAS SGEMM");
	else if (c->gemm_lib == LT_CPU_GEMM_DNNL)
		snprintf(out, cap, "%s matmul (LLTRAIN_CPU_GEMM=dnnl)", dnnl);
	else  /* the rule, in words */
		snprintf(out, cap, "OpenBLAS SGEMM; %s matmul for NN products under %d wide and NT "
			 "ones of %d to %d rows under %d wide", dnnl, RULE_NARROW, GEMV_ROWS + 1,
			 RULE_FEW_ROWS - 1, RULE_WIDE);
}

/* See struct lt_gemm: a and b both f32 (OpenBLAS or oneDNN, as
 * library_of says) or both bf16 (cpu_gemm_bf16.c), c f32 or (with bf16
 * operands) bf16; or b, a weight, of another type (cpu_gemm_quant.c). */
void lt_cpu_gemm_on(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		    const void *pb, void *pc, enum lt_dtype ta, enum lt_dtype tc)
{
	if (ta == LT_BF16) {
		lt_cpu_gemm_bf16(c, g, pa, pb, pc, tc);
		return;
	}
	if (library_of(c, g) == LT_CPU_GEMM_DNNL && lt_cpu_dnnl_gemm(c, g, pa, pb, pc, LT_F32, LT_F32))
		return;
	lt_cpu_sgemm(c, g, pa, pb, pc);
}

void lt_cpu_gemm(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref cref)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	int ar = g->trans_a ? g->k : g->m, ac = g->trans_a ? g->m : g->k;
	int br = g->trans_b ? g->n : g->k, bc = g->trans_b ? g->k : g->n;
	enum lt_dtype ta = lt_buf_type(a.buf), tb = lt_buf_type(b.buf), tc = lt_buf_type(cref.buf);
	LT_ASSERT(g->m >= 0 && g->n >= 0 && g->k >= 0 && g->batch >= 0);
	LT_ASSERT(g->lda >= (ac > 1 ? ac : 1) && g->ldb >= (bc > 1 ? bc : 1) &&
		  g->ldc >= (g->n > 1 ? g->n : 1));
	LT_ASSERT(g->stride_a >= 0 && g->stride_b >= 0 && g->stride_c >= 0);
	LT_ASSERT(ta != LT_I32 && !lt_dtype_is_block(ta) && tb != LT_I32 && tc != LT_I32 &&
		  (ta == LT_BF16 || tc == LT_F32));
	const void *pa = lt_cpu_bytes(a, gemm_span(g->batch, g->stride_a, ar, ac, g->lda));
	/* a block type's span is whole rows of whole blocks */
	size_t bspan = gemm_span(g->batch, g->stride_b, br, bc, g->ldb);
	if (lt_dtype_is_block(tb) && g->batch > 0 && br > 0)
		bspan = (size_t)br * (size_t)g->ldb;
	const void *pb = lt_cpu_bytes(b, bspan);
	void *pc = lt_cpu_bytes(cref, gemm_span(g->batch, g->stride_c, g->m, g->n, g->ldc));
	if (c->failed || !g->m || !g->n || !g->batch)
		return;
	double t0 = lt_cpu_prof_start(c);
	if (tb != ta) {
		lt_cpu_gemm_quant(c, g, pa, pb, tb, pc, ta, tc);
		lt_cpu_prof_stop(c, lt_dtype_is_block(tb) ? "gemm_quant" : "gemm_converted", t0);
		return;
	}
	if (ta == LT_BF16) {
		int dnnl = lt_cpu_gemm_bf16(c, g, pa, pb, pc, tc);
		lt_cpu_prof_stop(c, dnnl ? "gemm_bf16" : "gemm_bf16_widened", t0);
		return;
	}
	if (library_of(c, g) == LT_CPU_GEMM_DNNL &&
	    lt_cpu_dnnl_gemm(c, g, pa, pb, pc, LT_F32, LT_F32)) {
		lt_cpu_prof_stop(c, "gemm_dnnl", t0);
		return;
	}
	lt_cpu_sgemm(c, g, pa, pb, pc);
	int gemv = g->batch == 1 && g->m <= GEMV_ROWS && !g->trans_a && g->trans_b && g->k > 0;
	lt_cpu_prof_stop(c, gemv ? "gemv" : "gemm", t0);
}
