/* Gradient slots: the layout of a gradient buffer that keeps k blocks. */
#include "config.h"
#include "dist/grad_slots.h"

#include <stdlib.h>

void lt_grad_slots_of(const lt_model *m, int k, struct lt_grad_slots *s)
{
	int L = lt_model_config_of(m)->n_layers;
	s->first = lt_model_block_begin(m, 0);
	s->block = lt_model_block_begin(m, 1) - s->first;
	s->output = lt_model_block_begin(m, L);
	s->numel = lt_model_num_params(m);
	s->layers = L;
	s->k = k <= 0 ? 0 : k < L ? k : L;
	s->shared = 0;
}

void lt_grad_slots_share(struct lt_grad_slots *s)
{
	s->shared = s->k > 0 && s->first > 0;
}

/* Where the slots start, and where the output range starts, in a buffer
 * so laid out (with slots). */
static size_t slots_at(const struct lt_grad_slots *s)
{
	return s->shared ? 0 : s->first;
}

static size_t output_at(const struct lt_grad_slots *s)
{
	size_t end = slots_at(s) + (size_t)s->k * s->block;
	return end > s->first ? end : s->first;
}

size_t lt_grad_slots_numel(const struct lt_grad_slots *s)
{
	return s->k ? output_at(s) + (s->numel - s->output) : s->numel;
}

size_t lt_grad_slots_config_numel(const struct lt_model_config *c, int k)
{
	int kept = k > 0 && k < c->n_layers ? k : c->n_layers;
	return lt_model_config_params(c) -
	       (size_t)(c->n_layers - kept) * lt_model_config_block_params(c);
}

int lt_grad_slots_block_of(const struct lt_grad_slots *s, size_t off)
{
	return off < s->first || off >= s->output ? -1 : (int)((off - s->first) / s->block);
}

size_t lt_grad_slots_index(const struct lt_grad_slots *s, size_t off)
{
	int b = lt_grad_slots_block_of(s, off);
	if (s->k == 0 || off < s->first)
		return off;
	if (b < 0)
		return output_at(s) + (off - s->output);
	return slots_at(s) + (size_t)(b % s->k) * s->block + (off - s->first - (size_t)b * s->block);
}

enum lt_status lt_grad_slots_apply(lt_model *m, const struct lt_grad_slots *s)
{
	if (s->k == 0)
		return lt_model_set_grad_layout(m, NULL);
	size_t *block = malloc((size_t)s->layers * sizeof *block);
	if (!block) {
		lt_errmsg_set("cannot allocate the gradient slots' layout");
		return LT_ERR_NOMEM;
	}
	for (int l = 0; l < s->layers; l++)
		block[l] = lt_grad_slots_index(s, s->first + (size_t)l * s->block);
	struct lt_grad_layout layout = { .numel = lt_grad_slots_numel(s),
					 .output = lt_grad_slots_index(s, s->output),
					 .block = block };
	enum lt_status st = lt_model_set_grad_layout(m, &layout);
	free(block);
	return st;
}
