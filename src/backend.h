/* The backend interface: every op the model runs, as a table of function
 * pointers that the CPU and OpenCL backends fill, plus the registry that
 * picks one by name.
 *
 * Memory is backend-owned: an lt_buf holds n elements of one type (enum
 * lt_dtype: float32, bfloat16 or int32), fixed when it is made, and is
 * addressed by (buffer, element offset), an lt_ref. Each op names the type
 * of every argument; an argument of another type is a caller's bug
 * (LT_ASSERT). The model never touches device memory; it only reads and
 * writes through the table.
 *
 * Ops return nothing: a backend that fails inside an op (a driver error)
 * remembers the first failure, turns later ops into no-ops, and reports it
 * from sync(). Arguments that break an op's contract (a bad shape) are bugs
 * in the caller and hit LT_ASSERT.
 *
 * Conventions: matrices are row-major; "N" is a count of token rows (batch
 * times sequence), "C" the model width, "V" the vocabulary, "F" the MLP
 * hidden width, "H"/"K" the query/key-value head counts, "D" the head size.
 * Ops that write a gradient say whether they overwrite (=) or add (+=).
 * An op writes only the elements its contract names (never the gaps of a
 * leading dimension or batch stride), and for a fixed thread count gives
 * bitwise the same result every time it runs.
 *
 * Ownership: lt_backend_new gives a backend that lt_backend_free releases;
 * buffers from buf_new are released with buf_free before the backend, and
 * host views (below) with lt_host_view_free. */
#ifndef LT_BACKEND_H
#define LT_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct lt_buf lt_buf;
typedef struct lt_backend lt_backend;

/* The element types of buffers. */
enum lt_dtype {
	LT_F32,   /* IEEE binary32 */
	LT_BF16,  /* bfloat16: the upper 16 bits of a binary32 (8-bit exponent,
		     7 stored mantissa bits), held as uint16_t on the host */
	LT_I32,   /* int32: token ids */
	/* Frozen weights in GGUF's blocks of 32 values, exactly its layouts:
	 * an element is one value, and a buffer's size, every ref's offset and
	 * every count into it are whole blocks (multiples of 32). Only
	 * buf_new, buf_free, read and write (raw blocks) and the b operand of
	 * gemm take them. */
	LT_Q8_0,  /* 34 bytes: an f16 scale d, then 32 int8 q; value j = d q[j] */
	LT_Q4_0,  /* 18 bytes: an f16 scale d, then 16 bytes whose low nibbles are
		     values 0..15 and high nibbles 16..31, each d (q - 8) */
};

/* Values a GEMM converts of a weight of another type at a time (see gemm):
 * the backend's scratch for it is this many of a's type. */
#define LT_GEMM_PANEL_VALUES ((size_t)1 << 22)
/* Values of one block of a type (32 for the block types, else 1). */
#define LT_QBLOCK 32
/* Bytes of one element (not of a block type), and the type's name ("f32",
 * "bf16", "i32", "q8_0", "q4_0"). */
size_t lt_dtype_size(enum lt_dtype t);
const char *lt_dtype_name(enum lt_dtype t);
/* Whether t is a block type, and the bytes of n elements of t (n whole
 * blocks for those). */
int lt_dtype_is_block(enum lt_dtype t);
size_t lt_dtype_bytes(enum lt_dtype t, size_t n);
/* n values (whole blocks) of a block type, from blocks to floats, and
 * from floats to blocks as GGUF's reference quantizers make them (scales
 * rounded to the nearest even f16; q8_0's d = max |x| / 127 and q = x / d
 * rounded half away from zero; q4_0's d = the value of largest magnitude
 * over -8 and q = min(15, trunc(x / d + 8.5))). */
/* The float an IEEE half stands for, exactly; and the half nearest a float
 * (ties to even, subnormals kept, beyond the largest half infinity, NaN a
 * quiet NaN). */
float lt_half_to_f32(uint16_t h);
uint16_t lt_half_from_f32(float f);
void lt_dtype_dequantize(enum lt_dtype t, const void *blocks, float *dst, size_t n);
void lt_dtype_quantize(enum lt_dtype t, const float *src, void *blocks, size_t n);

/* What every backend's struct lt_buf begins with, so that the core reads a
 * buffer's type and size without knowing the backend. */
