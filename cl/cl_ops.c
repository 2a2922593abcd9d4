/* The OpenCL backend's ops other than GEMM and attention: launches of the
 * kernels in ops.cl, vxent.cl and distill.cl (shapes and contracts in
 * src/backend.h). */
#include "config.h"
#include "cl_impl.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

/* The most items a work-group is given: enough to hide memory latency on
 * a GPU, and a size every device we met allows (lower ones are honoured). */
#define GROUP 256
/* Elementwise kernels loop over their elements with at most this many
 * work-groups, so that a billion elements need no billion-item grid. */
#define ELEM_GROUPS_MAX 65536
/* sum and sum_squares: a partial sum per work-group, one group per
 * SUM_CHUNK_MIN elements up to SUM_GROUPS groups: a split that depends on n
 * alone (and the device's group size). */
#define SUM_GROUPS 1024
#define SUM_CHUNK_MIN 8192
/* rmsnorm_backward sums dw over blocks of this many rows... */
#define DW_ROWS 32
/* ... and adds the blocks' sums for this many columns per work-group, its
 * other items splitting the blocks (lanes). */
#define DW_COLS 8
/* embedding_backward's sort ranks this many tokens per work-group, each
 * by GROUP / SORT_TOKENS items that split the comparisons: N items alone
 * (8192) would leave most of a large GPU idle. */
#define SORT_TOKENS 32

/* An accumulator of ops.cl (a double, or a compensated float pair) takes
 * two 4-byte elements of scratch and 8 bytes of local memory. */
#define ACC_BYTES 8

static cl_kernel ops_kernel(struct lt_cl_ctx *c, const char *name)
{
	return lt_cl_kernel(c, "ops.cl", "", name);
}

static void check_range(lt_ref r, size_t n)
{
	LT_ASSERT(r.buf);
	LT_ASSERT(r.off <= lt_buf_elems(r.buf) && n <= lt_buf_elems(r.buf) - r.off);
}

/* Rows of width C that fit in what follows r in its buffer. */
static size_t rows_in(lt_ref r, int C)
{
	LT_ASSERT(r.buf && r.off <= lt_buf_elems(r.buf) && C > 0);
	return (lt_buf_elems(r.buf) - r.off) / (size_t)C;
}

/* The most work-items a group of kernel k may have on the device (its
 * registers can make that less than the device's maximum). */
static size_t kernel_group_limit(struct lt_cl_ctx *c, cl_kernel k)
{
	size_t max = lt_cl_max_group(c), kmax = 0;
	cl_device_id dev;
	cl_int err;
	err = clGetCommandQueueInfo(lt_cl_queue(c), CL_QUEUE_DEVICE, sizeof dev, &dev, NULL);
	if (err == CL_SUCCESS)
		err = clGetKernelWorkGroupInfo(k, dev, CL_KERNEL_WORK_GROUP_SIZE, sizeof kmax,
					       &kmax, NULL);
	return err == CL_SUCCESS && kmax && kmax < max ? kmax : max;
}

/* The largest power of two <= want that both the device and kernel k allow. */
static size_t group_size(struct lt_cl_ctx *c, cl_kernel k, size_t want)
{
	size_t max = kernel_group_limit(c, k), g = 1;
	while (g * 2 <= want && g * 2 <= max)
		g *= 2;
	return g;
}

/* The group size for a kernel whose group strides over `width` columns: a
 * power of two, no larger than the row needs, at most GROUP. */
static size_t group_for_width(struct lt_cl_ctx *c, cl_kernel k, size_t width)
{
	size_t want = 1;
	while (want < width && want < GROUP)
		want *= 2;
	return group_size(c, k, want);
}

/* Launches k (elementwise shape) over n elements, four per item and round
 * (ops.cl says why). */
static void launch_elements(struct lt_cl_ctx *c, cl_kernel k, size_t n, const char *op)
{
	size_t local = group_size(c, k, GROUP), groups = (n + 4 * local - 1) / (4 * local);
	size_t global = (groups < ELEM_GROUPS_MAX ? groups : ELEM_GROUPS_MAX) * local;
	lt_cl_launch(c, k, 1, &global, &local, op);
}

/* Launches k (row shape) as one group of `local` items per row. */
static void launch_rows(struct lt_cl_ctx *c, cl_kernel k, size_t rows, size_t local, const char *op)
{
	size_t global = rows * local;
	lt_cl_launch(c, k, 1, &global, &local, op);
}

