/* The trainer's pipeline stages: a stage's model, and --balance auto over
 * the stages, which moves blocks from a slower stage to a faster one. */
#include "config.h"
#include "train/trainer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/tp_train.h"

/* The stages' first blocks: as set by hand, or by cost. */
static enum lt_status plan_stages(lt_trainer *t)
{
	const struct lt_conf *c = &t->conf;
	int pp = c->dist.pp, *layers = malloc((size_t)pp * sizeof *layers);
	enum lt_status st = layers ? lt_conf_pp_layers(c, layers) : LT_ERR_NOMEM;
	if (!layers)
		lt_errmsg_set("cannot allocate the stages' table");
	if (st == LT_OK)
		st = lt_pipeline_starts(&c->model, c->train.seq, pp, layers, &t->stage_start);
	free(layers);
	if (st == LT_OK && !(t->stage_s = calloc(2 * (size_t)pp, sizeof *t->stage_s))) {
		lt_errmsg_set("cannot allocate the stages' times");
		st = LT_ERR_NOMEM;
	}
	return st;
}

enum lt_status lt_trainer_pp_model(lt_trainer *t)
{
	const struct lt_conf *c = &t->conf;
	enum lt_status st = t->stage_start ? LT_OK : plan_stages(t);
	if (st != LT_OK)
		return st;
	/* deterministic runs pass each sequence on its own */
	int s = lt_mesh_stage(t->mesh);
	int micro = c->train.grad_accum * (c->dist.deterministic ? lt_trainer_rows_in(t, t->rank, 0)
								 : 1);
	int ahead = lt_pipeline_in_flight(c->dist.pp, s, c->dist.pp_ahead);
	struct lt_stage stage = { t->stage_start[s], t->stage_start[s + 1] - t->stage_start[s] };
	struct lt_tp tp = lt_mesh_model_tp(t->mesh);
	if ((st = lt_model_new_stage_tp(t->be, &c->model, &stage, &tp, &t->model)) != LT_OK ||
	    (st = lt_model_set_precision(t->model, c->train.precision)) != LT_OK)
		return st;
	lt_model_set_recompute(t->model, c->train.recompute);
	return lt_model_set_act_sets(t->model, ahead < micro ? ahead : micro);
}

/* ------------------------------------------------------------ the move */

/* This rank's stage anew over the blocks of t->stage_start, its
 * parameters and moments read from checkpoint dir. */
static enum lt_status rebuild_stage(lt_trainer *t, const char *dir)
{
	const struct lt_conf *c = &t->conf;
	lt_pipeline_free(t->pipe);
	lt_zero_free(t->zero);
	lt_model_free(t->model);
	t->pipe = NULL;
	t->zero = NULL;
	t->opt = NULL;
	t->model = NULL;
	enum lt_status st = lt_trainer_pp_model(t);
	if (st == LT_OK)
		st = lt_zero_new(t->dist, t->model, c->dist.zero, c->dist.deterministic, 0,
				 (size_t)c->train.batch * (size_t)c->train.seq, &t->zero);
	if (st == LT_OK) {
		t->opt = lt_zero_optim(t->zero);
		st = lt_tp_load(dir, t->model, t->opt);
	}
	if (st == LT_OK)
		st = lt_zero_shard(t->zero);
	if (st == LT_OK && !t->opt) {  /* stage 3: the moments once sliced */
		t->opt = lt_zero_optim(t->zero);
		st = lt_tp_load_moments(dir, t->model, t->opt);
	}
	if (st == LT_OK)
		st = lt_model_plan(t->model, t->plan_rows, c->train.seq);
	if (st == LT_OK)
		st = lt_pipeline_new(lt_mesh_pp_group(t->mesh), t->model, t->zero, t->plan_rows,
				     c->train.seq, c->dist.deterministic, c->dist.pp_ahead, &t->pipe);
	return lt_trainer_agree(t, st, "moving blocks between the stages", 0);
}

/* ------------------------------------------------------ the comparison */

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Each stage's median seconds over the steps kept, into med[pp]. */
static void median_times(const lt_trainer *t, double *med)
{
	int pp = t->conf.dist.pp, n = t->hist_n;
	double *v = malloc((size_t)n * sizeof *v);
	LT_ASSERT(v);
	for (int s = 0; s < pp; s++) {
		for (int i = 0; i < n; i++)
			v[i] = t->stage_hist[(size_t)i * pp + s];
		qsort(v, (size_t)n, sizeof *v, by_value);
		med[s] = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	}
	free(v);
}

/* The line on a comparison: each stage's seconds and blocks, and what
 * follows from them. */
