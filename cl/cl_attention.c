/* The OpenCL backend's causal grouped-query attention: picks the tiles of attention.cl for the
 * device and head size, and launches its fused forward, backward and decoding kernels. */
#include "config.h"
#include "cl_impl.h"

#include <math.h>
#include <stdio.h>

/* Local memory one work-group's tiles may take: well inside NVIDIA's 48 KiB per group, and
 * small enough that several groups share a compute unit. */
#define TILE_BYTES (36 * 1024)
/* Key rows the dk/dv kernel wants in flight before it stops splitting a kv head's query
 * heads over more work-items (each split adds a partial sum of B * K * T * 2D floats). */
#define SPLIT_ROWS (1L << 17)

/* The compile-time tiles of one head size on this device (their meaning is in attention.cl). */
struct tiles {
	int wg, bk, p, rb, bb, bc, nt;
	size_t dv;  /* vectors per row of D floats */
	char options[160];
};

/* Local memory of the backward's groups: two staged tiles of bb rows, their lse and delta,
 * and two rounds of bc exchanged partial dot products (two each) per work-item. */
static size_t backward_bytes(const struct tiles *t, size_t row)
{
	return (size_t)t->bb * (2 * row + 2 * sizeof(float)) +
	       (size_t)2 * 2 * t->bc * t->rb * t->p * sizeof(float);
}

/* The tiles for head size D that fit c's device: its work-group size, and TILE_BYTES or its
 * local memory if that is less. */
static struct tiles tiles_for(struct lt_cl_ctx *c, int D)
{
	size_t local = lt_cl_local_mem(c), budget = local < TILE_BYTES ? local : TILE_BYTES;
	size_t group = lt_cl_max_group(c), row = (size_t)D * sizeof(float);
	struct tiles t = { .wg = 64, .bk = 64, .p = 1, .rb = 64, .bb = 64, .bc = 8 };
	t.dv = (size_t)D / (D % 4 == 0 ? 4 : 2);
	while ((size_t)t.wg > group && t.wg > 1)
		t.wg /= 2;
	/* the forward: key and value tiles */
	while (t.bk > 1 && (size_t)t.bk * 2 * row > budget)
		t.bk /= 2;
	/* the backward: rows split so that a work-item holds at most 32 floats of each of its
	 * four rows (registers), at most 128 work-items per group; then fewer rows per tile
	 * (down to 4 chunks), per chunk (down to 4), per tile, per chunk, per group until its
	 * local memory fits */
	while (D / t.p > 32 && t.dv % (size_t)(2 * t.p) == 0 && (size_t)(2 * t.p) <= group)
		t.p *= 2;
	while (t.rb > 1 && (size_t)(t.rb * t.p) > (group < 128 ? group : 128))
		t.rb /= 2;
	while (backward_bytes(&t, row) > budget) {
		if (t.bb > 4 * t.bc)
			t.bb /= 2;
		else if (t.bc > 4)
			t.bc /= 2;
		else if (t.bb > t.bc)
			t.bb /= 2;
		else if (t.bc > 1)
			t.bc /= 2;
		else if (t.rb > 1)
			t.rb /= 2;
		else
			break;
	}
	/* the decoder's merge: one row of partial output, a max and a sum per work-item */
	t.nt = group < 128 ? (int)group : 128;
	while (t.nt > 1 && (size_t)t.nt * (row + 2 * sizeof(float)) > budget)
		t.nt /= 2;
	snprintf(t.options, sizeof t.options, "-DLT_D=%d -DLT_WG=%d -DLT_BK=%d -DLT_P=%d "
		 "-DLT_RB=%d -DLT_BB=%d -DLT_BC=%d -DLT_NT=%d", D, t.wg, t.bk, t.p, t.rb, t.bb,
		 t.bc, t.nt);
	return t;
}

/* Checks the shape and returns the packed row width (H + 2K) * D. */
static size_t check_shape(const struct lt_attn_shape *s)
{
	LT_ASSERT(s->B >= 0 && s->T > 0 && s->H > 0 && s->K > 0 && s->D > 0 && s->pos0 >= 0);
	LT_ASSERT(s->H % s->K == 0 && s->D % 2 == 0);
	return (size_t)(s->H + 2 * s->K) * s->D;
}

