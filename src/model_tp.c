/* Tensor parallelism in the model: how a whole model splits into ranks'
 * parts, the parts' initial weights, and the sums over the group that a
 * part's forward and backward need (model.h's struct lt_tp). */
#include "config.h"
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

enum lt_status lt_model_tp_check(const struct lt_model_config *c, int tp)
{
	static const char *const names[] = { "model.n_heads", "model.n_kv_heads", "model.ffn_dim" };
	int values[] = { c->n_heads, c->n_kv_heads, c->ffn_dim };
	if (tp < 1) {
		lt_errmsg_set("dist.tp = %d: expected 1 or more ranks per tensor-parallel group", tp);
		return LT_ERR_CONFIG;
	}
	for (int i = 0; i < 3; i++)
		if (values[i] % tp) {
			lt_errmsg_set("dist.tp = %d must divide %s (%d): each rank holds an equal "
				      "share of it", tp, names[i], values[i]);
			return LT_ERR_CONFIG;
		}
	if (c->vocab_size < tp) {
		lt_errmsg_set("dist.tp = %d is more than the vocabulary (%d tokens): each rank "
			      "holds rows of it", tp, c->vocab_size);
		return LT_ERR_CONFIG;
	}
	return LT_OK;
}

void lt_model_tp_part_config(const struct lt_model_config *c, int tp,
			     struct lt_model_config *part)
{
	*part = *c;
	part->head_dim = lt_model_config_head_dim(c);
	part->n_heads = c->n_heads / tp;
	part->n_kv_heads = c->n_kv_heads / tp;
	part->ffn_dim = c->ffn_dim / tp;
	part->vocab_size = (c->vocab_size + tp - 1) / tp;
}

/* This rank's part of the model of config c, or of its stage (NULL: the
 * whole), beside the tables of what it is part of. */
static enum lt_status new_part(lt_backend *be, const struct lt_model_config *c,
			       const struct lt_stage *stage, const struct lt_tp *tp, int bare,
			       lt_model **out)
{
	struct lt_model_config part;
	enum lt_status st = lt_model_tp_check(c, tp->size);
	*out = NULL;
	if (st != LT_OK)
		return st;
	lt_model_tp_part_config(c, tp->size, &part);
	lt_model *m, *whole;
	if ((st = lt_model_new_tables(be, &part, bare, stage, &m)) != LT_OK)
		return st;
	if ((st = lt_model_new_tables(be, c, LT_MODEL_BARE, stage, &whole)) != LT_OK) {
		lt_model_free(m);
		return st;
	}
	m->tp = *tp;
	m->whole_tables = whole;
	m->v0 = tp->rank * part.vocab_size;
	/* the last ranks' rows may all be padding (a small vocabulary) */
	m->v_valid = c->vocab_size - m->v0 < part.vocab_size ? c->vocab_size - m->v0
							   : part.vocab_size;
	if (m->v_valid < 0)
		m->v_valid = 0;
	if (stage && (st = lt_model_stage_tables(m, c)) != LT_OK) {
		lt_model_free(m);
		return st;
	}
	*out = m;
	return LT_OK;
}

enum lt_status lt_model_new_tp(lt_backend *be, const struct lt_model_config *c,
			       const struct lt_tp *tp, lt_model **out)
{
	if (tp->size == 1)
		return lt_model_new(be, c, out);
	return new_part(be, c, NULL, tp, LT_MODEL_WHOLE, out);
}

enum lt_status lt_model_new_tp_deferred(lt_backend *be, const struct lt_model_config *c,
					const struct lt_tp *tp, lt_model **out)
{
	return new_part(be, c, NULL, tp, LT_MODEL_DEFERRED, out);
}

enum lt_status lt_model_new_stage_tp(lt_backend *be, const struct lt_model_config *c,
				     const struct lt_stage *stage, const struct lt_tp *tp,
				     lt_model **out)
{
	if (tp->size == 1)
		return lt_model_new_stage(be, c, stage, out);
	return new_part(be, c, stage, tp, LT_MODEL_WHOLE, out);
}

