/* Rank agreement: a status all-reduced over the ranks, and the run's
 * description compared with rank 0's. */
#include "config.h"
#include "dist/agree.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum lt_status lt_agree(struct lt_agreement *g, enum lt_status st, const char *what, double wait)
{
	int rank = lt_dist_rank(g->dist);
	double failed = st != LT_OK ? rank + 1 : 0;
	/* a rank that lost touch with the others (a stall its watchdog named,
	 * an MPI error) ends the job itself: an agreement would wait out the
	 * watchdog a second time for the same silent rank */
	if (st == LT_ERR_COMM) {
		g->failed_together = 0;
		return st;
	}
	lt_dist_set_timeout(g->dist, wait > g->timeout ? wait : g->timeout);
	char saved[1024];
	snprintf(saved, sizeof saved, "%s", lt_errmsg());
	enum lt_status cst = lt_dist_allreduce(g->dist, &failed, 1, LT_DIST_F64, LT_DIST_MAX, what);
	lt_dist_set_timeout(g->dist, g->timeout);
	g->failed_together = cst == LT_OK && failed > 0;
	if (cst != LT_OK || st != LT_OK) {
		if (st != LT_OK)
			lt_errmsg_set("%s", saved);
		return st != LT_OK ? st : cst;
	}
	if (failed > 0) {
		lt_errmsg_set("%s failed on rank %d (its message says why)", what, (int)failed - 1);
		return LT_ERR_COMM;
	}
	return LT_OK;
}

/* What every rank must share, as text: the config (less the per-rank
 * keys run.device and run.threads), the data, the model and the step. */
static enum lt_status describe_run(const struct lt_conf *conf, const struct lt_agree_facts *f,
				   char **out)
{
	struct lt_conf c = *conf;
	char *text = NULL, facts[512];
	snprintf(c.run.device, sizeof c.run.device, "(each rank's own)");
	c.run.threads = 0;
	enum lt_status st = lt_conf_to_string(&c, &text);
	if (st != LT_OK)
		return st;
	snprintf(facts, sizeof facts,
		 "[agreement]\ntraining tokens = %llu\nvalidation tokens = %llu\nvocabulary = %d\n"
		 "step = %ld\nsamples = %llu\n",
		 (unsigned long long)f->train_tokens, (unsigned long long)f->val_tokens, f->vocab,
		 f->step, (unsigned long long)f->samples);
	size_t n = strlen(text), m = strlen(facts);
	*out = realloc(text, n + m + 1);
	if (!*out) {
		free(text);
		lt_errmsg_set("cannot allocate the run's description");
		return LT_ERR_NOMEM;
	}
	memcpy(*out + n, facts, m + 1);
	return LT_OK;
}

/* The first line where mine differs from rank 0's, named with its section. */
static void name_difference(const lt_dist *d, const char *mine, const char *theirs)
{
	char section[64] = "";
	for (;;) {
		size_t a = strcspn(mine, "\n"), b = strcspn(theirs, "\n");
		if (a != b || strncmp(mine, theirs, a) != 0) {
			lt_errmsg_set("rank %d (host %s) does not agree with rank 0%s%s: '%.*s' here, "
				      "'%.*s' on rank 0", lt_dist_rank(d), lt_dist_host(d),
				      section[0] ? " in " : "", section, (int)(a < 200 ? a : 200), mine,
				      (int)(b < 200 ? b : 200), theirs);
			return;
		}
		if (a > 2 && mine[0] == '[')
			snprintf(section, sizeof section, "%.*s", (int)(a < 60 ? a : 60), mine);
		if (!mine[a] || !theirs[b])
			break;
		mine += a + 1;
		theirs += b + 1;
	}
	lt_errmsg_set("rank %d (host %s) does not agree with rank 0", lt_dist_rank(d),
		      lt_dist_host(d));
}

enum lt_status lt_agree_on_run(struct lt_agreement *g, const struct lt_conf *c,
			       const struct lt_agree_facts *f)
{
	char *mine = NULL, *theirs = NULL;
	enum lt_status st = describe_run(c, f, &mine);
	if ((st = lt_agree(g, st, "describing the run", 0)) != LT_OK) {
		free(mine);
		return st;
	}
	double len = (double)strlen(mine) + 1;
	if ((st = lt_dist_bcast(g->dist, &len, sizeof len, 0, "the run's description")) == LT_OK &&
	    !(theirs = malloc((size_t)len))) {
		lt_errmsg_set("cannot allocate rank 0's description");
		st = LT_ERR_NOMEM;
	}
	if (st == LT_OK && lt_dist_rank(g->dist) == 0)
		memcpy(theirs, mine, (size_t)len);
	if (st == LT_OK)
		st = lt_dist_bcast(g->dist, theirs, (size_t)len, 0, "the run's description");
	if (st == LT_OK && strcmp(mine, theirs) != 0) {
		name_difference(g->dist, mine, theirs);
		st = LT_ERR_CONFIG;
	}
	free(mine);
	free(theirs);
	return lt_agree(g, st, "the ranks' agreement on config, data and step", 0);
}