struct lt_buf_head {
	enum lt_dtype type;
	size_t n;  /* elements */
};

static inline enum lt_dtype lt_buf_type(const lt_buf *b)
{
	return ((const struct lt_buf_head *)(const void *)b)->type;
}

static inline size_t lt_buf_elems(const lt_buf *b)
{
	return ((const struct lt_buf_head *)(const void *)b)->n;
}

/* A place in a buffer: off counts elements (of the buffer's type) from the
 * buffer's start. */
typedef struct lt_ref {
	lt_buf *buf;
	size_t off;
} lt_ref;

static inline lt_ref lt_ref_at(lt_ref r, size_t elems)
{
	r.off += elems;
	return r;
}

/* C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b] for b < batch, where
 * op(X) is X or X^T, op(A) is m x k, op(B) is k x n, C is m x n, all
 * row-major with leading dimensions lda/ldb/ldc and batch strides in
 * elements; lda is the stored row length of A (>= k, or >= m when
 * trans_a), likewise ldb. beta == 0 ignores what C held (NaNs included). */
struct lt_gemm {
	int trans_a, trans_b;
	int m, n, k;
	float alpha, beta;
	int lda, ldb, ldc;
	long stride_a, stride_b, stride_c;
	int batch;
};

/* The packed attention input: one row per token of width (H + 2K) * D,
 * holding the H query heads, then the K key heads, then the K value heads,
 * each D wide. Query head h reads key/value head h / (H / K) (grouped-query
 * attention). Rows are ordered (b, t): token n is batch n / T, and sits at
 * position pos0 + n % T of its sequence (pos0 is 0 for a whole sequence;
 * when decoding, the position of the first new token after the cached ones). */
struct lt_attn_shape {
	int B, T, H, K, D;
	int pos0;
};

struct lt_adamw {
	float lr, beta1, beta2, eps, weight_decay;
	float grad_scale;  /* each gradient is multiplied by this first (clipping, averaging) */
	int step;          /* 1-based, for bias correction */
};

/* The weights of the distillation loss (see distill). */
struct lt_distill_loss {
	float alpha;        /* of the cross-entropy; 1 - alpha of T^2 KL */
	float temperature;  /* T > 0 */
	float grad_scale;   /* 0: losses only */
};

struct lt_device_info {
	char name[256];
	size_t mem_bytes;
	int compute_units;
	char gemm[128];      /* what computes GEMMs now, e.g. "CLBlast SGEMM" */
	char attention[96];  /* what computes attention */
	char bf16[224];      /* what bf16 runs on, and whether to expect a speed-up */
	int gpu;             /* 1: an accelerator (an OpenCL device that is not a CPU);
				0: a CPU, an OpenCL CPU device (PoCL) included */
};

/* How GEMMs may round their operands (train.matmul). */
enum lt_matmul {
	LT_MATMUL_FP32,  /* fp32 products and sums (the default) */
	LT_MATMUL_TF32,  /* operands rounded to TF32 (10 mantissa bits) where the
			    device has TF32 matrix units, fp32 sums; fp32 elsewhere */
};

/* One op's share of the device time while profiling (lltrain bench --profile). */
struct lt_op_time {
	const char *op;   /* the op's name, a static string */
	double seconds;   /* device time of its kernels */
	long calls;       /* kernels launched */
};

struct lt_backend_ops {
	const char *name;

	/* Releases the backend's own resources (not the buffers). */
	void (*free)(lt_backend *be);
	/* Describes the device this backend runs on. */
	void (*info)(lt_backend *be, struct lt_device_info *out);

