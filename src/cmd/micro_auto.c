/* train.micro_batch for train and tune-lr: a given size re-splits the
 * step; auto takes the largest micro-batch whose estimated memory fits
 * every rank (run.mem_limit or what its device has free, with a margin),
 * then checks it by a trial step of a throwaway trainer, stepping down
 * while the trial runs out of memory or fills more than the rank has. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "conf.h"
#include "dist/agree.h"
#include "dist/dist.h"
#include "dist/probe.h"
#include "train/micro.h"
#include "train/trainer.h"

#define GIB 1073741824.0
#define MIB 1048576.0
/* The share of a rank's memory the estimate leaves free, as the planner's. */
#define MICRO_MARGIN 0.1
/* Trials before the choice gives up. */
#define MICRO_TRIALS 4

/* This rank's room, bytes: run.mem_limit, else what its device has free,
 * a CPU's host memory shared by the node's ranks; *threads its backend's
 * threads, for the estimate's workspace. */
static enum lt_status rank_room(lt_dist *d, const struct lt_conf *c, double *have, int *threads)
{
	lt_backend *be;
	struct lt_device_info dev;
	enum lt_status st = lt_backend_new(c->run.device, c->run.threads, &be);
	if (st != LT_OK)
		return st;
	be->ops->info(be, &dev);
	*threads = dev.gpu || dev.compute_units < 1 ? 1 : dev.compute_units;
	*have = lt_probe_free_memory(be);
	if (!dev.gpu && lt_dist_local_size(d) > 1)
		*have /= lt_dist_local_size(d);
	if (c->run.mem_limit > 0)
		*have = fmin(*have, c->run.mem_limit * GIB);
	lt_backend_free(be);
	return LT_OK;
}

/* The trial's watch of its one step: the rank's peak memory. */
static int trial_seen(void *ctx, int i, const struct lt_step_metrics *sm)
{
	(void)i;
	*(double *)ctx = (double)sm->mem_peak_bytes;
	return 1;
}

static double trial_lr(void *ctx, int i)
{
	(void)ctx;
	(void)i;
	return 0;
}

/* One step of a fresh, throwaway run of c (nothing written to the run
 * directory; the data prepared where there are none) on every rank: *peak
 * gets this rank's peak bytes, *short_of_memory whether some rank ran out
 * of memory (the trial's failure then not returned). *t holds the trainer
 * of a failure that is returned. */
static enum lt_status trial_step(lt_dist *d, const struct lt_conf *c, struct lt_trainer_start *s,
				 lt_trainer **t, double *peak, int *short_of_memory)
{
	struct lt_ckpt_state fresh = { 0 };
	struct lt_trainer_probe probe = { .steps = 1, .lr_at = trial_lr, .seen = trial_seen,
					  .ctx = peak, .quiet = 1 };
	struct lt_trainer_start ts = *s;
	struct lt_conf tc = *c;
	double out = 0;
	*peak = 0;
	*short_of_memory = 0;
	ts.checkpoint = NULL;
	ts.state = &fresh;
	ts.skipped = NULL;
	ts.probe = &probe;
	ts.open_backend = NULL;  /* the run says which device auto chose, once */
	tc.train.max_minutes = 0;
	if (s->checkpoint)  /* a resumed run's data are there; its weights need not be read */
		tc.train.init[0] = '\0';
	enum lt_status st = lt_cmd_trainer_run(d, &tc, &ts, t);
	free(fresh.config);
	if (st == LT_OK || !lt_trainer_failed_together(*t))
		goto done;
	out = st == LT_ERR_NOMEM || st == LT_ERR_DEVMEM;
	if (lt_dist_allreduce(d, &out, 1, LT_DIST_F64, LT_DIST_MAX, "the trial's memory") != LT_OK)
		return st;
	if (out > 0) {
		*short_of_memory = 1;
		st = LT_OK;
	}
done:
	if (st == LT_OK) {
		lt_trainer_free(*t);
		*t = NULL;
		s->corpus = NULL;  /* the trial prepared the data */
		s->n_corpus = 0;
	}
	return st;
}

/* The fullest rank's estimate, trial peak and room, by peak over room. */
static enum lt_status fullest(lt_dist *d, const double mine[3], double out[3])
{
	int n = lt_dist_size(d);
	double *all = malloc((size_t)n * 3 * sizeof *all);
	enum lt_status st = all ? lt_dist_allgather(d, mine, all, 3 * sizeof *all, "the trial's "
						    "memory") : LT_ERR_NOMEM;
	memcpy(out, mine, 3 * sizeof *out);
	for (int r = 0; st == LT_OK && r < n; r++)
		if (all[3 * r + 1] / all[3 * r + 2] > out[1] / out[2])
			memcpy(out, all + 3 * r, 3 * sizeof *out);
	free(all);
	return st;
}

