/* Starting from a pretrained model: Hugging Face directory, GGUF file or
 * lltrain checkpoint, told apart by what the path is. */
#include "config.h"
#include "io/import.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "conf.h"
#include "io/checkpoint.h"
#include "io/fs.h"
#include "io/gguf_model.h"
#include "io/hf_import.h"
#include "io/rundir.h"

#define PATH_CAP (LT_CONF_PATH_MAX + 256)

/* 1 when path is a file starting with "GGUF". */
static int is_gguf(const char *path)
{
	char magic[4];
	FILE *f = fopen(path, "rb");
	int yes = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
	if (f)
		fclose(f);
	return yes;
}

enum lt_status lt_import_kind_of(const char *path, enum lt_import_kind *kind)
{
	struct stat sb;
	if (stat(path, &sb)) {
		lt_errmsg_set("%s: %s (expected a Hugging Face model directory, a GGUF file or an "
			      "lltrain checkpoint)", path, strerror(errno));
		return LT_ERR_NOTFOUND;
	}
	if (lt_hf_is_model_dir(path))
		*kind = LT_IMPORT_HF;
	else if (!S_ISDIR(sb.st_mode) && is_gguf(path))
		*kind = LT_IMPORT_GGUF;
	else
		*kind = LT_IMPORT_LLTRAIN;
	return LT_OK;
}

/* The checkpoint path names (itself, or a run directory's newest), its
 * directory into dir[cap] and its config into *conf. */
static enum lt_status open_checkpoint(const char *path, char *dir, size_t cap,
				      struct lt_conf *conf)
{
	struct lt_ckpt_state s = { 0 };
	enum lt_status st = lt_checkpoint_open(path, dir, cap, &s, conf, NULL);
	lt_ckpt_state_free(&s);
	return st;
}

enum lt_status lt_import_config(const char *path, struct lt_model_config *c)
{
	enum lt_import_kind kind;
	enum lt_status st = lt_import_kind_of(path, &kind);
	if (st != LT_OK)
		return st;
	if (kind == LT_IMPORT_HF)
		return lt_hf_config(path, c);
	if (kind == LT_IMPORT_GGUF) {
		/* the rope scaling's values stay c's unless the file's
		 * rope_freqs.weight gives Llama 3's */
		struct lt_model_config got;
		if ((st = lt_gguf_model_config(path, &got)) != LT_OK)
			return st;
		if (got.rope_scaling == LT_ROPE_NONE) {
			got.rope_factor = c->rope_factor;
			got.rope_low_freq_factor = c->rope_low_freq_factor;
			got.rope_high_freq_factor = c->rope_high_freq_factor;
			got.rope_original_max_seq = c->rope_original_max_seq;
		}
		*c = got;
		return LT_OK;
	}
	char dir[PATH_CAP];
	struct lt_conf conf;
	if ((st = open_checkpoint(path, dir, sizeof dir, &conf)) == LT_OK)
		*c = conf.model;
	return st;
}

enum lt_status lt_import_weights(const char *path, lt_model *m)
{
	enum lt_import_kind kind;
	enum lt_status st = lt_import_kind_of(path, &kind);
	if (st != LT_OK)
		return st;
	if (kind == LT_IMPORT_HF)
		return lt_hf_load(path, m);
	if (kind == LT_IMPORT_GGUF)
		return lt_gguf_model_load(path, m);
	char dir[PATH_CAP];
	struct lt_conf conf;
	if ((st = open_checkpoint(path, dir, sizeof dir, &conf)) == LT_OK)
		st = lt_checkpoint_load_weights(dir, m);
	return st;
}

enum lt_status lt_import_check(const char *path, const lt_model *m)
{
	enum lt_import_kind kind;
	enum lt_status st = lt_import_kind_of(path, &kind);
	if (st != LT_OK)
		return st;
	if (kind == LT_IMPORT_HF)
		return lt_hf_check(path, m);
	if (kind == LT_IMPORT_GGUF)
		return lt_gguf_model_config(path, &(struct lt_model_config){ 0 });
	char dir[PATH_CAP];
	struct lt_conf conf;
	return open_checkpoint(path, dir, sizeof dir, &conf);
}

enum lt_status lt_import_tokenizer(const char *path, char *buf, size_t cap)
{
	enum lt_import_kind kind;
	enum lt_status st = lt_import_kind_of(path, &kind);
	char dir[PATH_CAP];
	struct lt_conf conf;
	buf[0] = 0;
	if (st != LT_OK)
		return st;
	if (kind == LT_IMPORT_GGUF) {
		if ((size_t)snprintf(buf, cap, "%s", path) >= cap) {
			lt_errmsg_set("%s: path longer than %zu bytes", path, cap - 1);
			buf[0] = 0;
			return LT_ERR_ARG;
		}
		return LT_OK;
	}
	if (kind == LT_IMPORT_HF)
		snprintf(dir, sizeof dir, "%s", path);
	else if ((st = open_checkpoint(path, dir, sizeof dir, &conf)) != LT_OK)
		return st;
	if ((st = lt_fs_join(buf, cap, dir, LT_RUNDIR_TOKENIZER)) != LT_OK)
		return st;
	struct stat sb;
	if (stat(buf, &sb))
		buf[0] = 0;
	return LT_OK;
}