	/* Memory. buf_new makes a buffer of n elements of the given type; it
	 * returns LT_ERR_NOMEM/LT_ERR_DEVMEM with the size in lt_errmsg when
	 * the allocation is refused; contents are undefined. */
	enum lt_status (*buf_new)(lt_backend *be, enum lt_dtype type, size_t n, lt_buf **out);
	void (*buf_free)(lt_backend *be, lt_buf *b);
	/* Host <-> device copies of n elements of the buffer's type (the host
	 * side holds the same type: float, uint16_t bfloat16 bits or int32_t);
	 * they complete before returning. */
	void (*write)(lt_backend *be, lt_ref dst, const void *src, size_t n);
	void (*read)(lt_backend *be, void *dst, lt_ref src, size_t n);
	/* (optional) The same copies without waiting, after the ops queued
	 * before them and possibly beside later ones. A read's dst must stay
	 * untouched until reads_wait has seen it done; ops queued after the
	 * next read_start (or after that wait) see it done. A write's src must
	 * stay unchanged, and its dst unused by ops, until sync. reads_wait
	 * waits until at most `keep` of the started reads (the newest) are
	 * still under way. */
	void (*write_start)(lt_backend *be, lt_ref dst, const void *src, size_t n);
	void (*read_start)(lt_backend *be, void *dst, lt_ref src, size_t n);
	enum lt_status (*reads_wait)(lt_backend *be, int keep);
	/* Waits for every queued op; returns the first failure since creation. */
	enum lt_status (*sync)(lt_backend *be);
	/* (optional) Direct host pointer to a buffer's elements, NULL when the
	 * buffer lives in device memory. */
	void *(*host_ptr)(lt_backend *be, lt_ref r);
	/* (optional) Registers host memory p[bytes] (page-aligned; it stays
	 * allocated until unpin) so that read and write copy to and from it at
	 * full speed; returns a handle for unpin, or NULL when it cannot (the
	 * copies still work, slower). */
	void *(*pin)(lt_backend *be, void *p, size_t bytes);
	void (*unpin)(lt_backend *be, void *handle);
	/* (optional) Bytes of device memory the backend's buffers hold now and
	 * held at most since creation (its own scratch included). */
	void (*mem_usage)(lt_backend *be, size_t *now, size_t *peak);
	/* (optional) profile(be, 1) clears the per-op device times and starts
	 * recording them, profile(be, 0) stops; profile_read (after sync) fills
	 * up to max entries, largest first, and returns how many there are. */
	void (*profile)(lt_backend *be, int on);
	int (*profile_read)(lt_backend *be, struct lt_op_time *out, int max);
	/* (optional) How later GEMMs may round their operands; without it,
	 * fp32 always. */
	void (*set_matmul)(lt_backend *be, enum lt_matmul mode);

	/* Types. Token and target arguments are i32. Statistics (rstd, lse,
	 * losses, inv_freq, the out of sum and sum_squares), parameter
	 * gradients that ops add into (embedding_backward's dtable,
	 * rmsnorm_backward's dw) and every adamw argument are f32. Every other
	 * float argument -- activations, their gradients, weights -- may be f32
	 * or bf16, each independently of the others (gemm: a and b share one
	 * type, and c is f32 unless they are bf16). Arithmetic is f32 whatever
	 * the storage: a bf16 input widens exactly, a bf16 result rounds once,
	 * to nearest even, when it is stored, and "+=" into a bf16 result reads
	 * it, adds in f32 and rounds. An op on bf16 arguments therefore equals
	 * the same op on their f32 widenings, up to the final rounding of its
	 * results and the order of its sums. One exception: a backend may run
	 * attention with any bf16 argument on TF32 tensor cores, which round
	 * the scaled queries, the probabilities and the score gradients to
	 * TF32 (2^-11, finer than bf16's 2^-8) before they multiply; its
	 * info's bf16 line says so. */

	/* x[n] = value */
	void (*fill)(lt_backend *be, lt_ref x, size_t n, float value);
	/* dst[n] = src[n] (ranges must not overlap); any type, dst's the same
	 * as src's */
	void (*copy)(lt_backend *be, lt_ref dst, lt_ref src, size_t n);
	/* dst[n] = src[n] converted, dst and src f32 or bf16 (ranges must not
	 * overlap): f32 -> bf16 rounds to nearest, ties to even (a NaN stays a
	 * NaN, quiet; a finite value may round to an infinity); bf16 -> f32 is
	 * exact; a type to itself is a copy. */
	void (*convert)(lt_backend *be, lt_ref dst, lt_ref src, size_t n);
	/* x[n] *= s */
	void (*scale)(lt_backend *be, lt_ref x, size_t n, float s);
	/* y[n] = a[n] + b[n] (y may be a or b) */
	void (*add)(lt_backend *be, lt_ref y, lt_ref a, lt_ref b, size_t n);
	/* out[0] = sum of x[i]^2 over n, accumulated in double, written as float */
	void (*sum_squares)(lt_backend *be, lt_ref out, lt_ref x, size_t n);
	/* out[0] = sum of x[i] over n, accumulated in double, written as float */
	void (*sum)(lt_backend *be, lt_ref out, lt_ref x, size_t n);

