/* Distillation: a frozen teacher beside the model being trained, loaded
 * from distill.teacher onto the same backend, whose forward runs on the
 * same rows in the same step, and whose logits, chunk by chunk, go with
 * the model's into the backend's fused distillation loss (backend.h's
 * distill) in place of the cross-entropy. Evaluation keeps the
 * cross-entropy alone.
 *
 * Ownership: lt_distill_open gives a distiller that lt_distill_free
 * releases with its teacher, before the backend; it hooks itself into the
 * student (lt_model_set_head_loss), which must outlive it or be freed
 * first. */
#ifndef LT_DISTILL_H
#define LT_DISTILL_H

#include "backend.h"
#include "conf.h"
#include "model.h"
#include "status.h"

typedef struct lt_distill lt_distill;

/* The teacher of c->distill.teacher (an lltrain run or checkpoint, a
 * Hugging Face directory or a GGUF file) loaded onto be in c's precision,
 * frozen (no gradients, no optimizer state), checked to have the
 * student's vocabulary, planned for rows x c->train.seq, and hooked into
 * student with c->distill's alpha and temperature. *out is NULL when
 * distill.teacher is empty. Errors name the teacher's path. */
enum lt_status lt_distill_open(lt_backend *be, const struct lt_conf *c, lt_model *student,
			       int rows, lt_distill **out);
/* The sum of T^2 KL over the rows trained since the last call (0 for
 * NULL); the next call starts from 0. */
double lt_distill_take_kl(lt_distill *d);
/* What the teacher is, for the run's first lines ("" for NULL). */
const char *lt_distill_describe(const lt_distill *d);
/* Unhooks the student and releases the teacher (NULL accepted). */
void lt_distill_free(lt_distill *d);

#endif
