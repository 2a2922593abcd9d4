/* What the model (model.c) and its LoRA adapters (lora.c) share: the model's
 * struct, its views and plans, and the refs and GEMMs both compute with;
 * private to the two.
 *
 * Ownership: nothing here allocates; the model owns every buffer named. */
#ifndef LT_MODEL_IMPL_H
#define LT_MODEL_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model.h"

/* Offsets of one layer's tensors, in elements of the flat buffers. q, k
 * and v are adjacent (one [QKV, C] matrix) and so are gate and up (one
 * [2F, C] matrix): each pair is one GEMM. */
struct layer_views {
	size_t ln_in, wqkv, wo, ln_post, wgu, wdown;
};

/* Offsets of one layer's saved activations: in the activation space (the
 * model's activation type), or, marked (s), in the f32 statistics buffer. */
struct layer_acts {
	size_t x;      /* [N,C] the layer's input (residual stream) */
	size_t rstd1;  /* [N] (s) */
	size_t ln1;    /* [N,C] */
	size_t qkv;    /* [N,QKV] after rope */
	size_t lse;    /* [B,H,T] (s) */
	size_t att;    /* [N,HD] */
	size_t xmid;   /* [N,C] residual after attention */
	size_t rstd2;  /* [N] (s) */
	size_t ln2;    /* [N,C] */
	size_t h;      /* [N,2F] gate | up */
	size_t g;      /* [N,F] swiglu output */
	size_t u[4];   /* with adapter dropout: each adapter input dropped (the
			  LORA_IN_* order), then in backward its gradient */
};

/* The inputs adapters read, each shared by the targets of its group. */
enum { LORA_IN_LN1, LORA_IN_ATT, LORA_IN_LN2, LORA_IN_G, LORA_INPUTS };

/* Where the adapters of one layer lie in the trainable buffer (A, B per
 * target; unused targets are not laid out). */
struct lora_views {
	size_t a[LT_LORA_TARGETS], b[LT_LORA_TARGETS];
};

/* Offsets of the decoding activations for up to N = B*S new tokens, in
 * the decode buffer (the activation type) or, marked (s), its f32
 * statistics buffer. Nothing is kept for a backward pass, so one set
 * serves every layer and the residual stream x is updated in place. */
struct decode_acts {
	size_t x;      /* [N,C] residual stream */
	size_t rstd;   /* [N] (s) */
	size_t ln;     /* [N,C] */
	size_t qkv;    /* [N,QKV] */
	size_t att;    /* [N,HD] */
	size_t h;      /* [N,2F] */
	size_t g;      /* [N,F] */
	size_t last;   /* [B,C] the residual of each row's last new token */
	size_t rstdf;  /* [B] (s) */
	size_t xf;     /* [B,C] */
	size_t logits; /* [B,V] (s) */
	size_t lora_t; /* [N,rank] the adapters' x A^T */
};

/* One micro-batch's activations, of the plan's offsets: a pipeline stage
 * keeps a set for each micro-batch in flight, and the model's own fields
 * (acts, stats, ids, host_tokens, lookup_rows) are those of the set in use.
 * What a training forward leaves its backward besides (head_grad and
 * have_grad) goes with the set too: the model's fields are the set in
 * use's, kept in the set when another is picked. */
struct act_set {
	lt_buf **acts;
	lt_buf *stats, *ids;
	int32_t *host_tokens, *lookup_rows;
	lt_buf *head_grad;
	int have_grad;
};

