/* The run directory's files as training writes them, named by io/rundir.h
 * and published through io/fs.h, and the data it prepares. */
#include "config.h"
#include "train/run_files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "io/checkpoint.h"
#include "io/fs.h"
#include "io/import.h"
#include "io/rundir.h"
#include "text/prepare.h"

enum lt_status lt_run_files_data_dir(const struct lt_conf *c, char *buf, size_t cap)
{
	if (!c->data.dir[0])
		return lt_fs_join(buf, cap, c->run.dir, LT_RUNDIR_DATA);
	if (strlen(c->data.dir) >= cap) {
		lt_errmsg_set("%s: path too long (at most %zu bytes)", c->data.dir, cap - 1);
		return LT_ERR_ARG;
	}
	memcpy(buf, c->data.dir, strlen(c->data.dir) + 1);
	return LT_OK;
}

enum lt_status lt_run_files_check_fresh(const struct lt_conf *c)
{
	char path[LT_RUN_PATH_CAP];
	struct lt_ckpt_skips skipped = { 0 };
	enum lt_status st = lt_checkpoint_latest(c->run.dir, path, sizeof path, NULL, &skipped);
	if (st == LT_ERR_NOTFOUND) {
		lt_errmsg_clear();
		return LT_OK;
	}
	/* damaged checkpoints are an earlier run's too: a new run's saves and
	 * pruning would replace or remove them */
	if (st == LT_OK)
		lt_errmsg_set("%s: holds checkpoints of an earlier run (newest %s): --resume auto "
			      "continues it; choose another --run.dir to start a new one",
			      c->run.dir, path);
	else if (skipped.n > 0)
		lt_errmsg_set("%s: holds checkpoints of an earlier run, none of which verifies "
			      "(newest %s: %s): move them away or choose another --run.dir to start "
			      "a new one", c->run.dir, skipped.v[0].dir, skipped.v[0].why);
	lt_ckpt_skips_free(&skipped);
	return st == LT_OK || st == LT_ERR_FORMAT ? LT_ERR_ARG : st;
}

enum lt_status lt_run_files_save_config(const struct lt_conf *c)
{
	char path[LT_RUN_PATH_CAP], *text = NULL;
	enum lt_status st = lt_fs_join(path, sizeof path, c->run.dir, LT_RUNDIR_CONFIG);
	if (st == LT_OK)
		st = lt_conf_to_string(c, &text);
	if (st == LT_OK)
		st = lt_fs_publish_file(path, text, strlen(text));
	free(text);
	return st;
}

enum lt_status lt_run_files_check_shared(const struct lt_conf *c, int rank, const char *host)
{
	char path[LT_RUN_PATH_CAP];
	enum lt_status st = lt_fs_join(path, sizeof path, c->run.dir, LT_RUNDIR_CONFIG);
	if (st != LT_OK || access(path, R_OK) == 0)
		return st;
	lt_errmsg_set("%s: rank %d (host %s) cannot see the file rank 0 wrote: the run directory "
		      "must be on a filesystem every rank sees", path, rank, host);
	return LT_ERR_IO;
}

/* Copies the lines of in whose step is at most `step` to out. */
static void copy_steps_up_to(FILE *in, FILE *out, long step)
{
	char line[4096];
	while (fgets(line, sizeof line, in)) {
		json_t *o = json_loads(line, 0, NULL);
		json_t *s = o ? json_object_get(o, "step") : NULL;
		if (s && json_integer_value(s) <= step)
			fputs(line, out);
		json_decref(o);
	}
}

/* Keeps the metrics lines of steps up to `step`: the kept lines go to a
 * temporary beside the file, which is then published in its place. */
static enum lt_status trim_metrics(const char *path, long step)
{
	struct stat sb;
	/* only a file can be rewritten (a pipe, say, is left as it is) */
	if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
		return LT_OK;
	FILE *in = fopen(path, "r");
	if (!in)
		return LT_OK;
	char *tmp = lt_fs_tmp_new(path);
	FILE *out = tmp ? fopen(tmp, "w") : NULL;
	enum lt_status st = LT_ERR_NOMEM;
	if (tmp && !out) {
		lt_errmsg_set("%s: cannot create: %s", tmp, strerror(errno));
		st = LT_ERR_IO;
	}
	if (out) {
		copy_steps_up_to(in, out, step);
		int bad = fflush(out) != 0 || fsync(fileno(out)) != 0;
		bad |= fclose(out) != 0;
		if (bad)
			lt_errmsg_set("%s: cannot rewrite: %s", path, strerror(errno));
		st = bad ? LT_ERR_IO : lt_fs_publish(tmp, path);
		if (st != LT_OK)
			lt_fs_discard(tmp);
	}
	fclose(in);
	free(tmp);
	return st;
}

