/* The trainer: a run's setup (data, config file, agreement, shares, model,
 * metrics) and its steps, with evaluation, samples and checkpoints at the
 * config's cadence. */
#include "config.h"
#include "train/trainer_impl.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dist/shares.h"
#include "io/fs.h"
#include "io/import.h"
#include "io/rundir.h"
#include "text/sample.h"
#include "train/local_ckpt.h"
#include "train/rank_report.h"
#include "train/run_files.h"
#include "train/tp_train.h"



enum lt_status lt_trainer_agree(lt_trainer *t, enum lt_status st, const char *what, double wait)
{
	return lt_agree(&t->agreement, st, what, wait);
}

/* ------------------------------------------------------------ the shares */

/* Rank i's sequences in micro-batch a of a step. */
int lt_trainer_rows_in(const lt_trainer *t, int i, int a)
{
	return (int)lt_shares_rows_in(t->rows, i, a, t->conf.train.grad_accum);
}

/* This rank's first sequence of micro-batch a: those of the ranks before
 * it come first. */
int lt_trainer_first_row_in(const lt_trainer *t, int a)
{
	int row0 = 0;
	for (int i = 0; i < t->rank; i++)
		row0 += lt_trainer_rows_in(t, i, a);
	return row0;
}

/* The largest forward this rank's share of a step needs. */
static void set_plan_rows(lt_trainer *t)
{
	int accum = t->conf.train.grad_accum;
	t->plan_rows = t->conf.dist.deterministic ? 1
						   : (int)((t->rows[t->rank] + accum - 1) / accum);
}

/* Plans a forward of `rows` sequences; the activations planned for
 * plan_rows hold it. */
enum lt_status lt_trainer_plan_forward(lt_trainer *t, int rows)
{
	return lt_model_plan(t->model, rows, t->conf.train.seq);
}

/* Splits the batch evenly; every rank needs a sequence. Shares of a step
 * rather than of a micro-batch let --balance auto move one sequence in
 * batch x grad_accum. */
static enum lt_status plan_shares(lt_trainer *t)
{
	const struct lt_conf *c = &t->conf;
	if (t->batch < t->ranks) {
		lt_errmsg_set("train.batch %d: each of the %d ranks needs at least one sequence of "
			      "every batch%s", c->train.batch, t->ranks,
			      t->timed ? " of its node" : "");
		return LT_ERR_CONFIG;
	}
	if (t->conf.dist.pp > 1 && c->train.batch % t->ranks) {
		lt_errmsg_set("train.batch %d with dist.pp = %d: the %d data-parallel ranks need "
			      "equal micro-batches (a multiple of %d)", c->train.batch, c->dist.pp,
			      t->ranks, t->ranks);
		return LT_ERR_CONFIG;
	}
	double *ones = malloc((size_t)t->ranks * sizeof *ones);
	t->rows = calloc((size_t)t->ranks, sizeof *t->rows);
	if (!ones || !t->rows) {
		free(ones);
		lt_errmsg_set("cannot allocate the ranks' shares");
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < t->ranks; i++)
		ones[i] = 1;
	size_t accum = (size_t)c->train.grad_accum, items = (size_t)t->batch * accum;
	lt_shares_split(items, ones, t->ranks, accum, t->rows);
	set_plan_rows(t);
	free(ones);
	/* a pipeline's --balance auto moves blocks between its stages */
	if (c->dist.balance != LT_BALANCE_AUTO || t->ranks == 1 || c->dist.pp > 1)
		return LT_OK;
	return lt_balancer_new(t->step_dist, items, accum, c->dist.balance_every, t->state.step,
			       &t->balance);
}

/* lt_agree over the ranks of a step (the node's, with rounds of wall
 * time). */
static enum lt_status step_agree(lt_trainer *t, enum lt_status st, const char *what)
{
	return lt_agree(t->timed ? &t->node_agreement : &t->agreement, st, what, 0);
}

/* --balance auto after `step`: new shares are planned for on every rank,
 * and rank 0 says what the ranks compared. */
enum lt_status lt_trainer_rebalance(lt_trainer *t, long step)
{
	char line[4096];
	int moved = 0;
	/* a tensor-parallel group moves at its slowest rank's pace: each of
	 * its data-parallel groups sees the same times, and moves alike */
	double compute = t->time.compute_s;
	enum lt_status st = !t->mesh ? LT_OK
			    : lt_dist_allreduce(lt_mesh_tp_group(t->mesh), &compute, 1,
						LT_DIST_F64, LT_DIST_MAX, "the group's step time");
	if (st == LT_OK)
		st = lt_balancer_after(t->balance, step, compute, t->rows, &moved, line,
				       sizeof line);
	if (st == LT_OK && moved) {
		set_plan_rows(t);
		st = step_agree(t, lt_trainer_plan_forward(t, t->plan_rows), "planning the new shares");
	}
	if (st == LT_OK && t->lead && line[0])
		lt_metrics_say(t->metrics, "%s", line);
	return st;
}

/* -------------------------------------------------------------- the data */

/* A fresh run's weights from train.init (every rank reads the files), and with adapters
 * their first values. */
static enum lt_status start_from_init(lt_model *m, const struct lt_conf *c)
{
	enum lt_status st = lt_import_weights(c->train.init, m);
	if (st == LT_OK && lt_model_num_frozen(m) > 0)
		st = lt_model_init_adapters(m, c->train.seed);
	return st;
}

