/* GEMMs with bf16 operands on NVIDIA tensor cores (gemm_bf16.cl): which problems it
 * takes, its tile, and its launch; on compute capability 9.0 the wgmma GEMM
 * (cl_gemm_wgmma.c) takes them first. Everything else with bf16 operands is widened to
 * f32 for the f32 GEMM (cl_gemm.c). */
#include "config.h"
#include "cl_impl.h"

#include <stdio.h>
#include <stdlib.h>

#define FILE_NAME "gemm_bf16.cl"
#define KERNEL "gemm_mma_bf16"

/* A work-group's tile of C (bm x bn), its warps' tiles (wm x wn), the k-slice and the
 * buffers of the pipeline, whether copies inside the matrices skip their bounds (iter),
 * the rows of tiles that run together (group) and whether the next k-step's fragments
 * are read during this one's products (frag2): the build options of gemm_bf16.cl. */
struct bf16_tile {
	int bm, bn, bk, wm, wn, stages, swizzle, iter, group, frag2;
};

/* The tiles measured on an H100 with LLTRAIN_GEMM_BF16_TILE=i: at 4096^3 (lltrain bench
 * --gemm 4096 --train.precision=bf16) the padded 128x128x32 of 2 stages (the first) and
 * the swizzled one of 3 stages (6) reach 210-225 TFLOP/s in every layout, and the others
 * 140-200, varying by up to 30% between runs; on the 110M preset's bf16 step (lltrain
 * bench --preset 110M --train.precision=bf16) the swizzled 3-stage tile of 32x64 warps
 * (7) gives 105k tokens/s, 6 101k, the first 76k, 8 and 9 85k, and mixing tiles per
 * layout nothing more: 7 is the default of every layout (118.0k tokens/s on an H200,
 * PyTorch eager bf16 117.5k in the same run). The tiles from 13 on add bounds-free
 * interior copies, the grouped raster and fragment double buffering: measured alone at
 * 4096^3 (NT / NN / TN), 19 gives 212 / 218 / 244 TFLOP/s on an H200 and 14 186 / 201 /
 * 223; they are not yet measured on the model's step. */
static const struct bf16_tile tiles[] = {
	{ 128, 128, 32, 64, 64, 2, 0, 0, 0, 0 },
	{ 128, 128, 16, 64, 64, 3, 0, 0, 0, 0 },
	{ 128, 256, 16, 64, 64, 2, 0, 0, 0, 0 },
	{ 256, 128, 16, 64, 64, 2, 0, 0, 0, 0 },
	{ 128, 128, 32, 64, 32, 2, 0, 0, 0, 0 },
	{ 128, 128, 32, 32, 64, 2, 0, 0, 0, 0 },
	{ 128, 128, 32, 64, 64, 3, 1, 0, 0, 0 },
	{ 128, 128, 32, 32, 64, 3, 1, 0, 0, 0 },
	{ 128, 256, 32, 64, 64, 2, 1, 0, 0, 0 },
	{ 256, 128, 32, 64, 64, 2, 1, 0, 0, 0 },
	{ 128, 128, 16, 64, 64, 4, 1, 0, 0, 0 },
	{ 128, 256, 16, 64, 64, 3, 1, 0, 0, 0 },
	{ 128, 128, 32, 64, 32, 3, 1, 0, 0, 0 },
	{ 128, 128, 32, 32, 64, 3, 1, 1, 0, 0 },
	{ 128, 128, 32, 32, 64, 3, 1, 1, 8, 0 },
	{ 128, 128, 32, 32, 64, 3, 1, 1, 8, 1 },
	{ 128, 128, 32, 64, 64, 3, 1, 1, 8, 1 },
	{ 128, 128, 32, 64, 32, 3, 1, 1, 8, 1 },
	{ 128, 256, 32, 64, 64, 2, 1, 1, 8, 0 },
	{ 256, 128, 32, 64, 64, 2, 1, 1, 8, 0 },
	{ 128, 256, 16, 64, 64, 3, 1, 1, 8, 0 },
};
#define N_TILES ((int)(sizeof tiles / sizeof tiles[0]))

/* The tile of layout (ta, tb): LLTRAIN_GEMM_BF16_TILE (for measuring them: an index into
 * tiles, or three, comma-separated, for NT, NN and TN), else the layout's default. */
