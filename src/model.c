/* The LLaMA model: parameter layout, activation plan, forward and backward,
 * and KV-cached decoding. */
#include "config.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

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
	lt_buf *weights;                  /* [numel] bf16 compute copy of params, or NULL */
	size_t grads_numel;               /* numel, or the caller's layout's size */
	size_t *grad_block;               /* [n_layers] where each block's gradients start */
	size_t grad_output;               /* where the output range's gradients start */
	int grads_written;                /* a caller's layout: backward writes, not adds */
	lt_buf *inv_freq;                 /* [D/2] rope frequencies */

	/* the activation plan: one offset space, held as one buffer per layer
	 * and one for the rest (a device caps each buffer's size; no op's
	 * operand crosses a layer's end) */
	int B, T;
	int B_cap, T_cap;                 /* the plan the pieces were allocated for */
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
	 * the base lies in `base` (its tensors in base_tensors; the offsets of
	 * layers, embed, norm and lm_head are into it) */
	struct lt_lora lora;
	lt_buf *base;                     /* frozen weights, f32 or bf16, or NULL */
	struct lt_tensor *base_tensors;
	int n_base;
	size_t base_numel;
	struct lora_views *lv;            /* [n_layers] */
	lt_buf *norm_dw;                  /* [dim] f32: the frozen norms' unused gradient */
	size_t lora_t, lora_dt;           /* [N, rank] each: x A^T and its gradient */
	size_t dec_lora_t;                /* the same in the decode buffer */
	uint64_t dropout_key;
	int dropping;                     /* the last forward dropped adapter inputs */
};

static int head_dim(const struct lt_model_config *c)
{
	return c->dim / c->n_heads;
}

static int qkv_width(const struct lt_model_config *c)
{
	return (c->n_heads + 2 * c->n_kv_heads) * head_dim(c);
}

/* An adapted matrix W[out, in] of a block: its input (a LORA_IN_*), and
 * where its output lies in the activation it adds to, of width ld. */
struct lora_shape {
	int in, out, input, ld, col;
};

static struct lora_shape lora_shape_of(const struct lt_model_config *c, int t)
{
	int C = c->dim, HD = c->dim, KD = c->n_kv_heads * head_dim(c), F = c->ffn_dim;
	int QKV = qkv_width(c);
	switch (t) {
	case LT_LORA_Q: return (struct lora_shape){ C, HD, LORA_IN_LN1, QKV, 0 };
	case LT_LORA_K: return (struct lora_shape){ C, KD, LORA_IN_LN1, QKV, HD };
	case LT_LORA_V: return (struct lora_shape){ C, KD, LORA_IN_LN1, QKV, HD + KD };
	case LT_LORA_O: return (struct lora_shape){ HD, C, LORA_IN_ATT, C, 0 };
	case LT_LORA_GATE: return (struct lora_shape){ C, F, LORA_IN_LN2, 2 * F, 0 };
	case LT_LORA_UP: return (struct lora_shape){ C, F, LORA_IN_LN2, 2 * F, F };
	default: return (struct lora_shape){ F, C, LORA_IN_G, C, 0 };
	}
}

static int lora_on(const struct lt_lora *lora, int t)
{
	return lora && lora->rank > 0 && (lora->targets >> t & 1u);
}

/* The Hugging Face names of the adapted matrices, in enum lt_lora_target's order. */
static const char *const lora_names[LT_LORA_TARGETS] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

size_t lt_lora_params(const struct lt_model_config *c, const struct lt_lora *lora)
{
	size_t n = 0;
	for (int t = 0; t < LT_LORA_TARGETS; t++) {
		struct lora_shape sh = lora_shape_of(c, t);
		if (lora_on(lora, t))
			n += (size_t)lora->rank * (size_t)(sh.in + sh.out);
	}
	return n * (size_t)c->n_layers;
}

/* Appends a tensor view; returns its offset. */
static size_t add_tensor(struct lt_model *m, const char *name, int rows, int cols, int decay)
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

/* Lays out every tensor in the flat buffer, in Hugging Face names. */
static void lay_out_parameters(struct lt_model *m)
{
	const struct lt_model_config *c = &m->cfg;
	int C = c->dim, D = head_dim(c), HD = c->n_heads * D, KD = c->n_kv_heads * D, F = c->ffn_dim;
	char name[80];

	m->embed = add_tensor(m, "model.embed_tokens.weight", c->vocab_size, C, 1);
	for (int l = 0; l < c->n_layers; l++) {
		struct layer_views *lv = &m->layers[l];
#define LAYER_NAME(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), name)
		lv->ln_in = add_tensor(m, LAYER_NAME("input_layernorm.weight"), C, 0, 0);
		lv->wqkv = add_tensor(m, LAYER_NAME("self_attn.q_proj.weight"), HD, C, 1);
		add_tensor(m, LAYER_NAME("self_attn.k_proj.weight"), KD, C, 1);
		add_tensor(m, LAYER_NAME("self_attn.v_proj.weight"), KD, C, 1);
		lv->wo = add_tensor(m, LAYER_NAME("self_attn.o_proj.weight"), C, HD, 1);
		lv->ln_post = add_tensor(m, LAYER_NAME("post_attention_layernorm.weight"), C, 0, 0);
		lv->wgu = add_tensor(m, LAYER_NAME("mlp.gate_proj.weight"), F, C, 1);
		add_tensor(m, LAYER_NAME("mlp.up_proj.weight"), F, C, 1);
		lv->wdown = add_tensor(m, LAYER_NAME("mlp.down_proj.weight"), C, F, 1);
#undef LAYER_NAME
	}
	m->norm = add_tensor(m, "model.norm.weight", C, 0, 0);
	m->lm_head = c->tied ? m->embed : add_tensor(m, "lm_head.weight", c->vocab_size, C, 1);
}

/* Where the blocks of the trainable buffer begin, and where its output
 * range does: with adapters, the buffer is blocks alone. */
static size_t first_block(const struct lt_model *m)
{
	return m->base ? 0 : m->layers[0].ln_in;
}

static size_t output_begin(const struct lt_model *m)
{
	return m->base ? m->numel : m->norm;
}

/* Elements of one block's parameters (every block has the same). */
static size_t block_numel(const struct lt_model *m)
{
	return (output_begin(m) - first_block(m)) / (size_t)m->cfg.n_layers;
}

/* The gradient buffer as the mirror of the parameter buffer. */
static void mirror_grad_layout(struct lt_model *m)
{
	for (int l = 0; l < m->cfg.n_layers; l++)
		m->grad_block[l] = first_block(m) + (size_t)l * block_numel(m);
	m->grad_output = output_begin(m);
	m->grads_numel = m->numel;
}

/* The LM head and the cross-entropy run over row chunks of at most this
 * many logits, so that no [N, V] buffer exists: 16 Mi floats (64 MiB), a
 * few hundred rows at common vocabularies, enough for a GEMM to run at
 * full speed. */
#define HEAD_CHUNK_ELEMS ((size_t)1 << 24)

/* Rows of logits computed at a time for N rows over a vocabulary of V. */
static int head_rows(size_t N, size_t V)
{
	size_t r = HEAD_CHUNK_ELEMS / V;
	return (int)(r < 1 ? 1 : r > N ? N : r);
}

/* Elements of the int32 buffer for (B, T): tokens, targets, lookup. */
static size_t ids_elems(int B, int T)
{
	return 3 * (size_t)B * T;
}

/* The elements of a plan: its activation space (of the activation type)
 * and its statistics (f32). */
struct plan_size {
	size_t acts, stats;
};

/* Take n elements of the activation space (TAKE) or of the statistics
 * (STAT), from the running totals at and st; give their offset. */
#define TAKE(n) (*at += (n), *at - (n))
#define STAT(n) (*st += (n), *st - (n))

/* Offsets of what one block's backward reads but its input, taken from
 * *at and *st on. */
static void take_block_acts(const struct lt_model_config *c, int B, int T,
			    const struct lt_lora *lora, struct layer_acts *a, size_t *at, size_t *st)
{
	size_t N = (size_t)B * T, C = (size_t)c->dim, F = (size_t)c->ffn_dim;
	size_t HD = (size_t)c->dim, QKV = (size_t)qkv_width(c);
	a->rstd1 = STAT(N);
	a->ln1 = TAKE(N * C);
	a->qkv = TAKE(N * QKV);
	a->lse = STAT((size_t)B * c->n_heads * T);
	a->att = TAKE(N * HD);
	a->xmid = TAKE(N * C);
	a->rstd2 = STAT(N);
	a->ln2 = TAKE(N * C);
	a->h = TAKE(N * 2 * F);
	a->g = TAKE(N * F);
	for (int i = 0; i < LORA_INPUTS; i++)
		a->u[i] = 0;
	if (lora && lora->rank > 0 && lora->dropout > 0.0f)
		for (int t = 0; t < LT_LORA_TARGETS; t++) {
			struct lora_shape sh = lora_shape_of(c, t);
			if (lora_on(lora, t) && !a->u[sh.input])
				a->u[sh.input] = TAKE(N * (size_t)sh.in);
		}
}

/* The sizes of the activations for (B, T); fills the offsets when m is
 * given. The same walk serves the estimate and the plan. */