/* Rank 0 alone: makes the run directory and prepares the data if needed. */
static enum lt_status prepare_run_dir(lt_trainer *t, const struct lt_trainer_start *s)
{
	enum lt_status st = LT_OK;
	if (t->lead && (st = lt_fs_make_dirs(t->conf.run.dir)) == LT_OK)
		st = lt_run_files_prepare_data(&t->conf, t->data_dir, t->state.step, s->corpus,
					       s->n_corpus);
	return lt_trainer_agree(t, st, "preparing the data", LONG_WAIT_SECONDS);
}

/* Whether the run says its first lines (a quiet trial does not). */
static int says_start(const lt_trainer *t)
{
	return !t->probe || !t->probe->quiet;
}

/* The vocabulary of the resumed checkpoint's model (-1 when unknown). */
static int checkpoint_vocab(const lt_trainer *t)
{
	struct lt_conf saved;
	lt_conf_defaults(&saved);
	if (!t->state.config || lt_conf_apply_string(&saved, t->state.config, "state.json") != LT_OK) {
		lt_errmsg_clear();
		return -1;
	}
	return saved.model.vocab_size;
}

/* The model's vocabulary follows the tokenizer's (training may stop with
 * fewer tokens than asked when no pair is frequent enough); a resumed run's
 * options (a --preset, say) may say otherwise only when the checkpoint's
 * model agrees with them. */
static enum lt_status load_data(lt_trainer *t)
{
	enum lt_status st = lt_fs_join(t->tok_path, sizeof t->tok_path, t->data_dir,
				       LT_RUNDIR_TOKENIZER);
	if (st == LT_OK)
		st = lt_tokenizer_load(t->tok_path, &t->tok);
	if (st != LT_OK)
		return st;
	int vocab = lt_tokenizer_vocab_size(t->tok);
	/* an imported model keeps its vocabulary, which may have rows past
	 * the tokenizer's ids */
	if (t->conf.train.init[0] && vocab > t->conf.model.vocab_size) {
		lt_errmsg_set("%s: vocabulary %d, more than the %d of train.init's model %s",
			      t->tok_path, vocab, t->conf.model.vocab_size, t->conf.train.init);
		return LT_ERR_CONFIG;
	}
	if (t->conf.model.vocab_size != vocab && !t->conf.train.init[0]) {
		if (t->state.step > 0 && checkpoint_vocab(t) != vocab) {
			lt_errmsg_set("%s: vocabulary %d, the checkpoint's model has %d", t->tok_path,
				      vocab, t->conf.model.vocab_size);
			return LT_ERR_CONFIG;
		}
		if (says_start(t))
			printf("model: vocabulary set to the tokenizer's %d (config said %d)\n", vocab,
			       t->conf.model.vocab_size);
		t->conf.model.vocab_size = vocab;
	}
	return lt_data_open(t->data_dir, vocab, &t->data);
}

/* Rank 0 says how example data fill the windows: one example each,
 * padded, the longer ones cut. */
static void report_examples(const lt_trainer *t)
{
	const lt_data *d = t->data;
	int T = t->conf.train.seq;
	if (!t->lead || !lt_data_has_examples(d) || !says_start(t))
		return;
	printf("data: %" PRIu64 " training and %" PRIu64 " validation examples, one per window "
	       "of %d tokens, padded; truncated (longer than %d tokens): %" PRIu64 " training, %"
	       PRIu64 " validation; the loss counts only trained tokens\n",
	       lt_data_examples(d, LT_DATA_TRAIN), lt_data_examples(d, LT_DATA_VAL), T, T + 1,
	       lt_data_truncated(d, LT_DATA_TRAIN, T), lt_data_truncated(d, LT_DATA_VAL, T));
}

/* Every rank opens the data. */
static enum lt_status open_data(lt_trainer *t)
{
	enum lt_status st = lt_trainer_agree(t, load_data(t), "opening the data", 0);
	if (st != LT_OK)
		return st;
	report_examples(t);
	/* the vocabulary may have become the tokenizer's: the model must
	 * still hold together (the rest of the config is as lt_conf_check
	 * found it) */
	return lt_model_config_check(&t->conf.model);
}

/* Rank 0 writes RUN/config.ini: every rank must see it (a range test
 * writes none). */
static enum lt_status save_config(lt_trainer *t)
{
	if (t->probe)
		return LT_OK;
	enum lt_status st = t->lead ? lt_run_files_save_config(&t->conf) : LT_OK;
	if ((st = lt_trainer_agree(t, st, "writing the config", LONG_WAIT_SECONDS)) != LT_OK)
		return st;
	st = lt_run_files_check_shared(&t->conf, lt_dist_rank(t->job), lt_dist_host(t->job));
	return lt_trainer_agree(t, st, "finding the run directory", 0);
}

/* Refuses ranks that disagree on config, model, data or step before any
 * training, naming the rank and the difference. */
static enum lt_status check_ranks_agree(lt_trainer *t)
{
	struct lt_agree_facts f = {
		.train_tokens = lt_data_tokens(t->data, LT_DATA_TRAIN),
		.val_tokens = lt_data_tokens(t->data, LT_DATA_VAL),
		.vocab = lt_tokenizer_vocab_size(t->tok),
		.step = t->state.step,
		.samples = t->state.samples,
	};
	return lt_agree_on_run(&t->agreement, &t->conf, &f);
}

/* ------------------------------------------------------------- the model */

/* The job's layout, for the rank reports. */
static struct lt_rank_layout layout_of(const lt_trainer *t)
{
	return (struct lt_rank_layout){ .job = t->job, .lead = t->lead,
					.tp = t->mesh ? t->conf.dist.tp : 1, .pp = t->conf.dist.pp };
}

/* The peak of the backend's buffers so far (0 when it cannot say). */
static size_t backend_peak(lt_backend *be)
{
	size_t now = 0, peak = 0;
	if (be->ops->mem_usage)
		be->ops->mem_usage(be, &now, &peak);
	return peak;
}