/* The scale of the scores, rounded as the CPU backend rounds it. */
static float score_scale(int D)
{
	return (float)(1.0 / sqrt((double)D));
}

/* The number of ways the dk/dv kernel splits each kv head's G query heads: the smallest
 * divisor of G that gives SPLIT_ROWS work-items, or G. */
static int dkv_splits(const struct lt_attn_shape *s)
{
	int G = s->H / s->K, n = 1;
	long rows = (long)s->B * s->K * s->T;
	while (n < G && rows * n < SPLIT_ROWS)
		for (n++; G % n; n++)
			;
	return n;
}

/* A kernel over rows in blocks of `rows`, with `items` work-items per block; `heads` blocks
 * per block of rows, the heads in dimension 0 so that one block of every head is dispatched
 * before the next. */
static void launch_rows(struct lt_cl_ctx *c, cl_kernel k, int rows, int items, int T,
			size_t heads, const char *op)
{
	size_t global[2] = { heads * (size_t)items, ((size_t)T + (size_t)rows - 1) / (size_t)rows };
	size_t local[2] = { (size_t)items, 1 };
	lt_cl_launch(c, k, 2, global, local, op);
}

/* Nonzero when attention of head size D runs on TF32 tensor cores here (allowed, or
 * widened: bf16 arguments widened to f32 for them; D a multiple of 8 up to max_d,
 * attention_mma.cl builds); options gets its build options. Its kernels take f32
 * arguments only. */
static int mma_attention(struct lt_cl_ctx *c, int D, int max_d, int widened, char *options,
			 size_t cap)
{
	struct lt_cl_mma *mm = lt_cl_mma_of(c);
	if (!(widened ? lt_cl_mma_present(mm) : lt_cl_mma_usable(mm)) || D % 8 || D > max_d ||
	    D > 128)
		return 0;
	snprintf(options, cap, "-DLT_D=%d -DLT_BKV=%d", D, D > 64 ? 32 : 64);
	int *builds = &mm->attention[D / 8];
	if (!*builds)
		*builds = lt_cl_program_builds(c, "attention_mma.cl", options) ? 1 : -1;
	return *builds > 0;
}

/* Nonzero when every one of n refs is f32. */
static int all_f32(const lt_ref *r, int n)
{
	for (int i = 0; i < n; i++)
		if (lt_buf_type(r[i].buf) != LT_F32)
			return 0;
	return 1;
}

/* A float tensor argument: with its type flag after it for attention.cl's kernels
 * (typed), bare and f32 for attention_mma.cl's. */
static void arg_tensor(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n, int typed)
{
	if (typed)
		lt_cl_arg_real(c, k, i, r, n);
	else
		lt_cl_arg_f32(c, k, i, r, n);
}

/* The arguments of either forward kernel: out, lse, qkv, T, H, K, scale. */
static void set_forward_args(struct lt_cl_ctx *c, cl_kernel k, lt_ref out, lt_ref lse,
			     lt_ref qkv, const struct lt_attn_shape *s, size_t W, int typed)
{
	size_t rows = (size_t)s->B * s->T;
	int i = 0;
	arg_tensor(c, k, &i, out, rows * s->H * s->D, typed);
	lt_cl_arg_f32(c, k, &i, lse, (size_t)s->B * s->H * s->T);
	arg_tensor(c, k, &i, qkv, rows * W, typed);
	lt_cl_arg_int(c, k, &i, s->T);
	lt_cl_arg_int(c, k, &i, s->H);
	lt_cl_arg_int(c, k, &i, s->K);
	lt_cl_arg_float(c, k, &i, score_scale(s->D));
}

/* The forward on TF32 tensor cores (attention_mma.cl), where they are allowed, out and qkv
 * are f32, the head size is a multiple of 8 up to 128 and its program builds; 1 when it
 * was queued. With a bf16 out or qkv, the tensor cores serve whatever train.matmul: qkv
 * is widened into scratch (slot 2, exact), the kernel writes an f32 out there, rounded
 * once into out. Its products round the probabilities to TF32 (2^-11), finer than the
 * bf16 of every activation. */
