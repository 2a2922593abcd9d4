/* The CPU backend's GEMM whose b operand (a weight) is of another type than
 * a: GGUF blocks (q8_0, q4_0) or the other of f32 and bf16. A bounded panel
 * of the weight is converted at a time into scratch of a's type, rows split
 * over the team, and the GEMM of lt_cpu_gemm_on computes with it; the whole
 * weight is never converted at once. */
#include "config.h"
#include "cpu_impl.h"

#include <stdlib.h>
#include <string.h>

/* Room for n values of a's type in the panel scratch (LT_GEMM_PANEL_VALUES
 * but for a weight whose one row or 32 columns hold more), or NULL (a
 * failure is recorded). */
static void *panel_room(struct lt_cpu_ctx *c, size_t n)
{
	if (c->panel_n < n) {
		free(c->panel);
		c->panel_n = 0;
		if (!(c->panel = malloc(n * sizeof(float)))) {
			lt_cpu_fail(c, LT_ERR_NOMEM, "cannot allocate the panel of a GEMM whose weight "
				    "is of another type");
			return NULL;
		}
		c->panel_n = n;
	}
	return c->panel;
}

/* dst[n] (of type td) = n values of src (of type ts) from element `at` on;
 * for a block type, at and n are whole blocks. */
static void convert_span(void *dst, enum lt_dtype td, const void *src, enum lt_dtype ts,
			 size_t at, size_t n)
{
	float block[LT_QBLOCK];
	for (size_t i = 0; i < n; i += LT_QBLOCK) {
		size_t len = n - i < LT_QBLOCK ? n - i : LT_QBLOCK;
		const float *v = block;
		if (lt_dtype_is_block(ts))
			lt_dtype_dequantize(ts, (const char *)src + lt_dtype_bytes(ts, at + i), block,
					    LT_QBLOCK);
		else if (ts == LT_BF16)
			for (size_t j = 0; j < len; j++)
				block[j] = lt_bf16_to_f32(((const uint16_t *)src)[at + i + j]);
		else
			v = (const float *)src + at + i;
		if (td == LT_BF16)
			for (size_t j = 0; j < len; j++)
				((uint16_t *)dst)[i + j] = lt_bf16_from_f32(v[j]);
		else
			memcpy((float *)dst + i, v, len * sizeof *v);
	}
}

/* panel[rows, cols] (dense, of type td) = the block of b (rows of ldb, of
 * type tb) at row r0 and column c0, rows over the team. */
static void convert_panel(struct lt_cpu_ctx *c, void *panel, enum lt_dtype td, const void *b,
			  enum lt_dtype tb, int ldb, int r0, int c0, int rows, int cols)
{
	size_t sz = lt_dtype_size(td);
#pragma omp parallel for schedule(static) num_threads(c->threads)
	for (int i = 0; i < rows; i++)
		convert_span((char *)panel + (size_t)i * cols * sz, td, b, tb,
			     (size_t)(r0 + i) * (size_t)ldb + (size_t)c0, (size_t)cols);
}

void lt_cpu_gemm_quant(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		       const void *pb, enum lt_dtype tb, void *pc, enum lt_dtype ta,
		       enum lt_dtype tc)
{
	size_t csize = lt_dtype_size(tc);
	int block = lt_dtype_is_block(tb);
	LT_ASSERT(g->batch == 1 && (!block || g->ldb % LT_QBLOCK == 0));
	size_t k = (size_t)(g->k > 0 ? g->k : 1);
	struct lt_gemm p = *g;
	if (g->trans_b) {  /* C[m, n] = op(A) W[n, k]^T: panels of W's rows */
		int step = (int)(LT_GEMM_PANEL_VALUES / k);
		step = step < 1 ? 1 : step > g->n ? g->n : step;
		void *panel = panel_room(c, (size_t)step * k);
		if (!panel)
			return;
		for (int n0 = 0; n0 < g->n; n0 += step) {
			p.n = g->n - n0 < step ? g->n - n0 : step;
			p.ldb = g->k;
			convert_panel(c, panel, ta, pb, tb, g->ldb, n0, 0, p.n, g->k);
			lt_cpu_gemm_on(c, &p, pa, panel, (char *)pc + (size_t)n0 * csize, ta, tc);
		}
		return;
	}
	/* C[m, n] = op(A) W[k, n]: slabs of W's columns, whole blocks wide */
	int step = (int)(LT_GEMM_PANEL_VALUES / k);
	step = block ? step / LT_QBLOCK * LT_QBLOCK : step;
	step = step < LT_QBLOCK ? LT_QBLOCK : step > g->n ? g->n : step;
	LT_ASSERT(!block || g->n % LT_QBLOCK == 0);
	void *panel = panel_room(c, (size_t)step * k);
	if (!panel)
		return;
	for (int n0 = 0; n0 < g->n; n0 += step) {
		p.n = g->n - n0 < step ? g->n - n0 : step;
		p.ldb = p.n;
		convert_panel(c, panel, ta, pb, tb, g->ldb, 0, n0, g->k, p.n);
		lt_cpu_gemm_on(c, &p, pa, panel, (char *)pc + (size_t)n0 * csize, ta, tc);
	}
}
