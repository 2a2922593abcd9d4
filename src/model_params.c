/* Where the model's parameters lie: in place in the flat buffer, or in a
 * caller's layout that keeps only some of them at a time (ZeRO stage 3),
 * with the hook that brings a block, the embedding table or the output
 * range before it is read; and the bf16 compute copy of them. */
#include "config.h"
#include "model.h"

#include <string.h>

#include "model_impl.h"

/* The size of a layout, and its blocks' places checked against it. */
static size_t checked_size(const lt_model *m, const struct lt_param_layout *layout)
{
	if (!layout)
		return m->numel;
	for (int l = 0; l < m->cfg.n_layers; l++)
		LT_ASSERT(layout->block[l] + block_numel(m) <= layout->numel);
	return layout->numel;
}

enum lt_status lt_model_set_param_layout(lt_model *m, const struct lt_param_layout *layout)
{
	LT_ASSERT(!m->base && !m->kv);
	size_t n = checked_size(m, layout);
	lt_buf *params = NULL, *weights = NULL;
	/* the old buffers go first: the two never take room at once */
	lt_buf_free(m->be, m->params);
	lt_buf_free(m->be, m->weights);
	m->params = m->weights = NULL;
	enum lt_status st = lt_buf_new(m->be, LT_F32, n, &params);
	if (st == LT_OK && m->precision == LT_PRECISION_BF16)
		st = lt_buf_new(m->be, LT_BF16, n, &weights);
	if (st != LT_OK) {
		lt_buf_free(m->be, params);
		lt_errmsg_prefix("parameter buffer of %zu elements", n);
		return st;
	}
	m->params = params;
	m->weights = weights;
	m->params_sliced = layout != NULL;
	m->params_deferred = 0;
	m->params_numel = n;
	m->param_embed = 0;
	m->param_output = layout ? 0 : output_begin(m);
	for (int l = 0; l < m->cfg.n_layers; l++)
		m->param_block[l] = layout ? layout->block[l]
					   : first_block(m) + (size_t)l * block_numel(m);
	return LT_OK;
}

void lt_model_place_ranges(lt_model *m, size_t embed, size_t output)
{
	LT_ASSERT(m->params_sliced && embed + first_block(m) <= m->params_numel &&
		  output + (m->numel - output_begin(m)) <= m->params_numel);
	m->param_embed = embed;
	m->param_output = output;
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

enum lt_status lt_model_set_precision(lt_model *m, enum lt_precision p)
{
	LT_ASSERT(!m->acts && !m->kv);
	lt_buf_free(m->be, m->weights);
	m->weights = NULL;
	m->precision = p;
	enum lt_status st = m->base ? lt_lora_make_base(m) : LT_OK;
	/* a model made without its whole buffers has its copy with its layout */
	if (st != LT_OK || p != LT_PRECISION_BF16 || m->params_deferred)
		return st;
	st = lt_buf_new(m->be, LT_BF16, m->params_sliced ? m->params_numel : m->numel,
			&m->weights);
	if (st != LT_OK) {
		m->precision = LT_PRECISION_FP32;
		lt_errmsg_prefix("the bf16 compute copy of %zu weights", m->numel);
	}
	return st;
}

int lt_model_holds_params(const lt_model *m)
{
	return m->params && !m->params_sliced;
}

void lt_model_set_param_sink(lt_model *m, lt_buf *range, size_t lo, size_t hi)
{
	LT_ASSERT(!range || (lo <= hi && hi <= m->numel));
	m->sink = range;
	m->sink_lo = range ? lo : 0;
	m->sink_hi = range ? hi : 0;
}

void lt_model_put_params(lt_model *m, size_t off, const float *x, size_t n)
{
	if (!m->sink) {
		m->be->ops->write(m->be, lt_ref_at(lt_model_params(m), off), x, n);
		return;
	}
	size_t a = off > m->sink_lo ? off : m->sink_lo;
	size_t b = off + n < m->sink_hi ? off + n : m->sink_hi;
	if (a < b)
		m->be->ops->write(m->be, (lt_ref){ m->sink, a - m->sink_lo }, x + (a - off), b - a);
}

int lt_model_sink_range(const lt_model *m, size_t *lo, size_t *hi)
{
	*lo = m->sink_lo;
	*hi = m->sink_hi;
	return m->sink != NULL;
}

enum lt_precision lt_model_precision(const lt_model *m)
{
	return m->precision;
}

/* In bf16 with a layout: the compute copy of n elements at place `at`. */
static void convert_place(lt_model *m, size_t at, size_t n)
{
	if (n)
		m->be->ops->convert(m->be, (lt_ref){ m->weights, at }, (lt_ref){ m->params, at }, n);
}

enum lt_status lt_model_need_block(lt_model *m, int l, int backward)
{
	if (!m->param_hook.need)
		return LT_OK;
	enum lt_status st = m->param_hook.need(m->param_hook.ctx, l, backward);
	int L = m->cfg.n_layers;
	if (st != LT_OK || !m->weights || !m->params_sliced)
		return st;
	if (l >= 0 && l < L) {
		convert_place(m, m->param_block[l], block_numel(m));
		return st;
	}
	/* the embedding's lookup, or the final norm and the head (the tied
	 * one is the embedding table) */
	if (l < 0 || m->cfg.tied)
		convert_place(m, m->param_embed, first_block(m));
	if (l == L)
		convert_place(m, m->param_output, m->numel - output_begin(m));
	return st;
}
