/* Split models in the trainer (tensor parallelism and pipeline stages):
 * their checkpoints, and the whole model's gradient norm. */
#include "config.h"
#include "train/tp_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"

/* ------------------------------------------------------------ the save */

/* A save's gathers: tensor i of the parameters (k = 0) or of a moment
 * (k = 1, 2), numbered s = k * n + i, each collected whole on job rank 0
 * in that order. */
struct gather {
	const struct lt_tp_run *r;
	int tp, dp, size, n;
	size_t *counts;        /* [size]: what each job rank sends */
	float *mine, *all;     /* this rank's piece; on rank 0 every rank's */
	float *part, *whole;   /* on rank 0: one rank's part, the whole tensor */
	int got_k, got_i;      /* with stages, on job rank 0: the whole tensor received */
	int done;              /* gathers done: s < done */
	enum lt_status st;     /* the first failure */
};

/* Whether job ranks hold k (0: the parameters, else a moment) in ZeRO's
 * ranges rather than whole on each data-parallel rank. */
static int ranged(const struct gather *g, int k)
{
	return k == 0 ? g->r->stage == 3 : g->dp > 1 && g->r->stage > 0;
}

/* [*lo, *hi) of tensor i's part (of pn elements at po) that job rank q
 * holds of k: what every data-parallel rank holds whole on the first of
 * them, ZeRO's ranges on theirs (the moments from stage 1, the
 * parameters at stage 3, where AdamW updates them: nothing is gathered
 * whole for a save). */
static void held(const struct gather *g, int k, int q, size_t po, size_t pn, size_t *lo,
		 size_t *hi)
{
	int d = q / g->tp;
	*lo = *hi = 0;
	if (!ranged(g, k)) {
		*hi = d == 0 ? pn : 0;
		return;
	}
	size_t a = g->r->ranges[d] > po ? g->r->ranges[d] : po;
	size_t b = g->r->ranges[d + 1] < po + pn ? g->r->ranges[d + 1] : po + pn;
	if (a < b) {
		*lo = a - po;
		*hi = b - po;
	}
}

/* Rank 0: every rank's pieces of gathered tensor i into its parts, and the
 * parts into the whole tensor. */
static void assemble(struct gather *g, int k, int i, size_t po, size_t pn)
{
	size_t at = 0, lo, hi;
	for (int q = 0; q < g->size; q++)
		at += g->counts[q];
	for (int t = 0; t < g->tp; t++) {
		at = 0;
		for (int q = 0; q < g->size; q++) {
			held(g, k, q, po, pn, &lo, &hi);
			if (q % g->tp == t)
				memcpy(g->part + lo, g->all + at, (hi - lo) * sizeof *g->part);
			at += g->counts[q];
		}
		lt_model_tp_copy(g->r->model, i, t, g->whole, g->part, 1);
	}
}

/* Gather s: this rank's piece of it sent, and on rank 0 the whole tensor. */
static enum lt_status gather_one(struct gather *g, int s)
{
	const struct lt_tp_run *r = g->r;
	lt_backend *be = lt_model_backend(r->model);
	int k = s / g->n, i = s % g->n, me = lt_dist_rank(r->job);
	const struct lt_tensor *t = lt_model_tensor(r->model, i);
	size_t lo, hi, ob = lt_optim_begin(r->opt);
	for (int q = 0; q < g->size; q++) {
		held(g, k, q, t->off, t->numel, &lo, &hi);
		g->counts[q] = hi - lo;
	}
	held(g, k, me, t->off, t->numel, &lo, &hi);
	if (hi > lo) {
		lt_ref src = k == 0 && ranged(g, 0) ? lt_optim_param(r->opt, t->off + lo)
			   : k == 0 ? lt_ref_at(lt_model_params(r->model), t->off + lo)
			   : lt_ref_at(k == 1 ? lt_optim_m(r->opt) : lt_optim_v(r->opt),
				       t->off + lo - ob);
		be->ops->read(be, g->mine, src, hi - lo);
	}
	enum lt_status st = be->ops->sync(be);
	if (st == LT_OK)
		st = lt_dist_gatherv_f32(r->job, g->mine, g->counts, g->all, 0,
					 "the checkpoint's gather");
	if (st == LT_OK && me == 0)
		assemble(g, k, i, t->off, t->numel);
	return st;
}