/* The tile shape of k over rows x cols: one item per column, `tiles`
 * groups of `local` items per row. */
struct tiling {
	size_t local;
	int tiles;
};

static struct tiling tiling_of(struct lt_cl_ctx *c, cl_kernel k, size_t rows, int cols)
{
	struct tiling t;
	t.local = group_for_width(c, k, (size_t)cols);
	t.tiles = (int)(((size_t)cols + t.local - 1) / t.local);
	LT_ASSERT(rows * (size_t)t.tiles <= INT_MAX);
	return t;
}

static void launch_tiles(struct lt_cl_ctx *c, cl_kernel k, size_t rows, struct tiling t,
			 const char *op)
{
	size_t global = rows * (size_t)t.tiles * t.local;
	lt_cl_launch(c, k, 1, &global, &t.local, op);
}

/* Scratch for count accumulators: 2 * count elements at an even offset
 * (8-byte aligned). Check lt_cl_failed before using it. */
static lt_ref acc_scratch(struct lt_cl_ctx *c, int slot, size_t count)
{
	lt_ref r = lt_cl_scratch(c, slot, 2 * count + 1);
	if (r.off % 2)
		r.off++;
	return r;
}

/* ------------------------------------------------------------------ */
/* Elementwise ops. */

/* x[n] = value */
void lt_cl_fill(lt_backend *be, lt_ref x, size_t n, float value)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(x);
	if (lt_cl_failed(c) || !n)
		return;
	cl_kernel k = ops_kernel(c, "lt_fill");
	int i = 0;
	if (!k)
		return;
	lt_cl_arg_real(c, k, &i, x, n);
	lt_cl_arg_ulong(c, k, &i, n);
	lt_cl_arg_float(c, k, &i, value);
	launch_elements(c, k, n, "fill");
}

/* dst[n] = src[n] of one type, ranges not overlapping: the driver's copy */
void lt_cl_copy(lt_backend *be, lt_ref dst, lt_ref src, size_t n)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	LT_ASSERT(src.buf && dst.buf && lt_buf_type(src.buf) == lt_buf_type(dst.buf));
	if (lt_cl_failed(c) || !n)
		return;
	check_range(dst, n);
	check_range(src, n);
	size_t size = lt_dtype_size(lt_buf_type(src.buf));
	cl_event ev = NULL, *evp = lt_cl_profiling(c) ? &ev : NULL;
	cl_int err = clEnqueueCopyBuffer(lt_cl_queue(c), src.buf->mem, dst.buf->mem,
					 src.off * size, dst.off * size, n * size, 0, NULL, evp);
	if (err != CL_SUCCESS) {
		lt_cl_fail(c, err, "copying on the device");
		return;
	}
	lt_cl_profile_event(c, ev, "copy");
}

/* dst[n] = src[n] converted between f32 and bf16 (a copy within one type).
 * The bf16 side is passed as a ushort buffer; lt_cl_arg_ref's 4-byte check
 * does not apply to it, so its range is checked here. */
void lt_cl_convert(lt_backend *be, lt_ref dst, lt_ref src, size_t n)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	enum lt_dtype from = lt_buf_type(src.buf), to = lt_buf_type(dst.buf);
	LT_ASSERT(from != LT_I32 && to != LT_I32);
	if (from == to) {
		lt_cl_copy(be, dst, src, n);
		return;
	}
	if (lt_cl_failed(c) || !n)
		return;
	cl_kernel k = ops_kernel(c, to == LT_BF16 ? "lt_f32_to_bf16" : "lt_bf16_to_f32");
	int i = 0;
	if (!k)
		return;
	lt_cl_arg_any(c, k, &i, dst, n);
	lt_cl_arg_any(c, k, &i, src, n);
	lt_cl_arg_ulong(c, k, &i, n);
	launch_elements(c, k, n, "convert");
}

