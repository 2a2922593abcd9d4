/* AdamW over the flat parameter buffer (optionally one contiguous range of
 * it, for sharded optimizer state), global gradient-norm clipping, and the
 * learning-rate schedule.
 *
 * Ownership: lt_optim_new gives an optimizer that lt_optim_free releases;
 * it borrows the model, which must outlive it. */
#ifndef LT_OPTIM_H
#define LT_OPTIM_H

#include <stddef.h>

#include "model.h"

enum lt_schedule { LT_SCHED_COSINE, LT_SCHED_LINEAR, LT_SCHED_CONSTANT };

struct lt_optim_config {
	float lr;            /* peak learning rate */
	float min_lr;        /* the floor that decay ends at */
	int warmup_steps;    /* linear warmup from lr/warmup to lr */
	int total_steps;     /* decay reaches min_lr here */
	enum lt_schedule schedule;
	float beta1, beta2, eps;
	float weight_decay;  /* applied to matrices, never to norm weights */
	float grad_clip;     /* global L2 norm bound; <= 0 turns clipping off */
};

/* The learning rate at 1-based optimizer step `step`. */
float lt_lr_at(const struct lt_optim_config *oc, int step);

typedef struct lt_optim lt_optim;

/* Allocates zeroed moments for elements [begin, end) of the model's flat
 * buffer (0, numel for the whole model). */
enum lt_status lt_optim_new(lt_model *model, size_t begin, size_t end, lt_optim **out);
void lt_optim_free(lt_optim *o);
/* The moment buffers (end - begin elements each) and their range. */
/* Where AdamW reads the gradient of flat element i of the range, and
 * where it updates the parameter. */
lt_ref lt_optim_grad(const lt_optim *o, size_t i);
lt_ref lt_optim_param(const lt_optim *o, size_t i);
lt_ref lt_optim_m(const lt_optim *o);
lt_ref lt_optim_v(const lt_optim *o);
size_t lt_optim_begin(const lt_optim *o);
size_t lt_optim_end(const lt_optim *o);

/* Has updates read the gradient of the range from g (element begin at g)
 * instead of the model's gradient buffer at the same offsets. */
void lt_optim_set_grads(lt_optim *o, lt_ref g);

/* Has updates change the parameters of the range at p (element begin at
 * p) instead of the model's parameter buffer at the same offsets: where
 * the range's parameters are held apart from the model (ZeRO stage 3). */
void lt_optim_set_params(lt_optim *o, lt_ref p);

/* The global L2 norm of the model's gradient buffer. */
enum lt_status lt_optim_grad_norm(lt_optim *o, double *norm);
/* One AdamW update of the range at 1-based step `step` with a gradient
 * norm already known (clipping scales every gradient by
 * min(1, grad_clip / norm)). */
enum lt_status lt_optim_update(lt_optim *o, const struct lt_optim_config *oc, int step,
			       double grad_norm);
/* grad_norm then update: the whole optimizer step of one process. */
enum lt_status lt_optim_step(lt_optim *o, const struct lt_optim_config *oc, int step,
			     double *grad_norm);

#endif
