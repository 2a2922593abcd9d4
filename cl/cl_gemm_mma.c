/* TF32 GEMM on NVIDIA tensor cores (gemm_mma.cl): which devices get it,
 * the per-device search for its tile parameters (cached beside the compiled
 * kernels), and its launch. Every other device, and fp32 matmul, keeps
 * CLBlast (cl_gemm.c). */
#include "config.h"
#include "cl_impl.h"

#include <CL/cl_ext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#ifndef CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV
#define CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV 0x4000
#define CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV 0x4001
#endif

#define FILE_NAME "gemm_mma.cl"
#define KERNEL "gemm_mma_tf32"

/* A work-group's tile of C (bm x bn), its warps' tiles (wm x wn), the
 * k-slice and buffers of the pipeline, whether fragments are read with
 * ldmatrix, whether K-contiguous tiles are swizzled rather than padded,
 * whether a lane's two k of a fragment are adjacent (kpair), whether
 * copies inside the matrices skip their bounds (iter) and the rows of
 * tiles that run together (group): the build options of gemm_mma.cl. */
struct tile {
	int bm, bn, bk, wm, wn, stages, ldmatrix, swizzle, kpair, iter, group;
};

/* The tiles the search tries, best guess first. Those over NVIDIA's 48 KiB
 * of local memory per work-group in some layout, or whose options do not
 * suit the problem's rows (iter needs 16-byte copies), fail to build there
 * and are passed over. Measured at 4096^3 on an H100 and an H200: deeper
 * pipelines, 256-wide tiles, 32-wide warp tiles in 3 stages, fragment
 * double buffering and register caps (-cl-nv-maxrregcount, which the
 * compiler did not follow) were all slower than these 2-stage tiles, so
 * only the smaller tiles for smaller devices stay beside them. */
static const struct tile candidates[] = {
	{ 128, 128, 16, 64, 64, 2, 0, 0, 1, 1, 8 },
	{ 128, 128, 32, 64, 64, 2, 0, 1, 1, 1, 8 },
	{ 128, 128, 16, 64, 64, 2, 0, 0, 0, 0, 0 },
	{ 128, 128, 16, 64, 64, 2, 1, 0, 0, 0, 0 },
	{ 128, 128, 16, 64, 32, 2, 0, 0, 0, 0, 0 },
	{ 128, 128, 16, 32, 64, 2, 0, 0, 0, 0, 0 },
	{ 128, 64, 16, 64, 32, 3, 0, 0, 0, 0, 0 },
	{ 64, 128, 16, 32, 64, 3, 0, 0, 0, 0, 0 },
	{ 64, 64, 32, 32, 32, 2, 0, 0, 0, 0, 0 },
};
#define N_MMA ((int)(sizeof candidates / sizeof candidates[0]))

/* The wgmma tiles (gemm_wgmma.cl) the search tries first on compute capability 9.0 with
 * LLTRAIN_GEMM_WGMMA=1, in every layout (wgmma reads TF32 operands K-major only: the
 * kernel stages the others through registers); the search's indices count them before
 * the mma.sync candidates. Rows off 16 bytes refuse to build there. */
static const struct lt_cl_wgmma_tile wg_candidates[] = {
	{ 128, 128, 16, 3, 0, 8 },
	{ 128, 256, 16, 2, 0, 8 },
};
#define N_WG ((int)(sizeof wg_candidates / sizeof wg_candidates[0]))
#define N_CANDIDATES (N_WG + N_MMA)
#define TUNING_KEY_MAX (32 + N_MMA * 11 * 5 + N_WG * 6 * 5)

/* The wgmma tile of candidate i, NULL for an mma.sync one. */
static const struct lt_cl_wgmma_tile *wgmma_tile(int i)
{
	return i < N_WG ? &wg_candidates[i] : NULL;
}

static const char *file_of(int i)
{
	return wgmma_tile(i) ? "gemm_wgmma.cl" : FILE_NAME;
}

static const char *kernel_of(int i)
{
	return wgmma_tile(i) ? "gemm_wgmma" : KERNEL;
}