void lt_cl_convert_matrices(struct lt_cl_ctx *c, lt_ref dst, lt_ref src, int batch, int rows,
			    int cols, int ld, long stride)
{
	enum lt_dtype to = lt_buf_type(dst.buf);
	LT_ASSERT(lt_buf_type(src.buf) != to && to != LT_I32 && lt_buf_type(src.buf) != LT_I32);
	size_t n = (size_t)batch * rows * cols;
	size_t extent = (size_t)(rows - 1) * ld + cols + (size_t)(batch - 1) * stride;
	if (lt_cl_failed(c) || !n)
		return;
	cl_kernel k = ops_kernel(c, to == LT_BF16 ? "lt_f32_to_bf16_matrices"
						  : "lt_bf16_to_f32_matrices");
	int i = 0;
	if (!k)
		return;
	lt_cl_arg_any(c, k, &i, dst, extent);
	lt_cl_arg_any(c, k, &i, src, extent);
	lt_cl_arg_int(c, k, &i, rows);
	lt_cl_arg_int(c, k, &i, cols);
	lt_cl_arg_int(c, k, &i, ld);
	lt_cl_arg_ulong(c, k, &i, (uint64_t)stride);
	lt_cl_arg_ulong(c, k, &i, n);
	launch_elements(c, k, n, "convert");
}

void lt_cl_sum_slices(struct lt_cl_ctx *c, lt_ref dst, int ld, lt_ref parts, int slices,
		      int rows, int cols, float alpha, float beta)
{
	size_t n = (size_t)rows * cols;
	if (lt_cl_failed(c) || !n)
		return;
	check_range(parts, (size_t)slices * n);
	check_range(dst, (size_t)(rows - 1) * (size_t)ld + (size_t)cols);
	cl_kernel k = ops_kernel(c, lt_buf_type(dst.buf) == LT_BF16 ? "lt_sum_slices_bf16"
								    : "lt_sum_slices");
	int i = 0;
	if (!k)
		return;
	lt_cl_arg_any(c, k, &i, dst, (size_t)(rows - 1) * (size_t)ld + (size_t)cols);
	lt_cl_arg_int(c, k, &i, ld);
	lt_cl_arg_any(c, k, &i, parts, (size_t)slices * n);
	lt_cl_arg_int(c, k, &i, slices);
	lt_cl_arg_int(c, k, &i, rows);
	lt_cl_arg_int(c, k, &i, cols);
	lt_cl_arg_float(c, k, &i, alpha);
	lt_cl_arg_float(c, k, &i, beta);
	launch_elements(c, k, n, "gemm");
}

/* x[n] *= s */
void lt_cl_scale(lt_backend *be, lt_ref x, size_t n, float s)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(x);
	if (lt_cl_failed(c) || !n)
		return;
	cl_kernel k = ops_kernel(c, "lt_scale");
	int i = 0;
	if (!k)
		return;
	lt_cl_arg_real(c, k, &i, x, n);
	lt_cl_arg_ulong(c, k, &i, n);
	lt_cl_arg_float(c, k, &i, s);
	launch_elements(c, k, n, "scale");
}

/* y[n] = a[n] + b[n] (y may be a or b) */
void lt_cl_add(lt_backend *be, lt_ref y, lt_ref a, lt_ref b, size_t n)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(y);
	lt_cl_assert_real(a);
	lt_cl_assert_real(b);
	if (lt_cl_failed(c) || !n)
		return;
	cl_kernel k = ops_kernel(c, "lt_add");
	int i = 0;
	if (!k)
		return;
	lt_cl_arg_real(c, k, &i, y, n);
	lt_cl_arg_real(c, k, &i, a, n);
	lt_cl_arg_real(c, k, &i, b, n);
	lt_cl_arg_ulong(c, k, &i, n);
	launch_elements(c, k, n, "add");
}

/* param, m, v[n] updated by AdamW from grad[n] (backend.h); the bias
 * corrections computed here in double, as on the CPU. */
void lt_cl_adamw(lt_backend *be, lt_ref param, lt_ref grad, lt_ref m, lt_ref v, size_t n,
		 const struct lt_adamw *hp)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_type(param, LT_F32);
	lt_cl_assert_type(grad, LT_F32);
	lt_cl_assert_type(m, LT_F32);
	lt_cl_assert_type(v, LT_F32);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(hp->step >= 1);
	if (!n)
		return;
	cl_kernel k = ops_kernel(c, "lt_adamw");
	int i = 0;
	if (!k)
		return;
	lt_cl_arg_f32(c, k, &i, param, n);
	lt_cl_arg_f32(c, k, &i, grad, n);
	lt_cl_arg_f32(c, k, &i, m, n);
	lt_cl_arg_f32(c, k, &i, v, n);
	lt_cl_arg_ulong(c, k, &i, n);
	lt_cl_arg_float(c, k, &i, hp->beta1);
	lt_cl_arg_float(c, k, &i, hp->beta2);
	lt_cl_arg_float(c, k, &i, 1.0f - hp->beta1);
	lt_cl_arg_float(c, k, &i, 1.0f - hp->beta2);
	lt_cl_arg_float(c, k, &i, hp->lr);
	lt_cl_arg_float(c, k, &i, hp->eps);
	lt_cl_arg_float(c, k, &i, hp->weight_decay);
	lt_cl_arg_float(c, k, &i, hp->grad_scale);
	lt_cl_arg_float(c, k, &i, (float)(1.0 / (1.0 - pow(hp->beta1, hp->step))));
	lt_cl_arg_float(c, k, &i, (float)(1.0 / (1.0 - pow(hp->beta2, hp->step))));
	launch_elements(c, k, n, "adamw");
}

