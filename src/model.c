/* The LLaMA model: parameter layout, activation plan, forward and backward,
 * and KV-cached decoding. */
#include "config.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "model_impl.h"

/* Lays out every tensor in the flat buffer, in Hugging Face names. */
static void lay_out_parameters(struct lt_model *m)
{
	const struct lt_model_config *c = &m->cfg;
	int C = c->dim, D = head_dim(c), HD = c->n_heads * D, KD = c->n_kv_heads * D, F = c->ffn_dim;
	char name[80];

	/* a pipeline stage holds its blocks, under the whole model's names, and
	 * the embedding (the first) or the final norm and the head (the last) */
	if (m->has_embed)
		m->embed = add_tensor(m, "model.embed_tokens.weight", c->vocab_size, C, 1);
	for (int l = 0; l < c->n_layers; l++) {
		struct layer_views *lv = &m->layers[l];
#define LAYER_NAME(suffix) \
	(snprintf(name, sizeof name, "model.layers.%d.%s", m->layer0 + l, suffix), name)
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
	if (!m->has_head) {  /* an empty output range */
		m->norm = m->lm_head = m->numel;
		return;
	}
	m->norm = add_tensor(m, "model.norm.weight", C, 0, 0);
	m->lm_head = c->tied ? m->embed : add_tensor(m, "lm_head.weight", c->vocab_size, C, 1);
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

/* The model's tables, and unless `bare` (LT_MODEL_BARE or
 * LT_MODEL_DEFERRED) its f32 parameter and gradient buffers. */
static enum lt_status new_model(lt_backend *be, const struct lt_model_config *c, int bare,
				const struct lt_stage *stage, lt_model **out)
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
	m->has_embed = m->has_head = 1;
	if (stage) {
		m->cfg.n_layers = stage->layers;
		m->layer0 = stage->layer0;
		m->whole_layers = c->n_layers;
		m->has_embed = stage->layer0 == 0;
		m->has_head = stage->layer0 + stage->layers == c->n_layers;
	}
	c = &m->cfg;
	m->tensors = calloc((size_t)c->n_layers * 9 + 3, sizeof *m->tensors);
	m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
	m->la = calloc((size_t)c->n_layers, sizeof *m->la);
	m->grad_block = calloc((size_t)c->n_layers, sizeof *m->grad_block);
	m->param_block = calloc((size_t)c->n_layers, sizeof *m->param_block);
	if (!m->tensors || !m->layers || !m->la || !m->grad_block || !m->param_block)
		goto nomem;
	lay_out_parameters(m);
	mirror_grad_layout(m);
	m->params_deferred = bare == LT_MODEL_DEFERRED;

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
	return new_model(be, c, 0, NULL, out);
}

enum lt_status lt_model_new_tables(lt_backend *be, const struct lt_model_config *c, int bare,
				   const struct lt_stage *stage, lt_model **out)
{
	return new_model(be, c, bare, stage, out);
}

enum lt_status lt_model_new_stage(lt_backend *be, const struct lt_model_config *c,
				  const struct lt_stage *stage, lt_model **out)
{
	LT_ASSERT(stage->layer0 >= 0 && stage->layers >= 1 &&
		  stage->layer0 + stage->layers <= c->n_layers);
	enum lt_status st = new_model(be, c, 0, stage, out);
	if (st == LT_OK && (st = lt_model_stage_tables(*out, c)) != LT_OK) {
		lt_model_free(*out);
		*out = NULL;
	}
	return st;
}

enum lt_status lt_model_new_bare(lt_backend *be, const struct lt_model_config *c, lt_model **out)
{
	return new_model(be, c, LT_MODEL_BARE, NULL, out);
}

enum lt_status lt_model_new_sliced(lt_backend *be, const struct lt_model_config *c,
				   const struct lt_tp *tp, enum lt_precision p, lt_model **out)
{
	enum lt_status st = tp && tp->size > 1 ? lt_model_new_tp_deferred(be, c, tp, out)
					       : new_model(be, c, LT_MODEL_DEFERRED, NULL, out);
	if (st == LT_OK && (st = lt_model_set_precision(*out, p)) != LT_OK) {
		lt_model_free(*out);
		*out = NULL;
	}
	return st;
}

enum lt_status lt_model_new_adapted(lt_backend *be, const struct lt_model_config *c,
				    const struct lt_lora *lora, enum lt_precision p, lt_model **out)
{
	int adapters = lora && lora->rank > 0;
	enum lt_status st = new_model(be, c, adapters, NULL, out);
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

void lt_model_free(lt_model *m)
{
	if (!m)
		return;
	lt_buf_free(m->be, m->params);
	lt_buf_free(m->be, m->weights);
	lt_buf_free(m->be, m->grads);
	lt_buf_free(m->be, m->inv_freq);
	lt_model_free_head_grads(m);
	lt_buf_free(m->be, m->base);
	lt_buf_free(m->be, m->wbase);
	lt_buf_free(m->be, m->norm_dw);
	if (m->base_tensors != m->tensors)
		free(m->base_tensors);
	free(m->lv);
	lt_model_free_activations(m);
	free(m->sets);
	lt_model_stage_free(m);
	lt_model_decode_end(m);
	free(m->row_slot);
	free(m->tensors);
	free(m->layers);
	free(m->la);
	free(m->grad_block);
	free(m->param_block);
	lt_tp_free(m);
	lt_model_free(m->whole_tables);
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

enum lt_status lt_model_set_grad_layout(lt_model *m, const struct lt_grad_layout *layout)
{
	int L = m->cfg.n_layers;
	size_t n = layout ? layout->numel : m->numel, first = first_block(m);
	int shared = 0;  /* a block's slot over the embedding's range */
	if (layout) {
		size_t top = first;  /* where the embedding's range and the slots end */
		for (int l = 0; l < L; l++) {
			LT_ASSERT(layout->block[l] + block_numel(m) <= n);
			shared |= layout->block[l] < first;
			if (layout->block[l] + block_numel(m) > top)
				top = layout->block[l] + block_numel(m);
		}
		LT_ASSERT(layout->output >= top &&
			  layout->output + (m->numel - output_begin(m)) <= n);
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
	m->embed_grad_shared = shared;
	if (layout) {
		memcpy(m->grad_block, layout->block, (size_t)L * sizeof *m->grad_block);
		m->grad_output = layout->output;
	} else {
		mirror_grad_layout(m);
	}
	lt_model_zero_grads(m);
	return m->be->ops->sync(m->be);
}

void lt_model_set_head_grad_direct(lt_model *m, int on)
{
	m->head_grad_direct = on;
	if (on)
		lt_model_free_head_grads(m);
}

/* Whether the head's weight gradient goes straight into the gradient
 * buffer: asked, with a layout, one set and a head of its own to train. */
static int head_direct(const lt_model *m)
{
	return m->head_grad_direct && m->grads_written && (!m->sets || m->n_sets == 1) && !m->base &&
	       m->has_head;
}


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
/* Draws tensor i (of n) into x: ones for a norm, else normal(0, std). */
void lt_model_draw(const lt_model *m, const struct lt_tensor *t, int i, uint64_t seed, float *x)
{
	int L = m->whole_layers ? m->whole_layers : m->cfg.n_layers;
	float resid_std = 0.02f / sqrtf(2.0f * (float)L);
	if (t->ndim == 1) {
		for (size_t j = 0; j < t->numel; j++)
			x[j] = 1.0f;
	} else {
		float std = is_residual_output(t->name) ? resid_std : 0.02f;
		lt_rng_fill_normal(x, t->numel, std, seed, (uint64_t)i);
	}
}

enum lt_status lt_model_init(lt_model *m, uint64_t seed)
{
	if (m->tp.size > 1)
		return lt_tp_init(m, seed);
	size_t most = 0;
	for (int i = 0; i < lt_model_num_weights(m); i++)
		if (lt_model_weight(m, i)->numel > most)
			most = lt_model_weight(m, i)->numel;
	/* a tensor at a time: with adapters, the base lies in two buffers, and
	 * with a sink the model keeps a range of each */
	int each = m->base || m->sink;
	float *host = malloc((each ? most : m->numel) * sizeof *host);
	if (!host) {
		lt_errmsg_set("cannot allocate %zu bytes to initialise the model",
			      (each ? most : m->numel) * sizeof *host);
		return LT_ERR_NOMEM;
	}
	enum lt_status st = LT_OK;
	for (int i = 0; i < lt_model_num_weights(m) && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_weight(m, i);
		lt_model_draw(m, t, m->whole_of ? m->whole_of[i] : i, seed,
			      each ? host : host + t->off);
		if (m->base)
			st = lt_model_write_weight(m, t, host);
		else if (m->sink)
			lt_model_put_params(m, t->off, host, t->numel);
	}
	if (!each)
		m->be->ops->write(m->be, lt_model_params(m), host, m->numel);
	if (st == LT_OK)
		st = m->be->ops->sync(m->be);
	free(host);
	return st == LT_OK && m->base ? lt_model_init_adapters(m, seed) : st;
}

static lt_ref S(const lt_model *m, size_t off) { return (lt_ref){ m->stats, off }; }
static lt_ref I(const lt_model *m, size_t off) { return (lt_ref){ m->ids, off }; }

static void linear_backward(lt_backend *be, lt_ref dx, float dx_beta, lt_ref dw, lt_ref dout,
			    lt_ref x, lt_ref w, int M, int N, int K)
{
	linear_grad_input(be, dx, dx_beta, dout, w, M, N, K);
	linear_grad_weight(be, dw, 1.0f, dout, x, M, N, K);
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
	linear_forward(be, A(m, a->qkv), A(m, a->ln1), PW(m, w->wqkv), N, QKV, C, 0.0f);
	lt_lora_block_forward(m, l, LORA_IN_LN1, a->ln1, A(m, a->qkv));
	be->ops->rope(be, A(m, a->qkv), (lt_ref){ m->inv_freq, 0 }, &s, 0);
	be->ops->attention_forward(be, A(m, a->att), S(m, a->lse), A(m, a->qkv), &s);
	lt_tp_row_parallel(m, A(m, a->xmid), A(m, a->x), A(m, a->att), PW(m, w->wo), attn_width(c));
	lt_lora_block_forward(m, l, LORA_IN_ATT, a->att, A(m, a->xmid));

	be->ops->rmsnorm_forward(be, A(m, a->ln2), S(m, a->rstd2), A(m, a->xmid), P(m, w->ln_post),
				 N, C, c->norm_eps);
	linear_forward(be, A(m, a->h), A(m, a->ln2), PW(m, w->wgu), N, 2 * F, C, 0.0f);
	lt_lora_block_forward(m, l, LORA_IN_LN2, a->ln2, A(m, a->h));
	be->ops->swiglu_forward(be, A(m, a->g), A(m, a->h), N, F);
}

/* One transformer block: x_l -> x_{l+1} (stored as the next layer's x, or
 * x_final after the last layer). */
static void block_forward(lt_model *m, int l)
{
	const struct lt_model_config *c = &m->cfg;
	const struct layer_acts *a = &m->la[l];
	int F = c->ffn_dim;
	size_t next = l + 1 < c->n_layers ? m->la[l + 1].x : m->x_final;
	block_forward_kept(m, l);
	lt_tp_row_parallel(m, A(m, next), A(m, a->xmid), A(m, a->g), PW(m, m->layers[l].wdown), F);
	lt_lora_block_forward(m, l, LORA_IN_G, a->g, A(m, next));
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
	base_backward(m, dA, G(m, w->wdown), dx, A(m, a->g), PW(m, w->wdown), N, C, F);
	if (m->base)
		lt_lora_backward(m, l, LORA_IN_G, dx, dA);
	pause_for_exchanges(m);
	be->ops->swiglu_backward(be, dB, dA, A(m, a->h), N, F);
	base_backward(m, dA, G(m, w->wgu), dB, A(m, a->ln2), PW(m, w->wgu), N, 2 * F, C);
	if (m->base)
		lt_lora_backward(m, l, LORA_IN_LN2, dB, dA);
	lt_tp_sum(m, dA, (size_t)N * C);
	pause_for_exchanges(m);
	be->ops->rmsnorm_backward(be, dx, norm_grad(m, w->ln_post), dA, A(m, a->xmid),
				  P(m, w->ln_post), S(m, a->rstd2), N, C);

	/* attention: xmid = x + o(attn(rope(qkv(rmsnorm(x))))) */
	base_backward(m, dA, G(m, w->wo), dx, A(m, a->att), PW(m, w->wo), N, C, attn_width(c));
	if (m->base)
		lt_lora_backward(m, l, LORA_IN_ATT, dx, dA);
	pause_for_exchanges(m);
	be->ops->attention_backward(be, dB, dA, A(m, a->att), S(m, a->lse), A(m, a->qkv), &s);
	pause_for_exchanges(m);
	be->ops->rope(be, dB, (lt_ref){ m->inv_freq, 0 }, &s, 1);
	base_backward(m, dA, G(m, w->wqkv), dB, A(m, a->ln1), PW(m, w->wqkv), N, QKV, C);
	if (m->base)
		lt_lora_backward(m, l, LORA_IN_LN1, dB, dA);
	lt_tp_sum(m, dA, (size_t)N * C);
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
	if (m->head_loss.chunk && grad_scale != 0.0f)
		m->head_loss.chunk(m->head_loss.ctx, S(m, m->losses + (size_t)r0), logits,
				   I(m, m->targets + (size_t)r0), r0, R, grad_scale);
	else if (m->tp.size > 1)
		lt_tp_xent(m, S(m, m->losses + (size_t)r0), logits, I(m, m->targets + (size_t)r0), r0,
			   R, grad_scale);
	else
		be->ops->xent(be, S(m, m->losses + (size_t)r0), logits,
			      I(m, m->targets + (size_t)r0), R, V, grad_scale);
	if (grad_scale == 0.0f)
		return;
	linear_grad_input(be, A(m, m->dA + (size_t)r0 * C), 0.0f, logits, P(m, m->lm_head), R, V, C);
	if (!m->base)
		linear_grad_weight(be, head_direct(m) ? G(m, m->lm_head) : (lt_ref){ m->head_grad, 0 },
				   r0 ? 1.0f : 0.0f, logits, xf, R, V, C);
}

/* The head's weight gradient buffer, made by the first training forward
 * (none where it goes into the gradient buffer). */
static enum lt_status have_head_grad(lt_model *m)
{
	if (m->head_grad || head_direct(m))
		return LT_OK;
	enum lt_status st = lt_buf_new(m->be, LT_F32, (size_t)m->cfg.vocab_size * m->cfg.dim,
				       &m->head_grad);
	if (st != LT_OK)
		lt_errmsg_prefix("the LM head's gradient");
	return st;
}

/* tokens[B*T] written and run through the embedding, the blocks and the
 * final norm into xf, queued. */
static enum lt_status run_trunk(lt_model *m, const int32_t *tokens)
{
	lt_backend *be = m->be;
	const struct lt_model_config *c = &m->cfg;
	int N = m->B * m->T, C = c->dim;
	enum lt_status st = LT_OK;
	refresh_compute_weights(m);
	m->pause_st = LT_OK;
	/* a later pipeline stage's input was written into x_0 */
	if (m->has_embed) {
		lt_tp_local_tokens(m, tokens, m->host_tokens, N);
		be->ops->write(be, I(m, m->tokens), m->host_tokens, (size_t)N);
		if ((st = lt_model_need_block(m, -1, 0)) != LT_OK)
			return st;
		be->ops->embedding_forward(be, A(m, m->la[0].x), I(m, m->tokens), P(m, m->embed), N,
					   C);
		lt_tp_sum(m, A(m, m->la[0].x), (size_t)N * C);
	}
	for (int l = 0; l < c->n_layers && st == LT_OK; l++)
		if ((st = lt_model_need_block(m, l, 0)) == LT_OK)
			block_forward(m, l);
	if (st != LT_OK || !m->has_head)  /* an earlier stage's output: x_final */
		return st;
	if ((st = lt_model_need_block(m, c->n_layers, 0)) != LT_OK)
		return st;
	be->ops->rmsnorm_forward(be, A(m, m->xf), S(m, m->rstdf), A(m, m->x_final), P(m, m->norm), N,
				 C, c->norm_eps);
	return LT_OK;
}

enum lt_status lt_model_forward_hidden(lt_model *m, const int32_t *tokens)
{
	LT_ASSERT(m->acts);
	int N = m->B * m->T, V = lt_tp_vocab(m);
	for (int i = 0; i < N; i++)
		if (tokens[i] < 0 || tokens[i] >= V) {
			lt_errmsg_set("token %d at position %d is outside the vocabulary [0, %d)",
				      tokens[i], i, V);
			return LT_ERR_ARG;
		}
	m->dropping = 0;
	return run_trunk(m, tokens);
}

enum lt_status lt_model_forward(lt_model *m, const int32_t *tokens, const int32_t *targets,
				float grad_scale, double *loss_sum, long *n_targets)
{
	lt_backend *be = m->be;
	LT_ASSERT(m->acts);
	int N = m->B * m->T, V = lt_tp_vocab(m);
	long valid = 0;

	for (int i = 0; i < N; i++) {
		if (tokens[i] < 0 || tokens[i] >= V || targets[i] >= V) {
			int bad = tokens[i] < 0 || tokens[i] >= V ? tokens[i] : targets[i];
			lt_errmsg_set("token %d at position %d is outside the vocabulary [0, %d)", bad, i, V);
			return LT_ERR_ARG;
		}
		valid += targets[i] >= 0;
	}
	enum lt_status st = grad_scale != 0.0f && !m->base && m->has_head ? have_head_grad(m) : LT_OK;
	if (st != LT_OK)
		return st;
	m->dropping = m->base && grad_scale != 0.0f && m->lora.dropout > 0.0f;
	be->ops->write(be, I(m, m->targets), targets, (size_t)N);
	if (m->tp_targets)
		memcpy(m->tp_targets, targets, (size_t)N * sizeof *targets);
	if ((st = run_trunk(m, tokens)) != LT_OK)
		return st;
	if (!m->has_head)  /* the last pipeline stage counts the loss */
		valid = 0;
	if (!m->has_head && (st = be->ops->sync(be)) == LT_OK)
		st = m->pause_st;
	if (!m->has_head) {
		m->have_grad = grad_scale != 0.0f;
		*loss_sum = 0;
		*n_targets = 0;
		return st;
	}
	int hooked = m->head_loss.chunk && grad_scale != 0.0f;
	if (hooked && (st = m->head_loss.begin(m->head_loss.ctx, tokens, m->B, m->T)) != LT_OK)
		return st;
	for (int r0 = 0; r0 < N; r0 += m->head_rows)
		head_chunk(m, r0, N - r0 < m->head_rows ? N - r0 : m->head_rows, grad_scale);
	if (hooked && (st = m->head_loss.end(m->head_loss.ctx)) != LT_OK)
		return st;
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
	for (int n = 0; n < N; n++)  /* < 0: another rank's token */
		if (m->host_tokens[n] >= 0)
			m->row_slot[m->host_tokens[n]] = 0;
	for (int v = 0; v < V; v++)
		if (m->row_slot[v] == 0) {
			m->row_slot[v] = U;
			m->lookup_rows[U++] = v;
		}
	for (int n = 0; n < N; n++)
		map[n] = m->host_tokens[n] < 0 ? -1 : m->row_slot[m->host_tokens[n]];
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
		/* a block's slot lay here: its hook returned with it exchanged */
		if (m->embed_grad_shared)
			be->ops->fill(be, G(m, m->embed), m->layers[0].ln_in - m->embed, 0.0f);
		be->ops->embedding_backward(be, G(m, m->embed), I(m, m->tokens), dx, N, C);
		return tell_grads_ready(m, m->embed, m->layers[0].ln_in);
	}
	be->ops->fill(be, grads, (size_t)rows * C, 0.0f);
	be->ops->embedding_backward(be, grads, I(m, m->lookup), dx, N, C);
	return m->hook.lookup_ready(m->hook.ctx, m->embed, m->lookup_rows, rows, grads);
}

/* The head's part of backward: dL/dx_final into dx, through the final
 * norm from dxf (in dA since the forward), and the head's weight gradient
 * added in; the ranges they end reported. */
static enum lt_status head_backward(lt_model *m)
{
	lt_backend *be = m->be;
	int N = m->B * m->T, C = m->cfg.dim, V = m->cfg.vocab_size;
	lt_ref dx = A(m, m->dx), dA = A(m, m->dA);
	be->ops->fill(be, dx, (size_t)N * C, 0.0f);
	/* the head's gradients came with the forward: dxf in dA, dW in head_grad
	 * (or already in place) */
	if (!m->base && !head_direct(m)) {
		lt_ref head = G(m, m->lm_head);
		be->ops->add(be, head, head, (lt_ref){ m->head_grad, 0 }, (size_t)V * C);
	} else if (m->base) {
		be->ops->fill(be, (lt_ref){ m->norm_dw, 0 }, (size_t)C, 0.0f);
	}
	lt_tp_sum(m, dA, (size_t)N * C);  /* the head's part of dxf */
	enum lt_status st = lt_model_need_block(m, m->cfg.n_layers, 1);
	if (st != LT_OK)
		return st;
	be->ops->rmsnorm_backward(be, dx, norm_grad(m, m->norm), dA, A(m, m->x_final),
				  P(m, m->norm), S(m, m->rstdf), N, C);
	/* the final norm (and an untied head) end the flat buffer; with
	 * adapters there is no such range, nor an embedding's */
	st = m->base ? m->pause_st : tell_grads_ready(m, m->norm, m->numel);
	/* a tied head's part is done (a last stage without the embedding has
	 * none); where the blocks' slot lies over the table's range, the hook
	 * returns with it exchanged, and the lookup's part comes at the end */
	if (st == LT_OK && !m->base && m->has_embed &&
	    (m->hook.lookup_ready || (m->embed_grad_shared && m->cfg.tied)))
		st = tell_grads_ready(m, m->embed, m->layers[0].ln_in);
	return st;
}

/* Backward's start with a layout: the gradients of flat elements [lo, hi)
 * zeroed, but for the head's where the forward wrote them. */
static void zero_grads_but_head(lt_model *m, size_t lo, size_t hi)
{
	lt_backend *be = m->be;
	size_t h0 = m->lm_head, h1 = h0 + (size_t)m->cfg.vocab_size * m->cfg.dim;
	if (!head_direct(m) || h1 <= lo || h0 >= hi) {
		if (hi > lo)
			be->ops->fill(be, G(m, lo), hi - lo, 0.0f);
		return;
	}
	if (h0 > lo)
		be->ops->fill(be, G(m, lo), h0 - lo, 0.0f);
	if (hi > h1)
		be->ops->fill(be, G(m, h1), hi - h1, 0.0f);
}

enum lt_status lt_model_backward(lt_model *m)
{
	lt_backend *be = m->be;
	const struct lt_model_config *c = &m->cfg;
	LT_ASSERT(m->have_grad);
	int rows = 0;
	int lookup = m->hook.lookup_ready && m->has_embed;
	enum lt_status st = lookup ? place_lookup_rows(m, &rows) : LT_OK;
	if (st != LT_OK)
		return st;
	if (m->grads_written && !m->base) {
		zero_grads_but_head(m, 0, m->layers[0].ln_in);
		zero_grads_but_head(m, m->norm, m->numel);
	}
	/* a pipeline stage before the last was given dL/dx_final in dx; the
	 * first one's embedding range, with the lookup apart, is reported
	 * where the head's would be (the lookup's gradient goes to the hook) */
	if (m->has_head)
		st = head_backward(m);
	else if (m->has_embed && m->hook.lookup_ready && !m->base)
		st = tell_grads_ready(m, m->embed, m->layers[0].ln_in);
	m->have_grad = 0;
	for (int l = c->n_layers - 1; l >= 0 && st == LT_OK; l--) {
		if (m->grads_written)
			be->ops->fill(be, G(m, lt_model_block_begin(m, l)), block_numel(m), 0.0f);
		if ((st = lt_model_need_block(m, l, 1)) != LT_OK)
			break;
		if (m->recompute)  /* the same ops on the same input: the same bits */
			block_forward_kept(m, l);
		block_backward(m, l);
		st = m->pause_st != LT_OK ? m->pause_st
					  : tell_grads_ready(m, lt_model_block_begin(m, l),
							     lt_model_block_begin(m, l + 1));
	}
	/* a later stage leaves dL/dx_0 in dx for the one before it */
	if (st != LT_OK || (m->has_embed && (st = finish_embedding_gradient(m, rows)) != LT_OK))
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

void lt_model_set_recompute(lt_model *m, enum lt_recompute r)
{
	LT_ASSERT(!m->acts);
	m->recompute = r;
}

int lt_model_num_weights(const lt_model *m)
{
	return m->base ? m->n_base : m->n_tensors;
}

const struct lt_tensor *lt_model_weight(const lt_model *m, int i)
{
	return m->base ? lt_model_frozen(m, i) : lt_model_tensor(lt_model_tp_whole(m), i);
}

const struct lt_tensor *lt_model_find_weight(const lt_model *m, const char *name)
{
	/* a pipeline stage knows every tensor of the whole model */
	return m->base ? lt_model_find_frozen(m, name)
		       : lt_model_find(m->stage_whole ? m->stage_whole : lt_model_tp_whole(m), name);
}

enum lt_status lt_model_write_weight(lt_model *m, const struct lt_tensor *t, float *x)
{
	if (m->stage_whole && !m->base) {  /* the stage's own, or another stage's: none */
		if (!(t = lt_model_find(lt_model_tp_whole(m), t->name)))
			return LT_OK;
	}
	if (m->whole_tables)
		return lt_tp_write_weight(m, t, x);
	if (!m->base && m->sink) {
		lt_model_put_params(m, t->off, x, t->numel);
		return m->be->ops->sync(m->be);
	}
	lt_ref dst = m->base ? lt_model_frozen_ref(m, t) : lt_ref_at(lt_model_params(m), t->off);
	write_floats(m->be, dst, x, t->numel);
	return m->be->ops->sync(m->be);  /* the caller frees x next */
}
