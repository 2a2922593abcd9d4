/* What the trainer's files share: the run's struct and the helpers of the
 * steps, the evaluation and the sample; private to src/train/trainer*.c.
 *
 * Ownership: the trainer owns everything its struct points to but the job. */
#ifndef LT_TRAINER_IMPL_H
#define LT_TRAINER_IMPL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "dist/agree.h"
#include "dist/balance.h"
#include "dist/local_sgd.h"
#include "dist/mesh.h"
#include "dist/zero.h"
#include "io/metrics.h"
#include "model.h"
#include "optim.h"
#include "text/data.h"
#include "text/tokenizer.h"
#include "train/distill.h"
#include "train/pipeline.h"
#include "train/run_files.h"
#include "train/step_time.h"
#include "train/trainer.h"

/* How long rank 0's own work (data preparation, a checkpoint's files) may
 * keep the other ranks waiting. */
#define LONG_WAIT_SECONDS 3600.0

/* Everything one run holds. */
struct lt_trainer {
	struct lt_conf conf;
	lt_dist *dist;            /* the data-parallel ranks (the job's, or the mesh's group) */
	int rank, ranks;          /* in dist */
	lt_dist *job;             /* every rank */
	int lead;                 /* job rank 0: prints and commits */
	lt_mesh *mesh;            /* dist.tp or dist.pp > 1: the job's mesh */
	lt_pipeline *pipe;        /* dist.pp > 1: this rank's stage of its pipeline */
	int *stage_start;         /* with it: each stage's first block, then the layers */
	double *stage_s;          /* and each stage's compute, then wait, seconds of a step */
	/* --balance auto over the stages (trainer_pp.c) */
	double *stage_hist;       /* [LT_STAGE_HISTORY * pp]: measured steps' stage seconds */
	int hist_n;
	int have_pending;         /* the last comparison called for a move */
	long next_compare;        /* the step after which the stages compare next */
	long warm_step;           /* the step after a move, which is not measured */
	int second;               /* that comparison is the second of a pair */
	long saved_step;          /* the step of the last checkpoint saved (-1: none), */
	char saved[LT_RUN_PATH_CAP];  /* and its directory */
	struct lt_agreement agreement;
	volatile sig_atomic_t *stop_signal;  /* the start's: a signal's number stops the loop */
	const struct lt_trainer_probe *probe;  /* the start's range test, or NULL */
	long probe_from;          /* with it: the step before its first */
	lt_zero *zero;
	lt_local_sgd *local;      /* dist.sync = local; NULL when every step is shared */
	/* local SGD's rounds of wall time (dist.round_seconds > 0): each node
	 * steps on its own, so a step's collectives go over the node's ranks;
	 * otherwise step_dist is dist, and the node's agreement unused */
	int timed;
	lt_dist *step_dist;       /* the ranks a step's sums go over (rank, ranks are in it) */
	struct lt_agreement node_agreement;
	int batch;                /* a step's sequences: train.batch, or timed the node's share */
	int node_row0;            /* timed: this node's first window of a validation batch */
	long round_steps;         /* timed: this node's steps in the round, */
	long *expect;             /* timed: [nodes] each node's steps in the last round, what
				     this one's data blocks are laid out for (0: none yet) */
	double round_tokens;      /* their trained tokens */
	int round_ended;          /* timed: the last step ended the round */
	double slow_s;            /* LLTRAIN_BENCH_SLOW_MS: seconds added to each step */
	size_t *rows;             /* [ranks]: each rank's sequences of a step, dealt over
				     its micro-batches by lt_shares_rows_in */
	int plan_rows;            /* the most sequences per forward (1 when deterministic) */
	struct lt_step_time time; /* where this step's seconds went */
	lt_balancer *balance;     /* --balance auto; NULL when the shares stay even */
	int stop;                 /* after this step, stop: 1 for a signal, 2 for the time budget */
	char data_dir[LT_RUN_PATH_CAP];
	char tok_path[LT_RUN_PATH_CAP];
	lt_tokenizer *tok;
	lt_data *data;
	lt_backend *be;
	lt_model *model;
	lt_distill *distill;      /* distill.teacher's, or NULL */
	lt_optim *opt;
	lt_metrics *metrics;
	int32_t *tokens, *targets;
	struct lt_ckpt_state state;
	double flops_per_token;
};