/* ------------------------------------------------------------------ */
/* Sums: a partial sum per work-group (scratch slot 2), then their sum in a fixed order. */

/* out[0] = sum of x[i] (squares: x[i]^2) over n */
static void sum_in_two_passes(lt_backend *be, lt_ref out, lt_ref x, size_t n, int squares,
			      const char *op)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_type(out, LT_F32);
	lt_cl_assert_real(x);
	if (lt_cl_failed(c))
		return;
	if (!n) {
		lt_cl_fill(be, out, 1, 0.0f);
		return;
	}
	cl_kernel kp = ops_kernel(c, "lt_sum_partials"), kf = ops_kernel(c, "lt_sum_finish");
	if (!kp || !kf)
		return;
	size_t groups = (n + SUM_CHUNK_MIN - 1) / SUM_CHUNK_MIN;
	if (groups > SUM_GROUPS)
		groups = SUM_GROUPS;
	lt_ref part = acc_scratch(c, 2, groups);
	if (lt_cl_failed(c))
		return;
	size_t lp = group_size(c, kp, GROUP), lf = group_size(c, kf, GROUP);
	int i = 0;
	lt_cl_arg_ref(c, kp, &i, part, 2 * groups);
	lt_cl_arg_real(c, kp, &i, x, n);
	lt_cl_arg_ulong(c, kp, &i, n);
	lt_cl_arg_int(c, kp, &i, squares);
	lt_cl_arg_local(c, kp, &i, lp * ACC_BYTES);
	launch_rows(c, kp, groups, lp, op);

	i = 0;
	lt_cl_arg_f32(c, kf, &i, out, 1);
	lt_cl_arg_ref(c, kf, &i, part, 2 * groups);
	lt_cl_arg_int(c, kf, &i, (int)groups);
	lt_cl_arg_local(c, kf, &i, lf * ACC_BYTES);
	launch_rows(c, kf, 1, lf, op);
}

/* out[0] = sum of x[i]^2 over n */
void lt_cl_sum_squares(lt_backend *be, lt_ref out, lt_ref x, size_t n)
{
	sum_in_two_passes(be, out, x, n, 1, "sum_squares");
}

/* out[0] = sum of x[i] over n */
void lt_cl_sum(lt_backend *be, lt_ref out, lt_ref x, size_t n)
{
	sum_in_two_passes(be, out, x, n, 0, "sum");
}

/* ------------------------------------------------------------------ */
/* Embedding. */

/* out[N,C] = table[tokens[n], :], zeros for a token < 0 */
void lt_cl_embedding_forward(lt_backend *be, lt_ref out, lt_ref tokens, lt_ref table, int N, int C)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(out);
	lt_cl_assert_type(tokens, LT_I32);
	lt_cl_assert_real(table);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && C > 0);
	size_t V = rows_in(table, C);
	LT_ASSERT(V <= INT_MAX);
	cl_kernel k = ops_kernel(c, "lt_embedding_forward");
	if (!N || !k)
		return;
	struct tiling t = tiling_of(c, k, (size_t)N, C);
	int i = 0;
	lt_cl_arg_real(c, k, &i, out, (size_t)N * C);
	lt_cl_arg_i32(c, k, &i, tokens, (size_t)N);
	lt_cl_arg_real(c, k, &i, table, V * C);
	lt_cl_arg_int(c, k, &i, C);
	lt_cl_arg_int(c, k, &i, (int)V);
	lt_cl_arg_int(c, k, &i, t.tiles);
	launch_tiles(c, k, (size_t)N, t, "embedding_forward");
}