/* Runs the gathers up to and including s (each once, in order). */
static enum lt_status gather_to(struct gather *g, int s)
{
	while (g->done <= s && g->st == LT_OK)
		g->st = gather_one(g, g->done++);
	return g->st;
}

static enum lt_status fetch(void *ctx, int k, int i, uint64_t off, void *buf, size_t len)
{
	struct gather *g = ctx;
	enum lt_status st = gather_to(g, k * g->n + i);
	if (st == LT_OK)
		memcpy(buf, (char *)g->whole + off, len);
	return st;
}

static enum lt_status gather_new(const struct lt_tp_run *r, struct gather *g)
{
	const lt_model *whole = r->pp ? lt_model_stage_whole(r->model) : lt_model_tp_whole(r->model);
	size_t most = 0, most_whole = 0;
	*g = (struct gather){ .r = r, .tp = lt_model_tp_size(r->model),
			      .size = lt_dist_size(r->job), .n = lt_model_num_tensors(r->model),
			      .got_i = -1 };
	g->dp = g->size / g->tp;
	for (int i = 0; i < g->n; i++)
		if (lt_model_tensor(r->model, i)->numel > most)
			most = lt_model_tensor(r->model, i)->numel;
	for (int i = 0; i < lt_model_num_tensors(whole); i++)
		if (lt_model_tensor(whole, i)->numel > most_whole)
			most_whole = lt_model_tensor(whole, i)->numel;
	int lead = lt_dist_rank(r->job) == 0;
	g->counts = malloc((size_t)g->size * sizeof *g->counts);
	g->mine = malloc(most * sizeof *g->mine);
	if (lead) {
		g->all = malloc(most * (size_t)g->size * sizeof *g->all);
		g->part = malloc(most * sizeof *g->part);
		g->whole = malloc(most_whole * sizeof *g->whole);
	}
	if (!g->counts || !g->mine || (lead && (!g->all || !g->part || !g->whole))) {
		lt_errmsg_set("cannot allocate the checkpoint's gather buffers (%zu bytes)",
			      (most * (size_t)(g->size + 2) + most_whole) * sizeof(float));
		return LT_ERR_NOMEM;
	}
	return LT_OK;
}

static void gather_free(struct gather *g)
{
	free(g->counts);
	free(g->mine);
	free(g->all);
	free(g->part);
	free(g->whole);
}

/* ------------------------------------------------- the save of stages */

/* The stage that holds whole tensor i: the embedding's the first, the
 * final norm's and the head's the last, a block's its stage. */
static int stage_of(const struct lt_tp_run *r, int i)
{
	const char *name = lt_model_tensor(lt_model_stage_whole(r->model), i)->name;
	int layer, stages = lt_dist_size(r->pp);
	if (sscanf(name, "model.layers.%d.", &layer) == 1) {
		int s = 0;
		while (s + 1 < stages && r->stage_start[s + 1] <= layer)
			s++;
		return s;
	}
	return strcmp(name, "model.embed_tokens.weight") == 0 ? 0 : stages - 1;
}

/* This stage's index of whole tensor i, or -1. */
static int local_index(const lt_model *m, int i)
{
	const struct lt_tensor *t = lt_model_find(m, lt_model_tensor(lt_model_stage_whole(m), i)->name);
	return t ? (int)(t - lt_model_tensor(m, 0)) : -1;
}

/* Job rank 0: whole tensor i of k, gathered in its own stage or received
 * from the first rank of the stage that holds it. */
