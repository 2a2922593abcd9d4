/* Private to the OpenCL backend: its buffer and context, the helpers that
 * launch kernels, and the ops that cl_ops.c, cl_attention.c and cl_gemm.c
 * give cl_backend.c for its table.
 *
 * Kernel conventions (every *.cl file): an array argument is the pair
 * (global T *x_base, ulong x_off) and the kernel starts from
 * x_base + x_off; lt_cl_arg_ref sets both. An array that the op's caller
 * may give as f32 or bf16 adds an int saying which (bf16.cl, put before
 * every program); lt_cl_arg_real sets the three. Sizes are int; element indices
 * that can pass 2^31 are computed in size_t. No float atomics: every op
 * gives the same bits on every run (sums are split by size, never by
 * scheduling). Programs are built with -cl-std=CL1.2, plus -DLT_FP64=1
 * where the device has cl_khr_fp64 (double accumulators; float with
 * compensated sums otherwise), plus the options each op asks for. */
#ifndef LT_CL_IMPL_H
#define LT_CL_IMPL_H

#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

struct lt_buf {
	struct lt_buf_head head;  /* type and n */
	cl_mem mem;
};

/* Per-op profiling totals (lltrain bench --profile). */
#define LT_CL_PROFILE_OPS 64
struct lt_cl_profile {
	const char *op[LT_CL_PROFILE_OPS];  /* static strings */
	double ns[LT_CL_PROFILE_OPS];
	long calls[LT_CL_PROFILE_OPS];
	int n;
};

struct lt_cl_ctx;

/* The context of an OpenCL backend. */
struct lt_cl_ctx *lt_cl_ctx(lt_backend *be);
cl_command_queue lt_cl_queue(struct lt_cl_ctx *c);
/* Nonzero once an op failed: later ops return at once. */
int lt_cl_failed(struct lt_cl_ctx *c);
/* Records the first failure (a cl_int error code from `what`). */
void lt_cl_fail(struct lt_cl_ctx *c, cl_int err, const char *what);
/* Nonzero when the device has cl_khr_fp64. */
int lt_cl_has_fp64(struct lt_cl_ctx *c);
/* The device's maximum work-group size and local memory bytes. */
size_t lt_cl_max_group(struct lt_cl_ctx *c);
/* The device's compute units. */
int lt_cl_compute_units(struct lt_cl_ctx *c);
size_t lt_cl_local_mem(struct lt_cl_ctx *c);

/* The options a program is built with: lltrain's own (-cl-std, -DLT_FP64),
 * then `options`, then the user's LLTRAIN_CL_OPTIONS. */
void lt_cl_build_options(struct lt_cl_ctx *c, const char *options, char *out, size_t cap);

/* Kernel `name` of the embedded program `file` ("ops.cl", "attention.cl")
 * built with the extra `options` ("" or e.g. "-DLT_D=64"); built (or
 * loaded from the binary cache) on first use and kept. NULL after
 * recording a failure. */
cl_kernel lt_cl_kernel(struct lt_cl_ctx *c, const char *file, const char *options,
		       const char *name);

/* Asserts that an op's argument has the type its contract names (backend.h):
 * f32 or bf16 ("real"), or the one type t. */
void lt_cl_assert_real(lt_ref r);
void lt_cl_assert_type(lt_ref r, enum lt_dtype t);

/* Kernel arguments, set in order: *i is the next argument index. An lt_ref
 * takes two (the cl_mem and the ulong element offset), after checking that
 * n elements from it lie in its buffer: lt_cl_arg_ref for a buffer of 4-byte
 * elements (scratch), lt_cl_arg_any for a buffer of any type (the op checks
 * the type), lt_cl_arg_f32 and lt_cl_arg_i32 for an argument the contract
 * types (asserted). lt_cl_arg_real takes three, for the arrays of f32 or
 * bf16 elements of bf16.cl (asserting one of those): the two, then an int,
 * 1 for bf16. */
void lt_cl_arg_ref(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n);
void lt_cl_arg_any(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n);
void lt_cl_arg_f32(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n);
void lt_cl_arg_i32(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n);
void lt_cl_arg_real(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n);
void lt_cl_arg_int(struct lt_cl_ctx *c, cl_kernel k, int *i, int v);
void lt_cl_arg_uint(struct lt_cl_ctx *c, cl_kernel k, int *i, unsigned v);
void lt_cl_arg_ulong(struct lt_cl_ctx *c, cl_kernel k, int *i, uint64_t v);
void lt_cl_arg_float(struct lt_cl_ctx *c, cl_kernel k, int *i, float v);
/* A __local array of `bytes`. */
void lt_cl_arg_local(struct lt_cl_ctx *c, cl_kernel k, int *i, size_t bytes);

