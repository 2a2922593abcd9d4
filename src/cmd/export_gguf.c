/* lltrain export --format gguf: a checkpoint as one GGUF file that
 * llama.cpp runs (the llama.* metadata, the tokenizer, the weights in the
 * type asked for), written beside its name and renamed into place. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "io/fs.h"
#include "io/gguf_model.h"
#include "io/gguf_write.h"
#include "io/rundir.h"
#include "text/tokenizer.h"

/* out may be written: not a directory, and absent unless force. */
static enum lt_status check_output_file(const char *out, int force)
{
	struct stat sb;
	if (!out[0] || out[strlen(out) - 1] == '/') {
		lt_errmsg_set("%s: expected a file name for the GGUF file", out);
		return LT_ERR_ARG;
	}
	if (stat(out, &sb) != 0)
		return LT_OK;
	if (S_ISDIR(sb.st_mode)) {
		lt_errmsg_set("%s: is a directory, expected a file name for the GGUF file", out);
		return LT_ERR_ARG;
	}
	if (!force) {
		lt_errmsg_set("%s: exists (--force replaces it)", out);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

/* general.name: the run's directory name (the checkpoint's grandparent),
 * else the checkpoint's own. */
static void model_name(const char *ckpt, char *name, size_t cap)
{
	char run[LT_CMD_PATH_CAP + 8], parent[LT_CMD_PATH_CAP + 8];
	if (lt_rundir_of_checkpoint(ckpt, run, sizeof run) != LT_OK ||
	    lt_fs_split(run, parent, name, cap) != LT_OK || !name[0] || !strcmp(name, ".") ||
	    !strcmp(name, ".."))
		snprintf(name, cap, "lltrain");
}

/* The metadata and the tensor directory of the export into w. */
static enum lt_status describe(lt_gguf_writer *w, struct lt_cmd_checkpoint *c, uint32_t type)
{
	char tok[LT_CMD_PATH_CAP + 32], conf[LT_CMD_PATH_CAP + 32], name[LT_CMD_PATH_CAP + 8];
	enum lt_status st;
	model_name(c->dir, name, sizeof name);
	if ((st = lt_fs_join(tok, sizeof tok, c->dir, LT_RUNDIR_TOKENIZER)) != LT_OK ||
	    (st = lt_fs_join(conf, sizeof conf, c->dir, LT_RUNDIR_TOKENIZER_CONFIG)) != LT_OK ||
	    (st = lt_gguf_model_add(w, c->model, type, name)) != LT_OK)
		return st;
	return lt_tokenizer_add_gguf(tok, access(conf, F_OK) == 0 ? conf : NULL, c->tok,
				     c->conf.model.vocab_size, w);
}

/* The whole file at tmp. */
static enum lt_status write_file(struct lt_cmd_checkpoint *c, uint32_t type, const char *tmp)
{
	lt_gguf_writer *w = NULL;
	enum lt_status st;
	if ((st = lt_gguf_writer_new(&w)) == LT_OK && (st = describe(w, c, type)) == LT_OK &&
	    (st = lt_gguf_writer_begin(w, tmp)) == LT_OK &&
	    (st = lt_gguf_model_write_tensors(w, c->model, type)) == LT_OK)
		st = lt_gguf_writer_finish(w);
	lt_gguf_writer_free(w);
	return st;
}

enum lt_status lt_cmd_export_gguf(struct lt_cmd_checkpoint *c, const char *out,
				  const char *type_name, int force)
{
	char tmp[LT_CMD_PATH_CAP + 48];
	uint32_t type;
	enum lt_status st;
	if ((st = lt_gguf_model_file_type(type_name, &type)) != LT_OK) {
		lt_errmsg_prefix("--type");
		return st;
	}
	if ((st = check_output_file(out, force)) != LT_OK)
		return st;
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.%ld.tmp", out, (long)getpid()) >= sizeof tmp) {
		lt_errmsg_set("%s: path too long", out);
		return LT_ERR_ARG;
	}
	if ((st = write_file(c, type, tmp)) == LT_OK && (st = lt_fs_publish(tmp, out)) == LT_OK)
		return LT_OK;
	lt_fs_discard(tmp);
	if (!strstr(lt_errmsg(), out))
		lt_errmsg_prefix("%s", out);
	return st;
}
