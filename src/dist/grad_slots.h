/* Gradient slots, for ZeRO stage 2: a layout of a gradient buffer that
 * keeps the embedding's and the output range's gradients whole but only k
 * block-sized slots, block l's gradients in slot l % k. The model's
 * gradient buffer takes it (through lt_model_set_grad_layout), so that
 * backward holds k blocks' gradients rather than all; the node's shared
 * memory lays its copies out the same way.
 *
 * Ownership: a struct lt_grad_slots is a plain value; lt_grad_slots_apply
 * changes the model it is given and keeps nothing. */
#ifndef LT_GRAD_SLOTS_H
#define LT_GRAD_SLOTS_H

#include <stddef.h>

#include "model.h"

/* A gradient buffer's layout of the flat elements [0, numel): the
 * embedding table [0, first), `layers` blocks of `block` elements from
 * first on, the output range [output, numel). */
struct lt_grad_slots {
	size_t first;   /* where block 0 starts */
	size_t block;   /* elements of one block */
	size_t output;  /* where the output range starts: first + layers * block */
	size_t numel;   /* flat elements */
	int layers;
	int k;          /* slots: 0 (the whole buffer, every element in place) to layers */
	int shared;     /* with slots: they start at 0, over the embedding's range (its
			 * gradient comes after block 0's), not after it */
};

/* The layout of m's flat buffer with k slots (k <= 0: the whole buffer; k
 * beyond the layers: as many as the layers), apart from the embedding's
 * range; lt_grad_slots_share then lays them over it where m has one. */
void lt_grad_slots_of(const lt_model *m, int k, struct lt_grad_slots *s);
void lt_grad_slots_share(struct lt_grad_slots *s);
/* Elements of a buffer so laid out. */
size_t lt_grad_slots_numel(const struct lt_grad_slots *s);
/* The same for a model of configuration c, before one exists (not
 * shared). */
size_t lt_grad_slots_config_numel(const struct lt_model_config *c, int k);
/* Where the gradient of flat element off lies in a buffer so laid out. */
size_t lt_grad_slots_index(const struct lt_grad_slots *s, size_t off);
/* The block whose range holds flat element off; -1 for the embedding's and
 * the output range. */
int lt_grad_slots_block_of(const struct lt_grad_slots *s, size_t off);
/* Gives m's gradient buffer this layout (k = 0: the whole buffer, added
 * into), reallocated and zeroed; on failure m has none and can only be
 * freed. With slots, backward writes rather than adds, and the hook told
 * of block l's range must be done reading block l + k - 1's when it
 * returns: block l - 1 reuses that slot. */
enum lt_status lt_grad_slots_apply(lt_model *m, const struct lt_grad_slots *s);

#endif
