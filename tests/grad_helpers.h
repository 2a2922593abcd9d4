/* Gradient helpers shared by test_train and test_reduce: a hook that
 * copies each range backward reports, and the gradient of one plain
 * backward, both read through the backend at flat parameter offsets.
 *
 * Ownership: the helpers borrow everything; out buffers are the caller's. */
#ifndef LT_TEST_GRAD_HELPERS_H
#define LT_TEST_GRAD_HELPERS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "dist/grad_slots.h"
#include "model.h"

/* What a hook reading each finished range through the backend saw, from a
 * gradient buffer laid out as `slots` says (NULL: the mirror of the
 * parameter buffer). */
struct hook_copy {
	lt_model *m;
	const struct lt_grad_slots *slots;
	float *out;             /* [P] the gradient, at flat offsets */
};

/* A lt_grad_hook ready function (ctx: a struct hook_copy): copies the
 * gradients of [begin, end) to out + begin. */
enum lt_status copy_hook(void *ctx, size_t begin, size_t end);

/* The gradient of one plain backward of m over tok and tgt (B x T) into
 * out[parameters]. */
void read_plain_gradient(lt_backend *be, lt_model *m, const int32_t *tok, const int32_t *tgt,
			 int B, int T, float *out);

#endif