static int forward_on_tensor_cores(lt_backend *be, lt_ref out, lt_ref lse, lt_ref qkv,
				   const struct lt_attn_shape *s, size_t W)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	char options[64];
	int f32 = all_f32((lt_ref[]){ out, qkv }, 2);
	if (!mma_attention(c, s->D, 128, !f32, options, sizeof options))
		return 0;
	size_t rows = (size_t)s->B * s->T, nout = rows * s->H * s->D;
	lt_ref wout = out, wqkv = qkv;
	if (!f32) {
		wout = lt_cl_scratch(c, 2, nout + rows * W);
		if (lt_cl_failed(c))
			return 1;
		wqkv = lt_ref_at(wout, nout);
		lt_cl_convert(be, wqkv, qkv, rows * W);
	}
	cl_kernel k = lt_cl_kernel(c, "attention_mma.cl", options, "lt_attention_forward_mma");
	set_forward_args(c, k, wout, lse, wqkv, s, W, 0);
	launch_rows(c, k, 64, 128, s->T, (size_t)s->B * s->H, "attention_forward");
	if (!f32)
		lt_cl_convert(be, out, wout, nout);
	return 1;
}

/* out[B*T, H*D], lse[B, H, T] from qkv[B*T, (H+2K)*D]: the fused flash-attention forward,
 * one work-item per query row. */
void lt_cl_attention_forward(lt_backend *be, lt_ref out, lt_ref lse, lt_ref qkv,
			     const struct lt_attn_shape *s)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(out);
	lt_cl_assert_type(lse, LT_F32);
	lt_cl_assert_real(qkv);
	if (lt_cl_failed(c))
		return;
	size_t W = check_shape(s);
	LT_ASSERT(s->pos0 == 0);
	if (!s->B || forward_on_tensor_cores(be, out, lse, qkv, s, W))
		return;
	struct tiles t = tiles_for(c, s->D);
	cl_kernel k = lt_cl_kernel(c, "attention.cl", t.options, "lt_attention_forward");
	set_forward_args(c, k, out, lse, qkv, s, W, 1);
	launch_rows(c, k, t.wg, t.wg, s->T, (size_t)s->B * s->H, "attention_forward");
}

/* delta[B, H, T] = rowsum(dout * out) */
static void launch_delta(struct lt_cl_ctx *c, const struct tiles *t, lt_ref delta, lt_ref dout,
			 lt_ref out, const struct lt_attn_shape *s)
{
	size_t nout = (size_t)s->B * s->T * s->H * s->D;
	cl_kernel k = lt_cl_kernel(c, "attention.cl", t->options, "lt_attention_delta");
	int i = 0;
	lt_cl_arg_ref(c, k, &i, delta, (size_t)s->B * s->H * s->T);
	lt_cl_arg_real(c, k, &i, dout, nout);
	lt_cl_arg_real(c, k, &i, out, nout);
	lt_cl_arg_int(c, k, &i, s->T);
	lt_cl_arg_int(c, k, &i, s->H);
	launch_rows(c, k, t->wg, t->wg, s->T, (size_t)s->B * s->H, "attention_backward");
}

/* Where the backward's dq and dk/dv kernels come from, and their shape: rows per
 * work-group and work-items per work-group; typed: attention.cl's, which take a type flag
 * after each float tensor, or attention_mma.cl's, f32 only. */
struct backward_kernels {
	const char *file, *options, *dq, *dkv;
	int rows, items, typed;
};

/* attention.cl's, p work-items per row. */
static struct backward_kernels plain_backward(const struct tiles *t)
{
	return (struct backward_kernels){ "attention.cl", t->options, "lt_attention_dq",
					  "lt_attention_dkv", t->rb, t->rb * t->p, 1 };
}

