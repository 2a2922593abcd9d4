/* Pipeline stages of the model: a stage's tables against the whole
 * model's, and the activations that cross from one stage to the next. */
#include "config.h"
#include "model.h"

#include <stdlib.h>

#include "model_impl.h"

enum lt_status lt_model_pp_check(const struct lt_model_config *c, int pp)
{
	if (pp < 1 || pp > c->n_layers) {
		lt_errmsg_set("dist.pp = %d: the model's %d layers make at most %d stages", pp,
			      c->n_layers, c->n_layers);
		return LT_ERR_CONFIG;
	}
	if (pp > 1 && c->tied) {
		lt_errmsg_set("dist.pp = %d with a tied embedding: the first and the last stage "
			      "would share its table; set model.tied = false or dist.pp = 1", pp);
		return LT_ERR_CONFIG;
	}
	return LT_OK;
}

enum lt_status lt_model_stage_tables(lt_model *m, const struct lt_model_config *whole)
{
	enum lt_status st = lt_model_pp_check(whole, m->has_embed && m->has_head ? 1 : 2);
	if (st == LT_OK)
		st = lt_model_new_bare(m->be, whole, &m->stage_whole);
	if (st != LT_OK)
		return st;
	if (!(m->whole_of = malloc((size_t)m->n_tensors * sizeof *m->whole_of))) {
		lt_errmsg_set("cannot allocate the stage's tensor table");
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < m->n_tensors; i++) {
		const struct lt_tensor *t = lt_model_find(m->stage_whole, m->tensors[i].name);
		LT_ASSERT(t && t->numel == lt_model_tp_whole(m)->tensors[i].numel);
		m->whole_of[i] = (int)(t - lt_model_tensor(m->stage_whole, 0));
	}
	return LT_OK;
}

void lt_model_stage_free(lt_model *m)
{
	lt_model_free(m->stage_whole);
	free(m->whole_of);
	m->stage_whole = NULL;
	m->whole_of = NULL;
}

const lt_model *lt_model_stage_whole(const lt_model *m)
{
	return m->stage_whole ? m->stage_whole : m;
}

int lt_model_stage_index(const lt_model *m, int i)
{
	return m->whole_of ? m->whole_of[i] : i;
}

int lt_model_stage_first(const lt_model *m) { return m->has_embed; }
int lt_model_stage_last(const lt_model *m) { return m->has_head; }

/* x[B*T, dim] (host floats; overwritten in bf16) into the activation at
 * off, waited for. */
static enum lt_status write_boundary(lt_model *m, size_t off, float *x)
{
	LT_ASSERT(m->acts);
	write_floats(m->be, A(m, off), x, (size_t)m->B * m->T * m->cfg.dim);
	return m->be->ops->sync(m->be);
}

static enum lt_status read_boundary(lt_model *m, size_t off, float *x)
{
	LT_ASSERT(m->acts);
	read_floats(m->be, x, A(m, off), (size_t)m->B * m->T * m->cfg.dim);
	return m->be->ops->sync(m->be);
}

/* [B*T, dim] x_0 (a stage's input) */
enum lt_status lt_model_stage_write_input(lt_model *m, float *x)
{
	LT_ASSERT(!m->has_embed);
	return write_boundary(m, m->la[0].x, x);
}

/* [B*T, dim] x_final (the stage's output, before any final norm) */
enum lt_status lt_model_stage_read_output(lt_model *m, float *x)
{
	LT_ASSERT(!m->has_head);
	return read_boundary(m, m->x_final, x);
}

/* [B*T, dim] dL/dx_final into the backward scratch dx */
enum lt_status lt_model_stage_write_output_grad(lt_model *m, float *dx)
{
	LT_ASSERT(!m->has_head);
	return write_boundary(m, m->dx, dx);
}

/* [B*T, dim] dL/dx_0, which backward leaves in dx */
enum lt_status lt_model_stage_read_input_grad(lt_model *m, float *dx)
{
	LT_ASSERT(!m->has_embed);
	return read_boundary(m, m->dx, dx);
}