/* Whether the model is made without its whole parameters and gradients
 * (ZeRO stage 3 of a whole model or a tensor-parallel part, initialised
 * from the seed or resumed): the others make it whole and slice it. */
static int sliced_from_start(const lt_trainer *t)
{
	const struct lt_conf *c = &t->conf;
	return c->dist.zero == 3 && c->dist.pp == 1 && c->train.lora_rank == 0 &&
	       !c->train.init[0] && !t->local;
}

/* Bytes the backend's buffers hold now (0 when it cannot say). */
static size_t backend_bytes(lt_backend *be)
{
	size_t now = 0, peak = 0;
	if (be->ops->mem_usage)
		be->ops->mem_usage(be, &now, &peak);
	return now;
}

/* The backend, the model and its exchange, the parameters (initialised,
 * or the checkpoint's with its moments) and the batch buffers. */
static enum lt_status build_model(lt_trainer *t, const struct lt_trainer_start *s)
{
	const struct lt_conf *c = &t->conf;
	enum lt_status st;
	lt_backend_set_local_rank(lt_dist_local_rank(t->job));
	st = s->open_backend ? s->open_backend(c->run.device, c->run.threads, &t->be)
			     : lt_backend_new(c->run.device, c->run.threads, &t->be);
	if (st != LT_OK)
		return st;
	lt_backend_set_matmul(t->be, c->train.matmul);
	size_t before = backend_bytes(t->be);
	struct lt_lora lora;
	int sliced = sliced_from_start(t);
	if (sliced) {
		struct lt_tp tp = t->mesh ? lt_mesh_model_tp(t->mesh) : (struct lt_tp){ .size = 1 };
		if ((st = lt_model_new_sliced(t->be, &c->model, &tp, c->train.precision,
					      &t->model)) != LT_OK)
			return st;
	} else if (c->dist.pp > 1) {
		if ((st = lt_trainer_pp_model(t)) != LT_OK)
			return st;
	} else if (t->mesh) {
		struct lt_tp tp = lt_mesh_model_tp(t->mesh);
		if ((st = lt_model_new_tp(t->be, &c->model, &tp, &t->model)) != LT_OK ||
		    (st = lt_model_set_precision(t->model, c->train.precision)) != LT_OK)
			return st;
	} else if ((st = lt_conf_lora(c, &lora)) != LT_OK ||
		   (st = lt_model_new_adapted(t->be, &c->model, &lora, c->train.precision,
					      &t->model)) != LT_OK) {
		return st;
	}
	lt_model_set_recompute(t->model, c->train.recompute);
	if ((st = lt_zero_new(t->local ? lt_local_sgd_inner(t->local) : t->dist, t->model,
			      c->dist.zero, c->dist.deterministic,
			      /* stages out of step share no node memory */
			      c->dist.exchange == LT_EXCHANGE_AUTO && c->dist.pp == 1,
			      (size_t)c->train.batch * (size_t)c->train.seq, &t->zero)) != LT_OK)
		return st;
	/* (stage 3: no optimizer until sliced; a model made sliced is sliced
	 * first, and its parameters written through the sink) */
	if (sliced && (st = lt_zero_shard(t->zero)) != LT_OK)
		return st;
	t->opt = lt_zero_optim(t->zero);
	/* t->state was read and verified when the checkpoint was found */
	if (s->checkpoint)
		st = t->mesh ? lt_tp_load(s->checkpoint, t->model, t->opt)
			     : lt_checkpoint_load_tensors(s->checkpoint, t->model, t->opt);
	else if (c->train.init[0])
		st = start_from_init(t->model, c);
	else
		st = lt_model_init(t->model, c->train.seed);
	char note[512] = "";
	if (st == LT_OK && t->local)
		st = lt_local_ckpt_start(t->local, s->checkpoint, t->model, t->opt, note, sizeof note);
	if (note[0] && t->lead)
		printf("%s\n", note);
	if (st == LT_OK)
		st = lt_zero_shard(t->zero);
	if (st == LT_OK && !t->opt) {  /* stage 3: the moments once sliced */
		t->opt = lt_zero_optim(t->zero);
		if (s->checkpoint)
			st = t->mesh ? lt_tp_load_moments(s->checkpoint, t->model, t->opt)
				     : lt_checkpoint_load_moments(s->checkpoint, t->model, t->opt);
	}
	size_t state = backend_bytes(t->be) - before;  /* (stage 3: as sliced) */
	size_t setup = backend_peak(t->be);  /* the parameters' and moments' way in */
	if (st == LT_OK)
		st = lt_model_plan(t->model, t->plan_rows, c->train.seq);
	if (st == LT_OK)
		st = lt_distill_open(t->be, c, t->model, t->plan_rows, &t->distill);
	if (st == LT_OK && c->dist.pp > 1)
		st = lt_pipeline_new(lt_mesh_pp_group(t->mesh), t->model, t->zero, t->plan_rows,
				     c->train.seq, c->dist.deterministic, c->dist.pp_ahead, &t->pipe);
	t->tokens = malloc(2 * (size_t)c->train.batch * c->train.seq * sizeof *t->tokens);
	if (st == LT_OK && !t->tokens) {
		lt_errmsg_set("cannot allocate the batch buffers");
		st = LT_ERR_NOMEM;
	}
	t->targets = t->tokens + (size_t)c->train.batch * c->train.seq;
	t->flops_per_token = lt_model_config_flops_per_token(&c->model, c->train.seq);
	if ((st = lt_trainer_agree(t, st, "building the model", 0)) != LT_OK)
		return st;
	struct lt_rank_layout l = layout_of(t);
	if (!says_start(t))
		return LT_OK;
	return lt_rank_report_memory(&l, c->dist.zero, state, setup,
				     lt_zero_bytes(t->zero),
				     lt_model_grads_numel(t->model), lt_model_num_params(t->model),
				     lt_zero_exchange(t->zero));
}

