/* LoRA adapters of the LLaMA model: their layout beside the frozen base,
 * their forward and backward around the base's GEMMs, dropout, and their
 * merge into the base. */
#include "config.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"
#include "rng.h"

struct lora_shape lt_lora_shape(const struct lt_model_config *c, int t)
{
	int C = c->dim, HD = attn_width(c), KD = c->n_kv_heads * head_dim(c), F = c->ffn_dim;
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

int lt_lora_on(const struct lt_lora *lora, int t)
{
	return lora && lora->rank > 0 && (lora->targets >> t & 1u);
}

/* The Hugging Face names of the adapted matrices, in enum lt_lora_target's order. */
static const char *const lora_names[LT_LORA_TARGETS] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

size_t lt_lora_block_matrix_params(const struct lt_model_config *c)
{
	size_t C = (size_t)c->dim, F = (size_t)c->ffn_dim;
	return (size_t)c->n_layers * ((size_t)qkv_width(c) * C + C * (size_t)attn_width(c) + 3 * F * C);
}

size_t lt_lora_params(const struct lt_model_config *c, const struct lt_lora *lora)
{
	size_t n = 0;
	for (int t = 0; t < LT_LORA_TARGETS; t++) {
		struct lora_shape sh = lt_lora_shape(c, t);
		if (lt_lora_on(lora, t))
			n += (size_t)lora->rank * (size_t)(sh.in + sh.out);
	}
	return n * (size_t)c->n_layers;
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

static float lora_scale(const lt_model *m)
{
	return m->lora.alpha / (float)m->lora.rank;
}

/* Adds target t's adapter of layer l to y (its output, of width sh.ld):
 * y[:, col:col+out] += scale (u A^T) B^T over N rows, u[N, in] its input,
 * through tmp[N, rank]. */
static void lora_forward(lt_model *m, int l, int t, lt_ref u, lt_ref y, int N, lt_ref tmp)
{
	struct lora_shape sh = lt_lora_shape(&m->cfg, t);
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
		struct lora_shape sh = lt_lora_shape(&m->cfg, t);
		if (!lt_lora_on(&m->lora, t) || sh.input != input)
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
void lt_lora_block_forward(lt_model *m, int l, int input, size_t x, lt_ref y)
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
void lt_lora_backward(lt_model *m, int l, int input, lt_ref dy, lt_ref dx)
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
			struct lora_shape sh = lt_lora_shape(&m->cfg, t);
			if (!lt_lora_on(&m->lora, t) || sh.input != input)
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


/* The adapters of layer l reading `input` in decoding (never dropped). */
void lt_lora_decode(lt_model *m, int l, int input, lt_ref x, lt_ref y, int N)
{
	if (!m->base)
		return;
	for (int t = 0; t < LT_LORA_TARGETS; t++)
		if (lt_lora_on(&m->lora, t) && lt_lora_shape(&m->cfg, t).input == input)
			lora_forward(m, l, t, x, y, N, DA(m, m->dacts.lora_t));
}

enum lt_dtype lt_lora_base_type(enum lt_lora_base base, enum lt_precision p)
{
	static const enum lt_dtype types[] = { LT_F32, LT_F32, LT_BF16, LT_Q8_0, LT_Q4_0 };
	return base == LT_LORA_BASE_AUTO ? act_type(p) : types[base];
}

void lt_read_blocks(lt_backend *be, float *dst, lt_ref src, size_t n)
{
	enum lt_dtype type = lt_buf_type(src.buf);
	size_t bytes = lt_dtype_bytes(type, LT_QBLOCK), blocks = n / LT_QBLOCK;
	/* the blocks land at the end of dst's bytes; block i's floats end
	 * before block i + 1's bytes begin, and each block is copied out
	 * before its floats are written: in place */
	unsigned char *raw = (unsigned char *)dst + n * sizeof *dst - blocks * bytes;
	unsigned char block[34];
	be->ops->read(be, raw, src, n);
	if (be->ops->sync(be) != LT_OK)
		return;
	for (size_t i = 0; i < blocks; i++) {
		memcpy(block, raw + i * bytes, bytes);
		lt_dtype_dequantize(type, block, dst + i * LT_QBLOCK, LT_QBLOCK);
	}
}

void lt_write_blocks(lt_backend *be, lt_ref dst, float *src, size_t n)
{
	enum lt_dtype type = lt_buf_type(dst.buf);
	size_t bytes = lt_dtype_bytes(type, LT_QBLOCK);
	float block[LT_QBLOCK];
	/* block i's bytes end before block i + 1's floats begin: in place */
	for (size_t i = 0; i < n; i += LT_QBLOCK) {
		memcpy(block, src + i, sizeof block);
		lt_dtype_quantize(type, block, (char *)src + i / LT_QBLOCK * bytes, LT_QBLOCK);
	}
	be->ops->write(be, dst, src, n);
}

/* Whether frozen tensor t is a block matrix (held in wbase). */
static int is_block_matrix(const struct lt_tensor *t)
{
	return t->ndim == 2 && (strstr(t->name, ".self_attn.") || strstr(t->name, ".mlp."));
}

/* The frozen base in its two buffers: the block matrices in the base's
 * type, the rest in the activation type (the contents are drawn or loaded
 * after). */
enum lt_status lt_lora_make_base(lt_model *m)
{
	enum lt_dtype type = act_type(m->precision);
	enum lt_dtype wtype = lt_lora_base_type(m->lora.base, m->precision);
	enum lt_status st = LT_OK;
	if (!m->base || lt_buf_type(m->base) != type) {
		lt_buf_free(m->be, m->base);
		m->base = NULL;
		st = lt_buf_new(m->be, type, m->base_numel, &m->base);
	}
	if (st == LT_OK && (!m->wbase || lt_buf_type(m->wbase) != wtype)) {
		lt_buf_free(m->be, m->wbase);
		m->wbase = NULL;
		st = lt_buf_new(m->be, wtype, m->wbase_numel, &m->wbase);
		type = wtype;
	}
	if (st != LT_OK)
		lt_errmsg_prefix("the frozen base of %zu weights in %s",
				 m->base_numel + m->wbase_numel, lt_dtype_name(type));
	return st;
}

/* The new offset of a base tensor that lay at old offset `off`. */
static size_t moved(const lt_model *m, const size_t *old, size_t off)
{
	for (int i = 0; i < m->n_base; i++)
		if (old[i] == off)
			return m->base_tensors[i].off;
	LT_ASSERT(0);
	return 0;
}

/* Lays out the base in its two buffers, each tensor packed after the last
 * of its buffer, and moves the layers' views and the global tensors with
 * them. */
static enum lt_status lay_out_base(lt_model *m)
{
	size_t *old = malloc((size_t)m->n_base * sizeof *old);
	if (!old) {
		lt_errmsg_set("cannot allocate the base's table");
		return LT_ERR_NOMEM;
	}
	m->base_numel = m->wbase_numel = 0;
	for (int i = 0; i < m->n_base; i++) {
		struct lt_tensor *t = &m->base_tensors[i];
		size_t *at = is_block_matrix(t) ? &m->wbase_numel : &m->base_numel;
		old[i] = t->off;
		t->off = *at;
		*at += t->numel;
	}
	m->embed = moved(m, old, m->embed);
	m->norm = moved(m, old, m->norm);
	m->lm_head = moved(m, old, m->lm_head);
	for (int l = 0; l < m->cfg.n_layers; l++) {
		struct layer_views *w = &m->layers[l];
		*w = (struct layer_views){ moved(m, old, w->ln_in), moved(m, old, w->wqkv),
					   moved(m, old, w->wo), moved(m, old, w->ln_post),
					   moved(m, old, w->wgu), moved(m, old, w->wdown) };
	}
	free(old);
	return LT_OK;
}

/* A base of GGUF blocks needs every block matrix's rows in whole blocks. */
static enum lt_status check_block_widths(const lt_model *m)
{
	enum lt_dtype wtype = lt_lora_base_type(m->lora.base, LT_PRECISION_FP32);
	int widths[3] = { m->cfg.dim, m->cfg.ffn_dim, attn_width(&m->cfg) };
	const char *keys[3] = { "model.dim", "model.ffn_dim", "model.n_heads * head size" };
	for (int i = 0; i < 3 && lt_dtype_is_block(wtype); i++)
		if (widths[i] % LT_QBLOCK != 0) {
			lt_errmsg_set("train.lora_base = %s: %s = %d is not a multiple of %d, the "
				      "block's width, which every quantized matrix's input needs",
				      lt_dtype_name(wtype), keys[i], widths[i], LT_QBLOCK);
			return LT_ERR_CONFIG;
		}
	return LT_OK;
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
			struct lora_shape sh = lt_lora_shape(&m->cfg, t);
			if (!lt_lora_on(&m->lora, t))
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
		n += lt_lora_on(lora, t);
	if (n == 0) {
		lt_errmsg_set("LoRA of rank %d adapts no matrix: train.lora_targets is empty",
			      lora->rank);
		return LT_ERR_CONFIG;
	}
	enum lt_status st = check_block_widths(m);
	if (st != LT_OK)
		return st;
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
	/* the f32 parameters give way to the frozen base in its two buffers */
	lt_buf_free(m->be, m->params);
	lt_buf_free(m->be, m->grads);
	m->params = m->grads = NULL;
	if ((st = lay_out_base(m)) != LT_OK || (st = lt_lora_make_base(m)) != LT_OK)
		return st;
	mirror_grad_layout(m);  /* the base, there now, marks the adapters' layout */
	if ((st = lt_buf_new(m->be, LT_F32, m->numel, &m->params)) == LT_OK)
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

lt_ref lt_model_frozen_ref(const lt_model *m, const struct lt_tensor *t)
{
	LT_ASSERT(m->base);
	return (lt_ref){ is_block_matrix(t) ? m->wbase : m->base, t->off };
}

const struct lt_tensor *lt_model_find_frozen(const lt_model *m, const char *name)
{
	for (int i = 0; i < lt_model_num_frozen(m); i++)
		if (!strcmp(m->base_tensors[i].name, name))
			return &m->base_tensors[i];
	return NULL;
}

void lt_model_set_dropout_key(lt_model *m, uint64_t key) { m->dropout_key = key; }

/* Where target t's base matrix of layer l lies in the block matrices' buffer. */
static size_t lora_base_off(const lt_model *m, int l, int t)
{
	const struct layer_views *w = &m->layers[l];
	const struct lt_model_config *c = &m->cfg;
	size_t C = (size_t)c->dim, KD = (size_t)c->n_kv_heads * head_dim(c), F = (size_t)c->ffn_dim;
	size_t HD = (size_t)attn_width(c);
	size_t at[LT_LORA_TARGETS] = { w->wqkv, w->wqkv + HD * C, w->wqkv + (HD + KD) * C, w->wo,
				       w->wgu, w->wgu + F * C, w->wdown };
	return at[t];
}

/* W[out, in] += scale B A for target t of layer l (in double), B = 0. */
static enum lt_status merge_one(lt_model *m, int l, int t, float *w, float *a, float *b)
{
	lt_backend *be = m->be;
	struct lora_shape sh = lt_lora_shape(&m->cfg, t);
	int r = m->lora.rank;
	lt_ref wr = { m->wbase, lora_base_off(m, l, t) };
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

/* The widest of the sizes a block matrix's side has: C, F or HD. */
static size_t widest_side(const struct lt_model_config *c)
{
	size_t w = (size_t)(c->ffn_dim > c->dim ? c->ffn_dim : c->dim);
	return (size_t)attn_width(c) > w ? (size_t)attn_width(c) : w;
}

/* The block matrices as the activation type holds them (dequantized, or
 * rounded or widened), a tensor at a time: what a merge adds to. */
static enum lt_status base_in_activation_type(lt_model *m)
{
	enum lt_dtype type = act_type(m->precision);
	lt_buf *was = m->wbase, *now = NULL;
	size_t most = (size_t)qkv_width(&m->cfg) * (size_t)m->cfg.dim;
	if (most < 2 * (size_t)m->cfg.ffn_dim * (size_t)m->cfg.dim)
		most = 2 * (size_t)m->cfg.ffn_dim * (size_t)m->cfg.dim;
	if (lt_buf_type(was) == type)
		return LT_OK;
	float *host = malloc(most * sizeof *host);
	enum lt_status st = host ? lt_buf_new(m->be, type, m->wbase_numel, &now) : LT_ERR_NOMEM;
	if (!host)
		lt_errmsg_set("cannot allocate a matrix of the base to dequantize it");
	for (int i = 0; i < m->n_base && st == LT_OK; i++) {
		const struct lt_tensor *t = &m->base_tensors[i];
		if (!is_block_matrix(t))
			continue;
		read_floats(m->be, host, (lt_ref){ was, t->off }, t->numel);
		write_floats(m->be, (lt_ref){ now, t->off }, host, t->numel);
		st = m->be->ops->sync(m->be);
	}
	free(host);
	if (st != LT_OK) {
		lt_buf_free(m->be, now);
		return st;
	}
	lt_buf_free(m->be, was);
	m->wbase = now;
	m->lora.base = LT_LORA_BASE_AUTO;
	return LT_OK;
}

enum lt_status lt_model_merge_lora(lt_model *m)
{
	if (!m->base)
		return LT_OK;
	enum lt_status st0 = base_in_activation_type(m);
	if (st0 != LT_OK) {
		lt_errmsg_prefix("merging the adapters");
		return st0;
	}
	const struct lt_model_config *c = &m->cfg;
	size_t big = widest_side(c) * (size_t)c->dim;
	size_t r = (size_t)m->lora.rank, side = r * widest_side(c);
	float *w = malloc(big * sizeof *w), *a = malloc(side * sizeof *a), *b = malloc(side * sizeof *b);
	enum lt_status st = LT_OK;
	if (!w || !a || !b) {
		lt_errmsg_set("cannot allocate the buffers to merge the adapters");
		st = LT_ERR_NOMEM;
	}
	for (int l = 0; l < c->n_layers && st == LT_OK; l++)
		for (int t = 0; t < LT_LORA_TARGETS && st == LT_OK; t++)
			if (lt_lora_on(&m->lora, t))
				st = merge_one(m, l, t, w, a, b);
	free(w);
	free(a);
	free(b);
	if (st != LT_OK)
		lt_errmsg_prefix("merging the adapters");
	return st;
}