/* dtable[tokens[n], :] += dout[n, :], tokens < 0 skipped. The tokens are ranked by (token, n)
 * into scratch slot 2 (order[N], then run[N]); then the first rank of each
 * token adds its rows in order of n, one item per column, so that repeated
 * tokens never race and add up in the CPU's order. */
void lt_cl_embedding_backward(lt_backend *be, lt_ref dtable, lt_ref tokens, lt_ref dout, int N,
			      int C)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_type(dtable, LT_F32);
	lt_cl_assert_type(tokens, LT_I32);
	lt_cl_assert_real(dout);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && C > 0);
	size_t V = rows_in(dtable, C);
	LT_ASSERT(V <= INT_MAX);
	cl_kernel ks = ops_kernel(c, "lt_embedding_sort");
	cl_kernel kb = ops_kernel(c, "lt_embedding_backward");
	if (!N || !ks || !kb)
		return;
	lt_ref order = lt_cl_scratch(c, 2, 2 * (size_t)N);
	if (lt_cl_failed(c))
		return;
	lt_ref run = lt_ref_at(order, (size_t)N);

	size_t ls = group_size(c, ks, GROUP);
	int parts = ls >= 2 * SORT_TOKENS ? (int)(ls / SORT_TOKENS) : 1;
	size_t gs = lt_cl_round_up((size_t)N, ls / (size_t)parts) * (size_t)parts;
	int i = 0;
	lt_cl_arg_ref(c, ks, &i, order, (size_t)N);
	lt_cl_arg_ref(c, ks, &i, run, (size_t)N);
	lt_cl_arg_i32(c, ks, &i, tokens, (size_t)N);
	lt_cl_arg_int(c, ks, &i, N);
	lt_cl_arg_int(c, ks, &i, parts);
	lt_cl_arg_local(c, ks, &i, ls * sizeof(cl_int));
	lt_cl_arg_local(c, ks, &i, 3 * ls * sizeof(cl_int));
	lt_cl_launch(c, ks, 1, &gs, &ls, "embedding_backward");

	struct tiling t = tiling_of(c, kb, (size_t)N, C);
	i = 0;
	lt_cl_arg_f32(c, kb, &i, dtable, V * C);
	lt_cl_arg_i32(c, kb, &i, tokens, (size_t)N);
	lt_cl_arg_real(c, kb, &i, dout, (size_t)N * C);
	lt_cl_arg_ref(c, kb, &i, order, (size_t)N);
	lt_cl_arg_ref(c, kb, &i, run, (size_t)N);
	lt_cl_arg_int(c, kb, &i, C);
	lt_cl_arg_int(c, kb, &i, (int)V);
	lt_cl_arg_int(c, kb, &i, t.tiles);
	launch_tiles(c, kb, (size_t)N, t, "embedding_backward");
}

/* ------------------------------------------------------------------ */
/* RMSNorm. */

/* rstd[N] = 1 / sqrt(mean(inp[n,:]^2) + eps); out[N,C] = inp * rstd * w */
void lt_cl_rmsnorm_forward(lt_backend *be, lt_ref out, lt_ref rstd, lt_ref inp, lt_ref w, int N,
			   int C, float eps)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(out);
	lt_cl_assert_type(rstd, LT_F32);
	lt_cl_assert_real(inp);
	lt_cl_assert_real(w);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && C > 0);
	cl_kernel k = ops_kernel(c, "lt_rmsnorm_forward");
	if (!N || !k)
		return;
	size_t NC = (size_t)N * C, local = group_for_width(c, k, (size_t)C);
	int i = 0;
	lt_cl_arg_real(c, k, &i, out, NC);
	lt_cl_arg_f32(c, k, &i, rstd, (size_t)N);
	lt_cl_arg_real(c, k, &i, inp, NC);
	lt_cl_arg_real(c, k, &i, w, (size_t)C);
	lt_cl_arg_int(c, k, &i, C);
	lt_cl_arg_float(c, k, &i, eps);
	lt_cl_arg_local(c, k, &i, local * sizeof(cl_float));
	launch_rows(c, k, (size_t)N, local, "rmsnorm_forward");
}

/* dinp[N,C] += r w dout - (r^3 / C) inp sum_c(dout w inp), a group per row;
 * dw[C] += sum_n dout * inp * rstd, as partial sums over blocks of DW_ROWS
 * rows (scratch slot 2), then per column over the blocks in a fixed order. */