/* Rank 0 opens RUN/metrics.jsonl (not for a range test). */
static enum lt_status open_metrics(lt_trainer *t)
{
	enum lt_status st = LT_OK;
	if (t->lead && !t->probe)
		st = lt_run_files_open_metrics(&t->conf, t->state.step, &t->metrics);
	return lt_trainer_agree(t, st, "opening the metrics", 0);
}

/* Rank 0: each damaged checkpoint the search for the resume point passed
 * over is moved aside, out of the way of the run's saves and pruning, and
 * reported in one line (one that will not move is reported, and fails the
 * run). Every rank empties the list then. */
static enum lt_status set_aside_skipped(lt_trainer *t, struct lt_ckpt_skips *k)
{
	char aside[LT_RUN_PATH_CAP];
	enum lt_status st = LT_OK;
	char first_err[1024] = "";
	for (size_t i = 0; t->lead && k && i < k->n; i++) {
		enum lt_status moved = lt_checkpoint_set_aside(k->v[i].dir, aside, sizeof aside);
		lt_metrics_say(t->metrics, "skipped %s: %s%s%s", k->v[i].dir, k->v[i].why,
			       moved == LT_OK ? "; moved aside to " : "", moved == LT_OK ? aside : "");
		if (moved != LT_OK && st == LT_OK) {
			st = moved;
			snprintf(first_err, sizeof first_err, "%s", lt_errmsg());
		}
	}
	lt_ckpt_skips_free(k);
	if (st != LT_OK)
		lt_errmsg_set("%s", first_err);
	return lt_trainer_agree(t, st, "moving the damaged checkpoints aside", 0);
}

/* The run's first lines: the model, the ranks, the damaged checkpoints
 * passed over, where it resumed. */
static enum lt_status say_start(lt_trainer *t, const struct lt_trainer_start *s)
{
	const char *checkpoint = s->checkpoint;
	const struct lt_conf *c = &t->conf;
	struct lt_device_info dev;
	enum lt_status st;
	t->be->ops->info(t->be, &dev);
	lt_metrics_say(t->metrics, "model: %.2fM parameters, vocab %d, batch %d x seq %d x accum %d, "
		       "%d steps, device %s", (double)lt_model_num_params(t->model) / 1e6,
		       c->model.vocab_size, c->train.batch, c->train.seq, c->train.grad_accum,
		       c->train.steps, dev.name);
	struct lt_rank_layout l = layout_of(t);
	if (lt_dist_size(t->job) > 1 && (st = lt_trainer_report_ranks(t, &l)) != LT_OK)
		return st;
	if (!t->probe && (st = set_aside_skipped(t, s->skipped)) != LT_OK)
		return st;
	if (t->pipe) {
		lt_pipeline_say(t->metrics, t->stage_start, c->dist.pp, c->train.grad_accum);
		lt_metrics_say(t->metrics, "pipeline: a boundary tensor of %.2f MiB crosses between "
			       "stages in %.3f ms (measured at the start)",
			       (double)t->plan_rows * c->train.seq * c->model.dim * 4 / 1048576.0,
			       1e3 * lt_pipeline_cross_seconds(t->pipe));
	}
	if (t->mesh && t->balance)
		lt_metrics_say(t->metrics, "balance: a tensor-parallel group of %d ranks moves in "
			       "lockstep, at its slowest rank's pace; the shares move between the "
			       "%d groups", c->dist.tp, t->ranks);
	if (t->distill)
		lt_metrics_say(t->metrics, "distill: from %s, alpha %g, temperature %g",
			       lt_distill_describe(t->distill), c->distill.alpha, c->distill.temperature);
	if (checkpoint)
		lt_metrics_say(t->metrics, "resumed from %s at step %ld", checkpoint, t->state.step);
	return LT_OK;
}

/* ------------------------------------------------------- the step's parts */

/* What tensor parallelism's save and norm read of the run. */
static struct lt_tp_run tp_run(const lt_trainer *t)
{
	return (struct lt_tp_run){ .job = t->mesh ? lt_mesh_stage_group(t->mesh) : t->job,
				   .pp = t->pipe ? lt_mesh_pp_group(t->mesh) : NULL,
				   .stage_start = t->stage_start, .mesh = t->mesh, .model = t->model,
				   .opt = t->opt, .ranges = lt_zero_ranges(t->zero),
				   .stage = t->conf.dist.zero,
				   .deterministic = t->conf.dist.deterministic };
}

/* Every rank writes its optimizer shard into rank 0's temporary
 * directory; rank 0 then writes the rest and publishes it. Stage 0 ranks
 * all hold the same moments: rank 0 writes them alone. */
