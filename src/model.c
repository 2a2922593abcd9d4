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
	size_t HD = (size_t)attn_width(c), QKV = (size_t)qkv_width(c);
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
			struct lora_shape sh = lt_lora_shape(c, t);
			if (lt_lora_on(lora, t) && !a->u[sh.input])
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
	size_t HD = (size_t)attn_width(c), QKV = (size_t)qkv_width(c), V = (size_t)c->vocab_size;
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
	 * the frozen base besides: its block matrices in their type (GGUF's
	 * 34 or 18 bytes per 32 values), the rest in the activation type */
	out->params = P * 4 + (precision == LT_PRECISION_BF16 ? P * 2 : 0);
	size_t W = lt_lora_block_matrix_params(c);
	enum lt_dtype wtype = adapters ? lt_lora_base_type(lora->base, precision) : LT_F32;
	if (adapters)
		out->params += (lt_model_config_params(c) - W) * act_bytes(precision) +
			       lt_dtype_bytes(wtype, W) + (size_t)c->dim * 4;
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
	/* a base of another type is converted a panel at a time (backend.h) */
	if (adapters && wtype != act_type(precision))
		out->workspace += LT_GEMM_PANEL_VALUES * act_bytes(precision);
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
	m->param_block = calloc((size_t)c->n_layers, sizeof *m->param_block);
	if (!m->tensors || !m->layers || !m->la || !m->grad_block || !m->param_block)
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

enum lt_status lt_model_new_bare(lt_backend *be, const struct lt_model_config *c, lt_model **out)
{
	return new_model(be, c, 1, out);
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
	lt_buf_free(m->be, m->wbase);
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
	float resid_std = 0.02f / sqrtf(2.0f * (float)m->cfg.n_layers);
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
	/* a tensor at a time: with adapters, the base lies in two buffers */
	float *host = malloc((m->base ? most : m->numel) * sizeof *host);
	if (!host) {
		lt_errmsg_set("cannot allocate %zu bytes to initialise the model", most * sizeof *host);
		return LT_ERR_NOMEM;
	}
	enum lt_status st = LT_OK;
	for (int i = 0; i < lt_model_num_weights(m) && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_weight(m, i);
		lt_model_draw(m, t, i, seed, m->base ? host : host + t->off);
		if (m->base)
			st = lt_model_write_weight(m, t, host);
	}
	if (!m->base)
		m->be->ops->write(m->be, lt_model_params(m), host, m->numel);
	if (st == LT_OK)
		st = m->be->ops->sync(m->be);
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
	return lt_tp_plan(m, (size_t)B * T);
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
		linear_grad_weight(be, (lt_ref){ m->head_grad, 0 }, r0 ? 1.0f : 0.0f, logits, xf, R,
				   V, C);
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
	lt_tp_local_tokens(m, tokens, m->host_tokens, N);
	be->ops->write(be, I(m, m->tokens), m->host_tokens, (size_t)N);
	if ((st = lt_model_need_block(m, -1, 0)) != LT_OK)
		return st;
	be->ops->embedding_forward(be, A(m, m->la[0].x), I(m, m->tokens), P(m, m->embed), N, C);
	lt_tp_sum(m, A(m, m->la[0].x), (size_t)N * C);
	for (int l = 0; l < c->n_layers && st == LT_OK; l++)
		if ((st = lt_model_need_block(m, l, 0)) == LT_OK)
			block_forward(m, l);
	if (st != LT_OK || (st = lt_model_need_block(m, c->n_layers, 0)) != LT_OK)
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
	enum lt_status st = grad_scale != 0.0f && !m->base ? have_head_grad(m) : LT_OK;
	if (st != LT_OK)
		return st;
	m->dropping = m->base && grad_scale != 0.0f && m->lora.dropout > 0.0f;
	be->ops->write(be, I(m, m->targets), targets, (size_t)N);
	if (m->tp_targets)
		memcpy(m->tp_targets, targets, (size_t)N * sizeof *targets);
	if ((st = run_trunk(m, tokens)) != LT_OK)
		return st;
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
	lt_tp_sum(m, dA, (size_t)N * C);  /* the head's part of dxf */
	if ((st = lt_model_need_block(m, c->n_layers, 1)) != LT_OK)
		return st;
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
		if ((st = lt_model_need_block(m, l, 1)) != LT_OK)
			break;
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
	return m->base ? lt_model_find_frozen(m, name) : lt_model_find(lt_model_tp_whole(m), name);
}

enum lt_status lt_model_write_weight(lt_model *m, const struct lt_tensor *t, float *x)
{
	if (m->whole_tables)
		return lt_tp_write_weight(m, t, x);
	lt_ref dst = m->base ? lt_model_frozen_ref(m, t) : lt_ref_at(lt_model_params(m), t->off);
	write_floats(m->be, dst, x, t->numel);
	return m->be->ops->sync(m->be);  /* the caller frees x next */
}