struct lt_model {
	struct lt_model_config cfg;
	lt_backend *be;
	struct lt_tensor *tensors;
	int n_tensors;
	size_t numel;
	size_t embed, norm, lm_head;     /* offsets of the global tensors */
	struct layer_views *layers;
	lt_buf *params, *grads;
	enum lt_precision precision;
	lt_buf *weights;                  /* [params_numel] bf16 compute copy of params, or NULL */
	size_t params_numel;              /* with params_sliced: the layout's size */
	size_t *param_block;              /* [n_layers] where each block's parameters lie */
	size_t param_embed;               /* with params_sliced: where the embedding table lies */
	size_t param_output;              /* where the output range's parameters lie */
	int params_sliced;                /* a caller's layout: blocks share places */
	int params_deferred;              /* made without its whole buffers (lt_model_new_sliced) */
	lt_buf *sink;                     /* where writes of flat [sink_lo, sink_hi) go, or NULL */
	size_t sink_lo, sink_hi;
	struct lt_param_hook param_hook;  /* asked before a block, the embedding or the output
					     range is read */
	size_t grads_numel;               /* numel, or the caller's layout's size */
	size_t *grad_block;               /* [n_layers] where each block's gradients start */
	size_t grad_output;               /* where the output range's gradients start */
	int grads_written;                /* a caller's layout: backward writes, not adds */
	int embed_grad_shared;            /* with it: a block's slot over the embedding's range */
	int head_grad_direct;             /* with it: the head's weight gradient goes there in
					     forward (lt_model_set_head_grad_direct) */
	lt_buf *inv_freq;                 /* [D/2] rope frequencies */

	/* the activation plan: one offset space, held as one buffer per layer
	 * and one for the rest (a device caps each buffer's size; no op's
	 * operand crosses a layer's end) */
	int B, T;
	int B_cap, T_cap;                 /* the plan the pieces were allocated for */
	struct act_set *sets;             /* [n_sets], or NULL: one set, the fields below */
	int n_sets, cur_set;
	lt_buf **acts;                    /* [n_layers + 1] */
	lt_buf *stats;                    /* f32: the offsets marked (s) */
	struct layer_acts *la;
	size_t x_final, rstdf, xf, logits, losses, scalar;  /* rstdf, losses, scalar (s) */
	size_t lookup_grad;               /* (s) [N,C] the lookup's gradient in bf16 (in dA in f32) */
	int head_rows;                    /* the rows of logits[head_rows, V] at a time */
	int head_rows_max;                /* lt_model_set_head_rows's bound, 0: none */
	enum lt_recompute recompute;      /* BLOCK: la[l] share all but x, refilled in backward */
	lt_buf *head_grad;                /* [V, C] the head's weight gradient of the last
					     forward with grad_scale != 0 (made by the first) */
	lt_buf *ids;                      /* [3 * B_cap * T_cap] int32: tokens, targets and
					     lookup at the offsets below */
	size_t tokens, targets;
	size_t dx, dA, dB;                /* backward scratch, reused per layer */
	int have_grad;                    /* head_grad and dxf (in dA) hold the head's gradients */
	struct lt_grad_hook hook;         /* told of each finished gradient range */
	struct lt_head_loss head_loss;    /* in place of xent when training, if set */
	size_t lookup;                    /* [N] in ids: each token's row of the lookup */
	int32_t *host_tokens;             /* [B_cap * T_cap] the last forward's tokens */
	int32_t *lookup_rows;             /* [2 * B_cap * T_cap] its distinct tokens, ascending,
					     then the lookup activations' host copy */
	int32_t *row_slot;                /* [vocab_size] scratch: a token's place in them, or -1 */
	enum lt_status pause_st;          /* the first failure of a pause in backward */

	/* KV-cached decoding, between lt_model_decode_begin and _end */
	int dec_B, dec_S;
	lt_buf *kv;                       /* [L] x (k, v), each [B, K, S, D] */
	lt_buf *dec;                      /* inference activations, reused per layer */
	lt_buf *dec_stats;                /* their f32 statistics and logits */
	lt_buf *dec_ids;                  /* [B * S] int32: the new tokens */
	struct decode_acts dacts;

	/* LoRA: with lora.rank > 0, params/tensors/numel are the adapters and
	 * the base lies in `base` and `wbase` (its tensors in base_tensors,
	 * each offset into its buffer; so are those of layers, embed, norm
	 * and lm_head) */
	struct lt_lora lora;
	lt_buf *base;                     /* frozen weights but the block matrices, in
					     the activation type, or NULL */
	lt_buf *wbase;                    /* the block matrices (wqkv, wo, wgu, wdown:
					     layers' offsets are into it) in
					     lt_lora_base_type */
	size_t wbase_numel;
	struct lt_tensor *base_tensors;
	int n_base;
	size_t base_numel;
	struct lora_views *lv;            /* [n_layers] */

