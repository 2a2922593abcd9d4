/* Data-parallel training over the ranks of an lt_dist: the gradient
 * reduction of ZeRO stage 0, 1, 2 or 3, AdamW on this rank's range of the
 * flat buffer, and the all-gather of the updated parameters.
 *
 * Stage 0 all-reduces the whole gradient and every rank runs AdamW on all
 * of it. Stages 1 and 2 give rank r the contiguous range [off[r], off[r+1])
 * of the flat buffer (dist/reduce.h): it keeps the AdamW moments of that
 * range only, receives the reduced gradient of that range (a
 * reduce-scatter), updates it, and the ranks all-gather the parameters.
 * Stage 2 starts the reduce-scatter of each layer's gradients as soon as
 * the backward pass has finished that layer, so communication runs during
 * the rest of backward; the model then keeps only LT_ZERO_GRAD_SLOTS
 * blocks' gradients besides the embedding and output ranges
 * (dist/grad_slots.h), every backward of a step is exchanged, and the
 * range's sum accumulates in the shard. Stage 0 also overlaps, in the
 * step's last backward. Stage 3 exchanges gradients as stage 2 does, in
 * LT_ZERO3_GRAD_SLOTS slots, and
 * keeps only the rank's range of the parameters, gathering each block,
 * the embedding table and the output range as the model reads them
 * (dist/zero3.h); it exchanges through MPI.
 *
 * The ranks exchange along one path, chosen once: MPI's collectives;
 * the node's shared memory, for ranks that all run on one node or as many
 * on each node (dist/node_sum.h); or, for --deterministic, the exact
 * fixed-point sum of every sequence's gradient (dist/exact_sum.h), which
 * is bitwise the same for any number of ranks.
 *
 * Ownership: lt_zero_new gives an lt_zero that lt_zero_free releases; it
 * owns its optimizer and borrows the ranks and the model. */
#ifndef LT_ZERO_H
#define LT_ZERO_H

#include <stddef.h>

#include "dist/dist.h"
#include "model.h"
#include "optim.h"

/* Blocks whose gradients stage 2 keeps at once: the one backward writes
 * and the one whose exchange is under way. */
#define LT_ZERO_GRAD_SLOTS 2
/* Stage 3 keeps one: a block's reduce-scatter completes before the block
 * below writes its gradients (the wait costs little beside a block's
 * backward, and a rank at stage 3 is one short of memory). */
#define LT_ZERO3_GRAD_SLOTS 1

/* The gradient slots of stage `stage` over `ranks` ranks: 0 (the whole
 * buffer) where it keeps no slots. */
int lt_zero_grad_slots(int stage, int ranks, int deterministic);

typedef struct lt_zero lt_zero;

/* Turns a one-process memory estimate into that of one of `ranks` ranks at
 * ZeRO stage `stage` (its batch already the rank's share): stages 1 to 3
 * keep 1/ranks of the AdamW moments; stages 2 and 3 (not deterministic)
 * also a 1/ranks gradient shard plus the model's gradient slots; stage 3
 * 1/ranks of the parameters (params) and the slots that blocks, the
 * embedding table and the output range are gathered into (gathered), and
 * where the estimate counts the head's weight gradient in its activations
 * (head: a model with one activation set and the head) writes it into
 * the gradient buffer instead. */
void lt_zero_estimate(struct lt_mem_estimate *e, const struct lt_model_config *c, int ranks,
		      int stage, int deterministic, int head);

/* Sets up stage 0, 1 or 2 over d for model m, allocating the optimizer's
 * moments for this rank's range and the buffers the exchange needs (stage
 * 2 over ranks gives the model gradient slots, which it keeps). With
 * node_memory, ranks that all run on one node, or as many on each node,
 * exchange through its shared memory (each rank sums a piece of every
 * bucket over all ranks' copies) instead of MPI's collectives;
 * deterministic runs always use MPI. No
 * backward of a rank sees more than `tokens` tokens. */
enum lt_status lt_zero_new(lt_dist *d, lt_model *m, int stage, int deterministic,
			   int node_memory, size_t tokens, lt_zero **out);
void lt_zero_free(lt_zero *z);

/* The optimizer of this rank's range; at stage 3 none (NULL) until the
 * first lt_zero_shard, which allocates its moments once the whole
 * parameters are gone: a checkpoint's moments load after it. */
lt_optim *lt_zero_optim(const lt_zero *z);
/* How the ranks exchange gradients and parameters, and why: "through the
 * shared memory of the ranks' one node" or "MPI collectives (REASON)". */
const char *lt_zero_exchange(const lt_zero *z);
/* The ranges: rank r owns [off[r], off[r+1]) (stage 0: all of it). */
const size_t *lt_zero_ranges(const lt_zero *z);
/* Host bytes this rank allocated for the exchange (staging copies, the
 * gradient shard, the fixed-point sum); the moments are the backend's. */
size_t lt_zero_bytes(const lt_zero *z);

/* Stage 3 (else no-ops): after the model's parameters were initialised or
 * loaded whole, keeps this rank's range and slices the model (the first
 * time, then allocates the optimizer's zeroed moments); and the
 * reverse, collective, before anything reads the whole model by its flat
 * offsets (a checkpoint's model file, a sample). */
enum lt_status lt_zero_shard(lt_zero *z);
enum lt_status lt_zero_whole(lt_zero *z);
/* Stage 3 (else a no-op), collective, before this rank runs `passes`
 * forwards (with backward, each with its backward) of a micro-batch or an
 * evaluation batch: where another rank runs more, the block gathers of
 * those this one will not run, with no computing, so that every rank
 * takes part in each gather in the same order. */
enum lt_status lt_zero_catch_up(lt_zero *z, int passes, int backward);

/* Call before each backward of a step, `last` for its final one: stage 2
 * then exchanges each layer's gradients as the backward finishes them (in
 * every backward: it first waits for the previous one's exchanges), stage
 * 0 in the last backward only, and stage 1 the whole buffer after it. */
enum lt_status lt_zero_arm(lt_zero *z, int last);
/* Deterministic runs, after each one-sequence backward: adds the gradient
 * buffer into the exact sum and zeroes it. */
enum lt_status lt_zero_add_sequence(lt_zero *z);
/* After the step's last backward: completes the reduction (the summed
 * gradient of this rank's range is then in the model's gradient buffer)
 * and gives the global gradient norm (not finite when a gradient is not). */
enum lt_status lt_zero_reduce(lt_zero *z, double *norm);
/* AdamW on this rank's range with that norm, then the all-gather of the
 * parameters, so every rank holds the same model. */
enum lt_status lt_zero_update(lt_zero *z, const struct lt_optim_config *oc, int step,
			      double norm);

#endif