/* The device's NVIDIA compute capability x 10, 0 when it has none. */
static int mma_capability(cl_device_id dev)
{
	char ext[8192] = "";
	cl_uint major = 0, minor = 0;
	clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, sizeof ext - 1, ext, NULL);
	if (!strstr(ext, "cl_nv_device_attribute_query"))
		return 0;
	if (clGetDeviceInfo(dev, CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, sizeof major, &major,
			    NULL) != CL_SUCCESS ||
	    clGetDeviceInfo(dev, CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV, sizeof minor, &minor,
			    NULL) != CL_SUCCESS)
		return 0;
	return (int)(major * 10 + minor);
}

/* The build options of candidate i for layout (ta, tb) and copy width vec (copies of
 * 4 bytes always check their bounds). */
static void candidate_options(int i, int ta, int tb, int vec, char *out, size_t cap)
{
	if (wgmma_tile(i)) {
		char o[224];
		lt_cl_wgmma_options(wgmma_tile(i), 1, ta, tb, 0, o, sizeof o);
		snprintf(out, cap, "%s -DLT_VEC=%d", o, vec);
		return;
	}
	const struct tile *t = &candidates[i - N_WG];
	snprintf(out, cap,
		 "-DLT_BM=%d -DLT_BN=%d -DLT_BK=%d -DLT_WM=%d -DLT_WN=%d -DLT_STAGES=%d "
		 "-DLT_LDMATRIX=%d -DLT_SWIZZLE=%d -DLT_KPAIR=%d -DLT_ITER=%d -DLT_GROUP=%d "
		 "-DLT_TA=%d -DLT_TB=%d -DLT_VEC=%d",
		 t->bm, t->bn, t->bk, t->wm, t->wn, t->stages, t->ldmatrix, t->swizzle, t->kpair,
		 vec == 4 && t->iter, t->group, ta, tb, vec);
}

cl_int lt_cl_gemm_raw_args(cl_kernel k, const struct lt_gemm *g, cl_mem a, size_t a_off,
			   cl_mem b, size_t b_off, cl_mem c, size_t c_off)
{
	cl_ulong ao = a_off, bo = b_off, co = c_off;
	cl_ulong sa = (cl_ulong)g->stride_a, sb = (cl_ulong)g->stride_b, sc = (cl_ulong)g->stride_c;
	cl_int e = 0;
	cl_uint i = 0;
	e |= clSetKernelArg(k, i++, sizeof(int), &g->m);
	e |= clSetKernelArg(k, i++, sizeof(int), &g->n);
	e |= clSetKernelArg(k, i++, sizeof(int), &g->k);
	e |= clSetKernelArg(k, i++, sizeof(float), &g->alpha);
	e |= clSetKernelArg(k, i++, sizeof(float), &g->beta);
	e |= clSetKernelArg(k, i++, sizeof(cl_mem), &a);
	e |= clSetKernelArg(k, i++, sizeof ao, &ao);
	e |= clSetKernelArg(k, i++, sizeof(int), &g->lda);
	e |= clSetKernelArg(k, i++, sizeof sa, &sa);
	e |= clSetKernelArg(k, i++, sizeof(cl_mem), &b);
	e |= clSetKernelArg(k, i++, sizeof bo, &bo);
	e |= clSetKernelArg(k, i++, sizeof(int), &g->ldb);
	e |= clSetKernelArg(k, i++, sizeof sb, &sb);
	e |= clSetKernelArg(k, i++, sizeof(cl_mem), &c);
	e |= clSetKernelArg(k, i++, sizeof co, &co);
	e |= clSetKernelArg(k, i++, sizeof(int), &g->ldc);
	e |= clSetKernelArg(k, i++, sizeof sc, &sc);
	return e;
}

/* The grid of candidate i's kernel for g: global and local sizes. */
static void grid_of(const struct lt_gemm *g, int i, size_t global[3], size_t local[3])
{
	if (wgmma_tile(i)) {
		lt_cl_wgmma_grid(wgmma_tile(i), g, global, local);
		return;
	}
	const struct tile *t = &candidates[i - N_WG];
	size_t threads = (size_t)(t->bm / t->wm) * (size_t)(t->bn / t->wn) * 32;
	global[0] = ((size_t)g->n + (size_t)t->bn - 1) / (size_t)t->bn * threads;
	global[1] = ((size_t)g->m + (size_t)t->bm - 1) / (size_t)t->bm;
	global[2] = (size_t)g->batch;
	local[0] = threads;
	local[1] = local[2] = 1;
}

