/* The CPU backend's oneDNN matmul, where configure found oneDNN: one engine
 * and stream per backend, a primitive cached per shape and operand type
 * (f32 or bf16), each run on the backend's OpenMP team. Without oneDNN
 * every entry point says it cannot, and the callers use OpenBLAS. */
#include "config.h"
#include "cpu_impl.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LT_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>

/* Primitives kept, one per shape; the oldest is replaced when full (the
 * model uses a few dozen shapes with both layouts of its gradients). */
#define CACHE_SLOTS 48

/* What a cached primitive computes: all of struct lt_gemm but the batch
 * (matrices of a batch go one at a time), and the types of A and B (one
 * type) and of C. */
struct shape {
	int trans_a, trans_b, m, n, k, lda, ldb, ldc;
	float alpha, beta;
	enum lt_dtype tab, tc;
};

struct entry {
	struct shape key;
	dnnl_primitive_t prim;  /* NULL: oneDNN has no kernel for it here */
	dnnl_memory_t a, b, c;  /* descriptors over no data; pointed at each call's */
};

struct lt_cpu_dnnl {
	dnnl_engine_t engine;   /* NULL: oneDNN could not start; it is not tried again */
	dnnl_stream_t stream;
	struct entry cache[CACHE_SLOTS];
	int used, next;
};

static dnnl_data_type_t dnnl_type(enum lt_dtype t)
{
	return t == LT_BF16 ? dnnl_bf16 : dnnl_f32;
}

/* A 2-D memory descriptor of rows x cols of type t, row stride ld, or its
 * transpose's (transposed: element (i, j) at j * ld + i). */
static dnnl_status_t matrix_desc(dnnl_memory_desc_t *md, int rows, int cols, int ld,
				 int transposed, enum lt_dtype t)
{
	dnnl_dims_t dims = { rows, cols };
	dnnl_dims_t strides = { transposed ? 1 : ld, transposed ? ld : 1 };
	return dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_type(t), strides);
}

static void drop_entry(struct entry *e)
{
	dnnl_primitive_destroy(e->prim);
	dnnl_memory_destroy(e->a);
	dnnl_memory_destroy(e->b);
	dnnl_memory_destroy(e->c);
	e->prim = NULL;
	e->a = e->b = e->c = NULL;
}

/* The attributes of k: alpha as the output scale, beta as a sum post-op
 * (beta 0 has none, so whatever C held, NaN included, is not read). */
static int make_attr(const struct shape *k, dnnl_primitive_attr_t *attr)
{
	dnnl_post_ops_t post = NULL;
	int ok = dnnl_primitive_attr_create(attr) == dnnl_success;
	if (ok && k->alpha != 1.0f)
		ok = dnnl_primitive_attr_set_output_scales(*attr, 1, 0, &k->alpha) == dnnl_success;
	if (ok && k->beta != 0.0f)
		ok = dnnl_post_ops_create(&post) == dnnl_success &&
		     dnnl_post_ops_append_sum(post, k->beta) == dnnl_success &&
		     dnnl_primitive_attr_set_post_ops(*attr, post) == dnnl_success;
	dnnl_post_ops_destroy(post);
	return ok;
}

/* The primitive (and memories) of shape k in e; e->prim stays NULL when
 * oneDNN cannot do it on this CPU. Made on the team it will run on, as
 * oneDNN may size its blocking by the thread count. */
static void make_entry(struct lt_cpu_dnnl *s, int threads, const struct shape *k,
		       struct entry *e)
{
	dnnl_memory_desc_t ma, mb, mc;
	dnnl_matmul_desc_t desc;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_primitive_desc_t pd = NULL;
	memset(e, 0, sizeof *e);
	e->key = *k;
	int keep = omp_get_max_threads();
	omp_set_num_threads(threads);
	int ok = matrix_desc(&ma, k->m, k->k, k->lda, k->trans_a, k->tab) == dnnl_success &&
		 matrix_desc(&mb, k->k, k->n, k->ldb, k->trans_b, k->tab) == dnnl_success &&
		 matrix_desc(&mc, k->m, k->n, k->ldc, 0, k->tc) == dnnl_success &&
		 dnnl_matmul_desc_init(&desc, &ma, &mb, NULL, &mc) == dnnl_success &&
		 make_attr(k, &attr) &&
		 dnnl_primitive_desc_create(&pd, &desc, attr, s->engine, NULL) == dnnl_success &&
		 dnnl_primitive_create(&e->prim, pd) == dnnl_success &&
		 dnnl_memory_create(&e->a, &ma, s->engine, DNNL_MEMORY_NONE) == dnnl_success &&
		 dnnl_memory_create(&e->b, &mb, s->engine, DNNL_MEMORY_NONE) == dnnl_success &&
		 dnnl_memory_create(&e->c, &mc, s->engine, DNNL_MEMORY_NONE) == dnnl_success;
	omp_set_num_threads(keep);
	if (!ok)
		drop_entry(e);
	dnnl_primitive_desc_destroy(pd);
	dnnl_primitive_attr_destroy(attr);
}

