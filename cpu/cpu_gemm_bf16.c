/* The CPU backend's GEMM with bf16 operands: oneDNN's matmul (cpu_dnnl.c)
 * where configure found oneDNN and it has a kernel for this CPU (the bf16
 * units of AVX512_BF16 or AMX where present); else the operands widened to
 * f32 for the backend's OpenBLAS sgemm. Either way each product of two
 * bf16 is exact in f32 and the sums are f32, so the two differ only in the
 * order of the sums. */
#include "config.h"
#include "cpu_impl.h"

#include <stdio.h>
#include <stdlib.h>

struct lt_cpu_bf16 {
	float *wide;        /* f32 copies of A, B (and C) for the fallback */
	size_t wide_n;
};

/* ------------------------------------------------------------------ */
/* The fallback: widen, sgemm, round. */

/* f32 room for n elements, or NULL (a failure is recorded). */
static float *wide_room(struct lt_cpu_ctx *c, size_t n)
{
	struct lt_cpu_bf16 *s = c->bf16;
	if (s->wide_n < n) {
		free(s->wide);
		s->wide_n = 0;
		if (!(s->wide = malloc(n * sizeof *s->wide))) {
			lt_cpu_fail(c, LT_ERR_NOMEM, "cannot allocate the f32 copies of a bf16 GEMM's "
				    "operands");
			return NULL;
		}
		s->wide_n = n;
	}
	return s->wide;
}

/* The fallback works on blocks of C of at most BLOCK x BLOCK, over k in
 * steps of BLOCK, so that its f32 copies stay 3 BLOCK^2 floats (12 MiB)
 * whatever the GEMM's size (whole copies of the LM head's operands were
 * over 100 MiB); sgemm runs at full speed on blocks this large. */
#define BLOCK 1024

static int smaller(int a, int b)
{
	return a < b ? a : b;
}

/* d[rows, cols] (rows of cols) = the block of s at row r0, column c0 (rows
 * of ld), widened. */
static void widen_block(float *d, const uint16_t *s, int ld, int r0, int c0, int rows, int cols)
{
	for (int i = 0; i < rows; i++) {
		const uint16_t *row = s + (size_t)(r0 + i) * (size_t)ld + (size_t)c0;
		for (int j = 0; j < cols; j++)
			d[(size_t)i * (size_t)cols + (size_t)j] = lt_bf16_to_f32(row[j]);
	}
}

/* The block of C at (m0, n0), pm x pn: for each step of k, the blocks of
 * op(A) and op(B) widened into wa and wb and multiplied into cb (rows of
 * ldcb), the first step with beta, the rest adding. */
static void widened_block(struct lt_cpu_ctx *c, const struct lt_gemm *g, const uint16_t *a,
			  const uint16_t *b, float *wa, float *wb, float *cb, int ldcb, int m0,
			  int n0, int pm, int pn)
{
	int k0 = 0;
	do {
		int pk = smaller(BLOCK, g->k - k0);
		if (g->trans_a)
			widen_block(wa, a, g->lda, k0, m0, pk, pm);
		else
			widen_block(wa, a, g->lda, m0, k0, pm, pk);
		if (g->trans_b)
			widen_block(wb, b, g->ldb, n0, k0, pn, pk);
		else
			widen_block(wb, b, g->ldb, k0, n0, pk, pn);
		struct lt_gemm one = {
			.trans_a = g->trans_a, .trans_b = g->trans_b, .m = pm, .n = pn, .k = pk,
			.alpha = g->alpha, .beta = k0 ? 1.0f : g->beta,
			.lda = g->trans_a ? (pm > 1 ? pm : 1) : (pk > 1 ? pk : 1),
			.ldb = g->trans_b ? (pk > 1 ? pk : 1) : (pn > 1 ? pn : 1),
			.ldc = ldcb, .batch = 1,
		};
		lt_cpu_sgemm(c, &one, wa, wb, cb);
		k0 += BLOCK;
	} while (k0 < g->k);
}

/* One matrix of the batch through the f32 path, block by block of C. */
static void widened_gemm(struct lt_cpu_ctx *c, const struct lt_gemm *g, const uint16_t *a,
			 const uint16_t *b, void *cm, enum lt_dtype tc)
{
	float *w = wide_room(c, 3 * (size_t)BLOCK * BLOCK);
	if (!w)
		return;
	float *wa = w, *wb = w + (size_t)BLOCK * BLOCK, *wc = w + 2 * (size_t)BLOCK * BLOCK;
	for (int m0 = 0; m0 < g->m; m0 += BLOCK)
		for (int n0 = 0; n0 < g->n; n0 += BLOCK) {
			int pm = smaller(BLOCK, g->m - m0), pn = smaller(BLOCK, g->n - n0);
			if (tc == LT_F32) {
				float *cb = (float *)cm + (size_t)m0 * (size_t)g->ldc + (size_t)n0;
				widened_block(c, g, a, b, wa, wb, cb, g->ldc, m0, n0, pm, pn);
				continue;
			}
			/* a bf16 C: its block widened (beta reads it), summed, rounded once */
			uint16_t *ch = cm;
			if (g->beta != 0.0f)
				widen_block(wc, ch, g->ldc, m0, n0, pm, pn);
			widened_block(c, g, a, b, wa, wb, wc, pn, m0, n0, pm, pn);
			for (int i = 0; i < pm; i++)
				for (int j = 0; j < pn; j++)
					ch[(size_t)(m0 + i) * (size_t)g->ldc + (size_t)(n0 + j)] =
						lt_bf16_from_f32(wc[(size_t)i * (size_t)pn + (size_t)j]);
		}
}

/* ------------------------------------------------------------------ */

/* The state, made at first use; NULL after recording a failure. */
static struct lt_cpu_bf16 *state_of(struct lt_cpu_ctx *c)
{
	if (!c->bf16 && !(c->bf16 = calloc(1, sizeof *c->bf16)))
		lt_cpu_fail(c, LT_ERR_NOMEM, "cannot allocate the bf16 GEMM's state");
	return c->bf16;
}

void lt_cpu_bf16_describe(struct lt_cpu_ctx *c, char *out, size_t cap)
{
	char dnnl[32];
	int built = lt_cpu_dnnl_version(dnnl, sizeof dnnl);
	if (lt_cpu_dnnl_has(c, LT_BF16))
		snprintf(out, cap, "%s matmul", dnnl);
	else if (built)
		snprintf(out, cap, "OpenBLAS SGEMM on operands widened to f32 (%s has no bf16 "
			 "matmul for this CPU)", dnnl);
	else
		snprintf(out, cap, "OpenBLAS SGEMM on operands widened to f32");
}

int lt_cpu_gemm_bf16(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		     const void *pb, void *pc, enum lt_dtype tc)
{
	size_t csize = lt_dtype_size(tc);
	if (lt_cpu_dnnl_gemm(c, g, pa, pb, pc, LT_BF16, tc))
		return 1;
	if (!state_of(c))
		return 0;
	for (int i = 0; i < g->batch && !c->failed; i++) {
		const uint16_t *a = (const uint16_t *)pa + (size_t)i * g->stride_a;
		const uint16_t *b = (const uint16_t *)pb + (size_t)i * g->stride_b;
		void *cm = (char *)pc + (size_t)i * g->stride_c * csize;
		widened_gemm(c, g, a, b, cm, tc);
	}
	return 0;
}

void lt_cpu_bf16_free(struct lt_cpu_ctx *c)
{
	struct lt_cpu_bf16 *s = c->bf16;
	if (!s)
		return;
	free(s->wide);
	free(s);
	c->bf16 = NULL;
}