static struct plan_size plan_activations(const struct lt_model_config *c, int B, int T,
					 enum lt_recompute recompute, enum lt_precision precision,
					 const struct lt_lora *lora, struct lt_model *m)
{
	size_t N = (size_t)B * T, C = (size_t)c->dim, F = (size_t)c->ffn_dim;
	size_t HD = (size_t)c->dim, QKV = (size_t)qkv_width(c), V = (size_t)c->vocab_size;
	struct plan_size size = { 0, 0 };
	size_t *at = &size.acts, *st = &size.stats;
	struct layer_acts a = { 0 };
	for (int l = 0; l < c->n_layers; l++) {
		a.x = TAKE(N * C);
		if (!recompute)
			take_block_acts(c, B, T, lora, &a, at, st);
		if (m)
			m->la[l] = a;
	}
	size_t x_final = TAKE(N * C), rstdf = STAT(N), xf = TAKE(N * C);
	int rows = head_rows(N, V);
	if (m && m->head_rows_max > 0 && rows > m->head_rows_max)
		rows = m->head_rows_max;
	size_t logits = TAKE((size_t)rows * V), losses = STAT(N), scalar = STAT(16);
	/* the lookup's gradient is f32, which dA is not in bf16 */
	size_t lookup_grad = precision == LT_PRECISION_BF16 ? STAT(N * C) : 0;
	if (recompute) {
		/* one block's worth, after x_final: in the last piece */
		take_block_acts(c, B, T, lora, &a, at, st);
		for (int l = 0; m && l < c->n_layers; l++) {
			size_t x = m->la[l].x;
			m->la[l] = a;
			m->la[l].x = x;
		}
	}
	size_t wa = C > HD ? C : HD, wb = 2 * F > QKV ? 2 * F : QKV;
	if (F > wa)
		wa = F;
	size_t dx = TAKE(N * C), dA = TAKE(N * wa), dB = TAKE(N * wb);
	size_t r = lora && lora->rank > 0 ? (size_t)lora->rank : 0;
	size_t lora_t = TAKE(N * r), lora_dt = TAKE(N * r);
	if (m) {
		m->lora_t = lora_t;
		m->lora_dt = lora_dt;
		m->lookup_grad = lookup_grad;
		m->x_final = x_final;
		m->rstdf = rstdf;
		m->xf = xf;
		m->logits = logits;
		m->head_rows = rows;
		m->losses = losses;
		m->tokens = 0;  /* in ids */
		m->targets = N;
		m->lookup = 2 * N;
		m->scalar = scalar;
		m->dx = dx;
		m->dA = dA;
		m->dB = dB;
	}
	return size;
}

#undef TAKE
#undef STAT

/* The type of the activations in a precision, and the bytes of one. */
static enum lt_dtype act_type(enum lt_precision p)
{
	return p == LT_PRECISION_BF16 ? LT_BF16 : LT_F32;
}

static size_t act_bytes(enum lt_precision p)
{
	return lt_dtype_size(act_type(p));
}

/* Reads n elements of an f32 or bf16 ref as floats. */
static void read_floats(lt_backend *be, float *dst, lt_ref src, size_t n)
{
	be->ops->read(be, dst, src, n);
	if (lt_buf_type(src.buf) != LT_BF16)
		return;
	uint16_t *h = (uint16_t *)dst;
	for (size_t i = n; i-- > 0;)
		dst[i] = lt_bf16_to_f32(h[i]);
}

/* Writes n floats into an f32 or bf16 ref (rounding to bf16; the floats are
 * overwritten). */
static void write_floats(lt_backend *be, lt_ref dst, float *src, size_t n)
{
	if (lt_buf_type(dst.buf) == LT_BF16) {
		uint16_t *h = (uint16_t *)src;
		for (size_t i = 0; i < n; i++)
			h[i] = lt_bf16_from_f32(src[i]);
	}
	be->ops->write(be, dst, src, n);
}

void lt_model_estimate_memory(const struct lt_model_config *c, int B, int T, int threads,
			      enum lt_recompute recompute, enum lt_precision precision,
			      struct lt_mem_estimate *out)
{
	lt_model_estimate_memory_lora(c, B, T, threads, recompute, precision, NULL, out);
}

void lt_model_estimate_memory_lora(const struct lt_model_config *c, int B, int T, int threads,
				   enum lt_recompute recompute, enum lt_precision precision,
				   const struct lt_lora *lora, struct lt_mem_estimate *out)
{
	int adapters = lora && lora->rank > 0;
	size_t P = adapters ? lt_lora_params(c, lora) : lt_model_config_params(c);
	struct plan_size plan = plan_activations(c, B, T, recompute, precision, lora, NULL);
	memset(out, 0, sizeof *out);
	/* the f32 parameters, and in bf16 their compute copy; with adapters,
	 * the frozen base in the activation type besides */
	out->params = P * 4 + (precision == LT_PRECISION_BF16 ? P * 2 : 0);
	if (adapters)
		out->params += lt_model_config_params(c) * act_bytes(precision) + (size_t)c->dim * 4;
	out->grads = P * 4;
	out->optimizer = P * 8;
	/* the head's weight gradient is made by the first training step (not
	 * with adapters: the head is frozen) */
	out->activations = plan.acts * act_bytes(precision) + plan.stats * 4 +
			   ids_elems(B, T) * 4 + (adapters ? 0 : (size_t)c->vocab_size * c->dim * 4);
	/* The CPU attention keeps two score tiles of min(T, 64) query rows by
	 * T keys per thread (cpu/cpu_attention.c). */
	size_t tile_rows = T < 64 ? (size_t)T : 64;
	out->workspace = (size_t)(threads > 0 ? threads : 1) * 2 * tile_rows * (size_t)T * 4;
	/* Code, libraries, OpenMP stacks and OpenBLAS's per-thread buffers,
	 * measured on the 15M preset: about 8 MiB plus 3 MiB per thread (14 MiB
	 * at 2 threads, 53 MiB at 16). */
	out->runtime = ((size_t)8 << 20) + (size_t)(threads > 0 ? threads : 1) * ((size_t)3 << 20);
	out->total = out->params + out->grads + out->optimizer + out->activations + out->workspace +
		     out->runtime;
}

/* inv_freq[i] = theta^(-2i/D), scaled as the config says, in float. */
static void write_rope_frequencies(struct lt_model *m)
{
	int half = head_dim(&m->cfg) / 2;
	float *freq = malloc((size_t)half * sizeof *freq);
	double *exact = malloc((size_t)half * sizeof *exact);
	LT_ASSERT(freq && exact);
	lt_model_config_rope_freqs(&m->cfg, exact);
	for (int i = 0; i < half; i++)
		freq[i] = (float)exact[i];
	m->be->ops->write(m->be, (lt_ref){ m->inv_freq, 0 }, freq, (size_t)half);
	free(exact);
	free(freq);
}

/* The model's tables, and unless `bare` its f32 parameter and gradient
 * buffers. */
static enum lt_status new_model(lt_backend *be, const struct lt_model_config *c, int bare,
				lt_model **out)
{
	enum lt_status st = lt_model_config_check(c);
	*out = NULL;
	if (st != LT_OK)
		return st;
	struct lt_model *m = calloc(1, sizeof *m);
	if (!m)
		goto nomem;
	m->cfg = *c;
	m->be = be;
	m->tensors = calloc((size_t)c->n_layers * 9 + 3, sizeof *m->tensors);
	m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
	m->la = calloc((size_t)c->n_layers, sizeof *m->la);
	m->grad_block = calloc((size_t)c->n_layers, sizeof *m->grad_block);
	if (!m->tensors || !m->layers || !m->la || !m->grad_block)
		goto nomem;
	lay_out_parameters(m);
	mirror_grad_layout(m);

	if ((!bare && (st = lt_buf_new(be, LT_F32, m->numel, &m->params)) != LT_OK) ||
	    (!bare && (st = lt_buf_new(be, LT_F32, m->numel, &m->grads)) != LT_OK) ||
	    (st = lt_buf_new(be, LT_F32, (size_t)head_dim(c) / 2, &m->inv_freq)) != LT_OK) {
		lt_errmsg_prefix("model of %zu parameters", m->numel);
		lt_model_free(m);
		return st;
	}
	write_rope_frequencies(m);
	*out = m;
	return LT_OK;
nomem:
	lt_model_free(m);
	lt_errmsg_set("cannot allocate the model's tables");
	return LT_ERR_NOMEM;
}

enum lt_status lt_model_new(lt_backend *be, const struct lt_model_config *c, lt_model **out)
{
	return new_model(be, c, 0, out);
}

enum lt_status lt_model_new_adapted(lt_backend *be, const struct lt_model_config *c,
				    const struct lt_lora *lora, enum lt_precision p, lt_model **out)
{
	int adapters = lora && lora->rank > 0;
	enum lt_status st = new_model(be, c, adapters, out);
	if (st != LT_OK)
		return st;
	(*out)->precision = p;  /* the base is made in its type at once */
	if (adapters)
		st = lt_model_set_lora(*out, lora);
	if (st == LT_OK)
		st = lt_model_set_precision(*out, p);
	if (st != LT_OK) {
		lt_model_free(*out);
		*out = NULL;
	}
	return st;
}

static void free_activations(lt_model *m)
{
	free(m->host_tokens);
	free(m->lookup_rows);
	m->host_tokens = m->lookup_rows = NULL;
	lt_buf_free(m->be, m->ids);
	lt_buf_free(m->be, m->stats);
	m->ids = NULL;
	m->stats = NULL;
	if (!m->acts)
		return;
	for (int i = 0; i <= m->cfg.n_layers; i++)
		lt_buf_free(m->be, m->acts[i]);
	free(m->acts);
	m->acts = NULL;
}