/* The query heads of dqkv. */
static void launch_dq(struct lt_cl_ctx *c, const struct backward_kernels *bk, lt_ref dqkv,
		      lt_ref dout, lt_ref lse, lt_ref delta, lt_ref qkv,
		      const struct lt_attn_shape *s)
{
	size_t rows = (size_t)s->B * s->T, nlse = (size_t)s->B * s->H * s->T;
	size_t nqkv = rows * (size_t)(s->H + 2 * s->K) * s->D;
	cl_kernel k = lt_cl_kernel(c, bk->file, bk->options, bk->dq);
	int i = 0;
	arg_tensor(c, k, &i, dqkv, nqkv, bk->typed);
	arg_tensor(c, k, &i, dout, rows * s->H * s->D, bk->typed);
	lt_cl_arg_f32(c, k, &i, lse, nlse);
	lt_cl_arg_ref(c, k, &i, delta, nlse);
	arg_tensor(c, k, &i, qkv, nqkv, bk->typed);
	lt_cl_arg_int(c, k, &i, s->T);
	lt_cl_arg_int(c, k, &i, s->H);
	lt_cl_arg_int(c, k, &i, s->K);
	lt_cl_arg_float(c, k, &i, score_scale(s->D));
	launch_rows(c, k, bk->rows, bk->items, s->T, (size_t)s->B * s->H, "attention_backward");
}

/* The key and value heads of dqkv, per key row and split: straight into dqkv when nsplit
 * is 1, else into part[nsplit, B, K, T, 2D], summed afterwards in order. */
static void launch_dkv(struct lt_cl_ctx *c, const struct backward_kernels *bk, lt_ref dqkv,
		       lt_ref part, int nsplit, lt_ref dout, lt_ref lse, lt_ref delta, lt_ref qkv,
		       const struct lt_attn_shape *s)
{
	size_t D = (size_t)s->D, T = (size_t)s->T, K = (size_t)s->K;
	size_t W = (size_t)(s->H + 2 * s->K) * D;
	size_t rows = (size_t)s->B * T, nlse = (size_t)s->B * s->H * T;
	cl_kernel k = lt_cl_kernel(c, bk->file, bk->options, bk->dkv);
	int i = 0;
	if (nsplit == 1) {
		arg_tensor(c, k, &i, lt_ref_at(dqkv, (size_t)s->H * D), rows * W - s->H * D,
			   bk->typed);
		lt_cl_arg_ulong(c, k, &i, T * W);      /* per sequence */
		lt_cl_arg_ulong(c, k, &i, D);          /* per kv head */
		lt_cl_arg_ulong(c, k, &i, 0);          /* per split */
		lt_cl_arg_ulong(c, k, &i, W);          /* per key row */
		lt_cl_arg_ulong(c, k, &i, K * D);      /* from a dk row to its dv row */
	} else {
		lt_cl_arg_ref(c, k, &i, part, (size_t)nsplit * rows * K * 2 * D);
		if (bk->typed)
			lt_cl_arg_int(c, k, &i, 0);  /* f32 */
		lt_cl_arg_ulong(c, k, &i, K * T * 2 * D);
		lt_cl_arg_ulong(c, k, &i, T * 2 * D);
		lt_cl_arg_ulong(c, k, &i, rows * K * 2 * D);
		lt_cl_arg_ulong(c, k, &i, 2 * D);
		lt_cl_arg_ulong(c, k, &i, D);
	}
	arg_tensor(c, k, &i, dout, rows * s->H * D, bk->typed);
	lt_cl_arg_f32(c, k, &i, lse, nlse);
	lt_cl_arg_ref(c, k, &i, delta, nlse);
	arg_tensor(c, k, &i, qkv, rows * W, bk->typed);
	lt_cl_arg_int(c, k, &i, s->T);
	lt_cl_arg_int(c, k, &i, s->H);
	lt_cl_arg_int(c, k, &i, s->K);
	lt_cl_arg_int(c, k, &i, nsplit);
	lt_cl_arg_float(c, k, &i, score_scale(s->D));
	launch_rows(c, k, bk->rows, bk->items, s->T, (size_t)s->B * K * nsplit,
		    "attention_backward");
}