void lt_cl_rmsnorm_backward(lt_backend *be, lt_ref dinp, lt_ref dw, lt_ref dout, lt_ref inp,
			    lt_ref w, lt_ref rstd, int N, int C)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(dinp);
	lt_cl_assert_type(dw, LT_F32);
	lt_cl_assert_real(dout);
	lt_cl_assert_real(inp);
	lt_cl_assert_real(w);
	lt_cl_assert_type(rstd, LT_F32);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && C > 0);
	cl_kernel kx = ops_kernel(c, "lt_rmsnorm_backward");
	cl_kernel kp = ops_kernel(c, "lt_rmsnorm_dw_partials");
	cl_kernel kf = ops_kernel(c, "lt_rmsnorm_dw_finish");
	if (!N || !kx || !kp || !kf)
		return;
	size_t NC = (size_t)N * C, blocks = ((size_t)N + DW_ROWS - 1) / DW_ROWS;
	lt_ref part = acc_scratch(c, 2, blocks * C);
	if (lt_cl_failed(c))
		return;

	size_t local = group_for_width(c, kx, (size_t)C);
	int i = 0;
	lt_cl_arg_real(c, kx, &i, dinp, NC);
	lt_cl_arg_real(c, kx, &i, dout, NC);
	lt_cl_arg_real(c, kx, &i, inp, NC);
	lt_cl_arg_real(c, kx, &i, w, (size_t)C);
	lt_cl_arg_f32(c, kx, &i, rstd, (size_t)N);
	lt_cl_arg_int(c, kx, &i, C);
	lt_cl_arg_local(c, kx, &i, local * sizeof(cl_float));
	launch_rows(c, kx, (size_t)N, local, "rmsnorm_backward");

	struct tiling t = tiling_of(c, kp, blocks, C);
	i = 0;
	lt_cl_arg_ref(c, kp, &i, part, 2 * blocks * C);
	lt_cl_arg_real(c, kp, &i, dout, NC);
	lt_cl_arg_real(c, kp, &i, inp, NC);
	lt_cl_arg_f32(c, kp, &i, rstd, (size_t)N);
	lt_cl_arg_int(c, kp, &i, N);
	lt_cl_arg_int(c, kp, &i, C);
	lt_cl_arg_int(c, kp, &i, DW_ROWS);
	lt_cl_arg_int(c, kp, &i, t.tiles);
	launch_tiles(c, kp, blocks, t, "rmsnorm_backward");

	size_t lf = group_size(c, kf, GROUP), cols = lf < DW_COLS ? lf : DW_COLS;
	size_t gf = ((size_t)C + cols - 1) / cols * lf;
	i = 0;
	lt_cl_arg_f32(c, kf, &i, dw, (size_t)C);
	lt_cl_arg_ref(c, kf, &i, part, 2 * blocks * C);
	lt_cl_arg_int(c, kf, &i, (int)blocks);
	lt_cl_arg_int(c, kf, &i, C);
	lt_cl_arg_int(c, kf, &i, (int)cols);
	lt_cl_arg_local(c, kf, &i, lf * ACC_BYTES);
	lt_cl_launch(c, kf, 1, &gf, &lf, "rmsnorm_backward");
}

/* ------------------------------------------------------------------ */
/* RoPE, SwiGLU, cross-entropy. */

/* Rotates the query and key heads of qkv[B*T, (H+2K)*D] in place by
 * (pos0 + n % T) * inv_freq[i] on the pairs (i, i + D/2); backward rotates
 * back. A group per row, computing the row's (cos, sin) once. */