/* Enqueues k over dims dimensions; global sizes must be multiples of the
 * local ones (local may be NULL). `op` (a static string) names the op for
 * --profile. Does nothing after a failure. */
void lt_cl_launch(struct lt_cl_ctx *c, cl_kernel k, int dims, const size_t *global,
		  const size_t *local, const char *op);
/* Rounds n up to a multiple of m. */
static inline size_t lt_cl_round_up(size_t n, size_t m)
{
	return (n + m - 1) / m * m;
}

/* A backend-owned scratch buffer of at least n elements; `slot` (0 to
 * LT_CL_SCRATCH_SLOTS - 1) keeps the users of one op apart. Valid until the
 * next call with the same slot. */
#define LT_CL_SCRATCH_SLOTS 5
lt_ref lt_cl_scratch(struct lt_cl_ctx *c, int slot, size_t n);
/* The backend-owned scratch of at least n elements of type (f32 or bf16)
 * into which a GEMM converts a panel of its weight (cl_gemm.c); valid until
 * the next call. A NULL ref when it cannot be had (the backend failed). */
lt_ref lt_cl_panel(struct lt_cl_ctx *c, enum lt_dtype type, size_t n);

/* Records an event's time under `op` when profiling; releases the event. */
void lt_cl_profile_event(struct lt_cl_ctx *c, cl_event ev, const char *op);
/* For work that enqueues several commands (a library call): a marker
 * before it, and the time from that marker to a marker after it recorded
 * under `op`. Both do nothing unless profiling. */
cl_event lt_cl_profile_mark(struct lt_cl_ctx *c);
void lt_cl_profile_since(struct lt_cl_ctx *c, cl_event mark, const char *op);
/* Nonzero when profiling is on (then pass an event to enqueue calls). */
int lt_cl_profiling(struct lt_cl_ctx *c);

struct lt_cl_device_desc;
/* cl_device.c: what `lltrain info` lists of device d of platform p (its
 * platform and device numbers are left -1). */
void lt_cl_describe_device(cl_platform_id p, cl_device_id d, struct lt_cl_device_desc *out);
/* cl_device.c: the platform and device a spec names (see cl.h), or
 * LT_ERR_NOTFOUND saying what there is. */
enum lt_status lt_cl_pick_device(const char *spec, cl_platform_id *platform, cl_device_id *device);
/* cl_program.c: the text of the embedded kernel file `file` (NULL when
 * there is none) and its length. */
const char *lt_cl_embedded_source(const char *file, size_t *len);
/* cl_program.c: a small text kept in the kernel cache directory under
 * (device, driver, kind, key, the embedded file's text): get copies it to
 * out (NUL-terminated; 0 when there is none), put stores it (failures only
 * lose the cache). */
int lt_cl_cache_get(cl_device_id dev, const char *kind, const char *file, const char *key,
		    char *out, size_t cap);
void lt_cl_cache_put(cl_device_id dev, const char *kind, const char *file, const char *key,
		     const char *text);
/* cl_program.c: the embedded program `file`, after bf16.cl, built for dev
 * with `options`, through the binary cache; a failed build leaves its log in lt_errmsg. */
enum lt_status lt_cl_build_program(cl_context ctx, cl_device_id dev, const char *file,
				   const char *options, cl_program *out);

/* cl_ops.c */
void lt_cl_fill(lt_backend *be, lt_ref x, size_t n, float value);
void lt_cl_copy(lt_backend *be, lt_ref dst, lt_ref src, size_t n);
void lt_cl_convert(lt_backend *be, lt_ref dst, lt_ref src, size_t n);
/* dst[rows x cols, leading dimension ld] = alpha (the sum of `slices` f32
 * matrices [slices][rows][cols] at parts, in order) + beta dst (not read when
 * beta == 0), dst f32 or bf16: the end of a GEMM split along k. */
void lt_cl_sum_slices(struct lt_cl_ctx *c, lt_ref dst, int ld, lt_ref parts, int slices,
		      int rows, int cols, float alpha, float beta);
/* dst = src converted (f32 <-> bf16) over the elements of `batch` matrices
 * of rows x cols, row stride ld, batch stride `stride`: their gaps are not
 * touched. */
