/* Backends against each other over whole training runs: 50 steps of the
 * tiny preset's model on every backend other than the CPU give the CPU
 * backend's losses within 1e-4 relative, and a second run repeats the
 * first bitwise. With train.matmul = tf32, a backend that then multiplies
 * on TF32 tensor cores stays within 1.5% of the CPU's losses (the bound
 * bf16 training is held to) and repeats itself bitwise too; on the others
 * those checks skip, saying what the backend computes GEMMs with. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "conf.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "tap.h"

#define STEPS 50
#define LOSS_TOL 1e-4
#define TF32_LOSS_TOL 1.5e-2
/* The tiny preset's model; a smaller batch than its training one keeps the
 * run short on PoCL (OpenCL on two CPU cores). */
#define BATCH 4
#define SEQ 64
/* The repeat run stops here and is compared with the first one's state. */
#define REPEAT_STEPS 10

struct run {
	double loss[STEPS];
	float *params;            /* after the last step */
	float *params_at_repeat;  /* after REPEAT_STEPS */
	size_t n_params;
};

static struct {
	unsigned char *text;
	size_t len;
} corpus;

/* tests/data/tiny_corpus.txt, whose bytes are the tokens. */
static int read_corpus(void)
{
	const char *srcdir = getenv("top_srcdir");
	char path[4096];
	snprintf(path, sizeof path, "%s/tests/data/tiny_corpus.txt", srcdir ? srcdir : ".");
	corpus.text = tap_slurp(path, &corpus.len);
	return corpus.text && corpus.len > 2 * SEQ;
}

static float *copy_of_params(lt_backend *be, lt_model *m)
{
	float *p = malloc(lt_model_num_params(m) * sizeof *p);
	if (p)
		be->ops->read(be, p, lt_model_params(m), lt_model_num_params(m));
	return p;
}

/* Trains `steps` steps of model c on byte windows of the corpus at seeded
 * places; 1 on success, else 0 with the reason in lt_errmsg. */
static int train(lt_backend *be, const struct lt_model_config *c, int steps, struct run *out)
{
	lt_model *m = NULL;
	lt_optim *o = NULL;
	int ok = 0, N = BATCH * SEQ;
	int32_t *tok = malloc(2 * (size_t)N * sizeof *tok), *tgt = tok ? tok + N : NULL;
	struct lt_optim_config oc = { .lr = 3e-3f, .min_lr = 3e-4f, .warmup_steps = 10,
				      .total_steps = STEPS, .schedule = LT_SCHED_COSINE, .beta1 = 0.9f,
				      .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f };
	struct lt_rng r;
	memset(out, 0, sizeof *out);
	if (!tok || lt_model_new(be, c, &m) != LT_OK || lt_model_init(m, 11) != LT_OK ||
	    lt_model_plan(m, BATCH, SEQ) != LT_OK ||
	    lt_optim_new(m, 0, lt_model_num_params(m), &o) != LT_OK)
		goto out;
	lt_rng_seed(&r, 3, 0);
	for (int step = 1; step <= steps; step++) {
		double loss, norm;
		long n;
		for (int b = 0; b < BATCH; b++) {
			size_t at = (size_t)lt_rng_below(&r, corpus.len - SEQ - 1);
			for (int t = 0; t < SEQ; t++) {
				tok[b * SEQ + t] = corpus.text[at + t];
				tgt[b * SEQ + t] = corpus.text[at + t + 1];
			}
		}
		lt_model_zero_grads(m);
		if (lt_model_forward(m, tok, tgt, 1.0f / (float)N, &loss, &n) != LT_OK ||
		    lt_model_backward(m) != LT_OK || lt_optim_step(o, &oc, step, &norm) != LT_OK)
			goto out;
		out->loss[step - 1] = loss / n;
		if (step == REPEAT_STEPS && !(out->params_at_repeat = copy_of_params(be, m)))
			goto out;
	}
	out->n_params = lt_model_num_params(m);
	if (!(out->params = copy_of_params(be, m)))
		goto out;
	ok = be->ops->sync(be) == LT_OK;
out:
	lt_optim_free(o);
	lt_model_free(m);
	free(tok);
	return ok;
}

static double worst_loss_difference(const struct run *a, const struct run *b, int *at)
{
	double worst = 0;
	*at = 0;
	for (int s = 0; s < STEPS; s++) {
		double d = fabs(a->loss[s] - b->loss[s]) / fabs(b->loss[s]);
		if (!(d <= worst)) {
			worst = d;
			*at = s + 1;
		}
	}
	return worst;
}

static double params_rel_l2(const struct run *a, const struct run *b)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < a->n_params; i++) {
		double d = (double)a->params[i] - b->params[i];
		num += d * d;
		den += (double)b->params[i] * b->params[i];
	}
	return sqrt(num / den);
}

static void free_runs(struct run *a, struct run *b)
{
	free(a->params);
	free(a->params_at_repeat);
	free(b->params);
	free(b->params_at_repeat);
}