/* The buffer holding activation offset `off`: layer l's from la[l].x, the
 * rest from x_final. */
static int piece_of(const lt_model *m, size_t off)
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

static size_t piece_begin(const lt_model *m, int i)
{
	return i < m->cfg.n_layers ? m->la[i].x : m->x_final;
}

/* Allocates the pieces of a plan. */
static enum lt_status allocate_activations(lt_model *m, struct plan_size size, size_t tokens)
{
	size_t n = size.acts;
	int pieces = m->cfg.n_layers + 1;
	m->acts = calloc((size_t)pieces, sizeof *m->acts);
	m->host_tokens = malloc(tokens * sizeof *m->host_tokens);
	m->lookup_rows = malloc(2 * tokens * sizeof *m->lookup_rows);
	if (!m->acts || !m->host_tokens || !m->lookup_rows) {
		free_activations(m);
		lt_errmsg_set("cannot allocate the activation table");
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < pieces; i++) {
		size_t end = i + 1 < pieces ? piece_begin(m, i + 1) : n;
		enum lt_status st = lt_buf_new(m->be, act_type(m->precision), end - piece_begin(m, i),
					       &m->acts[i]);
		if (st != LT_OK) {
			free_activations(m);
			return st;
		}
	}
	enum lt_status st = lt_buf_new(m->be, LT_F32, size.stats, &m->stats);
	if (st == LT_OK)
		st = lt_buf_new(m->be, LT_I32, 3 * tokens, &m->ids);
	if (st != LT_OK)
		free_activations(m);
	return st;
}

void lt_model_free(lt_model *m)
{
	if (!m)
		return;
	lt_buf_free(m->be, m->params);
	lt_buf_free(m->be, m->weights);
	lt_buf_free(m->be, m->grads);
	lt_buf_free(m->be, m->inv_freq);
	lt_buf_free(m->be, m->head_grad);
	lt_buf_free(m->be, m->base);
	lt_buf_free(m->be, m->norm_dw);
	if (m->base_tensors != m->tensors)
		free(m->base_tensors);
	free(m->lv);
	free_activations(m);
	lt_model_decode_end(m);
	free(m->row_slot);
	free(m->tensors);
	free(m->layers);
	free(m->la);
	free(m->grad_block);
	free(m);
}

const struct lt_model_config *lt_model_config_of(const lt_model *m) { return &m->cfg; }
lt_backend *lt_model_backend(const lt_model *m) { return m->be; }
size_t lt_model_num_params(const lt_model *m) { return m->numel; }
int lt_model_num_tensors(const lt_model *m) { return m->n_tensors; }
lt_ref lt_model_params(const lt_model *m) { return (lt_ref){ m->params, 0 }; }
lt_ref lt_model_grads(const lt_model *m) { return (lt_ref){ m->grads, 0 }; }
size_t lt_model_grads_numel(const lt_model *m) { return m->grads_numel; }

size_t lt_model_block_begin(const lt_model *m, int l)
{
	LT_ASSERT(l >= 0 && l <= m->cfg.n_layers);
	return first_block(m) + (size_t)l * block_numel(m);
}

/* Where the gradient of flat element off lies in the gradient buffer. */
static size_t grad_index(const lt_model *m, size_t off)
{
	size_t first = first_block(m);
	if (off < first)
		return off;
	if (off >= output_begin(m))
		return m->grad_output + (off - output_begin(m));
	size_t b = (off - first) / block_numel(m);
	return m->grad_block[b] + (off - first - b * block_numel(m));
}

enum lt_status lt_model_set_grad_layout(lt_model *m, const struct lt_grad_layout *layout)
{
	int L = m->cfg.n_layers;
	size_t n = layout ? layout->numel : m->numel, first = first_block(m);
	if (layout) {
		LT_ASSERT(layout->output >= first &&
			  layout->output + (m->numel - output_begin(m)) <= n);
		for (int l = 0; l < L; l++)
			LT_ASSERT(layout->block[l] >= first && layout->block[l] + block_numel(m) <= n);
	}
	/* free first: the two buffers together may not fit where one does */
	lt_buf_free(m->be, m->grads);
	m->grads = NULL;
	m->grads_numel = 0;
	enum lt_status st = lt_buf_new(m->be, LT_F32, n, &m->grads);
	if (st != LT_OK) {
		lt_errmsg_prefix("gradient buffer of %zu elements", n);
		return st;
	}
	m->grads_numel = n;
	m->grads_written = layout != NULL;
	if (layout) {
		memcpy(m->grad_block, layout->block, (size_t)L * sizeof *m->grad_block);
		m->grad_output = layout->output;
	} else {
		mirror_grad_layout(m);
	}
	lt_model_zero_grads(m);
	return m->be->ops->sync(m->be);
}

static lt_ref A(const lt_model *m, size_t off);


const struct lt_tensor *lt_model_tensor(const lt_model *m, int i)
{
	return i >= 0 && i < m->n_tensors ? &m->tensors[i] : NULL;
}

const struct lt_tensor *lt_model_find(const lt_model *m, const char *name)
{
	for (int i = 0; i < m->n_tensors; i++)
		if (!strcmp(m->tensors[i].name, name))
			return &m->tensors[i];
	return NULL;
}

static int is_residual_output(const char *name)
{
	return strstr(name, "o_proj") || strstr(name, "down_proj");
}

/* The adapters' first weights: A uniform(-1/sqrt(in), 1/sqrt(in)) (a
 * Kaiming-uniform bound), B zero, so the adapted model starts as the base. */
enum lt_status lt_model_init_adapters(lt_model *m, uint64_t seed)
{
	float *host = calloc(m->numel + 1, sizeof *host);
	if (!host) {
		lt_errmsg_set("cannot allocate %zu bytes to initialise the adapters", m->numel * 4);
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < m->n_tensors; i++) {
		const struct lt_tensor *t = &m->tensors[i];
		if (!strstr(t->name, "lora_A"))
			continue;
		struct lt_rng rng;
		double bound = 1.0 / sqrt((double)t->shape[1]);
		lt_rng_seed(&rng, seed, ((uint64_t)1 << 32) + (uint64_t)i);
		for (size_t j = 0; j < t->numel; j++)
			host[t->off + j] = (float)((2.0 * lt_rng_uniform(&rng) - 1.0) * bound);
	}
	m->be->ops->write(m->be, lt_model_params(m), host, m->numel);
	enum lt_status st = m->be->ops->sync(m->be);
	free(host);
	return st;
}

enum lt_status lt_model_init(lt_model *m, uint64_t seed)
{
	const struct lt_tensor *tensors = m->base ? m->base_tensors : m->tensors;
	int n = m->base ? m->n_base : m->n_tensors;
	size_t numel = m->base ? m->base_numel : m->numel;
	float *host = malloc(numel * sizeof *host);
	if (!host) {
		lt_errmsg_set("cannot allocate %zu bytes to initialise the model", numel * sizeof *host);
		return LT_ERR_NOMEM;
	}
	float resid_std = 0.02f / sqrtf(2.0f * (float)m->cfg.n_layers);
	for (int i = 0; i < n; i++) {
		const struct lt_tensor *t = &tensors[i];
		float *x = host + t->off;
		if (t->ndim == 1) {
			for (size_t j = 0; j < t->numel; j++)
				x[j] = 1.0f;
		} else {
			float std = is_residual_output(t->name) ? resid_std : 0.02f;
			lt_rng_fill_normal(x, t->numel, std, seed, (uint64_t)i);
		}
	}
	if (m->base)
		write_floats(m->be, (lt_ref){ m->base, 0 }, host, numel);
	else
		m->be->ops->write(m->be, lt_model_params(m), host, m->numel);
	enum lt_status st = m->be->ops->sync(m->be);
	free(host);
	return st == LT_OK && m->base ? lt_model_init_adapters(m, seed) : st;
}

enum lt_status lt_model_plan(lt_model *m, int B, int T)
{
	if (B <= 0 || T <= 0 || T > m->cfg.max_seq) {
		lt_errmsg_set("batch %d x seq %d: need batch >= 1 and 1 <= seq <= max_seq (%d)", B, T,
			      m->cfg.max_seq);
		return LT_ERR_CONFIG;
	}
	if (m->acts && m->B == B && m->T == T)
		return LT_OK;
	/* Every piece grows with the tokens B * T (the last one's 16 scalars
	 * aside), so a plan of no more tokens fits in the pieces as they are. */
	if (m->acts && (size_t)B * T <= (size_t)m->B_cap * m->T_cap) {
		plan_activations(&m->cfg, B, T, m->recompute, m->precision, &m->lora, m);
		m->B = B;
		m->T = T;
		return LT_OK;
	}
	free_activations(m);
	struct plan_size size = plan_activations(&m->cfg, B, T, m->recompute, m->precision,
						 &m->lora, m);
	enum lt_status st = allocate_activations(m, size, (size_t)B * T);
	if (st != LT_OK) {
		double bytes = (double)size.acts * (double)act_bytes(m->precision) +
			       (double)size.stats * 4;
		lt_errmsg_prefix("activations for batch %d x seq %d (%.2f GiB; lower train.batch or "
				 "train.seq)", B, T, bytes / 1073741824.0);
		return st;
	}
	m->B = m->B_cap = B;
	m->T = m->T_cap = T;
	return LT_OK;
}

