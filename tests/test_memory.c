/* Memory and bad-shape tests of the engine: impossible model shapes are
 * refused with the value and the reason, a refused allocation says how many
 * bytes were asked, and the memory estimate of a training step is within
 * 10% of the measured peak RSS. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "tap.h"

static const struct lt_model_config good = {
	.vocab_size = 8000, .dim = 256, .n_layers = 4, .n_heads = 8, .n_kv_heads = 4,
	.ffn_dim = 688, .max_seq = 256, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};

/* A shape change and the words its error must contain. */
struct bad_shape {
	const char *what;
	void (*apply)(struct lt_model_config *c);
	const char *expect;
};

static void dim_not_divisible(struct lt_model_config *c) { c->dim = 250; }
static void kv_not_dividing(struct lt_model_config *c) { c->n_kv_heads = 3; }
static void zero_layers(struct lt_model_config *c) { c->n_layers = 0; }
static void negative_vocab(struct lt_model_config *c) { c->vocab_size = -5; }
static void odd_head(struct lt_model_config *c) { c->dim = 8 * 9; }
static void zero_eps(struct lt_model_config *c) { c->norm_eps = 0.0f; }

static void check_bad_shapes(void)
{
	static const struct bad_shape cases[] = {
		{ "dim not divisible by heads", dim_not_divisible, "model.dim = 250 is not divisible by model.n_heads = 8" },
		{ "kv heads not dividing heads", kv_not_dividing, "model.n_kv_heads = 3 does not divide model.n_heads = 8" },
		{ "zero layers", zero_layers, "model.n_layers = 0: must be a positive integer" },
		{ "negative vocabulary", negative_vocab, "model.vocab_size = -5: must be a positive integer" },
		{ "odd head size", odd_head, "the head size must be even" },
		{ "zero norm eps", zero_eps, "model.norm_eps = 0: must be in (0, 1)" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct lt_model_config c = good;
		cases[i].apply(&c);
		lt_errmsg_clear();
		enum lt_status st = lt_model_config_check(&c);
		tap_ok(st == LT_ERR_CONFIG && strstr(lt_errmsg(), cases[i].expect),
		       "%s is refused: '%s'", cases[i].what, lt_errmsg());
	}
	tap_ok(lt_model_config_check(&good) == LT_OK, "a good shape is accepted");
}

static void check_seq_beyond_max(lt_backend *be)
{
	lt_model *m = NULL;
	enum lt_status st = lt_model_new(be, &good, &m);
	if (st == LT_OK)
		st = lt_model_plan(m, 2, good.max_seq + 1);
	tap_ok(st == LT_ERR_CONFIG && strstr(lt_errmsg(), "seq 257") && strstr(lt_errmsg(), "max_seq (256)"),
	       "seq > max_seq is refused: '%s'", lt_errmsg());
	lt_model_free(m);
}

static void check_refused_allocation(lt_backend *be)
{
	lt_buf *b = NULL;
	size_t n = (size_t)1 << 58; /* 2^60 bytes: no machine has that */
	enum lt_status st = lt_buf_new(be, LT_F32, n, &b);
	tap_ok(st == LT_ERR_NOMEM && b == NULL && strstr(lt_errmsg(), "1152921504606846976"),
	       "a refused allocation names the bytes asked: '%s'", lt_errmsg());
	lt_buf_free(be, b);
}

#if !defined(__SANITIZE_ADDRESS__)
static double peak_rss(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_maxrss * 1024.0;
}
#endif

/* Two training steps of `good` at batch 8 x seq 256; the estimate against
 * the peak resident size of the whole process. */
static void check_estimate_against_rss(lt_backend *be, int threads)
{
#if defined(__SANITIZE_ADDRESS__)
	(void)be;
	(void)threads;
	tap_skip("AddressSanitizer's shadow memory and quarantine make RSS say nothing about lltrain");
#else
	const int B = 8, T = 256, N = B * T;
	lt_model *m = NULL;
	lt_optim *o = NULL;
	int32_t *tok = malloc(2 * N * sizeof *tok);
	struct lt_rng r;
	lt_rng_seed(&r, 1, 0);
	for (int i = 0; i < 2 * N; i++)
		tok[i] = (int32_t)lt_rng_below(&r, (uint64_t)good.vocab_size);
	struct lt_optim_config oc = { .lr = 1e-3f, .total_steps = 10, .beta1 = 0.9f, .beta2 = 0.95f,
				      .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f };
	enum lt_status st = lt_model_new(be, &good, &m);
	if (st == LT_OK)
		st = lt_model_init(m, 1);
	if (st == LT_OK)
		st = lt_model_plan(m, B, T);
	if (st == LT_OK)
		st = lt_optim_new(m, 0, lt_model_num_params(m), &o);
	for (int step = 1; step <= 2 && st == LT_OK; step++) {
		double loss, norm;
		long n;
		lt_model_zero_grads(m);
		st = lt_model_forward(m, tok, tok + N, 1.0f / N, &loss, &n);
		if (st == LT_OK)
			st = lt_model_backward(m);
		if (st == LT_OK)
			st = lt_optim_step(o, &oc, step, &norm);
	}
	double rss = peak_rss();
	struct lt_mem_estimate est;
	lt_model_estimate_memory(&good, B, T, threads, LT_RECOMPUTE_NONE, LT_PRECISION_FP32, &est);
	double ratio = (double)est.total / rss;
	tap_diag("estimate %.1f MiB (params %.1f, grads %.1f, optimizer %.1f, activations %.1f, "
		 "workspace %.1f, runtime %.1f), peak RSS %.1f MiB",
		 est.total / 1048576.0, est.params / 1048576.0, est.grads / 1048576.0,
		 est.optimizer / 1048576.0, est.activations / 1048576.0, est.workspace / 1048576.0,
		 est.runtime / 1048576.0, rss / 1048576.0);
	tap_ok(st == LT_OK && ratio > 0.9 && ratio < 1.1,
	       "memory estimate / measured peak RSS = %.3f (within 10%%)", ratio);
	lt_optim_free(o);
	lt_model_free(m);
	free(tok);
#endif
}

int main(void)
{
	lt_backend *be = NULL;
	tap_plan(10);
	check_bad_shapes();
	if (lt_backend_new("cpu", 0, &be) != LT_OK) {
		printf("Bail out! cannot open the cpu backend: %s\n", lt_errmsg());
		return 1;
	}
	struct lt_device_info info;
	be->ops->info(be, &info);
	check_seq_beyond_max(be);
	check_refused_allocation(be);
	check_estimate_against_rss(be, info.compute_units);
	lt_backend_free(be);
	return tap_done();
}