/* Says on stdout what the event files' open passed over, and frees it. */
static void say_notes(lt_metrics *mt, struct lt_tboard_notes *notes)
{
	for (size_t i = 0; i < notes->n; i++)
		lt_metrics_say(mt, "tensorboard: %s", notes->v[i]);
	lt_tboard_notes_free(notes);
}

/* RUN/tb's event files from step + 1 on, starting with the resolved
 * config; without run.tensorboard, the older ones only cut to the steps up
 * to `step`. */
static enum lt_status open_tboard(const struct lt_conf *c, long step, lt_metrics *mt)
{
	char dir[LT_RUN_PATH_CAP], *text = NULL;
	struct lt_tboard_notes notes = { 0 };
	enum lt_status st = lt_fs_join(dir, sizeof dir, c->run.dir, LT_RUNDIR_TBOARD);
	if (st != LT_OK)
		return st;
	if (!c->run.tensorboard) {
		st = lt_tboard_trim(dir, step, &notes);
		say_notes(mt, &notes);
		return st;
	}
	st = lt_metrics_open_tboard(mt, dir, step, &notes);
	say_notes(mt, &notes);
	if (st == LT_OK)
		st = lt_conf_to_string(c, &text);
	if (st == LT_OK)
		st = lt_metrics_text(mt, step + 1, "config", text);
	free(text);
	return st;
}

enum lt_status lt_run_files_open_metrics(const struct lt_conf *c, long step, lt_metrics **out)
{
	char path[LT_RUN_PATH_CAP];
	enum lt_status st = lt_fs_join(path, sizeof path, c->run.dir, LT_RUNDIR_METRICS);
	if (st == LT_OK)
		st = trim_metrics(path, step);
	if (st == LT_OK)
		st = lt_metrics_open(path, c->run.log_every, out);
	if (st == LT_OK)
		st = open_tboard(c, step, *out);
	return st;
}

enum lt_status lt_run_files_prepare_data(const struct lt_conf *c, const char *data_dir,
					 long step, const char *const *corpus, int n_corpus)
{
	if (lt_prepare_is_done(data_dir) && n_corpus == 0)
		return LT_OK;
	if (lt_prepare_is_done(data_dir)) {
		lt_errmsg_set("%s: holds prepared data already; corpus arguments would replace it "
			      "(remove it, or leave the arguments out to train on it)", data_dir);
		return LT_ERR_ARG;
	}
	char init_tok[LT_RUN_PATH_CAP] = "";
	enum lt_status st = c->train.init[0] && step == 0
				    ? lt_import_tokenizer(c->train.init, init_tok, sizeof init_tok)
				    : LT_OK;
	if (st != LT_OK)
		return st;
	const char *fallback[] = { c->data.corpus };
	struct lt_prepare_opts po = {
		.inputs = n_corpus ? corpus : fallback,
		.n_inputs = n_corpus ? n_corpus : 1,
		.out_dir = data_dir,
		.vocab_size = c->data.vocab_size ? c->data.vocab_size : c->model.vocab_size,
		.tokenizer = init_tok[0] ? init_tok : NULL,
		.doc_separator = c->data.doc_separator,
		.val_fraction = c->data.val_fraction,
		.shard_tokens = c->data.shard_tokens,
		.model_max_length = c->model.max_seq,
		.verbose = 1,
	};
	struct lt_prepare_report rep;
	printf("data: preparing %s into %s\n", po.n_inputs == 1 ? po.inputs[0] : "the corpus",
	       data_dir);
	if (init_tok[0])
		printf("data: with the tokenizer of %s\n", c->train.init);
	fflush(stdout);
	st = lt_prepare_run(&po, &rep);
	if (st != LT_OK && !n_corpus && !strcmp(c->data.corpus, "/usr/share/games/fortunes") &&
	    !lt_fs_is_dir(c->data.corpus))
		lt_errmsg_prefix("the default corpus needs Debian's fortunes package; ");
	return st;
}
