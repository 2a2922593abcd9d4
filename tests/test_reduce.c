/* Tests of ZeRO's gradient reduction that need no MPI: the gradient
 * slots' layout of stage 2, and a model whose gradient buffer keeps only
 * two blocks' slots giving bitwise the gradients of a whole buffer. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dist/grad_slots.h"
#include "model.h"
#include "tap.h"

static const struct lt_model_config tiny_bytes = {
	.vocab_size = 256, .dim = 64, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2,
	.ffn_dim = 160, .max_seq = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};

/* What a hook reading each finished range through the backend saw, from a
 * gradient buffer laid out as `slots` says. */
struct hook_copy {
	lt_model *m;
	const struct lt_grad_slots *slots;
	float *out;             /* [P] the gradient, at flat offsets */
};

static enum lt_status copy_hook(void *ctx, size_t begin, size_t end)
{
	struct hook_copy *h = ctx;
	lt_backend *be = lt_model_backend(h->m);
	if (end > begin)
		be->ops->read(be, h->out + begin,
			      lt_ref_at(lt_model_grads(h->m), lt_grad_slots_index(h->slots, begin)),
			      end - begin);
	return LT_OK;
}

/* The gradient of one plain backward of m over tok and tgt (B x T) into
 * out[parameters]. */
static void read_plain_gradient(lt_backend *be, lt_model *m, const int32_t *tok,
				const int32_t *tgt, int B, int T, float *out)
{
	double loss;
	long n;
	lt_model_zero_grads(m);
	lt_model_forward(m, tok, tgt, 1.0f / (B * T), &loss, &n);
	lt_model_backward(m);
	be->ops->read(be, out, lt_model_grads(m), lt_model_num_params(m));
}

/* lt_grad_slots_index lays a buffer out as the gradient buffer with k
 * slots, whatever the model keeps: every element in place at k <= 0 and at
 * k >= layers (4), and at k = 3 within the 3-slot buffer, blocks 0 and 3
 * sharing a slot and blocks 0 to 2 apart. (Where the model puts the
 * gradients at k = 2 is check_gradient_slots's.) */
static void check_slot_index(const lt_model *whole, const lt_model *slotted,
			     const struct lt_model_config *c)
{
	struct lt_grad_slots s3, s0, s4, s9;
	lt_grad_slots_of(whole, 3, &s3);
	lt_grad_slots_of(slotted, 0, &s0);
	lt_grad_slots_of(slotted, 4, &s4);
	lt_grad_slots_of(slotted, 9, &s9);
	size_t P = lt_model_num_params(whole), G3 = lt_grad_slots_config_numel(c, 3), bad = 0;
	size_t first[4];
	for (size_t off = 0, b = 0; off < P && b < 4; off++)
		if (lt_grad_slots_block_of(&s3, off) == (int)b)
			first[b++] = off;
	for (size_t off = 0; off < P; off++) {
		size_t i3 = lt_grad_slots_index(&s3, off);
		bad += lt_grad_slots_index(&s0, off) != off;
		bad += lt_grad_slots_index(&s4, off) != off;
		bad += lt_grad_slots_index(&s9, off) != off;
		bad += i3 >= G3;
	}
	bad += lt_grad_slots_numel(&s3) != G3;
	size_t z0 = lt_grad_slots_index(&s3, first[0]);
	tap_ok(bad == 0 && z0 == lt_grad_slots_index(&s3, first[3]) &&
		       z0 != lt_grad_slots_index(&s3, first[1]) &&
		       z0 != lt_grad_slots_index(&s3, first[2]) &&
		       lt_grad_slots_index(&s3, first[1]) != lt_grad_slots_index(&s3, first[2]),
	       "slot index: %zu of %zu elements misplaced at k = 0, 3, 4 and 9", bad, P);
}

/* With two gradient slots over four blocks, the ranges a hook reads as
 * backward reports them are bitwise the whole buffer's gradient, and a
 * second backward writes rather than adds; the buffer holds the embedding,
 * the output and two blocks only. */
static void check_gradient_slots(lt_backend *be)
{
	const int B = 2, T = 8;
	struct lt_model_config c = tiny_bytes;
	lt_model *whole = NULL, *slotted = NULL;
	struct lt_grad_slots slots;
	int32_t tok[16], tgt[16];
	for (int i = 0; i < B * T; i++) {
		tok[i] = (int32_t)(i * 5 % 256);
		tgt[i] = (int32_t)(i * 11 % 256);
	}
	if (lt_model_new(be, &c, &whole) != LT_OK || lt_model_init(whole, 9) != LT_OK ||
	    lt_model_plan(whole, B, T) != LT_OK || lt_model_new(be, &c, &slotted) != LT_OK ||
	    lt_model_init(slotted, 9) != LT_OK || lt_model_plan(slotted, B, T) != LT_OK ||
	    (lt_grad_slots_of(slotted, 2, &slots), lt_grad_slots_apply(slotted, &slots)) != LT_OK) {
		tap_ok(0, "gradient slots: model setup failed");
		tap_ok(0, "slot index: model setup failed");
		lt_model_free(whole);
		lt_model_free(slotted);
		return;
	}
	size_t P = lt_model_num_params(whole), G = lt_model_grads_numel(slotted);
	float *want = malloc(P * sizeof *want), *got = calloc(P, sizeof *got);
	struct hook_copy h = { .m = slotted, .slots = &slots, .out = got };
	double loss;
	long n;
	read_plain_gradient(be, whole, tok, tgt, B, T, want);
	lt_model_set_grad_hook(slotted, &(struct lt_grad_hook){ .ctx = &h, .ready = copy_hook });
	enum lt_status st = LT_OK;
	for (int pass = 0; pass < 2 && st == LT_OK; pass++) {
		lt_model_forward(slotted, tok, tgt, 1.0f / (B * T), &loss, &n);
		st = lt_model_backward(slotted);
	}
	size_t same = 0;
	for (size_t i = 0; i < P; i++)
		same += memcmp(&want[i], &got[i], sizeof *got) == 0;
	tap_ok(st == LT_OK && same == P && G == lt_grad_slots_config_numel(&c, 2) && G < P &&
		       G == lt_grad_slots_numel(&slots) &&
		       G == P - 2 * (P - lt_grad_slots_config_numel(&c, 3)),
	       "gradient slots: %zu of %zu gradients bitwise those of the whole buffer after two "
	       "backwards; buffer of %zu elements", same, P, G);
	check_slot_index(whole, slotted, &c);
	free(want);
	free(got);
	lt_model_free(whole);
	lt_model_free(slotted);
}

int main(void)
{
	lt_backend *be = NULL;
	tap_plan(3);
	if (lt_backend_new("cpu", 0, &be) != LT_OK) {
		printf("Bail out! cannot open the cpu backend\n");
		return 1;
	}
	check_gradient_slots(be);
	tap_ok(be->ops->sync(be) == LT_OK, "backend reports no failure");
	lt_backend_free(be);
	return tap_done();
}