enum lt_status lt_trainer_save(lt_trainer *t, char *path)
{
	char tmp[LT_RUN_PATH_CAP] = "";
	long tag = (long)getpid();
	/* local SGD: the first node's ranks write its moments */
	int writers = t->local ? lt_dist_local_size(t->dist) : t->ranks;
	int me = !t->local ? t->rank : lt_dist_rank_of_local(t->dist, 0) == 0 ?
				       lt_dist_local_rank(t->dist) : -1;
	int sharded = t->conf.dist.zero > 0 && writers > 1;
	enum lt_status st = LT_OK;
	free(t->state.config);
	t->state.config = NULL;
	/* the model file reads it whole; a split model's save gathers each
	 * tensor from ZeRO 3's ranges instead */
	if (!t->mesh && (st = lt_zero_whole(t->zero)) != LT_OK)
		return st;
	if (t->lead && (st = lt_conf_to_string(&t->conf, &t->state.config)) == LT_OK)
		st = lt_checkpoint_begin(t->conf.run.dir, t->state.step, tag, tmp, sizeof tmp);
	if ((st = lt_trainer_agree(t, st, "starting a checkpoint", LONG_WAIT_SECONDS)) != LT_OK ||
	    (st = lt_dist_bcast(t->job, tmp, sizeof tmp, 0, "the checkpoint's name")) != LT_OK)
		return st;
	struct lt_tp_run r = tp_run(t);
	if (t->mesh)
		st = lt_tp_save(&r, tmp);
	else if (sharded ? me >= 0 : me == 0)
		st = lt_checkpoint_write_shard(tmp, t->model, t->opt, sharded ? me : 0,
					       sharded ? writers : 1);
	if (st == LT_OK && t->local)
		st = lt_local_ckpt_save(t->local, tmp, t->model, t->opt, sharded ? writers : 1,
					&t->state);
	if ((st = lt_trainer_agree(t, st, "writing the optimizer shards", LONG_WAIT_SECONDS)) != LT_OK) {
		if (t->lead)
			lt_checkpoint_abandon(tmp);
		return st;
	}
	if (t->lead) {
		t->state.tokenizer = t->tok_path;
		st = t->mesh ? lt_checkpoint_commit_fetched(t->conf.run.dir, tmp,
							    t->pipe ? lt_model_stage_whole(t->model)
								    : lt_model_tp_whole(t->model),
							    &t->state, path, LT_RUN_PATH_CAP)
			     : lt_checkpoint_commit(t->conf.run.dir, tmp, t->model,
						    sharded ? writers : 1, &t->state, path,
						    LT_RUN_PATH_CAP);
		if (st != LT_OK)
			lt_checkpoint_abandon(tmp);
		if (st == LT_OK)
			st = lt_checkpoint_prune(t->conf.run.dir, t->conf.run.keep_checkpoints);
		if (st == LT_OK)
			lt_metrics_say(t->metrics, "checkpoint: %s", path);
	}
	st = lt_trainer_agree(t, st, "publishing the checkpoint", LONG_WAIT_SECONDS);
	if (st == LT_OK)
		st = lt_dist_bcast(t->job, path, LT_RUN_PATH_CAP, 0, "the checkpoint's path");
	if (st == LT_OK) {
		t->saved_step = t->state.step;
		snprintf(t->saved, sizeof t->saved, "%s", path);
	}
	return st == LT_OK ? lt_zero_shard(t->zero) : st;
}

/* Forward and backward over this rank's `rows` sequences from sample
 * `first`, all at once (one at a time when deterministic), each backward
 * armed for the exchange (`last`: this holds the step's final one). Adds
 * the loss and target count to sums. */
static enum lt_status run_rows(lt_trainer *t, uint64_t first, int rows, float scale, int last,
			       double *sums)
{
	const struct lt_conf *c = &t->conf;
	int P = c->dist.deterministic ? 1 : rows;
	enum lt_status st = lt_trainer_plan_forward(t, P);
	if (st == LT_OK)
		st = lt_zero_catch_up(t->zero, (rows + P - 1) / P, 1);
	for (int j = 0; j < rows && st == LT_OK; j += P) {
		double loss = 0;
		long n = 0;
		st = lt_data_train_batch(t->data, c->train.seed, first + (uint64_t)j, P, c->train.seq,
					 t->tokens, t->targets);
		/* adapter dropout's masks follow the sample, not the rank that runs it */
		lt_model_set_dropout_key(t->model, c->train.seed * 0x9e3779b97f4a7c15u ^
							   (first + (uint64_t)j));
		if (st == LT_OK)
			st = lt_model_forward(t->model, t->tokens, t->targets, scale, &loss, &n);
		if (st == LT_OK)
			st = lt_zero_arm(t->zero, last && j + P >= rows);
		if (st == LT_OK)
			st = lt_model_backward(t->model);
		if (st == LT_OK && c->dist.deterministic)
			st = lt_zero_add_sequence(t->zero);
		sums[0] += loss;
		sums[1] += (double)n;
	}
	return st;
}

/* Micro-batch a of the step into the batch buffers, for the pipeline. */
static enum lt_status pipeline_batch(void *ctx, int i, int32_t *tokens, int32_t *targets)
{
	lt_trainer *t = ctx;
	const struct lt_conf *c = &t->conf;
	/* deterministic: each sequence of a micro-batch a micro-batch of its own */
	int per = c->dist.deterministic ? lt_trainer_rows_in(t, t->rank, 0) : 1;
	int a = i / per, j = i % per;
	uint64_t first = t->state.samples + (uint64_t)a * (uint64_t)c->train.batch +
			 (uint64_t)lt_trainer_first_row_in(t, a) + (uint64_t)j;
	return lt_data_train_batch(t->data, c->train.seed, first, t->plan_rows, c->train.seq,
				   tokens, targets);
}

/* The step's first sequence: the job's data position, or with rounds of
 * wall time this node's block of the round's (lt_trainer_round_block). */
static uint64_t step_first(const lt_trainer *t)
{
	uint64_t per = (uint64_t)t->batch * (uint64_t)t->conf.train.grad_accum;
	return t->timed ? t->state.samples + lt_trainer_round_block(t) * per : t->state.samples;
}

/* This rank's votes to stop: votes[0] for a signal, votes[1] for a spent
 * time budget. */
static void vote_stop(const lt_trainer *t, double loop_start, double *votes)
{
	double budget = t->conf.train.max_minutes * 60;
	votes[0] = t->stop_signal && *t->stop_signal != 0;
	votes[1] = budget > 0 && lt_seconds() - loop_start > budget;
}