/* Shorthands for refs into the model's buffers: the weights ops compute
 * with (the compute copy in bf16), the gradients, the activations, the
 * statistics and the token ids. */
static lt_ref P(const lt_model *m, size_t off)
{
	return (lt_ref){ m->base ? m->base : m->weights ? m->weights : m->params, off };
}
/* An adapter's weights, in the trainable buffer (its compute copy in bf16). */
static lt_ref PA(const lt_model *m, size_t off)
{
	return (lt_ref){ m->weights ? m->weights : m->params, off };
}
static lt_ref G(const lt_model *m, size_t off)
{
	return (lt_ref){ m->grads, grad_index(m, off) };
}
static lt_ref A(const lt_model *m, size_t off)
{
	int i = piece_of(m, off);
	return (lt_ref){ m->acts[i], off - piece_begin(m, i) };
}
static lt_ref S(const lt_model *m, size_t off) { return (lt_ref){ m->stats, off }; }
static lt_ref I(const lt_model *m, size_t off) { return (lt_ref){ m->ids, off }; }

/* out[M,N] (= or +=) x[M,K] . W[N,K]^T: a linear layer with [out, in] weights. */
static void linear_forward(lt_backend *be, lt_ref out, lt_ref x, lt_ref w, int M, int N, int K,
			   float beta)
{
	struct lt_gemm g = { .trans_a = 0, .trans_b = 1, .m = M, .n = N, .k = K, .alpha = 1.0f,
			     .beta = beta, .lda = K, .ldb = K, .ldc = N, .batch = 1 };
	be->ops->gemm(be, &g, x, w, out);
}

/* dx[M,K] (= or +=, by beta) dout[M,N] . W[N,K] */
static void linear_grad_input(lt_backend *be, lt_ref dx, float beta, lt_ref dout, lt_ref w,
			      int M, int N, int K)
{
	struct lt_gemm g = { .trans_a = 0, .trans_b = 0, .m = M, .n = K, .k = N, .alpha = 1.0f,
			     .beta = beta, .lda = N, .ldb = K, .ldc = K, .batch = 1 };
	be->ops->gemm(be, &g, dout, w, dx);
}

/* dW[N,K] (= or +=, by beta) dout[M,N]^T . x[M,K] */
static void linear_grad_weight(lt_backend *be, lt_ref dw, float beta, lt_ref dout, lt_ref x,
			       int M, int N, int K)
{
	struct lt_gemm g = { .trans_a = 1, .trans_b = 0, .m = N, .n = K, .k = M, .alpha = 1.0f,
			     .beta = beta, .lda = N, .ldb = K, .ldc = K, .batch = 1 };
	be->ops->gemm(be, &g, dout, x, dw);
}

/* dx[M,K] (= or +=) dout[M,N] . W[N,K], and dW[N,K] += dout^T . x[M,K]. */
static void linear_backward(lt_backend *be, lt_ref dx, float dx_beta, lt_ref dw, lt_ref dout,
			    lt_ref x, lt_ref w, int M, int N, int K)
{
	linear_grad_input(be, dx, dx_beta, dout, w, M, N, K);
	linear_grad_weight(be, dw, 1.0f, dout, x, M, N, K);
}

/* c[M,N] (= or +=, by beta) alpha a . b, each operand transposed or not,
 * with its leading dimension: a GEMM over column slices. */
static void gemm_slices(lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
			lt_ref a, int lda, lt_ref b, int ldb, float beta, lt_ref c, int ldc)
{
	struct lt_gemm g = { .trans_a = ta, .trans_b = tb, .m = M, .n = N, .k = K,
			     .alpha = alpha, .beta = beta, .lda = lda, .ldb = ldb, .ldc = ldc,
			     .batch = 1 };
	be->ops->gemm(be, &g, a, b, c);
}

static float lora_scale(const lt_model *m)
{
	return m->lora.alpha / (float)m->lora.rank;
}

/* Adds target t's adapter of layer l to y (its output, of width sh.ld):
 * y[:, col:col+out] += scale (u A^T) B^T over N rows, u[N, in] its input,
 * through tmp[N, rank]. */
static void lora_forward(lt_model *m, int l, int t, lt_ref u, lt_ref y, int N, lt_ref tmp)
{
	struct lora_shape sh = lora_shape_of(&m->cfg, t);
	int r = m->lora.rank;
	linear_forward(m->be, tmp, u, PA(m, m->lv[l].a[t]), N, r, sh.in, 0.0f);
	gemm_slices(m->be, 0, 1, N, sh.out, r, lora_scale(m), tmp, r, PA(m, m->lv[l].b[t]), r,
		    1.0f, lt_ref_at(y, (size_t)sh.col), sh.ld);
}

/* In training with dropout: dst = src with each element dropped with the
 * adapters' probability p, the rest scaled by 1/(1 - p); the mask depends
 * only on the dropout key, the layer and the input, so backward draws it
 * again. Done on the host: no op of the backend drops. */
static enum lt_status lora_drop(lt_model *m, int l, int input, lt_ref dst, lt_ref src, size_t n)
{
	lt_backend *be = m->be;
	int half = act_type(m->precision) == LT_BF16;
	float *x = malloc(n * sizeof *x + 1);
	if (!x) {
		lt_errmsg_set("cannot allocate %zu floats for the adapters' dropout", n);
		return LT_ERR_NOMEM;
	}
	be->ops->read(be, x, src, n);
	enum lt_status st = be->ops->sync(be);
	uint16_t *h = (uint16_t *)x;
	double p = m->lora.dropout;
	float keep = (float)(1.0 / (1.0 - p));
	struct lt_rng rng;
	lt_rng_seed(&rng, m->dropout_key, (uint64_t)l * LORA_INPUTS + (uint64_t)input);
	/* bf16 elements are widened in place from the end back */
	for (size_t i = n; half && i-- > 0;)
		x[i] = lt_bf16_to_f32(h[i]);
	for (size_t i = 0; i < n; i++)
		x[i] = lt_rng_uniform(&rng) < p ? 0.0f : x[i] * keep;
	for (size_t i = 0; half && i < n; i++)
		h[i] = lt_bf16_from_f32(x[i]);
	be->ops->write(be, dst, x, n);
	if (st == LT_OK)
		st = be->ops->sync(be);
	free(x);
	return st;
}

/* The adapters of layer l reading `input` (x, of width in), added to y:
 * x dropped into u first when the forward drops. */
static void lora_inputs_forward(lt_model *m, int l, int input, lt_ref x, lt_ref y, int N,
				lt_ref u_drop, lt_ref tmp)
{
	lt_ref u = x;
	int dropped = 0;
	for (int t = 0; t < LT_LORA_TARGETS; t++) {
		struct lora_shape sh = lora_shape_of(&m->cfg, t);
		if (!lora_on(&m->lora, t) || sh.input != input)
			continue;
		if (m->dropping && !dropped) {
			enum lt_status st = lora_drop(m, l, input, u_drop, x, (size_t)N * sh.in);
			if (st != LT_OK && m->pause_st == LT_OK)
				m->pause_st = st;
			u = u_drop;
			dropped = 1;
		}
		lora_forward(m, l, t, u, y, N, tmp);
	}
}

/* The adapters of block l's training forward that read `input`. */
static void lora_block_forward(lt_model *m, int l, int input, size_t x, lt_ref y)
{
	if (!m->base)
		return;
	lora_inputs_forward(m, l, input, A(m, x), y, m->B * m->T, A(m, m->la[l].u[input]),
			    A(m, m->lora_t));
}

/* Backward through the adapters of layer l reading `input`: dy is the
 * gradient of their output (width sh.ld), dx that of their input, added
 * to. dA += dT^T u and dB += scale dy^T T with T = u A^T made again and
 * dT = scale dy B; dx += dT A (through the dropout's mask, gathered in u's
 * place once the group's weights are done with it). */
static void lora_backward(lt_model *m, int l, int input, lt_ref dy, lt_ref dx)
{
	const struct layer_acts *a = &m->la[l];
	size_t xs[LORA_INPUTS] = { a->ln1, a->att, a->ln2, a->g };  /* the LORA_IN_* order */
	int N = m->B * m->T, r = m->lora.rank, in = 0, first = 1;
	float s = lora_scale(m);
	lt_backend *be = m->be;
	lt_ref T = A(m, m->lora_t), dT = A(m, m->lora_dt);
	lt_ref u = m->dropping ? A(m, a->u[input]) : A(m, xs[input]);
	/* recomputing, the kept forward ends before the down projection: its
	 * input is dropped again here */
	if (m->dropping && m->recompute && input == LORA_IN_G) {
		enum lt_status st = lora_drop(m, l, input, u, A(m, a->g),
					      (size_t)N * (size_t)m->cfg.ffn_dim);
		if (st != LT_OK && m->pause_st == LT_OK)
			m->pause_st = st;
	}
	for (int pass = 0; pass < 2; pass++) {
		for (int t = 0; t < LT_LORA_TARGETS; t++) {
			struct lora_shape sh = lora_shape_of(&m->cfg, t);
			if (!lora_on(&m->lora, t) || sh.input != input)
				continue;
			const struct lora_views *v = &m->lv[l];
			lt_ref dys = lt_ref_at(dy, (size_t)sh.col);
			in = sh.in;
			gemm_slices(be, 0, 0, N, r, sh.out, s, dys, sh.ld, PA(m, v->b[t]), r, 0.0f, dT,
				    r);
			if (pass == 0) {
				linear_forward(be, T, u, PA(m, v->a[t]), N, r, sh.in, 0.0f);
				gemm_slices(be, 1, 0, sh.out, r, N, s, dys, sh.ld, T, r, 1.0f,
					    G(m, v->b[t]), r);
				linear_grad_weight(be, G(m, v->a[t]), 1.0f, dT, u, N, r, sh.in);
			} else if (!m->dropping) {
				linear_grad_input(be, dx, 1.0f, dT, PA(m, v->a[t]), N, r, sh.in);
			} else {
				linear_grad_input(be, u, first ? 0.0f : 1.0f, dT, PA(m, v->a[t]), N, r,
						  sh.in);
				first = 0;
			}
		}
	}
	if (m->dropping && in) {
		enum lt_status st = lora_drop(m, l, input, u, u, (size_t)N * in);
		if (st != LT_OK && m->pause_st == LT_OK)
			m->pause_st = st;
		be->ops->add(be, dx, dx, u, (size_t)N * in);
	}
}

