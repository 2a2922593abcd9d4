/* KV-cached decoding of the LLaMA model: the cache and the inference
 * activations, and the forward of new tokens over them. */
#include "config.h"
#include "model.h"

#include "model_impl.h"

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
	d->att = TAKE(N * (size_t)attn_width(c));
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
	if (m->params_sliced) {
		lt_errmsg_set("decoding: the model holds only some blocks' parameters (ZeRO stage "
			      "3); gather them first");
		return LT_ERR_ARG;
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
	if (st == LT_OK)
		st = lt_tp_decode_begin(m, B, S);
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
	lt_tp_decode_end(m);
}

static lt_ref DS(const lt_model *m, size_t off) { return (lt_ref){ m->dec_stats, off }; }

/* x[N,C] += in[N,K] . W^T onto the residual stream; split, the group's
 * partial products summed first (in the norm's buffer, free until the
 * next norm). */
static void add_row_parallel(lt_model *m, lt_ref in, lt_ref w, int K, int N)
{
	const struct decode_acts *d = &m->dacts;
	size_t n = (size_t)N * m->cfg.dim;
	if (m->tp.size <= 1) {
		linear_forward(m->be, DA(m, d->x), in, w, N, m->cfg.dim, K, 1.0f);
		return;
	}
	linear_forward(m->be, DA(m, d->ln), in, w, N, m->cfg.dim, K, 0.0f);
	lt_tp_decode_sum(m, DA(m, d->ln), n);
	m->be->ops->add(m->be, DA(m, d->x), DA(m, d->x), DA(m, d->ln), n);
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
	linear_forward(be, DA(m, d->qkv), DA(m, d->ln), PW(m, w->wqkv), N, QKV, C, 0.0f);
	lt_lora_decode(m, l, LORA_IN_LN1, DA(m, d->ln), DA(m, d->qkv), N);
	be->ops->rope(be, DA(m, d->qkv), (lt_ref){ m->inv_freq, 0 }, &s, 0);
	be->ops->attention_cached(be, DA(m, d->att), DA(m, d->qkv), kcache, vcache, m->dec_S, &s);
	add_row_parallel(m, DA(m, d->att), PW(m, w->wo), attn_width(c), N);
	lt_lora_decode(m, l, LORA_IN_ATT, DA(m, d->att), DA(m, d->x), N);

	be->ops->rmsnorm_forward(be, DA(m, d->ln), DS(m, d->rstd), DA(m, d->x), P(m, w->ln_post),
				 N, C, c->norm_eps);
	linear_forward(be, DA(m, d->h), DA(m, d->ln), PW(m, w->wgu), N, 2 * F, C, 0.0f);
	lt_lora_decode(m, l, LORA_IN_LN2, DA(m, d->ln), DA(m, d->h), N);
	be->ops->swiglu_forward(be, DA(m, d->g), DA(m, d->h), N, F);
	add_row_parallel(m, DA(m, d->g), PW(m, w->wdown), F, N);
	lt_lora_decode(m, l, LORA_IN_G, DA(m, d->g), DA(m, d->x), N);
}

enum lt_status lt_model_decode(lt_model *m, const int32_t *tokens, int T, int pos0,
			       float *logits)
{
	lt_backend *be = m->be;
	const struct lt_model_config *c = &m->cfg;
	const struct decode_acts *d = &m->dacts;
	LT_ASSERT(m->kv);
	int B = m->dec_B, C = c->dim, V = lt_tp_vocab(m), N = B * T;

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
	m->pause_st = LT_OK;
	if (m->tp.size > 1) {
		lt_tp_local_tokens(m, tokens, m->tp_dec_ids, N);
		tokens = m->tp_dec_ids;
	}
	be->ops->write(be, ids, tokens, (size_t)N);
	be->ops->embedding_forward(be, DA(m, d->x), ids, P(m, m->embed), N, C);
	lt_tp_decode_sum(m, DA(m, d->x), (size_t)N * C);
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
	linear_forward(be, DS(m, d->logits), DA(m, d->xf), P(m, m->lm_head), B, c->vocab_size, C,
		       0.0f);
	if (m->tp.size > 1) {
		lt_tp_decode_logits(m, DS(m, d->logits), B, logits);
		enum lt_status st = be->ops->sync(be);
		return st != LT_OK ? st : m->pause_st;
	}
	be->ops->read(be, logits, DS(m, d->logits), (size_t)B * V);
	return be->ops->sync(be);
}
