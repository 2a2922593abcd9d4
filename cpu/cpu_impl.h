/* Private to the CPU backend: its buffer and context, and the ops that
 * cpu_ops.c, cpu_gemm.c and cpu_attention.c give cpu_backend.c for its table
 * (with cpu_gemm_bf16.c and cpu_dnnl.c behind cpu_gemm.c). */
#ifndef LT_CPU_IMPL_H
#define LT_CPU_IMPL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Distinct op names a profile holds. */
#define LT_CPU_PROF_OPS 32

/* Which library computes the GEMMs with f32 operands: the environment's
 * LLTRAIN_CPU_GEMM (openblas, dnnl or auto), read when the backend starts;
 * auto follows lt_cpu_gemm_rule, shape by shape. */
enum lt_cpu_gemm_lib { LT_CPU_GEMM_AUTO, LT_CPU_GEMM_OPENBLAS, LT_CPU_GEMM_DNNL };

/* A buffer is plain host memory. */
struct lt_buf {
	struct lt_buf_head head;  /* type and n */
	void *data;               /* 64-byte aligned, n elements */
};

struct lt_cpu_ctx {
	/* The team size every parallel region asks for. Results depend on the
	 * work split only, never on which thread ran a piece. */
	int threads;
	/* The first failure inside an op; later ops do nothing, sync reports it. */
	enum lt_status failed;
	char errmsg[256];
	/* Attention scratch: two score tiles of min(T, ATT_ROWS) x T floats per
	 * thread (x pos0 + T for attention_cached), allocated by the first
	 * attention op, grown when they grow,
	 * freed with the backend. */
	float *att_scratch;
	size_t att_scratch_n;  /* floats */
	/* Staging: per-thread f32 rows into which an op widens its bf16
	 * arguments and computes its bf16 results before rounding them
	 * (lt_cpu_stage); made by the first op with a bf16 argument, grown,
	 * freed with the backend. With att_scratch and bf16's copies, the
	 * only memory an op allocates. */
	float *stage;
	size_t stage_n;  /* floats */
	/* The library of f32 GEMMs (LLTRAIN_CPU_GEMM, fixed at the start). */
	enum lt_cpu_gemm_lib gemm_lib;
	/* oneDNN's engine and primitives (cpu_dnnl.c) where configure found
	 * it, and f32 copies of bf16 operands where it cannot do them
	 * (cpu_gemm_bf16.c); both made at first use, freed with the backend. */
	struct lt_cpu_dnnl *dnnl;
	struct lt_cpu_bf16 *bf16;
	/* The panel into which a GEMM converts a weight of another type
	 * (cpu_gemm_quant.c): made at first use, grown, freed with the backend. */
	void *panel;
	size_t panel_n;  /* floats */
	/* Bytes the buffers hold now and held at most (scratch not counted). */
	size_t bytes_now, bytes_peak;
	/* While profiling (lltrain bench --profile), each op's wall time and
	 * calls: the ops run to completion on the calling thread's team, so the
	 * wall time is the op's. */
	int profiling;
	struct lt_op_time prof[LT_CPU_PROF_OPS];
	int n_prof;
};

/* The context of a CPU backend. */
struct lt_cpu_ctx *lt_cpu_ctx(lt_backend *be);
/* Host address of r, checking that n elements from it lie in its buffer
 * and that the buffer holds the type asked for: f32 (lt_cpu_at), i32
 * (lt_cpu_ids), bf16 (lt_cpu_bf16), or any (lt_cpu_bytes). */
float *lt_cpu_at(lt_ref r, size_t n);
int32_t *lt_cpu_ids(lt_ref r, size_t n);
uint16_t *lt_cpu_bf16(lt_ref r, size_t n);
void *lt_cpu_bytes(lt_ref r, size_t n);
/* A float argument that the types contract lets be f32 or bf16 (backend.h):
 * its host address and whether it is bf16. lt_cpu_vec checks it as
 * lt_cpu_at does, asserting f32 or bf16. */
struct lt_cpu_vec {
	void *p;
	int bf16;
};
struct lt_cpu_vec lt_cpu_vec(lt_ref r, size_t n);
/* Per-thread f32 staging of `per_thread` floats each, thread i's at
 * i * per_thread: the backend's, grown on the calling thread (outside any
 * parallel region). NULL, with the failure recorded, when refused. */