static void say_comparison(lt_trainer *t, const double *med, const int *better, double gain,
			   const char *what)
{
	int pp = t->conf.dist.pp;
	char line[2048];
	size_t at = (size_t)snprintf(line, sizeof line, "balance: stage seconds per step:");
	for (int s = 0; s < pp && at < sizeof line; s++)
		at += (size_t)snprintf(line + at, sizeof line - at, "%s stage %d %.4f (blocks %d-%d)",
				       s ? ";" : "", s, med[s], t->stage_start[s],
				       t->stage_start[s + 1] - 1);
	for (int s = 0; s < pp && at < sizeof line && better; s++)
		at += (size_t)snprintf(line + at, sizeof line - at, "%s%d-%d", s ? ", " : "; even "
				       "at blocks ", better[s], better[s + 1] - 1);
	if (at < sizeof line)
		snprintf(line + at, sizeof line - at, " (slowest stage %.0f%% of now): %s",
			 100 * gain, what);
	lt_metrics_say(t->metrics, "%s", line);
}

/* After a comparison: when to compare next. */
static void schedule_next(lt_trainer *t, long step, int moved)
{
	int every = t->conf.dist.balance_every;
	if (moved) {  /* the first step after a move warms up: not measured */
		t->next_compare = step + 3;
		t->second = 0;
	} else if (!t->second) {
		t->next_compare = step + 1;
		t->second = 1;
	} else {
		t->next_compare = every > 0 ? step + every : -1;
		t->second = 0;
	}
}

/* Keeps this step's stage times: each stage's slowest rank's. */
static enum lt_status keep_times(lt_trainer *t)
{
	int pp = t->conf.dist.pp;
	double *row;
	if (t->hist_n == LT_STAGE_HISTORY) {
		memmove(t->stage_hist, t->stage_hist + pp,
			(size_t)(LT_STAGE_HISTORY - 1) * pp * sizeof *t->stage_hist);
		t->hist_n--;
	}
	row = t->stage_hist + (size_t)t->hist_n++ * pp;
	memcpy(row, t->stage_s, (size_t)pp * sizeof *row);
	return lt_dist_allreduce(t->job, row, (size_t)pp, LT_DIST_F64, LT_DIST_MAX,
				 "the stages' times");
}

enum lt_status lt_trainer_pp_balance(lt_trainer *t, long step)
{
	const struct lt_conf *c = &t->conf;
	int pp = c->dist.pp;
	if (!t->stage_hist) {
		t->stage_hist = malloc((size_t)LT_STAGE_HISTORY * pp * sizeof *t->stage_hist);
		if (!t->stage_hist) {
			lt_errmsg_set("cannot allocate the stages' history");
			return LT_ERR_NOMEM;
		}
		t->next_compare = step + 2;  /* this first step warmed up */
		return LT_OK;
	}
	if (step == t->warm_step)  /* the first step after a move: not measured */
		return LT_OK;
	enum lt_status st = keep_times(t);
	if (st != LT_OK || step != t->next_compare)
		return st;
	double *med = malloc((size_t)pp * sizeof *med);
	int *better = malloc((size_t)(pp + 1) * sizeof *better), moved = 0;
	if (!med || !better) {
		free(med);
		free(better);
		lt_errmsg_set("cannot allocate the stages' comparison");
		return LT_ERR_NOMEM;
	}
	median_times(t, med);
	double gain = lt_pipeline_resplit(&c->model, c->train.seq, pp, t->stage_start, med, better);
	int same = memcmp(better, t->stage_start, (size_t)(pp + 1) * sizeof *better) == 0;
	/* a move needs a shorter step, promised by two comparisons in a row
	 * (the second's split is taken) */
	int promising = !same && gain < 0.95;
	int lasting = promising && t->have_pending;
	say_comparison(t, med, same ? NULL : better, gain,
		       lasting ? "moving the blocks" : promising ? "to be confirmed"
		       : "the stages stay");
	t->have_pending = promising && !lasting;
	if (lasting) {
		char dir[LT_RUN_PATH_CAP];
		if ((st = lt_trainer_save(t, dir)) == LT_OK) {
			memcpy(t->stage_start, better, (size_t)(pp + 1) * sizeof *better);
			st = rebuild_stage(t, dir);
		}
		if (st == LT_OK)
			lt_pipeline_say(t->metrics, t->stage_start, pp, c->train.grad_accum);
		t->hist_n = 0;
		t->warm_step = step + 1;
		moved = 1;
	}
	schedule_next(t, step, moved);
	free(med);
	free(better);
	return st;
}