/* ------------------------------------------------------------------ */
/* The search: each candidate is built, held to the fp32 reference kernel
 * on a ragged batched problem, and timed on a square one; the fastest that
 * is right wins. */

struct search {
	cl_context ctx;
	cl_device_id dev;
	cl_command_queue q;
	struct lt_cl_ctx *c;  /* for its build options: the winner is then in the binary cache */
	int ta, tb;
};

/* Kernel `name` of `file` built with options, or NULL (no failure
 * recorded: a candidate the compiler refuses is only passed over). */
static cl_kernel build(const struct search *s, const char *file, const char *options,
		       const char *name, cl_program *prog)
{
	char all[512];
	cl_int err;
	lt_cl_build_options(s->c, options, all, sizeof all);
	if (lt_cl_build_program(s->ctx, s->dev, file, all, prog) != LT_OK) {
		lt_errmsg_clear();
		*prog = NULL;
		return NULL;
	}
	cl_kernel k = clCreateKernel(*prog, name, &err);
	if (err != CL_SUCCESS) {
		clReleaseProgram(*prog);
		*prog = NULL;
		return NULL;
	}
	return k;
}

/* Runs k over g (once; `reps` times when timing) and returns the best
 * kernel time in seconds, or -1 when a launch fails. */
static double run(const struct search *s, cl_kernel k, const struct lt_gemm *g,
		  const size_t *global, const size_t *local, cl_mem a, cl_mem b, cl_mem c, int reps)
{
	double best = -1;
	if (lt_cl_gemm_raw_args(k, g, a, 0, b, 0, c, 0) != CL_SUCCESS)
		return -1;
	for (int r = 0; r < reps; r++) {
		cl_event ev = NULL;
		cl_ulong t0 = 0, t1 = 0;
		if (clEnqueueNDRangeKernel(s->q, k, 3, NULL, global, local, 0, NULL, &ev) !=
			    CL_SUCCESS ||
		    clWaitForEvents(1, &ev) != CL_SUCCESS) {
			if (ev)
				clReleaseEvent(ev);
			return -1;
		}
		clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
		clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
		clReleaseEvent(ev);
		double t = (double)(t1 - t0) * 1e-9;
		if (best < 0 || t < best)
			best = t;
	}
	return best;
}

static cl_mem buffer_of(const struct search *s, size_t n, const float *init)
{
	cl_int err;
	cl_mem m = clCreateBuffer(s->ctx, CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0),
				  n * sizeof(float), (void *)init, &err);
	return err == CL_SUCCESS ? m : NULL;
}

static void fill_random(float *x, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
	}
}

/* The ragged, batched problem every candidate must get right: sizes that
 * are no multiple of any tile, K past one stage, beta != 0, and with vec 1
 * rows that start off 16 bytes. */
static struct lt_gemm check_problem(int ta, int tb, int vec)
{
	struct lt_gemm g = { .trans_a = ta, .trans_b = tb, .m = 203, .n = 141, .k = 75,
			     .alpha = 0.75f, .beta = 0.5f, .batch = 2 };
	int a_cols = ta ? g.m : g.k, b_cols = tb ? g.k : g.n;
	g.lda = vec == 4 ? (a_cols + 3) / 4 * 4 + 4 : a_cols + 2;
	g.ldb = vec == 4 ? (b_cols + 3) / 4 * 4 + 4 : b_cols + 1;
	g.ldc = g.n + 5;
	g.stride_a = (long)g.lda * (ta ? g.k : g.m) + (vec == 4 ? 8 : 3);
	g.stride_b = (long)g.ldb * (tb ? g.n : g.k) + (vec == 4 ? 4 : 1);
	g.stride_c = (long)g.ldc * g.m + 7;
	return g;
}

/* sum_k |op(A)[m,k] op(B)[k,n]| of batch bat, in float64. */
static double magnitude(const struct lt_gemm *g, const float *a, const float *b, size_t bat,
			size_t m, size_t n)
{
	double mag = 0;
	for (size_t k = 0; k < (size_t)g->k; k++) {
		size_t ia = bat * (size_t)g->stride_a +
			    (g->trans_a ? k * (size_t)g->lda + m : m * (size_t)g->lda + k);
		size_t ib = bat * (size_t)g->stride_b +
			    (g->trans_b ? n * (size_t)g->ldb + k : k * (size_t)g->ldb + n);
		double p = (double)a[ia] * (double)b[ib];
		mag += p < 0 ? -p : p;
	}
	return mag;
}