float *lt_cpu_stage(struct lt_cpu_ctx *c, size_t per_thread);
/* Records the first failure inside an op (message kept for sync). */
void lt_cpu_fail(struct lt_cpu_ctx *c, enum lt_status st, const char *msg);
/* An op's clock: start gives the time when profiling (0 otherwise), stop
 * adds the time since t0 to op's entry (op a static string). */
double lt_cpu_prof_start(const struct lt_cpu_ctx *c);
void lt_cpu_prof_stop(struct lt_cpu_ctx *c, const char *op, double t0);

/* Marks the exp-bound row kernels for an AVX2 clone, picked once at load
 * time, where compiler and C library support it: configure builds for the
 * baseline ISA (SSE2 on x86-64), and 8-wide vectors halve those kernels'
 * time. Results are then bitwise repeatable on one machine, not across. */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones) && defined(__clang__)
#define LT_CPU_HOT __attribute__((target_clones("avx2", "default")))
#elif __has_attribute(target_clones)
/* GCC would otherwise inline the default clone into a lone caller. */
#define LT_CPU_HOT __attribute__((target_clones("avx2", "default"), noinline))
#endif
#endif
#ifndef LT_CPU_HOT
#define LT_CPU_HOT
#endif

/* exp(x) inside loops that must vectorise, which libm's expf prevents
 * without -ffast-math; inline here because both op files need it. Cephes'
 * polynomial after reduction by n = round(x / ln 2), times 2^n built as two
 * factors so that underflow is gradual: within 1 ulp of glibc's expf, with
 * 0 for -inf, +inf above ln(FLT_MAX), NaN kept. x is clamped to
 * [-104, 89] on its bits, not with float compares: GCC will not if-convert
 * those under -ftrapping-math, and the loop would stay scalar. */
static inline float lt_cpu_expf(float x)
{
	union { float f; uint32_t u; } c, t, s1, s2;
	c.f = x;
	uint32_t mag = c.u & 0x7fffffffu, lim = c.u >> 31 ? 0x42d00000u : 0x42b20000u;
	mag = mag > lim && mag <= 0x7f800000u ? lim : mag;
	c.u = (c.u & 0x80000000u) | mag;
	/* Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits. */
	t.f = c.f * 1.44269504f + 12582912.0f;
	float n = t.f - 12582912.0f;
	float r = c.f - n * 0.693359375f;
	r = r - n * -2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	int32_t ni = (int32_t)(t.u - 0x4B400000u), n1 = ni / 2;
	s1.u = (uint32_t)(n1 + 127) << 23;
	s2.u = (uint32_t)(ni - n1 + 127) << 23;
	return p * s1.f * s2.f;
}

/* The largest of x[0..n), -inf when n is 0, passing over NaNs. Eight
 * running maxima, not a simd max reduction, which Clang will not vectorise
 * without -ffast-math; the order of comparisons is fixed either way. */
static inline float lt_cpu_max(const float *x, int n)
{
	float m[8] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY,
		       -INFINITY, -INFINITY, -INFINITY, -INFINITY };
	float r = -INFINITY;
	int j = 0;
	for (; j + 8 <= n; j += 8)
		for (int l = 0; l < 8; l++)
			m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
	for (; j < n; j++)
		r = x[j] > r ? x[j] : r;
	for (int l = 0; l < 8; l++)
		r = m[l] > r ? m[l] : r;
	return r;
}

/* xent and xent_part add exponentials in float over this many logits,
 * then in double. */
#define LT_CPU_XENT_BLOCK 256

/* Part i of len floats from base, or NULL when base is (no staging: every
 * argument f32). */
static inline float *lt_cpu_slot(float *base, size_t i, size_t len)
{
	return base ? base + i * len : NULL;
}

/* Elements [off, off + n) of x as f32: x's own when it is f32, else
 * widened (exactly) into tmp[n]. Called once per row, outside the loops
 * that compute, so that an f32 op runs the loops it ran without bf16. */
static inline const float *lt_cpu_load(struct lt_cpu_vec x, size_t off, size_t n,
				       float *restrict tmp)
{
	if (!x.bf16)
		return (const float *)x.p + off;
	const uint16_t *restrict s = (const uint16_t *)x.p + off;
	for (size_t i = 0; i < n; i++)
		tmp[i] = lt_bf16_to_f32(s[i]);
	return tmp;
}