/* The weights' part of a linear layer's backward: the input's gradient,
 * and the weight's but where the base is frozen. */
static void base_backward(lt_model *m, lt_ref dx, lt_ref dw, lt_ref dout, lt_ref x, lt_ref w,
			  int M, int N, int K)
{
	if (m->base)
		linear_grad_input(m->be, dx, 0.0f, dout, w, M, N, K);
	else
		linear_backward(m->be, dx, 0.0f, dw, dout, x, w, M, N, K);
}

/* A norm weight's gradient: into the gradient buffer, or where the base
 * is frozen into a scratch nobody reads. */
static lt_ref norm_grad(lt_model *m, size_t off)
{
	return m->base ? (lt_ref){ m->norm_dw, 0 } : G(m, off);
}

static struct lt_attn_shape attn_shape(const lt_model *m)
{
	return (struct lt_attn_shape){ .B = m->B, .T = m->T, .H = m->cfg.n_heads,
				       .K = m->cfg.n_kv_heads, .D = head_dim(&m->cfg) };
}

/* Block l's forward as far as its backward reads: everything from x_l to
 * the MLP's swiglu output g (with train.recompute = block, backward runs
 * it again first). */
static void block_forward_kept(lt_model *m, int l)
{
	lt_backend *be = m->be;
	const struct lt_model_config *c = &m->cfg;
	const struct layer_views *w = &m->layers[l];
	const struct layer_acts *a = &m->la[l];
	int N = m->B * m->T, C = c->dim, F = c->ffn_dim, QKV = qkv_width(c);
	struct lt_attn_shape s = attn_shape(m);

	be->ops->rmsnorm_forward(be, A(m, a->ln1), S(m, a->rstd1), A(m, a->x), P(m, w->ln_in), N, C,
				 c->norm_eps);
	linear_forward(be, A(m, a->qkv), A(m, a->ln1), P(m, w->wqkv), N, QKV, C, 0.0f);
	lora_block_forward(m, l, LORA_IN_LN1, a->ln1, A(m, a->qkv));
	be->ops->rope(be, A(m, a->qkv), (lt_ref){ m->inv_freq, 0 }, &s, 0);
	be->ops->attention_forward(be, A(m, a->att), S(m, a->lse), A(m, a->qkv), &s);
	be->ops->copy(be, A(m, a->xmid), A(m, a->x), (size_t)N * C);
	linear_forward(be, A(m, a->xmid), A(m, a->att), P(m, w->wo), N, C, C, 1.0f);
	lora_block_forward(m, l, LORA_IN_ATT, a->att, A(m, a->xmid));

	be->ops->rmsnorm_forward(be, A(m, a->ln2), S(m, a->rstd2), A(m, a->xmid), P(m, w->ln_post),
				 N, C, c->norm_eps);
	linear_forward(be, A(m, a->h), A(m, a->ln2), P(m, w->wgu), N, 2 * F, C, 0.0f);
	lora_block_forward(m, l, LORA_IN_LN2, a->ln2, A(m, a->h));
	be->ops->swiglu_forward(be, A(m, a->g), A(m, a->h), N, F);
}

/* One transformer block: x_l -> x_{l+1} (stored as the next layer's x, or
 * x_final after the last layer). */
static void block_forward(lt_model *m, int l)
{
	const struct lt_model_config *c = &m->cfg;
	const struct layer_acts *a = &m->la[l];
	int N = m->B * m->T, C = c->dim, F = c->ffn_dim;
	size_t next = l + 1 < c->n_layers ? m->la[l + 1].x : m->x_final;
	block_forward_kept(m, l);
	m->be->ops->copy(m->be, A(m, next), A(m, a->xmid), (size_t)N * C);
	linear_forward(m->be, A(m, next), A(m, a->g), P(m, m->layers[l].wdown), N, C, F, 1.0f);
	lora_block_forward(m, l, LORA_IN_G, a->g, A(m, next));
}

/* Passes a finished gradient range to the caller's hook, if any. */
static enum lt_status tell_grads_ready(lt_model *m, size_t begin, size_t end)
{
	return m->hook.ready ? m->hook.ready(m->hook.ctx, begin, end) : LT_OK;
}

/* Between two ops of a block's backward: lets the caller's hook advance
 * the exchanges it started. */
static void pause_for_exchanges(lt_model *m)
{
	if (m->pause_st == LT_OK && m->hook.between_ops)
		m->pause_st = m->hook.between_ops(m->hook.ctx);
}

/* Backward through block l: on entry dx holds dL/dx_{l+1}, on exit dL/dx_l;
 * the block's weight gradients are added into the gradient buffer. */
static void block_backward(lt_model *m, int l)
{
	lt_backend *be = m->be;
	const struct lt_model_config *c = &m->cfg;
	const struct layer_views *w = &m->layers[l];
	const struct layer_acts *a = &m->la[l];
	int N = m->B * m->T, C = c->dim, F = c->ffn_dim, QKV = qkv_width(c);
	struct lt_attn_shape s = attn_shape(m);
	lt_ref dx = A(m, m->dx), dA = A(m, m->dA), dB = A(m, m->dB);

	/* MLP: x_{l+1} = xmid + down(swiglu(gate_up(rmsnorm(xmid)))) */
	base_backward(m, dA, G(m, w->wdown), dx, A(m, a->g), P(m, w->wdown), N, C, F);
	if (m->base)
		lora_backward(m, l, LORA_IN_G, dx, dA);
	pause_for_exchanges(m);
	be->ops->swiglu_backward(be, dB, dA, A(m, a->h), N, F);
	base_backward(m, dA, G(m, w->wgu), dB, A(m, a->ln2), P(m, w->wgu), N, 2 * F, C);
	if (m->base)
		lora_backward(m, l, LORA_IN_LN2, dB, dA);
	pause_for_exchanges(m);
	be->ops->rmsnorm_backward(be, dx, norm_grad(m, w->ln_post), dA, A(m, a->xmid),
				  P(m, w->ln_post), S(m, a->rstd2), N, C);

	/* attention: xmid = x + o(attn(rope(qkv(rmsnorm(x))))) */
	base_backward(m, dA, G(m, w->wo), dx, A(m, a->att), P(m, w->wo), N, C, C);
	if (m->base)
		lora_backward(m, l, LORA_IN_ATT, dx, dA);
	pause_for_exchanges(m);
	be->ops->attention_backward(be, dB, dA, A(m, a->att), S(m, a->lse), A(m, a->qkv), &s);
	pause_for_exchanges(m);
	be->ops->rope(be, dB, (lt_ref){ m->inv_freq, 0 }, &s, 1);
	base_backward(m, dA, G(m, w->wqkv), dB, A(m, a->ln1), P(m, w->wqkv), N, QKV, C);
	if (m->base)
		lora_backward(m, l, LORA_IN_LN1, dB, dA);
	pause_for_exchanges(m);
	be->ops->rmsnorm_backward(be, dx, norm_grad(m, w->ln_in), dA, A(m, a->x), P(m, w->ln_in),
				  S(m, a->rstd1), N, C);
}

/* The LM head and the loss over rows [r0, r0 + R) of the batch: their
 * logits[R, V] into the chunk, their losses, and with grad_scale != 0
 * their gradients, which need the logits no longer than this: dxf rows
 * (into dA, kept for backward) and the head's weight gradient (into
 * head_grad: = for the first chunk, += for the rest). */
static void head_chunk(lt_model *m, int r0, int R, float grad_scale)
{
	lt_backend *be = m->be;
	int C = m->cfg.dim, V = m->cfg.vocab_size;
	lt_ref logits = A(m, m->logits), xf = A(m, m->xf + (size_t)r0 * C);
	linear_forward(be, logits, xf, P(m, m->lm_head), R, V, C, 0.0f);
	be->ops->xent(be, S(m, m->losses + (size_t)r0), logits, I(m, m->targets + (size_t)r0), R,
		      V, grad_scale);
	if (grad_scale == 0.0f)
		return;
	linear_grad_input(be, A(m, m->dA + (size_t)r0 * C), 0.0f, logits, P(m, m->lm_head), R, V, C);
	if (!m->base)
		linear_grad_weight(be, (lt_ref){ m->head_grad, 0 }, r0 ? 1.0f : 0.0f, logits, xf, R,
				   V, C);
}

/* In bf16: the compute copy = the parameters rounded, as they are now
 * (every forward makes it anew, so whatever changed the parameters -- a
 * step, a load, an exchange -- is seen). */
