/* The run directory's files: where each lives and how it is written. */
#include "config.h"
#include "train/run_files.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "io/checkpoint.h"
#include "io/fs.h"

void lt_run_files_path(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, cap, fmt, ap);
	va_end(ap);
}

void lt_run_files_data_dir(const struct lt_conf *c, char *buf, size_t cap)
{
	if (c->data.dir[0])
		lt_run_files_path(buf, cap, "%s", c->data.dir);
	else
		lt_run_files_path(buf, cap, "%s/data", c->run.dir);
}

enum lt_status lt_run_files_check_fresh(const struct lt_conf *c)
{
	char path[LT_RUN_PATH_CAP];
	if (lt_checkpoint_latest(c->run.dir, path, sizeof path, NULL) != LT_OK) {
		lt_errmsg_clear();
		return LT_OK;
	}
	lt_errmsg_set("%s: holds checkpoints of an earlier run (newest %s): --resume auto "
		      "continues it; choose another --run.dir to start a new one", c->run.dir, path);
	return LT_ERR_ARG;
}

enum lt_status lt_run_files_save_config(const struct lt_conf *c)
{
	char path[LT_RUN_PATH_CAP], tmp[LT_RUN_PATH_CAP], *text = NULL;
	lt_run_files_path(path, sizeof path, "%s/config.ini", c->run.dir);
	lt_run_files_path(tmp, sizeof tmp, "%s.tmp", path);
	enum lt_status st = lt_conf_to_string(c, &text);
	if (st == LT_OK)
		st = lt_fs_write_new(tmp, text, strlen(text));
	if (st == LT_OK && rename(tmp, path) != 0) {
		lt_errmsg_set("%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
		unlink(tmp);
		st = LT_ERR_IO;
	}
	free(text);
	return st;
}

enum lt_status lt_run_files_check_shared(const struct lt_conf *c, int rank, const char *host)
{
	char path[LT_RUN_PATH_CAP];
	lt_run_files_path(path, sizeof path, "%s/config.ini", c->run.dir);
	if (access(path, R_OK) == 0)
		return LT_OK;
	lt_errmsg_set("%s: rank %d (host %s) cannot see the file rank 0 wrote: the run directory "
		      "must be on a filesystem every rank sees", path, rank, host);
	return LT_ERR_IO;
}

/* Keeps the metrics lines of steps up to `step`. */
static enum lt_status trim_metrics(const char *path, long step)
{
	struct stat sb;
	/* only a file can be rewritten (a pipe, say, is left as it is) */
	if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
		return LT_OK;
	FILE *in = fopen(path, "r");
	if (!in)
		return LT_OK;
	char tmp[LT_RUN_PATH_CAP], line[4096];
	lt_run_files_path(tmp, sizeof tmp, "%s.tmp", path);
	FILE *out = fopen(tmp, "w");
	if (!out) {
		fclose(in);
		lt_errmsg_set("%s: cannot create: %s", tmp, strerror(errno));
		return LT_ERR_IO;
	}
	while (fgets(line, sizeof line, in)) {
		json_t *o = json_loads(line, 0, NULL);
		json_t *s = o ? json_object_get(o, "step") : NULL;
		if (s && json_integer_value(s) <= step)
			fputs(line, out);
		json_decref(o);
	}
	fclose(in);
	int bad = fclose(out) != 0;
	if (bad || rename(tmp, path) != 0) {
		unlink(tmp);
		lt_errmsg_set("%s: cannot rewrite: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	return LT_OK;
}

enum lt_status lt_run_files_open_metrics(const struct lt_conf *c, long step, lt_metrics **out)
{
	char path[LT_RUN_PATH_CAP];
	lt_run_files_path(path, sizeof path, "%s/metrics.jsonl", c->run.dir);
	enum lt_status st = trim_metrics(path, step);
	if (st == LT_OK)
		st = lt_metrics_open(path, c->run.log_every, out);
	return st;
}
