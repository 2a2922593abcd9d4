/* Structured pruning (see prune.h): importance from a forward pass's
 * activations, the choice of what to keep, and the copy of the kept rows
 * and columns into a smaller model. */
#include "config.h"
#include "prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

enum lt_status lt_prune_scores_new(const struct lt_model_config *c, struct lt_prune_scores *s)
{
	memset(s, 0, sizeof *s);
	s->n_layers = c->n_layers;
	s->n_heads = c->n_heads;
	s->n_kv_heads = c->n_kv_heads;
	s->ffn_dim = c->ffn_dim;
	s->head = calloc((size_t)c->n_layers * c->n_heads, sizeof *s->head);
	s->channel = calloc((size_t)c->n_layers * c->ffn_dim, sizeof *s->channel);
	s->block = calloc((size_t)c->n_layers, sizeof *s->block);
	if (!s->head || !s->channel || !s->block) {
		lt_prune_scores_free(s);
		lt_errmsg_set("cannot allocate the importance of %d blocks", c->n_layers);
		return LT_ERR_NOMEM;
	}
	return LT_OK;
}

void lt_prune_scores_free(struct lt_prune_scores *s)
{
	free(s->head);
	free(s->channel);
	free(s->block);
	memset(s, 0, sizeof *s);
}

double lt_prune_group_score(const struct lt_prune_scores *s, int l, int kv)
{
	int G = s->n_heads / s->n_kv_heads;
	double sum = 0;
	for (int h = kv * G; h < (kv + 1) * G; h++)
		sum += s->head[(size_t)l * s->n_heads + h];
	return sum;
}

/* ------------------------------------------------------------ measuring */

/* The host copies of one block's activations for N rows, and of the two
 * projections that write into the residual stream. */
struct block_acts {
	float *att;   /* [N, HD] */
	float *g;     /* [N, F] */
	float *x;     /* [N, C] the block's input */
	float *y;     /* [N, C] its output */
	float *wo;    /* [C, HD] */
	float *wd;    /* [C, F] */
	double *col;  /* [F] the norms of wd's columns */
};

/* Head h's write into the residual stream for each row, att_h wo_h^T
 * (C values), by its norm. */
static void add_heads(struct lt_prune_scores *s, int l, const struct block_acts *b,
		      const int32_t *tgt, int N, int C, int D)
{
	int H = s->n_heads, HD = H * D;
	for (int n = 0; n < N; n++) {
		if (tgt && tgt[n] < 0)
			continue;
		for (int h = 0; h < H; h++) {
			const float *v = b->att + (size_t)n * HD + (size_t)h * D;
			double sq = 0;
			for (int c = 0; c < C; c++) {
				const float *w = b->wo + (size_t)c * HD + (size_t)h * D;
				double y = 0;
				for (int d = 0; d < D; d++)
					y += (double)v[d] * w[d];
				sq += y * y;
			}
			s->head[(size_t)l * H + h] += sqrt(sq);
		}
	}
}

/* Channel i's write, g_i times down's column i: its norm is |g_i| |col_i|. */
static void add_channels(struct lt_prune_scores *s, int l, const struct block_acts *b,
			 const int32_t *tgt, int N, int C)
{
	int F = s->ffn_dim;
	for (int i = 0; i < F; i++) {
		double sq = 0;
		for (int c = 0; c < C; c++)
			sq += (double)b->wd[(size_t)c * F + i] * b->wd[(size_t)c * F + i];
		b->col[i] = sqrt(sq);
	}
	for (int n = 0; n < N; n++) {
		if (tgt && tgt[n] < 0)
			continue;
		for (int i = 0; i < F; i++)
			s->channel[(size_t)l * F + i] += fabs((double)b->g[(size_t)n * F + i]) * b->col[i];
	}
}