/* The smallest over the ranks of this rank's m (0 counts as none). */
static enum lt_status least(lt_dist *d, int *m)
{
	double v = -(double)*m;
	enum lt_status st = lt_dist_allreduce(d, &v, 1, LT_DIST_F64, LT_DIST_MAX,
					      "the micro-batch");
	*m = (int)-v;
	return st;
}

/* Why no micro-batch is chosen: the trials down to `tried` sequences
 * failed (0: none was tried), or the estimate fits none (the fullest
 * rank's need of the smallest, need, against its room, have). */
static enum lt_status none_fits(lt_dist *d, const struct lt_conf *c, double need, double have,
				int tried)
{
	double mine[3] = { need, need, have }, worst[3];
	enum lt_status st = fullest(d, mine, worst);
	if (st != LT_OK)
		return st;
	if (tried)
		lt_errmsg_set("train.micro_batch = auto: the trial steps of micro-batches down to %d "
			      "sequences ran out of memory or filled more than a rank has; lower "
			      "run.mem_limit or set train.micro_batch", tried);
	else if (worst[0] > 0)
		lt_errmsg_set("train.micro_batch = auto: not even the smallest micro-batch fits: it "
			      "needs %.1f MiB where a rank has %.1f MiB, %.0f%% of which it may fill "
			      "(run.mem_limit = %g GiB)", worst[0] / MIB, worst[2] / MIB,
			      100 * (1 - MICRO_MARGIN), c->run.mem_limit);
	else
		lt_errmsg_set("train.micro_batch = auto: no micro-batch of the step's %lld sequences "
			      "suits this layout", (long long)c->train.batch * c->train.grad_accum);
	return LT_ERR_CONFIG;
}

enum lt_status lt_cmd_micro_batch(lt_dist *d, struct lt_conf *c, struct lt_trainer_start *s,
				  int planned, lt_trainer **t)
{
	double have = 0, need = 0, peak = 0;
	int threads = 1, below = planned ? c->train.batch + 1 : 0, m = 0, oom = 0;
	int ranks = lt_dist_size(d), lead = lt_dist_rank(d) == 0;
	enum lt_status st = lt_conf_check(c);
	if (st != LT_OK)
		return st;
	st = rank_room(d, c, &have, &threads);
	struct lt_agreement g = { .dist = d, .timeout = c->dist.comm_timeout };
	if ((st = lt_agree(&g, st, "measuring each rank's memory", 0)) != LT_OK)
		return st;
	for (int trial = 0; trial < MICRO_TRIALS; trial++, below = m) {
		m = lt_micro_batch_fit(c, ranks, threads, have, MICRO_MARGIN, below, &need);
		if ((st = least(d, &m)) != LT_OK)
			return st;
		if (m == 0)
			return none_fits(d, c, need, have, trial > 0 ? below : 0);
		struct lt_conf tc = *c;
		lt_micro_batch_set(&tc, m);
		need = lt_micro_batch_need(&tc, ranks, threads);
		if ((st = trial_step(d, &tc, s, t, &peak, &oom)) != LT_OK)
			return st;
		double over = oom || peak > have, mine[3] = { need, peak, have }, worst[3];
		if ((st = lt_dist_allreduce(d, &over, 1, LT_DIST_F64, LT_DIST_MAX, "the trial's "
					    "memory")) != LT_OK || (st = fullest(d, mine, worst)) != LT_OK)
			return st;
		if (over > 0) {
			if (lead)
				printf("micro_batch auto: a micro-batch of %d %s; trying a smaller one\n",
				       m, oom ? "ran out of memory" : "filled more than a rank has");
			continue;
		}
		lt_micro_batch_set(c, m);
		if (lead)
			printf("micro_batch auto: micro-batches of %d sequences, %d a step; the fullest "
			       "rank's estimate %.1f MiB, its trial step's peak %.1f MiB, of %.1f MiB\n",
			       c->train.batch, c->train.grad_accum, worst[0] / MIB, worst[1] / MIB,
			       worst[2] / MIB);
		return LT_OK;
	}
	return none_fits(d, c, need, have, m);
}
