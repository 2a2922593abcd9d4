/* The CPU backend's GEMM with bf16 operands: oneDNN's matmul primitive
 * where configure found oneDNN and it has a kernel for this CPU (the bf16
 * units of AVX512_BF16 or AMX where present), primitives cached per shape;
 * else the operands widened to f32 for the backend's sgemm. Either way each
 * product of two bf16 is exact in f32 and the sums are f32, so the two
 * differ only in the order of the sums. */
#include "config.h"
#include "cpu_impl.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LT_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

/* Primitives kept, one per shape; the oldest is replaced when full (the
 * model uses a dozen shapes). */
#define CACHE_SLOTS 32

#ifdef LT_HAVE_DNNL
/* What a cached primitive computes: all of struct lt_gemm but the batch
 * (matrices of a batch go one at a time), and the type of C. */
struct shape {
	int trans_a, trans_b, m, n, k, lda, ldb, ldc;
	float alpha, beta;
	enum lt_dtype tc;
};

struct entry {
	struct shape key;
	dnnl_primitive_t prim;  /* NULL: oneDNN has no kernel for it here */
	dnnl_memory_t a, b, c;  /* descriptors over no data; pointed at each call's */
};
#endif

struct lt_cpu_bf16 {
#ifdef LT_HAVE_DNNL
	dnnl_engine_t engine;
	dnnl_stream_t stream;
	struct entry cache[CACHE_SLOTS];
	int used, next;
#endif
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
/* oneDNN. */

#ifdef LT_HAVE_DNNL
/* A 2-D memory descriptor of rows x cols of type t, row stride ld, or its
 * transpose's (transposed: element (i, j) at j * ld + i). */
static dnnl_status_t matrix_desc(dnnl_memory_desc_t *md, int rows, int cols, int ld,
				 int transposed, enum lt_dtype t)
{
	dnnl_dims_t dims = { rows, cols };
	dnnl_dims_t strides = { transposed ? 1 : ld, transposed ? ld : 1 };
	return dnnl_memory_desc_init_by_strides(md, 2, dims, t == LT_BF16 ? dnnl_bf16 : dnnl_f32,
						 strides);
}

/* The primitive (and memories) of shape k in e; e->prim stays NULL when
 * oneDNN cannot do it on this CPU. */
static void make_entry(struct lt_cpu_bf16 *s, const struct shape *k, struct entry *e)
{
	dnnl_memory_desc_t ma, mb, mc;
	dnnl_matmul_desc_t desc;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t post = NULL;
	dnnl_primitive_desc_t pd = NULL;
	memset(e, 0, sizeof *e);
	e->key = *k;
	int ok = matrix_desc(&ma, k->m, k->k, k->lda, k->trans_a, LT_BF16) == dnnl_success &&
		 matrix_desc(&mb, k->k, k->n, k->ldb, k->trans_b, LT_BF16) == dnnl_success &&
		 matrix_desc(&mc, k->m, k->n, k->ldc, 0, k->tc) == dnnl_success &&
		 dnnl_matmul_desc_init(&desc, &ma, &mb, NULL, &mc) == dnnl_success &&
		 dnnl_primitive_attr_create(&attr) == dnnl_success;
	if (ok && k->alpha != 1.0f)
		ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha) == dnnl_success;
	if (ok && k->beta != 0.0f)
		ok = dnnl_post_ops_create(&post) == dnnl_success &&
		     dnnl_post_ops_append_sum(post, k->beta) == dnnl_success &&
		     dnnl_primitive_attr_set_post_ops(attr, post) == dnnl_success;
	ok = ok && dnnl_primitive_desc_create(&pd, &desc, attr, s->engine, NULL) == dnnl_success &&
	     dnnl_primitive_create(&e->prim, pd) == dnnl_success &&
	     dnnl_memory_create(&e->a, &ma, s->engine, DNNL_MEMORY_NONE) == dnnl_success &&
	     dnnl_memory_create(&e->b, &mb, s->engine, DNNL_MEMORY_NONE) == dnnl_success &&
	     dnnl_memory_create(&e->c, &mc, s->engine, DNNL_MEMORY_NONE) == dnnl_success;
	if (!ok) {
		dnnl_primitive_destroy(e->prim);
		dnnl_memory_destroy(e->a);
		dnnl_memory_destroy(e->b);
		dnnl_memory_destroy(e->c);
		e->prim = NULL;
		e->a = e->b = e->c = NULL;
	}
	dnnl_primitive_desc_destroy(pd);
	dnnl_post_ops_destroy(post);
	dnnl_primitive_attr_destroy(attr);
}

static void drop_entry(struct entry *e)
{
	dnnl_primitive_destroy(e->prim);
	dnnl_memory_destroy(e->a);
	dnnl_memory_destroy(e->b);
	dnnl_memory_destroy(e->c);
}