/* 1 - cos(x, y) of each row, summed. */
static void add_block(struct lt_prune_scores *s, int l, const float *x, const float *y,
		      const int32_t *tgt, int N, int C)
{
	for (int n = 0; n < N; n++) {
		if (tgt && tgt[n] < 0)
			continue;
		double xy = 0, xx = 0, yy = 0;
		for (int i = 0; i < C; i++) {
			double a = x[(size_t)n * C + i], b = y[(size_t)n * C + i];
			xy += a * b;
			xx += a * a;
			yy += b * b;
		}
		s->block[l] += xx > 0 && yy > 0 ? 1.0 - xy / sqrt(xx * yy) : 0.0;
	}
}

static void free_block_acts(struct block_acts *b)
{
	free(b->att);
	free(b->g);
	free(b->x);
	free(b->y);
	free(b->wo);
	free(b->wd);
	free(b->col);
}

/* Weight `what` of block l into out (its f32 values, wherever m holds it). */
static enum lt_status read_block_weight(lt_model *m, int l, const char *what, float *out)
{
	char name[96];
	snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, what);
	const struct lt_tensor *t = lt_model_find_weight(m, name);
	if (!t) {
		lt_errmsg_set("tensor '%s': missing from the model", name);
		return LT_ERR_FORMAT;
	}
	read_floats(m->be, out, m->base ? lt_model_frozen_ref(m, t) : lt_ref_at(lt_model_params(m), t->off),
		    t->numel);
	return LT_OK;
}

enum lt_status lt_prune_measure(lt_model *m, const int32_t *targets, struct lt_prune_scores *s)
{
	const struct lt_model_config *c = &m->cfg;
	int N = m->B * m->T, C = c->dim, F = c->ffn_dim, D = head_dim(c), HD = attn_width(c);
	if (m->recompute != LT_RECOMPUTE_NONE || !m->la) {
		lt_errmsg_set("measuring importance needs a planned model that keeps every "
			      "block's activations (train.recompute = none)");
		return LT_ERR_ARG;
	}
	if (s->n_layers != c->n_layers || s->n_heads != c->n_heads || s->ffn_dim != F) {
		lt_errmsg_set("importance of another model's shape");
		return LT_ERR_ARG;
	}
	struct block_acts b = { malloc((size_t)N * HD * sizeof(float)),
				malloc((size_t)N * F * sizeof(float)),
				malloc((size_t)N * C * sizeof(float)),
				malloc((size_t)N * C * sizeof(float)),
				malloc((size_t)C * HD * sizeof(float)),
				malloc((size_t)C * F * sizeof(float)),
				malloc((size_t)F * sizeof(double)) };
	enum lt_status st = b.att && b.g && b.x && b.y && b.wo && b.wd && b.col ? LT_OK : LT_ERR_NOMEM;
	if (st != LT_OK)
		lt_errmsg_set("cannot allocate one block's activations of %d rows", N);
	for (int l = 0; l < c->n_layers && st == LT_OK; l++) {
		const struct layer_acts *a = &m->la[l];
		size_t next = l + 1 < c->n_layers ? m->la[l + 1].x : m->x_final;
		read_floats(m->be, b.att, A(m, a->att), (size_t)N * HD);
		read_floats(m->be, b.g, A(m, a->g), (size_t)N * F);
		read_floats(m->be, b.x, A(m, a->x), (size_t)N * C);
		read_floats(m->be, b.y, A(m, next), (size_t)N * C);
		if ((st = read_block_weight(m, l, "self_attn.o_proj", b.wo)) != LT_OK ||
		    (st = read_block_weight(m, l, "mlp.down_proj", b.wd)) != LT_OK ||
		    (st = m->be->ops->sync(m->be)) != LT_OK)
			break;
		add_heads(s, l, &b, targets, N, C, D);
		add_channels(s, l, &b, targets, N, C);
		add_block(s, l, b.x, b.y, targets, N, C);
	}
	for (int n = 0; n < N && st == LT_OK; n++)
		s->tokens += !targets || targets[n] >= 0;
	free_block_acts(&b);
	return st;
}

/* ------------------------------------------------------------- choosing */