static enum lt_status fetch_stage(void *ctx, int k, int i, uint64_t off, void *buf, size_t len)
{
	struct gather *g = ctx;
	int s = stage_of(g->r, i), mine = local_index(g->r->model, i), msg;
	enum lt_status st = LT_OK;
	if (s == 0)
		st = gather_to(g, k * g->n + mine);
	else if (g->got_k != k || g->got_i != i) {
		size_t n = lt_model_tensor(lt_model_stage_whole(g->r->model), i)->numel;
		if ((st = lt_dist_recv_start(g->r->pp, g->whole, n, s, "the checkpoint's tensors",
					     &msg)) == LT_OK)
			st = lt_dist_msg_wait(g->r->pp, msg);
		g->got_k = k;
		g->got_i = i;
	}
	if (st == LT_OK)
		memcpy(buf, (char *)g->whole + off, len);
	return st;
}

/* A later stage: every gather of its tensors, in order, each passed on by
 * the stage's first rank to job rank 0. */
static enum lt_status pass_on(struct gather *g)
{
	enum lt_status st = LT_OK;
	for (int s = 0; s < 3 * g->n && st == LT_OK; s++) {
		int msg;
		if ((st = gather_to(g, s)) != LT_OK || lt_dist_rank(g->r->job) != 0)
			continue;
		size_t n = lt_model_tensor(lt_model_tp_whole(g->r->model), s % g->n)->numel;
		if ((st = lt_dist_send_start(g->r->pp, g->whole, n, 0, "the checkpoint's tensors",
					     &msg)) == LT_OK)
			st = lt_dist_msg_wait(g->r->pp, msg);
	}
	return st;
}

/* The save of stages: job rank 0 writes, each stage gathers. */
static enum lt_status save_stages(const struct lt_tp_run *r, struct gather *g, const char *tmp)
{
	enum lt_status st = LT_OK;
	if (lt_dist_rank(r->pp) > 0)
		return pass_on(g);
	if (lt_dist_rank(r->job) == 0)
		st = lt_checkpoint_write_fetched(tmp, lt_model_stage_whole(r->model), fetch_stage, g);
	/* the stage's other ranks, or what rank 0 left: the stage's gathers */
	enum lt_status comm = st == LT_OK || g->st == LT_OK ? gather_to(g, 3 * g->n - 1) : LT_OK;
	return st != LT_OK ? st : comm;
}

enum lt_status lt_tp_save(const struct lt_tp_run *r, const char *tmp)
{
	struct gather g;
	enum lt_status st = gather_new(r, &g), comm = LT_OK;
	int last = 3 * g.n - 1;
	if (st == LT_OK && r->pp) {
		st = save_stages(r, &g, tmp);
		gather_free(&g);
		return st;
	}
	/* every rank takes part in every gather, whatever failed on rank 0 */
	if (st == LT_OK && lt_dist_rank(r->job) == 0)
		st = lt_checkpoint_write_fetched(tmp, lt_model_tp_whole(r->model), fetch, &g);
	if (st == LT_OK || g.st == LT_OK)
		comm = gather_to(&g, last);
	gather_free(&g);
	return st != LT_OK ? st : comm;
}

/* ------------------------------------------------------------ the load */

struct load {
	lt_model *m;
	lt_optim *o;
	float *part;
	int params;  /* the parameters too, not only the moments */
};

static enum lt_status put(void *ctx, int k, int i, const float *data)
{
	struct load *l = ctx;
	lt_backend *be = lt_model_backend(l->m);
	if (lt_model_stage_whole(l->m) != l->m && (i = local_index(l->m, i)) < 0)
		return LT_OK;  /* another stage's */
	if (k == 0 && !l->params)
		return LT_OK;
	const struct lt_tensor *t = lt_model_tensor(l->m, i);
	lt_model_tp_copy(l->m, i, lt_model_tp_rank(l->m), (float *)data, l->part, 0);
	if (k == 0) {
		lt_model_put_params(l->m, t->off, l->part, t->numel);
		return be->ops->sync(be);
	}
	size_t ob = lt_optim_begin(l->o), oe = lt_optim_end(l->o);
	size_t a = t->off > ob ? t->off : ob, b = t->off + t->numel < oe ? t->off + t->numel : oe;
	if (a >= b)
		return LT_OK;
	lt_ref dst = k == 1 ? lt_optim_m(l->o) : lt_optim_v(l->o);
	be->ops->write(be, lt_ref_at(dst, a - ob), l->part + (a - t->off), b - a);
	return be->ops->sync(be);
}