void lt_model_tp_estimate(const struct lt_model_config *c, int tp, int B, int T, int threads,
			  enum lt_recompute recompute, enum lt_precision precision,
			  struct lt_mem_estimate *out)
{
	struct lt_model_config part;
	if (tp <= 1) {
		lt_model_estimate_memory(c, B, T, threads, recompute, precision, out);
		return;
	}
	lt_model_tp_part_config(c, tp, &part);
	lt_model_estimate_memory(&part, B, T, threads, recompute, precision, out);
	size_t N = (size_t)B * T;
	/* lt_tp_plan's buffers: the device's parts and lse, the host's staging */
	out->activations += 4 * N * sizeof(float);
	out->exchange = N * (size_t)c->dim * sizeof(float) + N * (3 * sizeof(double) + 4);
	out->total += 4 * N * sizeof(float) + out->exchange;
}

int lt_model_tp_size(const lt_model *m) { return m->tp.size > 1 ? m->tp.size : 1; }
int lt_model_tp_rank(const lt_model *m) { return m->tp.size > 1 ? m->tp.rank : 0; }

const lt_model *lt_model_tp_whole(const lt_model *m)
{
	return m->whole_tables ? m->whole_tables : m;
}

int lt_tp_vocab(const lt_model *m) { return lt_model_tp_whole(m)->cfg.vocab_size; }

int lt_model_tp_replicated(const lt_model *m, int i)
{
	return lt_model_tp_whole(m)->tensors[i].ndim == 1;
}

/* Where tensor i's part lies in the whole tensor [rows, cols]: rows
 * [r0, r0 + nr) (the part has part_rows >= nr: padding after) and
 * columns [c0, c0 + nc). */
struct part_box {
	int r0, nr, part_rows, c0, nc;
};

static struct part_box part_box(const lt_model *m, int i, int rank)
{
	const struct lt_tensor *w = &m->whole_tables->tensors[i], *p = &m->tensors[i];
	int rows = (int)w->shape[0], cols = w->ndim == 2 ? (int)w->shape[1] : 1;
	int prows = (int)p->shape[0], pcols = p->ndim == 2 ? (int)p->shape[1] : 1;
	struct part_box b = { 0, rows, rows, 0, cols };
	if (w->ndim == 1)
		return b;
	if (prows != rows) {  /* split by rows: a vocabulary's (padded) or a head's */
		b.r0 = rank * prows;
		b.part_rows = prows;
		b.nr = rows - b.r0 < prows ? rows - b.r0 : prows;
	} else {              /* by columns: o_proj, down_proj */
		b.c0 = rank * pcols;
		b.nc = pcols;
	}
	return b;
}

void lt_model_tp_copy(const lt_model *m, int i, int rank, float *whole, float *part,
		      int to_whole)
{
	if (m->tp.size <= 1) {
		size_t n = m->tensors[i].numel;
		memcpy(to_whole ? whole : part, to_whole ? part : whole, n * sizeof *part);
		return;
	}
	const struct lt_tensor *w = &m->whole_tables->tensors[i];
	size_t cols = w->ndim == 2 ? (size_t)w->shape[1] : 1;
	struct part_box b = part_box(m, i, rank);
	for (int r = 0; r < b.part_rows; r++) {
		float *pr = part + (size_t)r * b.nc;
		if (r >= b.nr) {  /* padding: no row of the whole tensor */
			if (!to_whole)
				memset(pr, 0, (size_t)b.nc * sizeof *pr);
			continue;
		}
		float *wr = whole + (size_t)(b.r0 + r) * cols + b.c0;
		memcpy(to_whole ? wr : pr, to_whole ? pr : wr, (size_t)b.nc * sizeof *pr);
	}
}

enum lt_status lt_tp_init(lt_model *m, uint64_t seed)
{
	const lt_model *whole = m->whole_tables;
	size_t most = 0, part_most = 0;
	for (int i = 0; i < whole->n_tensors; i++)
		if (whole->tensors[i].numel > most)
			most = whole->tensors[i].numel;
	for (int i = 0; i < m->n_tensors; i++)
		if (m->tensors[i].numel > part_most)
			part_most = m->tensors[i].numel;
	/* a tensor at a time: with a sink the part keeps a range of each */
	size_t pn = m->sink ? part_most : m->numel;
	float *w = malloc(most * sizeof *w), *part = malloc(pn * sizeof *part);
	if (!w || !part) {
		free(w);
		free(part);
		lt_errmsg_set("cannot allocate %zu bytes to initialise the model's part",
			      (most + pn) * sizeof *w);
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < whole->n_tensors; i++) {
		/* a stage draws as the whole model draws its tensors */
		lt_model_draw(whole, &whole->tensors[i], lt_model_stage_index(m, i), seed, w);
		lt_model_tp_copy(m, i, m->tp.rank, w, m->sink ? part : part + m->tensors[i].off, 0);
		if (m->sink)
			lt_model_put_params(m, m->tensors[i].off, part, m->tensors[i].numel);
	}
	if (!m->sink)
		m->be->ops->write(m->be, lt_model_params(m), part, m->numel);
	enum lt_status st = m->be->ops->sync(m->be);
	free(w);
	free(part);
	return st;
}