	/* See struct lt_gemm. b may also be a weight of another type than a
	 * (a block type, or the other of f32 and bf16) with batch 1, in both
	 * of its uses, y = x W^T (trans_b) and dx = dy W (not trans_b): the
	 * backend converts it to a's type a panel of at most
	 * LT_GEMM_PANEL_VALUES values at a time (whole rows, or for dx whole
	 * blocks of columns), so the result is the GEMM of a with the
	 * dequantized weight up to the order of the sums. */
	void (*gemm)(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c);

	/* out[N,C] = table[tokens[n], :], a zero row where tokens[n] < 0 (a
	 * token that another rank's slice of the table holds); tokens are
	 * int32 below V, the rows of table. */
	void (*embedding_forward)(lt_backend *be, lt_ref out, lt_ref tokens, lt_ref table,
				  int N, int C);
	/* dtable[tokens[n], :] += dout[n, :] for every n with tokens[n] >= 0
	 * (repeated tokens add up; negative ones are skipped) */
	void (*embedding_backward)(lt_backend *be, lt_ref dtable, lt_ref tokens, lt_ref dout,
				   int N, int C);

	/* rstd[n] = 1 / sqrt(mean(inp[n,:]^2) + eps);
	 * out[N,C] = inp[n,c] * rstd[n] * w[c] */
	void (*rmsnorm_forward)(lt_backend *be, lt_ref out, lt_ref rstd, lt_ref inp, lt_ref w,
				int N, int C, float eps);
	/* dinp[N,C] += d(out)/d(inp)^T dout;  dw[C] += sum_n dout * inp * rstd */
	void (*rmsnorm_backward)(lt_backend *be, lt_ref dinp, lt_ref dw, lt_ref dout,
				 lt_ref inp, lt_ref w, lt_ref rstd, int N, int C);

	/* Rotates, in place, the H query and K key heads of the packed rows
	 * qkv[N, (H+2K)*D] (value heads untouched) by position pos0 + n % T, with the
	 * Hugging Face rotate_half pairing (i, i + D/2):
	 *   x1' = x1 cos - x2 sin,  x2' = x2 cos + x1 sin,
	 * angle = pos * inv_freq[i], inv_freq[D/2] given by the caller.
	 * backward != 0 applies the inverse rotation (the gradient of forward). */
	void (*rope)(lt_backend *be, lt_ref qkv, lt_ref inv_freq, const struct lt_attn_shape *s,
		     int backward);

	/* Causal softmax attention with scale 1/sqrt(D) over whole sequences
	 * (pos0 is 0, here and in attention_backward).
	 * qkv[B*T, (H+2K)*D] packed as above -> out[B*T, H*D] (heads side by
	 * side), lse[B, H, T] = log-sum-exp of each scaled score row, kept for
	 * the backward pass. */
	void (*attention_forward)(lt_backend *be, lt_ref out, lt_ref lse, lt_ref qkv,
				  const struct lt_attn_shape *s);
	/* dqkv[B*T, (H+2K)*D] = gradient of the loss w.r.t. the packed input
	 * (overwritten), from dout[B*T, H*D] and the forward's out, lse, qkv. */
	void (*attention_backward)(lt_backend *be, lt_ref dqkv, lt_ref dout, lt_ref out,
				   lt_ref lse, lt_ref qkv, const struct lt_attn_shape *s);
	/* Attention of T new tokens per sequence over a key/value cache, for
	 * decoding (forward only). kcache and vcache[B, K, S, D] hold the rotated
	 * keys and the values of positions 0 .. pos0-1 of each sequence (what
	 * earlier calls wrote); with pos0 + T <= S, this first copies the K key
	 * and value heads of the new rows qkv[B*T, (H+2K)*D] (already rotated)
	 * to cache positions pos0 .. pos0+T-1, then writes out[B*T, H*D]: for
	 * new token t, causal softmax attention (scale 1/sqrt(D)) of its query
	 * at position pos0 + t over cache positions 0 .. pos0 + t. Cache
	 * positions from pos0 + T on are neither read nor written. */
	void (*attention_cached)(lt_backend *be, lt_ref out, lt_ref qkv, lt_ref kcache,
				 lt_ref vcache, int S, const struct lt_attn_shape *s);