/* Nonzero when got holds C of g within TF32's bound of want (the fp32
 * reference): |got - want| <= 2^-9 |alpha| sum_k |a b| (two roundings of
 * 2^-11 each, and room for the reference's own fp32 error), and every
 * element outside C as c0 held it. */
static int result_right(const struct lt_gemm *g, const float *a, const float *b,
			const float *c0, const float *got, const float *want)
{
	size_t nc = (size_t)g->stride_c * (size_t)g->batch;
	for (size_t i = 0; i < nc; i++) {
		size_t bat = i / (size_t)g->stride_c, r = i % (size_t)g->stride_c;
		size_t m = r / (size_t)g->ldc, n = r % (size_t)g->ldc;
		if (m >= (size_t)g->m || n >= (size_t)g->n) {
			if (memcmp(&got[i], &c0[i], sizeof got[i]))
				return 0;
			continue;
		}
		double bound = magnitude(g, a, b, bat, m, n) * (double)g->alpha / 512.0 + 1e-6;
		double err = (double)got[i] - (double)want[i];
		if (!(err <= bound && -err <= bound))
			return 0;
	}
	return 1;
}

/* Host copies of the check problem and their device buffers. */
struct check_data {
	struct lt_gemm g;
	size_t na, nb, nc;
	float *a, *b, *c0, *got, *want;
	cl_mem da, db, dc;
};

static void release_buffers(cl_mem *m, int n)
{
	for (int i = 0; i < n; i++)
		if (m[i])
			clReleaseMemObject(m[i]);
}

static void check_data_free(struct check_data *d)
{
	cl_mem bufs[3] = { d->da, d->db, d->dc };
	release_buffers(bufs, 3);
	free(d->a);
	free(d->b);
	free(d->c0);
	free(d->got);
	free(d->want);
	memset(d, 0, sizeof *d);
}

/* Builds the check problem for vec and runs the reference on it. */
static int check_data_new(const struct search *s, int vec, struct check_data *d)
{
	memset(d, 0, sizeof *d);
	d->g = check_problem(s->ta, s->tb, vec);
	d->na = (size_t)d->g.stride_a * 2;
	d->nb = (size_t)d->g.stride_b * 2;
	d->nc = (size_t)d->g.stride_c * 2;
	d->a = malloc(d->na * sizeof(float));
	d->b = malloc(d->nb * sizeof(float));
	d->c0 = malloc(d->nc * sizeof(float));
	d->got = malloc(d->nc * sizeof(float));
	d->want = malloc(d->nc * sizeof(float));
	if (!d->a || !d->b || !d->c0 || !d->got || !d->want)
		return 0;
	fill_random(d->a, d->na, 1);
	fill_random(d->b, d->nb, 2);
	fill_random(d->c0, d->nc, 3);
	char opt[64];
	cl_program prog;
	snprintf(opt, sizeof opt, "-DLT_TA=%d -DLT_TB=%d", s->ta, s->tb);
	cl_kernel ref = build(s, FILE_NAME, opt, "gemm_reference", &prog);
	if (!ref)
		return 0;
	d->da = buffer_of(s, d->na, d->a);
	d->db = buffer_of(s, d->nb, d->b);
	d->dc = buffer_of(s, d->nc, d->c0);
	size_t global[3] = { (size_t)d->g.n, (size_t)d->g.m, 2 };
	int ok = d->da && d->db && d->dc && run(s, ref, &d->g, global, NULL, d->da, d->db, d->dc, 1) >= 0 &&
	     clEnqueueReadBuffer(s->q, d->dc, CL_TRUE, 0, d->nc * sizeof(float), d->want, 0, NULL,
				 NULL) == CL_SUCCESS;
	clReleaseKernel(ref);
	clReleaseProgram(prog);
	return ok;
}

