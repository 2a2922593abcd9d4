/* The OpenCL backend's GEMM: CLBlast's SGEMM and strided-batched SGEMM on
 * the backend's queue. */
#include "config.h"
#include "cl_impl.h"

#include <stdio.h>
#include <string.h>

#include <clblast_c.h>

/* CLBlast 1.5.3 has no tuned Xgemm parameters for NVIDIA's Hopper GPUs
 * and falls back to generic ones. These (a 128 x 128 tile per group of
 * 16 x 16 items, 32-wide k steps, float4 loads, local memory for both
 * operands) were the best of six candidate sets measured on an H100 over
 * the GEMM shapes of the 110M preset's step: 136 ms of GEMM per step
 * against 166 ms with CLBlast's defaults, the 8192 x 32000 x 768 output
 * head at 37.7 TFLOP/s against 28.9. */
static const char *hopper_names[] = { "KWG", "KWI", "MDIMA", "MDIMC", "MWG", "NDIMB",
					    "NDIMC", "NWG", "SA", "SB", "STRM", "STRN", "VWM",
					    "VWN", "GEMMK", "KREG" };
static const size_t hopper_values[] = { 32, 2, 16, 16, 128, 16, 16, 128, 1, 1, 1, 1, 4, 4, 0, 1 };

void lt_cl_tune_gemm(cl_device_id dev, const char *name)
{
	if (!strstr(name, "H100") && !strstr(name, "H200") && !strstr(name, "GH200"))
		return;
	/* A refusal only leaves CLBlast's defaults in place. */
	(void)CLBlastOverrideParameters(dev, "Xgemm", CLBlastPrecisionSingle,
					sizeof hopper_values / sizeof hopper_values[0], hopper_names,
					hopper_values);
}

/* Elements the row-major X of rows x cols with leading dimension ld spans. */
static size_t span(int rows, int cols, int ld)
{
	return rows == 0 || cols == 0 ? 0 : (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
}

static void check_operand(lt_ref r, long stride, int batch, size_t one)
{
	LT_ASSERT(r.buf && lt_buf_type(r.buf) == LT_F32);
	size_t need = one + (batch > 1 ? (size_t)stride * (size_t)(batch - 1) : 0);
	LT_ASSERT(r.off <= lt_buf_elems(r.buf) && need <= lt_buf_elems(r.buf) - r.off);
}

static void fail_clblast(struct lt_cl_ctx *c, CLBlastStatusCode s)
{
	char what[96];
	if (s < 0 && s > -1000) {  /* an OpenCL error passed through */
		lt_cl_fail(c, (cl_int)s, "CLBlast SGEMM");
		return;
	}
	snprintf(what, sizeof what, "CLBlast SGEMM failed with CLBlast status %d", (int)s);
	lt_cl_fail(c, CL_INVALID_OPERATION, what);
}

/* C[b] = alpha op(A[b]) op(B[b]) + beta C[b], see struct lt_gemm. */
void lt_cl_gemm(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c)
{
	struct lt_cl_ctx *cx = lt_cl_ctx(be);
	LT_ASSERT(g->batch >= 1 && g->m >= 0 && g->n >= 0 && g->k >= 0);
	check_operand(a, g->stride_a, g->batch,
		      g->trans_a ? span(g->k, g->m, g->lda) : span(g->m, g->k, g->lda));
	check_operand(b, g->stride_b, g->batch,
		      g->trans_b ? span(g->n, g->k, g->ldb) : span(g->k, g->n, g->ldb));
	check_operand(c, g->stride_c, g->batch, span(g->m, g->n, g->ldc));
	if (lt_cl_failed(cx) || g->m == 0 || g->n == 0)
		return;
	if (lt_cl_gemm_mma(be, g, a, b, c))
		return;
	cl_command_queue q = lt_cl_queue(cx);
	/* CLBlast's event covers its last kernel only: time between markers. */
	cl_event mark = lt_cl_profile_mark(cx);
	CLBlastTranspose ta = g->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo;
	CLBlastTranspose tb = g->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo;
	CLBlastStatusCode s;
	if (g->batch == 1)
		s = CLBlastSgemm(CLBlastLayoutRowMajor, ta, tb, (size_t)g->m, (size_t)g->n,
				 (size_t)g->k, g->alpha, a.buf->mem, a.off, (size_t)g->lda, b.buf->mem,
				 b.off, (size_t)g->ldb, g->beta, c.buf->mem, c.off, (size_t)g->ldc, &q,
				 NULL);
	else
		s = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, ta, tb, (size_t)g->m,
					       (size_t)g->n, (size_t)g->k, g->alpha, a.buf->mem, a.off,
					       (size_t)g->lda, (size_t)g->stride_a, b.buf->mem, b.off,
					       (size_t)g->ldb, (size_t)g->stride_b, g->beta,
					       c.buf->mem, c.off, (size_t)g->ldc, (size_t)g->stride_c,
					       (size_t)g->batch, &q, NULL);
	if (s != CLBlastSuccess) {
		if (mark)
			clReleaseEvent(mark);
		fail_clblast(cx, s);
		return;
	}
	lt_cl_profile_since(cx, mark, "gemm");
}