	/* h[N, 2F] holds gate (columns 0..F-1) then up (F..2F-1);
	 * out[N,F] = silu(gate) * up,  silu(x) = x / (1 + exp(-x)) */
	void (*swiglu_forward)(lt_backend *be, lt_ref out, lt_ref h, int N, int F);
	/* dh[N, 2F] = gradient w.r.t. h (overwritten) from dout[N,F] */
	void (*swiglu_backward)(lt_backend *be, lt_ref dh, lt_ref dout, lt_ref h, int N, int F);

	/* Fused softmax + cross-entropy over logits[N,V] with int32 targets[N]:
	 * losses[n] = logsumexp(logits[n,:]) - logits[n, targets[n]], or 0 when
	 * targets[n] < 0 (ignored). When grad_scale != 0, logits is overwritten
	 * in place with grad_scale * (softmax - onehot) (a zero row for ignored
	 * targets); no second [N,V] buffer exists. */
	void (*xent)(lt_backend *be, lt_ref losses, lt_ref logits, lt_ref targets,
		     int N, int V, float grad_scale);
	/* The first half of a cross-entropy whose vocabulary is split into
	 * slices (one per rank): logits[N,V] (f32 or bf16) are the columns
	 * [v0, v0 + V) of the whole vocabulary's logits, of which only the
	 * first valid (0 <= valid <= V) are real tokens, the rest padding that
	 * is never read. targets[N] are int32 in the whole vocabulary
	 * (negative = ignored). Overwrites part[N,3] (f32):
	 *   part[n,0] = m = max over c < valid of logits[n,c] (-INFINITY when valid = 0),
	 *   part[n,1] = sum over c < valid of exp(logits[n,c] - m) (0 when valid = 0),
	 *   part[n,2] = logits[n, targets[n] - v0] if v0 <= targets[n] < v0 + valid, else 0.
	 * The exponentials add up as xent's do. The caller combines the
	 * slices' parts: gmax = max of the m, s = sum of s_r exp(m_r - gmax),
	 * lse = gmax + log(s), loss = lse - sum of the part[n,2]. */
	void (*xent_part)(lt_backend *be, lt_ref part, lt_ref logits, lt_ref targets, int N,
			  int V, int valid, int v0);
	/* The second half: with lse[N] (f32) each row's logsumexp over the
	 * whole vocabulary, logits[N,V] (laid out as in xent_part) is
	 * overwritten in place with
	 *   grad_scale * (exp(logits[n,c] - lse[n]) - onehot(targets[n] - v0)[c])
	 * in the columns c < valid, 0 in the padding columns c >= valid, and a
	 * whole zero row where targets[n] < 0. With one slice (v0 = 0,
	 * valid = V, lse from xent_part) this is xent's gradient up to the
	 * rounding of lse. */
	void (*xent_part_grad)(lt_backend *be, lt_ref logits, lt_ref lse, lt_ref targets, int N,
			       int V, int valid, int v0, float grad_scale);
	/* Fused distillation loss over the student's logits[N,V] and the
	 * teacher's teacher[N,V] (each f32 or bf16; teacher only read) with
	 * int32 targets[N], at temperature T = d->temperature > 0 and weight
	 * alpha = d->alpha in [0, 1]:
	 *   losses[n] = logsumexp(logits[n,:]) - logits[n, targets[n]], as xent;
	 *   kl[n] = T^2 KL(softmax(teacher[n,:] / T) || softmax(logits[n,:] / T));
	 * both 0 when targets[n] < 0 (ignored). When d->grad_scale != 0, logits
	 * is overwritten in place with the gradient of
	 * grad_scale * (alpha * losses[n] + (1 - alpha) * kl[n]):
	 *   grad_scale * (alpha (softmax(z) - onehot)
	 *                 + (1 - alpha) T (softmax(z / T) - softmax(teacher / T))),
	 * a zero row for ignored targets. With alpha = 1 the losses and the
	 * gradient are xent's (bitwise on the CPU). */
	void (*distill)(lt_backend *be, lt_ref losses, lt_ref kl, lt_ref logits, lt_ref teacher,
			lt_ref targets, int N, int V, const struct lt_distill_loss *d);