static void refresh_compute_weights(lt_model *m)
{
	if (m->weights)
		m->be->ops->convert(m->be, (lt_ref){ m->weights, 0 }, lt_model_params(m), m->numel);
}

/* The head's weight gradient buffer, made by the first training forward. */
static enum lt_status have_head_grad(lt_model *m)
{
	if (m->head_grad)
		return LT_OK;
	enum lt_status st = lt_buf_new(m->be, LT_F32, (size_t)m->cfg.vocab_size * m->cfg.dim,
				       &m->head_grad);
	if (st != LT_OK)
		lt_errmsg_prefix("the LM head's gradient");
	return st;
}

enum lt_status lt_model_forward(lt_model *m, const int32_t *tokens, const int32_t *targets,
				float grad_scale, double *loss_sum, long *n_targets)
{
	lt_backend *be = m->be;
	const struct lt_model_config *c = &m->cfg;
	LT_ASSERT(m->acts);
	int N = m->B * m->T, C = c->dim, V = c->vocab_size;
	long valid = 0;

	for (int i = 0; i < N; i++) {
		if (tokens[i] < 0 || tokens[i] >= V || targets[i] >= V) {
			int bad = tokens[i] < 0 || tokens[i] >= V ? tokens[i] : targets[i];
			lt_errmsg_set("token %d at position %d is outside the vocabulary [0, %d)", bad, i, V);
			return LT_ERR_ARG;
		}
		valid += targets[i] >= 0;
	}
	enum lt_status st = grad_scale != 0.0f && !m->base ? have_head_grad(m) : LT_OK;
	if (st != LT_OK)
		return st;
	refresh_compute_weights(m);
	m->dropping = m->base && grad_scale != 0.0f && m->lora.dropout > 0.0f;
	m->pause_st = LT_OK;
	be->ops->write(be, I(m, m->tokens), tokens, (size_t)N);
	be->ops->write(be, I(m, m->targets), targets, (size_t)N);
	memcpy(m->host_tokens, tokens, (size_t)N * sizeof *tokens);

	be->ops->embedding_forward(be, A(m, m->la[0].x), I(m, m->tokens), P(m, m->embed), N, C);
	for (int l = 0; l < c->n_layers; l++)
		block_forward(m, l);
	be->ops->rmsnorm_forward(be, A(m, m->xf), S(m, m->rstdf), A(m, m->x_final), P(m, m->norm), N,
				 C, c->norm_eps);
	for (int r0 = 0; r0 < N; r0 += m->head_rows)
		head_chunk(m, r0, N - r0 < m->head_rows ? N - r0 : m->head_rows, grad_scale);
	be->ops->sum(be, S(m, m->scalar), S(m, m->losses), (size_t)N);
	float loss;
	be->ops->read(be, &loss, S(m, m->scalar), 1);
	st = be->ops->sync(be);
	if (st == LT_OK)
		st = m->pause_st;
	if (st != LT_OK)
		return st;
	m->have_grad = grad_scale != 0.0f;
	*loss_sum = loss;
	*n_targets = valid;
	return LT_OK;
}

/* With the lookup apart: the distinct tokens of the last forward, in
 * ascending order, into lookup_rows (*count of them), and each token's
 * place among them into the lookup activations. */
static enum lt_status place_lookup_rows(lt_model *m, int *count)
{
	int N = m->B * m->T, V = m->cfg.vocab_size, U = 0;
	int32_t *map = m->lookup_rows + N;
	if (!m->row_slot) {
		if (!(m->row_slot = malloc((size_t)V * sizeof *m->row_slot))) {
			lt_errmsg_set("cannot allocate the embedding lookup's row table");
			return LT_ERR_NOMEM;
		}
		for (int v = 0; v < V; v++)
			m->row_slot[v] = -1;
	}
	for (int n = 0; n < N; n++)
		m->row_slot[m->host_tokens[n]] = 0;
	for (int v = 0; v < V; v++)
		if (m->row_slot[v] == 0) {
			m->row_slot[v] = U;
			m->lookup_rows[U++] = v;
		}
	for (int n = 0; n < N; n++)
		map[n] = m->row_slot[m->host_tokens[n]];
	for (int i = 0; i < U; i++)
		m->row_slot[m->lookup_rows[i]] = -1;
	m->be->ops->write(m->be, I(m, m->lookup), map, (size_t)N);
	*count = U;
	return LT_OK;
}

/* The embedding's gradient at the end of backward: added into the
 * gradient buffer and reported, or, with the lookup apart, into the first
 * `rows` rows of the scratch dA and handed to the lookup function. */
static enum lt_status finish_embedding_gradient(lt_model *m, int rows)
{
	lt_backend *be = m->be;
	int N = m->B * m->T, C = m->cfg.dim;
	lt_ref dx = A(m, m->dx);
	lt_ref grads = act_type(m->precision) == LT_F32 ? A(m, m->dA) : S(m, m->lookup_grad);
	if (m->base)  /* frozen */
		return LT_OK;
	if (!m->hook.lookup_ready) {
		be->ops->embedding_backward(be, G(m, m->embed), I(m, m->tokens), dx, N, C);
		return tell_grads_ready(m, m->embed, m->layers[0].ln_in);
	}
	be->ops->fill(be, grads, (size_t)rows * C, 0.0f);
	be->ops->embedding_backward(be, grads, I(m, m->lookup), dx, N, C);
	return m->hook.lookup_ready(m->hook.ctx, m->embed, m->lookup_rows, rows, grads);
}

enum lt_status lt_model_backward(lt_model *m)
{
	lt_backend *be = m->be;
	const struct lt_model_config *c = &m->cfg;
	LT_ASSERT(m->have_grad);
	int N = m->B * m->T, C = c->dim, V = c->vocab_size, rows = 0;
	lt_ref dx = A(m, m->dx), dA = A(m, m->dA);
	enum lt_status st = m->hook.lookup_ready ? place_lookup_rows(m, &rows) : LT_OK;
	if (st != LT_OK)
		return st;

	be->ops->fill(be, dx, (size_t)N * C, 0.0f);
	if (m->grads_written && !m->base) {
		be->ops->fill(be, G(m, 0), m->layers[0].ln_in, 0.0f);
		be->ops->fill(be, G(m, m->norm), m->numel - m->norm, 0.0f);
	}
	/* the head's gradients came with the forward: dxf in dA, dW in head_grad */
	if (!m->base) {
		lt_ref head = G(m, m->lm_head);
		be->ops->add(be, head, head, (lt_ref){ m->head_grad, 0 }, (size_t)V * C);
	} else {
		be->ops->fill(be, (lt_ref){ m->norm_dw, 0 }, (size_t)C, 0.0f);
	}
	be->ops->rmsnorm_backward(be, dx, norm_grad(m, m->norm), dA, A(m, m->x_final),
				  P(m, m->norm), S(m, m->rstdf), N, C);
	m->have_grad = 0;
	/* the final norm (and an untied head) end the flat buffer; with
	 * adapters there is no such range, nor an embedding's */
	st = m->base ? m->pause_st : tell_grads_ready(m, m->norm, m->numel);
	if (st == LT_OK && m->hook.lookup_ready && !m->base)  /* a tied head's part is done */
		st = tell_grads_ready(m, m->embed, m->layers[0].ln_in);
	for (int l = c->n_layers - 1; l >= 0 && st == LT_OK; l--) {
		if (m->grads_written)
			be->ops->fill(be, G(m, lt_model_block_begin(m, l)), block_numel(m), 0.0f);
		if (m->recompute)  /* the same ops on the same input: the same bits */
			block_forward_kept(m, l);
		block_backward(m, l);
		st = m->pause_st != LT_OK ? m->pause_st
					  : tell_grads_ready(m, lt_model_block_begin(m, l),
							     lt_model_block_begin(m, l + 1));
	}
	if (st != LT_OK || (st = finish_embedding_gradient(m, rows)) != LT_OK)
		return st;
	return be->ops->sync(be);
}

void lt_model_set_grad_hook(lt_model *m, const struct lt_grad_hook *hook)
{
	if (hook)
		m->hook = *hook;
	else
		memset(&m->hook, 0, sizeof m->hook);
}

void lt_model_zero_grads(lt_model *m)
{
	m->be->ops->fill(m->be, lt_model_grads(m), m->grads_numel, 0.0f);
}

/* The sizes of the decode buffers for B rows of up to S new tokens; fills
 * the offsets. */
static struct plan_size plan_decode(const struct lt_model_config *c, int B, int S, int rank,
				    struct decode_acts *d)
{
	size_t N = (size_t)B * S, C = (size_t)c->dim, F = (size_t)c->ffn_dim;
	size_t QKV = (size_t)qkv_width(c), V = (size_t)c->vocab_size;
	struct plan_size size = { 0, 0 };
	size_t *at = &size.acts, *st = &size.stats;
#define TAKE(n) (*at += (n), *at - (n))
#define STAT(n) (*st += (n), *st - (n))
	d->x = TAKE(N * C);
	d->rstd = STAT(N);
	d->ln = TAKE(N * C);
	d->qkv = TAKE(N * QKV);
	d->att = TAKE(N * C);
	d->h = TAKE(N * 2 * F);
	d->g = TAKE(N * F);
	d->last = TAKE((size_t)B * C);
	d->rstdf = STAT((size_t)B);
	d->xf = TAKE((size_t)B * C);
	d->logits = STAT((size_t)B * V);
	d->lora_t = TAKE(N * (size_t)rank);
#undef TAKE
#undef STAT
	return size;
}