/* round(f * n), halves up, within [1, n]. */
static int kept_count(double f, int n)
{
	int k = (int)floor(f * n + 0.5);
	return k < 1 ? 1 : k > n ? n : k;
}

static int fraction_ok(double f, const char *what)
{
	if (f > 0.0 && f <= 1.0)
		return 1;
	lt_errmsg_set("%s = %g: expected a fraction in (0, 1]", what, f);
	return 0;
}

enum lt_status lt_prune_shape(const struct lt_model_config *c, const struct lt_prune_keep *k,
			      struct lt_model_config *out)
{
	if (!fraction_ok(k->heads, "heads-keep") || !fraction_ok(k->ffn, "ffn-keep") ||
	    !fraction_ok(k->layers, "layers-keep"))
		return LT_ERR_ARG;
	int G = c->n_heads / c->n_kv_heads, D = lt_model_config_head_dim(c);
	*out = *c;
	out->n_layers = kept_count(k->layers, c->n_layers);
	out->n_kv_heads = kept_count(k->heads, c->n_kv_heads);
	out->n_heads = out->n_kv_heads * G;
	out->ffn_dim = kept_count(k->ffn, c->ffn_dim);
	out->head_dim = c->dim % out->n_heads == 0 && c->dim / out->n_heads == D ? 0 : D;
	return lt_model_config_check(out);
}

struct ranked {
	double score;
	int index;
};

/* Highest score first; equal scores by index. */
static int by_score(const void *x, const void *y)
{
	const struct ranked *a = x, *b = y;
	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	return a->index - b->index;
}

static int ascending(const void *x, const void *y)
{
	return *(const int *)x - *(const int *)y;
}

/* The k best of n scores (score(ctx, i)), ascending by index, into out[k]. */
static enum lt_status keep_best(int n, int k, double (*score)(const void *, int), const void *ctx,
				int *out)
{
	struct ranked *r = malloc((size_t)n * sizeof *r);
	if (!r) {
		lt_errmsg_set("cannot allocate a ranking of %d", n);
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < n; i++)
		r[i] = (struct ranked){ score(ctx, i), i };
	qsort(r, (size_t)n, sizeof *r, by_score);
	for (int i = 0; i < k; i++)
		out[i] = r[i].index;
	qsort(out, (size_t)k, sizeof *out, ascending);
	free(r);
	return LT_OK;
}

/* What keep_best ranks: one block's groups or channels, or the blocks. */
struct rank_ctx {
	const struct lt_prune_scores *s;
	int layer;
};

static double block_score(const void *ctx, int i)
{
	return ((const struct rank_ctx *)ctx)->s->block[i];
}

static double group_score(const void *ctx, int i)
{
	const struct rank_ctx *r = ctx;
	return lt_prune_group_score(r->s, r->layer, i);
}

static double channel_score(const void *ctx, int i)
{
	const struct rank_ctx *r = ctx;
	return r->s->channel[(size_t)r->layer * r->s->ffn_dim + i];
}

enum lt_status lt_prune_plan_new(const struct lt_model_config *c, const struct lt_prune_scores *s,
				 const struct lt_prune_keep *keep, struct lt_prune_plan *plan)
{
	memset(plan, 0, sizeof *plan);
	enum lt_status st = lt_prune_shape(c, keep, &plan->shape);
	if (st != LT_OK)
		return st;
	const struct lt_model_config *p = &plan->shape;
	plan->layers = malloc((size_t)p->n_layers * sizeof *plan->layers);
	plan->groups = malloc((size_t)p->n_layers * p->n_kv_heads * sizeof *plan->groups);
	plan->channels = malloc((size_t)p->n_layers * p->ffn_dim * sizeof *plan->channels);
	if (!plan->layers || !plan->groups || !plan->channels) {
		lt_prune_plan_free(plan);
		lt_errmsg_set("cannot allocate the pruning plan");
		return LT_ERR_NOMEM;
	}
	struct rank_ctx r = { s, 0 };
	st = keep_best(c->n_layers, p->n_layers, block_score, &r, plan->layers);
	for (int j = 0; j < p->n_layers && st == LT_OK; j++) {
		r.layer = plan->layers[j];
		st = keep_best(c->n_kv_heads, p->n_kv_heads, group_score, &r,
			       plan->groups + (size_t)j * p->n_kv_heads);
		if (st == LT_OK)
			st = keep_best(c->ffn_dim, p->ffn_dim, channel_score, &r,
				       plan->channels + (size_t)j * p->ffn_dim);
	}
	if (st != LT_OK)
		lt_prune_plan_free(plan);
	return st;
}