void lt_cl_rope(lt_backend *be, lt_ref qkv, lt_ref inv_freq, const struct lt_attn_shape *s,
		int backward)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(qkv);
	lt_cl_assert_type(inv_freq, LT_F32);
	if (lt_cl_failed(c))
		return;
	int B = s->B, T = s->T, H = s->H, K = s->K, D = s->D;
	LT_ASSERT(B >= 0 && T > 0 && H > 0 && K > 0 && D > 0 && H % K == 0 && D % 2 == 0 &&
		  s->pos0 >= 0);
	LT_ASSERT((size_t)D * sizeof(cl_float) <= lt_cl_local_mem(c));
	cl_kernel k = ops_kernel(c, "lt_rope");
	if (!B || !k)
		return;
	size_t rows = (size_t)B * T, W = (size_t)(H + 2 * K) * D;
	size_t local = group_for_width(c, k, (size_t)(H + K) * (D / 2));
	int i = 0;
	lt_cl_arg_real(c, k, &i, qkv, rows * W);
	lt_cl_arg_f32(c, k, &i, inv_freq, (size_t)D / 2);
	lt_cl_arg_int(c, k, &i, T);
	lt_cl_arg_int(c, k, &i, s->pos0);
	lt_cl_arg_int(c, k, &i, H + K);
	lt_cl_arg_int(c, k, &i, D);
	lt_cl_arg_int(c, k, &i, (int)W);
	lt_cl_arg_float(c, k, &i, backward ? -1.0f : 1.0f);
	lt_cl_arg_local(c, k, &i, (size_t)D * sizeof(cl_float));
	launch_rows(c, k, rows, local, "rope");
}

/* out[N,F] = silu(gate) * up, from h[N,2F] = [gate | up] */
void lt_cl_swiglu_forward(lt_backend *be, lt_ref out, lt_ref h, int N, int F)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(out);
	lt_cl_assert_real(h);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && F > 0);
	cl_kernel k = ops_kernel(c, "lt_swiglu_forward");
	if (!N || !k)
		return;
	struct tiling t = tiling_of(c, k, (size_t)N, F);
	int i = 0;
	lt_cl_arg_real(c, k, &i, out, (size_t)N * F);
	lt_cl_arg_real(c, k, &i, h, (size_t)N * 2 * F);
	lt_cl_arg_int(c, k, &i, F);
	lt_cl_arg_int(c, k, &i, t.tiles);
	launch_tiles(c, k, (size_t)N, t, "swiglu_forward");
}

/* dh[N,2F] = gradient w.r.t. h (overwritten) from dout[N,F] */
void lt_cl_swiglu_backward(lt_backend *be, lt_ref dh, lt_ref dout, lt_ref h, int N, int F)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(dh);
	lt_cl_assert_real(dout);
	lt_cl_assert_real(h);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && F > 0);
	cl_kernel k = ops_kernel(c, "lt_swiglu_backward");
	if (!N || !k)
		return;
	struct tiling t = tiling_of(c, k, (size_t)N, F);
	int i = 0;
	lt_cl_arg_real(c, k, &i, dh, (size_t)N * 2 * F);
	lt_cl_arg_real(c, k, &i, dout, (size_t)N * F);
	lt_cl_arg_real(c, k, &i, h, (size_t)N * 2 * F);
	lt_cl_arg_int(c, k, &i, F);
	lt_cl_arg_int(c, k, &i, t.tiles);
	launch_tiles(c, k, (size_t)N, t, "swiglu_backward");
}

/* losses[N] from logits[N,V] and targets[N], and with grad_scale != 0 the
 * gradient in place of the logits; a group per row. */
void lt_cl_xent(lt_backend *be, lt_ref losses, lt_ref logits, lt_ref targets, int N, int V,
		float grad_scale)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_type(losses, LT_F32);
	lt_cl_assert_real(logits);
	lt_cl_assert_type(targets, LT_I32);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && V > 0);
	cl_kernel k = ops_kernel(c, "lt_xent");
	if (!N || !k)
		return;
	size_t local = group_for_width(c, k, (size_t)V);
	int i = 0;
	lt_cl_arg_f32(c, k, &i, losses, (size_t)N);
	lt_cl_arg_real(c, k, &i, logits, (size_t)N * V);
	lt_cl_arg_i32(c, k, &i, targets, (size_t)N);
	lt_cl_arg_int(c, k, &i, V);
	lt_cl_arg_float(c, k, &i, grad_scale);
	lt_cl_arg_int(c, k, &i, grad_scale != 0.0f);
	lt_cl_arg_local(c, k, &i, local * sizeof(cl_float));
	lt_cl_arg_local(c, k, &i, local * ACC_BYTES);
	launch_rows(c, k, (size_t)N, local, "xent");
}

/* part[N,3] of the slice logits[N,V] (real columns c < valid, starting
 * at v0 of the vocabulary) and targets[N]; a group per row (vxent.cl). */