/* Elements of one layer's key (or value) cache. */
static size_t cache_elems(const lt_model *m)
{
	return (size_t)m->dec_B * m->cfg.n_kv_heads * m->dec_S * head_dim(&m->cfg);
}

enum lt_status lt_model_decode_begin(lt_model *m, int B, int S)
{
	const struct lt_model_config *c = &m->cfg;
	if (B <= 0 || S <= 0 || S > c->max_seq) {
		lt_errmsg_set("decoding %d sequences of %d tokens: need at least one sequence and "
			      "1 <= tokens <= max_seq (%d)", B, S, c->max_seq);
		return LT_ERR_ARG;
	}
	if (!m->be->ops->attention_cached) {
		lt_errmsg_set("backend %s cannot decode with a key/value cache", m->be->ops->name);
		return LT_ERR_NOTFOUND;
	}
	if (m->kv && m->dec_B == B && m->dec_S == S)
		return LT_OK;
	lt_model_decode_end(m);
	m->dec_B = B;
	m->dec_S = S;
	size_t kv = 2 * (size_t)c->n_layers * cache_elems(m);
	struct plan_size size = plan_decode(c, B, S, m->lora.rank, &m->dacts);
	enum lt_status st = lt_buf_new(m->be, act_type(m->precision), kv, &m->kv);
	if (st == LT_OK)
		st = lt_buf_new(m->be, act_type(m->precision), size.acts, &m->dec);
	if (st == LT_OK)
		st = lt_buf_new(m->be, LT_F32, size.stats, &m->dec_stats);
	if (st == LT_OK)
		st = lt_buf_new(m->be, LT_I32, (size_t)B * S, &m->dec_ids);
	if (st != LT_OK) {
		lt_model_decode_end(m);
		lt_errmsg_prefix("key/value cache for %d sequences of %d tokens", B, S);
	}
	return st;
}

void lt_model_decode_end(lt_model *m)
{
	lt_buf_free(m->be, m->kv);
	lt_buf_free(m->be, m->dec);
	lt_buf_free(m->be, m->dec_stats);
	lt_buf_free(m->be, m->dec_ids);
	m->kv = m->dec = m->dec_stats = m->dec_ids = NULL;
	m->dec_B = m->dec_S = 0;
}

static lt_ref DA(const lt_model *m, size_t off) { return (lt_ref){ m->dec, off }; }
static lt_ref DS(const lt_model *m, size_t off) { return (lt_ref){ m->dec_stats, off }; }

/* The adapters of layer l reading `input` in decoding (never dropped). */
static void lora_decode(lt_model *m, int l, int input, lt_ref x, lt_ref y, int N)
{
	if (!m->base)
		return;
	for (int t = 0; t < LT_LORA_TARGETS; t++)
		if (lora_on(&m->lora, t) && lora_shape_of(&m->cfg, t).input == input)
			lora_forward(m, l, t, x, y, N, DA(m, m->dacts.lora_t));
}

/* One transformer block over the B*T new tokens at positions pos0..: the
 * residual stream in the decode buffer is updated in place, and the
 * layer's cache gains the new keys and values. */
static void block_decode(lt_model *m, int l, int T, int pos0)
{
	lt_backend *be = m->be;
	const struct lt_model_config *c = &m->cfg;
	const struct layer_views *w = &m->layers[l];
	const struct decode_acts *d = &m->dacts;
	int N = m->dec_B * T, C = c->dim, F = c->ffn_dim, QKV = qkv_width(c);
	struct lt_attn_shape s = { .B = m->dec_B, .T = T, .H = c->n_heads, .K = c->n_kv_heads,
				   .D = head_dim(c), .pos0 = pos0 };
	lt_ref kcache = { m->kv, 2 * (size_t)l * cache_elems(m) };
	lt_ref vcache = lt_ref_at(kcache, cache_elems(m));

	be->ops->rmsnorm_forward(be, DA(m, d->ln), DS(m, d->rstd), DA(m, d->x), P(m, w->ln_in), N,
				 C, c->norm_eps);
	linear_forward(be, DA(m, d->qkv), DA(m, d->ln), P(m, w->wqkv), N, QKV, C, 0.0f);
	lora_decode(m, l, LORA_IN_LN1, DA(m, d->ln), DA(m, d->qkv), N);
	be->ops->rope(be, DA(m, d->qkv), (lt_ref){ m->inv_freq, 0 }, &s, 0);
	be->ops->attention_cached(be, DA(m, d->att), DA(m, d->qkv), kcache, vcache, m->dec_S, &s);
	linear_forward(be, DA(m, d->x), DA(m, d->att), P(m, w->wo), N, C, C, 1.0f);
	lora_decode(m, l, LORA_IN_ATT, DA(m, d->att), DA(m, d->x), N);

	be->ops->rmsnorm_forward(be, DA(m, d->ln), DS(m, d->rstd), DA(m, d->x), P(m, w->ln_post),
				 N, C, c->norm_eps);
	linear_forward(be, DA(m, d->h), DA(m, d->ln), P(m, w->wgu), N, 2 * F, C, 0.0f);
	lora_decode(m, l, LORA_IN_LN2, DA(m, d->ln), DA(m, d->h), N);
	be->ops->swiglu_forward(be, DA(m, d->g), DA(m, d->h), N, F);
	linear_forward(be, DA(m, d->x), DA(m, d->g), P(m, w->wdown), N, C, F, 1.0f);
	lora_decode(m, l, LORA_IN_G, DA(m, d->g), DA(m, d->x), N);
}

enum lt_status lt_model_decode(lt_model *m, const int32_t *tokens, int T, int pos0,
			       float *logits)
{
	lt_backend *be = m->be;
	const struct lt_model_config *c = &m->cfg;
	const struct decode_acts *d = &m->dacts;
	LT_ASSERT(m->kv);
	int B = m->dec_B, C = c->dim, V = c->vocab_size, N = B * T;

	if (T <= 0 || pos0 < 0 || pos0 > m->dec_S - T) {
		lt_errmsg_set("decoding %d tokens at position %d: the cache holds positions 0..%d",
			      T, pos0, m->dec_S - 1);
		return LT_ERR_ARG;
	}
	for (int i = 0; i < N; i++) {
		if (tokens[i] < 0 || tokens[i] >= V) {
			lt_errmsg_set("token %d at position %d of sequence %d is outside the "
				      "vocabulary [0, %d)", tokens[i], pos0 + i % T, i / T, V);
			return LT_ERR_ARG;
		}
	}
	lt_ref ids = { m->dec_ids, 0 };
	if (pos0 == 0)  /* new sequences: the weights as they are now */
		refresh_compute_weights(m);
	be->ops->write(be, ids, tokens, (size_t)N);
	be->ops->embedding_forward(be, DA(m, d->x), ids, P(m, m->embed), N, C);
	for (int l = 0; l < c->n_layers; l++)
		block_decode(m, l, T, pos0);

	/* Only each row's last token predicts: the head runs on B rows. */
	size_t last = d->x;
	if (T > 1) {
		last = d->last;
		for (int b = 0; b < B; b++)
			be->ops->copy(be, DA(m, d->last + (size_t)b * C),
				      DA(m, d->x + ((size_t)b * T + T - 1) * C), (size_t)C);
	}
	be->ops->rmsnorm_forward(be, DA(m, d->xf), DS(m, d->rstdf), DA(m, last), P(m, m->norm), B,
				 C, c->norm_eps);
	linear_forward(be, DS(m, d->logits), DA(m, d->xf), P(m, m->lm_head), B, V, C, 0.0f);
	be->ops->read(be, logits, DS(m, d->logits), (size_t)B * V);
	return be->ops->sync(be);
}

enum lt_status lt_model_read_logits(lt_model *m, int row0, int rows, float *out)
{
	lt_backend *be = m->be;
	int C = m->cfg.dim, V = m->cfg.vocab_size;
	LT_ASSERT(m->acts && row0 >= 0 && rows >= 0 && row0 + rows <= m->B * m->T);
	uint16_t *half = NULL;
	if (act_type(m->precision) == LT_BF16 &&
	    !(half = malloc((size_t)(rows < m->head_rows ? rows : m->head_rows) * V * 2 + 2))) {
		lt_errmsg_set("cannot allocate the logits of %d rows", m->head_rows);
		return LT_ERR_NOMEM;
	}
	for (int r = 0; r < rows; r += m->head_rows) {
		int R = rows - r < m->head_rows ? rows - r : m->head_rows;
		float *dst = out + (size_t)r * V;
		linear_forward(be, A(m, m->logits), A(m, m->xf + (size_t)(row0 + r) * C),
			       P(m, m->lm_head), R, V, C, 0.0f);
		be->ops->read(be, half ? (void *)half : (void *)dst, A(m, m->logits), (size_t)R * V);
		for (size_t i = 0; half && i < (size_t)R * V; i++)
			dst[i] = lt_bf16_to_f32(half[i]);
	}
	free(half);
	return be->ops->sync(be);
}

void lt_model_set_head_rows(lt_model *m, int rows)
{
	LT_ASSERT(!m->acts);
	m->head_rows_max = rows > 0 ? rows : 0;
}

void lt_model_set_recompute(lt_model *m, enum lt_recompute r)
{
	LT_ASSERT(!m->acts);
	m->recompute = r;
}

