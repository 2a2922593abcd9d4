/* Hugging Face parity: lltrain in float32 against a float64
 * transformers.LlamaForCausalLM (tests/fixtures/make_hf_fixture.py) —
 * loss, logits, every parameter gradient, and one clipped AdamW step. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "optim.h"
#include "io/safetensors.h"
#include "tap.h"

enum { B = 3, T = 17, N = B * T };

static double meta_number(const lt_st *st, const char *key)
{
	const char *v = lt_st_meta(st, key);
	return v ? atof(v) : NAN;
}

static int meta_bool(const lt_st *st, const char *key)
{
	const char *v = lt_st_meta(st, key);
	return v && (!strcmp(v, "True") || !strcmp(v, "true") || !strcmp(v, "1"));
}

static struct lt_model_config config_from_meta(const lt_st *st)
{
	return (struct lt_model_config){
		.vocab_size = (int)meta_number(st, "vocab_size"),
		.dim = (int)meta_number(st, "hidden_size"),
		.n_layers = (int)meta_number(st, "n_layers"),
		.n_heads = (int)meta_number(st, "n_heads"),
		.n_kv_heads = (int)meta_number(st, "n_kv_heads"),
		.ffn_dim = (int)meta_number(st, "intermediate_size"),
		.max_seq = T,
		.rope_theta = (float)meta_number(st, "rope_theta"),
		.norm_eps = (float)meta_number(st, "rms_norm_eps"),
		.tied = meta_bool(st, "tie_word_embeddings"),
	};
}

/* Reads a float64 fixture tensor of n elements; NULL (and a failed check)
 * when it is missing or has another size. */
static double *read_ref(const lt_st *st, const char *name, size_t n)
{
	double *x = malloc(n * sizeof *x);
	if (x && lt_st_read_f64(st, name, x, n) == LT_OK)
		return x;
	tap_ok(0, "fixture tensor '%s' of %zu elements: %s", name, n, lt_errmsg());
	free(x);
	return NULL;
}

/* Loads the fixture's initial weights into the model by Hugging Face name. */
static int load_weights(const lt_st *st, lt_model *m, float *host)
{
	lt_backend *be = lt_model_backend(m);
	for (int i = 0; i < lt_model_num_tensors(m); i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		if (lt_st_read_f32(st, t->name, host + t->off, t->numel) != LT_OK) {
			tap_diag("cannot read %s: %s", t->name, lt_errmsg());
			return 0;
		}
	}
	be->ops->write(be, lt_model_params(m), host, lt_model_num_params(m));
	return 1;
}

static void compare_tensor(const lt_st *st, const char *prefix, const struct lt_tensor *t,
			   const float *ours, double tol, const char *what)
{
	char name[128];
	snprintf(name, sizeof name, "%s%s", prefix, t->name);
	double *ref = read_ref(st, name, t->numel);
	if (!ref)
		return;
	double err = tap_rel_l2_f(ours + t->off, ref, (long)t->numel);
	tap_ok(err <= tol, "%s %s: rel L2 %.2e (<= %.0e)", what, t->name, err, tol);
	free(ref);
}