/* Nonzero when kernel k of candidate cand computes d's problem right. */
static int kernel_right(const struct search *s, cl_kernel k, int cand, struct check_data *d)
{
	size_t global[3], local[3];
	grid_of(&d->g, cand, global, local);
	if (clEnqueueWriteBuffer(s->q, d->dc, CL_TRUE, 0, d->nc * sizeof(float), d->c0, 0, NULL,
				 NULL) != CL_SUCCESS ||
	    run(s, k, &d->g, global, local, d->da, d->db, d->dc, 1) < 0 ||
	    clEnqueueReadBuffer(s->q, d->dc, CL_TRUE, 0, d->nc * sizeof(float), d->got, 0, NULL,
				NULL) != CL_SUCCESS)
		return 0;
	return result_right(&d->g, d->a, d->b, d->c0, d->got, d->want);
}

/* The timing problem: square, 2048 on a side, in the search's layout. */
#define TIME_SIDE 2048

/* Seconds of the best of three runs of k on the timing problem (buffers
 * t[3]), or -1 when it cannot run. */
static double kernel_time(const struct search *s, cl_kernel k, int cand, cl_mem *t)
{
	struct lt_gemm g = { .trans_a = s->ta, .trans_b = s->tb, .m = TIME_SIDE, .n = TIME_SIDE,
			     .k = TIME_SIDE, .alpha = 1.0f, .beta = 0.0f, .lda = TIME_SIDE,
			     .ldb = TIME_SIDE, .ldc = TIME_SIDE, .batch = 1 };
	size_t global[3], local[3];
	grid_of(&g, cand, global, local);
	if (run(s, k, &g, global, local, t[0], t[1], t[2], 1) < 0)  /* warm-up */
		return -1;
	return run(s, k, &g, global, local, t[0], t[1], t[2], 3);
}

/* Tries candidate i: -1 when it fails to build or is wrong, else its time
 * (0 when there are no timing buffers). */
static double try_candidate(const struct search *s, int i, struct check_data *d, cl_mem *t)
{
	char options[256];
	cl_program prog;
	if (wgmma_tile(i) && !lt_cl_wgmma_present(lt_cl_mma_of(s->c)))
		return -1;
	candidate_options(i, s->ta, s->tb, 4, options, sizeof options);
	cl_kernel k = build(s, file_of(i), options, kernel_of(i), &prog);
	if (!k)
		return -1;
	double secs = -1;
	if (kernel_right(s, k, i, d))
		secs = t[0] ? kernel_time(s, k, i, t) : 0;
	clReleaseKernel(k);
	clReleaseProgram(prog);
	return secs;
}

/* Nonzero when candidate i also computes rows that start off 16 bytes right. */
static int unaligned_right(const struct search *s, int i)
{
	struct check_data d;
	char options[256];
	cl_program prog;
	int ok = 0;
	if (check_data_new(s, 1, &d)) {
		candidate_options(i, s->ta, s->tb, 1, options, sizeof options);
		cl_kernel k = build(s, file_of(i), options, kernel_of(i), &prog);
		if (k) {
			ok = kernel_right(s, k, i, &d);
			clReleaseKernel(k);
			clReleaseProgram(prog);
		}
	}
	check_data_free(&d);
	return ok;
}

/* The index of the fastest right candidate, or -1 when none is right. */
static int search_candidates(const struct search *s)
{
	struct check_data d;
	cl_mem t[3] = { NULL, NULL, NULL };
	int best = -1;
	double best_secs = 0;
	if (!check_data_new(s, 4, &d)) {
		check_data_free(&d);
		return -1;
	}
	size_t n = (size_t)TIME_SIDE * TIME_SIDE;
	for (int j = 0; j < 3; j++)
		t[j] = buffer_of(s, n, NULL);
	if (!t[0] || !t[1] || !t[2]) {  /* no room to time: the first right one */
		release_buffers(t, 3);
		t[0] = t[1] = t[2] = NULL;
	}
	for (int i = 0; i < N_CANDIDATES; i++) {
		if (t[0]) {
			float zero = 0;
			for (int j = 0; j < 3; j++)
				clEnqueueFillBuffer(s->q, t[j], &zero, sizeof zero, 0, n * sizeof zero,
						    0, NULL, NULL);
		}
		double secs = try_candidate(s, i, &d, t);
		if (secs >= 0 && (best < 0 || secs < best_secs)) {
			best = i;
			best_secs = secs;
		}
		if (best >= 0 && !t[0])
			break;
	}
	release_buffers(t, 3);
	check_data_free(&d);
	return best;
}

