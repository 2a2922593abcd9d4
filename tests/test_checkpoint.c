/* Tests of checkpoints: a save read back by the safetensors reader, zlib
 * and jansson on their own, a load that restores parameters, moments and
 * state bitwise, finding the newest valid checkpoint, pruning, damaged
 * files named by their error text, shape mismatches, and saves that fail
 * part-way (a file-size limit, an impossible directory) leaving earlier
 * checkpoints as they were. */
#include "config.h"
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "backend.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "safetensors.h"
#include "tap.h"
#include "tokenizer.h"

#define B 2
#define T 16

static const struct lt_model_config small = {
	.vocab_size = 300, .dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
	.ffn_dim = 64, .max_seq = 16, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};

static const struct lt_optim_config adamw = {
	.lr = 1e-2f, .min_lr = 1e-3f, .warmup_steps = 0, .total_steps = 100,
	.schedule = LT_SCHED_COSINE, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
	.weight_decay = 0.1f, .grad_clip = 1.0f,
};

static const char config_text[] = "[model]\ndim = 32\nvocab_size = 300\n\n[train]\nlr = 0.01\n";

static char dir[4096];
static lt_backend *be;

/* A path under the test's temporary directory (a few static slots, so
 * several may be in use at once). */
static const char *at(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *at(const char *fmt, ...)
{
	static char buf[6][4400];
	static int slot;
	char rel[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rel, sizeof rel, fmt, ap);
	va_end(ap);
	slot = (slot + 1) % 6;
	snprintf(buf[slot], sizeof buf[slot], "%s/%s", dir, rel);
	return buf[slot];
}

static int exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static int msg_has(const char *a, const char *b, const char *c)
{
	const char *m = lt_errmsg();
	return strstr(m, a) && (!b || strstr(m, b)) && (!c || strstr(m, c));
}

static int same_file_bytes(const char *a, const char *b)
{
	size_t na, nb;
	unsigned char *pa = tap_slurp(a, &na), *pb = tap_slurp(b, &nb);
	int same = pa && pb && na == nb && memcmp(pa, pb, na) == 0;
	free(pa);
	free(pb);
	return same;
}

/* How many entries of path start with prefix. */
static int count_entries(const char *path, const char *prefix)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;
	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (!strncmp(e->d_name, prefix, strlen(prefix)) && strcmp(e->d_name, ".") &&
		    strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static float *read_all(lt_ref r, size_t n)
{
	float *p = malloc((n ? n : 1) * sizeof *p);
	if (!p)
		abort();
	be->ops->read(be, p, r, n);
	return p;
}

/* A model with its optimizer, trained some steps on random tokens. */
struct trained {
	lt_model *m;
	lt_optim *o;
	int steps;
	struct lt_rng rng;
};

static int train_steps(struct trained *t, int n)
{
	int32_t tok[B * T], tgt[B * T];
	for (int i = 0; i < n; i++) {
		double loss, norm;
		long cnt;
		for (int j = 0; j < B * T; j++) {
			tok[j] = (int32_t)lt_rng_below(&t->rng, 300);
			tgt[j] = (int32_t)lt_rng_below(&t->rng, 300);
		}
		lt_model_zero_grads(t->m);
		if (lt_model_forward(t->m, tok, tgt, 1.0f / (B * T), &loss, &cnt) != LT_OK ||
		    lt_model_backward(t->m) != LT_OK ||
		    lt_optim_step(t->o, &adamw, ++t->steps, &norm) != LT_OK)
			return 0;
	}
	return 1;
}

static int make_model(const struct lt_model_config *c, uint64_t seed, struct trained *t)
{
	memset(t, 0, sizeof *t);
	lt_rng_seed(&t->rng, seed, 3);
	return lt_model_new(be, c, &t->m) == LT_OK && lt_model_init(t->m, seed) == LT_OK &&
	       lt_model_plan(t->m, B, T) == LT_OK &&
	       lt_optim_new(t->m, 0, lt_model_num_params(t->m), &t->o) == LT_OK;
}

static void free_model(struct trained *t)
{
	lt_optim_free(t->o);
	lt_model_free(t->m);
	memset(t, 0, sizeof *t);
}

/* Parameters and both moments equal bitwise. */
static int same_weights(const struct trained *a, const struct trained *b)
{
	size_t n = lt_model_num_params(a->m);
	float *pa = read_all(lt_model_params(a->m), n), *pb = read_all(lt_model_params(b->m), n);
	float *ma = read_all(lt_optim_m(a->o), n), *mb = read_all(lt_optim_m(b->o), n);
	float *va = read_all(lt_optim_v(a->o), n), *vb = read_all(lt_optim_v(b->o), n);
	int same = n == lt_model_num_params(b->m) && !memcmp(pa, pb, n * sizeof *pa) &&
		   !memcmp(ma, mb, n * sizeof *ma) && !memcmp(va, vb, n * sizeof *va);
	free(pa), free(pb), free(ma), free(mb), free(va), free(vb);
	return same;
}

static struct lt_ckpt_state state_at(long step, const char *tokenizer)
{
	return (struct lt_ckpt_state){
		.step = step, .samples = (uint64_t)step * B, .seed = 0xfedcba9876543210ULL,
		.elapsed = 1.25 * (double)step, .tokens = step * B * T,
		.bad_steps = (int)(step % 3),
		.config = (char *)config_text, .tokenizer = tokenizer,
	};
}

static const char *tokenizer_path;

/* A small tokenizer.json (and tokenizer_config.json) to copy in. */
static void make_tokenizer(void)
{
	static const char text[] = "the cat sat on the mat; the cat ate the rat. ";
	struct lt_tokenizer_train_opts opts = { .vocab_size = 270, .min_frequency = 1 };
	lt_tokenizer *tok = NULL;
	if (lt_tokenizer_train_buffer(text, sizeof text - 1, &opts, &tok) != LT_OK ||
	    lt_tokenizer_save(tok, at("tok"), 16) != LT_OK) {
		printf("Bail out! cannot make a tokenizer: %s\n", lt_errmsg());
		exit(1);
	}
	lt_tokenizer_free(tok);
	static char path[4400];
	snprintf(path, sizeof path, "%s", at("tok/tokenizer.json"));
	tokenizer_path = path;
}

/* ---- the files of a save, checked by the reader, zlib and jansson ---- */

static void check_model_file(const struct trained *t, const char *path)
{
	lt_st *st = NULL;
	size_t n = lt_model_num_params(t->m);
	float *p = read_all(lt_model_params(t->m), n), *q = malloc(n * sizeof *q);
	int ok = lt_st_open(path, &st) == LT_OK;
	tap_ok(ok && lt_st_meta(st, "format") && !strcmp(lt_st_meta(st, "format"), "pt") &&
	       lt_st_meta_count(st) == 1, "model.safetensors: metadata is {\"format\": \"pt\"}");
	int good = ok && lt_st_count(st) == (size_t)lt_model_num_tensors(t->m);
	for (int i = 0; good && i < lt_model_num_tensors(t->m); i++) {
		const struct lt_tensor *mt = lt_model_tensor(t->m, i);
		const struct lt_st_info *in = lt_st_lookup(st, mt->name);
		good = in && in->dtype == LT_ST_F32 && in->ndim == mt->ndim &&
		       in->shape[0] == mt->shape[0] &&
		       (mt->ndim == 1 || in->shape[1] == mt->shape[1]) &&
		       lt_st_read_f32(st, mt->name, q + mt->off, mt->numel) == LT_OK;
		if (!good)
			tap_diag("tensor %s differs", mt->name);
	}
	tap_ok(good && !memcmp(p, q, n * sizeof *p) && lt_st_lookup(st, "lm_head.weight"),
	       "model.safetensors: every tensor under its HF name, F32, its shape, its values");
	lt_st_close(st);
	free(p);
	free(q);
}

static void check_optimizer_file(const struct trained *t, const char *path)
{
	lt_st *st = NULL;
	size_t n = lt_model_num_params(t->m);
	float *m = read_all(lt_optim_m(t->o), n), *v = read_all(lt_optim_v(t->o), n);
	float *fm = malloc(n * sizeof *fm), *fv = malloc(n * sizeof *fv);
	char numel[32];
	int nonzero = 0;
	snprintf(numel, sizeof numel, "%zu", n);
	for (size_t i = 0; i < n; i++)
		nonzero += m[i] != 0.0f && v[i] != 0.0f;
	int ok = lt_st_open(path, &st) == LT_OK && lt_st_meta(st, "begin") &&
		 !strcmp(lt_st_meta(st, "begin"), "0") && lt_st_meta(st, "end") &&
		 !strcmp(lt_st_meta(st, "end"), numel) && lt_st_meta(st, "numel") &&
		 !strcmp(lt_st_meta(st, "numel"), numel) && lt_st_meta(st, "format") &&
		 !strcmp(lt_st_meta(st, "format"), "pt");
	tap_ok(ok, "optimizer.safetensors: metadata begin 0, end = numel = %s, format pt", numel);
	ok = ok && lt_st_count(st) == 2 && lt_st_read_f32(st, "exp_avg", fm, n) == LT_OK &&
	     lt_st_read_f32(st, "exp_avg_sq", fv, n) == LT_OK && !memcmp(m, fm, n * sizeof *m) &&
	     !memcmp(v, fv, n * sizeof *v);
	tap_ok(ok && nonzero > (int)(n / 2), "optimizer.safetensors: exp_avg, exp_avg_sq equal the "
	       "moments (%d of %zu non-zero)", nonzero, n);
	lt_st_close(st);
	free(m), free(v), free(fm), free(fv);
}

/* state.json read by jansson, its checksums recomputed with zlib. */
static void check_state_file(const char *ckpt)
{
	char path[4500];
	json_error_t err;
	snprintf(path, sizeof path, "%s/state.json", ckpt);
	json_t *j = json_load_file(path, 0, &err), *files = json_object_get(j, "files");
	const char *version = json_string_value(json_object_get(j, "lltrain_version"));
	int ok = j && json_integer_value(json_object_get(j, "step")) == 2 &&
		 json_integer_value(json_object_get(j, "tokens")) == 2 * B * T &&
		 version && !strcmp(version, PACKAGE_VERSION) &&
		 json_is_string(json_object_get(j, "config")) &&
		 !strcmp(json_string_value(json_object_get(j, "config")), config_text);
	tap_ok(ok, "state.json: step, tokens, lltrain version and config as saved");
	const char *names[] = { "model.safetensors", "optimizer.safetensors", "tokenizer.json",
				"tokenizer_config.json" };
	int good = json_object_size(files) == 4;
	for (int i = 0; good && i < 4; i++) {
		json_t *e = json_object_get(files, names[i]);
		char file[4500], hex[16];
		size_t n;
		unsigned char *p;
		snprintf(file, sizeof file, "%s/%s", ckpt, names[i]);
		p = tap_slurp(file, &n);
		snprintf(hex, sizeof hex, "%08lx", crc32(crc32(0L, Z_NULL, 0), p, (uInt)n));
		good = p && e && json_integer_value(json_object_get(e, "bytes")) == (json_int_t)n &&
		       json_is_string(json_object_get(e, "crc32")) &&
		       !strcmp(json_string_value(json_object_get(e, "crc32")), hex);
		free(p);
	}
	tap_ok(good, "state.json: files lists the 4 files with their sizes and zlib CRC-32s");
	json_decref(j);
}

/* ---- the scenario ---- */

static void test_save_and_load(struct trained *a, char *ck2, size_t cap)
{
	struct lt_ckpt_state s = state_at(2, tokenizer_path), r;
	struct trained b;

	tap_ok(train_steps(a, 2), "two training steps");
	enum lt_status st = lt_checkpoint_save(at("run"), a->m, a->o, &s, ck2, cap);
	tap_ok(st == LT_OK && !strcmp(ck2, at("run/checkpoints/step_00000002")),
	       "save at step 2 writes run/checkpoints/step_00000002 (%s)", lt_errmsg());
	tap_ok(count_entries(at("run/checkpoints"), "") == 1 &&
	       count_entries(ck2, "") == 5 &&
	       exists(at("run/checkpoints/step_00000002/state.json")),
	       "one directory of five files, no temporary left");
	check_model_file(a, at("run/checkpoints/step_00000002/model.safetensors"));
	check_optimizer_file(a, at("run/checkpoints/step_00000002/optimizer.safetensors"));
	check_state_file(ck2);
	tap_ok(same_file_bytes(tokenizer_path,
			       at("run/checkpoints/step_00000002/tokenizer.json")) &&
	       same_file_bytes(at("tok/tokenizer_config.json"),
			       at("run/checkpoints/step_00000002/tokenizer_config.json")),
	       "tokenizer.json and tokenizer_config.json copied byte for byte");

	st = lt_checkpoint_read_state(ck2, &r);
	tap_ok(st == LT_OK && r.step == 2 && r.samples == 4 && r.seed == 0xfedcba9876543210ULL &&
	       r.elapsed == 2.5 && r.tokens == 2 * B * T && r.bad_steps == 2 && r.config &&
	       !strcmp(r.config, config_text) && !r.tokenizer,
	       "read_state gives back every field (a seed above 2^63 included)");
	lt_ckpt_state_free(&r);

	if (!make_model(&small, 99, &b))
		abort();
	st = lt_checkpoint_load(ck2, b.m, b.o, &r);
	tap_ok(st == LT_OK && same_weights(a, &b) && r.step == 2 && !strcmp(r.config, config_text),
	       "load into a fresh model and optimizer: parameters, moments, state bitwise equal");
	lt_ckpt_state_free(&r);
	b.steps = a->steps;
	b.rng = a->rng;
	tap_ok(train_steps(a, 1) && train_steps(&b, 1) && same_weights(a, &b),
	       "a step after the load equals the step of the run that never stopped");
	free_model(&b);
}

static void test_latest_and_prune(struct trained *a)
{
	char path[4400];
	struct lt_ckpt_state s = state_at(5, NULL), r;

	train_steps(a, 2);
	tap_ok(lt_checkpoint_save(at("run"), a->m, a->o, &s, NULL, 0) == LT_OK,
	       "save at step 5 without a tokenizer");
	tap_ok(lt_checkpoint_latest(at("run"), path, sizeof path, NULL) == LT_OK &&
	       !strcmp(path, at("run/checkpoints/step_00000005")), "latest picks step 5");
	tap_ok(lt_checkpoint_resolve(at("run"), path, sizeof path, NULL) == LT_OK &&
	       !strcmp(path, at("run/checkpoints/step_00000005")) &&
	       lt_checkpoint_resolve(at("run/checkpoints/step_00000002"), path,
				     sizeof path, NULL) == LT_OK &&
	       !strcmp(path, at("run/checkpoints/step_00000002")),
	       "resolve: a run directory gives its newest, a checkpoint itself");
	tap_ok(lt_checkpoint_resolve(at("nowhere"), path, sizeof path, NULL) == LT_ERR_NOTFOUND &&
	       msg_has(at("nowhere"), strerror(ENOENT), NULL),
	       "resolve of a missing path: LT_ERR_NOTFOUND naming it (%s)", lt_errmsg());
	tap_ok(lt_checkpoint_latest(at("tok"), path, sizeof path, NULL) == LT_ERR_NOTFOUND &&
	       msg_has(at("tok"), "no checkpoint", NULL),
	       "latest of a directory without checkpoints: LT_ERR_NOTFOUND naming it (%s)",
	       lt_errmsg());

	/* the same step again replaces the old directory */
	s.elapsed = 99.5;
	tap_ok(lt_checkpoint_save(at("run"), a->m, a->o, &s, NULL, 0) == LT_OK &&
	       lt_checkpoint_read_state(at("run/checkpoints/step_00000005"), &r) == LT_OK &&
	       r.elapsed == 99.5 && count_entries(at("run/checkpoints"), ".") == 0,
	       "a second save of step 5 replaces the first, nothing left aside");
	lt_ckpt_state_free(&r);

	for (long step = 7; step <= 9; step += 2) {
		s = state_at(step, tokenizer_path);
		train_steps(a, 2);
		lt_checkpoint_save(at("run"), a->m, a->o, &s, NULL, 0);
	}
	mkdir(at("run/checkpoints/.tmp-step_00000011-99999"), 0755);
	tap_write_file(at("run/checkpoints/.tmp-step_00000011-99999/model.safetensors"), "x", 1);
	mkdir(at("run/checkpoints/notes"), 0755);
	tap_ok(count_entries(at("run/checkpoints"), "step_") == 4, "four checkpoints: 2, 5, 7, 9");
	tap_ok(lt_checkpoint_prune(at("run"), 2) == LT_OK &&
	       count_entries(at("run/checkpoints"), "step_") == 2 &&
	       exists(at("run/checkpoints/step_00000007")) &&
	       exists(at("run/checkpoints/step_00000009")) &&
	       count_entries(at("run/checkpoints"), ".tmp") == 0 &&
	       exists(at("run/checkpoints/notes")),
	       "prune 2 keeps steps 7 and 9, removes the stale temporary, leaves other names");
}

static void test_damaged(void)
{
	char file[4400], path[4400], want[64];
	struct lt_ckpt_state r;
	size_t n;

	snprintf(file, sizeof file, "%s", at("run/checkpoints/step_00000009/model.safetensors"));
	unsigned char *orig = tap_slurp(file, &n);

	snprintf(want, sizeof want, "%zu bytes, expected %zu (truncated?)", n - 100, n);
	tap_ok(orig && truncate(file, (off_t)(n - 100)) == 0 &&
	       lt_checkpoint_read_state(at("run/checkpoints/step_00000009"), &r) == LT_ERR_FORMAT &&
	       msg_has(file, want, NULL),
	       "a truncated model.safetensors: the file and both sizes named (%s)", lt_errmsg());
	tap_ok(lt_checkpoint_latest(at("run"), path, sizeof path, NULL) == LT_OK &&
	       !strcmp(path, at("run/checkpoints/step_00000007")),
	       "latest passes over it to step 7");

	orig[n / 2] ^= 0x10;
	tap_write_file(file, orig, n);
	tap_ok(lt_checkpoint_read_state(at("run/checkpoints/step_00000009"), &r) == LT_ERR_FORMAT &&
	       msg_has(file, "checksum mismatch (file changed or corrupted)", NULL),
	       "one flipped byte: checksum mismatch naming the file (%s)", lt_errmsg());
	tap_ok(lt_checkpoint_latest(at("run"), path, sizeof path, NULL) == LT_OK &&
	       !strcmp(path, at("run/checkpoints/step_00000007")), "latest still picks step 7");

	orig[n / 2] ^= 0x10;
	tap_write_file(file, orig, n);
	lt_errmsg_clear();
	tap_ok(lt_checkpoint_read_state(at("run/checkpoints/step_00000009"), &r) == LT_OK,
	       "the original bytes verify again (%s)", lt_errmsg());
	lt_ckpt_state_free(&r);
	free(orig);

	tap_ok(lt_checkpoint_read_state(at("tok"), &r) == LT_ERR_NOTFOUND &&
	       msg_has(at("tok/state.json"), NULL, NULL),
	       "read_state of a directory without state.json names it (%s)", lt_errmsg());
}

static void test_mismatches(void)
{
	char ck[4400];
	struct lt_model_config wide = small, deep = small, tied = small;
	struct trained t;
	struct lt_ckpt_state r;

	snprintf(ck, sizeof ck, "%s", at("run/checkpoints/step_00000009"));
	wide.dim = 48;
	if (!make_model(&wide, 5, &t))
		abort();
	size_t n = lt_model_num_params(t.m);
	float *before = read_all(lt_model_params(t.m), n), *after;
	tap_ok(lt_checkpoint_load(ck, t.m, t.o, &r) == LT_ERR_FORMAT &&
	       msg_has(at("run/checkpoints/step_00000009/model.safetensors"),
		       "tensor model.embed_tokens.weight has shape [300, 32]",
		       "the model expects [300, 48]"),
	       "a wider model: the tensor and both shapes named (%s)", lt_errmsg());
	after = read_all(lt_model_params(t.m), n);
	tap_ok(!memcmp(before, after, n * sizeof *before), "and the model is left as it was");
	free(before), free(after);
	free_model(&t);

	deep.n_layers = 3;
	if (!make_model(&deep, 5, &t))
		abort();
	tap_ok(lt_checkpoint_load_model(ck, t.m) == LT_ERR_FORMAT &&
	       msg_has("tensor model.layers.2.input_layernorm.weight is missing", "[32]", NULL),
	       "a deeper model: the missing tensor named (%s)", lt_errmsg());
	free_model(&t);

	tied.tied = 1;
	if (!make_model(&tied, 5, &t))
		abort();
	tap_ok(lt_checkpoint_load_model(ck, t.m) == LT_ERR_FORMAT &&
	       msg_has("holds tensor lm_head.weight", "tied", NULL),
	       "a tied model refuses the untied file's lm_head (%s)", lt_errmsg());
	free_model(&t);

	if (!make_model(&small, 5, &t))
		abort();
	lt_optim_free(t.o);
	lt_optim_new(t.m, 0, lt_model_num_params(t.m) / 2, &t.o);
	tap_ok(lt_checkpoint_load(ck, t.m, t.o, NULL) == LT_ERR_FORMAT &&
	       msg_has("optimizer.safetensors: moments of elements [0, ",
		       "the optimizer holds [0, ", NULL),
	       "an optimizer of another range: both ranges named (%s)", lt_errmsg());
	free_model(&t);
}

static void test_tied(void)
{
	struct lt_model_config tied = small;
	struct trained a, b;
	struct lt_ckpt_state s = state_at(3, NULL);
	lt_st *st = NULL;
	char path[4400];

	tied.tied = 1;
	if (!make_model(&tied, 11, &a) || !make_model(&tied, 12, &b))
		abort();
	train_steps(&a, 3);
	int ok = lt_checkpoint_save(at("tied"), a.m, a.o, &s, path, sizeof path) == LT_OK &&
		 lt_checkpoint_load(path, b.m, b.o, NULL) == LT_OK && same_weights(&a, &b);
	snprintf(path, sizeof path, "%s", at("tied/checkpoints/step_00000003/model.safetensors"));
	tap_ok(ok && lt_st_open(path, &st) == LT_OK && !lt_st_lookup(st, "lm_head.weight") &&
	       lt_st_count(st) == (size_t)lt_model_num_tensors(a.m),
	       "a tied model saves no lm_head.weight and loads back bitwise");
	lt_st_close(st);
	free_model(&a);
	free_model(&b);
}

/* A save under a file-size limit too small for model.safetensors. */
static void test_failed_save(struct trained *a)
{
	struct rlimit old, lim;
	struct lt_ckpt_state s = state_at(11, tokenizer_path), r;
	struct trained b;
	char path[4400];
	char ck9[4400];

	/* the weights that step 9 holds, for the comparison below */
	snprintf(ck9, sizeof ck9, "%s", at("run/checkpoints/step_00000009"));
	if (!make_model(&small, 1, &b) || lt_checkpoint_load(ck9, b.m, b.o, NULL) != LT_OK)
		abort();
	if (getrlimit(RLIMIT_FSIZE, &old) != 0 ||
	    (old.rlim_cur != RLIM_INFINITY && old.rlim_cur <= 65536)) {
		for (int i = 0; i < 4; i++)
			tap_skip("cannot lower RLIMIT_FSIZE to inject a write error");
		free_model(&b);
		return;
	}
	lim = old;
	lim.rlim_cur = 65536;
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
	train_steps(a, 1);
	int limited = setrlimit(RLIMIT_FSIZE, &lim) == 0;
	enum lt_status st11 = lt_checkpoint_save(at("run"), a->m, a->o, &s, NULL, 0);
	char msg11[1024];
	snprintf(msg11, sizeof msg11, "%s", lt_errmsg());
	s.step = 9;
	enum lt_status st9 = lt_checkpoint_save(at("run"), a->m, a->o, &s, NULL, 0);
	if (limited)
		setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, oldsig);

	tap_ok(limited && st11 == LT_ERR_IO &&
	       strstr(msg11, at("run/checkpoints/.tmp-step_00000011-")) &&
	       strstr(msg11, "/model.safetensors: ") && strstr(msg11, strerror(EFBIG)),
	       "a save past the file-size limit: LT_ERR_IO naming the file (%s)", msg11);
	tap_ok(st9 == LT_ERR_IO && msg_has("model.safetensors", strerror(EFBIG), NULL),
	       "so does a save that would replace step 9");
	tap_ok(count_entries(at("run/checkpoints"), ".") == 0 &&
	       !exists(at("run/checkpoints/step_00000011")),
	       "no temporary directory and no step 11 left");
	struct trained c;
	if (!make_model(&small, 2, &c))
		abort();
	tap_ok(lt_checkpoint_latest(at("run"), path, sizeof path, NULL) == LT_OK && !strcmp(path, ck9) &&
	       lt_checkpoint_load(path, c.m, c.o, &r) == LT_OK && r.step == 9 &&
	       same_weights(&b, &c), "step 9 still verifies and loads bitwise as it was saved");
	lt_ckpt_state_free(&r);
	free_model(&c);
	free_model(&b);
}

static void test_impossible_place(struct trained *a)
{
	struct lt_ckpt_state s = state_at(1, NULL);
	size_t n;
	unsigned char *p;

	mkdir(at("run2"), 0755);
	tap_write_file(at("run2/checkpoints"), "keep me\n", 8);
	enum lt_status st = lt_checkpoint_save(at("run2"), a->m, a->o, &s, NULL, 0);
	p = tap_slurp(at("run2/checkpoints"), &n);
	tap_ok(st == LT_ERR_IO && msg_has(at("run2/checkpoints"), "not a directory", NULL) &&
	       p && n == 8 && !memcmp(p, "keep me\n", 8),
	       "RUN/checkpoints a regular file: LT_ERR_IO naming it, the file untouched (%s)",
	       lt_errmsg());
	free(p);
	char missing[4400];
	snprintf(missing, sizeof missing, "%s", at("tok/no-such-tokenizer.json"));
	s.tokenizer = missing;
	st = lt_checkpoint_save(at("run3"), a->m, a->o, &s, NULL, 0);
	tap_ok(st == LT_ERR_IO && msg_has(missing, strerror(ENOENT), NULL) &&
	       count_entries(at("run3/checkpoints"), "") == 0,
	       "a missing tokenizer: named, and nothing left in run3/checkpoints (%s)",
	       lt_errmsg());
}

static void remove_all(const char *path)
{
	char cmd[4600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", path);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	struct trained a;
	char ck2[4400];

	snprintf(dir, sizeof dir, "%s/lt_ckpt_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (lt_backend_new("cpu", 0, &be) != LT_OK || !make_model(&small, 1, &a)) {
		printf("Bail out! cannot build the model: %s\n", lt_errmsg());
		return 1;
	}
	make_tokenizer();
	tap_plan(39);
	test_save_and_load(&a, ck2, sizeof ck2);
	test_latest_and_prune(&a);
	test_damaged();
	test_mismatches();
	test_tied();
	test_failed_save(&a);
	test_impossible_place(&a);
	free_model(&a);
	lt_backend_free(be);
	remove_all(dir);
	return tap_done();
}
