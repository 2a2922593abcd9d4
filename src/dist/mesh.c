/* The data-parallel x tensor-parallel x pipeline mesh of a job's ranks. */
#include "config.h"
#include "dist/mesh.h"

#include <math.h>
#include <stdlib.h>

struct lt_mesh {
	lt_dist *job, *tp, *dp;
	lt_dist *pp, *stage;  /* with pp > 1 */
	int stage_index;
};

/* Rank = (stage * dp + d) * tp + t: a stage's ranks are consecutive, and
 * so are a tensor-parallel group's. */
enum lt_status lt_mesh_new(lt_dist *d, int tp, int pp, lt_mesh **out)
{
	int rank = lt_dist_rank(d), size = lt_dist_size(d);
	*out = NULL;
	if (tp < 1 || size % tp) {
		lt_errmsg_set("dist.tp = %d does not divide the job's %d rank%s: the job runs "
			      "whole tensor-parallel groups", tp, size, size > 1 ? "s" : "");
		return LT_ERR_CONFIG;
	}
	if (pp < 1 || size % (tp * pp)) {
		lt_errmsg_set("dist.pp = %d does not divide the job's %d rank%s: the job runs "
			      "whole pipelines", pp, size, size > 1 ? "s" : "");
		return LT_ERR_CONFIG;
	}
	int per = size / pp;  /* a stage's ranks */
	lt_mesh *m = calloc(1, sizeof *m);
	if (!m) {
		lt_errmsg_set("cannot allocate the mesh");
		return LT_ERR_NOMEM;
	}
	m->job = d;
	m->stage_index = rank / per;
	enum lt_status st = lt_dist_group_new(d, rank / tp, rank, &m->tp);
	if (st == LT_OK)
		st = lt_dist_group_new(d, m->stage_index * tp + rank % tp, rank, &m->dp);
	if (st == LT_OK && pp > 1)
		st = lt_dist_group_new(d, rank % per, rank, &m->pp);
	if (st == LT_OK && pp > 1)
		st = lt_dist_group_new(d, m->stage_index, rank, &m->stage);
	if (st != LT_OK) {
		lt_mesh_free(m);
		return st;
	}
	*out = m;
	return LT_OK;
}

void lt_mesh_free(lt_mesh *m)
{
	if (!m)
		return;
	if (m->stage)
		lt_dist_group_free(m->stage);
	if (m->pp)
		lt_dist_group_free(m->pp);
	if (m->dp)
		lt_dist_group_free(m->dp);
	if (m->tp)
		lt_dist_group_free(m->tp);
	free(m);
}

lt_dist *lt_mesh_tp_group(const lt_mesh *m) { return m->tp; }
lt_dist *lt_mesh_dp_group(const lt_mesh *m) { return m->dp; }
lt_dist *lt_mesh_pp_group(const lt_mesh *m) { return m->pp; }
lt_dist *lt_mesh_stage_group(const lt_mesh *m) { return m->stage ? m->stage : m->job; }
int lt_mesh_stage(const lt_mesh *m) { return m->stage_index; }

static enum lt_status group_allreduce(void *ctx, void *buf, size_t n, int f64, int max)
{
	lt_mesh *m = ctx;
	return lt_dist_allreduce(m->tp, buf, n, f64 ? LT_DIST_F64 : LT_DIST_F32,
				 max ? LT_DIST_MAX : LT_DIST_SUM, "a tensor-parallel all-reduce");
}

static enum lt_status group_allgather(void *ctx, const void *mine, void *all, size_t bytes)
{
	lt_mesh *m = ctx;
	return lt_dist_allgather(m->tp, mine, all, bytes, "a tensor-parallel all-gather");
}

struct lt_tp lt_mesh_model_tp(lt_mesh *m)
{
	return (struct lt_tp){ .size = lt_dist_size(m->tp), .rank = lt_dist_rank(m->tp),
			       .allreduce = group_allreduce, .allgather = group_allgather,
			       .ctx = m };
}

enum lt_status lt_mesh_norm(lt_mesh *m, double sq, double *norm)
{
	enum lt_status st = lt_dist_allreduce(m->tp, &sq, 1, LT_DIST_F64, LT_DIST_SUM,
					      "the tensor-parallel gradient norm");
	*norm = sqrt(sq);
	return st;
}
