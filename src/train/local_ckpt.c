/* Local SGD's outer state and other nodes' parameters and moments in a
 * checkpoint. */
#include "config.h"
#include "train/local_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "io/fs.h"
#include "io/rundir.h"
#include "io/safetensors.h"

#define OUTER_FILE "outer.safetensors"
#define NAME_CAP (LT_RUNDIR_NAME_MAX + 16)

/* Node k's file: "node-K-" then name. */
static void node_file(int k, const char *name, char out[NAME_CAP])
{
	snprintf(out, NAME_CAP, "node-%d-%s", k, name);
}

/* Overlapped, local rank 0 of node k >= 1: the node's base into tmp. */
static enum lt_status write_base(const struct lt_local_sgd_state *o, const char *tmp)
{
	char name[NAME_CAP], path[4096];
	int64_t shape[1] = { (int64_t)o->numel };
	lt_st_writer *w = NULL;
	node_file(o->node, "base.safetensors", name);
	enum lt_status st = lt_fs_join(path, sizeof path, tmp, name);
	if (st == LT_OK && (st = lt_st_writer_new(path, &w)) == LT_OK &&
	    (st = lt_st_writer_add(w, "base", LT_ST_F32, 1, shape, o->base)) == LT_OK)
		st = lt_st_writer_finish(w);
	lt_st_writer_free(w);
	return st;
}

/* Rank 0: outer.safetensors into tmp. */
static enum lt_status write_outer(const struct lt_local_sgd_state *o, const char *tmp)
{
	char path[4096], num[4][32];
	int64_t shape[1] = { (int64_t)o->numel };
	lt_st_writer *w = NULL;
	enum lt_status st = lt_fs_join(path, sizeof path, tmp, OUTER_FILE);
	snprintf(num[0], sizeof num[0], "%d", o->nodes);
	snprintf(num[1], sizeof num[1], "%d", *o->in_round);
	snprintf(num[2], sizeof num[2], "%.17g", *o->tokens);
	snprintf(num[3], sizeof num[3], "%ld", *o->carry);
	if (st == LT_OK && (st = lt_st_writer_new(path, &w)) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "format", "pt")) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "nodes", num[0])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "in_round", num[1])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "tokens", num[2])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "carry", num[3])) == LT_OK &&
	    (st = lt_st_writer_add(w, "shared", LT_ST_F32, 1, shape, o->shared)) == LT_OK &&
	    (st = lt_st_writer_add(w, "momentum", LT_ST_F32, 1, shape, o->momentum)) == LT_OK &&
	    (!o->base || (st = lt_st_writer_add(w, "base", LT_ST_F32, 1, shape, o->base)) == LT_OK))
		st = lt_st_writer_finish(w);
	lt_st_writer_free(w);
	return st;
}

/* Rank 0: the names of every file of the outer state, in one block. */
static enum lt_status list_files(int nodes, int shards, int base, struct lt_ckpt_state *s)
{
	int n = 1 + (nodes - 1) * (1 + base + shards);
	const char **list = malloc((size_t)n * (sizeof *list + NAME_CAP));
	char (*names)[NAME_CAP] = (void *)(list + n), optim[LT_RUNDIR_NAME_MAX];
	if (!list) {
		lt_errmsg_set("cannot allocate the names of %d files", n);
		return LT_ERR_NOMEM;
	}
	int i = 0;
	snprintf(names[i++], NAME_CAP, "%s", OUTER_FILE);
	for (int k = 1; k < nodes; k++) {
		node_file(k, LT_RUNDIR_MODEL, names[i++]);
		if (base)
			node_file(k, "base.safetensors", names[i++]);
		for (int j = 0; j < shards; j++) {
			lt_rundir_optim_name(j, shards, optim);
			node_file(k, optim, names[i++]);
		}
	}
	for (i = 0; i < n; i++)
		list[i] = names[i];
	free((void *)s->extra);
	s->extra = list;
	s->n_extra = n;
	return LT_OK;
}

/* A rank of node k >= 1: its parameters (local rank 0) and its moments. */
static enum lt_status write_node(int k, int local, const char *tmp, lt_model *m,
				 const lt_optim *o, int shards)
{
	char name[NAME_CAP], optim[LT_RUNDIR_NAME_MAX], path[4096];
	enum lt_status st = LT_OK;
	if (local == 0) {
		node_file(k, LT_RUNDIR_MODEL, name);
		if ((st = lt_fs_join(path, sizeof path, tmp, name)) == LT_OK)
			st = lt_checkpoint_write_model(path, m);
	}
	if (st != LT_OK || local >= shards)
		return st;
	lt_rundir_optim_name(local, shards, optim);
	node_file(k, optim, name);
	if ((st = lt_fs_join(path, sizeof path, tmp, name)) == LT_OK)
		st = lt_checkpoint_write_moments(path, m, o, local, shards);
	return st;
}

enum lt_status lt_local_ckpt_save(lt_local_sgd *ls, const char *tmp, lt_model *m,
				  const lt_optim *o, int shards, struct lt_ckpt_state *s)
{
	struct lt_local_sgd_state o_st;
	lt_dist *inner = lt_local_sgd_inner(ls);
	int local = lt_dist_rank(inner);
	enum lt_status st = lt_local_sgd_settle(ls);
	lt_local_sgd_state(ls, &o_st);
	if (st == LT_OK && o_st.node > 0 && (st = write_node(o_st.node, local, tmp, m, o,
							      shards)) == LT_OK &&
	    o_st.base && local == 0)
		st = write_base(&o_st, tmp);
	else if (st == LT_OK && o_st.node == 0 && local == 0 &&
		 (st = write_outer(&o_st, tmp)) == LT_OK)
		st = list_files(o_st.nodes, shards, o_st.base != NULL, s);
	return st == LT_OK ? lt_fs_sync(tmp) : st;
}