/* ------------------------------------------------------------------ */
/* The search's result, kept in the kernel cache: one line,
 * "<candidate> <unaligned right>" or "none". */

/* The cache key of layout (ta, tb): the layout, whether the wgmma tiles took part
 * (LLTRAIN_GEMM_WGMMA) and the candidate table (a cached index means nothing under another
 * table). */
static void tuning_key(const struct lt_cl_mma *mm, int ta, int tb, char *key, size_t cap)
{
	size_t at = (size_t)snprintf(key, cap, "gemm TA=%d TB=%d%s", ta, tb,
				     lt_cl_wgmma_present(mm) ? "" : " no wgmma");
	for (int i = 0; i < N_WG && at < cap; i++) {
		const struct lt_cl_wgmma_tile *w = &wg_candidates[i];
		at += (size_t)snprintf(key + at, cap - at, " wgmma %d %d %d %d %d %d", w->bm, w->bn,
				       w->bk, w->stages, w->wait, w->group);
	}
	for (int i = 0; i < N_MMA && at < cap; i++) {
		const struct tile *t = &candidates[i];
		at += (size_t)snprintf(key + at, cap - at, " %d %d %d %d %d %d %d %d %d %d %d",
				       t->bm, t->bn, t->bk, t->wm, t->wn, t->stages, t->ldmatrix,
				       t->swizzle, t->kpair, t->iter, t->group);
	}
}

/* Reads a cached result into mm; nonzero when there was a valid one. */
static int read_tuning(struct lt_cl_mma *mm, cl_device_id dev, int ta, int tb)
{
	char key[TUNING_KEY_MAX], line[64];
	int cand = -1, unaligned = 0;
	tuning_key(mm, ta, tb, key, sizeof key);
	if (!lt_cl_cache_get(dev, "gemm-tune", FILE_NAME, key, line, sizeof line))
		return 0;
	if (!strcmp(line, "none\n")) {
		mm->choice[ta][tb] = -1;
		return 1;
	}
	if (sscanf(line, "%d %d", &cand, &unaligned) != 2 || cand < 0 || cand >= N_CANDIDATES)
		return 0;
	mm->choice[ta][tb] = cand;
	mm->unaligned_ok[ta][tb] = unaligned != 0;
	return 1;
}

static void write_tuning(const struct lt_cl_mma *mm, cl_device_id dev, int ta, int tb)
{
	char key[TUNING_KEY_MAX], line[64];
	tuning_key(mm, ta, tb, key, sizeof key);
	if (mm->choice[ta][tb] < 0)
		snprintf(line, sizeof line, "none\n");
	else
		snprintf(line, sizeof line, "%d %d\n", mm->choice[ta][tb], mm->unaligned_ok[ta][tb]);
	lt_cl_cache_put(dev, "gemm-tune", FILE_NAME, key, line);
}

/* Settles mm's choice for layout (ta, tb): from the cache, else by search. */
static void choose_layout(struct lt_cl_ctx *c, struct lt_cl_mma *mm, int ta, int tb)
{
	cl_device_id dev = lt_cl_device(c);
	mm->searched[ta][tb] = 1;
	if (read_tuning(mm, dev, ta, tb))
		return;
	struct search s = { lt_cl_context(c), dev, lt_cl_queue(c), c, ta, tb };
	clFinish(s.q);
	mm->choice[ta][tb] = search_candidates(&s);
	mm->unaligned_ok[ta][tb] = mm->choice[ta][tb] >= 0 && unaligned_right(&s, mm->choice[ta][tb]);
	write_tuning(mm, dev, ta, tb);
}

/* ------------------------------------------------------------------ */

void lt_cl_mma_init(struct lt_cl_mma *mm, cl_device_id dev)
{
	memset(mm, 0, sizeof *mm);
	mm->cc = mma_capability(dev);
}

int lt_cl_mma_present(const struct lt_cl_mma *mm)
{
	return mm->cc >= 80;
}

int lt_cl_mma_usable(const struct lt_cl_mma *mm)
{
	return mm->tf32 && lt_cl_mma_present(mm);
}