/* The cached entry of g's shape, made on first use. */
static struct entry *entry_of(struct lt_cpu_bf16 *s, const struct lt_gemm *g, enum lt_dtype tc)
{
	/* four-byte fields only: no padding, so the key compares as bytes */
	struct shape k = { g->trans_a, g->trans_b, g->m, g->n, g->k, g->lda, g->ldb, g->ldc,
			   g->alpha, g->beta, tc };
	for (int i = 0; i < s->used; i++)
		if (!memcmp(&s->cache[i].key, &k, sizeof k))
			return &s->cache[i];
	struct entry *e;
	if (s->used < CACHE_SLOTS) {
		e = &s->cache[s->used++];
	} else {  /* the oldest goes */
		e = &s->cache[s->next];
		drop_entry(e);
		s->next = (s->next + 1) % CACHE_SLOTS;
	}
	make_entry(s, &k, e);
	return e;
}

/* One matrix through oneDNN's primitive e on the backend's team. */
static int run_primitive(struct lt_cpu_ctx *c, struct entry *e, const void *a, const void *b,
		     void *cm)
{
	struct lt_cpu_bf16 *s = c->bf16;
	dnnl_exec_arg_t args[3] = { { DNNL_ARG_SRC, e->a }, { DNNL_ARG_WEIGHTS, e->b },
				    { DNNL_ARG_DST, e->c } };
	int keep = omp_get_max_threads();
	omp_set_num_threads(c->threads);  /* oneDNN's OpenMP team is ours */
	int ok = dnnl_memory_set_data_handle(e->a, (void *)a) == dnnl_success &&
		 dnnl_memory_set_data_handle(e->b, (void *)b) == dnnl_success &&
		 dnnl_memory_set_data_handle(e->c, cm) == dnnl_success &&
		 dnnl_primitive_execute(e->prim, s->stream, 3, args) == dnnl_success &&
		 dnnl_stream_wait(s->stream) == dnnl_success;
	omp_set_num_threads(keep);
	return ok;
}
#endif

/* ------------------------------------------------------------------ */

/* The state, made at first use; NULL after recording a failure. */
static struct lt_cpu_bf16 *state_of(struct lt_cpu_ctx *c)
{
	if (c->bf16)
		return c->bf16;
	if (!(c->bf16 = calloc(1, sizeof *c->bf16))) {
		lt_cpu_fail(c, LT_ERR_NOMEM, "cannot allocate the bf16 GEMM's state");
		return NULL;
	}
#ifdef LT_HAVE_DNNL
	if (dnnl_engine_create(&c->bf16->engine, dnnl_cpu, 0) != dnnl_success ||
	    dnnl_stream_create(&c->bf16->stream, c->bf16->engine, dnnl_stream_default_flags) !=
		    dnnl_success) {
		dnnl_engine_destroy(c->bf16->engine);
		c->bf16->engine = NULL;  /* the fallback serves */
	}
#endif
	return c->bf16;
}

void lt_cpu_bf16_describe(struct lt_cpu_ctx *c, char *out, size_t cap)
{
	snprintf(out, cap, "OpenBLAS SGEMM on operands widened to f32");
#ifdef LT_HAVE_DNNL
	/* oneDNN is asked for a kernel of a model-like shape */
	struct lt_gemm g = { .trans_b = 1, .m = 64, .n = 64, .k = 64, .alpha = 1.0f,
			     .lda = 64, .ldb = 64, .ldc = 64, .batch = 1 };
	struct lt_cpu_bf16 *s = state_of(c);
	struct entry *e = s && s->engine ? entry_of(s, &g, LT_F32) : NULL;
	const dnnl_version_t *v = dnnl_version();
	if (e && e->prim)
		snprintf(out, cap, "oneDNN %d.%d matmul", v->major, v->minor);
	else
		snprintf(out, cap, "OpenBLAS SGEMM on operands widened to f32 (oneDNN %d.%d has "
			 "no bf16 matmul for this CPU)", v->major, v->minor);
#else
	(void)c;
#endif
}

void lt_cpu_gemm_bf16(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		      const void *pb, void *pc, enum lt_dtype tc)
{
	struct lt_cpu_bf16 *s = state_of(c);
	size_t csize = lt_dtype_size(tc);
	if (!s)
		return;
	for (int i = 0; i < g->batch && !c->failed; i++) {
		const uint16_t *a = (const uint16_t *)pa + (size_t)i * g->stride_a;
		const uint16_t *b = (const uint16_t *)pb + (size_t)i * g->stride_b;
		void *cm = (char *)pc + (size_t)i * g->stride_c * csize;
#ifdef LT_HAVE_DNNL
		struct entry *e = s->engine && g->k > 0 ? entry_of(s, g, tc) : NULL;
		if (e && e->prim) {
			if (!run_primitive(c, e, a, b, cm))
				lt_cpu_fail(c, LT_ERR_BACKEND, "oneDNN's bf16 matmul failed");
			continue;
		}
#endif
		widened_gemm(c, g, a, b, cm, tc);
	}
}

void lt_cpu_bf16_free(struct lt_cpu_ctx *c)
{
	struct lt_cpu_bf16 *s = c->bf16;
	if (!s)
		return;
#ifdef LT_HAVE_DNNL
	for (int i = 0; i < s->used; i++)
		drop_entry(&s->cache[i]);
	dnnl_stream_destroy(s->stream);
	dnnl_engine_destroy(s->engine);
#endif
	free(s->wide);
	free(s);
	c->bf16 = NULL;
}
