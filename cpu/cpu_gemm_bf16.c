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

/* Elements of one matrix of rows x cols with leading dimension ld. */
static size_t span(int rows, int cols, int ld)
{
	return rows && cols ? (size_t)(rows - 1) * ld + cols : 0;
}

static void widen(float *d, const uint16_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		d[i] = lt_bf16_to_f32(s[i]);
}

/* One matrix of the batch through the f32 path. */
static void widened_gemm(struct lt_cpu_ctx *c, const struct lt_gemm *g, const uint16_t *a,
			 const uint16_t *b, void *cm, enum lt_dtype tc)
{
	size_t na = span(g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda);
	size_t nb = span(g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb);
	size_t nc = tc == LT_BF16 ? span(g->m, g->n, g->ldc) : 0;
	float *w = wide_room(c, na + nb + nc);
	if (!w)
		return;
	struct lt_gemm one = *g;
	one.batch = 1;
	widen(w, a, na);
	widen(w + na, b, nb);
	if (tc == LT_F32) {
		lt_cpu_sgemm(c, &one, w, w + na, cm);
		return;
	}
	float *wc = w + na + nb;
	uint16_t *ch = cm;
	for (int i = 0; i < g->m; i++)  /* only C's own elements: the gaps stay */
		widen(wc + (size_t)i * g->ldc, ch + (size_t)i * g->ldc, (size_t)g->n);
	lt_cpu_sgemm(c, &one, w, w + na, wc);
	for (int i = 0; i < g->m; i++)
		for (int j = 0; j < g->n; j++)
			ch[(size_t)i * g->ldc + j] = lt_bf16_from_f32(wc[(size_t)i * g->ldc + j]);
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