void lt_cl_mma_describe(const struct lt_cl_mma *mm, char *out, size_t cap)
{
	if (!lt_cl_mma_usable(mm)) {
		snprintf(out, cap, "CLBlast SGEMM%s", mm->tf32 ? " (fp32: no TF32 tensor cores)" : "");
		return;
	}
	int cand = mm->choice[0][1];
	if (mm->searched[0][1] && cand >= 0 && wgmma_tile(cand))
		snprintf(out, cap, "TF32 tensor cores (wgmma, sm_90a; tile %dx%dx%d)",
			 wgmma_tile(cand)->bm, wgmma_tile(cand)->bn, wgmma_tile(cand)->bk);
	else if (mm->searched[0][1] && cand >= 0)
		snprintf(out, cap, "TF32 tensor cores (mma.sync, sm_%d; tile %dx%dx%d)", mm->cc,
			 candidates[cand - N_WG].bm, candidates[cand - N_WG].bn,
			 candidates[cand - N_WG].bk);
	else
		snprintf(out, cap, "TF32 tensor cores (mma.sync, sm_%d)", mm->cc);
}

void lt_cl_mma_describe_attention(const struct lt_cl_mma *mm, char *out, size_t cap)
{
	if (lt_cl_mma_usable(mm))
		snprintf(out, cap, "flash-style on TF32 tensor cores (mma.sync, sm_%d; the "
			 "backward for heads up to 64 wide)", mm->cc);
	else
		snprintf(out, cap, "OpenCL flash-style kernels");
}

void lt_cl_gemm_args(struct lt_cl_ctx *cx, cl_kernel k, const struct lt_gemm *g, lt_ref a,
		     lt_ref b, lt_ref c, lt_cl_ref_setter *set)
{
	int i = 0;
	/* The operands' extents were checked by lt_cl_gemm. */
	lt_cl_arg_int(cx, k, &i, g->m);
	lt_cl_arg_int(cx, k, &i, g->n);
	lt_cl_arg_int(cx, k, &i, g->k);
	lt_cl_arg_float(cx, k, &i, g->alpha);
	lt_cl_arg_float(cx, k, &i, g->beta);
	set(cx, k, &i, a, 0);
	lt_cl_arg_int(cx, k, &i, g->lda);
	lt_cl_arg_ulong(cx, k, &i, (uint64_t)g->stride_a);
	set(cx, k, &i, b, 0);
	lt_cl_arg_int(cx, k, &i, g->ldb);
	lt_cl_arg_ulong(cx, k, &i, (uint64_t)g->stride_b);
	set(cx, k, &i, c, 0);
	lt_cl_arg_int(cx, k, &i, g->ldc);
	lt_cl_arg_ulong(cx, k, &i, (uint64_t)g->stride_c);
}

/* Nonzero when every row of op(A) and op(B) starts on 16 bytes. */
static int rows_aligned(const struct lt_gemm *g, lt_ref a, lt_ref b)
{
	int batched = g->batch > 1;
	return a.off % 4 == 0 && b.off % 4 == 0 && g->lda % 4 == 0 && g->ldb % 4 == 0 &&
	       (!batched || (g->stride_a % 4 == 0 && g->stride_b % 4 == 0));
}

int lt_cl_gemm_mma(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c,
		   int widened_bf16)
{
	struct lt_cl_ctx *cx = lt_cl_ctx(be);
	struct lt_cl_mma *mm = lt_cl_mma_of(cx);
	int ta = g->trans_a != 0, tb = g->trans_b != 0;
	if (!(widened_bf16 ? lt_cl_mma_present(mm) : lt_cl_mma_usable(mm)))
		return 0;
	if (!mm->searched[ta][tb])
		choose_layout(cx, mm, ta, tb);
	int vec = rows_aligned(g, a, b) ? 4 : 1;
	if (mm->choice[ta][tb] < 0 || (vec == 1 && !mm->unaligned_ok[ta][tb]))
		return 0;
	char options[256];
	int cand = mm->choice[ta][tb];
	candidate_options(cand, ta, tb, vec, options, sizeof options);
	cl_kernel k = lt_cl_kernel(cx, file_of(cand), options, kernel_of(cand));
	lt_cl_gemm_args(cx, k, g, a, b, c, lt_cl_arg_ref);
	size_t global[3], local[3];
	grid_of(g, mm->choice[ta][tb], global, local);
	lt_cl_launch(cx, k, 3, global, local, "gemm");
	return 1;
}