void lt_prune_plan_free(struct lt_prune_plan *plan)
{
	free(plan->layers);
	free(plan->groups);
	free(plan->channels);
	plan->layers = plan->groups = plan->channels = NULL;
}

/* -------------------------------------------------------------- copying */

/* The weights of one tensor of each model on the host. */
struct pair {
	const struct lt_tensor *from, *to;
	float *src, *dst;
};

/* Reads m's weight `from` into a new host buffer, finds p's `to`. */
static enum lt_status open_pair(lt_model *m, lt_model *p, const char *from, const char *to,
				struct pair *w)
{
	memset(w, 0, sizeof *w);
	w->from = lt_model_find_weight(m, from);
	w->to = lt_model_find_weight(p, to);
	if (!w->from || !w->to) {
		lt_errmsg_set("tensor '%s': missing from the %s model", w->from ? to : from,
			      w->from ? "pruned" : "original");
		return LT_ERR_FORMAT;
	}
	w->src = malloc(w->from->numel * sizeof *w->src);
	w->dst = malloc(w->to->numel * sizeof *w->dst);
	if (!w->src || !w->dst) {
		lt_errmsg_set("cannot allocate tensor '%s'", from);
		return LT_ERR_NOMEM;
	}
	lt_ref at = m->base ? lt_model_frozen_ref(m, w->from) : lt_ref_at(lt_model_params(m), w->from->off);
	read_floats(m->be, w->src, at, w->from->numel);
	return m->be->ops->sync(m->be);
}

/* Writes the pair's destination into p and frees both buffers. */
static enum lt_status close_pair(lt_model *p, struct pair *w, enum lt_status st)
{
	if (st == LT_OK)
		st = lt_model_write_weight(p, w->to, w->dst);
	free(w->src);
	free(w->dst);
	return st;
}

/* dst = the rows `rows[n]` of src, each `width` wide, in blocks of `span`
 * rows (a head's D rows, or 1). */
static void take_rows(float *dst, const float *src, const int *rows, int n, int span, int width)
{
	for (int i = 0; i < n; i++)
		memcpy(dst + (size_t)i * span * width, src + (size_t)rows[i] * span * width,
		       (size_t)span * width * sizeof *dst);
}

/* dst[r] = the columns cols[n] (blocks of span) of src's rows of width w. */
static void take_cols(float *dst, const float *src, int rows, int w, const int *cols, int n,
		      int span)
{
	for (int r = 0; r < rows; r++)
		for (int i = 0; i < n; i++)
			memcpy(dst + ((size_t)r * n + i) * span, src + (size_t)r * w + (size_t)cols[i] * span,
			       (size_t)span * sizeof *dst);
}

/* The query heads of the kept groups, ascending. */
static void query_heads(const int *groups, int ng, int G, int *heads)
{
	for (int i = 0; i < ng; i++)
		for (int g = 0; g < G; g++)
			heads[i * G + g] = groups[i] * G + g;
}

/* One tensor of a kept block: which of its rows or columns it keeps. */
static enum lt_status copy_block_tensor(lt_model *m, lt_model *p, int from, int to, const char *what,
					const int *pick, int n, int span, int by_cols)
{
	char src[96], dst[96];
	struct pair w;
	snprintf(src, sizeof src, "model.layers.%d.%s.weight", from, what);
	snprintf(dst, sizeof dst, "model.layers.%d.%s.weight", to, what);
	enum lt_status st = open_pair(m, p, src, dst, &w);
	if (st == LT_OK && !pick)
		memcpy(w.dst, w.src, w.to->numel * sizeof *w.dst);
	else if (st == LT_OK && by_cols)
		take_cols(w.dst, w.src, w.from->shape[0], w.from->shape[1], pick, n, span);
	else if (st == LT_OK)
		take_rows(w.dst, w.src, pick, n, span, w.from->shape[1]);
	return close_pair(p, &w, st);
}