static const struct bf16_tile *tile_in_use(int ta, int tb)
{
	static const int defaults[3] = { 7, 7, 7 };
	int pick[3] = { -1, -1, -1 }, form = ta ? 2 : tb ? 0 : 1;
	const char *e = getenv("LLTRAIN_GEMM_BF16_TILE");
	if (e) {
		int n = sscanf(e, "%d,%d,%d", &pick[0], &pick[1], &pick[2]);
		for (int i = n; i >= 1 && i < 3; i++)
			pick[i] = pick[0];
	}
	int i = pick[form] >= 0 && pick[form] < N_TILES ? pick[form] : defaults[form];
	return &tiles[i];
}

/* Nonzero when every row and batch of op(A) and op(B) starts on 16 bytes (8 bf16). */
static int rows_aligned(const struct lt_gemm *g, lt_ref a, lt_ref b)
{
	int batched = g->batch > 1;
	return a.off % 8 == 0 && b.off % 8 == 0 && g->lda % 8 == 0 && g->ldb % 8 == 0 &&
	       (!batched || (g->stride_a % 8 == 0 && g->stride_b % 8 == 0));
}

static void tile_options(const struct bf16_tile *t, int ta, int tb, int c16, char *out,
			 size_t cap)
{
	snprintf(out, cap,
		 "-DLT_BM=%d -DLT_BN=%d -DLT_BK=%d -DLT_WM=%d -DLT_WN=%d -DLT_STAGES=%d "
		 "-DLT_SWIZZLE=%d -DLT_ITER=%d -DLT_GROUP=%d -DLT_FRAG2=%d -DLT_TA=%d -DLT_TB=%d "
		 "-DLT_C16=%d",
		 t->bm, t->bn, t->bk, t->wm, t->wn, t->stages, t->swizzle, t->iter, t->group,
		 t->frag2, ta, tb, c16);
}

int lt_cl_gemm_bf16(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c)
{
	struct lt_cl_ctx *cx = lt_cl_ctx(be);
	if (!lt_cl_mma_present(lt_cl_mma_of(cx)) || !rows_aligned(g, a, b))
		return 0;
	int ta = g->trans_a != 0, tb = g->trans_b != 0, c16 = lt_buf_type(c.buf) == LT_BF16;
	if (lt_cl_wgmma_present(lt_cl_mma_of(cx)) && lt_cl_gemm_wgmma_bf16(cx, g, a, b, c, c16))
		return 1;
	const struct bf16_tile *t = tile_in_use(ta, tb);
	char options[256];
	tile_options(t, ta, tb, c16, options, sizeof options);
	int *builds = &lt_cl_mma_of(cx)->bf16_gemm[ta][tb][c16];
	if (*builds == 0)
		*builds = lt_cl_program_builds(cx, FILE_NAME, options) ? 1 : -1;
	if (*builds < 0)
		return 0;
	cl_kernel k = lt_cl_kernel(cx, FILE_NAME, options, KERNEL);
	lt_cl_gemm_args(cx, k, g, a, b, c, lt_cl_arg_any);
	size_t threads = (size_t)(t->bm / t->wm) * (size_t)(t->bn / t->wn) * 32;
	size_t global[3] = { ((size_t)g->n + (size_t)t->bn - 1) / (size_t)t->bn * threads,
			     ((size_t)g->m + (size_t)t->bm - 1) / (size_t)t->bm,
			     (size_t)g->batch };
	size_t local[3] = { threads, 1, 1 };
	lt_cl_launch(cx, k, 3, global, local, "gemm");
	return 1;
}

void lt_cl_gemm_bf16_describe(const struct lt_cl_mma *mm, char *out, size_t cap)
{
	if (lt_cl_wgmma_present(mm))
		snprintf(out, cap, "bf16 storage, fp32 arithmetic; GEMMs on the BF16 tensor cores "
			 "(wgmma, sm_90a; mma.sync m16n8k16 for any form that fails its check), "
			 "exact products, fp32 sums; attention on the TF32 tensor cores, its "
			 "operands widened");
	else if (lt_cl_mma_present(mm))
		snprintf(out, cap, "bf16 storage, fp32 arithmetic; GEMMs on the BF16 tensor cores "
			 "(mma.sync m16n8k16, sm_%d), exact products, fp32 sums; attention on "
			 "the TF32 tensor cores, its operands widened", mm->cc);
	else
		snprintf(out, cap, "bf16 storage, fp32 arithmetic (GEMM operands widened for "
			 "CLBlast)");
}