void lt_cl_xent_part(lt_backend *be, lt_ref part, lt_ref logits, lt_ref targets, int N, int V,
		     int valid, int v0)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_type(part, LT_F32);
	lt_cl_assert_real(logits);
	lt_cl_assert_type(targets, LT_I32);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && V > 0 && valid >= 0 && valid <= V && v0 >= 0);
	cl_kernel k = lt_cl_kernel(c, "vxent.cl", "", "lt_xent_part");
	if (!N || !k)
		return;
	size_t local = group_for_width(c, k, (size_t)(valid ? valid : 1));
	int i = 0;
	lt_cl_arg_f32(c, k, &i, part, 3 * (size_t)N);
	lt_cl_arg_real(c, k, &i, logits, (size_t)N * V);
	lt_cl_arg_i32(c, k, &i, targets, (size_t)N);
	lt_cl_arg_int(c, k, &i, V);
	lt_cl_arg_int(c, k, &i, valid);
	lt_cl_arg_int(c, k, &i, v0);
	lt_cl_arg_local(c, k, &i, local * sizeof(cl_float));
	lt_cl_arg_local(c, k, &i, local * ACC_BYTES);
	launch_rows(c, k, (size_t)N, local, "xent_part");
}

/* logits[N,V] = the slice's gradient in place, from lse[N] and targets[N];
 * tiles over (row, column) (vxent.cl). */
void lt_cl_xent_part_grad(lt_backend *be, lt_ref logits, lt_ref lse, lt_ref targets, int N, int V,
			  int valid, int v0, float grad_scale)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(logits);
	lt_cl_assert_type(lse, LT_F32);
	lt_cl_assert_type(targets, LT_I32);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && V > 0 && valid >= 0 && valid <= V && v0 >= 0);
	cl_kernel k = lt_cl_kernel(c, "vxent.cl", "", "lt_xent_part_grad");
	if (!N || !k)
		return;
	struct tiling t = tiling_of(c, k, (size_t)N, V);
	int i = 0;
	lt_cl_arg_real(c, k, &i, logits, (size_t)N * V);
	lt_cl_arg_f32(c, k, &i, lse, (size_t)N);
	lt_cl_arg_i32(c, k, &i, targets, (size_t)N);
	lt_cl_arg_int(c, k, &i, V);
	lt_cl_arg_int(c, k, &i, valid);
	lt_cl_arg_int(c, k, &i, v0);
	lt_cl_arg_float(c, k, &i, grad_scale);
	lt_cl_arg_int(c, k, &i, t.tiles);
	launch_tiles(c, k, (size_t)N, t, "xent_part_grad");
}

/* losses[N], kl[N] from logits[N,V], the teacher's [N,V] and targets[N],
 * and with grad_scale != 0 the gradient in place of the logits; a group
 * per row (distill.cl). */
void lt_cl_distill(lt_backend *be, lt_ref losses, lt_ref kl, lt_ref logits, lt_ref teacher,
		   lt_ref targets, int N, int V, const struct lt_distill_loss *d)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_type(losses, LT_F32);
	lt_cl_assert_type(kl, LT_F32);
	lt_cl_assert_real(logits);
	lt_cl_assert_real(teacher);
	lt_cl_assert_type(targets, LT_I32);
	if (lt_cl_failed(c))
		return;
	LT_ASSERT(N >= 0 && V > 0 && d->temperature > 0.0f);
	LT_ASSERT(d->alpha >= 0.0f && d->alpha <= 1.0f);
	cl_kernel k = lt_cl_kernel(c, "distill.cl", "", "lt_distill");
	if (!N || !k)
		return;
	size_t local = group_for_width(c, k, (size_t)V);
	int i = 0;
	lt_cl_arg_f32(c, k, &i, losses, (size_t)N);
	lt_cl_arg_f32(c, k, &i, kl, (size_t)N);
	lt_cl_arg_real(c, k, &i, logits, (size_t)N * V);
	lt_cl_arg_real(c, k, &i, teacher, (size_t)N * V);
	lt_cl_arg_i32(c, k, &i, targets, (size_t)N);
	lt_cl_arg_int(c, k, &i, V);
	lt_cl_arg_float(c, k, &i, d->alpha);
	lt_cl_arg_float(c, k, &i, d->temperature);
	lt_cl_arg_float(c, k, &i, d->grad_scale);
	lt_cl_arg_int(c, k, &i, d->grad_scale != 0.0f);
	lt_cl_arg_local(c, k, &i, local * sizeof(cl_float));
	lt_cl_arg_local(c, k, &i, local * ACC_BYTES);
	launch_rows(c, k, (size_t)N, local, "distill");
}
