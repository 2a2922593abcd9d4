/* Gradient helpers shared by test_train and test_reduce: the copying hook
 * and the plain backward's gradient. */
#include "config.h"
#include "grad_helpers.h"

enum lt_status copy_hook(void *ctx, size_t begin, size_t end)
{
	struct hook_copy *h = ctx;
	lt_backend *be = lt_model_backend(h->m);
	size_t at = h->slots ? lt_grad_slots_index(h->slots, begin) : begin;
	if (end > begin)
		be->ops->read(be, h->out + begin, lt_ref_at(lt_model_grads(h->m), at), end - begin);
	return LT_OK;
}

void read_plain_gradient(lt_backend *be, lt_model *m, const int32_t *tok, const int32_t *tgt,
			 int B, int T, float *out)
{
	double loss;
	long n;
	lt_model_zero_grads(m);
	lt_model_forward(m, tok, tgt, 1.0f / (B * T), &loss, &n);
	lt_model_backward(m);
	be->ops->read(be, out, lt_model_grads(m), lt_model_num_params(m));
}
