/* The OpenCL backend's GEMM: CLBlast's SGEMM and strided-batched SGEMM on
 * the backend's queue (or the tensor cores' kernels), with products of
 * few tiles and a long k split along k. */
#include "config.h"
#include "cl_impl.h"

#include <stdio.h>
#include <stdlib.h>
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

/* Elements a batch of matrices of `one` elements each spans. */
static size_t extent(long stride, int batch, size_t one)
{
	return one + (batch > 1 ? (size_t)stride * (size_t)(batch - 1) : 0);
}

static void check_operand(lt_ref r, long stride, int batch, size_t one)
{
	LT_ASSERT(r.buf && lt_buf_type(r.buf) != LT_I32);
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

static void gemm_f32(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c,
		     int widened_bf16);

/* The f32 GEMM of the same problem on bf16 operands: A and B (and a bf16
 * C) widened into one scratch buffer in their own layout (slot 3), the
 * f32 GEMM run there, and a bf16 C's own elements rounded back. Each
 * product of two bf16 is exact in f32 and the sums are f32, as on the CPU. */
static void gemm_widened(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c,
			 size_t na, size_t nb, size_t nc)
{
	struct lt_cl_ctx *cx = lt_cl_ctx(be);
	int c16 = lt_buf_type(c.buf) == LT_BF16;
	lt_ref wa = lt_cl_scratch(cx, 3, na + nb + (c16 ? nc : 0));
	if (lt_cl_failed(cx))
		return;
	lt_ref wb = lt_ref_at(wa, na), wc = c16 ? lt_ref_at(wa, na + nb) : c;
	be->ops->convert(be, wa, a, na);
	be->ops->convert(be, wb, b, nb);
	if (c16 && g->beta != 0.0f)
		lt_cl_convert_matrices(cx, wc, c, g->batch, g->m, g->n, g->ldc, g->stride_c);
	gemm_f32(be, g, wa, wb, wc, 1);
	if (c16)
		lt_cl_convert_matrices(cx, c, wc, g->batch, g->m, g->n, g->ldc, g->stride_c);
}

/* The GEMM as it is asked, after lt_cl_gemm's checks. */
static void gemm_direct(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c)
{
	if (lt_buf_type(a.buf) != LT_BF16) {
		gemm_f32(be, g, a, b, c, 0);
		return;
	}
	if (lt_cl_gemm_bf16(be, g, a, b, c))
		return;
	size_t na = g->trans_a ? span(g->k, g->m, g->lda) : span(g->m, g->k, g->lda);
	size_t nb = g->trans_b ? span(g->n, g->k, g->ldb) : span(g->k, g->n, g->ldb);
	size_t nc = span(g->m, g->n, g->ldc);
	gemm_widened(be, g, a, b, c, extent(g->stride_a, g->batch, na),
		     extent(g->stride_b, g->batch, nb), extent(g->stride_c, g->batch, nc));
}

/* The rows and columns of C a group of the device's GEMM kernels computes
 * (CLBlast's tuned tiles and the tensor-core ones alike), and the most
 * elements the partial products of a split GEMM may take. */
#define GEMM_TILE 128
#define SPLIT_MAX_ELEMS ((size_t)1 << 26)

/* How many slices of k a GEMM runs as. 1, but where C has too few tiles
 * to give every compute unit of a GPU-sized device (16 or more) two
 * groups while k is long, as a weight gradient of a thin (e.g. LoRA)
 * layer: then the most of 16, 8, 4 or 2 slices, each at least 512 long
 * and a multiple of 64, that keeps the groups within twice the compute
 * units. LLTRAIN_GEMM_SPLIT_K=S asks for S slices wherever k allows (for
 * tests on small devices). Depends only on the shape and the device, so
 * a run gives the same bits every time. */
static int slices_of(struct lt_cl_ctx *cx, const struct lt_gemm *g)
{
	const char *e = getenv("LLTRAIN_GEMM_SPLIT_K");
	int force = e ? atoi(e) : 0, cus = lt_cl_compute_units(cx);
	if (g->batch != 1 || g->k == 0 || (!force && cus < 16))
		return 1;
	long tiles = (long)((g->m + GEMM_TILE - 1) / GEMM_TILE) * ((g->n + GEMM_TILE - 1) / GEMM_TILE);
	for (int s = 16; s >= 2; s /= 2) {
		if (g->k % (64 * s) != 0 || (size_t)s * (size_t)g->m * (size_t)g->n > SPLIT_MAX_ELEMS)
			continue;
		if (force ? s == force : g->k / s >= 512 && tiles * s <= 2L * cus)
			return s;
	}
	return 1;
}

/* C = alpha op(A) op(B) + beta C as `slices` products over k's slices, a
 * batch of one GEMM into f32 partials (scratch slot 4), then summed in
 * slice order into C. */
static void gemm_split(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c,
		       int slices)
{
	struct lt_cl_ctx *cx = lt_cl_ctx(be);
	size_t mn = (size_t)g->m * (size_t)g->n;
	lt_ref parts = lt_cl_scratch(cx, 4, (size_t)slices * mn);
	if (lt_cl_failed(cx))
		return;
	int ks = g->k / slices;
	struct lt_gemm p = *g;
	p.k = ks;
	p.batch = slices;
	p.alpha = 1.0f;
	p.beta = 0.0f;
	p.ldc = g->n;
	p.stride_c = (long)mn;
	p.stride_a = g->trans_a ? (long)ks * g->lda : ks;
	p.stride_b = g->trans_b ? ks : (long)ks * g->ldb;
	gemm_direct(be, &p, a, b, parts);
	lt_cl_sum_slices(cx, c, g->ldc, parts, slices, g->m, g->n, g->alpha, g->beta);
}

/* The number quant.cl gives the type of a weight. */
static int source_type(enum lt_dtype t)
{
	return t == LT_F32 ? 0 : t == LT_BF16 ? 1 : t == LT_Q8_0 ? 2 : 3;
}

/* panel[rows, cols] (dense, of its type) = the block of the weight b (rows
 * of ldb) at row r0, column c0, converted by quant.cl. */
static void convert_panel(struct lt_cl_ctx *cx, lt_ref panel, lt_ref b, int ldb, int r0, int c0,
			  int rows, int cols)
{
	cl_kernel k = lt_cl_kernel(cx, "quant.cl", "", "lt_weight_panel");
	size_t global[2] = { (size_t)cols, (size_t)rows };
	int i = 0;
	if (!k)
		return;
	lt_cl_arg_any(cx, k, &i, panel, (size_t)rows * cols);
	lt_cl_arg_int(cx, k, &i, lt_buf_type(panel.buf) == LT_BF16);
	lt_cl_arg_any(cx, k, &i, b, 0);
	lt_cl_arg_int(cx, k, &i, source_type(lt_buf_type(b.buf)));
	lt_cl_arg_int(cx, k, &i, ldb);
	lt_cl_arg_int(cx, k, &i, r0);
	lt_cl_arg_int(cx, k, &i, c0);
	lt_cl_arg_int(cx, k, &i, rows);
	lt_cl_arg_int(cx, k, &i, cols);
	lt_cl_launch(cx, k, 2, global, NULL, "gemm_quant");
}

/* The GEMM whose weight b is of another type than a (GGUF blocks, or the
 * other of f32 and bf16): a panel of at most LT_GEMM_PANEL_VALUES values
 * at a time converted to a's type, then the GEMM of a's type on it; rows
 * of W for C = A W^T, slabs of whole blocks of its columns for C = A W. */
static void gemm_panels(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c)
{
	struct lt_cl_ctx *cx = lt_cl_ctx(be);
	int block = lt_dtype_is_block(lt_buf_type(b.buf));
	size_t k = (size_t)(g->k > 0 ? g->k : 1);
	struct lt_gemm p = *g;
	LT_ASSERT(g->batch == 1 && (!block || (g->ldb % LT_QBLOCK == 0 && b.off % LT_QBLOCK == 0)));
	int step = (int)(LT_GEMM_PANEL_VALUES / k);
	if (g->trans_b)
		step = step < 1 ? 1 : step > g->n ? g->n : step;
	else {
		LT_ASSERT(!block || g->n % LT_QBLOCK == 0);
		step = block ? step / LT_QBLOCK * LT_QBLOCK : step;
		step = step < LT_QBLOCK ? LT_QBLOCK : step > g->n ? g->n : step;
	}
	lt_ref panel = lt_cl_panel(cx, lt_buf_type(a.buf), (size_t)step * k);
	if (lt_cl_failed(cx))
		return;
	for (int n0 = 0; n0 < g->n; n0 += step) {
		p.n = g->n - n0 < step ? g->n - n0 : step;
		p.ldb = g->trans_b ? g->k : p.n;
		if (g->trans_b)
			convert_panel(cx, panel, b, g->ldb, n0, 0, p.n, g->k);
		else
			convert_panel(cx, panel, b, g->ldb, 0, n0, g->k, p.n);
		lt_cl_gemm(be, &p, a, panel, lt_ref_at(c, (size_t)n0));
	}
}

/* C[b] = alpha op(A[b]) op(B[b]) + beta C[b], see struct lt_gemm: A and B
 * both f32 or both bf16, C f32 (or bf16 with bf16 operands); or B a weight
 * of another type (gemm_panels). */
void lt_cl_gemm(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c)
{
	struct lt_cl_ctx *cx = lt_cl_ctx(be);
	LT_ASSERT(g->batch >= 1 && g->m >= 0 && g->n >= 0 && g->k >= 0);
	size_t na = g->trans_a ? span(g->k, g->m, g->lda) : span(g->m, g->k, g->lda);
	size_t nb = g->trans_b ? span(g->n, g->k, g->ldb) : span(g->k, g->n, g->ldb);
	size_t nc = span(g->m, g->n, g->ldc);
	check_operand(a, g->stride_a, g->batch, na);
	check_operand(b, g->stride_b, g->batch, nb);
	check_operand(c, g->stride_c, g->batch, nc);
	enum lt_dtype type_a = lt_buf_type(a.buf), type_c = lt_buf_type(c.buf);
	LT_ASSERT(!lt_dtype_is_block(type_a) && (type_a == LT_BF16 || type_c == LT_F32));
	if (lt_cl_failed(cx) || g->m == 0 || g->n == 0)
		return;
	if (lt_buf_type(b.buf) != type_a) {
		gemm_panels(be, g, a, b, c);
		return;
	}
	int slices = slices_of(cx, g);
	if (slices > 1)
		gemm_split(be, g, a, b, c, slices);
	else
		gemm_direct(be, g, a, b, c);
}

/* The f32 GEMM: on the tensor cores where lt_cl_gemm_mma takes it, else
 * CLBlast. */
static void gemm_f32(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c,
		     int widened_bf16)
{
	struct lt_cl_ctx *cx = lt_cl_ctx(be);
	if (lt_cl_gemm_mma(be, g, a, b, c, widened_bf16))
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
