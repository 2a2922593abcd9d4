/* The trainer's evaluation: the validation loss over the ranks (and the
 * stages of a pipeline), and the sample rank 0 draws. */
#include "config.h"
#include "train/trainer_impl.h"

#include <stdlib.h>

#include "io/checkpoint.h"
#include "train/train_sample.h"

/* buf[n] summed over this rank's pipeline, whose last stage alone counts
 * the losses. */
enum lt_status lt_trainer_sum_over_pipeline(lt_trainer *t, double *buf, int n)
{
	return !t->pipe ? LT_OK
			: lt_dist_allreduce(lt_mesh_pp_group(t->mesh), buf, (size_t)n, LT_DIST_F64,
					    LT_DIST_SUM, "the pipeline's sums");
}

/* Mean loss over the first run.eval_batches validation batches; each rank
 * takes its share of every batch's windows. */
static enum lt_status validation_loss(lt_trainer *t, double *out)
{
	const struct lt_conf *c = &t->conf;
	int B = c->train.batch, T = c->train.seq, rows = lt_trainer_rows_in(t, t->rank, 0);
	/* (with rounds of wall time each node takes its share of the windows) */
	int P = c->dist.deterministic ? 1 : rows, row0 = t->node_row0 + lt_trainer_first_row_in(t, 0);
	uint64_t val_windows = lt_data_val_windows(t->data, T);
	double sums[2] = { 0, 0 };
	enum lt_status st = lt_trainer_plan_forward(t, P);
	for (int i = 0; i < c->run.eval_batches && st == LT_OK; i++) {
		if ((uint64_t)i * (uint64_t)B >= val_windows)
			break;
		if ((st = lt_zero_catch_up(t->zero, (rows + P - 1) / P, 0)) != LT_OK)
			break;
		for (int j = 0; j < rows && st == LT_OK; j += P) {
			long n;
			for (int k = 0; k < P && st == LT_OK; k++) {
				uint64_t w = (uint64_t)i * (uint64_t)B + (uint64_t)(row0 + j + k);
				st = lt_data_val_batch(t->data, w, 1, T, t->tokens + (size_t)k * T,
						       t->targets + (size_t)k * T, &n);
			}
			double loss = 0;
			if (st == LT_OK)
				st = t->pipe ? lt_pipeline_forward(t->pipe, t->tokens, t->targets,
								   &loss, &n)
					     : lt_model_forward(t->model, t->tokens, t->targets, 0.0f,
								&loss, &n);
			sums[0] += loss;
			sums[1] += (double)n;
		}
	}
	if ((st = lt_trainer_agree(t, st, "the validation pass", 0)) != LT_OK ||
	    (st = lt_dist_allreduce(t->dist, sums, 2, LT_DIST_F64, LT_DIST_SUM,
				    "the validation-loss all-reduce")) != LT_OK ||
	    (st = lt_trainer_sum_over_pipeline(t, sums, 2)) != LT_OK)
		return st;
	if (sums[1] == 0) {
		lt_errmsg_set("%s: no validation tokens%s", t->data_dir,
			      lt_data_has_examples(t->data) ? " trained on in the first windows "
			      "(a longer train.seq, or more run.eval_batches)" : "");
		return LT_ERR_ARG;
	}
	*out = sums[0] / sums[1];
	return LT_OK;
}

/* The validation loss, logged at `step`. */
enum lt_status lt_trainer_evaluate(lt_trainer *t, long step, double *val)
{
	enum lt_status st = validation_loss(t, val);
	if (st == LT_OK && t->metrics)
		st = lt_metrics_eval(t->metrics, step, *val, t->state.elapsed);
	return st;
}

/* A pipeline's sample: rank 0 decodes with the whole model of the step's
 * checkpoint, on its CPU; without one, a line says so. */
static enum lt_status sample_from_checkpoint(lt_trainer *t, long step)
{
	const struct lt_conf *c = &t->conf;
	enum lt_status st = LT_OK;
	if (t->saved_step != step) {
		lt_metrics_say(t->metrics, "no sample at step %ld: a pipeline's sample is drawn from "
			       "a checkpoint of the step (the run's last one has it)", step);
		return LT_OK;
	}
	if (t->lead) {
		lt_backend *be = NULL;
		lt_model *m = NULL;
		st = lt_backend_new("cpu", c->run.threads, &be);
		if (st == LT_OK)
			st = lt_model_new(be, &c->model, &m);
		if (st == LT_OK)
			st = lt_checkpoint_load_tensors(t->saved, m, NULL);
		if (st == LT_OK)
			st = lt_train_sample(m, t->tok, t->metrics, c, step);
		lt_model_free(m);
		lt_backend_free(be);
	}
	return lt_trainer_agree(t, st, "the sample", LONG_WAIT_SECONDS);
}

/* A sample printed by rank 0; the others wait for it. */
enum lt_status lt_trainer_sample(lt_trainer *t, long step)
{
	if (t->pipe)
		return sample_from_checkpoint(t, step);
	enum lt_status st = lt_zero_whole(t->zero);
	/* a split model decodes with the whole of rank 0's group */
	int group0 = t->mesh ? lt_dist_rank(t->job) < t->conf.dist.tp : t->lead;
	if (st == LT_OK && group0)
		st = lt_train_sample(t->model, t->tok, t->metrics, &t->conf, step);
	st = lt_trainer_agree(t, st, "the sample", LONG_WAIT_SECONDS);
	return st == LT_OK ? lt_zero_shard(t->zero) : st;
}
