/* The names of a run directory and of its checkpoints (see rundir.h). */
#include "config.h"
#include "io/rundir.h"

#include <stdio.h>
#include <string.h>

#include "io/fs.h"

#define STEP_PREFIX "step_"
#define TEMP_PREFIX ".tmp-step_"
#define ASIDE_SUFFIX "-old"
#define DAMAGED_SUFFIX ".damaged"
#define OPTIM_SHARD_FMT "optimizer-%05d-of-%05d.safetensors"

enum lt_status lt_rundir_checkpoints(const char *run_dir, char *out, size_t cap)
{
	return lt_fs_join(out, cap, run_dir, LT_RUNDIR_CHECKPOINTS);
}

enum lt_status lt_rundir_checkpoint(const char *run_dir, long step, char *out, size_t cap)
{
	char ckdir[LT_FS_PATH_MAX], name[LT_RUNDIR_NAME_MAX];
	enum lt_status st = lt_rundir_checkpoints(run_dir, ckdir, sizeof ckdir);
	if (st != LT_OK)
		return st;
	lt_rundir_step_name(step, name);
	return lt_fs_join(out, cap, ckdir, name);
}

enum lt_status lt_rundir_of_checkpoint(const char *ckpt, char *out, size_t cap)
{
	size_t n = strlen(ckpt);
	int len = -1;
	for (int k = 0; k < 2 && len < 0; k++) {
		while (n > 1 && ckpt[n - 1] == '/')
			n--;
		while (n > 0 && ckpt[n - 1] != '/')
			n--;
		if (n == 0)
			len = snprintf(out, cap, "%s/../..", ckpt);
	}
	if (len < 0) {
		while (n > 1 && ckpt[n - 1] == '/')
			n--;
		len = snprintf(out, cap, "%.*s", (int)n, ckpt);
	}
	if (len < 0 || (size_t)len >= cap) {
		lt_errmsg_set("%s: the path of its run directory is too long (at most %zu bytes)",
			      ckpt, cap ? cap - 1 : 0);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

void lt_rundir_step_name(long step, char name[LT_RUNDIR_NAME_MAX])
{
	snprintf(name, LT_RUNDIR_NAME_MAX, STEP_PREFIX "%08ld", step);
}

long lt_rundir_step_of(const char *name)
{
	if (strncmp(name, STEP_PREFIX, strlen(STEP_PREFIX)) != 0)
		return -1;
	long step = 0;
	size_t digits = 0;
	for (const char *p = name + strlen(STEP_PREFIX); *p; p++, digits++) {
		if (*p < '0' || *p > '9' || step > (0x7fffffffL - 9) / 10)
			return -1;
		step = step * 10 + (*p - '0');
	}
	return digits >= 8 ? step : -1;
}

void lt_rundir_temp_name(long step, long tag, char name[LT_RUNDIR_NAME_MAX])
{
	snprintf(name, LT_RUNDIR_NAME_MAX, TEMP_PREFIX "%08ld-%ld", step, tag);
}

void lt_rundir_temp_prefix(long step, char prefix[LT_RUNDIR_NAME_MAX])
{
	if (step < 0)
		snprintf(prefix, LT_RUNDIR_NAME_MAX, TEMP_PREFIX);
	else
		snprintf(prefix, LT_RUNDIR_NAME_MAX, TEMP_PREFIX "%08ld-", step);
}

int lt_rundir_is_temp_name(const char *name)
{
	return strncmp(name, TEMP_PREFIX, strlen(TEMP_PREFIX)) == 0;
}

enum lt_status lt_rundir_aside_name(const char *temp_name, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s" ASIDE_SUFFIX, temp_name);
	if (n < 0 || (size_t)n >= cap) {
		lt_errmsg_set("%s: name too long (at most %zu bytes)", temp_name,
			      cap > strlen(ASIDE_SUFFIX) ? cap - 1 - strlen(ASIDE_SUFFIX) : 0);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

enum lt_status lt_rundir_damaged_path(const char *ckpt, int k, char *out, size_t cap)
{
	size_t n = strlen(ckpt);
	while (n > 1 && ckpt[n - 1] == '/')
		n--;
	int len = k <= 1 ? snprintf(out, cap, "%.*s" DAMAGED_SUFFIX, (int)n, ckpt)
			 : snprintf(out, cap, "%.*s" DAMAGED_SUFFIX "-%d", (int)n, ckpt, k);
	if (len < 0 || (size_t)len >= cap) {
		lt_errmsg_set("%s: the path to move it aside to is too long (at most %zu bytes)",
			      ckpt, cap ? cap - 1 : 0);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

void lt_rundir_optim_name(int rank, int nranks, char name[LT_RUNDIR_NAME_MAX])
{
	if (nranks == 1)
		snprintf(name, LT_RUNDIR_NAME_MAX, "%s", LT_RUNDIR_OPTIM);
	else
		snprintf(name, LT_RUNDIR_NAME_MAX, OPTIM_SHARD_FMT, rank, nranks);
}

int lt_rundir_is_optim_name(const char *name)
{
	char canon[LT_RUNDIR_NAME_MAX];
	int rank, ranks;

	if (!strcmp(name, LT_RUNDIR_OPTIM))
		return 1;
	if (sscanf(name, "optimizer-%d-of-%d.", &rank, &ranks) != 2 || ranks < 2 ||
	    ranks > LT_RUNDIR_MAX_SHARDS || rank < 0 || rank >= ranks)
		return 0;
	lt_rundir_optim_name(rank, ranks, canon);
	return !strcmp(name, canon);
}