/* The cached entry of g's shape with operands tab and C tc, made on first
 * use. */
static struct entry *entry_of(struct lt_cpu_dnnl *s, int threads, const struct lt_gemm *g,
			      enum lt_dtype tab, enum lt_dtype tc)
{
	/* four-byte fields only: no padding, so the key compares as bytes */
	struct shape k = { g->trans_a, g->trans_b, g->m, g->n, g->k, g->lda, g->ldb, g->ldc,
			   g->alpha, g->beta, tab, tc };
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
	make_entry(s, threads, &k, e);
	return e;
}

/* One matrix through oneDNN's primitive e on the backend's team. */
static int run_primitive(struct lt_cpu_ctx *c, struct entry *e, const void *a, const void *b,
			 void *cm)
{
	struct lt_cpu_dnnl *s = c->dnnl;
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

/* The state with its engine and stream, made at first use; NULL after
 * recording a failure to allocate it. s->engine is NULL when oneDNN cannot
 * start here. */
static struct lt_cpu_dnnl *state_of(struct lt_cpu_ctx *c)
{
	if (c->dnnl)
		return c->dnnl;
	if (!(c->dnnl = calloc(1, sizeof *c->dnnl))) {
		lt_cpu_fail(c, LT_ERR_NOMEM, "cannot allocate oneDNN's state");
		return NULL;
	}
	if (dnnl_engine_create(&c->dnnl->engine, dnnl_cpu, 0) != dnnl_success ||
	    dnnl_stream_create(&c->dnnl->stream, c->dnnl->engine, dnnl_stream_default_flags) !=
		    dnnl_success) {
		dnnl_engine_destroy(c->dnnl->engine);
		c->dnnl->engine = NULL;
	}
	return c->dnnl;
}

/* The entry for g if oneDNN has a kernel for it here, else NULL. */
static struct entry *kernel_for(struct lt_cpu_ctx *c, const struct lt_gemm *g, enum lt_dtype tab,
				enum lt_dtype tc)
{
	struct lt_cpu_dnnl *s = state_of(c);
	struct entry *e = s && s->engine && g->k > 0 ? entry_of(s, c->threads, g, tab, tc) : NULL;
	return e && e->prim ? e : NULL;
}

int lt_cpu_dnnl_gemm(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		     const void *pb, void *pc, enum lt_dtype tab, enum lt_dtype tc)
{
	struct entry *e = kernel_for(c, g, tab, tc);
	size_t as = lt_dtype_size(tab), cs = lt_dtype_size(tc);
	if (!e)
		return 0;
	for (int i = 0; i < g->batch && !c->failed; i++) {
		const char *a = (const char *)pa + (size_t)i * g->stride_a * as;
		const char *b = (const char *)pb + (size_t)i * g->stride_b * as;
		char *cm = (char *)pc + (size_t)i * g->stride_c * cs;
		if (!run_primitive(c, e, a, b, cm))
			lt_cpu_fail(c, LT_ERR_BACKEND, tab == LT_BF16 ? "oneDNN's bf16 matmul failed"
								   : "oneDNN's f32 matmul failed");
	}
	return 1;
}

int lt_cpu_dnnl_has(struct lt_cpu_ctx *c, enum lt_dtype tab)
{
	/* a linear layer's shape, as the model's are */
	struct lt_gemm g = { .trans_b = 1, .m = 64, .n = 64, .k = 64, .alpha = 1.0f,
			     .lda = 64, .ldb = 64, .ldc = 64, .batch = 1 };
	return kernel_for(c, &g, tab, LT_F32) != NULL;
}

int lt_cpu_dnnl_version(char *out, size_t cap)
{
	const dnnl_version_t *v = dnnl_version();
	snprintf(out, cap, "oneDNN %d.%d", v->major, v->minor);
	return 1;
}

void lt_cpu_dnnl_free(struct lt_cpu_ctx *c)
{
	struct lt_cpu_dnnl *s = c->dnnl;
	if (!s)
		return;
	for (int i = 0; i < s->used; i++)
		drop_entry(&s->cache[i]);
	dnnl_stream_destroy(s->stream);
	dnnl_engine_destroy(s->engine);
	free(s);
	c->dnnl = NULL;
}

#else /* no oneDNN */

int lt_cpu_dnnl_gemm(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		     const void *pb, void *pc, enum lt_dtype tab, enum lt_dtype tc)
{
	(void)c, (void)g, (void)pa, (void)pb, (void)pc, (void)tab, (void)tc;
	return 0;
}

int lt_cpu_dnnl_has(struct lt_cpu_ctx *c, enum lt_dtype tab)
{
	(void)c, (void)tab;
	return 0;
}

int lt_cpu_dnnl_version(char *out, size_t cap)
{
	snprintf(out, cap, "no oneDNN");
	return 0;
}

void lt_cpu_dnnl_free(struct lt_cpu_ctx *c)
{
	(void)c;
}

#endif