/* Where an op computes elements [off, off + n) of x in f32: x's own when
 * it is f32, else tmp, which lt_cpu_store then rounds into x. */
static inline float *lt_cpu_dest(struct lt_cpu_vec x, size_t off, float *tmp)
{
	return x.bf16 ? tmp : (float *)x.p + off;
}

/* The same for "+=": the place holds x's elements (widened into tmp[n]). */
static inline float *lt_cpu_dest_of(struct lt_cpu_vec x, size_t off, size_t n, float *tmp)
{
	return x.bf16 ? (float *)lt_cpu_load(x, off, n, tmp) : (float *)x.p + off;
}

/* x[off, off + n) = tmp[n] rounded to nearest even when x is bf16; nothing
 * when x is f32 (the op computed in x's own elements). */
static inline void lt_cpu_store(struct lt_cpu_vec x, size_t off, size_t n,
				const float *restrict tmp)
{
	if (!x.bf16)
		return;
	uint16_t *restrict d = (uint16_t *)x.p + off;
	for (size_t i = 0; i < n; i++)
		d[i] = lt_bf16_from_f32(tmp[i]);
}

/* cpu_ops.c: the ops of backend.h except attention (contracts there). */
/* d[doff, doff + n) = s[soff, soff + n), rounded or widened where the two
 * types differ (ranges must not overlap). */
void lt_cpu_copy_elems(struct lt_cpu_vec d, size_t doff, struct lt_cpu_vec s, size_t soff,
		       size_t n);
/* memcpy of `bytes`, split over the team when it is large. */
void lt_cpu_memcpy(struct lt_cpu_ctx *c, void *restrict dst, const void *restrict src,
		   size_t bytes);
void lt_cpu_fill(lt_backend *be, lt_ref x, size_t n, float value);
void lt_cpu_copy(lt_backend *be, lt_ref dst, lt_ref src, size_t n);
void lt_cpu_convert(lt_backend *be, lt_ref dst, lt_ref src, size_t n);
void lt_cpu_scale(lt_backend *be, lt_ref x, size_t n, float s);
void lt_cpu_add(lt_backend *be, lt_ref y, lt_ref a, lt_ref b, size_t n);
void lt_cpu_sum_squares(lt_backend *be, lt_ref out, lt_ref x, size_t n);
void lt_cpu_sum(lt_backend *be, lt_ref out, lt_ref x, size_t n);
void lt_cpu_embedding_forward(lt_backend *be, lt_ref out, lt_ref tokens, lt_ref table, int N,
			      int C);
void lt_cpu_embedding_backward(lt_backend *be, lt_ref dtable, lt_ref tokens, lt_ref dout, int N,
			       int C);
void lt_cpu_rmsnorm_forward(lt_backend *be, lt_ref out, lt_ref rstd, lt_ref inp, lt_ref w, int N,
			    int C, float eps);
void lt_cpu_rmsnorm_backward(lt_backend *be, lt_ref dinp, lt_ref dw, lt_ref dout, lt_ref inp,
			     lt_ref w, lt_ref rstd, int N, int C);
void lt_cpu_rope(lt_backend *be, lt_ref qkv, lt_ref inv_freq, const struct lt_attn_shape *s,
		 int backward);
void lt_cpu_swiglu_forward(lt_backend *be, lt_ref out, lt_ref h, int N, int F);
void lt_cpu_swiglu_backward(lt_backend *be, lt_ref dh, lt_ref dout, lt_ref h, int N, int F);
void lt_cpu_xent(lt_backend *be, lt_ref losses, lt_ref logits, lt_ref targets, int N, int V,
		 float grad_scale);
void lt_cpu_adamw(lt_backend *be, lt_ref param, lt_ref grad, lt_ref m, lt_ref v, size_t n,
		  const struct lt_adamw *hp);
/* One row of xent: returns the loss of logits x[V] against target t (0
 * when t < 0); with write, x becomes grad_scale * (softmax - onehot). */
float lt_cpu_xent_row(float *restrict x, int V, int t, float grad_scale, int write);
/* cpu_vxent.c: the cross-entropy over a slice of the vocabulary. */
void lt_cpu_xent_part(lt_backend *be, lt_ref part, lt_ref logits, lt_ref targets, int N, int V,
		      int valid, int v0);