/* The parameters (params) and, with o, the moments. */
static enum lt_status load(const char *dir, lt_model *m, lt_optim *o, int params)
{
	size_t most = 0;
	for (int i = 0; i < lt_model_num_tensors(m); i++)
		if (lt_model_tensor(m, i)->numel > most)
			most = lt_model_tensor(m, i)->numel;
	struct load l = { m, o, malloc(most * sizeof(float)), params };
	if (!l.part) {
		lt_errmsg_set("%s: cannot allocate %zu bytes for a tensor's part", dir,
			      most * sizeof(float));
		return LT_ERR_NOMEM;
	}
	const lt_model *whole = lt_model_stage_whole(m) != m ? lt_model_stage_whole(m)
							      : lt_model_tp_whole(m);
	enum lt_status st = lt_checkpoint_load_whole(dir, whole, o != NULL, put, &l);
	free(l.part);
	return st;
}

enum lt_status lt_tp_load(const char *dir, lt_model *m, lt_optim *o)
{
	return load(dir, m, o, 1);
}

enum lt_status lt_tp_load_moments(const char *dir, lt_model *m, lt_optim *o)
{
	return load(dir, m, o, 0);
}

/* ------------------------------------------------------------ the norm */

/* The squares of the gradients of the tensors every rank of the group
 * holds: from the whole reduced gradient where every rank has it (stage
 * 0 and deterministic runs: in order, so the same for any data-parallel
 * split), else from this rank's range, summed over the data-parallel
 * group. */
static enum lt_status replicated_squares(const struct lt_tp_run *r, double *sq)
{
	lt_model *m = r->model;
	lt_backend *be = lt_model_backend(m);
	lt_dist *dp = lt_mesh_dp_group(r->mesh);
	int whole = r->deterministic || r->stage == 0;
	size_t ob = whole ? 0 : lt_optim_begin(r->opt), oe = whole ? SIZE_MAX : lt_optim_end(r->opt);
	enum lt_status st = LT_OK;
	/* the replicated tensors are the norms, dim values each */
	size_t cap = (size_t)lt_model_config_of(m)->dim;
	float *g = malloc(cap * sizeof *g);
	if (!g) {
		lt_errmsg_set("cannot allocate the norm's %zu gradients", cap);
		return LT_ERR_NOMEM;
	}
	*sq = 0;
	for (int i = 0; i < lt_model_num_tensors(m) && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		size_t a = t->off > ob ? t->off : ob;
		size_t b = t->off + t->numel < oe ? t->off + t->numel : oe;
		if (!lt_model_tp_replicated(m, i) || a >= b)
			continue;
		LT_ASSERT(b - a <= cap);
		/* deterministic runs keep no gradient slots: the buffer is flat */
		lt_ref src = r->deterministic ? lt_ref_at(lt_model_grads(m), a)
					      : lt_optim_grad(r->opt, a);
		be->ops->read(be, g, src, b - a);
		if ((st = be->ops->sync(be)) == LT_OK)
			for (size_t j = 0; j < b - a; j++)
				*sq += (double)g[j] * g[j];
	}
	free(g);
	if (st == LT_OK && !whole)
		st = lt_dist_allreduce(dp, sq, 1, LT_DIST_F64, LT_DIST_SUM,
				       "the replicated gradients' norm");
	return st;
}

enum lt_status lt_tp_norm(const struct lt_tp_run *r, double *norm)
{
	double rep = 0, sq = *norm * *norm;
	enum lt_status st = replicated_squares(r, &rep);
	if (st != LT_OK)
		return st;
	if (lt_model_tp_rank(r->model) > 0)  /* counted on the group's first rank */
		sq = sq - rep > 0 ? sq - rep : 0;
	return lt_mesh_norm(r->mesh, isfinite(sq) ? sq : INFINITY, norm);
}
