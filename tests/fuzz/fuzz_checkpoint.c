/* Fuzzes the checkpoint reader on a real checkpoint of a tiny model, saved
 * once per process as two ranks save one (model.safetensors, the optimizer
 * moments in two files, state.json listing them with sizes and CRC-32s).
 * The checkpoint is opened as sample, eval and export open one
 * (lt_checkpoint_open: the state read, every listed file verified, the
 * saved config applied), by its own path or by the run directory (the
 * newest valid checkpoint, as --resume auto finds it, recording the
 * damaged ones it passes over); where the config gives the tiny model's
 * shape, the tensors are loaded too (lt_checkpoint_load: the headers
 * checked against the model, the optimizer files' ranges tiled, the
 * moments read); a load that fails must leave the parameters and moments
 * as they were.
 *
 * The first byte of an input is not part of a file but says what the rest
 * is: bits 0-1 name the file it replaces (0: state.json, 1:
 * model.safetensors, 2 and 3: the optimizer files of ranks 0 and 1); a
 * replaced tensor file gets its size and CRC-32 written into the saved
 * state.json, so that the loader's own checks are reached. Bit 2 opens the
 * run directory instead of the checkpoint. The other files are put back
 * as saved before each input. */
#include "config.h"
#define LT_FUZZ_NAME checkpoint
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <zlib.h>

#include "backend.h"
#include "conf.h"
#include "model.h"
#include "optim.h"
#include "io/checkpoint.h"
#include "io/rundir.h"

#define N_FILES 4

static struct {
	lt_backend *be;
	lt_model *m;
	lt_optim *o, *half[2];
	struct lt_model_config cfg;
	const char *run;              /* the run directory */
	char dir[4096];               /* its checkpoint */
	char path[N_FILES][4200];     /* state.json, model, the two optimizer files */
	unsigned char *saved[N_FILES]; /* their bytes as saved */
	size_t len[N_FILES];
} ck;

static void teardown(void)
{
	for (int i = 0; i < N_FILES; i++)
		free(ck.saved[i]);
	lt_optim_free(ck.half[0]);
	lt_optim_free(ck.half[1]);
	lt_optim_free(ck.o);
	lt_model_free(ck.m);
	lt_backend_free(ck.be);
}

static unsigned char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	unsigned char *p = malloc(1 << 20);
	*n = f && p ? fread(p, 1, 1 << 20, f) : 0;
	if (!f || !p || *n == 0 || *n == 1 << 20)
		abort();
	fclose(f);
	return p;
}

/* The tiny model, its optimizer (whole, and halves as two ranks hold
 * them), and a checkpoint saved by the two halves. */
static void setup(void)
{
	static const char *const keys[][2] = {
		{ "model.vocab_size", "260" }, { "model.dim", "4" }, { "model.n_layers", "1" },
		{ "model.n_heads", "2" }, { "model.n_kv_heads", "1" }, { "model.ffn_dim", "4" },
		{ "model.max_seq", "8" }, { "model.tied", "true" },
	};
	struct lt_conf conf;
	struct lt_ckpt_state s = { .step = 1, .samples = 2, .seed = 3, .elapsed = 0.5,
				   .tokens = 16 };
	char tmp[4096];
	size_t n;

	lt_conf_defaults(&conf);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (lt_conf_set(&conf, keys[i][0], keys[i][1], NULL) != LT_OK)
			abort();
	ck.cfg = conf.model;
	ck.run = lt_fuzz_path("run");
	if (lt_backend_new("cpu", 1, &ck.be) != LT_OK || lt_model_new(ck.be, &ck.cfg, &ck.m) != LT_OK ||
	    lt_model_init(ck.m, 1) != LT_OK || (n = lt_model_num_params(ck.m)) < 2 ||
	    lt_optim_new(ck.m, 0, n, &ck.o) != LT_OK ||
	    lt_optim_new(ck.m, 0, n / 2, &ck.half[0]) != LT_OK ||
	    lt_optim_new(ck.m, n / 2, n, &ck.half[1]) != LT_OK ||
	    lt_conf_to_string(&conf, &s.config) != LT_OK ||
	    lt_checkpoint_begin(ck.run, s.step, 1, tmp, sizeof tmp) != LT_OK ||
	    lt_checkpoint_write_shard(tmp, ck.m, ck.half[0], 0, 2) != LT_OK ||
	    lt_checkpoint_write_shard(tmp, ck.m, ck.half[1], 1, 2) != LT_OK ||
	    lt_checkpoint_commit(ck.run, tmp, ck.m, 2, &s, ck.dir, sizeof ck.dir) != LT_OK) {
		fprintf(stderr, "fuzz_checkpoint: cannot save the checkpoint: %s\n", lt_errmsg());
		abort();
	}
	lt_ckpt_state_free(&s);
	snprintf(ck.path[0], sizeof ck.path[0], "%s/%s", ck.dir, LT_RUNDIR_STATE);
	snprintf(ck.path[1], sizeof ck.path[1], "%s/%s", ck.dir, LT_RUNDIR_MODEL);
	for (int r = 0; r < 2; r++) {
		char name[LT_RUNDIR_NAME_MAX];
		lt_rundir_optim_name(r, 2, name);
		snprintf(ck.path[2 + r], sizeof ck.path[2 + r], "%s/%s", ck.dir, name);
	}
	for (int i = 0; i < N_FILES; i++) {
		char name[256];
		ck.saved[i] = slurp(ck.path[i], &ck.len[i]);
		/* as saved, which inputs replace: with LT_FUZZ_KEEP, seeds */
		snprintf(name, sizeof name, "saved-%s", strrchr(ck.path[i], '/') + 1);
		lt_fuzz_write(lt_fuzz_path(name), ck.saved[i], ck.len[i]);
	}
	atexit(teardown);
}