	/* a pipeline stage (model_pp.c): cfg holds blocks [layer0, layer0 +
	 * n_layers) of a whole model of whole_layers (0: the whole model) */
	int layer0, whole_layers;
	int has_embed, has_head;          /* the embedding; the final norm and the head */
	int *whole_of;                    /* [n_tensors]: each tensor's index in the whole */
	lt_model *stage_whole;            /* the whole model's tensors, no buffers */

	/* tensor parallelism (model_tp.c): cfg is this rank's part of `whole` */
	struct lt_tp tp;                  /* size 1: the whole model */
	lt_model *whole_tables;           /* the whole model's tensors, no buffers */
	int v0, v_valid;                  /* vocabulary rows held: [v0, v0 + v_valid) real */
	float *tp_host;                   /* [B_cap * T_cap * dim] staging for the sums */
	double *tp_stats;                 /* [3 * B_cap * T_cap] the xent's row statistics */
	int32_t *tp_targets;              /* [B_cap * T_cap] the last forward's targets */
	lt_buf *tp_part;                  /* [4 * B_cap * T_cap] f32: xent parts, then lse */
	float *tp_dec;                    /* decoding's staging: [dec_B * dec_S * dim], and
					     then tp.size of the logits [dec_B, V'] */
	int32_t *tp_dec_ids;              /* [dec_B * dec_S] the part's token ids */
	lt_buf *norm_dw;                  /* [dim] f32: the frozen norms' unused gradient */
	size_t lora_t, lora_dt;           /* [N, rank] each: x A^T and its gradient */
	size_t dec_lora_t;                /* the same in the decode buffer */
	uint64_t dropout_key;
	int dropping;                     /* the last forward dropped adapter inputs */
};

static inline int head_dim(const struct lt_model_config *c)
{
	return lt_model_config_head_dim(c);
}

/* HD, the attention's width: every query head's output side by side. */
static inline int attn_width(const struct lt_model_config *c)
{
	return c->n_heads * head_dim(c);
}

static inline int qkv_width(const struct lt_model_config *c)
{
	return (c->n_heads + 2 * c->n_kv_heads) * head_dim(c);
}

/* An adapted matrix W[out, in] of a block: its input (a LORA_IN_*), and
 * where its output lies in the activation it adds to, of width ld. */
struct lora_shape {
	int in, out, input, ld, col;
};

struct lora_shape lt_lora_shape(const struct lt_model_config *c, int t);
/* Whether target t is adapted. */
int lt_lora_on(const struct lt_lora *lora, int t);

/* Appends a tensor view; returns its offset. */
static inline size_t add_tensor(struct lt_model *m, const char *name, int rows, int cols, int decay)
{
	struct lt_tensor *t = &m->tensors[m->n_tensors++];
	snprintf(t->name, sizeof t->name, "%s", name);
	t->ndim = cols ? 2 : 1;
	t->shape[0] = rows;
	t->shape[1] = cols;
	t->numel = (size_t)rows * (cols ? (size_t)cols : 1);
	t->off = m->numel;
	t->decay = decay;
	m->numel += t->numel;
	return t->off;
}

/* Where the blocks of the trainable buffer begin, and where its output
 * range does: with adapters, the buffer is blocks alone. */
static inline size_t first_block(const struct lt_model *m)
{
	return m->base ? 0 : m->layers[0].ln_in;
}

static inline size_t output_begin(const struct lt_model *m)
{
	return m->base ? m->numel : m->norm;
}

/* Elements of one block's parameters (every block has the same). */
static inline size_t block_numel(const struct lt_model *m)
{
	return (output_begin(m) - first_block(m)) / (size_t)m->cfg.n_layers;
}

/* The gradient buffer as the mirror of the parameter buffer. */
static inline void mirror_grad_layout(struct lt_model *m)
{
	for (int l = 0; l < m->cfg.n_layers; l++)
		m->grad_block[l] = first_block(m) + (size_t)l * block_numel(m);
	m->grad_output = output_begin(m);
	m->grads_numel = m->numel;
}

/* The type of the activations in a precision, and the bytes of one. */
static inline enum lt_dtype act_type(enum lt_precision p)
{
	return p == LT_PRECISION_BF16 ? LT_BF16 : LT_F32;
}