/* The steps of stage times a comparison takes the median of, at most. */
#define LT_STAGE_HISTORY 64

/* lt_agree over the job's ranks. */
enum lt_status lt_trainer_agree(lt_trainer *t, enum lt_status st, const char *what, double wait);
/* One optimizer step at `step` (its learning rate's), metrics into sm
 * (trainer.c). */
enum lt_status lt_trainer_step(lt_trainer *t, long step, double loop_start,
			       struct lt_step_metrics *sm);
/* After a step ended at `now`: sm's rates over the seconds since *last
 * (then now), `tokens` trained so far, the step's times, the bytes sent
 * between nodes and the memory (trainer.c). */
void lt_trainer_measure(lt_trainer *t, struct lt_step_metrics *sm, long tokens, double now,
			double *last);
/* LT_ERR_NUMERIC, said, when a skipped step makes train.max_bad_steps in
 * a row (trainer.c). */
enum lt_status lt_trainer_check_bad_steps(const lt_trainer *t, long step, int skipped);
/* --balance auto after `step` (trainer.c). */
enum lt_status lt_trainer_rebalance(lt_trainer *t, long step);
/* After `step` (not the last): evaluation, sample and checkpoint where
 * run.*_every falls in (from, step] (trainer.c). */
enum lt_status lt_trainer_after(lt_trainer *t, long from, long step);
/* Rounds of wall time: the block of node-sized steps, counted from the
 * round's first sequence, that this node's next step reads
 * (trainer_rounds.c). */
uint64_t lt_trainer_round_block(const lt_trainer *t);
/* Local SGD's rounds of wall time: the step loop (trainer_rounds.c). */
enum lt_status lt_trainer_rounds(lt_trainer *t);
/* With dist.sync = local, before the shares are planned: local SGD's
 * state, and with rounds of wall time the node's ranks as the step's
 * (trainer_rounds.c). */
enum lt_status lt_trainer_setup_local(lt_trainer *t);
struct lt_rank_layout;
/* Rank 0 lists the ranks and their shares of a step (trainer_rounds.c). */
enum lt_status lt_trainer_report_ranks(lt_trainer *t, const struct lt_rank_layout *l);
/* Rank i's sequences in micro-batch a of a step, and this rank's first. */
int lt_trainer_rows_in(const lt_trainer *t, int i, int a);
int lt_trainer_first_row_in(const lt_trainer *t, int a);
/* Plans a forward of `rows` sequences. */
enum lt_status lt_trainer_plan_forward(lt_trainer *t, int rows);
/* buf[n] summed over this rank's pipeline (none: as it is). */
enum lt_status lt_trainer_sum_over_pipeline(lt_trainer *t, double *buf, int n);
/* A checkpoint of the run now, its directory into path[LT_RUN_PATH_CAP]
 * on every rank. */
enum lt_status lt_trainer_save(lt_trainer *t, char *path);
/* With dist.pp > 1 (trainer_pp.c): this rank's stage's model, of the
 * stages' blocks (dist.pp_layers, or by cost, or as --balance auto last
 * moved them), with its precision, activation sets and recompute. */
enum lt_status lt_trainer_pp_model(lt_trainer *t);
/* --balance auto after `step`: the stages' times compared as due, and
 * the blocks moved between stages on a lasting difference (through a
 * checkpoint the stages' new models read). */
enum lt_status lt_trainer_pp_balance(lt_trainer *t, long step);
/* The validation loss, logged at `step` (trainer_eval.c). */
enum lt_status lt_trainer_evaluate(lt_trainer *t, long step, double *val);
/* A sample printed by rank 0; the others wait for it (trainer_eval.c). */
enum lt_status lt_trainer_sample(lt_trainer *t, long step);

#endif