enum lt_status lt_tp_write_weight(lt_model *m, const struct lt_tensor *t, float *x)
{
	int i = (int)(t - m->whole_tables->tensors);
	const struct lt_tensor *p = &m->tensors[i];
	float *part = malloc(p->numel * sizeof *part);
	if (!part) {
		lt_errmsg_set("cannot allocate the part of %s (%zu values)", t->name, p->numel);
		return LT_ERR_NOMEM;
	}
	lt_model_tp_copy(m, i, m->tp.rank, x, part, 0);
	lt_model_put_params(m, p->off, part, p->numel);
	enum lt_status st = m->be->ops->sync(m->be);
	free(part);
	return st;
}

enum lt_status lt_tp_plan(lt_model *m, size_t tokens)
{
	if (m->tp.size <= 1)
		return LT_OK;
	lt_tp_free(m);
	size_t C = (size_t)m->cfg.dim;
	m->tp_host = malloc(tokens * C * sizeof *m->tp_host);
	m->tp_stats = malloc(3 * tokens * sizeof *m->tp_stats);
	m->tp_targets = malloc(tokens * sizeof *m->tp_targets);
	if (!m->tp_host || !m->tp_stats || !m->tp_targets) {
		lt_errmsg_set("cannot allocate the tensor-parallel sums' staging (%zu bytes)",
			      tokens * (C * 4 + 28));
		return LT_ERR_NOMEM;
	}
	return lt_buf_new(m->be, LT_F32, 4 * tokens, &m->tp_part);
}

void lt_tp_free(lt_model *m)
{
	free(m->tp_host);
	free(m->tp_stats);
	free(m->tp_targets);
	lt_buf_free(m->be, m->tp_part);
	m->tp_host = NULL;
	m->tp_stats = NULL;
	m->tp_targets = NULL;
	m->tp_part = NULL;
}

void lt_tp_row_parallel(lt_model *m, lt_ref out, lt_ref x, lt_ref in, lt_ref w, int K)
{
	int N = m->B * m->T, C = m->cfg.dim;
	if (m->tp.size > 1) {
		linear_forward(m->be, out, in, w, N, C, K, 0.0f);
		lt_tp_sum(m, out, (size_t)N * C);
		m->be->ops->add(m->be, out, out, x, (size_t)N * C);
		return;
	}
	m->be->ops->copy(m->be, out, x, (size_t)N * C);
	linear_forward(m->be, out, in, w, N, C, K, 1.0f);
}

/* buf[n] over the group, keeping the first failure. */
static void group_reduce(lt_model *m, void *buf, size_t n, int f64, int max)
{
	if (m->pause_st == LT_OK)
		m->pause_st = m->tp.allreduce(m->tp.ctx, buf, n, f64, max);
}

/* r[n] summed over the group through the host's staging host[n]. */
static void sum_through(lt_model *m, lt_ref r, size_t n, float *host)
{
	if (m->tp.size <= 1 || m->pause_st != LT_OK)
		return;
	read_floats(m->be, host, r, n);
	if ((m->pause_st = m->be->ops->sync(m->be)) != LT_OK)
		return;
	group_reduce(m, host, n, 0, 0);
	if (m->pause_st == LT_OK)
		write_floats(m->be, r, host, n);
}

void lt_tp_sum(lt_model *m, lt_ref r, size_t n) { sum_through(m, r, n, m->tp_host); }

enum lt_status lt_tp_decode_begin(lt_model *m, int B, int S)
{
	if (m->tp.size <= 1)
		return LT_OK;
	size_t N = (size_t)B * S, C = (size_t)m->cfg.dim;
	size_t logits = 2 * (size_t)m->tp.size * B * m->cfg.vocab_size;
	lt_tp_decode_end(m);
	m->tp_dec = malloc((N * C > logits ? N * C : logits) * sizeof *m->tp_dec);
	m->tp_dec_ids = malloc(N * sizeof *m->tp_dec_ids);
	if (!m->tp_dec || !m->tp_dec_ids) {
		lt_tp_decode_end(m);
		lt_errmsg_set("cannot allocate the tensor-parallel decoding's staging");
		return LT_ERR_NOMEM;
	}
	return LT_OK;
}