void lt_cl_convert_matrices(struct lt_cl_ctx *c, lt_ref dst, lt_ref src, int batch, int rows,
			    int cols, int ld, long stride);
void lt_cl_scale(lt_backend *be, lt_ref x, size_t n, float s);
void lt_cl_add(lt_backend *be, lt_ref y, lt_ref a, lt_ref b, size_t n);
void lt_cl_sum_squares(lt_backend *be, lt_ref out, lt_ref x, size_t n);
void lt_cl_sum(lt_backend *be, lt_ref out, lt_ref x, size_t n);
void lt_cl_embedding_forward(lt_backend *be, lt_ref out, lt_ref tokens, lt_ref table, int N, int C);
void lt_cl_embedding_backward(lt_backend *be, lt_ref dtable, lt_ref tokens, lt_ref dout, int N,
			      int C);
void lt_cl_rmsnorm_forward(lt_backend *be, lt_ref out, lt_ref rstd, lt_ref inp, lt_ref w, int N,
			   int C, float eps);
void lt_cl_rmsnorm_backward(lt_backend *be, lt_ref dinp, lt_ref dw, lt_ref dout, lt_ref inp,
			    lt_ref w, lt_ref rstd, int N, int C);
void lt_cl_rope(lt_backend *be, lt_ref qkv, lt_ref inv_freq, const struct lt_attn_shape *s,
		int backward);
void lt_cl_swiglu_forward(lt_backend *be, lt_ref out, lt_ref h, int N, int F);
void lt_cl_swiglu_backward(lt_backend *be, lt_ref dh, lt_ref dout, lt_ref h, int N, int F);
void lt_cl_xent(lt_backend *be, lt_ref losses, lt_ref logits, lt_ref targets, int N, int V,
		float grad_scale);
void lt_cl_xent_part(lt_backend *be, lt_ref part, lt_ref logits, lt_ref targets, int N, int V,
		     int valid, int v0);
void lt_cl_xent_part_grad(lt_backend *be, lt_ref logits, lt_ref lse, lt_ref targets, int N, int V,
			  int valid, int v0, float grad_scale);
void lt_cl_distill(lt_backend *be, lt_ref losses, lt_ref kl, lt_ref logits, lt_ref teacher,
		   lt_ref targets, int N, int V, const struct lt_distill_loss *d);
void lt_cl_adamw(lt_backend *be, lt_ref param, lt_ref grad, lt_ref m, lt_ref v, size_t n,
		 const struct lt_adamw *hp);

/* cl_attention.c */
void lt_cl_attention_forward(lt_backend *be, lt_ref out, lt_ref lse, lt_ref qkv,
			     const struct lt_attn_shape *s);
void lt_cl_attention_backward(lt_backend *be, lt_ref dqkv, lt_ref dout, lt_ref out, lt_ref lse,
			      lt_ref qkv, const struct lt_attn_shape *s);
void lt_cl_attention_cached(lt_backend *be, lt_ref out, lt_ref qkv, lt_ref kcache, lt_ref vcache,
			    int S, const struct lt_attn_shape *s);

/* cl_gemm_mma.c: TF32 GEMM on NVIDIA tensor cores (compute capability
 * 8.0 and later) when train.matmul = tf32. The tile parameters of each
 * transpose layout are searched for on first use, or read from the cache. */
struct lt_cl_mma {
	int cc;                   /* compute capability x 10; 0: not an NVIDIA device */
	int tf32;                 /* TF32 allowed (lt_backend_set_matmul) */
	int searched[2][2];       /* per (trans_a, trans_b): choice settled */
	int choice[2][2];         /* the tile candidate, -1 when none works */
	int unaligned_ok[2][2];   /* its copy-by-4-bytes form works too */
	int attention[17];        /* per head size / 8: 0 not tried, 1 the tensor-core
				     attention builds, -1 it does not */
	int bf16_gemm[2][2][2];   /* per (trans_a, trans_b, bf16 C): 0 not tried, 1 the
				     BF16 tensor-core GEMM builds, -1 it does not */
	int wgmma_bf16[2][2][2];  /* the same for the wgmma GEMM: 1 it builds and passed
				     its check, -1 not */
};
struct lt_cl_mma *lt_cl_mma_of(struct lt_cl_ctx *c);
cl_context lt_cl_context(struct lt_cl_ctx *c);
cl_device_id lt_cl_device(struct lt_cl_ctx *c);
/* Reads the device's NVIDIA compute capability into a cleared mm. */
void lt_cl_mma_init(struct lt_cl_mma *mm, cl_device_id dev);
/* Nonzero when TF32 is allowed and the device has the tensor cores. */
int lt_cl_mma_usable(const struct lt_cl_mma *mm);
/* What computes GEMMs and attention now, for lltrain info and bench. */
void lt_cl_mma_describe(const struct lt_cl_mma *mm, char *out, size_t cap);
void lt_cl_mma_describe_attention(const struct lt_cl_mma *mm, char *out, size_t cap);
/* Nonzero when the program `file` builds with `options` (then it is kept,
 * as lt_cl_kernel keeps it); a refusal is not a failure of the context. */
