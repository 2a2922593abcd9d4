/* AdamW with decoupled weight decay, gradient clipping and LR schedules. */
#include "config.h"
#include "optim.h"

#include <math.h>
#include <stdlib.h>

struct lt_optim {
	lt_model *model;
	size_t begin, end;
	lt_buf *m, *v, *scalar;
	lt_ref grads;    /* the gradient of element begin; its buffer NULL: the model's */
	lt_ref params;   /* the parameter of element begin; its buffer NULL: the model's */
};

float lt_lr_at(const struct lt_optim_config *oc, int step)
{
	if (oc->warmup_steps > 0 && step <= oc->warmup_steps)
		return oc->lr * (float)step / (float)oc->warmup_steps;
	if (oc->schedule == LT_SCHED_CONSTANT || oc->total_steps <= oc->warmup_steps)
		return oc->lr;
	double t = (double)(step - oc->warmup_steps) / (double)(oc->total_steps - oc->warmup_steps);
	if (t > 1.0)
		t = 1.0;
	double k = oc->schedule == LT_SCHED_COSINE ? 0.5 * (1.0 + cos(M_PI * t)) : 1.0 - t;
	return (float)(oc->min_lr + (oc->lr - oc->min_lr) * k);
}

enum lt_status lt_optim_new(lt_model *model, size_t begin, size_t end, lt_optim **out)
{
	lt_backend *be = lt_model_backend(model);
	enum lt_status st;
	*out = NULL;
	LT_ASSERT(begin <= end && end <= lt_model_num_params(model));
	struct lt_optim *o = calloc(1, sizeof *o);
	if (!o) {
		lt_errmsg_set("cannot allocate the optimizer");
		return LT_ERR_NOMEM;
	}
	o->model = model;
	o->begin = begin;
	o->end = end;
	size_t n = end - begin ? end - begin : 1;
	if ((st = lt_buf_new(be, LT_F32, n, &o->m)) != LT_OK ||
	    (st = lt_buf_new(be, LT_F32, n, &o->v)) != LT_OK ||
	    (st = lt_buf_new(be, LT_F32, 16, &o->scalar)) != LT_OK) {
		lt_errmsg_prefix("AdamW moments for %zu parameters", end - begin);
		lt_optim_free(o);
		return st;
	}
	be->ops->fill(be, (lt_ref){ o->m, 0 }, n, 0.0f);
	be->ops->fill(be, (lt_ref){ o->v, 0 }, n, 0.0f);
	*out = o;
	return be->ops->sync(be);
}

void lt_optim_free(lt_optim *o)
{
	if (!o)
		return;
	lt_backend *be = lt_model_backend(o->model);
	lt_buf_free(be, o->m);
	lt_buf_free(be, o->v);
	lt_buf_free(be, o->scalar);
	free(o);
}

lt_ref lt_optim_m(const lt_optim *o) { return (lt_ref){ o->m, 0 }; }
lt_ref lt_optim_v(const lt_optim *o) { return (lt_ref){ o->v, 0 }; }
size_t lt_optim_begin(const lt_optim *o) { return o->begin; }
size_t lt_optim_end(const lt_optim *o) { return o->end; }
void lt_optim_set_grads(lt_optim *o, lt_ref g) { o->grads = g; }
void lt_optim_set_params(lt_optim *o, lt_ref p) { o->params = p; }

/* The parameter of flat element i of the range. */
static lt_ref param_at(const lt_optim *o, size_t i)
{
	return o->params.buf ? lt_ref_at(o->params, i - o->begin)
			     : lt_ref_at(lt_model_params(o->model), i);
}

/* The gradient of flat element i of the range. */
static lt_ref grad_at(const lt_optim *o, size_t i)
{
	return o->grads.buf ? lt_ref_at(o->grads, i - o->begin) : lt_ref_at(lt_model_grads(o->model), i);
}

lt_ref lt_optim_grad(const lt_optim *o, size_t i) { return grad_at(o, i); }
lt_ref lt_optim_param(const lt_optim *o, size_t i) { return param_at(o, i); }

enum lt_status lt_optim_grad_norm(lt_optim *o, double *norm)
{
	lt_backend *be = lt_model_backend(o->model);
	float sq;
	be->ops->sum_squares(be, (lt_ref){ o->scalar, 0 }, lt_model_grads(o->model),
			     lt_model_grads_numel(o->model));
	be->ops->read(be, &sq, (lt_ref){ o->scalar, 0 }, 1);
	enum lt_status st = be->ops->sync(be);
	*norm = sqrt((double)sq);
	return st;
}

enum lt_status lt_optim_update(lt_optim *o, const struct lt_optim_config *oc, int step,
			       double grad_norm)
{
	lt_model *model = o->model;
	lt_backend *be = lt_model_backend(model);
	if (!isfinite(grad_norm)) {
		lt_errmsg_set("gradient norm is %g at step %d", grad_norm, step);
		return LT_ERR_NUMERIC;
	}
	struct lt_adamw hp = { .lr = lt_lr_at(oc, step), .beta1 = oc->beta1, .beta2 = oc->beta2,
			       .eps = oc->eps, .grad_scale = 1.0f, .step = step };
	if (oc->grad_clip > 0 && grad_norm > oc->grad_clip)
		hp.grad_scale = (float)(oc->grad_clip / grad_norm);

	/* One call per tensor's overlap with the range: decay differs by tensor. */
	for (int i = 0; i < lt_model_num_tensors(model); i++) {
		const struct lt_tensor *t = lt_model_tensor(model, i);
		size_t lo = t->off > o->begin ? t->off : o->begin;
		size_t hi = t->off + t->numel < o->end ? t->off + t->numel : o->end;
		if (lo >= hi)
			continue;
		hp.weight_decay = t->decay ? oc->weight_decay : 0.0f;
		be->ops->adamw(be, param_at(o, lo), grad_at(o, lo),
			       (lt_ref){ o->m, lo - o->begin }, (lt_ref){ o->v, lo - o->begin }, hi - lo, &hp);
	}
	return be->ops->sync(be);
}

enum lt_status lt_optim_step(lt_optim *o, const struct lt_optim_config *oc, int step,
			     double *grad_norm)
{
	enum lt_status st = lt_optim_grad_norm(o, grad_norm);
	if (st != LT_OK)
		return st;
	return lt_optim_update(o, oc, step, *grad_norm);
}