void lt_cpu_xent_part_grad(lt_backend *be, lt_ref logits, lt_ref lse, lt_ref targets, int N,
			   int V, int valid, int v0, float grad_scale);
/* cpu_distill.c */
void lt_cpu_distill(lt_backend *be, lt_ref losses, lt_ref kl, lt_ref logits, lt_ref teacher,
		    lt_ref targets, int N, int V, const struct lt_distill_loss *d);
/* cpu_gemm.c */
void lt_cpu_gemm(lt_backend *be, const struct lt_gemm *g, lt_ref a, lt_ref b, lt_ref c);
/* The f32 GEMM over host arrays through OpenBLAS on the backend's team. */
void lt_cpu_sgemm(struct lt_cpu_ctx *c, const struct lt_gemm *g, const float *pa,
		  const float *pb, float *pc);
/* The GEMM over host arrays with a and b of type ta (f32 or bf16) and c of
 * type tc: oneDNN, OpenBLAS or cpu_gemm_bf16.c as lt_cpu_gemm would. */
void lt_cpu_gemm_on(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		    const void *pb, void *pc, enum lt_dtype ta, enum lt_dtype tc);
/* cpu_gemm_quant.c: the GEMM whose b (of type tb, a block type or the
 * other float type) differs from a's type ta, a panel at a time; batch 1. */
void lt_cpu_gemm_quant(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		       const void *pb, enum lt_dtype tb, void *pc, enum lt_dtype ta,
		       enum lt_dtype tc);
/* The library LLTRAIN_CPU_GEMM=auto gives f32 GEMM g (never AUTO): a
 * static rule of its shape, so that a run repeats bitwise. */
enum lt_cpu_gemm_lib lt_cpu_gemm_rule(const struct lt_gemm *g);
/* What computes f32 GEMMs on c, for the device description, into out. */
void lt_cpu_gemm_describe(struct lt_cpu_ctx *c, char *out, size_t cap);
/* cpu_gemm_bf16.c: the GEMM of bf16 a and b into c of type tc (f32 or
 * bf16), pointers checked by lt_cpu_gemm; a failure is recorded with
 * lt_cpu_fail. Returns 1 when oneDNN computed it, 0 for the widened
 * fallback. */
int lt_cpu_gemm_bf16(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		     const void *pb, void *pc, enum lt_dtype tc);
/* Releases what lt_cpu_gemm_bf16 made; what computes those GEMMs on this
 * CPU ("oneDNN 2.6 matmul", or the widened fallback) into out. */
void lt_cpu_bf16_free(struct lt_cpu_ctx *c);
void lt_cpu_bf16_describe(struct lt_cpu_ctx *c, char *out, size_t cap);
/* cpu_dnnl.c: g through oneDNN's matmul with A and B of type tab (f32 or
 * bf16) and C of type tc, each matrix of the batch in turn on the team.
 * Returns 0, having written nothing, where oneDNN cannot (built without it,
 * no engine or no kernel here, k = 0); else 1, a failure recorded with
 * lt_cpu_fail. */
int lt_cpu_dnnl_gemm(struct lt_cpu_ctx *c, const struct lt_gemm *g, const void *pa,
		     const void *pb, void *pc, enum lt_dtype tab, enum lt_dtype tc);
/* 1 when oneDNN has a matmul for operands of type tab on this CPU. */
int lt_cpu_dnnl_has(struct lt_cpu_ctx *c, enum lt_dtype tab);
/* "oneDNN 2.6" into out and 1, or 0 when built without it. */
int lt_cpu_dnnl_version(char *out, size_t cap);
/* Releases oneDNN's state. */
void lt_cpu_dnnl_free(struct lt_cpu_ctx *c);
/* cpu_attention.c */
void lt_cpu_attention_forward(lt_backend *be, lt_ref out, lt_ref lse, lt_ref qkv,
			      const struct lt_attn_shape *s);
void lt_cpu_attention_backward(lt_backend *be, lt_ref dqkv, lt_ref dout, lt_ref out, lt_ref lse,
			       lt_ref qkv, const struct lt_attn_shape *s);
void lt_cpu_attention_cached(lt_backend *be, lt_ref out, lt_ref qkv, lt_ref kcache,
			     lt_ref vcache, int S, const struct lt_attn_shape *s);

#endif