static inline size_t act_bytes(enum lt_precision p)
{
	return lt_dtype_size(act_type(p));
}

/* The elements of a plan: its activation space (of the activation type)
 * and its statistics (f32). */
struct plan_size {
	size_t acts, stats;
};

/* A model of config c, or of its stage (stage NULL: the whole), with its
 * parameter and gradient buffers unless bare (model.c): LT_MODEL_BARE
 * tables alone, LT_MODEL_DEFERRED a model that waits for its layouts
 * (lt_model_new_sliced). */
enum { LT_MODEL_WHOLE, LT_MODEL_BARE, LT_MODEL_DEFERRED };
enum lt_status lt_model_new_tables(lt_backend *be, const struct lt_model_config *c, int bare,
				   const struct lt_stage *stage, lt_model **out);
/* A new stage's whole-model tables and its tensors' places in them, and
 * their release (model_pp.c); a split stage's whole_tables are set first. */
enum lt_status lt_model_stage_tables(lt_model *m, const struct lt_model_config *whole);
void lt_model_stage_free(lt_model *m);
/* Frees the plan's buffers; frees the head's weight gradient (every
 * set's) (model_plan.c). */
void lt_model_free_activations(lt_model *m);
void lt_model_free_head_grads(lt_model *m);

/* In bf16: the compute copy = the parameters rounded, as they are now
 * (every forward makes it anew, so whatever changed the parameters -- a
 * step, a load, an exchange -- is seen). */
static inline void refresh_compute_weights(lt_model *m)
{
	if (m->weights)
		m->be->ops->convert(m->be, (lt_ref){ m->weights, 0 }, lt_model_params(m),
				    m->params_sliced ? m->params_numel : m->numel);
}

/* (model_params.c) Before block l computes in a forward (backward = 0) or
 * in a backward (1, before its recompute), before the embedding's lookup
 * (l = -1) and before the final norm and the head (l = n_layers, in a
 * forward and before the final norm's backward): the caller's hook brings
 * those parameters where P() finds them, and in bf16 the compute copy of
 * them is made. */
enum lt_status lt_model_need_block(lt_model *m, int l, int backward);

/* (model.c) A model's tables alone, without parameter or gradient buffers. */
/* (model_tp.c) lt_model_new_tp of LT_MODEL_DEFERRED (tp->size > 1). */
enum lt_status lt_model_new_tp_deferred(lt_backend *be, const struct lt_model_config *c,
					const struct lt_tp *tp, lt_model **out);
enum lt_status lt_model_new_bare(lt_backend *be, const struct lt_model_config *c, lt_model **out);
/* (model.c) Draws tensor i of m (of its own config's layers) into x. */
void lt_model_draw(const lt_model *m, const struct lt_tensor *t, int i, uint64_t seed, float *x);

/* (model_tp.c) Tensor parallelism's parts of a pass; but the first,
 * each a no-op on a whole model. A failure of the group's sums is kept in
 * pause_st, and later sums are skipped. */
/* out[N,C] = x + in[N,K] . W^T, a layer onto the residual stream x: on
 * a split model row-parallel, the group's partial products summed. */
void lt_tp_row_parallel(lt_model *m, lt_ref out, lt_ref x, lt_ref in, lt_ref w, int K);
/* r[n] summed over the group, in place. */
void lt_tp_sum(lt_model *m, lt_ref r, size_t n);
/* The vocabulary of the whole model. */
int lt_tp_vocab(const lt_model *m);
/* The part's token ids of tokens[n]: -1 for those of other ranks. */
void lt_tp_local_tokens(const lt_model *m, const int32_t *tokens, int32_t *out, int n);
/* The vocabulary-parallel cross-entropy over the part's logits[R, V'] of
 * rows [r0, r0 + R): losses[R] of whole rows, and with grad_scale != 0
 * the part's gradient in place of the logits (xent's contract). */
void lt_tp_xent(lt_model *m, lt_ref losses, lt_ref logits, lt_ref targets, int r0, int R,
		float grad_scale);
/* The initial weights of the part: every whole tensor drawn, its part
 * kept. */