/* The frozen base in the activation type of the precision (its contents
 * are drawn or loaded after). */
static enum lt_status make_base(lt_model *m)
{
	enum lt_dtype type = act_type(m->precision);
	if (m->base && lt_buf_type(m->base) == type)
		return LT_OK;
	lt_buf_free(m->be, m->base);
	m->base = NULL;
	enum lt_status st = lt_buf_new(m->be, type, m->base_numel, &m->base);
	if (st != LT_OK)
		lt_errmsg_prefix("the frozen base of %zu weights in %s", m->base_numel,
				 lt_dtype_name(type));
	return st;
}

/* Lays out the adapters, layer by layer, as the trainable tensors. */
static void lay_out_adapters(lt_model *m)
{
	char name[80];
	int r = m->lora.rank;
	m->n_tensors = 0;
	m->numel = 0;
	for (int l = 0; l < m->cfg.n_layers; l++)
		for (int t = 0; t < LT_LORA_TARGETS; t++) {
			struct lora_shape sh = lora_shape_of(&m->cfg, t);
			if (!lora_on(&m->lora, t))
				continue;
			snprintf(name, sizeof name, "model.layers.%d.%s.lora_A.weight", l, lora_names[t]);
			m->lv[l].a[t] = add_tensor(m, name, r, sh.in, 1);
			snprintf(name, sizeof name, "model.layers.%d.%s.lora_B.weight", l, lora_names[t]);
			m->lv[l].b[t] = add_tensor(m, name, sh.out, r, 1);
		}
}

enum lt_status lt_model_set_lora(lt_model *m, const struct lt_lora *lora)
{
	LT_ASSERT(!m->acts && !m->kv && !m->weights && !m->base && !m->head_grad);
	int L = m->cfg.n_layers, n = 0;
	m->lora = *lora;
	if (lora->rank <= 0) {
		m->lora.rank = 0;
		return LT_OK;
	}
	for (int t = 0; t < LT_LORA_TARGETS; t++)
		n += lora_on(lora, t);
	if (n == 0) {
		lt_errmsg_set("LoRA of rank %d adapts no matrix: train.lora_targets is empty",
			      lora->rank);
		return LT_ERR_CONFIG;
	}
	struct lt_tensor *adapters = calloc((size_t)L * 2 * n, sizeof *adapters);
	m->lv = calloc((size_t)L, sizeof *m->lv);
	if (!adapters || !m->lv) {
		free(adapters);
		lt_errmsg_set("cannot allocate the adapters' tables");
		return LT_ERR_NOMEM;
	}
	m->base_tensors = m->tensors;
	m->n_base = m->n_tensors;
	m->base_numel = m->numel;
	m->tensors = adapters;
	lay_out_adapters(m);
	/* the f32 parameters become the frozen base (or without them, from
	 * lt_model_new_adapted, it is made in its type) */
	m->base = m->params;
	m->params = NULL;
	lt_buf_free(m->be, m->grads);
	m->grads = NULL;
	enum lt_status st = m->base ? LT_OK : make_base(m);
	if (st != LT_OK)
		return st;
	mirror_grad_layout(m);  /* the base, there now, marks the adapters' layout */
	st = lt_buf_new(m->be, LT_F32, m->numel, &m->params);
	if (st == LT_OK)
		st = lt_buf_new(m->be, LT_F32, m->numel, &m->grads);
	if (st == LT_OK)
		st = lt_buf_new(m->be, LT_F32, (size_t)m->cfg.dim, &m->norm_dw);
	if (st != LT_OK)
		lt_errmsg_prefix("adapters of %zu parameters", m->numel);
	return st;
}

const struct lt_lora *lt_model_lora(const lt_model *m) { return &m->lora; }
int lt_model_num_frozen(const lt_model *m) { return m->base ? m->n_base : 0; }

const struct lt_tensor *lt_model_frozen(const lt_model *m, int i)
{
	return m->base && i >= 0 && i < m->n_base ? &m->base_tensors[i] : NULL;
}

lt_ref lt_model_frozen_params(const lt_model *m) { return (lt_ref){ m->base, 0 }; }

const struct lt_tensor *lt_model_find_frozen(const lt_model *m, const char *name)
{
	for (int i = 0; i < lt_model_num_frozen(m); i++)
		if (!strcmp(m->base_tensors[i].name, name))
			return &m->base_tensors[i];
	return NULL;
}

void lt_model_set_dropout_key(lt_model *m, uint64_t key) { m->dropout_key = key; }

/* Where target t's base matrix of layer l lies in the base buffer. */
static size_t lora_base_off(const lt_model *m, int l, int t)
{
	const struct layer_views *w = &m->layers[l];
	const struct lt_model_config *c = &m->cfg;
	size_t C = (size_t)c->dim, KD = (size_t)c->n_kv_heads * head_dim(c), F = (size_t)c->ffn_dim;
	size_t at[LT_LORA_TARGETS] = { w->wqkv, w->wqkv + C * C, w->wqkv + (C + KD) * C, w->wo,
				       w->wgu, w->wgu + F * C, w->wdown };
	return at[t];
}

/* W[out, in] += scale B A for target t of layer l (in double), B = 0. */
static enum lt_status merge_one(lt_model *m, int l, int t, float *w, float *a, float *b)
{
	lt_backend *be = m->be;
	struct lora_shape sh = lora_shape_of(&m->cfg, t);
	int r = m->lora.rank;
	lt_ref wr = { m->base, lora_base_off(m, l, t) };
	size_t nw = (size_t)sh.out * sh.in;
	read_floats(be, w, wr, nw);
	be->ops->read(be, a, lt_ref_at(lt_model_params(m), m->lv[l].a[t]), (size_t)r * sh.in);
	be->ops->read(be, b, lt_ref_at(lt_model_params(m), m->lv[l].b[t]), (size_t)sh.out * r);
	enum lt_status st = be->ops->sync(be);
	if (st != LT_OK)
		return st;
	double s = (double)m->lora.alpha / r;
	for (int o = 0; o < sh.out; o++)
		for (int i = 0; i < sh.in; i++) {
			double acc = 0;
			for (int k = 0; k < r; k++)
				acc += (double)b[(size_t)o * r + k] * a[(size_t)k * sh.in + i];
			w[(size_t)o * sh.in + i] = (float)(w[(size_t)o * sh.in + i] + s * acc);
		}
	write_floats(be, wr, w, nw);
	be->ops->fill(be, lt_ref_at(lt_model_params(m), m->lv[l].b[t]), (size_t)sh.out * r, 0.0f);
	return be->ops->sync(be);
}

enum lt_status lt_model_merge_lora(lt_model *m)
{
	if (!m->base)
		return LT_OK;
	const struct lt_model_config *c = &m->cfg;
	size_t big = (size_t)(c->ffn_dim > c->dim ? c->ffn_dim : c->dim) * c->dim;
	size_t r = (size_t)m->lora.rank, side = r * big / (size_t)c->dim;
	float *w = malloc(big * sizeof *w), *a = malloc(side * sizeof *a), *b = malloc(side * sizeof *b);
	enum lt_status st = LT_OK;
	if (!w || !a || !b) {
		lt_errmsg_set("cannot allocate the buffers to merge the adapters");
		st = LT_ERR_NOMEM;
	}
	for (int l = 0; l < c->n_layers && st == LT_OK; l++)
		for (int t = 0; t < LT_LORA_TARGETS && st == LT_OK; t++)
			if (lora_on(&m->lora, t))
				st = merge_one(m, l, t, w, a, b);
	free(w);
	free(a);
	free(b);
	if (st != LT_OK)
		lt_errmsg_prefix("merging the adapters");
	return st;
}

enum lt_status lt_model_set_precision(lt_model *m, enum lt_precision p)
{
	LT_ASSERT(!m->acts && !m->kv);
	lt_buf_free(m->be, m->weights);
	m->weights = NULL;
	m->precision = p;
	enum lt_status st = m->base ? make_base(m) : LT_OK;
	if (st != LT_OK || p != LT_PRECISION_BF16)
		return st;
	st = lt_buf_new(m->be, LT_BF16, m->numel, &m->weights);
	if (st != LT_OK) {
		m->precision = LT_PRECISION_FP32;
		lt_errmsg_prefix("the bf16 compute copy of %zu weights", m->numel);
	}
	return st;
}

enum lt_precision lt_model_precision(const lt_model *m)
{
	return m->precision;
}

int lt_model_num_weights(const lt_model *m)
{
	return m->base ? m->n_base : m->n_tensors;
}

const struct lt_tensor *lt_model_weight(const lt_model *m, int i)
{
	return m->base ? lt_model_frozen(m, i) : lt_model_tensor(m, i);
}

const struct lt_tensor *lt_model_find_weight(const lt_model *m, const char *name)
{
	return m->base ? lt_model_find_frozen(m, name) : lt_model_find(m, name);
}

enum lt_status lt_model_write_weight(lt_model *m, const struct lt_tensor *t, float *x)
{
	lt_buf *dst = m->base ? m->base : m->params;
	if (lt_buf_type(dst) == LT_BF16) {
		uint16_t *half = (uint16_t *)x;  /* element i's 2 bytes lie below x[i]'s */
		for (size_t i = 0; i < t->numel; i++)
			half[i] = lt_bf16_from_f32(x[i]);
	}
	m->be->ops->write(m->be, (lt_ref){ dst, t->off }, x, t->numel);
	return m->be->ops->sync(m->be);  /* the caller frees x next */
}