/* The optimizer's settings at `step`: the config's, or a range test's
 * rate without warmup or decay. */
static struct lt_optim_config step_optim(const lt_trainer *t, long step)
{
	struct lt_optim_config oc = t->conf.train.optim;
	if (t->probe) {
		oc.lr = (float)t->probe->lr_at(t->probe->ctx, (int)(step - t->probe_from));
		oc.warmup_steps = 0;
		oc.schedule = LT_SCHED_CONSTANT;
	}
	return oc;
}

/* One optimizer step: grad_accum micro-batches of which this rank takes
 * its share, the reduction over the ranks, then AdamW unless the loss or
 * the gradient norm is not finite. */
enum lt_status lt_trainer_step(lt_trainer *t, long step, double loop_start,
			       struct lt_step_metrics *sm)
{
	const struct lt_conf *c = &t->conf;
	int B = t->batch, T = c->train.seq, accum = c->train.grad_accum;
	float scale = 1.0f / ((float)B * (float)T * (float)accum);
	double sums[6] = { 0, 0, 0, 0, 0, 0 }, norm = NAN;
	enum lt_status st = LT_OK;
	struct lt_optim_config oc = step_optim(t, step);
	uint64_t first = step_first(t);
	struct lt_agreement *g = t->timed ? &t->node_agreement : &t->agreement;
	t->round_ended = 0;
	if (lt_data_has_examples(t->data)) {
		/* the mean over the step's trained targets, which every rank
		 * counts alike from the samples' indices */
		long trained;
		st = lt_data_train_targets(t->data, c->train.seed, first,
					   (uint64_t)B * (uint64_t)accum, T, &trained);
		scale = trained > 0 ? 1.0f / (float)trained : 1.0f;
	}
	if (t->local && !t->timed)  /* each node's gradient is the mean over its own share */
		scale *= (float)lt_local_sgd_scale(t->local, t->rows);
	lt_step_time_begin(&t->time);
	lt_dist_set_step(t->job, step);
	lt_dist_set_step(t->dist, step);
	lt_dist_set_step(t->step_dist, step);
	lt_model_zero_grads(t->model);
	struct lt_pipeline_source src = { pipeline_batch, t };
	int per = c->dist.deterministic ? lt_trainer_rows_in(t, t->rank, 0) : 1;
	if (t->pipe)
		st = lt_pipeline_step(t->pipe, accum * per, &src, scale, sums);
	for (int a = 0; a < accum && st == LT_OK && !t->pipe; a++)
		st = run_rows(t, first + (uint64_t)a * (uint64_t)B +
					 (uint64_t)lt_trainer_first_row_in(t, a),
			      lt_trainer_rows_in(t, t->rank, a), scale, a == accum - 1, sums);
	if (!t->timed)  /* (rounds of wall time move it at the round's end) */
		t->state.samples += (uint64_t)B * (uint64_t)accum;
	if (t->slow_s > 0)
		usleep((useconds_t)(t->slow_s * 1e6));
	lt_step_time_passes_done(&t->time);
	vote_stop(t, loop_start, sums + 2);
	sums[4] = lt_distill_take_kl(t->distill);
	/* the node's local rank 0 alone reads the round's clock */
	sums[5] = t->timed && lt_local_sgd_round_due(t->local);
	/* the first exchange after backward waits for the slowest rank */
	st = lt_agree(g, st, "the forward and backward passes", 0);
	lt_step_time_agreed(&t->time);
	/* stages 0 and 2 may have left layers' exchanges unmatched: abort */
	g->failed_together = g->failed_together && c->dist.zero == 1;
	if (st != LT_OK || (st = lt_zero_reduce(t->zero, &norm)) != LT_OK)
		return st;
	if (t->pipe) {  /* each stage's times: the pipeline's waits are its bubble */
		sm->stages = c->dist.pp;
		sm->stage_s = t->stage_s;
		if ((st = lt_pipeline_times(t->pipe, t->stage_s, &sm->bubble)) != LT_OK)
			return st;
	}
	if (t->mesh) {
		struct lt_tp_run r = tp_run(t);
		if ((st = lt_tp_norm(&r, &norm)) != LT_OK)
			return st;
	}
	double sq = norm * norm;  /* each stage's part of the whole norm */
	if (t->pipe && (st = lt_trainer_sum_over_pipeline(t, &sq, 1)) == LT_OK)
		norm = sqrt(sq);
	if (st != LT_OK)
		return st;
	lt_step_time_reduced(&t->time);
	if ((st = lt_dist_allreduce(t->step_dist, sums, 6, LT_DIST_F64, LT_DIST_SUM,
				    "the loss all-reduce")) != LT_OK ||
	    (st = lt_trainer_sum_over_pipeline(t, sums, 5)) != LT_OK)
		return st;
	if (t->mesh && (st = lt_dist_allreduce(lt_mesh_tp_group(t->mesh), sums + 2, 2, LT_DIST_F64,
					       LT_DIST_SUM, "the votes to stop")) != LT_OK)
		return st;
	t->stop = sums[2] > 0 ? 1 : sums[3] > 0 ? 2 : 0;
	sm->loss = sums[0] / sums[1];
	sm->tokens = (long)sums[1];
	sm->distilled = t->distill != NULL;
	sm->kl = sums[4] / sums[1];
	sm->skipped = !isfinite(sm->loss) || !isfinite(norm);
	sm->grad_norm = norm;
	sm->lr = lt_lr_at(&oc, (int)step);
	if (sm->skipped) {
		t->state.bad_steps++;
		return LT_OK;
	}
	t->state.bad_steps = 0;
	/* the update's own time leaves out its waits for the others: those
	 * before it are counted here */
	lt_step_time_update_begin(&t->time);
	st = lt_zero_update(t->zero, &oc, (int)step, norm);
	lt_step_time_update_done(&t->time);
	if (st == LT_OK && t->local)
		st = lt_local_sgd_after_step(t->local, step, t->stop,
					     t->timed ? (double)sm->tokens
						      : (double)sm->tokens /
							lt_local_sgd_scale(t->local, t->rows),
					     sums[5] > 0, &sm->outer_s);
	t->round_ended = st == LT_OK && t->timed && lt_local_sgd_in_round(t->local) == 0;
	return st;
}

