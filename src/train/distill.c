/* Distillation: the frozen teacher, its forward on the student's rows, and
 * the fused loss in place of the student's cross-entropy. */
#include "config.h"
#include "train/distill.h"

#include <stdio.h>
#include <stdlib.h>

#include "io/import.h"

struct lt_distill {
	lt_backend *be;
	lt_model *student, *teacher;
	struct lt_distill_loss loss; /* alpha and T; grad_scale per forward */
	lt_buf *kl;                  /* f32 [kl_cap + 1]: each row's T^2 KL, then their sum */
	size_t kl_cap;
	int rows;                    /* B * T of the forward under way */
	double kl_sum;               /* since the last lt_distill_take_kl */
	char line[LT_CONF_PATH_MAX + 128];
};

/* The per-row KL buffer, for at least n rows. */
static enum lt_status have_kl_rows(lt_distill *d, size_t n)
{
	if (d->kl && d->kl_cap >= n)
		return LT_OK;
	lt_buf_free(d->be, d->kl);
	d->kl = NULL;
	d->kl_cap = 0;
	enum lt_status st = lt_buf_new(d->be, LT_F32, n + 1, &d->kl);
	if (st != LT_OK)
		lt_errmsg_prefix("the distillation's KL of %zu rows", n);
	else
		d->kl_cap = n;
	return st;
}

/* lt_head_loss's begin: the teacher's forward over the same tokens. */
static enum lt_status teacher_forward(void *ctx, const int32_t *tokens, int B, int T)
{
	lt_distill *d = ctx;
	enum lt_status st = lt_model_plan(d->teacher, B, T);
	if (st == LT_OK)
		st = have_kl_rows(d, (size_t)B * T);
	if (st == LT_OK && lt_model_head_rows(d->teacher) < lt_model_head_rows(d->student)) {
		lt_errmsg_set("the teacher's head runs %d rows at a time, fewer than the model's %d",
			      lt_model_head_rows(d->teacher), lt_model_head_rows(d->student));
		st = LT_ERR_ARG;
	}
	if (st == LT_OK)
		st = lt_model_forward_hidden(d->teacher, tokens);
	if (st != LT_OK)
		lt_errmsg_prefix("the teacher %s", d->line);
	d->rows = B * T;
	return st;
}

/* lt_head_loss's chunk: the teacher's logits of the same rows, then the
 * fused loss and gradient in place of the student's logits. */
static void fused_loss(void *ctx, lt_ref losses, lt_ref logits, lt_ref targets, int r0, int R,
		       float grad_scale)
{
	lt_distill *d = ctx;
	lt_ref teacher = lt_model_head_logits(d->teacher, r0, R);
	d->loss.grad_scale = grad_scale;
	d->be->ops->distill(d->be, losses, (lt_ref){ d->kl, (size_t)r0 }, logits, teacher, targets,
			    R, lt_model_config_of(d->student)->vocab_size, &d->loss);
}

/* lt_head_loss's end: the forward's KL sum, added up. */
static enum lt_status add_kl(void *ctx)
{
	lt_distill *d = ctx;
	lt_backend *be = d->be;
	lt_ref sum = { d->kl, (size_t)d->rows };
	float kl = 0.0f;
	be->ops->sum(be, sum, (lt_ref){ d->kl, 0 }, (size_t)d->rows);
	be->ops->read(be, &kl, sum, 1);
	enum lt_status st = be->ops->sync(be);
	d->kl_sum += kl;
	return st;
}

/* The teacher's model, its weights read from path, frozen and planned. */
static enum lt_status load_teacher(lt_distill *d, const struct lt_conf *c, int rows)
{
	const char *path = c->distill.teacher;
	struct lt_model_config tc = c->model;
	int V = c->model.vocab_size;
	enum lt_status st = lt_import_config(path, &tc);
	if (st != LT_OK)
		return st;
	if (tc.vocab_size != V) {
		lt_errmsg_set("%s: vocabulary %d, the model's is %d (distill.teacher needs a teacher "
			      "of the same tokenizer)", path, tc.vocab_size, V);
		return LT_ERR_CONFIG;
	}
	if ((st = lt_model_new(d->be, &tc, &d->teacher)) != LT_OK)
		return st;
	lt_model_freeze(d->teacher);
	lt_model_set_recompute(d->teacher, LT_RECOMPUTE_BLOCK);
	if ((st = lt_model_set_precision(d->teacher, c->train.precision)) != LT_OK ||
	    (st = lt_import_weights(path, d->teacher)) != LT_OK ||
	    (st = lt_model_plan(d->teacher, rows, c->train.seq)) != LT_OK)
		lt_errmsg_prefix("%s", path);
	snprintf(d->line, sizeof d->line, "%s (%.2fM parameters, %d layers, dim %d)", path,
		 (double)lt_model_num_params(d->teacher) / 1e6, tc.n_layers, tc.dim);
	return st;
}

enum lt_status lt_distill_open(lt_backend *be, const struct lt_conf *c, lt_model *student,
			       int rows, lt_distill **out)
{
	*out = NULL;
	if (!c->distill.teacher[0])
		return LT_OK;
	lt_distill *d = calloc(1, sizeof *d);
	if (!d) {
		lt_errmsg_set("cannot allocate the distillation");
		return LT_ERR_NOMEM;
	}
	d->be = be;
	d->student = student;
	d->loss = (struct lt_distill_loss){ .alpha = c->distill.alpha,
					    .temperature = c->distill.temperature };
	enum lt_status st = load_teacher(d, c, rows);
	if (st == LT_OK)
		st = have_kl_rows(d, (size_t)rows * c->train.seq);
	if (st != LT_OK) {
		lt_errmsg_prefix("distill.teacher");
		lt_distill_free(d);
		return st;
	}
	struct lt_head_loss hook = { .ctx = d, .begin = teacher_forward, .chunk = fused_loss,
				     .end = add_kl };
	lt_model_set_head_loss(student, &hook);
	*out = d;
	return LT_OK;
}

double lt_distill_take_kl(lt_distill *d)
{
	if (!d)
		return 0;
	double kl = d->kl_sum;
	d->kl_sum = 0;
	return kl;
}

const char *lt_distill_describe(const lt_distill *d)
{
	return d ? d->line : "";
}

void lt_distill_free(lt_distill *d)
{
	if (!d)
		return;
	if (d->student)
		lt_model_set_head_loss(d->student, NULL);
	lt_buf_free(d->be, d->kl);
	lt_model_free(d->teacher);
	free(d);
}
