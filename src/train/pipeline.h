/* Pipeline parallelism in the trainer: a step's micro-batches through the
 * stages of a pipeline in the one-forward-one-backward order (1F1B), the
 * activations and their gradients crossing between neighbouring stages as
 * messages started as early as possible, so that they travel while the
 * stages compute; and how the stages split the model's blocks.
 *
 * Ownership: lt_pipeline_new gives a pipeline that lt_pipeline_free
 * releases; it borrows the group, the model and the exchange. */
#ifndef LT_PIPELINE_H
#define LT_PIPELINE_H

#include <stdint.h>

#include "dist/dist.h"
#include "dist/zero.h"
#include "io/metrics.h"
#include "model.h"

typedef struct lt_pipeline lt_pipeline;

/* Every stage's first block, then the layers: *start[pp + 1] (the
 * caller frees it), from layers[pp] (each stage's blocks) or, with
 * layers NULL or all 0, the split that evens the stages' work, each block
 * counted by its FLOPs per token at seq and the head with the last stage
 * (the embedding's lookup costs next to nothing). */
enum lt_status lt_pipeline_starts(const struct lt_model_config *c, int seq, int pp,
				  const int *layers, int **start);

/* For stages of blocks start[pp + 1] that took seconds[pp] each: the
 * split better[pp + 1] that evens their times at the speeds they showed
 * (each stage's FLOPs over its seconds), and its predicted slowest
 * stage's time over the slowest one's now. */
double lt_pipeline_resplit(const struct lt_model_config *c, int seq, int pp, const int *start,
			   const double *seconds, int *better);

/* One line: the stages' blocks and the schedule's ideal bubble,
 * (pp - 1) / (micro + pp - 1). */
void lt_pipeline_say(lt_metrics *mt, const int *start, int pp, int micro);
/* The seconds a boundary tensor took from a stage to the next, as
 * lt_pipeline_new measured it (the slowest pair's least). */
double lt_pipeline_cross_seconds(const lt_pipeline *p);

/* The micro-batches a stage s of pp keeps in flight: 1F1B's pp - s, and
 * `ahead` more but on the last stage. */
int lt_pipeline_in_flight(int pp, int s, int ahead);

/* The host bytes of stage s's boundary buffers for tensors of n floats,
 * keeping `sets` micro-batches in flight. */
size_t lt_pipeline_host_bytes(int pp, int s, size_t n, int sets);

/* The pipeline of this rank's stage (its rank in pp) over the model m of
 * that stage, whose plan holds `rows` sequences of `seq` tokens and
 * whose activation sets hold lt_pipeline_in_flight's micro-batches (or
 * the step's, if fewer); with `exact`, each micro-batch's gradient goes
 * into ZeRO's exact sum after its backward (deterministic runs:
 * micro-batches of one sequence). */
enum lt_status lt_pipeline_new(lt_dist *pp, lt_model *m, lt_zero *z, int rows, int seq,
			       int exact, int ahead, lt_pipeline **out);
void lt_pipeline_free(lt_pipeline *p);

/* Where a step's micro-batch a comes from: its tokens and targets. */
struct lt_pipeline_source {
	enum lt_status (*batch)(void *ctx, int a, int32_t *tokens, int32_t *targets);
	void *ctx;
};

/* One step's forwards and backwards of `micro` micro-batches, each
 * backward armed for the exchange (the last for its final one); the last
 * stage adds the loss and the target count to sums[0], sums[1]. */
enum lt_status lt_pipeline_step(lt_pipeline *p, int micro, const struct lt_pipeline_source *src,
				 float scale, double *sums);
/* A forward alone through the stages (evaluation): the last stage gives
 * the loss and its targets, the others 0. */
enum lt_status lt_pipeline_forward(lt_pipeline *p, const int32_t *tokens, const int32_t *targets,
				   double *loss, long *n);

/* Collective over the pipeline: each stage's seconds of the last step,
 * all[2 * stages]: its forwards and backwards, then its waits for the
 * neighbours' messages (the bubble and any transfer not hidden); and the
 * stages' mean share of waiting, *bubble. */
enum lt_status lt_pipeline_times(const lt_pipeline *p, double *all, double *bubble);

#endif
