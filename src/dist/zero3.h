/* ZeRO stage 3's parameter side: each rank keeps its range of the flat
 * parameter buffer (the one AdamW updates), and the model holds nothing
 * else whole: only LT_ZERO3_SLOTS block-sized slots, into which each
 * block is all-gathered just before its forward and again before its
 * backward, the embedding table before the lookup, and the output range
 * (with the tied head's table) before the final norm and the head, the
 * next one's gather started before the current one computes where the
 * two fit in different slots. A table larger than a slot is gathered
 * from the first slot's start on, over the second, the two growing to
 * the output range's size where two blocks are smaller.
 *
 * Asked for the output range in a forward, the hook returns with every
 * collective of the ranks done, the gradient exchanges of the last
 * backward too: the forward may write the head's weight gradient into
 * the gradient buffer then (lt_model_set_head_grad_direct).
 *
 * The ranks are those of the lt_dist it is given: a data-parallel group,
 * of which it assumes nothing else.
 *
 * Ownership: lt_zero3_new gives an lt_zero3 that lt_zero3_free releases;
 * it borrows the ranks, the model and the ranges. */
#ifndef LT_ZERO3_H
#define LT_ZERO3_H

#include <stddef.h>

#include "dist/dist.h"
#include "model.h"

/* Slots of the model's parameters: the block (or table) computing and
 * the one whose gather is under way. */
#define LT_ZERO3_SLOTS 2

typedef struct lt_zero3 lt_zero3;

/* Elements of the model's parameter buffer once sliced, for a model of
 * configuration c: the slots, or the output piece (the final norm and
 * the tied table or the untied head) where that is larger. */
size_t lt_zero3_numel(const struct lt_model_config *c);

/* For model m over the ranks of d, rank r owning [off[r], off[r + 1])
 * of the flat buffer (off stays the caller's): allocates this rank's
 * parameter range. The model keeps its whole buffer until lt_zero3_slice. */
enum lt_status lt_zero3_new(lt_dist *d, lt_model *m, const size_t *off, lt_zero3 **out);
void lt_zero3_free(lt_zero3 *z);
/* This rank's range of the parameters, where AdamW updates them. */
lt_ref lt_zero3_range(const lt_zero3 *z);
/* Bytes of the model's parameter buffer (and bf16 copy) and of the
 * gathers' host copy, once sliced. */
size_t lt_zero3_bytes(const lt_zero3 *z);

/* With the whole parameters in the model's buffer (as initialised or
 * loaded, the same on every rank): keeps this rank's range, and gives the
 * model its slots and the hook that gathers what it reads. A no-op when
 * sliced. */
enum lt_status lt_zero3_slice(lt_zero3 *z);
/* The reverse, collective: the model's buffer whole again, every rank's
 * range gathered into it (for a checkpoint's model file or a sample). A
 * no-op when whole. */
enum lt_status lt_zero3_whole(lt_zero3 *z);
/* After AdamW changed this rank's range: what the slots hold is out of
 * date (whole: every range gathered again). */
enum lt_status lt_zero3_updated(lt_zero3 *z);
/* A rank with fewer passes in a step than another: the gathers of one
 * forward (and with backward, of its backward) with no computing, so
 * that every rank takes part in every gather. */
enum lt_status lt_zero3_idle_pass(lt_zero3 *z, int backward);

#endif