static enum lt_status copy_block(lt_model *m, lt_model *p, const struct lt_prune_plan *plan, int j)
{
	const struct lt_model_config *c = &m->cfg, *s = &plan->shape;
	int G = c->n_heads / c->n_kv_heads, D = head_dim(c), l = plan->layers[j];
	const int *groups = plan->groups + (size_t)j * s->n_kv_heads;
	const int *channels = plan->channels + (size_t)j * s->ffn_dim;
	int *heads = malloc((size_t)s->n_heads * sizeof *heads);
	if (!heads) {
		lt_errmsg_set("cannot allocate the kept heads");
		return LT_ERR_NOMEM;
	}
	query_heads(groups, s->n_kv_heads, G, heads);
	enum lt_status st = copy_block_tensor(m, p, l, j, "input_layernorm", NULL, 0, 0, 0);
	if (st == LT_OK)
		st = copy_block_tensor(m, p, l, j, "self_attn.q_proj", heads, s->n_heads, D, 0);
	if (st == LT_OK)
		st = copy_block_tensor(m, p, l, j, "self_attn.k_proj", groups, s->n_kv_heads, D, 0);
	if (st == LT_OK)
		st = copy_block_tensor(m, p, l, j, "self_attn.v_proj", groups, s->n_kv_heads, D, 0);
	if (st == LT_OK)
		st = copy_block_tensor(m, p, l, j, "self_attn.o_proj", heads, s->n_heads, D, 1);
	if (st == LT_OK)
		st = copy_block_tensor(m, p, l, j, "post_attention_layernorm", NULL, 0, 0, 0);
	if (st == LT_OK)
		st = copy_block_tensor(m, p, l, j, "mlp.gate_proj", channels, s->ffn_dim, 1, 0);
	if (st == LT_OK)
		st = copy_block_tensor(m, p, l, j, "mlp.up_proj", channels, s->ffn_dim, 1, 0);
	if (st == LT_OK)
		st = copy_block_tensor(m, p, l, j, "mlp.down_proj", channels, s->ffn_dim, 1, 1);
	free(heads);
	return st;
}

static enum lt_status copy_whole(lt_model *m, lt_model *p, const char *name)
{
	struct pair w;
	enum lt_status st = open_pair(m, p, name, name, &w);
	if (st == LT_OK && w.from->numel != w.to->numel) {
		lt_errmsg_set("tensor '%s': %zu values, the pruned model's has %zu", name,
			      w.from->numel, w.to->numel);
		st = LT_ERR_FORMAT;
	}
	if (st == LT_OK)
		memcpy(w.dst, w.src, w.to->numel * sizeof *w.dst);
	return close_pair(p, &w, st);
}

enum lt_status lt_prune_copy(lt_model *m, const struct lt_prune_plan *plan, lt_model *p)
{
	const struct lt_model_config *s = lt_model_config_of(p);
	if (s->n_layers != plan->shape.n_layers || s->n_heads != plan->shape.n_heads ||
	    s->ffn_dim != plan->shape.ffn_dim || p->base) {
		lt_errmsg_set("the pruned model is not a plain model of the plan's shape");
		return LT_ERR_ARG;
	}
	enum lt_status st = copy_whole(m, p, "model.embed_tokens.weight");
	for (int j = 0; j < s->n_layers && st == LT_OK; j++)
		st = copy_block(m, p, plan, j);
	if (st == LT_OK)
		st = copy_whole(m, p, "model.norm.weight");
	if (st == LT_OK && !s->tied)
		st = copy_whole(m, p, "lm_head.weight");
	return st;
}