int lt_cl_program_builds(struct lt_cl_ctx *c, const char *file, const char *options);
/* Queues g on the tensor cores and returns 1, or returns 0 having done
 * nothing (fp32 asked for, another device, a layout no candidate handles).
 * widened_bf16: the f32 operands are bf16 values widened, which TF32 holds
 * exactly, so the tensor cores serve them whether TF32 is allowed or not. */
int lt_cl_gemm_mma(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c,
		   int widened_bf16);
/* Nonzero when the device has the tensor cores (whatever train.matmul). */
int lt_cl_mma_present(const struct lt_cl_mma *mm);
/* The 17 arguments every tensor-core GEMM kernel takes (M, N, K, alpha, beta, then each
 * operand's buffer and offset through set, leading dimension and batch stride) from g and
 * its operands; lt_cl_gemm_raw_args from raw buffers and element offsets, returning the
 * first error. */
typedef void lt_cl_ref_setter(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n);
void lt_cl_gemm_args(struct lt_cl_ctx *cx, cl_kernel k, const struct lt_gemm *g, lt_ref a,
		     lt_ref b, lt_ref c, lt_cl_ref_setter *set);
cl_int lt_cl_gemm_raw_args(cl_kernel k, const struct lt_gemm *g, cl_mem a, size_t a_off,
			   cl_mem b, size_t b_off, cl_mem c, size_t c_off);

/* cl_gemm_bf16.c */
/* Queues g (bf16 A and B; C f32 or bf16) on the BF16 tensor cores and returns 1, or
 * returns 0 having done nothing (another device, rows not on 16 bytes, a kernel the
 * compiler refuses). */
int lt_cl_gemm_bf16(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c);
/* What computes GEMMs with bf16 operands, for lltrain info. */
void lt_cl_gemm_bf16_describe(const struct lt_cl_mma *mm, char *out, size_t cap);

/* cl_gemm_wgmma.c: GEMM on Hopper's warpgroup tensor cores (gemm_wgmma.cl). */
/* A tile of gemm_wgmma.cl: bm x bn of C (bm / 64 warpgroups), the k-slice and buffers of
 * its pipeline, the wgmma groups left running (wait) and the grouped raster (group). */
struct lt_cl_wgmma_tile {
	int bm, bn, bk, stages, wait, group;
};
/* Nonzero on a device of compute capability 9.0 with LLTRAIN_GEMM_WGMMA=1. */
int lt_cl_wgmma_present(const struct lt_cl_mma *mm);
/* The build options of tile t (fp32 operands as TF32 where tf32) and its grid for g. */
void lt_cl_wgmma_options(const struct lt_cl_wgmma_tile *t, int tf32, int ta, int tb, int c16,
			 char *out, size_t cap);
void lt_cl_wgmma_grid(const struct lt_cl_wgmma_tile *t, const struct lt_gemm *g,
		      size_t global[3], size_t local[3]);
/* Queues g (bf16 A and B with rows on 16 bytes; C f32, or bf16 where c16) and returns 1,
 * or returns 0 having done nothing (the form does not build or failed its check). */
int lt_cl_gemm_wgmma_bf16(struct lt_cl_ctx *cx, const struct lt_gemm *g, lt_ref a, lt_ref b,
			  lt_ref c, int c16);

/* cl_program.c */
/* ptx[0 .. len) (a program's compiled PTX) with every //LTWG: mark removed and its
 * ".target sm_90" made sm_90a; malloc'd, NULL when it has not exactly one such target or
 * memory runs out. */
char *lt_cl_ptx_sm90a(const char *ptx, size_t len);

/* cl_gemm.c */
/* Gives CLBlast tuned GEMM parameters for devices its database lacks
 * (by device name); once per device, before the first GEMM. */
void lt_cl_tune_gemm(cl_device_id dev, const char *name);
void lt_cl_gemm(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c);

#endif