enum lt_status lt_tp_init(lt_model *m, uint64_t seed);
/* Decoding: the staging of B sequences of S tokens, freed by
 * lt_tp_decode_end; r[n] summed over the group through it; the whole
 * vocabulary's logits[B * V] from the group's parts of them, at logits
 * (the part's [B, V']). */
enum lt_status lt_tp_decode_begin(lt_model *m, int B, int S);
void lt_tp_decode_end(lt_model *m);
void lt_tp_decode_sum(lt_model *m, lt_ref r, size_t n);
void lt_tp_decode_logits(lt_model *m, lt_ref part, int B, float *logits);
/* lt_model_write_weight of a split model: t is a whole model's tensor,
 * x the whole of it; the part is written. */
enum lt_status lt_tp_write_weight(lt_model *m, const struct lt_tensor *t, float *x);
/* The host buffers the sums need for a plan of `tokens` tokens. */
enum lt_status lt_tp_plan(lt_model *m, size_t tokens);
void lt_tp_free(lt_model *m);

/* read_floats and write_floats of a block type (lora.c). */
void lt_read_blocks(lt_backend *be, float *dst, lt_ref src, size_t n);
void lt_write_blocks(lt_backend *be, lt_ref dst, float *src, size_t n);
/* Reads n elements of an f32, bf16 or block ref as floats. */
static inline void read_floats(lt_backend *be, float *dst, lt_ref src, size_t n)
{
	if (lt_dtype_is_block(lt_buf_type(src.buf))) {
		lt_read_blocks(be, dst, src, n);
		return;
	}
	be->ops->read(be, dst, src, n);
	if (lt_buf_type(src.buf) != LT_BF16)
		return;
	uint16_t *h = (uint16_t *)dst;
	for (size_t i = n; i-- > 0;)
		dst[i] = lt_bf16_to_f32(h[i]);
}

/* Writes n floats into an f32, bf16 or block ref (rounding to bf16,
 * quantizing to blocks; the floats are overwritten). */
static inline void write_floats(lt_backend *be, lt_ref dst, float *src, size_t n)
{
	if (lt_dtype_is_block(lt_buf_type(dst.buf))) {
		lt_write_blocks(be, dst, src, n);
		return;
	}
	if (lt_buf_type(dst.buf) == LT_BF16) {
		uint16_t *h = (uint16_t *)src;
		for (size_t i = 0; i < n; i++)
			h[i] = lt_bf16_from_f32(src[i]);
	}
	be->ops->write(be, dst, src, n);
}

/* The buffer holding activation offset `off`: layer l's from la[l].x, the
 * rest from x_final. */
