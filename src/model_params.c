/* Where the model's parameters lie: in place in the flat buffer, or in a
 * caller's layout that keeps only some blocks (ZeRO stage 3), with the
 * hook that brings each block before it computes. */
#include "config.h"
#include "model.h"

#include <string.h>

#include "model_impl.h"

/* The size of a layout, and its places checked against the model's. */
static size_t checked_size(const lt_model *m, const struct lt_grad_layout *layout)
{
	size_t first = first_block(m);
	if (!layout)
		return m->numel;
	LT_ASSERT(layout->output >= first &&
		  layout->output + (m->numel - output_begin(m)) <= layout->numel);
	for (int l = 0; l < m->cfg.n_layers; l++)
		LT_ASSERT(layout->block[l] >= first &&
			  layout->block[l] + block_numel(m) <= layout->numel);
	return layout->numel;
}

/* The embedding and the output range from the old buffer into the new,
 * each where its layout puts it. */
static void carry_whole_ranges(lt_model *m, lt_buf *from, size_t from_output, lt_buf *to,
			       size_t to_output)
{
	size_t first = first_block(m), tail = m->numel - output_begin(m);
	if (first)
		m->be->ops->copy(m->be, (lt_ref){ to, 0 }, (lt_ref){ from, 0 }, first);
	if (tail)
		m->be->ops->copy(m->be, (lt_ref){ to, to_output }, (lt_ref){ from, from_output },
				 tail);
}

enum lt_status lt_model_set_param_layout(lt_model *m, const struct lt_grad_layout *layout)
{
	LT_ASSERT(!m->base && !m->kv);
	size_t n = checked_size(m, layout), old_output = m->params_sliced ? m->param_output
									   : output_begin(m);
	size_t output = layout ? layout->output : output_begin(m);
	lt_buf *params = NULL, *weights = NULL;
	enum lt_status st = lt_buf_new(m->be, LT_F32, n, &params);
	if (st == LT_OK && m->weights)
		st = lt_buf_new(m->be, LT_BF16, n, &weights);
	if (st != LT_OK) {
		lt_buf_free(m->be, params);
		lt_errmsg_prefix("parameter buffer of %zu elements", n);
		return st;
	}
	carry_whole_ranges(m, m->params, old_output, params, output);
	if ((st = m->be->ops->sync(m->be)) != LT_OK) {
		lt_buf_free(m->be, params);
		lt_buf_free(m->be, weights);
		return st;
	}
	lt_buf_free(m->be, m->params);
	lt_buf_free(m->be, m->weights);
	m->params = params;
	m->weights = weights;
	m->params_sliced = layout != NULL;
	m->params_numel = n;
	m->param_output = output;
	for (int l = 0; l < m->cfg.n_layers; l++)
		m->param_block[l] = layout ? layout->block[l]
					   : first_block(m) + (size_t)l * block_numel(m);
	return LT_OK;
}

size_t lt_model_param_index(const lt_model *m, size_t off)
{
	return param_index(m, off);
}

size_t lt_model_params_numel(const lt_model *m)
{
	return m->params_sliced ? m->params_numel : m->numel;
}

void lt_model_set_param_hook(lt_model *m, const struct lt_param_hook *hook)
{
	if (hook)
		m->param_hook = *hook;
	else
		memset(&m->param_hook, 0, sizeof m->param_hook);
}

enum lt_status lt_model_need_block(lt_model *m, int l, int backward)
{
	if (!m->param_hook.need)
		return LT_OK;
	enum lt_status st = m->param_hook.need(m->param_hook.ctx, l, backward);
	if (st == LT_OK && m->weights && m->params_sliced)
		m->be->ops->convert(m->be, (lt_ref){ m->weights, m->param_block[l] },
				    (lt_ref){ m->params, m->param_block[l] }, block_numel(m));
	return st;
}
