/* Tests of checkpoints: a save read back by the safetensors reader, zlib
 * and jansson on their own, a load that restores parameters, moments and
 * state bitwise, finding the newest valid checkpoint, pruning, damaged
 * files named by their error text and recorded where the search passes
 * over them, damaged checkpoints moved aside, shape mismatches, saves that
 * fail part-way (a file-size limit, an impossible directory) leaving earlier
 * checkpoints as they were, and optimizer moments saved in shards by
 * several ranks and loaded back on other numbers of ranks (gaps, overlaps
 * and missing shards refused by name). */
#include "config.h"
#include "io/checkpoint.h"

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
#include "io/safetensors.h"
#include "io/fs.h"
#include "tap.h"
#include "text/tokenizer.h"

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

static const char *dir; /* the scratch directory */
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
	tap_ok(tap_count_entries(at("run/checkpoints"), "", 0) == 1 &&
	       tap_count_entries(ck2, "", 0) == 5 &&
	       tap_exists(at("run/checkpoints/step_00000002/state.json")),
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
	tap_ok(lt_checkpoint_latest(at("run"), path, sizeof path, NULL, NULL) == LT_OK &&
	       !strcmp(path, at("run/checkpoints/step_00000005")), "latest picks step 5");
	tap_ok(lt_checkpoint_resolve(at("run"), path, sizeof path, NULL, NULL) == LT_OK &&
	       !strcmp(path, at("run/checkpoints/step_00000005")) &&
	       lt_checkpoint_resolve(at("run/checkpoints/step_00000002"), path,
				     sizeof path, NULL, NULL) == LT_OK &&
	       !strcmp(path, at("run/checkpoints/step_00000002")),
	       "resolve: a run directory gives its newest, a checkpoint itself");
	tap_ok(lt_checkpoint_resolve(at("nowhere"), path, sizeof path, NULL, NULL) == LT_ERR_NOTFOUND &&
	       msg_has(at("nowhere"), strerror(ENOENT), NULL),
	       "resolve of a missing path: LT_ERR_NOTFOUND naming it (%s)", lt_errmsg());
	tap_ok(lt_checkpoint_latest(at("tok"), path, sizeof path, NULL, NULL) == LT_ERR_NOTFOUND &&
	       msg_has(at("tok"), "no checkpoint", NULL),
	       "latest of a directory without checkpoints: LT_ERR_NOTFOUND naming it (%s)",
	       lt_errmsg());

	/* the same step again replaces the old directory */
	s.elapsed = 99.5;
	tap_ok(lt_checkpoint_save(at("run"), a->m, a->o, &s, NULL, 0) == LT_OK &&
	       lt_checkpoint_read_state(at("run/checkpoints/step_00000005"), &r) == LT_OK &&
	       r.elapsed == 99.5 && tap_count_entries(at("run/checkpoints"), ".", 0) == 0,
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
	tap_ok(tap_count_entries(at("run/checkpoints"), "step_", 0) == 4, "four checkpoints: 2, 5, 7, 9");
	tap_ok(lt_checkpoint_prune(at("run"), 2) == LT_OK &&
	       tap_count_entries(at("run/checkpoints"), "step_", 0) == 2 &&
	       tap_exists(at("run/checkpoints/step_00000007")) &&
	       tap_exists(at("run/checkpoints/step_00000009")) &&
	       tap_count_entries(at("run/checkpoints"), ".tmp", 0) == 0 &&
	       tap_exists(at("run/checkpoints/notes")),
	       "prune 2 keeps steps 7 and 9, removes the stale temporary, leaves other names");
}

/* lt_checkpoint_latest of run, which must pick step 7, having passed over
 * step 9 alone for exactly the reason want. */
static int passes_over_9(const char *want)
{
	char path[4400];
	struct lt_ckpt_skips k = { 0 };
	int ok = lt_checkpoint_latest(at("run"), path, sizeof path, NULL, &k) == LT_OK &&
		 !strcmp(path, at("run/checkpoints/step_00000007")) && k.n == 1 &&
		 k.v[0].step == 9 && !strcmp(k.v[0].dir, at("run/checkpoints/step_00000009")) &&
		 !strcmp(k.v[0].why, want);
	if (!ok)
		tap_diag("latest gave %s, %zu passed over: %s", path, k.n, k.n ? k.v[0].why : "");
	lt_ckpt_skips_free(&k);
	return ok;
}

static void test_damaged(void)
{
	char file[4500], want[256], moved[4600], ck9[4400];
	struct lt_ckpt_state r;
	size_t n;

	snprintf(ck9, sizeof ck9, "%s", at("run/checkpoints/step_00000009"));
	snprintf(file, sizeof file, "%s/model.safetensors", ck9);
	unsigned char *orig = tap_slurp(file, &n);

	snprintf(want, sizeof want, "model.safetensors is %zu bytes, state.json says %zu (truncated)",
		 n - 100, n);
	tap_ok(orig && truncate(file, (off_t)(n - 100)) == 0 &&
	       lt_checkpoint_read_state(ck9, &r) == LT_ERR_FORMAT && msg_has(ck9, want, NULL),
	       "a truncated model.safetensors: the file and both sizes named (%s)", lt_errmsg());
	tap_ok(passes_over_9(want), "latest passes over it to step 7, recording step 9 and why");

	uint32_t good = (uint32_t)crc32(crc32(0L, Z_NULL, 0), orig, (uInt)n);
	orig[n / 2] ^= 0x10;
	uint32_t bad = (uint32_t)crc32(crc32(0L, Z_NULL, 0), orig, (uInt)n);
	tap_write_file(file, orig, n);
	snprintf(want, sizeof want, "model.safetensors has CRC-32 %08x, state.json says %08x "
		 "(corrupted since the save)", (unsigned)bad, (unsigned)good);
	tap_ok(lt_checkpoint_read_state(ck9, &r) == LT_ERR_FORMAT && msg_has(ck9, want, NULL),
	       "one flipped byte: both CRC-32s named (%s)", lt_errmsg());
	tap_ok(passes_over_9(want), "latest passes over it to step 7, recording the CRC-32s");

	orig[n / 2] ^= 0x10;
	tap_write_file(file, orig, n);
	snprintf(moved, sizeof moved, "%s.away", file);
	tap_ok(rename(file, moved) == 0 && lt_checkpoint_read_state(ck9, &r) == LT_ERR_NOTFOUND &&
	       msg_has(ck9, "model.safetensors is missing (state.json lists it)", NULL) &&
	       passes_over_9("model.safetensors is missing (state.json lists it)"),
	       "a missing model.safetensors is named, and passed over (%s)", lt_errmsg());
	rename(moved, file);

	char state[4500];
	json_error_t jerr;
	const char *text = "{\"format_version\": 1,\n\"step\": 9,,\n}\n";
	size_t len;
	unsigned char *state_orig;
	snprintf(state, sizeof state, "%s/state.json", ck9);
	state_orig = tap_slurp(state, &len);
	if (json_loads(text, 0, &jerr))
		abort();
	snprintf(want, sizeof want, "state.json:%d: %s", jerr.line, jerr.text);
	tap_write_file(state, text, strlen(text));
	tap_ok(lt_checkpoint_read_state(ck9, &r) == LT_ERR_FORMAT &&
	       msg_has(ck9, want + strlen("state.json"), NULL) && passes_over_9(want),
	       "a state.json that does not parse is passed over, naming the line (%s)", want);

	/* every checkpoint damaged: none is picked, each one recorded */
	char state7[4400], path[4400], aside7[4500];
	struct lt_ckpt_skips k = { 0 };
	snprintf(state7, sizeof state7, "%s", at("run/checkpoints/step_00000007/state.json"));
	snprintf(aside7, sizeof aside7, "%s.away", state7);
	tap_ok(rename(state7, aside7) == 0 &&
	       lt_checkpoint_latest(at("run"), path, sizeof path, NULL, &k) == LT_ERR_FORMAT &&
	       msg_has(at("run: no valid checkpoint"), NULL, NULL) && k.n == 2 &&
	       k.v[0].step == 9 && !strcmp(k.v[0].why, want) && k.v[1].step == 7 &&
	       !strcmp(k.v[1].why, "state.json is missing (no finished save here)"),
	       "all damaged: LT_ERR_FORMAT naming the run, both recorded newest first (%s)",
	       lt_errmsg());
	tap_ok(lt_checkpoint_resolve(at("run"), path, sizeof path, NULL, &k) == LT_ERR_FORMAT &&
	       k.n == 2 && lt_checkpoint_resolve(ck9, path, sizeof path, NULL, &k) == LT_OK &&
	       k.n == 0, "resolve records them for a run directory, empties the list for a "
	       "checkpoint named");
	lt_ckpt_skips_free(&k);
	rename(aside7, state7);
	tap_write_file(state, state_orig, len);
	free(state_orig);

	lt_errmsg_clear();
	tap_ok(lt_checkpoint_read_state(ck9, &r) == LT_OK,
	       "the original bytes verify again (%s)", lt_errmsg());
	lt_ckpt_state_free(&r);
	free(orig);

	tap_ok(lt_checkpoint_read_state(at("tok"), &r) == LT_ERR_NOTFOUND &&
	       msg_has(at("tok: state.json is missing"), NULL, NULL),
	       "read_state of a directory without state.json names it (%s)", lt_errmsg());
}

/* A damaged checkpoint moved aside: untouched, no longer found, and out of
 * the way of a later save of its step and of pruning. */
static void test_set_aside(struct trained *a)
{
	char path[4400], out[4400], file[4500], ck2[4400];
	struct lt_ckpt_state s;
	size_t n, m;

	snprintf(ck2, sizeof ck2, "%s", at("aside/checkpoints/step_00000002"));
	for (long step = 1; step <= 2; step++) {
		s = state_at(step, NULL);
		train_steps(a, 1);
		if (lt_checkpoint_save(at("aside"), a->m, a->o, &s, NULL, 0) != LT_OK)
			abort();
	}
	snprintf(file, sizeof file, "%s/model.safetensors", ck2);
	unsigned char *before = tap_slurp(file, &n);
	if (!before || truncate(file, (off_t)(n / 2)) != 0)
		abort();
	free(before);
	before = tap_slurp(file, &n);
	tap_ok(lt_checkpoint_set_aside(ck2, out, sizeof out) == LT_OK &&
	       !strcmp(out, at("aside/checkpoints/step_00000002.damaged")) && !tap_exists(ck2),
	       "the damaged step 2 moves to %s", out);
	unsigned char *after = tap_slurp(at("aside/checkpoints/step_00000002.damaged/model.safetensors"),
					&m);
	tap_ok(before && after && n == m && !memcmp(before, after, n) &&
	       lt_checkpoint_latest(at("aside"), path, sizeof path, NULL, NULL) == LT_OK &&
	       !strcmp(path, at("aside/checkpoints/step_00000001")),
	       "its files are as they were, and latest no longer sees it");
	free(after);

	s = state_at(2, NULL);
	tap_ok(lt_checkpoint_save(at("aside"), a->m, a->o, &s, NULL, 0) == LT_OK &&
	       lt_checkpoint_set_aside(ck2, out, sizeof out) == LT_OK &&
	       !strcmp(out, at("aside/checkpoints/step_00000002.damaged-2")),
	       "a later save of step 2 leaves it; that one in turn goes aside to %s", out);
	after = tap_slurp(at("aside/checkpoints/step_00000002.damaged/model.safetensors"), &m);
	s = state_at(3, NULL);
	tap_ok(lt_checkpoint_save(at("aside"), a->m, a->o, &s, NULL, 0) == LT_OK &&
	       lt_checkpoint_prune(at("aside"), 1) == LT_OK &&
	       tap_count_entries(at("aside/checkpoints"), "step_", 0) == 3 &&
	       tap_exists(at("aside/checkpoints/step_00000003")) &&
	       tap_exists(at("aside/checkpoints/step_00000002.damaged-2/state.json")) &&
	       after && n == m && !memcmp(before, after, n),
	       "prune 1 after a save of step 3 removes step 1 and keeps both set-aside copies "
	       "untouched");
	free(before);
	free(after);
	tap_ok(lt_checkpoint_set_aside(at("aside/nowhere"), out, sizeof out) == LT_ERR_IO &&
	       msg_has(at("aside/nowhere"), "cannot move it aside", strerror(ENOENT)),
	       "a missing directory is named (%s)", lt_errmsg());
}

/* Loading the weights of checkpoint ck into a new model of shape c must
 * fail, with a message that holds a and b. */
static void expect_refused(const char *ck, const struct lt_model_config *c, const char *a,
			   const char *b, const char *what)
{
	struct trained t;
	if (!make_model(c, 5, &t))
		abort();
	tap_ok(lt_checkpoint_load_model(ck, t.m) == LT_ERR_FORMAT && msg_has(a, b, NULL), "%s (%s)",
	       what, lt_errmsg());
	free_model(&t);
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
	expect_refused(ck, &deep, "tensor model.layers.2.input_layernorm.weight is missing", "[32]",
		       "a deeper model: the missing tensor named");
	tied.tied = 1;
	expect_refused(ck, &tied, "holds tensor lm_head.weight", "tied",
		       "a tied model refuses the untied file's lm_head");

	/* the moments are re-sharded on load: half the range takes its half */
	struct trained full;
	lt_optim *half = NULL;
	if (!make_model(&small, 5, &t) || !make_model(&small, 6, &full))
		abort();
	n = lt_model_num_params(t.m);
	if (lt_optim_new(t.m, n / 2, n, &half) != LT_OK)
		abort();
	float *fm = NULL, *hm = NULL;
	int ok = lt_checkpoint_load(ck, t.m, half, NULL) == LT_OK &&
		 lt_checkpoint_load(ck, full.m, full.o, NULL) == LT_OK;
	if (ok) {
		fm = read_all(lt_optim_m(full.o), n);
		hm = read_all(lt_optim_m(half), n - n / 2);
	}
	tap_ok(ok && !memcmp(fm + n / 2, hm, (n - n / 2) * sizeof *fm),
	       "an optimizer of another range loads its part of optimizer.safetensors (%s)",
	       lt_errmsg());
	free(fm), free(hm);
	lt_optim_free(half);
	free_model(&full);
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
	tap_ok(tap_count_entries(at("run/checkpoints"), ".", 0) == 0 &&
	       !tap_exists(at("run/checkpoints/step_00000011")),
	       "no temporary directory and no step 11 left");
	struct trained c;
	if (!make_model(&small, 2, &c))
		abort();
	tap_ok(lt_checkpoint_latest(at("run"), path, sizeof path, NULL, NULL) == LT_OK && !strcmp(path, ck9) &&
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
	       tap_count_entries(at("run3/checkpoints"), "", 0) == 0,
	       "a missing tokenizer: named, and nothing left in run3/checkpoints (%s)",
	       lt_errmsg());
}

/* ---- moments in shards ---- */

/* Optimizers of t's model over the ranges [cut[i], cut[i + 1]), i < n,
 * their moments copied from t's full-range optimizer when copy is set. */
static lt_optim **split_optims(const struct trained *t, const size_t *cut, int n, int copy)
{
	size_t numel = lt_model_num_params(t->m);
	float *m = read_all(lt_optim_m(t->o), numel), *v = read_all(lt_optim_v(t->o), numel);
	lt_optim **o = calloc((size_t)n, sizeof *o);
	for (int i = 0; o && i < n; i++) {
		if (lt_optim_new(t->m, cut[i], cut[i + 1], &o[i]) != LT_OK)
			abort();
		if (copy && cut[i + 1] > cut[i]) {
			be->ops->write(be, lt_optim_m(o[i]), m + cut[i], cut[i + 1] - cut[i]);
			be->ops->write(be, lt_optim_v(o[i]), v + cut[i], cut[i + 1] - cut[i]);
		}
	}
	if (!o)
		abort();
	free(m), free(v);
	return o;
}

static void free_optims(lt_optim **o, int n)
{
	for (int i = 0; i < n; i++)
		lt_optim_free(o[i]);
	free(o);
}

/* Both moments of o equal t's full-range optimizer's slice bitwise. */
static int same_slice(const struct trained *t, const lt_optim *o)
{
	size_t numel = lt_model_num_params(t->m), b = lt_optim_begin(o);
	size_t k = lt_optim_end(o) - b;
	float *m = read_all(lt_optim_m(t->o), numel), *v = read_all(lt_optim_v(t->o), numel);
	float *om = read_all(lt_optim_m(o), k), *ov = read_all(lt_optim_v(o), k);
	int same = !memcmp(m + b, om, k * sizeof *m) && !memcmp(v + b, ov, k * sizeof *v);
	free(m), free(v), free(om), free(ov);
	return same;
}

/* The parameters of two models equal bitwise. */
static int same_params(lt_model *a, lt_model *b)
{
	size_t n = lt_model_num_params(a);
	float *pa = read_all(lt_model_params(a), n), *pb = read_all(lt_model_params(b), n);
	int same = n == lt_model_num_params(b) && !memcmp(pa, pb, n * sizeof *pa);
	free(pa), free(pb);
	return same;
}

/* A save by n ranks of step `step` into run: begin, a shard from each
 * optimizer of o (but rank `skip`), commit of n shards. */
static enum lt_status save_ranks(const char *run, lt_model *m, lt_optim **o, int n, int skip,
				 long step, char *tmp, size_t tcap, char *path, size_t cap)
{
	struct lt_ckpt_state s = state_at(step, NULL);
	enum lt_status st = lt_checkpoint_begin(run, step, 4242, tmp, tcap);
	for (int r = 0; r < n && st == LT_OK; r++)
		if (r != skip)
			st = lt_checkpoint_write_shard(tmp, m, o[r], r, n);
	if (st == LT_OK)
		st = lt_checkpoint_commit(run, tmp, m, n, &s, path, cap);
	return st;
}

/* Loads checkpoint ck into a fresh model and n optimizers over cut[]; 1
 * when every optimizer's moments equal t's slice and the parameters t's. */
static int load_ranks(const struct trained *t, const char *ck, const size_t *cut, int n)
{
	struct trained b;
	int ok = make_model(&small, 77, &b);
	lt_optim **o = split_optims(&b, cut, n, 0);
	for (int r = 0; ok && r < n; r++)
		ok = lt_checkpoint_load(ck, b.m, o[r], NULL) == LT_OK && same_slice(t, o[r]);
	ok = ok && same_params(t->m, b.m);
	free_optims(o, n);
	free_model(&b);
	return ok;
}

/* state.json of checkpoint ck: whether "files" lists exactly the names
 * (n of them) and each name's metadata rank/ranks of the shards. */
static int lists_exactly(const char *ck, const char *const *names, int n)
{
	char path[4500];
	snprintf(path, sizeof path, "%s/state.json", ck);
	json_t *j = json_load_file(path, 0, NULL), *files = json_object_get(j, "files");
	int ok = j && json_object_size(files) == (size_t)n;
	for (int i = 0; ok && i < n; i++)
		ok = json_object_get(files, names[i]) != NULL;
	json_decref(j);
	return ok;
}

/* 1 when shard file path holds metadata begin, end, numel, rank, ranks. */
static int shard_meta(const char *path, size_t begin, size_t end, size_t numel, int rank,
		      int ranks)
{
	char want[5][24];
	const char *keys[5] = { "begin", "end", "numel", "rank", "ranks" };
	lt_st *st = NULL;
	int ok = lt_st_open(path, &st) == LT_OK;
	snprintf(want[0], sizeof want[0], "%zu", begin);
	snprintf(want[1], sizeof want[1], "%zu", end);
	snprintf(want[2], sizeof want[2], "%zu", numel);
	snprintf(want[3], sizeof want[3], "%d", rank);
	snprintf(want[4], sizeof want[4], "%d", ranks);
	for (int i = 0; ok && i < 5; i++)
		ok = lt_st_meta(st, keys[i]) && !strcmp(lt_st_meta(st, keys[i]), want[i]);
	lt_st_close(st);
	return ok;
}

/* Puts file `from` in place of file `name` of checkpoint ck and restamps
 * its size and CRC-32 in state.json, so that only the loader's own checks
 * of the optimizer files can refuse it. */
static int forge(const char *ck, const char *name, const char *from)
{
	char path[4500], hex[16];
	size_t n;
	unsigned char *p = tap_slurp(from, &n);
	snprintf(path, sizeof path, "%s/%s", ck, name);
	int ok = p && tap_write_file(path, p, n);
	snprintf(path, sizeof path, "%s/state.json", ck);
	json_t *j = json_load_file(path, 0, NULL), *e = json_object();
	snprintf(hex, sizeof hex, "%08lx", p ? crc32(crc32(0L, Z_NULL, 0), p, (uInt)n) : 0UL);
	ok = ok && j && e && !json_object_set_new(e, "bytes", json_integer((json_int_t)n)) &&
	     !json_object_set_new(e, "crc32", json_string(hex)) &&
	     !json_object_set(json_object_get(j, "files"), name, e) &&
	     json_dump_file(j, path, JSON_INDENT(2)) == 0;
	json_decref(e);
	json_decref(j);
	free(p);
	return ok;
}

/* Saved by 4 ranks over an uneven split, loaded on 1, 3 and 5. */
static void test_sharded_roundtrip(const struct trained *f)
{
	size_t n = lt_model_num_params(f->m);
	size_t save_cut[5] = { 0, n / 7, n / 2 + 3, n - 5, n };
	size_t one[2] = { 0, n }, three[4] = { 0, n / 3 + 1, 2 * n / 3 - 7, n };
	size_t five[6] = { 0, 13, 13, n / 2, 3 * n / 4 + 2, n };
	char tmp[4400], ck[4400], file[4500];
	lt_optim **o = split_optims(f, save_cut, 4, 1);

	enum lt_status st = save_ranks(at("sh"), f->m, o, 4, -1, 20, tmp, sizeof tmp, ck, sizeof ck);
	const char *names[] = { "model.safetensors", "optimizer-00000-of-00004.safetensors",
				"optimizer-00001-of-00004.safetensors",
				"optimizer-00002-of-00004.safetensors",
				"optimizer-00003-of-00004.safetensors" };
	tap_ok(st == LT_OK && !strcmp(ck, at("sh/checkpoints/step_00000020")) &&
	       tap_count_entries(ck, "", 0) == 6 && !tap_exists(at("sh/checkpoints/step_00000020/"
							"optimizer.safetensors")) &&
	       lists_exactly(ck, names, 5) && tap_count_entries(at("sh/checkpoints"), ".", 0) == 0,
	       "begin, 4 shards, commit: model, optimizer-0000R-of-00004 for R < 4 and state.json "
	       "listing them, no temporary left (%s)", lt_errmsg());
	int meta = 1;
	for (int r = 0; r < 4; r++) {
		snprintf(file, sizeof file, "%s/optimizer-%05d-of-00004.safetensors", ck, r);
		meta = meta && shard_meta(file, save_cut[r], save_cut[r + 1], n, r, 4);
	}
	tap_ok(meta, "each shard's metadata: its begin, end, numel, rank and ranks");
	tap_ok(load_ranks(f, ck, one, 1), "loaded on 1 rank: moments and parameters bitwise");
	tap_ok(load_ranks(f, ck, three, 3), "loaded on 3 ranks: each one's slice bitwise");
	tap_ok(load_ranks(f, ck, five, 5), "loaded on 5 ranks (one empty): each slice bitwise");
	free_optims(o, 4);
}

/* The slice reader on a shard: a range of F32, a range of BF16 converted,
 * and a range past the end refused. */
static void test_range_reader(const struct trained *f)
{
	size_t n = lt_model_num_params(f->m), b = n / 7;
	float *m = read_all(lt_optim_m(f->o), n), got[40], bf[8];
	uint16_t raw[8] = { 0x3f80, 0xc000, 0x3e00, 0x4049, 0, 0x8000, 0x7f80, 0x3c00 };
	int64_t shape[2] = { 2, 4 };
	lt_st *st = NULL;
	lt_st_writer *w = NULL;
	int ok = lt_st_open(at("sh/checkpoints/step_00000020/optimizer-00001-of-00004.safetensors"),
			    &st) == LT_OK &&
		 lt_st_read_f32_range(st, "exp_avg", 100, 40, got) == LT_OK &&
		 !memcmp(got, m + b + 100, sizeof got);
	tap_ok(ok, "lt_st_read_f32_range: 40 elements from element 100 of a shard, bitwise");
	ok = st && lt_st_read_f32_range(st, "exp_avg", lt_st_lookup(st, "exp_avg")->numel - 3, 4,
					got) == LT_ERR_FORMAT &&
	     msg_has("optimizer-00001-of-00004.safetensors: tensor 'exp_avg': elements [", ") were "
		     "asked for, it holds", NULL);
	tap_ok(ok, "a range past the end: LT_ERR_FORMAT naming file, tensor, range (%s)",
	       lt_errmsg());
	lt_st_close(st);
	st = NULL;
	ok = lt_st_writer_new(at("bf16.safetensors"), &w) == LT_OK &&
	     lt_st_writer_add(w, "x", LT_ST_BF16, 2, shape, raw) == LT_OK &&
	     lt_st_writer_finish(w) == LT_OK && lt_st_open(at("bf16.safetensors"), &st) == LT_OK &&
	     lt_st_read_f32_range(st, "x", 1, 3, bf) == LT_OK && bf[0] == -2.0f &&
	     bf[1] == 0.125f && bf[2] == 3.140625f;
	tap_ok(ok, "a range of a [2, 4] BF16 tensor, converted");
	lt_st_writer_free(w);
	lt_st_close(st);
	free(m);
}

/* Shards that leave a gap, overlap, or miss: refused at commit, and a
 * checkpoint forged to hold them refused at load, leaving the model and
 * the optimizer as they were. */
static void test_bad_shards(const struct trained *f)
{
	size_t n = lt_model_num_params(f->m), a = n / 3;
	size_t gap[3] = { 0, a, n }, gap2[2] = { a + 5, n }, over[2] = { a - 5, n };
	char tmp[4400], ck[4400], want[160], from[4500];
	lt_optim **o = split_optims(f, gap, 2, 1), **g = split_optims(f, gap2, 1, 1);
	lt_optim **v = split_optims(f, over, 1, 1);
	lt_optim *keep[2] = { o[0], g[0] };

	/* at commit */
	enum lt_status st = save_ranks(at("bad"), f->m, keep, 2, -1, 1, tmp, sizeof tmp, NULL, 0);
	snprintf(want, sizeof want, "[%zu, %zu) is in no optimizer file", a, a + 5);
	tap_ok(st == LT_ERR_FORMAT && msg_has(tmp, want, NULL),
	       "commit of shards with a gap: refused naming the gap (%s)", lt_errmsg());
	lt_checkpoint_abandon(tmp);
	keep[1] = v[0];
	st = save_ranks(at("bad"), f->m, keep, 2, -1, 1, tmp, sizeof tmp, NULL, 0);
	snprintf(want, sizeof want, "elements [%zu, %zu) are also in", a - 5, a);
	tap_ok(st == LT_ERR_FORMAT && msg_has("/optimizer-00001-of-00002.safetensors: ", want,
					      "/optimizer-00000-of-00002.safetensors"),
	       "commit of overlapping shards: refused naming both files (%s)", lt_errmsg());
	lt_checkpoint_abandon(tmp);
	st = save_ranks(at("bad"), f->m, o, 2, 1, 1, tmp, sizeof tmp, NULL, 0);
	char msg[2048];
	snprintf(msg, sizeof msg, "%s", lt_errmsg());
	lt_checkpoint_abandon(tmp);
	tap_ok(st == LT_ERR_NOTFOUND && strstr(msg, tmp) &&
	       strstr(msg, "/optimizer-00001-of-00002.safetensors: missing") &&
	       !strcmp(lt_errmsg(), msg) && tap_count_entries(at("bad/checkpoints"), "", 0) == 0,
	       "a missing shard at commit: named; abandon keeps the message and leaves no "
	       "temporary directory (%s)", msg);

	/* at load, in a checkpoint forged after a good save */
	struct trained b;
	if (save_ranks(at("bad"), f->m, o, 2, -1, 2, tmp, sizeof tmp, ck, sizeof ck) != LT_OK ||
	    !make_model(&small, 8, &b))
		abort();
	float *before = read_all(lt_model_params(b.m), n), *mb = read_all(lt_optim_m(b.o), n);
	mkdir(at("scratch"), 0755);
	snprintf(from, sizeof from, "%s", at("scratch/optimizer-00000-of-00001.safetensors"));
	const char *name = "optimizer-00001-of-00002.safetensors";
	int ok = lt_checkpoint_write_shard(at("scratch"), f->m, g[0], 1, 2) == LT_OK &&
		 rename(at("scratch/optimizer-00001-of-00002.safetensors"), from) == 0 &&
		 forge(ck, name, from);
	snprintf(want, sizeof want, "[%zu, %zu) is in no optimizer file", a, a + 5);
	ok = ok && lt_checkpoint_load(ck, b.m, b.o, NULL) == LT_ERR_FORMAT &&
	     msg_has(at("bad/checkpoints/step_00000002/state.json: "), want, NULL);
	float *after = read_all(lt_model_params(b.m), n), *ma = read_all(lt_optim_m(b.o), n);
	tap_ok(ok && !memcmp(before, after, n * sizeof *after) && !memcmp(mb, ma, n * sizeof *ma),
	       "a checkpoint whose shards leave a gap: refused naming it, model and optimizer "
	       "as they were (%s)", lt_errmsg());
	free(after), free(ma);
	ok = lt_checkpoint_write_shard(at("scratch"), f->m, v[0], 1, 2) == LT_OK &&
	     rename(at("scratch/optimizer-00001-of-00002.safetensors"), from) == 0 &&
	     forge(ck, name, from);
	snprintf(want, sizeof want, "elements [%zu, %zu) are also in", a - 5, a);
	ok = ok && lt_checkpoint_load(ck, b.m, b.o, NULL) == LT_ERR_FORMAT &&
	     msg_has(at("bad/checkpoints/step_00000002/optimizer-00001-of-00002.safetensors: "),
		     want, at("bad/checkpoints/step_00000002/optimizer-00000-of-00002.safetensors"));
	after = read_all(lt_model_params(b.m), n);
	ma = read_all(lt_optim_m(b.o), n);
	tap_ok(ok && !memcmp(before, after, n * sizeof *after) && !memcmp(mb, ma, n * sizeof *ma),
	       "overlapping shards: refused naming both files, nothing loaded (%s)", lt_errmsg());
	free(after), free(ma), free(before), free(mb);

	/* a shard of a model of another size */
	struct lt_model_config deep = small;
	struct trained d;
	deep.n_layers = 3;
	if (!make_model(&deep, 9, &d))
		abort();
	lt_optim *dpart = NULL;
	size_t dn = lt_model_num_params(d.m);
	ok = lt_optim_new(d.m, a, dn, &dpart) == LT_OK &&
	     lt_checkpoint_write_shard(at("scratch"), d.m, dpart, 1, 2) == LT_OK &&
	     rename(at("scratch/optimizer-00001-of-00002.safetensors"), from) == 0 &&
	     forge(ck, name, from);
	snprintf(want, sizeof want, "moments of a model of %zu parameters, this model has %zu", dn,
		 n);
	tap_ok(ok && lt_checkpoint_load(ck, b.m, b.o, NULL) == LT_ERR_FORMAT &&
	       msg_has(at("bad/checkpoints/step_00000002/optimizer-00001-of-00002.safetensors: "),
		       want, NULL),
	       "a shard of another model's size: refused naming it and both sizes (%s)",
	       lt_errmsg());
	lt_optim_free(dpart);
	free_model(&d);
	free_model(&b);
	free_optims(o, 2), free_optims(g, 1), free_optims(v, 1);
}

/* A save of one process still writes optimizer.safetensors (rank 0 of 1),
 * loadable on 2 ranks; a save without optimizer state has no moments. */
static void test_single_rank(const struct trained *f)
{
	size_t n = lt_model_num_params(f->m), two[3] = { 0, n / 2 - 1, n };
	struct lt_ckpt_state s = state_at(30, NULL);
	char ck[4400], tmp[4400], file[4500];
	int ok = lt_checkpoint_save(at("one"), f->m, f->o, &s, ck, sizeof ck) == LT_OK;
	snprintf(file, sizeof file, "%s/optimizer.safetensors", ck);
	tap_ok(ok && tap_exists(file) && tap_count_entries(ck, "optimizer", 0) == 1 &&
	       shard_meta(file, 0, n, n, 0, 1) && load_ranks(f, ck, two, 2),
	       "a single-rank save: optimizer.safetensors, rank 0 of 1, loads on 2 ranks bitwise");

	struct trained b;
	if (!make_model(&small, 10, &b))
		abort();
	s.step = 31;
	ok = lt_checkpoint_begin(at("one"), 31, 1, tmp, sizeof tmp) == LT_OK &&
	     lt_checkpoint_commit(at("one"), tmp, f->m, 0, &s, ck, sizeof ck) == LT_OK &&
	     tap_count_entries(ck, "optimizer", 0) == 0 &&
	     lt_checkpoint_load(ck, b.m, b.o, NULL) == LT_ERR_NOTFOUND &&
	     msg_has(at("one/checkpoints/step_00000031/state.json"), "lists no optimizer file", NULL);
	tap_ok(ok && lt_checkpoint_load(ck, b.m, NULL, NULL) == LT_OK && same_params(f->m, b.m),
	       "commit of 0 shards: no moments to load (named), the parameters load (%s)",
	       lt_errmsg());
	free_model(&b);
}

static void test_sharded(void)
{
	struct trained f;
	if (!make_model(&small, 21, &f) || !train_steps(&f, 3))
		abort();
	test_sharded_roundtrip(&f);
	test_range_reader(&f);
	test_bad_shards(&f);
	test_single_rank(&f);
	free_model(&f);
}

int main(void)
{
	struct trained a;
	char ck2[4400];

	dir = tap_scratch_new("lt_ckpt");
	if (lt_backend_new("cpu", 0, &be) != LT_OK || !make_model(&small, 1, &a)) {
		printf("Bail out! cannot build the model: %s\n", lt_errmsg());
		return 1;
	}
	make_tokenizer();
	tap_plan(64);
	test_save_and_load(&a, ck2, sizeof ck2);
	test_latest_and_prune(&a);
	test_damaged();
	test_set_aside(&a);
	test_mismatches();
	test_tied();
	test_failed_save(&a);
	test_impossible_place(&a);
	test_sharded();
	free_model(&a);
	lt_backend_free(be);
	return tap_scratch_done();
}
