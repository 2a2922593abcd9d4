/* The LM head for callers other than the loss: the logits of a forward
 * read back, or handed to another model's loss (a teacher's, for
 * distillation), and the loss that may stand in for the cross-entropy. */
#include "config.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

enum lt_status lt_model_read_logits(lt_model *m, int row0, int rows, float *out)
{
	lt_backend *be = m->be;
	int C = m->cfg.dim, V = m->cfg.vocab_size;
	LT_ASSERT(m->acts && row0 >= 0 && rows >= 0 && row0 + rows <= m->B * m->T);
	uint16_t *half = NULL;
	if (act_type(m->precision) == LT_BF16 &&
	    !(half = malloc((size_t)(rows < m->head_rows ? rows : m->head_rows) * V * 2 + 2))) {
		lt_errmsg_set("cannot allocate the logits of %d rows", m->head_rows);
		return LT_ERR_NOMEM;
	}
	for (int r = 0; r < rows; r += m->head_rows) {
		int R = rows - r < m->head_rows ? rows - r : m->head_rows;
		float *dst = out + (size_t)r * V;
		linear_forward(be, A(m, m->logits), A(m, m->xf + (size_t)(row0 + r) * C),
			       P(m, m->lm_head), R, V, C, 0.0f);
		be->ops->read(be, half ? (void *)half : (void *)dst, A(m, m->logits), (size_t)R * V);
		for (size_t i = 0; half && i < (size_t)R * V; i++)
			dst[i] = lt_bf16_to_f32(half[i]);
	}
	free(half);
	return be->ops->sync(be);
}

void lt_model_set_head_rows(lt_model *m, int rows)
{
	LT_ASSERT(!m->acts);
	m->head_rows_max = rows > 0 ? rows : 0;
}

void lt_model_set_head_loss(lt_model *m, const struct lt_head_loss *loss)
{
	if (!loss) {
		memset(&m->head_loss, 0, sizeof m->head_loss);
		return;
	}
	LT_ASSERT(loss->begin && loss->chunk && loss->end);
	m->head_loss = *loss;
}

void lt_model_freeze(lt_model *m)
{
	lt_buf_free(m->be, m->grads);
	m->grads = NULL;
	m->grads_numel = 0;
}

lt_ref lt_model_head_logits(lt_model *m, int r0, int R)
{
	int C = m->cfg.dim, V = m->cfg.vocab_size;
	LT_ASSERT(m->acts && r0 >= 0 && R >= 0 && R <= m->head_rows && r0 + R <= m->B * m->T);
	lt_ref logits = A(m, m->logits);
	linear_forward(m->be, logits, A(m, m->xf + (size_t)r0 * C), P(m, m->lm_head), R, V, C, 0.0f);
	return logits;
}

int lt_model_head_rows(const lt_model *m)
{
	LT_ASSERT(m->acts);
	return m->head_rows;
}