/* A whole number from outer.safetensors' metadata. */
static enum lt_status meta_number(const lt_st *sf, const char *key, double *out)
{
	const char *v = lt_st_meta(sf, key);
	char *end;
	*out = v ? strtod(v, &end) : 0;
	if (!v || end == v || *end) {
		lt_errmsg_set("%s: metadata %s is %s, expected a number", lt_st_path(sf), key,
			      v ? v : "missing");
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* The outer state from the open file; *nodes gets the nodes that saved it. */
static enum lt_status read_outer(const lt_st *sf, struct lt_local_sgd_state *o, int *nodes)
{
	double n, in_round, tokens;
	enum lt_status st;
	if ((st = meta_number(sf, "nodes", &n)) != LT_OK ||
	    (st = meta_number(sf, "in_round", &in_round)) != LT_OK ||
	    (st = meta_number(sf, "tokens", &tokens)) != LT_OK ||
	    (st = lt_st_read_f32(sf, "shared", o->shared, o->numel)) != LT_OK ||
	    (st = lt_st_read_f32(sf, "momentum", o->momentum, o->numel)) != LT_OK)
		return st;
	if (n < 1 || in_round < 0 || in_round > 1e9) {
		lt_errmsg_set("%s: %g nodes, %g steps into the round: expected 1 or more, and 0 or "
			      "more", lt_st_path(sf), n, in_round);
		return LT_ERR_FORMAT;
	}
	*nodes = (int)n;
	*o->in_round = (int)in_round;
	*o->tokens = tokens;
	/* (none before rounds of wall time: no steps were carried) */
	double carry = 0;
	if (lt_st_meta(sf, "carry") && (st = meta_number(sf, "carry", &carry)) != LT_OK)
		return st;
	*o->carry = carry >= 0 && carry < 1e9 ? (long)carry : 0;
	return LT_OK;
}

/* Overlapped: node k's base (outer.safetensors' for node 0); where none
 * was saved (the run was not overlapped) the base stays the shared
 * parameters that the node's own are. */
static enum lt_status read_base(const char *dir, int k, struct lt_local_sgd_state *o)
{
	char name[NAME_CAP], path[4096];
	lt_st *sf = NULL;
	if (k == 0)
		snprintf(name, sizeof name, "%s", OUTER_FILE);
	else
		node_file(k, "base.safetensors", name);
	enum lt_status st = lt_fs_join(path, sizeof path, dir, name);
	if (st == LT_OK && access(path, F_OK) == 0 && (st = lt_st_open(path, &sf)) == LT_OK &&
	    lt_st_lookup(sf, "base"))
		st = lt_st_read_f32(sf, "base", o->base, o->numel);
	else if (st == LT_OK)
		memcpy(o->base, o->shared, o->numel * sizeof *o->base);
	lt_st_close(sf);
	return st;
}

enum lt_status lt_local_ckpt_resume(lt_local_sgd *ls, const char *dir, lt_model *m, lt_optim *o,
				    char *note, size_t cap)
{
	struct lt_local_sgd_state o_st;
	char path[4096], prefix[NAME_CAP];
	lt_st *sf = NULL;
	int saved = 0;
	enum lt_status st = lt_fs_join(path, sizeof path, dir, OUTER_FILE);
	note[0] = '\0';
	if (st != LT_OK)
		return st;
	if (access(path, F_OK) != 0) {
		snprintf(note, cap, "local SGD: %s holds no outer state; the nodes start from its "
			 "parameters, the outer momentum from zero", dir);
		return LT_OK;
	}
	lt_local_sgd_state(ls, &o_st);
	if ((st = lt_st_open(path, &sf)) == LT_OK)
		st = read_outer(sf, &o_st, &saved);
	lt_st_close(sf);
	if (st == LT_OK && o_st.base)
		st = read_base(dir, saved == o_st.nodes ? o_st.node : 0, &o_st);
	if (st != LT_OK || saved == o_st.nodes) {
		snprintf(prefix, sizeof prefix, "node-%d-", o_st.node);
		return st == LT_OK && o_st.node > 0 ? lt_checkpoint_load_tensors_as(dir, prefix, m, o)
						    : st;
	}
	*o_st.carry = 0;  /* (steps short of a job step on the old nodes) */
	snprintf(note, cap, "local SGD: the checkpoint's %d nodes are %d now: each node goes on "
		 "from the first node's parameters and moments, %d steps into the round", saved,
		 o_st.nodes, *o_st.in_round);
	return LT_OK;
}

enum lt_status lt_local_ckpt_start(lt_local_sgd *ls, const char *dir, lt_model *m, lt_optim *o,
				   char *note, size_t cap)
{
	enum lt_status st = lt_local_sgd_start(ls, m);
	size_t len;
	lt_local_sgd_describe(ls, note, cap);
	if (st != LT_OK || !dir || (len = strlen(note)) + 2 >= cap)
		return st;
	note[len] = '\n';
	st = lt_local_ckpt_resume(ls, dir, m, o, note + len + 1, cap - len - 1);
	if (!note[len + 1])
		note[len] = '\0';
	return st;
}