/* The key and value heads of dqkv = the sum over splits of part[nsplit, B, K, T, 2D]. */
static void launch_dkv_sum(struct lt_cl_ctx *c, const struct tiles *t, lt_ref dqkv, lt_ref part,
			   int nsplit, const struct lt_attn_shape *s)
{
	size_t rows = (size_t)s->B * s->T, D = (size_t)s->D;
	cl_kernel k = lt_cl_kernel(c, "attention.cl", t->options, "lt_attention_dkv_sum");
	int i = 0;
	lt_cl_arg_real(c, k, &i, dqkv, rows * (size_t)(s->H + 2 * s->K) * D);
	lt_cl_arg_ref(c, k, &i, part, (size_t)nsplit * rows * s->K * 2 * D);
	lt_cl_arg_int(c, k, &i, s->T);
	lt_cl_arg_int(c, k, &i, s->H);
	lt_cl_arg_int(c, k, &i, s->K);
	lt_cl_arg_int(c, k, &i, nsplit);
	size_t global[2] = { (size_t)s->T * 2 * t->dv, (size_t)s->B * s->K };
	lt_cl_launch(c, k, 2, global, NULL, "attention_backward");
}

/* The backward's kernels of bk over these tensors: delta, dq, dk and dv (and their sum
 * over splits). */
static void backward_with(struct lt_cl_ctx *c, const struct backward_kernels *bk,
			  const struct tiles *t, lt_ref dqkv, lt_ref dout, lt_ref out, lt_ref lse,
			  lt_ref qkv, lt_ref delta, lt_ref part, int nsplit,
			  const struct lt_attn_shape *s)
{
	launch_delta(c, t, delta, dout, out, s);
	launch_dq(c, bk, dqkv, dout, lse, delta, qkv, s);
	launch_dkv(c, bk, dqkv, part, nsplit, dout, lse, delta, qkv, s);
	if (nsplit > 1)
		launch_dkv_sum(c, t, dqkv, part, nsplit, s);
}

/* dqkv[B*T, (H+2K)*D] (overwritten) from dout[B*T, H*D], out, lse[B, H, T] and qkv, in the
 * flash-attention-2 manner: delta = rowsum(dout * out) (scratch slot 0), then dq per query
 * row and dk, dv per key row, each recomputing the probabilities from lse. No atomics: every
 * sum runs in a fixed order. */
void lt_cl_attention_backward(lt_backend *be, lt_ref dqkv, lt_ref dout, lt_ref out, lt_ref lse,
			      lt_ref qkv, const struct lt_attn_shape *s)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(dqkv);
	lt_cl_assert_real(dout);
	lt_cl_assert_real(out);
	lt_cl_assert_type(lse, LT_F32);
	lt_cl_assert_real(qkv);
	if (lt_cl_failed(c))
		return;
	check_shape(s);
	LT_ASSERT(s->pos0 == 0);
	if (!s->B)
		return;
	struct tiles t = tiles_for(c, s->D);
	int nsplit = dkv_splits(s);
	lt_ref delta = lt_cl_scratch(c, 0, (size_t)s->B * s->H * s->T);
	lt_ref part = delta;
	if (nsplit > 1)
		part = lt_cl_scratch(c, 1, (size_t)nsplit * s->B * s->T * s->K * 2 * s->D);
	if (lt_cl_failed(c))
		return;
	char options[64];
	struct backward_kernels bk = plain_backward(&t);
	int f32 = all_f32((lt_ref[]){ dqkv, dout, out, qkv }, 4);
	if (!mma_attention(c, s->D, 64, !f32, options, sizeof options)) {
		backward_with(c, &bk, &t, dqkv, dout, out, lse, qkv, delta, part, nsplit, s);
		return;
	}
	bk = (struct backward_kernels){ "attention_mma.cl", options, "lt_attention_dq_mma",
					"lt_attention_dkv_mma", 64, 128, 0 };
	if (f32) {
		backward_with(c, &bk, &t, dqkv, dout, out, lse, qkv, delta, part, nsplit, s);
		return;
	}
	/* bf16 somewhere: every tensor widened into scratch (slot 2) for the tensor cores, as
	 * in the forward, and dqkv rounded once at the end. */
	size_t rows = (size_t)s->B * s->T, nout = rows * s->H * s->D;
	size_t nqkv = rows * (size_t)(s->H + 2 * s->K) * s->D;
	lt_ref wdout = lt_cl_scratch(c, 2, 2 * nout + 2 * nqkv);
	if (lt_cl_failed(c))
		return;
	lt_ref wout = lt_ref_at(wdout, nout), wqkv = lt_ref_at(wdout, 2 * nout);
	lt_ref wdqkv = lt_ref_at(wdout, 2 * nout + nqkv);
	lt_cl_convert(be, wdout, dout, nout);
	lt_cl_convert(be, wout, out, nout);
	lt_cl_convert(be, wqkv, qkv, nqkv);
	backward_with(c, &bk, &t, wdqkv, wdout, wout, lse, wqkv, delta, part, nsplit, s);
	lt_cl_convert(be, dqkv, wdqkv, nqkv);
}

