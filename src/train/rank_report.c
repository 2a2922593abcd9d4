/* Each rank of a run, in one line of the lead's. */
#include "config.h"
#include "train/rank_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Every rank's `bytes` of mine into a new all[size * bytes]. */
static enum lt_status gather_all(const struct lt_rank_layout *l, const void *mine, size_t bytes,
				 const char *what, char **all)
{
	*all = malloc((size_t)lt_dist_size(l->job) * bytes);
	if (!*all) {
		lt_errmsg_set("cannot allocate %s", what);
		return LT_ERR_NOMEM;
	}
	return lt_dist_allgather(l->job, mine, *all, bytes, what);
}

enum lt_status lt_rank_report_list(const struct lt_rank_layout *l, lt_backend *be,
				   const size_t *rows, int per_step)
{
	enum { LINE = 200 };
	struct lt_device_info dev;
	char mine[LINE], *all;
	be->ops->info(be, &dev);
	snprintf(mine, sizeof mine, "host %.64s, pid %ld, device %.100s", lt_dist_host(l->job),
		 (long)getpid(), dev.name);
	enum lt_status st = gather_all(l, mine, LINE, "the rank list", &all);
	int per = lt_dist_size(l->job) / l->pp;  /* a stage's ranks */
	for (int i = 0; st == LT_OK && l->lead && i < lt_dist_size(l->job); i++) {
		char place[64] = "", stage[32] = "";
		if (l->tp > 1)
			snprintf(place, sizeof place, ", tensor-parallel rank %d of group %d",
				 i % l->tp, (i % per) / l->tp);
		if (l->pp > 1)
			snprintf(stage, sizeof stage, ", pipeline stage %d", i / per);
		printf("rank %d: %.*s%s%s, %zu of %d sequences per step\n", i, LINE,
		       all + (size_t)i * LINE, stage, place, rows[(i % per) / l->tp], per_step);
	}
	fflush(stdout);  /* who runs where is wanted while the run goes on */
	free(all);
	return st;
}

enum lt_status lt_rank_report_memory(const struct lt_rank_layout *l, int stage, size_t state,
				     size_t setup, size_t exchange, size_t grads, size_t params,
				     const char *how)
{
	double mine[3] = { (double)state, (double)exchange, (double)setup }, *all;
	int ranks = lt_dist_size(l->job), dp = ranks / l->tp / l->pp;
	enum lt_status st = gather_all(l, mine, sizeof mine, "the memory report", (char **)&all);
	if (st == LT_OK && l->lead) {
		printf("memory: ZeRO stage %d over %d rank%s", stage, dp, dp > 1 ? "s" : "");
		if (l->tp > 1)
			printf(" of each of %d tensor-parallel places", l->tp);
		if (l->pp > 1)
			printf(" in each of %d pipeline stages", l->pp);
		printf(", gradient buffer %zu of %zu elements; per rank, parameters + gradients + "
		       "AdamW moments (backend allocator) + exchange buffers (host):", grads, params);
		for (int i = 0; i < ranks; i++)
			printf("%s rank %d %.0f + %.0f bytes", i ? ";" : "", i, all[3 * i],
			       all[3 * i + 1]);
		printf("\n");
		if (ranks > 1)
			printf("exchange: %s\n", how);
		for (int i = 0; i < ranks && all[2]; i++)
			printf("%s rank %d %.0f bytes%s", i ? ";" : "setup peak (backend allocator):",
			       i, all[3 * i + 2], i == ranks - 1 ? "\n" : "");
	}
	free(all);
	return st;
}

enum lt_status lt_rank_report_peaks(const struct lt_rank_layout *l, lt_backend *be,
				    lt_metrics *mt)
{
	size_t now = 0, peak = 0;
	if (be->ops->mem_usage)
		be->ops->mem_usage(be, &now, &peak);
	double mine = (double)peak, *all;
	enum lt_status st = gather_all(l, &mine, sizeof mine, "the memory peaks", (char **)&all);
	if (st == LT_OK && l->lead) {
		char line[4096];
		int len = snprintf(line, sizeof line, "memory peak (backend buffers):");
		for (int i = 0; i < lt_dist_size(l->job) && len < (int)sizeof line - 40; i++)
			len += snprintf(line + len, sizeof line - (size_t)len, "%s rank %d %.0f bytes",
					i ? ";" : "", i, all[i]);
		lt_metrics_say(mt, "%s", line);
	}
	free(all);
	return st;
}
