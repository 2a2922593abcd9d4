/* The model's activation plan: where forward keeps what backward reads,
 * the buffers that hold it (one set per micro-batch a pipeline stage keeps
 * in flight), and the memory estimate the same walk gives. */
#include "config.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

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

/* The current set's buffers freed (its fields NULL). */
static void free_set(lt_model *m)
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

/* Set k's buffers, and what its last forward left its backward, become
 * the model's (the ones forward and backward use). */
static void load_set(lt_model *m, int k)
{
	const struct act_set *s = &m->sets[k];
	m->acts = s->acts;
	m->stats = s->stats;
	m->ids = s->ids;
	m->host_tokens = s->host_tokens;
	m->lookup_rows = s->lookup_rows;
	m->head_grad = s->head_grad;
	m->have_grad = s->have_grad;
	m->cur_set = k;
}

/* The model's activation buffers into set k (its head gradient kept). */
static void store_set(lt_model *m, int k)
{
	struct act_set *s = &m->sets[k];
	s->acts = m->acts;
	s->stats = m->stats;
	s->ids = m->ids;
	s->host_tokens = m->host_tokens;
	s->lookup_rows = m->lookup_rows;
}

/* What the set in use's forward left its backward (the head's gradient,
 * made lazily by the first training forward) kept in it. */
static void keep_set(lt_model *m)
{
	m->sets[m->cur_set].head_grad = m->head_grad;
	m->sets[m->cur_set].have_grad = m->have_grad;
}

void lt_model_free_activations(lt_model *m)
{
	if (!m->sets) {
		free_set(m);
		return;
	}
	keep_set(m);
	for (int k = 0; k < m->n_sets; k++) {
		load_set(m, k);
		free_set(m);
		store_set(m, k);
	}
	load_set(m, 0);
}

void lt_model_free_head_grads(lt_model *m)
{
	if (m->sets) {
		keep_set(m);
		for (int k = 0; k < m->n_sets; k++) {
			lt_buf_free(m->be, m->sets[k].head_grad);
			m->sets[k].head_grad = NULL;
		}
	} else {
		lt_buf_free(m->be, m->head_grad);
	}
	m->head_grad = NULL;
}

/* Allocates the pieces of one set of a plan into the model's fields. */
static enum lt_status allocate_set(lt_model *m, struct plan_size size, size_t tokens)
{
	size_t n = size.acts;
	int pieces = m->cfg.n_layers + 1;
	m->acts = calloc((size_t)pieces, sizeof *m->acts);
	m->host_tokens = malloc(tokens * sizeof *m->host_tokens);
	m->lookup_rows = malloc(2 * tokens * sizeof *m->lookup_rows);
	if (!m->acts || !m->host_tokens || !m->lookup_rows) {
		free_set(m);
		lt_errmsg_set("cannot allocate the activation table");
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < pieces; i++) {
		size_t end = i + 1 < pieces ? piece_begin(m, i + 1) : n;
		enum lt_status st = lt_buf_new(m->be, act_type(m->precision), end - piece_begin(m, i),
					       &m->acts[i]);
		if (st != LT_OK) {
			free_set(m);
			return st;
		}
	}
	enum lt_status st = lt_buf_new(m->be, LT_F32, size.stats, &m->stats);
	if (st == LT_OK)
		st = lt_buf_new(m->be, LT_I32, 3 * tokens, &m->ids);
	if (st != LT_OK)
		free_set(m);
	return st;
}

/* Allocates every set of a plan; set 0 is the model's after. */
static enum lt_status allocate_activations(lt_model *m, struct plan_size size, size_t tokens)
{
	if (!m->sets)
		return allocate_set(m, size, tokens);
	enum lt_status st = LT_OK;
	for (int k = 0; k < m->n_sets && st == LT_OK; k++) {
		st = allocate_set(m, size, tokens);
		store_set(m, k);
	}
	if (st != LT_OK)
		lt_model_free_activations(m);
	load_set(m, 0);
	return st;
}

enum lt_status lt_model_set_act_sets(lt_model *m, int n)
{
	LT_ASSERT(!m->acts && !m->sets && n >= 1);
	if (n == 1)
		return LT_OK;
	if (!(m->sets = calloc((size_t)n, sizeof *m->sets))) {
		lt_errmsg_set("cannot allocate the table of %d activation sets", n);
		return LT_ERR_NOMEM;
	}
	m->n_sets = n;
	keep_set(m);  /* set 0 is in use */
	return LT_OK;
}

int lt_model_act_sets(const lt_model *m)
{
	return m->sets ? m->n_sets : 1;
}

void lt_model_use_acts(lt_model *m, int k)
{
	LT_ASSERT(k >= 0 && k < lt_model_act_sets(m));
	if (!m->sets)
		return;
	keep_set(m);
	load_set(m, k);
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
	lt_model_free_activations(m);
	struct plan_size size = plan_activations(&m->cfg, B, T, m->recompute, m->precision,
						 &m->lora, m);
	enum lt_status st = allocate_activations(m, size, (size_t)B * T);
	if (st != LT_OK) {
		double bytes = ((double)size.acts * (double)act_bytes(m->precision) +
				(double)size.stats * 4) * lt_model_act_sets(m);
		lt_errmsg_prefix("activations for batch %d x seq %d (%.2f GiB; lower train.batch or "
				 "train.seq)", B, T, bytes / 1073741824.0);
		return st;
	}
	m->B = m->B_cap = B;
	m->T = m->T_cap = T;
	return lt_tp_plan(m, (size_t)B * T);
}

void lt_model_estimate_stage(const struct lt_model_config *c, const struct lt_stage *s, int B,
			     int T, int threads, enum lt_recompute recompute,
			     enum lt_precision precision, int sets, struct lt_mem_estimate *out)
{
	struct lt_model_config part = *c;
	part.n_layers = s->layers;
	int first = s->layer0 == 0, last = s->layer0 + s->layers == c->n_layers;
	size_t emb = (size_t)c->vocab_size * c->dim;
	size_t P = (size_t)s->layers * lt_model_config_block_params(c) + (first ? emb : 0) +
		   (last ? (size_t)c->dim + (c->tied && first ? 0 : emb) : 0);
	/* the workspace and runtime as a whole model's; every set holds the
	 * plan of the stage's blocks (the head's chunk too), the last stage
	 * the head's weight gradient */
	lt_model_estimate_memory(&part, B, T, threads, recompute, precision, out);
	struct plan_size plan = plan_activations(&part, B, T, recompute, precision, NULL, NULL);
	out->params = P * 4 + (precision == LT_PRECISION_BF16 ? P * 2 : 0);
	out->grads = P * 4;
	out->optimizer = P * 8;
	out->activations = (plan.acts * act_bytes(precision) + plan.stats * 4 +
			    ids_elems(B, T) * 4) * (size_t)sets + (last ? emb * 4 : 0);
	out->total = out->params + out->grads + out->optimizer + out->activations + out->workspace +
		     out->runtime;
}