/* Two checks of training with TF32 matrix products where the backend has them. */
static void check_tf32(lt_backend *be, const char *spec, const struct lt_model_config *c,
		       const struct run *cpu)
{
	struct lt_device_info info;
	struct run a = { 0 }, b = { 0 };
	int at;
	lt_backend_set_matmul(be, LT_MATMUL_TF32);
	be->ops->info(be, &info);
	if (strncmp(info.gemm, "TF32 tensor cores", 17)) {
		for (int i = 0; i < 2; i++)
			tap_skip("%s: train.matmul = tf32 changes nothing here: %s computes GEMMs with "
				 "%s", spec, info.name, info.gemm);
		lt_backend_set_matmul(be, LT_MATMUL_FP32);
		return;
	}
	int ok = train(be, c, STEPS, &a) && train(be, c, REPEAT_STEPS, &b);
	double worst = ok ? worst_loss_difference(&a, cpu, &at) : INFINITY;
	tap_ok(ok && worst <= TF32_LOSS_TOL,
	       "%s, tf32 (%s): %d steps, losses %.5f -> %.5f, cpu %.5f -> %.5f; worst relative "
	       "difference %.2e (step %d) <= %g%s%s", spec, info.gemm, STEPS, ok ? a.loss[0] : 0,
	       ok ? a.loss[STEPS - 1] : 0, cpu->loss[0], cpu->loss[STEPS - 1], worst,
	       ok ? at : 0, TF32_LOSS_TOL, ok ? "" : ": ", ok ? "" : lt_errmsg());
	tap_ok(ok && !memcmp(a.params_at_repeat, b.params, a.n_params * sizeof(float)) &&
	       !memcmp(a.loss, b.loss, REPEAT_STEPS * sizeof a.loss[0]),
	       "%s, tf32: a second run repeats the first's %d losses and parameters bitwise", spec,
	       REPEAT_STEPS);
	free_runs(&a, &b);
	lt_backend_set_matmul(be, LT_MATMUL_FP32);
}

/* Six checks for one backend spec against the CPU's run. */
static void check_backend(const char *spec, const struct lt_model_config *c, const struct run *cpu)
{
	lt_backend *be = NULL;
	struct run a = { 0 }, b = { 0 };
	int at;
	if (!tap_ok(lt_backend_new(spec, 0, &be) == LT_OK, "backend '%s' opens%s%s", spec,
		    lt_errmsg()[0] ? ": " : "", lt_errmsg())) {
		for (int i = 0; i < 5; i++)
			tap_ok(0, "backend '%s' did not open", spec);
		return;
	}
	int ok = train(be, c, STEPS, &a) && train(be, c, REPEAT_STEPS, &b);
	if (!tap_ok(ok, "%s: a %d-step and a %d-step run complete%s%s", spec, STEPS, REPEAT_STEPS,
		    ok ? "" : ": ", ok ? "" : lt_errmsg())) {
		tap_ok(0, "%s: no losses to compare", spec);
		tap_ok(0, "%s: no runs to compare", spec);
	} else {
		double worst = worst_loss_difference(&a, cpu, &at);
		tap_ok(worst <= LOSS_TOL,
		       "%s: %d steps of the tiny preset (batch %d x seq %d): losses %.5f -> %.5f, cpu "
		       "%.5f -> %.5f; worst relative difference %.2e (step %d) <= %g; final parameters "
		       "differ by rel L2 %.2e", spec, STEPS, BATCH, SEQ, a.loss[0], a.loss[STEPS - 1],
		       cpu->loss[0], cpu->loss[STEPS - 1], worst, at, LOSS_TOL, params_rel_l2(&a, cpu));
		tap_ok(!memcmp(a.params_at_repeat, b.params, a.n_params * sizeof(float)) &&
		       !memcmp(a.loss, b.loss, REPEAT_STEPS * sizeof a.loss[0]),
		       "%s: a second run repeats the first's %d losses and parameters bitwise", spec,
		       REPEAT_STEPS);
	}
	free_runs(&a, &b);
	check_tf32(be, spec, c, cpu);
	lt_backend_free(be);
}

int main(void)
{
	const char *env = getenv("LT_TEST_BACKENDS");
	const char *specs[16];
	int n = 0;
	char *list = env && *env ? strdup(env) : NULL;
	if (list) {
		for (char *t = strtok(list, ","); t && n < 16; t = strtok(NULL, ","))
			if (strcmp(t, "cpu"))
				specs[n++] = t;
	} else {
		for (const char *const *nm = lt_backend_names(); *nm && n < 16; nm++)
			if (strcmp(*nm, "cpu"))
				specs[n++] = *nm;
	}
	if (n == 0) {
		free(list);
		tap_skip_all("only the cpu backend is built (configure found no OpenCL + CLBlast)");
	}

	struct lt_conf conf;
	lt_conf_defaults(&conf);
	if (lt_conf_apply_preset(&conf, "tiny") != LT_OK) {
		printf("Bail out! no tiny preset: %s\n", lt_errmsg());
		return 1;
	}
	if (!read_corpus()) {
		printf("Bail out! cannot read tests/data/tiny_corpus.txt\n");
		return 1;
	}
	tap_plan(1 + 6 * n);
	lt_backend *cpu = NULL;
	struct run ref = { 0 };
	int ok = lt_backend_new("cpu", 0, &cpu) == LT_OK && train(cpu, &conf.model, STEPS, &ref);
	tap_ok(ok && ref.loss[STEPS - 1] < ref.loss[0], "cpu: %d steps, loss %.4f -> %.4f%s%s", STEPS,
	       ref.loss[0], ref.loss[STEPS - 1], ok ? "" : ": ", ok ? "" : lt_errmsg());
	lt_backend_free(cpu);
	for (int i = 0; i < n; i++)
		check_backend(specs[i], &conf.model, &ref);
	free(ref.params);
	free(ref.params_at_repeat);
	free(corpus.text);
	free(list);
	return tap_done();
}