/* The saved state.json with file i's entry set to n bytes of CRC-32 crc. */
static void write_state_for(int i, size_t n, uint32_t crc)
{
	json_t *j = json_loadb((const char *)ck.saved[0], ck.len[0], 0, NULL);
	json_t *e = json_object_get(json_object_get(j, "files"), strrchr(ck.path[i], '/') + 1);
	char hex[16], *text;
	snprintf(hex, sizeof hex, "%08lx", (unsigned long)crc);
	if (!e || json_object_set_new(e, "bytes", json_integer((json_int_t)n)) ||
	    json_object_set_new(e, "crc32", json_string(hex)) || !(text = json_dumps(j, 0)))
		abort();
	lt_fuzz_write(ck.path[0], text, strlen(text));
	free(text);
	json_decref(j);
}

/* The n floats at r, or a comparison of them with a copy taken before:
 * copies into *copy when it is NULL, else returns 1 when they still equal
 * it bit for bit (and frees it). */
static int same_floats(lt_ref r, size_t n, float **copy)
{
	struct lt_host_view v = { 0 };
	int same = 1;
	if (lt_host_view_map(&v, ck.be, r, n) != LT_OK)
		abort();
	lt_host_view_read(&v);
	if (!*copy) {
		if (!(*copy = malloc(n * sizeof **copy)))
			abort();
		memcpy(*copy, v.p, n * sizeof **copy);
	} else {
		same = !memcmp(*copy, v.p, n * sizeof **copy);
		free(*copy);
		*copy = NULL;
	}
	lt_host_view_free(&v);
	return same;
}

/* Loads dir into the model and the whole optimizer; on a failure, they
 * must be as they were. */
static void load(const char *dir)
{
	struct lt_ckpt_state again = { 0 };
	size_t n = lt_model_num_params(ck.m);
	float *copy[3] = { NULL, NULL, NULL };
	lt_ref refs[3] = { lt_model_params(ck.m), lt_optim_m(ck.o), lt_optim_v(ck.o) };
	for (int i = 0; i < 3; i++)
		same_floats(refs[i], n, &copy[i]);
	if (lt_checkpoint_load(dir, ck.m, ck.o, &again) == LT_OK) {
		for (int i = 0; i < 3; i++)
			free(copy[i]);
	} else {
		int same = 1;
		for (int i = 0; i < 3; i++)
			same &= same_floats(refs[i], n, &copy[i]);
		if (!same)
			abort(); /* a failed load changed the model or the optimizer */
	}
	lt_ckpt_state_free(&again);
}

static int same_model(const struct lt_model_config *a, const struct lt_model_config *b)
{
	return a->vocab_size == b->vocab_size && a->dim == b->dim && a->n_layers == b->n_layers &&
	       a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
	       a->ffn_dim == b->ffn_dim && a->max_seq == b->max_seq && a->tied == b->tied;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dir[4096];
	struct lt_ckpt_state s = { 0 };
	struct lt_ckpt_skips skipped = { 0 };
	struct lt_conf conf;
	int which;

	if (!ck.m)
		setup();
	if (size < 1)
		return 0;
	which = data[0] & 3;
	data++;
	size = lt_fuzz_cap(size - 1);
	for (int i = 0; i < N_FILES; i++)
		if (i != which)
			lt_fuzz_write(ck.path[i], ck.saved[i], ck.len[i]);
	lt_fuzz_write(ck.path[which], data, size);
	if (which != 0)
		write_state_for(which, size, (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)size));
	if (lt_checkpoint_open(data[-1] & 4 ? ck.run : ck.dir, dir, sizeof dir, &s, &conf,
			       &skipped) == LT_OK &&
	    same_model(&conf.model, &ck.cfg))
		load(dir);
	lt_ckpt_skips_free(&skipped);
	lt_ckpt_state_free(&s);
	return 0;
}
