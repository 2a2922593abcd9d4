/* GEMMs with bf16 operands on Hopper's warpgroup tensor cores (gemm_wgmma.cl: wgmma
 * through PTX finished for sm_90a): which devices get them (compute capability 9.0), the
 * tile of each layout, the check every built form passes once before it is used, and the
 * launch. The TF32 forms of the same kernel are candidates of the TF32 search
 * (cl_gemm_mma.c). Everywhere else the mma.sync kernels keep the work. */
#include "config.h"
#include "cl_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILE_NAME "gemm_wgmma.cl"
#define KERNEL "gemm_wgmma"

/* The bf16 tile of layout (ta, tb), one per layout: NT, NN, TN. */
static const struct lt_cl_wgmma_tile bf16_tiles[3] = {
	{ 128, 128, 32, 3, 0, 8 },
	{ 128, 128, 32, 3, 0, 8 },
	{ 128, 128, 32, 3, 0, 8 },
};

/* Off unless LLTRAIN_GEMM_WGMMA=1 until it has been measured on a GPU. */
int lt_cl_wgmma_present(const struct lt_cl_mma *mm)
{
	const char *e = getenv("LLTRAIN_GEMM_WGMMA");
	return mm->cc == 90 && e && !strcmp(e, "1");
}

void lt_cl_wgmma_options(const struct lt_cl_wgmma_tile *t, int tf32, int ta, int tb, int c16,
			 char *out, size_t cap)
{
	snprintf(out, cap,
		 "-DLT_BM=%d -DLT_BN=%d -DLT_BK=%d -DLT_STAGES=%d -DLT_WAIT=%d -DLT_GROUP=%d "
		 "-DLT_TF32=%d -DLT_TA=%d -DLT_TB=%d -DLT_C16=%d",
		 t->bm, t->bn, t->bk, t->stages, t->wait, t->group, tf32, ta, tb, c16);
}

void lt_cl_wgmma_grid(const struct lt_cl_wgmma_tile *t, const struct lt_gemm *g,
		      size_t global[3], size_t local[3])
{
	size_t threads = (size_t)t->bm / 64 * 128;
	global[0] = ((size_t)g->n + (size_t)t->bn - 1) / (size_t)t->bn * threads;
	global[1] = ((size_t)g->m + (size_t)t->bm - 1) / (size_t)t->bm;
	global[2] = (size_t)g->batch;
	local[0] = threads;
	local[1] = local[2] = 1;
}

/* ------------------------------------------------------------------ */
/* The check: a ragged, batched problem with beta != 0 (K past two stages and ending inside
 * a 16-byte chunk) against a float64 product on the host. */

struct check {
	struct lt_gemm g;
	int c16;
	size_t na, nb, nc;
	uint16_t *a, *b;
	float *c0, *got;    /* C before and after, as floats (c16: bf16 values) */
	cl_mem da, db, dc;
};

static struct lt_gemm check_problem(int ta, int tb)
{
	struct lt_gemm g = { .trans_a = ta, .trans_b = tb, .m = 203, .n = 141, .k = 85,
			     .alpha = 0.75f, .beta = 0.5f, .batch = 2 };
	int a_cols = ta ? g.m : g.k, b_cols = tb ? g.k : g.n;
	g.lda = (a_cols + 7) / 8 * 8 + 8;
	g.ldb = (b_cols + 7) / 8 * 8 + 16;
	g.ldc = g.n + 5;
	g.stride_a = (long)g.lda * (ta ? g.k : g.m) + 8;
	g.stride_b = (long)g.ldb * (tb ? g.n : g.k) + 24;
	g.stride_c = (long)g.ldc * g.m + 7;
	return g;
}