static inline int piece_of(const lt_model *m, size_t off)
{
	int lo = 0, hi = m->cfg.n_layers - 1;  /* the answer is in [lo, hi] */
	if (off >= m->x_final)
		return m->cfg.n_layers;
	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;
		if (m->la[mid].x <= off)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

static inline size_t piece_begin(const lt_model *m, int i)
{
	return i < m->cfg.n_layers ? m->la[i].x : m->x_final;
}

/* Where the gradient of flat element off lies in the gradient buffer. */
static inline size_t grad_index(const lt_model *m, size_t off)
{
	size_t first = first_block(m);
	if (off < first)
		return off;
	if (off >= output_begin(m))
		return m->grad_output + (off - output_begin(m));
	size_t b = (off - first) / block_numel(m);
	return m->grad_block[b] + (off - first - b * block_numel(m));
}

/* Where flat parameter off lies in the parameter buffer: in place, or
 * with a caller's layout in its block's place, or where the embedding
 * table or the output range was last placed. */
static inline size_t param_index(const lt_model *m, size_t off)
{
	if (!m->params_sliced)
		return off;
	if (off < first_block(m))
		return m->param_embed + off;
	if (off >= output_begin(m))
		return m->param_output + (off - output_begin(m));
	size_t b = (off - first_block(m)) / block_numel(m);
	return m->param_block[b] + (off - first_block(m) - b * block_numel(m));
}

/* Shorthands for refs into the model's buffers: the weights ops compute
 * with (the compute copy in bf16), the gradients, the activations, the
 * statistics and the token ids. */
static inline lt_ref P(const lt_model *m, size_t off)
{
	if (m->base)
		return (lt_ref){ m->base, off };
	return (lt_ref){ m->weights ? m->weights : m->params, param_index(m, off) };
}
/* A block matrix (wqkv, wo, wgu, wdown) of the weights ops compute with. */
static inline lt_ref PW(const lt_model *m, size_t off)
{
	return m->wbase ? (lt_ref){ m->wbase, off } : P(m, off);
}
/* An adapter's weights, in the trainable buffer (its compute copy in bf16). */
static inline lt_ref PA(const lt_model *m, size_t off)
{
	return (lt_ref){ m->weights ? m->weights : m->params, off };
}
static inline lt_ref G(const lt_model *m, size_t off)
{
	return (lt_ref){ m->grads, grad_index(m, off) };
}
static inline lt_ref A(const lt_model *m, size_t off)
{
	int i = piece_of(m, off);
	return (lt_ref){ m->acts[i], off - piece_begin(m, i) };
}
/* out[M,N] (= or +=) x[M,K] . W[N,K]^T: a linear layer with [out, in] weights. */
static inline void linear_forward(lt_backend *be, lt_ref out, lt_ref x, lt_ref w, int M, int N, int K,
			   float beta)
{
	struct lt_gemm g = { .trans_a = 0, .trans_b = 1, .m = M, .n = N, .k = K, .alpha = 1.0f,
			     .beta = beta, .lda = K, .ldb = K, .ldc = N, .batch = 1 };
	be->ops->gemm(be, &g, x, w, out);
}

/* dx[M,K] (= or +=, by beta) dout[M,N] . W[N,K] */
static inline void linear_grad_input(lt_backend *be, lt_ref dx, float beta, lt_ref dout, lt_ref w,
			      int M, int N, int K)
{
	struct lt_gemm g = { .trans_a = 0, .trans_b = 0, .m = M, .n = K, .k = N, .alpha = 1.0f,
			     .beta = beta, .lda = N, .ldb = K, .ldc = K, .batch = 1 };
	be->ops->gemm(be, &g, dout, w, dx);
}

/* dW[N,K] (= or +=, by beta) dout[M,N]^T . x[M,K] */
static inline void linear_grad_weight(lt_backend *be, lt_ref dw, float beta, lt_ref dout, lt_ref x,
			       int M, int N, int K)
{
	struct lt_gemm g = { .trans_a = 1, .trans_b = 0, .m = N, .n = K, .k = M, .alpha = 1.0f,
			     .beta = beta, .lda = N, .ldb = K, .ldc = K, .batch = 1 };
	be->ops->gemm(be, &g, dout, x, dw);
}

/* dx[M,K] (= or +=) dout[M,N] . W[N,K], and dW[N,K] += dout^T . x[M,K]. */
/* c[M,N] (= or +=, by beta) alpha a . b, each operand transposed or not,
 * with its leading dimension: a GEMM over column slices. */
static inline void gemm_slices(lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
			lt_ref a, int lda, lt_ref b, int ldb, float beta, lt_ref c, int ldc)
{
	struct lt_gemm g = { .trans_a = ta, .trans_b = tb, .m = M, .n = N, .k = K,
			     .alpha = alpha, .beta = beta, .lda = lda, .ldb = ldb, .ldc = ldc,
			     .batch = 1 };
	be->ops->gemm(be, &g, a, b, c);
}

/* A ref into the decode buffer. */
static inline lt_ref DA(const lt_model *m, size_t off) { return (lt_ref){ m->dec, off }; }

/* The adapters of block l's training forward that read `input` (an
 * LORA_IN_*, at activation offset x), added to y. */
void lt_lora_block_forward(lt_model *m, int l, int input, size_t x, lt_ref y);
/* Backward through the adapters of layer l reading `input`: dy is the
 * gradient of their output, dx that of their input, added to. */
void lt_lora_backward(lt_model *m, int l, int input, lt_ref dy, lt_ref dx);
/* The adapters of layer l reading `input` in decoding, added to y. */
void lt_lora_decode(lt_model *m, int l, int input, lt_ref x, lt_ref y, int N);
/* The frozen base in its type (its contents are drawn or loaded after). */
enum lt_status lt_lora_make_base(lt_model *m);

#endif