/* ------------------------------------------------------------- the loop */

/* Whether a multiple of `every` lies in (from, step]. */
static int due(long from, long step, int every)
{
	return every > 0 && step / every > from / every;
}

/* After `step` (not the last: the run's end does them all): the
 * validation loss, a sample and a checkpoint, when the config asks one
 * in (from, step]. */
enum lt_status lt_trainer_after(lt_trainer *t, long from, long step)
{
	const struct lt_conf *c = &t->conf;
	enum lt_status st = LT_OK;
	char path[LT_RUN_PATH_CAP];
	double val;
	if (step >= c->train.steps)
		return LT_OK;
	if (due(from, step, c->run.eval_every) &&
	    (st = lt_trainer_evaluate(t, step, &val)) != LT_OK)
		return st;
	if (due(from, step, c->run.sample_every) && (st = lt_trainer_sample(t, step)) != LT_OK)
		return st;
	/* (--balance auto may have saved this step's already) */
	if (due(from, step, c->run.checkpoint_every) && t->saved_step != step)
		st = lt_trainer_save(t, path);
	return st;
}

/* A range test's look at `step`: job rank 0's answer whether to stop is
 * every rank's. */
static enum lt_status probe_seen(lt_trainer *t, long step, const struct lt_step_metrics *sm,
				 int *stop)
{
	const struct lt_trainer_probe *p = t->probe;
	*stop = p->seen(p->ctx, (int)(step - t->probe_from), sm) != 0;
	return lt_dist_bcast(t->job, stop, sizeof *stop, 0, "the range test's answer");
}

void lt_trainer_measure(lt_trainer *t, struct lt_step_metrics *sm, long tokens, double now,
			double *last)
{
	const struct lt_conf *c = &t->conf;
	/* window tokens: what the model computes over; the rates and counts
	 * logged are those of trained targets (the same for token data) */
	long window = (long)t->batch * c->train.seq * c->train.grad_accum;
	sm->tokens_per_s = (double)sm->tokens / (now - *last);
	sm->tokens = tokens;
	sm->elapsed = t->state.elapsed;
	sm->tflops = (double)window / (now - *last) * t->flops_per_token / 1e12;
	lt_step_time_end(&t->time, sm);
	sm->xnode_bytes = lt_dist_take_cross_bytes(t->dist);
	lt_step_time_memory(t->be, sm);
	*last = now;
}

enum lt_status lt_trainer_check_bad_steps(const lt_trainer *t, long step, int skipped)
{
	const struct lt_conf *c = &t->conf;
	if (!skipped || t->state.bad_steps < c->train.max_bad_steps)
		return LT_OK;
	lt_errmsg_set("step %ld: %d steps in a row had a non-finite loss or gradient "
		      "(train.max_bad_steps = %d); lower train.lr or check the data",
		      step, t->state.bad_steps, c->train.max_bad_steps);
	return LT_ERR_NUMERIC;
}

/* The step loop: returns when the steps are done, the time budget is
 * spent, a signal arrived, a range test stopped or something failed. */
static enum lt_status train_loop(lt_trainer *t)
{
	const struct lt_conf *c = &t->conf;
	double t0 = lt_seconds(), last = t0, elapsed0 = t->state.elapsed;
	long end = t->probe ? t->state.step + t->probe->steps : c->train.steps;
	int enough = 0;
	enum lt_status st;
	lt_step_time_start(&t->time, t->local ? lt_local_sgd_inner(t->local) : t->dist);
	lt_dist_take_cross_bytes(t->dist);
	t->probe_from = t->state.step;
	for (long step = t->state.step + 1; step <= end; step++) {
		struct lt_step_metrics sm = { .step = step, .total_steps = c->train.steps,
					      .ranks = t->ranks, .nodes = lt_dist_nodes(t->dist) };
		if ((st = lt_trainer_step(t, step, t0, &sm)) != LT_OK)
			return st;
		double now = lt_seconds();
		t->state.step = step;
		t->state.tokens += sm.tokens;
		t->state.elapsed = elapsed0 + (now - t0);
		lt_trainer_measure(t, &sm, t->state.tokens, now, &last);
		if (t->metrics && (st = lt_metrics_step(t->metrics, &sm)) != LT_OK)
			return st;
		if (t->probe && ((st = probe_seen(t, step, &sm, &enough)) != LT_OK || enough))
			return st;
		if ((st = lt_trainer_check_bad_steps(t, step, sm.skipped)) != LT_OK)
			return st;
		if (t->balance && (st = lt_trainer_rebalance(t, step)) != LT_OK)
			return st;
		/* (a range test moves no blocks: a move goes through a checkpoint) */
		if (t->pipe && c->dist.balance == LT_BALANCE_AUTO && !t->probe &&
		    (st = lt_trainer_pp_balance(t, step)) != LT_OK)
			return st;
		if (!t->probe && (st = lt_trainer_after(t, step - 1, step)) != LT_OK)
			return st;
		if (t->stop == 1) {
			int sigint = t->stop_signal && *t->stop_signal == SIGINT;
			lt_metrics_say(t->metrics, "%s at step %ld%s", sigint ? "interrupted" : "terminated",
				       step, t->probe ? "" : ": saving a checkpoint");
			return LT_ERR_INTERRUPTED;
		}
		if (t->stop == 2) {
			lt_metrics_say(t->metrics, "time budget of %g minutes reached at step %ld",
				       c->train.max_minutes, step);
			return LT_OK;
		}
		lt_step_time_between(&t->time);
	}
	return LT_OK;
}