/* kcache and vcache[B, K, S, D] at positions pos0 .. pos0+T-1 = the new key and value heads. */
static void append_to_cache(struct lt_cl_ctx *c, const struct tiles *t, lt_ref kcache,
			    lt_ref vcache, lt_ref qkv, int S, const struct lt_attn_shape *s)
{
	size_t cache = (size_t)s->B * s->K * S * s->D;
	cl_kernel k = lt_cl_kernel(c, "attention.cl", t->options, "lt_attention_append");
	int i = 0;
	lt_cl_arg_real(c, k, &i, kcache, cache);
	lt_cl_arg_real(c, k, &i, vcache, cache);
	lt_cl_arg_real(c, k, &i, qkv, (size_t)s->B * s->T * (s->H + 2 * s->K) * s->D);
	lt_cl_arg_int(c, k, &i, s->T);
	lt_cl_arg_int(c, k, &i, s->H);
	lt_cl_arg_int(c, k, &i, s->K);
	lt_cl_arg_int(c, k, &i, S);
	lt_cl_arg_int(c, k, &i, s->pos0);
	size_t global[2] = { (size_t)s->T * t->dv, (size_t)s->B * s->K };
	lt_cl_launch(c, k, 2, global, NULL, "attention_cached");
}

/* out[B*T, H*D] for the new rows qkv[B*T, (H+2K)*D] at positions pos0.., over the caches
 * kcache, vcache[B, K, S, D]: appends the new keys and values, then one work-group of nt
 * work-items per (new row, head) splits the cache positions 0 .. pos0 + t between them. */
void lt_cl_attention_cached(lt_backend *be, lt_ref out, lt_ref qkv, lt_ref kcache, lt_ref vcache,
			    int S, const struct lt_attn_shape *s)
{
	struct lt_cl_ctx *c = lt_cl_ctx(be);
	lt_cl_assert_real(out);
	lt_cl_assert_real(qkv);
	lt_cl_assert_real(kcache);
	lt_cl_assert_real(vcache);
	if (lt_cl_failed(c))
		return;
	size_t W = check_shape(s), rows = (size_t)s->B * s->T;
	size_t cache = (size_t)s->B * s->K * S * s->D;
	LT_ASSERT(S > 0 && s->pos0 + s->T <= S);
	if (!s->B)
		return;
	struct tiles t = tiles_for(c, s->D);
	append_to_cache(c, &t, kcache, vcache, qkv, S, s);
	cl_kernel k = lt_cl_kernel(c, "attention.cl", t.options, "lt_attention_cached");
	int i = 0;
	lt_cl_arg_real(c, k, &i, out, rows * s->H * s->D);
	lt_cl_arg_real(c, k, &i, qkv, rows * W);
	lt_cl_arg_real(c, k, &i, kcache, cache);
	lt_cl_arg_real(c, k, &i, vcache, cache);
	lt_cl_arg_int(c, k, &i, s->T);
	lt_cl_arg_int(c, k, &i, s->H);
	lt_cl_arg_int(c, k, &i, s->K);
	lt_cl_arg_int(c, k, &i, S);
	lt_cl_arg_int(c, k, &i, s->pos0);
	lt_cl_arg_float(c, k, &i, score_scale(s->D));
	size_t global[2] = { (size_t)t.nt * s->H, rows }, local[2] = { (size_t)t.nt, 1 };
	lt_cl_launch(c, k, 2, global, local, "attention_cached");
}