	/* AdamW with decoupled weight decay over n contiguous elements:
	 * g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
	 * p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p),
	 * mhat = m / (1 - b1^step), vhat = v / (1 - b2^step). */
	void (*adamw)(lt_backend *be, lt_ref param, lt_ref grad, lt_ref m, lt_ref v, size_t n,
		      const struct lt_adamw *hp);
};

struct lt_backend {
	const struct lt_backend_ops *ops;
	void *ctx;
};

/* Opens the backend named by spec: "cpu", "opencl" (the first GPU, else
 * the first OpenCL device), "opencl:P.D" (platform, device), "opencl:NAME"
 * (a device name substring), or "auto" (an OpenCL GPU that works, else the
 * CPU). threads <= 0 leaves the CPU thread count to OpenMP. */
enum lt_status lt_backend_new(const char *spec, int threads, lt_backend **out);
/* Ranks on one node share its GPUs: "opencl" and "auto" then take GPU
 * number local_rank (modulo the GPUs there are) instead of the first. */
void lt_backend_set_local_rank(int local_rank);
/* After lt_backend_new("auto"): one line saying which device it chose and
 * why (empty for other specs); for the command to print. */
const char *lt_backend_note(void);
void lt_backend_free(lt_backend *be);
/* Names of the compiled-in backends, NULL-terminated. */
const char *const *lt_backend_names(void);

/* Allocates a buffer of n elements of type, adding the backend name to the
 * error. */
enum lt_status lt_buf_new(lt_backend *be, enum lt_dtype type, size_t n, lt_buf **out);
void lt_buf_free(lt_backend *be, lt_buf *b);

/* be->ops->set_matmul(be, mode) where the backend has it. */
void lt_backend_set_matmul(lt_backend *be, enum lt_matmul mode);

/* be->ops->host_ptr(be, r) where the backend has it, else NULL. */
void *lt_backend_host_ptr(lt_backend *be, lt_ref r);

/* The bfloat16 nearest to f (ties to even; a NaN stays a NaN, quiet), and
 * the float a bfloat16 stands for: the rule every backend's convert keeps. */
static inline uint16_t lt_bf16_from_f32(float f)
{
	union { float f; uint32_t u; } v = { f };
	if ((v.u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((v.u >> 16) | 0x0040u);
	return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

static inline float lt_bf16_to_f32(uint16_t h)
{
	union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
	return v.f;
}

/* A host view of n elements of an f32 backend buffer, for code that works
 * on them as a float array (a file reader or writer, an MPI exchange): p is
 * the backend's own memory where host_ptr gives it (staged == 0), else a
 * staging copy in host memory (staged == 1) that lt_host_view_read fills
 * from the buffer and lt_host_view_write copies back; both are no-ops on
 * the backend's own memory, so the caller writes one code path. A zeroed
 * view is empty; map may point a view at one range after another, and a
 * staging copy is kept and grown as needed.
 *
 * Ownership: the view owns its staging copy; lt_host_view_free releases it
 * (an empty view too). */
struct lt_host_view {
	float *p;          /* the n elements on the host */
	size_t n;
	int staged;        /* 1: p is a staging copy, not the backend's memory */
	lt_backend *be;
	lt_ref ref;        /* where the elements live */
	float *staging;    /* the staging copy (NULL until one is needed) */
	size_t staging_n;  /* its size, in elements */
};

/* Points v at the n elements at r. p holds what the buffer holds when it
 * is the backend's memory; a staging copy holds anything until
 * lt_host_view_read. LT_ERR_NOMEM with the size when the copy cannot be
 * allocated (v is then empty, its earlier copy released). */
enum lt_status lt_host_view_map(struct lt_host_view *v, lt_backend *be, lt_ref r, size_t n);
/* p[n] = the buffer's elements (a read that completes before returning);
 * nothing when p is the backend's memory. */
void lt_host_view_read(const struct lt_host_view *v);
/* The buffer's elements = p[n] (a write that completes before returning);
 * nothing when p is the backend's memory. */
void lt_host_view_write(const struct lt_host_view *v);
/* Releases the staging copy; v is empty again. */
void lt_host_view_free(struct lt_host_view *v);

#endif
