/* The trainer: trains a model from a resolved config on prepared data over
 * the ranks of a job, as `lltrain train` runs it. It prepares the corpus
 * when the data directory holds none, writes RUN/config.ini, refuses ranks
 * that disagree, splits each batch over the ranks, builds (or resumes) the
 * model and its ZeRO exchange, then steps, evaluating, sampling and
 * checkpointing at the config's cadence, and ends with a checkpoint, the
 * validation loss and a sample. Rank 0's progress lines go to stdout
 * (through lt_metrics); a failure comes back as a status, lt_errmsg saying
 * what and where.
 *
 * The calls after lt_trainer_new are collective: every rank of the job
 * makes them, and the ranks agree after each part (lt_agree), so that a
 * failure on one rank fails the call on all of them ("WHAT failed on rank
 * N (its message says why)"), or, where a rank cannot tell the others,
 * leaves them waiting: lt_trainer_failed_together says which.
 *
 * Ownership: lt_trainer_new gives a trainer that lt_trainer_free releases;
 * it copies the config, takes over the checkpoint state it is given, and
 * borrows the lt_dist, which must outlive it. */
#ifndef LT_TRAINER_H
#define LT_TRAINER_H

#include <signal.h>

#include "backend.h"
#include "conf.h"
#include "dist/dist.h"
#include "io/checkpoint.h"
#include "io/metrics.h"
#include "status.h"

typedef struct lt_trainer lt_trainer;

/* A learning-rate range test's hold on a run (lltrain tune-lr): step i of
 * it (from 1) trains at lr_at's rate, warmup and decay set aside, and
 * `seen` then gets the step's metrics on every rank: the rate (lr), the
 * training loss (the mean over every rank's targets; NAN or infinite when
 * it was not finite) and this rank's memory (mem_peak_bytes ...); job
 * rank 0's answer, nonzero to stop after that step, is every rank's. Such a run
 * writes nothing into the run directory -- no config.ini, metrics.jsonl,
 * TensorBoard files or checkpoints, not on a signal nor for --balance
 * auto's moves of pipeline blocks -- though it prepares the data when
 * there are none; it leaves the damaged checkpoints of the start where
 * they are, and ends after its steps without an evaluation or a sample. */
struct lt_trainer_probe {
	int steps;  /* the most steps it runs after the start's, whatever train.steps */
	double (*lr_at)(void *ctx, int i);
	int (*seen)(void *ctx, int i, const struct lt_step_metrics *sm);
	void *ctx;
	int quiet;  /* 1: the run's first lines (model, memory, ranks, data) unsaid */
};

/* Where a run starts, and what may stop it. */
struct lt_trainer_start {
	/* The checkpoint directory a resumed run continues, or NULL. */
	const char *checkpoint;
	/* Its verified state (lt_checkpoint_resolve), all zeros for a new run;
	 * taken over: *state is left empty. */
	struct lt_ckpt_state *state;
	/* (optional) The checkpoints the search for it passed over, damaged
	 * (lt_checkpoint_latest): rank 0 moves each one aside
	 * (lt_checkpoint_set_aside), so that the run's saves and pruning
	 * leave it as it is, and reports it in one line before "resumed
	 * from"; then the list is emptied (lt_ckpt_skips_free). A list
	 * still full after a failure was not reported. */
	struct lt_ckpt_skips *skipped;
	/* The corpus to prepare when the data directory holds no prepared
	 * data (n_corpus 0: data.corpus); with prepared data there, corpus
	 * files are refused. */
	const char *const *corpus;
	int n_corpus;
	/* (optional) Opens run.device: the command's way, which says which
	 * device "auto" chose. NULL: lt_backend_new. */
	enum lt_status (*open_backend)(const char *spec, int threads, lt_backend **out);
	/* (optional) Set to a signal's number by the caller's handler: the
	 * loop saves a checkpoint after the step under way and stops. */
	volatile sig_atomic_t *stop_signal;
	/* (optional) A range test's hold on the run, borrowed; NULL for
	 * training, which refuses a train.lr of auto (NAN). */
	const struct lt_trainer_probe *probe;
};

/* A trainer for config c over the ranks of d, nothing opened yet; sets
 * d's watchdog limit to dist.comm_timeout. Not collective. */
enum lt_status lt_trainer_new(lt_dist *d, const struct lt_conf *c, lt_trainer **out);

/* Everything before the first step: checks the config, prepares the data
 * (rank 0, when there is none) and opens it (the model's vocabulary
 * follows the tokenizer's), writes RUN/config.ini, checks that every rank
 * sees it and agrees on config, data and step, splits the batch, builds
 * the model (from the checkpoint when resuming), reports its memory,
 * opens RUN/metrics.jsonl, moves the damaged checkpoints the start names
 * aside and prints the run's first lines. */
enum lt_status lt_trainer_open(lt_trainer *t, const struct lt_trainer_start *s);

/* The steps after the start's, then a checkpoint, the validation loss and
 * a sample. LT_OK when the steps or train.max_minutes are done,
 * LT_ERR_INTERRUPTED (after a checkpoint) when the start's signal came,
 * LT_ERR_NUMERIC after train.max_bad_steps non-finite steps in a row.
 * A range test (the start's probe) runs its steps alone: LT_OK when they
 * are done or it stopped them, LT_ERR_INTERRUPTED (nothing saved) for a
 * signal. */
enum lt_status lt_trainer_run(lt_trainer *t);

/* Whether every rank knows of the last failure (the job may end with
 * lt_dist_finalize); 0 for NULL, when the ranks have yet to agree on
 * anything. */
int lt_trainer_failed_together(const lt_trainer *t);

/* Ends the progress line and closes metrics.jsonl (NULL accepted). A rank
 * whose failure the others do not know of calls this and then
 * lt_dist_abort, without lt_trainer_free: freeing the exchange's shared
 * memory takes every rank. */
void lt_trainer_close_metrics(lt_trainer *t);

void lt_trainer_free(lt_trainer *t);

#endif