/* After the loop: a checkpoint, the validation loss and a sample. */
static enum lt_status finish_run(lt_trainer *t, enum lt_status loop_st)
{
	char path[LT_RUN_PATH_CAP];
	double val;
	/* the peaks of training, before a save or a sample gathers more */
	struct lt_rank_layout l = layout_of(t);
	enum lt_status st = lt_rank_report_peaks(&l, t->be, t->metrics);
	if (st == LT_OK)
		st = lt_trainer_save(t, path);
	if (st != LT_OK || loop_st == LT_ERR_INTERRUPTED)
		return st;
	if ((st = lt_trainer_evaluate(t, t->state.step, &val)) != LT_OK)
		return st;
	lt_metrics_say(t->metrics, "validation loss %.4f nats/token (ln vocab = %.4f), perplexity %.2f",
		       val, log((double)t->conf.model.vocab_size), exp(val));
	return lt_trainer_sample(t, t->state.step);
}

/* ------------------------------------------------------------ the API */

enum lt_status lt_trainer_new(lt_dist *d, const struct lt_conf *c, lt_trainer **out)
{
	lt_trainer *t = calloc(1, sizeof *t);
	*out = t;
	if (!t) {
		lt_errmsg_set("cannot allocate the trainer");
		return LT_ERR_NOMEM;
	}
	t->conf = *c;
	t->saved_step = -1;
	t->dist = t->job = d;
	t->lead = lt_dist_rank(d) == 0;
	t->agreement = (struct lt_agreement){ .dist = d, .timeout = c->dist.comm_timeout };
	lt_dist_set_timeout(d, c->dist.comm_timeout);
	enum lt_status st = c->dist.tp > 1 || c->dist.pp > 1
			    ? lt_mesh_new(d, c->dist.tp, c->dist.pp, &t->mesh) : LT_OK;
	if (t->mesh)
		t->dist = lt_mesh_dp_group(t->mesh);
	if (t->mesh && c->dist.pp > 1)
		lt_dist_set_stages(d, c->dist.pp);
	t->rank = lt_dist_rank(t->dist);
	t->ranks = lt_dist_size(t->dist);
	t->step_dist = t->dist;
	t->batch = c->train.batch;
	/* a slower node emulated for benchmarks and tests */
	const char *slow = getenv("LLTRAIN_BENCH_SLOW_MS");
	t->slow_s = slow ? atof(slow) / 1e3 : 0;
	return st;
}

enum lt_status lt_trainer_open(lt_trainer *t, const struct lt_trainer_start *s)
{
	enum lt_status st;
	t->state = *s->state;
	memset(s->state, 0, sizeof *s->state);
	t->stop_signal = s->stop_signal;
	t->probe = s->probe;
	if (isnan(t->conf.train.optim.lr) && !t->probe) {
		lt_errmsg_set("train.lr = auto: a range test must choose the rate before the run "
			      "starts (lltrain train does so for a new run)");
		return LT_ERR_CONFIG;
	}
	if ((st = lt_run_files_data_dir(&t->conf, t->data_dir, sizeof t->data_dir)) != LT_OK)
		return st;
	if ((st = lt_conf_check(&t->conf)) != LT_OK)
		return st;
	if ((st = prepare_run_dir(t, s)) != LT_OK)
		return st;
	if ((st = open_data(t)) != LT_OK)
		return st;
	if ((st = save_config(t)) != LT_OK)
		return st;
	if ((st = check_ranks_agree(t)) != LT_OK)
		return st;
	if ((st = lt_trainer_setup_local(t)) != LT_OK || (st = plan_shares(t)) != LT_OK)
		return st;
	if ((st = build_model(t, s)) != LT_OK)
		return st;
	if ((st = open_metrics(t)) != LT_OK)
		return st;
	return says_start(t) ? say_start(t, s) : LT_OK;
}

enum lt_status lt_trainer_run(lt_trainer *t)
{
	enum lt_status st = t->timed ? lt_trainer_rounds(t) : train_loop(t);
	if (t->probe || (st != LT_OK && st != LT_ERR_INTERRUPTED))
		return st;
	enum lt_status fin = finish_run(t, st);
	return fin != LT_OK ? fin : st;
}

int lt_trainer_failed_together(const lt_trainer *t)
{
	return t && t->agreement.failed_together;
}

void lt_trainer_close_metrics(lt_trainer *t)
{
	if (!t)
		return;
	lt_metrics_close(t->metrics);
	t->metrics = NULL;
}

void lt_trainer_free(lt_trainer *t)
{
	if (!t)
		return;
	lt_metrics_close(t->metrics);
	free(t->tokens);
	free(t->rows);
	free(t->expect);
	lt_balancer_free(t->balance);
	lt_zero_free(t->zero);
	lt_distill_free(t->distill);
	lt_local_sgd_free(t->local);
	lt_pipeline_free(t->pipe);
	free(t->stage_start);
	free(t->stage_s);
	free(t->stage_hist);
	lt_model_free(t->model);
	lt_mesh_free(t->mesh);
	lt_backend_free(t->be);
	lt_data_close(t->data);
	lt_tokenizer_free(t->tok);
	lt_ckpt_state_free(&t->state);
	free(t);
}