void lt_tp_decode_end(lt_model *m)
{
	free(m->tp_dec);
	free(m->tp_dec_ids);
	m->tp_dec = NULL;
	m->tp_dec_ids = NULL;
}

void lt_tp_decode_sum(lt_model *m, lt_ref r, size_t n) { sum_through(m, r, n, m->tp_dec); }

void lt_tp_decode_logits(lt_model *m, lt_ref part, int B, float *logits)
{
	int Vp = m->cfg.vocab_size, V = lt_tp_vocab(m), tp = m->tp.size;
	size_t n = (size_t)B * Vp;
	float *mine = m->tp_dec, *all = m->tp_dec + n;
	if (m->pause_st != LT_OK)
		return;
	m->be->ops->read(m->be, mine, part, n);
	if ((m->pause_st = m->be->ops->sync(m->be)) != LT_OK ||
	    (m->pause_st = m->tp.allgather(m->tp.ctx, mine, all, n * sizeof *mine)) != LT_OK)
		return;
	for (int t = 0; t < tp; t++) {
		int v0 = t * Vp, valid = V - v0 < Vp ? V - v0 : Vp;
		for (int b = 0; b < B && valid > 0; b++)
			memcpy(logits + (size_t)b * V + v0, all + (size_t)t * n + (size_t)b * Vp,
			       (size_t)valid * sizeof *logits);
	}
}

void lt_tp_local_tokens(const lt_model *m, const int32_t *tokens, int32_t *out, int n)
{
	for (int i = 0; i < n; i++) {
		int local = tokens[i] - m->v0;
		out[i] = m->tp.size <= 1 ? tokens[i] : local >= 0 && local < m->v_valid ? local : -1;
	}
}

/* Each row's logsumexp over the whole vocabulary and its loss, from every
 * rank's part[R, 3] (the max of its columns, the sum of exp(z - max) over
 * them, and the target's logit on the rank holding it, else 0): into
 * st[0, R) the lse, st[R, 2R) the losses (3R doubles of scratch). */
static void combine_rows(lt_model *m, const float *part, int r0, int R, double *st)
{
	double *mx = st, *sum = st + R, *tgt = st + 2 * R;
	for (int r = 0; r < R; r++)
		mx[r] = part[3 * r];
	group_reduce(m, mx, (size_t)R, 1, 1);
	for (int r = 0; r < R; r++) {
		double own = part[3 * r];
		sum[r] = isinf(own) ? 0.0 : part[3 * r + 1] * exp(own - mx[r]);
		tgt[r] = part[3 * r + 2];
	}
	group_reduce(m, sum, 2 * (size_t)R, 1, 0);
	for (int r = 0; r < R; r++) {
		double lse = mx[r] + log(sum[r]);
		st[r] = lse;
		st[R + r] = m->tp_targets[r0 + r] < 0 ? 0.0 : lse - tgt[r];
	}
}

void lt_tp_xent(lt_model *m, lt_ref losses, lt_ref logits, lt_ref targets, int r0, int R,
		float grad_scale)
{
	lt_backend *be = m->be;
	int V = m->cfg.vocab_size;
	float *part = m->tp_host;  /* [R, 3], then lse and losses [R] each */
	if (m->pause_st != LT_OK)
		return;
	be->ops->xent_part(be, (lt_ref){ m->tp_part, 0 }, logits, targets, R, V, m->v_valid, m->v0);
	be->ops->read(be, part, (lt_ref){ m->tp_part, 0 }, 3 * (size_t)R);
	enum lt_status st = be->ops->sync(be);
	if (st != LT_OK) {
		m->pause_st = st;
		return;
	}
	combine_rows(m, part, r0, R, m->tp_stats);
	if (m->pause_st != LT_OK)
		return;
	float *lse = part, *loss = part + R;
	for (int r = 0; r < R; r++) {
		lse[r] = (float)m->tp_stats[r];
		loss[r] = (float)m->tp_stats[R + r];
	}
	be->ops->write(be, losses, loss, (size_t)R);
	if (grad_scale == 0.0f)
		return;
	be->ops->write(be, (lt_ref){ m->tp_part, 0 }, lse, (size_t)R);
	be->ops->xent_part_grad(be, logits, (lt_ref){ m->tp_part, 0 }, targets, R, V, m->v_valid,
				m->v0, grad_scale);
}