static uint16_t random_bf16(unsigned *seed)
{
	*seed = *seed * 1664525u + 1013904223u;
	return lt_bf16_from_f32((float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f);
}

static void check_free(struct check *d)
{
	cl_mem m[3] = { d->da, d->db, d->dc };
	for (int i = 0; i < 3; i++)
		if (m[i])
			clReleaseMemObject(m[i]);
	free(d->a);
	free(d->b);
	free(d->c0);
	free(d->got);
}

static cl_mem device_copy(cl_context ctx, const void *p, size_t bytes)
{
	cl_int err;
	cl_mem m = clCreateBuffer(ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, (void *)p,
				  &err);
	return err == CL_SUCCESS ? m : NULL;
}

/* Fills d for layout (ta, tb) and copies it to the device; 0 when out of memory. */
static int check_new(struct check *d, cl_context ctx, int ta, int tb, int c16)
{
	memset(d, 0, sizeof *d);
	d->g = check_problem(ta, tb);
	d->c16 = c16;
	d->na = (size_t)d->g.stride_a * 2;
	d->nb = (size_t)d->g.stride_b * 2;
	d->nc = (size_t)d->g.stride_c * 2;
	d->a = malloc(d->na * sizeof *d->a);
	d->b = malloc(d->nb * sizeof *d->b);
	d->c0 = malloc(d->nc * sizeof *d->c0);
	d->got = malloc(d->nc * sizeof *d->got);
	uint16_t *c_bits = malloc(d->nc * sizeof *c_bits);
	if (!d->a || !d->b || !d->c0 || !d->got || !c_bits) {
		free(c_bits);
		return 0;
	}
	unsigned seed = 7;
	for (size_t i = 0; i < d->na; i++)
		d->a[i] = random_bf16(&seed);
	for (size_t i = 0; i < d->nb; i++)
		d->b[i] = random_bf16(&seed);
	for (size_t i = 0; i < d->nc; i++) {
		c_bits[i] = random_bf16(&seed);
		d->c0[i] = lt_bf16_to_f32(c_bits[i]);
	}
	d->da = device_copy(ctx, d->a, d->na * sizeof *d->a);
	d->db = device_copy(ctx, d->b, d->nb * sizeof *d->b);
	d->dc = c16 ? device_copy(ctx, c_bits, d->nc * sizeof *c_bits)
		    : device_copy(ctx, d->c0, d->nc * sizeof *d->c0);
	free(c_bits);
	return d->da && d->db && d->dc;
}

/* Nonzero when d->got holds alpha op(A) op(B) + beta C0 within fp32 summation's error
 * (and bf16's rounding of C with c16), and everything outside C as it was. */
static int check_right(const struct check *d)
{
	const struct lt_gemm *g = &d->g;
	for (size_t i = 0; i < d->nc; i++) {
		size_t bat = i / (size_t)g->stride_c, r = i % (size_t)g->stride_c;
		size_t m = r / (size_t)g->ldc, n = r % (size_t)g->ldc;
		if (m >= (size_t)g->m || n >= (size_t)g->n) {
			if (memcmp(&d->got[i], &d->c0[i], sizeof d->got[i]))
				return 0;
			continue;
		}
		double sum = 0, mag = 0;
		for (size_t k = 0; k < (size_t)g->k; k++) {
			size_t ia = bat * (size_t)g->stride_a +
				    (g->trans_a ? k * (size_t)g->lda + m : m * (size_t)g->lda + k);
			size_t ib = bat * (size_t)g->stride_b +
				    (g->trans_b ? n * (size_t)g->ldb + k : k * (size_t)g->ldb + n);
			double p = (double)lt_bf16_to_f32(d->a[ia]) * lt_bf16_to_f32(d->b[ib]);
			sum += p;
			mag += p < 0 ? -p : p;
		}
		double want = (double)g->alpha * sum + (double)g->beta * d->c0[i];
		double bound = 1e-5 * (mag + 1.0);
		if (d->c16)
			bound += (want < 0 ? -want : want) / 256.0;
		double err = (double)d->got[i] - want;
		if (!(err <= bound && -err <= bound))
			return 0;
	}
	return 1;
}

/* Runs kernel k of tile t on d's problem and reads C back. */
static int check_run(struct lt_cl_ctx *cx, cl_kernel k, const struct lt_cl_wgmma_tile *t,
		     struct check *d)
{
	const struct lt_gemm *g = &d->g;
	cl_int e = lt_cl_gemm_raw_args(k, g, d->da, 0, d->db, 0, d->dc, 0);
	if (e != CL_SUCCESS)
		return 0;
	size_t global[3], local[3];
	lt_cl_wgmma_grid(t, g, global, local);
	cl_command_queue q = lt_cl_queue(cx);
	if (clEnqueueNDRangeKernel(q, k, 3, NULL, global, local, 0, NULL, NULL) != CL_SUCCESS)
		return 0;
	if (!d->c16)
		return clEnqueueReadBuffer(q, d->dc, CL_TRUE, 0, d->nc * sizeof(float), d->got, 0,
					   NULL, NULL) == CL_SUCCESS;
	uint16_t *bits = malloc(d->nc * sizeof *bits);
	int ok = bits && clEnqueueReadBuffer(q, d->dc, CL_TRUE, 0, d->nc * sizeof *bits, bits, 0,
					     NULL, NULL) == CL_SUCCESS;
	for (size_t j = 0; ok && j < d->nc; j++)
		d->got[j] = lt_bf16_to_f32(bits[j]);
	free(bits);
	return ok;
}

/* Nonzero when the bf16 form (ta, tb, c16) builds and computes the check right. */
static int bf16_form_works(struct lt_cl_ctx *cx, int ta, int tb, int c16, const char *options)
{
	if (!lt_cl_program_builds(cx, FILE_NAME, options))
		return 0;
	cl_kernel k = lt_cl_kernel(cx, FILE_NAME, options, KERNEL);
	struct check d;
	memset(&d, 0, sizeof d);
	clFinish(lt_cl_queue(cx));
	int ok = k && check_new(&d, lt_cl_context(cx), ta, tb, c16) &&
		 check_run(cx, k, &bf16_tiles[ta ? 2 : tb ? 0 : 1], &d) && check_right(&d);
	check_free(&d);
	return ok;
}

int lt_cl_gemm_wgmma_bf16(struct lt_cl_ctx *cx, const struct lt_gemm *g, lt_ref a, lt_ref b,
			  lt_ref c, int c16)
{
	struct lt_cl_mma *mm = lt_cl_mma_of(cx);
	int ta = g->trans_a != 0, tb = g->trans_b != 0;
	const struct lt_cl_wgmma_tile *t = &bf16_tiles[ta ? 2 : tb ? 0 : 1];
	char options[256];
	lt_cl_wgmma_options(t, 0, ta, tb, c16, options, sizeof options);
	int *state = &mm->wgmma_bf16[ta][tb][c16];
	if (*state == 0)
		*state = bf16_form_works(cx, ta, tb, c16, options) ? 1 : -1;
	if (*state < 0)
		return 0;
	cl_kernel k = lt_cl_kernel(cx, FILE_NAME, options, KERNEL);
	lt_cl_gemm_args(cx, k, g, a, b, c, lt_cl_arg_any);  /* rows on 16 bytes: the caller */
	size_t global[3], local[3];
	lt_cl_wgmma_grid(t, g, global, local);
	lt_cl_launch(cx, k, 3, global, local, "gemm");
	return 1;
}
