/* Memory and bad-shape tests of the engine: impossible model shapes are
 * refused with the value and the reason, a refused allocation says how many
 * bytes were asked, and the memory estimate of a training step is within
 * 10% of the measured peak RSS, in fp32, with recompute, and in bf16 with
 * recompute (each in a process of its own). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* What a child reports of one configuration: estimate / peak RSS, and a
 * line on the figures. */
struct rss_report {
	double ratio;
	char line[480];
};

/* Two training steps of `good` at batch 8 x seq 256 in a configuration, on
 * a CPU backend of its own; the estimate against the peak resident size of
 * the whole process. Runs in a child process (each configuration needs its
 * own peak), before the parent starts any OpenMP threads. */
static void measure_in_child(enum lt_recompute rc, enum lt_precision prec, struct rss_report *out)
{
	const int B = 8, T = 256, N = B * T;
	lt_backend *be = NULL;
	lt_model *m = NULL;
	lt_optim *o = NULL;
	int32_t *tok = malloc(2 * N * sizeof *tok);
	struct lt_rng r;
	lt_rng_seed(&r, 1, 0);
	for (int i = 0; tok && i < 2 * N; i++)
		tok[i] = (int32_t)lt_rng_below(&r, (uint64_t)good.vocab_size);
	struct lt_optim_config oc = { .lr = 1e-3f, .total_steps = 10, .beta1 = 0.9f, .beta2 = 0.95f,
				      .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f };
	enum lt_status st = tok ? lt_backend_new("cpu", 0, &be) : LT_ERR_NOMEM;
	if (st == LT_OK)
		st = lt_model_new(be, &good, &m);
	if (st == LT_OK) {
		lt_model_set_recompute(m, rc);
		st = lt_model_set_precision(m, prec);
	}
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
	struct lt_device_info info;
	memset(&info, 0, sizeof info);
	if (be)
		be->ops->info(be, &info);
	struct lt_mem_estimate est;
	lt_model_estimate_memory(&good, B, T, info.compute_units, rc, prec, &est);
	out->ratio = st == LT_OK ? (double)est.total / rss : 0;
	snprintf(out->line, sizeof out->line, "estimate %.1f MiB (params %.1f, grads %.1f, "
		 "optimizer %.1f, activations %.1f, workspace %.1f, runtime %.1f), peak RSS %.1f MiB%s%s",
		 est.total / 1048576.0, est.params / 1048576.0, est.grads / 1048576.0,
		 est.optimizer / 1048576.0, est.activations / 1048576.0, est.workspace / 1048576.0,
		 est.runtime / 1048576.0, rss / 1048576.0, st == LT_OK ? "" : "; failed: ",
		 st == LT_OK ? "" : lt_errmsg());
	lt_optim_free(o);
	lt_model_free(m);
	lt_backend_free(be);
	free(tok);
}

/* measure_in_child in a child process; the parent checks its ratio. */
static void check_estimate_against_rss(enum lt_recompute rc, enum lt_precision prec)
{
	const char *what = prec == LT_PRECISION_BF16 ? (rc ? "bf16, recompute block" : "bf16")
						     : (rc ? "fp32, recompute block" : "fp32");
	struct rss_report rep = { 0, "the child reported nothing" };
	int fd[2];
	pid_t pid = -1;
	if (pipe(fd) == 0 && (pid = fork()) == 0) {
		close(fd[0]);
		measure_in_child(rc, prec, &rep);
		ssize_t w = write(fd[1], &rep, sizeof rep);
		_exit(w == (ssize_t)sizeof rep ? 0 : 1);
	}
	if (pid > 0) {
		close(fd[1]);
		struct rss_report got;
		if (read(fd[0], &got, sizeof got) == (ssize_t)sizeof got)
			rep = got;
		close(fd[0]);
		waitpid(pid, NULL, 0);
	}
	tap_diag("%s: %s", what, rep.line);
	tap_ok(rep.ratio > 0.9 && rep.ratio < 1.1,
	       "%s: memory estimate / measured peak RSS = %.3f (within 10%%)", what, rep.ratio);
}
#endif

int main(void)
{
	lt_backend *be = NULL;
	tap_plan(12);
	check_bad_shapes();
	/* in children, before this process starts any OpenMP threads */
#if defined(__SANITIZE_ADDRESS__)
	for (int i = 0; i < 3; i++)
		tap_skip("AddressSanitizer's shadow memory and quarantine make RSS say nothing about "
			 "lltrain");
#else
	check_estimate_against_rss(LT_RECOMPUTE_NONE, LT_PRECISION_FP32);
	check_estimate_against_rss(LT_RECOMPUTE_BLOCK, LT_PRECISION_FP32);
	check_estimate_against_rss(LT_RECOMPUTE_BLOCK, LT_PRECISION_BF16);
#endif
	if (lt_backend_new("cpu", 0, &be) != LT_OK) {
		printf("Bail out! cannot open the cpu backend: %s\n", lt_errmsg());
		return 1;
	}
	check_seq_beyond_max(be);
	check_refused_allocation(be);
	lt_backend_free(be);
	return tap_done();
}