static void check_fixture(lt_backend *be, const char *path)
{
	lt_st *st = NULL;
	lt_model *m = NULL;
	lt_optim *o = NULL;
	float *host = NULL, *initial = NULL, *logits = NULL;
	double *ref = NULL;
	if (lt_st_open(path, &st) != LT_OK) {
		tap_ok(0, "open %s: %s", path, lt_errmsg());
		return;
	}
	struct lt_model_config c = config_from_meta(st);
	if (!tap_ok(lt_model_new(be, &c, &m) == LT_OK && lt_model_plan(m, B, T) == LT_OK,
		    "%s: model from the fixture's config (tied=%d): %s", path, c.tied, lt_errmsg()))
		goto out;
	size_t P = lt_model_num_params(m);
	host = malloc(P * sizeof *host);
	initial = malloc(P * sizeof *initial);
	logits = malloc((size_t)N * c.vocab_size * sizeof *logits);
	if (!load_weights(st, m, initial)) {
		tap_ok(0, "%s: load the initial weights", path);
		goto out;
	}

	int32_t tokens[B * (T + 1)], tok[N], tgt[N];
	if (lt_st_read_i32(st, "tokens", tokens, B * (T + 1)) != LT_OK) {
		tap_ok(0, "%s: tokens: %s", path, lt_errmsg());
		goto out;
	}
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			tok[b * T + t] = tokens[b * (T + 1) + t];
			tgt[b * T + t] = tokens[b * (T + 1) + t + 1];
		}

	/* Forward only: logits and loss. */
	double loss_sum;
	long n;
	lt_model_forward(m, tok, tgt, 0.0f, &loss_sum, &n);
	lt_model_read_logits(m, 0, N, logits);
	if ((ref = read_ref(st, "logits", (size_t)N * c.vocab_size))) {
		double err = tap_rel_l2_f(logits, ref, (long)N * c.vocab_size);
		tap_ok(err <= 1e-4, "logits: rel L2 %.2e (<= 1e-4)", err);
		free(ref);
	}
	double *lr = read_ref(st, "loss", 1);
	if (lr) {
		double ref_loss = lr[0];
		free(lr);
		double rel = fabs(loss_sum / n - ref_loss) / fabs(ref_loss);
		tap_ok(n == N && rel <= 1e-5, "loss %.8f vs %.8f: rel %.2e (<= 1e-5)", loss_sum / n,
		       ref_loss, rel);
	}

	/* Gradients. */
	lt_model_zero_grads(m);
	lt_model_forward(m, tok, tgt, 1.0f / N, &loss_sum, &n);
	lt_model_backward(m);
	be->ops->read(be, host, lt_model_grads(m), P);
	for (int i = 0; i < lt_model_num_tensors(m); i++)
		compare_tensor(st, "grad.", lt_model_tensor(m, i), host, 1e-4, "gradient");

	/* One AdamW step with the fixture's clipping and hyperparameters. */
	struct lt_optim_config oc = {
		.lr = (float)meta_number(st, "lr"), .min_lr = (float)meta_number(st, "lr"),
		.warmup_steps = 0, .total_steps = 1, .schedule = LT_SCHED_CONSTANT,
		.beta1 = (float)meta_number(st, "beta1"), .beta2 = (float)meta_number(st, "beta2"),
		.eps = (float)meta_number(st, "eps"), .weight_decay = (float)meta_number(st, "weight_decay"),
		.grad_clip = (float)meta_number(st, "max_norm"),
	};
	double norm;
	if (!tap_ok(lt_optim_new(m, 0, P, &o) == LT_OK && lt_optim_step(o, &oc, 1, &norm) == LT_OK,
		    "optimizer step: %s", lt_errmsg()))
		goto out;
	double *rn = read_ref(st, "grad_norm", 1);
	if (rn) {
		double rel = fabs(norm - rn[0]) / rn[0];
		tap_ok(rel <= 1e-4, "gradient norm %.6f vs %.6f: rel %.2e (<= 1e-4)", norm, rn[0], rel);
		free(rn);
	}
	be->ops->read(be, host, lt_model_params(m), P);
	for (int i = 0; i < lt_model_num_tensors(m); i++)
		compare_tensor(st, "updated.", lt_model_tensor(m, i), host, 1e-4, "updated parameter");
	/* The update itself (updated - initial) is a stricter view than the
	 * parameters, whose size hides it. */
	double num = 0, den = 0;
	for (int i = 0; i < lt_model_num_tensors(m); i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		char name[128];
		snprintf(name, sizeof name, "updated.%s", t->name);
		double *u = read_ref(st, name, t->numel);
		if (!u)
			continue;
		for (size_t j = 0; j < t->numel; j++) {
			double ours = (double)host[t->off + j] - initial[t->off + j];
			double theirs = u[j] - (double)initial[t->off + j];
			num += (ours - theirs) * (ours - theirs);
			den += theirs * theirs;
		}
		free(u);
	}
	tap_ok(sqrt(num / den) <= 1e-4, "AdamW update (updated - initial), all tensors: rel L2 %.2e (<= 1e-4)",
	       sqrt(num / den));
	tap_ok(be->ops->sync(be) == LT_OK, "backend reports no failure");
out:
	free(host);
	free(initial);
	free(logits);
	lt_optim_free(o);
	lt_model_free(m);
	lt_st_close(st);
}

int main(void)
{
	const char *srcdir = getenv("top_srcdir");
	const char *names[] = { "hf_untied.safetensors", "hf_tied.safetensors" };
	const char *only = getenv("LT_TEST_BACKENDS");
	const char *const *backends = lt_backend_names();
	for (int b = 0; backends[b]; b++) {
		lt_backend *be = NULL;
		if (only && !strstr(only, backends[b]))
			continue;
		if (!tap_ok(lt_backend_new(backends[b], 0, &be) == LT_OK, "open backend %s: %s",
			    backends[b], lt_errmsg()))
			continue;
		tap_diag("backend %s", backends[b]);
		for (int i = 0; i < 2; i++) {
			char path[4096];
			snprintf(path, sizeof path, "%s/tests/fixtures/%s", srcdir ? srcdir : ".", names[i]);
			check_fixture(be, path);
		}
		lt_backend_free(be);
	}
	return tap_done();
}
